// Row kernels: Softmax, LayerNorm and CrossEntropy, each followed by its backward.
// Softmax and LayerNorm give a row to a workgroup (below); CrossEntropy's rows are a few
// classes long, so one invocation owns one row (one group) and runs its reductions left to
// right. Either way a row's result does not depend on the other rows.
// Words: 0 = rows, 1 = cols, 2 = eps (LayerNorm); CrossEntropy: see each kernel.

fn row_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * 64u + lid.x;
}


// Softmax, LayerNorm and their backwards: one workgroup of 64 per row. Invocation l takes
// columns l, l + 64, ... (neighbours read neighbouring addresses), sums its share in order,
// and a fixed tree combines the 64 shares: deterministic, and a row's numbers do not depend
// on the other rows. (With one invocation per row, the 32 lanes of a GPU warp each walked
// their own row, so every load touched 32 cache lines.)
var<workgroup> shares: array<f32, 64>;

// The tree over every invocation's share, in a fixed order; all invocations get the total.
// Called in uniform control flow only.
fn row_sum(l: u32, v: f32) -> f32 {
    shares[l] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) {
            shares[l] += shares[l + s];
        }
        workgroupBarrier();
    }
    let total = shares[0];
    // Everyone has read it before the next call writes.
    workgroupBarrier();
    return total;
}

fn row_max(l: u32, v: f32) -> f32 {
    shares[l] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (l < s) {
            shares[l] = max(shares[l], shares[l + s]);
        }
        workgroupBarrier();
    }
    let m = shares[0];
    workgroupBarrier();
    return m;
}

// Softmax's input: x0, or where the backend fused the Affine launch before it (word 2 = 1),
// that launch's output y (scale word 3, shift word 4), with the softmax into s0.
fn softmax_in(scaled: bool, i: u32) -> f32 {
    if (scaled) {
        return y[i];
    }
    return x0[i];
}

fn softmax_out(scaled: bool, i: u32, v: f32) {
    if (scaled) {
        s0[i] = v;
    } else {
        y[i] = v;
    }
}

fn softmax_out_value(scaled: bool, i: u32) -> f32 {
    if (scaled) {
        return s0[i];
    }
    return y[i];
}

// Softmax of x0's row into y's row, or s0's (y = exp(v - max) / sum). Rows >= 1 col.
fn softmax_row(base: u32, cols: u32, to_s0: bool) {
    var m = x0[base];
    for (var j = 1u; j < cols; j++) {
        m = max(m, x0[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < cols; j++) {
        let e = exp(x0[base + j] - m);
        softmax_out(to_s0, base + j, e);
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < cols; j++) {
        softmax_out(to_s0, base + j, softmax_out_value(to_s0, base + j) * inv);
    }
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    // Whole workgroups leave together (uniform control flow for the barriers).
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let l = lid.x;
    let scaled = pu(2u) == 1u;
    if (scaled) {
        // The Affine kernel's arithmetic, then every invocation may read the row.
        for (var j = l; j < cols; j += 64u) {
            y[base + j] = pf(3u) * x0[base + j] + pf(4u);
        }
        storageBarrier();
    }
    var m = softmax_in(scaled, base);
    for (var j = l; j < cols; j += 64u) {
        m = max(m, softmax_in(scaled, base + j));
    }
    m = row_max(l, m);
    var sum = 0.0;
    for (var j = l; j < cols; j += 64u) {
        let e = exp(softmax_in(scaled, base + j) - m);
        softmax_out(scaled, base + j, e);
        sum += e;
    }
    let inv = 1.0 / row_sum(l, sum);
    for (var j = l; j < cols; j += 64u) {
        softmax_out(scaled, base + j, softmax_out_value(scaled, base + j) * inv);
    }
}

// dx = y (dy - sum_j dy_j y_j). Inputs [y, dy]. Where the backend fused the Affine launch
// after it (word 2 = 1), also s0 = scale dx + shift (words 3 and 4, the Affine kernel's
// arithmetic).
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let l = lid.x;
    var dot = 0.0;
    for (var j = l; j < cols; j += 64u) {
        dot += x0[base + j] * x1[base + j];
    }
    dot = row_sum(l, dot);
    let scaled = pu(2u) == 1u;
    for (var j = l; j < cols; j += 64u) {
        let dx = x0[base + j] * (x1[base + j] - dot);
        y[base + j] = dx;
        if (scaled) {
            s0[base + j] = pf(3u) * dx + pf(4u);
        }
    }
}

// Mean and 1/sqrt(biased variance + eps) of x0's row (two passes, like torch).
fn row_moments(l: u32, base: u32, cols: u32, eps: f32) -> vec2<f32> {
    let n = f32(cols);
    var sum = 0.0;
    for (var j = l; j < cols; j += 64u) {
        sum += x0[base + j];
    }
    let mean = row_sum(l, sum) / n;
    var sq = 0.0;
    for (var j = l; j < cols; j += 64u) {
        let d = x0[base + j] - mean;
        sq += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(row_sum(l, sq) / n + eps));
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let l = lid.x;
    let mr = row_moments(l, base, cols, pf(2u));
    for (var j = l; j < cols; j += 64u) {
        y[base + j] = (x0[base + j] - mr.x) * mr.y;
    }
}

// layer_norm and the two Binary launches after it, fused by the backend: y = xhat as above,
// s0 = y * scale, s1 = s0 + shift. Inputs [x, scale, shift]; the scale of row r and column j
// is x1[(r / word 3) * word 4 + j] (rows per scale, stride between scales: one per member,
// or word 4 = 0 for one shared), the shift likewise with words 5 and 6.
@compute @workgroup_size(64)
fn layer_norm_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let l = lid.x;
    let mr = row_moments(l, base, cols, pf(2u));
    let scale = udiv(r, pu(3u)) * pu(4u);
    let shift = udiv(r, pu(5u)) * pu(6u);
    for (var j = l; j < cols; j += 64u) {
        let h = (x0[base + j] - mr.x) * mr.y;
        y[base + j] = h;
        let t = h * x1[scale + j];
        s0[base + j] = t;
        s1[base + j] = t + x2[shift + j];
    }
}

