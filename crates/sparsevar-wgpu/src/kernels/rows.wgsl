// Row kernels: Softmax, LayerNorm and CrossEntropy, each followed by its backward.
// One invocation owns one row (one group for CrossEntropy) and runs its reductions
// left to right, so the result does not depend on how rows are spread over workgroups.
// Words: 0 = rows, 1 = cols, 2 = eps (LayerNorm); CrossEntropy: see each kernel.

fn row_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * 64u + lid.x;
}

// Softmax of x0's row into y's row (y = exp(v - max) / sum). Returns nothing; rows >= 1 col.
fn softmax_row(base: u32, cols: u32) {
    var m = x0[base];
    for (var j = 1u; j < cols; j++) {
        m = max(m, x0[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < cols; j++) {
        let e = exp(x0[base + j] - m);
        y[base + j] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < cols; j++) {
        y[base + j] *= inv;
    }
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    softmax_row(r * cols, cols);
}

// dx = y (dy - sum_j dy_j y_j). Inputs [y, dy].
@compute @workgroup_size(64)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    var dot = 0.0;
    for (var j = 0u; j < cols; j++) {
        dot += x0[base + j] * x1[base + j];
    }
    for (var j = 0u; j < cols; j++) {
        y[base + j] = x0[base + j] * (x1[base + j] - dot);
    }
}

// Mean and 1/sqrt(biased variance + eps) of x0's row (two passes, like torch).
fn moments(base: u32, cols: u32, eps: f32) -> vec2<f32> {
    let n = f32(cols);
    var sum = 0.0;
    for (var j = 0u; j < cols; j++) {
        sum += x0[base + j];
    }
    let mean = sum / n;
    var sq = 0.0;
    for (var j = 0u; j < cols; j++) {
        let d = x0[base + j] - mean;
        sq += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(sq / n + eps));
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let mr = moments(base, cols, pf(2u));
    for (var j = 0u; j < cols; j++) {
        y[base + j] = (x0[base + j] - mr.x) * mr.y;
    }
}

// Inputs [x, dy]; dx = rstd (dy - mean(dy) - xhat mean(dy xhat)), xhat = (x - mean) rstd.
@compute @workgroup_size(64)
fn layer_norm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let cols = pu(1u);
    let base = r * cols;
    let mr = moments(base, cols, pf(2u));
    let n = f32(cols);
    var sum_g = 0.0;
    var sum_gx = 0.0;
    for (var j = 0u; j < cols; j++) {
        let g = x1[base + j];
        sum_g += g;
        sum_gx += g * ((x0[base + j] - mr.x) * mr.y);
    }
    let mean_g = sum_g / n;
    let mean_gx = sum_gx / n;
    for (var j = 0u; j < cols; j++) {
        y[base + j] = mr.y * (x1[base + j] - mean_g - (x0[base + j] - mr.x) * mr.y * mean_gx);
    }
}

// y[g] = mean over b (in increasing order) of logsumexp(logits[g, b]) - logits[g, b, label].
// Inputs [logits, labels]. Words: 0 = groups, 1 = batch, 2 = classes. A label outside
// 0..classes (an error on the CPU) and an empty batch give NaN.
@compute @workgroup_size(64)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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

// dlogits[g, b, :] = (softmax(logits[g, b]) - onehot(label)) dloss[g] / batch.
// Inputs [logits, labels, dloss]. Words: 0 = groups * batch rows, 1 = batch, 2 = classes.
@compute @workgroup_size(64)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= pu(0u)) { return; }
    let batch = pu(1u);
    let classes = pu(2u);
    let base = r * classes;
    let scale = x2[r / batch] / f32(batch);
    softmax_row(base, classes);
    let label = index_of(x1[r], classes);
    if (label == BAD_INDEX) {
        for (var j = 0u; j < classes; j++) {
            y[base + j] = nan();
        }
        return;
    }
    y[base + label] -= 1.0;
    for (var j = 0u; j < classes; j++) {
        y[base + j] *= scale;
    }
}
