// Batched MatMul, y[g] = op(a[g]) op(b[g]); inputs [a, b].
// Words: 0 = batch, 1 = m, 2 = k, 3 = n, 4/5 = a's strides along (row i, depth kk),
// 6/7 = b's strides along (depth kk, column j) (the transposes, resolved on the host),
// 8 = tiles along m, 9 = tiles along n, 10 = batch m n.
//
// Both kernels sum each output over kk = 0, 1, ..., k-1 from zero, and which kernel runs
// depends on (m, k, n) only, so a member's numbers never depend on the batch it shares.

// One invocation per output element: for the tiny per-group products of attention
// (1 x 16 . 16 x 65) where a tile would be mostly empty.
@compute @workgroup_size(64)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = workgroup_index(wid, nwg) * 64u + lid.x;
    if (e >= pu(10u)) { return; }
    let m = pu(1u);
    let k = pu(2u);
    let n = pu(3u);
    let mn = m * n;
    let g = udiv(e, mn);
    let row = udiv(e, n);
    let i = row - g * m;
    let j = e - row * n;
    var ia = g * m * k + i * pu(4u);
    var ib = g * k * n + j * pu(7u);
    let sa = pu(5u);
    let sb = pu(6u);
    var acc = 0.0;
    for (var kk = 0u; kk < k; kk++) {
        acc += x0[ia] * x1[ib];
        ia += sa;
        ib += sb;
    }
    y[e] = acc;
}

// 64 x 64 output tile per workgroup of 16 x 16 invocations, each owning a 4 x 4 block;
// depth slices of 16 staged in workgroup memory (zero-padded past the edges).
const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [DEPTH][TILE]: tile_a[kk * TILE + i]
var<workgroup> tile_b: array<f32, 1024>; // [DEPTH][TILE]: tile_b[kk * TILE + j]

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = pu(1u);
    let k = pu(2u);
    let n = pu(3u);
    let a_row = pu(4u);
    let a_depth = pu(5u);
    let b_depth = pu(6u);
    let b_col = pu(7u);
    let tiles_n = pu(9u);
    let per_group = pu(8u) * tiles_n;
    let w = workgroup_index(wid, nwg);
    let g = w / per_group;
    // Whole workgroups past the end leave together (uniform control flow for the barriers).
    if (g >= pu(0u)) { return; }
    let row0 = ((w % per_group) / tiles_n) * TILE;
    let col0 = (w % tiles_n) * TILE;
    let ga = g * m * k;
    let gb = g * k * n;
    let tid = lid.y * 16u + lid.x;
    // Which of the two layouts is contiguous decides how threads walk a slice, so that
    // neighbouring threads read neighbouring addresses.
    let a_depth_fast = a_depth == 1u;
    let b_depth_fast = b_depth == 1u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var l = 0u; l < 4u; l++) {
            let e = tid + l * 256u;
            var i = e % TILE;
            var kk = e / TILE;
            if (a_depth_fast) {
                i = e / DEPTH;
                kk = e % DEPTH;
            }
            var va = 0.0;
            if (row0 + i < m && k0 + kk < k) {
                va = x0[ga + (row0 + i) * a_row + (k0 + kk) * a_depth];
            }
            tile_a[kk * TILE + i] = va;
            var j = e % TILE;
            var kb = e / TILE;
            if (b_depth_fast) {
                j = e / DEPTH;
                kb = e % DEPTH;
            }
            var vb = 0.0;
            if (col0 + j < n && k0 + kb < k) {
                vb = x1[gb + (k0 + kb) * b_depth + (col0 + j) * b_col];
            }
            tile_b[kb * TILE + j] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            let ai = kk * TILE + lid.y * 4u;
            let bj = kk * TILE + lid.x * 4u;
            let b = vec4<f32>(tile_b[bj], tile_b[bj + 1u], tile_b[bj + 2u], tile_b[bj + 3u]);
            acc0 += tile_a[ai] * b;
            acc1 += tile_a[ai + 1u] * b;
            acc2 += tile_a[ai + 2u] * b;
            acc3 += tile_a[ai + 3u] * b;
        }
        workgroupBarrier();
    }
    let gy = g * m * n;
    let c = col0 + lid.x * 4u;
    let r = row0 + lid.y * 4u;
    for (var q = 0u; q < 4u; q++) {
        var v = acc0;
        if (q == 1u) { v = acc1; }
        if (q == 2u) { v = acc2; }
        if (q == 3u) { v = acc3; }
        if (r + q < m) {
            for (var t = 0u; t < 4u; t++) {
                if (c + t < n) {
                    y[gy + (r + q) * n + c + t] = v[t];
                }
            }
        }
    }
}