// Inputs [x, dy]; dx = rstd (dy - mean(dy) - xhat mean(dy xhat)), xhat = (x - mean) rstd.
@compute @workgroup_size(64)
fn layer_norm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = workgroup_index(wid, nwg);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let l = lid.x;
    let mr = row_moments(l, base, cols, pf(2u));
    let n = f32(cols);
    var sum_g = 0.0;
    var sum_gx = 0.0;
    for (var j = l; j < cols; j += 64u) {
        let g = x1[base + j];
        sum_g += g;
        sum_gx += g * ((x0[base + j] - mr.x) * mr.y);
    }
    let mean_g = row_sum(l, sum_g) / n;
    let mean_gx = row_sum(l, sum_gx) / n;
    for (var j = l; j < cols; j += 64u) {
        y[base + j] = mr.y * (x1[base + j] - mean_g - (x0[base + j] - mr.x) * mr.y * mean_gx);
    }
}

// y[g] = mean over b (in increasing order) of logsumexp(logits[g, b]) - logits[g, b, label].
// Inputs [logits, labels]. Words: 0 = groups, 1 = batch, 2 = classes, 3 = the workgroups of
// the loss. A label outside 0..classes (an error on the CPU) and an empty batch give NaN.
// Where the backend fused the CrossEntropyBackward launch after it, the workgroups past
// word 3 compute its rows into s0, from dloss in x2.
@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = workgroup_index(wid, nwg);
    if (w >= pu(3u)) {
        let r = (w - pu(3u)) * 64u + lid.x;
        if (r < pu(0u) * pu(1u)) {
            cross_entropy_backward_row(r, true);
        }
        return;
    }
    let g = row_index(wid, nwg, lid);
    if (g >= pu(0u)) { return; }
    let batch = pu(1u);
    let classes = pu(2u);
    if (batch == 0u || classes == 0u) {
        y[g] = nan();
        return;
    }
    var total = 0.0;
    for (var b = 0u; b < batch; b++) {
        let base = (g * batch + b) * classes;
        var m = x0[base];
        for (var j = 1u; j < classes; j++) {
            m = max(m, x0[base + j]);
        }
        var sum = 0.0;
        for (var j = 0u; j < classes; j++) {
            sum += exp(x0[base + j] - m);
        }
        let label = index_of(x1[g * batch + b], classes);
        if (label == BAD_INDEX) {
            total = nan();
        } else {
            total += m + log(sum) - x0[base + label];
        }
    }
    y[g] = total / f32(batch);
}

// dlogits[g, b, :] = (softmax(logits[g, b]) - onehot(label)) dloss[g] / batch for row r =
// g batch + b, into y or s0. Words 1 = batch, 2 = classes.
fn cross_entropy_backward_row(r: u32, to_s0: bool) {
    let batch = pu(1u);
    let classes = pu(2u);
    let base = r * classes;
    let scale = x2[r / batch] / f32(batch);
    softmax_row(base, classes, to_s0);
    let label = index_of(x1[r], classes);
    if (label == BAD_INDEX) {
        for (var j = 0u; j < classes; j++) {
            softmax_out(to_s0, base + j, nan());
        }
        return;
    }
    softmax_out(to_s0, base + label, softmax_out_value(to_s0, base + label) - 1.0);
    for (var j = 0u; j < classes; j++) {
        softmax_out(to_s0, base + j, softmax_out_value(to_s0, base + j) * scale);
    }
}

// Inputs [logits, labels, dloss]. Words: 0 = groups * batch rows, 1 = batch, 2 = classes.
@compute @workgroup_size(64)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    cross_entropy_backward_row(r, false);
}
