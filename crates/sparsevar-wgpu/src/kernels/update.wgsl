// In-place updates. `y` is the buffer written (parameter or accumulator), x0 the gradient,
// x1 the per-member squared gradient norm (when clipping), s0/s1 optimizer state;
// accumulate_squares reads up to three gradients, x0 to x2; accumulate_squares_many up to 27.

// acc[g] += sum_i x[g, i]^2 for each of k gradients in turn (consecutive AccumulateSquares
// launches into the same sums, recorded as one dispatch): up to 3 (x0 to x2) in
// accumulate_squares, up to 27 in accumulate_squares_many (then also p1 to v6, bound read
// only in spirit: nothing writes them). One workgroup per group: for each gradient,
// invocation l sums i = l, l + 256, ... in order, a fixed tree combines the 256 partial sums,
// and the total is added to acc: the same additions as k separate launches, so the same
// bits. Words: 0 = groups, 1 = k, 2.. = the lens, 29 = 1 where the sums start from zero
// instead of acc (a Zero launch on them held back and merged: 0 + total, the same bits).
var<workgroup> partial: array<f32, 256>;

fn gradient_at(b: u32, i: u32) -> f32 {
    switch b {
        case 0u: { return x0[i]; }
        case 1u: { return x1[i]; }
        default: { return x2[i]; }
    }
}

fn gradient_at_many(b: u32, i: u32) -> f32 {
    switch b {
        case 0u: { return x0[i]; }
        case 1u: { return x1[i]; }
        case 2u: { return x2[i]; }
        case 3u: { return p1[i]; }
        case 4u: { return g1[i]; }
        case 5u: { return m1[i]; }
        case 6u: { return v1[i]; }
        case 7u: { return p2[i]; }
        case 8u: { return g2[i]; }
        case 9u: { return m2[i]; }
        case 10u: { return v2[i]; }
        case 11u: { return p3[i]; }
        case 12u: { return g3[i]; }
        case 13u: { return m3[i]; }
        case 14u: { return v3[i]; }
        case 15u: { return p4[i]; }
        case 16u: { return g4[i]; }
        case 17u: { return m4[i]; }
        case 18u: { return v4[i]; }
        case 19u: { return p5[i]; }
        case 20u: { return g5[i]; }
        case 21u: { return m5[i]; }
        case 22u: { return v5[i]; }
        case 23u: { return p6[i]; }
        case 24u: { return g6[i]; }
        case 25u: { return m6[i]; }
        default: { return v6[i]; }
    }
}

// The fixed tree over the 256 partial sums; every invocation calls it (barriers), lid 0 gets
// the total. Leaves `partial` free for the next gradient.
fn tree_total(sum: f32, l: u32) -> f32 {
    partial[l] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (l < s) {
            partial[l] += partial[l + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Everyone has read partial before the next gradient overwrites it.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn accumulate_squares(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    if (g >= pu(0u)) { return; }
    var acc = 0.0;
    if (lid.x == 0u && pu(29u) == 0u) {
        acc = y[g];
    }
    for (var b = 0u; b < pu(1u); b++) {
        let len = pu(2u + b);
        let base = g * len;
        var sum = 0.0;
        for (var i = lid.x; i < len; i += 256u) {
            let v = gradient_at(b, base + i);
            sum += v * v;
        }
        let total = tree_total(sum, lid.x);
        if (lid.x == 0u) {
            acc += total;
        }
    }
    if (lid.x == 0u) {
        y[g] = acc;
    }
}

@compute @workgroup_size(256)
fn accumulate_squares_many(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    if (g >= pu(0u)) { return; }
    var acc = 0.0;
    if (lid.x == 0u && pu(29u) == 0u) {
        acc = y[g];
    }
    for (var b = 0u; b < pu(1u); b++) {
        let len = pu(2u + b);
        let base = g * len;
        var sum = 0.0;
        for (var i = lid.x; i < len; i += 256u) {
            let v = gradient_at_many(b, base + i);
            sum += v * v;
        }
        let total = tree_total(sum, lid.x);
        if (lid.x == 0u) {
            acc += total;
        }
    }
    if (lid.x == 0u) {
        y[g] = acc;
    }
}

// Projection onto the Frobenius ball of radius r, given the squared norm x0[g]:
// y[g, :] *= r / sqrt(x0[g]) where that exceeds r. Words: 0 = n, 1 = len, 2 = r.
@compute @workgroup_size(256)
fn scale_to_ball(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * 256u + lid.x;
    if (i >= pu(0u)) { return; }
    let norm = sqrt(x0[udiv(i, pu(1u))]);
    let r = pf(2u);
    if (norm > r) {
        y[i] = y[i] * (r / norm);
    }
}

// Per-group clip factor min(1, clip / (sqrt(sq[g]) + 1e-6)), or 1 when clipping is off.
fn clip_scale(on: u32, clip: f32, g: u32) -> f32 {
    if (on == 0u) { return 1.0; }
    return min(1.0, clip / (sqrt(x1[g]) + 1e-6));
}

// AdamW: g' = scale g; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// p -= lr (m / bias1 / (sqrt(v / bias2) + eps) + wd p).
// Words: 0 = n, 1 = len, 2 = lr, 3 = b1, 4 = 1 - b1, 5 = b2, 6 = 1 - b2, 7 = eps, 8 = wd,
// 9 = bias1, 10 = bias2, 11 = clip on, 12 = clip; adam_many also 13 = parameters k (2 or 3),
// 14/15 = n, len of the second, 16/17 of the third. s0 = m, s1 = v.
// Returns (p, m, v) after the step; both entry points call it, so a parameter gets the same
// bits whether its update was merged or not.
fn adam_step(p: f32, g_raw: f32, m0: f32, v0: f32, group: u32) -> vec3<f32> {
    let g = g_raw * clip_scale(pu(11u), pf(12u), group);
    let m = pf(3u) * m0 + pf(4u) * g;
    let v = pf(5u) * v0 + pf(6u) * g * g;
    return vec3<f32>(p - pf(2u) * (m / pf(9u) / (sqrt(v / pf(10u)) + pf(7u)) + pf(8u) * p), m, v);
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * 256u + lid.x;
    if (i >= pu(0u)) { return; }
    let r = adam_step(y[i], x0[i], s0[i], s1[i], udiv(i, pu(1u)));
    y[i] = r.x;
    s0[i] = r.y;
    s1[i] = r.z;
}

@group(0) @binding(9) var<storage, read_write> p1: array<f32>;
@group(0) @binding(10) var<storage, read> g1: array<f32>;
@group(0) @binding(11) var<storage, read_write> m1: array<f32>;
@group(0) @binding(12) var<storage, read_write> v1: array<f32>;
@group(0) @binding(13) var<storage, read_write> p2: array<f32>;
@group(0) @binding(14) var<storage, read> g2: array<f32>;
@group(0) @binding(15) var<storage, read_write> m2: array<f32>;
@group(0) @binding(16) var<storage, read_write> v2: array<f32>;
@group(0) @binding(17) var<storage, read_write> p3: array<f32>;
@group(0) @binding(18) var<storage, read> g3: array<f32>;
@group(0) @binding(19) var<storage, read_write> m3: array<f32>;
@group(0) @binding(20) var<storage, read_write> v3: array<f32>;
@group(0) @binding(21) var<storage, read_write> p4: array<f32>;
@group(0) @binding(22) var<storage, read> g4: array<f32>;
@group(0) @binding(23) var<storage, read_write> m4: array<f32>;
@group(0) @binding(24) var<storage, read_write> v4: array<f32>;
@group(0) @binding(25) var<storage, read_write> p5: array<f32>;
@group(0) @binding(26) var<storage, read> g5: array<f32>;
@group(0) @binding(27) var<storage, read_write> m5: array<f32>;
@group(0) @binding(28) var<storage, read_write> v5: array<f32>;
@group(0) @binding(29) var<storage, read_write> p6: array<f32>;
@group(0) @binding(30) var<storage, read> g6: array<f32>;
@group(0) @binding(31) var<storage, read_write> m6: array<f32>;
@group(0) @binding(32) var<storage, read_write> v6: array<f32>;

// Consecutive Adam updates with the same settings and norm, as one dispatch over the
// parameters' elements laid end to end (the first in y, x0, s0, s1; then p1.., p2.., up to
// p5..). Words 12 + 2b and 13 + 2b: n and len of parameter b = 1, 2, ...; word 13: how many
// parameters (2 to 6). A parameter's bindings past the last repeat the last's and are never
// touched.
fn adam_param(b: u32, j: u32, len: u32) {
    let group = udiv(j, len);
    switch b {
        case 1u: { let r = adam_step(p1[j], g1[j], m1[j], v1[j], group); p1[j] = r.x; m1[j] = r.y; v1[j] = r.z; }
        case 2u: { let r = adam_step(p2[j], g2[j], m2[j], v2[j], group); p2[j] = r.x; m2[j] = r.y; v2[j] = r.z; }
        case 3u: { let r = adam_step(p3[j], g3[j], m3[j], v3[j], group); p3[j] = r.x; m3[j] = r.y; v3[j] = r.z; }
        case 4u: { let r = adam_step(p4[j], g4[j], m4[j], v4[j], group); p4[j] = r.x; m4[j] = r.y; v4[j] = r.z; }
        default: { let r = adam_step(p5[j], g5[j], m5[j], v5[j], group); p5[j] = r.x; m5[j] = r.y; v5[j] = r.z; }
    }
}

@compute @workgroup_size(256)
fn adam_many(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * 256u + lid.x;
    let n0 = pu(0u);
    if (i < n0) {
        let r = adam_step(y[i], x0[i], s0[i], s1[i], udiv(i, pu(1u)));
        y[i] = r.x;
        s0[i] = r.y;
        s1[i] = r.z;
        return;
    }
    var start = n0;
    for (var b = 1u; b < pu(13u); b++) {
        let n = pu(12u + 2u * b);
        if (i < start + n) {
            adam_param(b, i - start, pu(13u + 2u * b));
            return;
        }
        start += n;
    }
}

// SGD with momentum (PyTorch convention): g' = scale g + wd p; vel = momentum vel + g';
// p -= lr vel. Words: 0 = n, 1 = len, 2 = lr, 3 = momentum, 4 = wd, 5 = clip on, 6 = clip.
// s0 = velocity.
@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * 256u + lid.x;
    if (i >= pu(0u)) { return; }
    let p = y[i];
    let g = x0[i] * clip_scale(pu(5u), pf(6u), udiv(i, pu(1u))) + pf(4u) * p;
    let vel = pf(3u) * s0[i] + g;
    s0[i] = vel;
    y[i] = p - pf(2u) * vel;
}
