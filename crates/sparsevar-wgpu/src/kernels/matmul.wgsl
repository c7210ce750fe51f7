// Batched MatMul, y[g] = op(a[g]) op(b[g]); inputs [a, b].
// Words: 0 = batch, 1 = m, 2 = k, 3 = n, 4/5 = a's strides along (row i, depth kk),
// 6/7 = b's strides along (depth kk, column j) (the transposes, resolved on the host),
// 8 = tiles along m, 9 = tiles along n, 10 = batch m n.
//
// Both kernels sum each output over kk = 0, 1, ..., k-1 from zero, and which kernel runs
// depends on (m, k, n) only, so a member's numbers never depend on the batch it shares.
//
// Two products in one dispatch (the backend pairs a linear layer's two backward products,
// which share their gradient operand): word 12 = the workgroups of the first product; the
// rest compute the second, whose words are 16 to 26 (laid out as 0 to 10), which reads its
// a and b from the bindings named by words 13 and 14 (0 = x0, 1 = x1, 2 = x2) and writes s0.
// A single product sets word 12 to all its workgroups and never touches x2 or s0.
//
// The `_bias` entry points are a MatMul and the bias Add after it in one dispatch (the
// backend fuses the pair when it sees it): y gets the product as before, and s0 = y + bias
// with bias = x2[group * word 11 + column] (word 11: n for a bias per group, 0 for one
// shared bias). The sum is the Binary kernel's single f32 add: same bits as the pair.
// Word 15 says what a third launch fused after them wrote, into s1: 1, the Unary kernel's
// activation (op in word 27) of the sum; 2, the sum plus g1 (a residual, same shape).

// A residual added after a product and its bias (binding 10, as in update.wgsl).
@group(0) @binding(10) var<storage, read> g1: array<f32>;

// What the bias kernels write to s1 besides the sum (word 15).
fn after_bias(e: u32, sum: f32) {
    switch pu(15u) {
        case 1u: { s1[e] = activation(pu(27u), sum); }
        case 2u: { s1[e] = sum + g1[e]; }
        default: {}
    }
}

// Word i of product p (0: the first, 1: the second).
fn pw(p: u32, i: u32) -> u32 {
    return pu(p * 16u + i);
}

// Which product workgroup w computes, and its index among that product's workgroups.
fn product_of(w: u32) -> vec2<u32> {
    let first = pu(12u);
    if (w < first) {
        return vec2<u32>(0u, w);
    }
    return vec2<u32>(1u, w - first);
}

// Element i of binding x0, x1 or x2.
fn operand(which: u32, i: u32) -> f32 {
    if (which == 0u) {
        return x0[i];
    }
    if (which == 1u) {
        return x1[i];
    }
    return x2[i];
}

// The bindings product p reads a and b from.
fn roles(p: u32) -> vec2<u32> {
    if (p == 0u) {
        return vec2<u32>(0u, 1u);
    }
    return vec2<u32>(pu(13u), pu(14u));
}

// One invocation per output element: for the tiny per-group products of attention
// (1 x 16 . 16 x 65) where a tile would be mostly empty.
// Output element e of product p, with its group and column.
struct Element { value: f32, g: u32, j: u32 }

fn small_product(p: u32, e: u32) -> Element {
    let m = pw(p, 1u);
    let k = pw(p, 2u);
    let n = pw(p, 3u);
    let mn = m * n;
    let g = udiv(e, mn);
    let row = udiv(e, n);
    let i = row - g * m;
    let j = e - row * n;
    var ia = g * m * k + i * pw(p, 4u);
    var ib = g * k * n + j * pw(p, 7u);
    let sa = pw(p, 5u);
    let sb = pw(p, 6u);
    var acc = 0.0;
    if (p == 0u) {
        for (var kk = 0u; kk < k; kk++) {
            acc += x0[ia] * x1[ib];
            ia += sa;
            ib += sb;
        }
    } else {
        // The same sum over the second product's bindings.
        let r = roles(p);
        for (var kk = 0u; kk < k; kk++) {
            acc += operand(r.x, ia) * operand(r.y, ib);
            ia += sa;
            ib += sb;
        }
    }
    return Element(acc, g, j);
}

@compute @workgroup_size(64)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pr = product_of(workgroup_index(wid, nwg));
    let e = pr.y * 64u + lid.x;
    if (e >= pw(pr.x, 10u)) { return; }
    let v = small_product(pr.x, e).value;
    if (pr.x == 0u) {
        y[e] = v;
    } else {
        s0[e] = v;
    }
}

@compute @workgroup_size(64)
fn matmul_small_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = workgroup_index(wid, nwg) * 64u + lid.x;
    if (e >= pu(10u)) { return; }
    let p = small_product(0u, e);
    y[e] = p.value;
    let sum = p.value + x2[p.g * pu(11u) + p.j];
    s0[e] = sum;
    after_bias(e, sum);
}

// Which (depth, row-or-column) a staging invocation's element e of a slice is: neighbouring
// invocations walk the operand's contiguous axis, so they read neighbouring addresses.
fn place(e: u32, depth_fast: bool) -> vec2<u32> {
    if (depth_fast) {
        return vec2<u32>(e % DEPTH, e / DEPTH);
    }
    return vec2<u32>(e / TILE, e % TILE);
}

// Where element e of a slice sits in tile_a / tile_b: [DEPTH][TILE].
fn slot(e: u32, depth_fast: bool) -> u32 {
    let p = place(e, depth_fast);
    return p.x * TILE + p.y;
}

// Element e of op(a)'s slice from depth k0, zero past the edges; a in binding `which`.
fn load_a(which: u32, e: u32, k0: u32, row0: u32, ga: u32, m: u32, k: u32, a_row: u32, a_depth: u32, fast: bool) -> f32 {
    let p = place(e, fast);
    if (row0 + p.y < m && k0 + p.x < k) {
        return operand(which, ga + (row0 + p.y) * a_row + (k0 + p.x) * a_depth);
    }
    return 0.0;
}

// Element e of op(b)'s slice from depth k0, zero past the edges; b in binding `which`.
fn load_b(which: u32, e: u32, k0: u32, col0: u32, gb: u32, n: u32, k: u32, b_depth: u32, b_col: u32, fast: bool) -> f32 {
    let p = place(e, fast);
    if (col0 + p.y < n && k0 + p.x < k) {
        return operand(which, gb + (k0 + p.x) * b_depth + (col0 + p.y) * b_col);
    }
    return 0.0;
}

// 64 x 64 output tile per workgroup of 16 x 16 invocations, each owning a 4 x 4 block;
// depth slices of 16 staged in workgroup memory (zero-padded past the edges).
const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [DEPTH][TILE]: tile_a[kk * TILE + i]
var<workgroup> tile_b: array<f32, 1024>; // [DEPTH][TILE]: tile_b[kk * TILE + j]

// One invocation's 4 x 4 block of product p: rows r.., columns c.. of group g (`live`
// false for the workgroups past the last group).
struct Block { a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, p: u32, g: u32, r: u32, c: u32, live: bool }

// Row q of a block.
fn block_row(b: Block, q: u32) -> vec4<f32> {
    var v = b.a0;
    if (q == 1u) { v = b.a1; }
    if (q == 2u) { v = b.a2; }
    if (q == 3u) { v = b.a3; }
    return v;
}

fn tiled_product(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> Block {
    let pr = product_of(workgroup_index(wid, nwg));
    let p = pr.x;
    let w = pr.y;
    let m = pw(p, 1u);
    let k = pw(p, 2u);
    let n = pw(p, 3u);
    let a_row = pw(p, 4u);
    let a_depth = pw(p, 5u);
    let b_depth = pw(p, 6u);
    let b_col = pw(p, 7u);
    let tiles_n = pw(p, 9u);
    let per_group = pw(p, 8u) * tiles_n;
    let g = w / per_group;
    // Whole workgroups past the end leave together (uniform control flow for the barriers).
    if (g >= pw(p, 0u)) { return Block(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), p, 0u, 0u, 0u, false); }
    let row0 = ((w % per_group) / tiles_n) * TILE;
    let col0 = (w % tiles_n) * TILE;
    let r = roles(p);
    let ga = g * m * k;
    let gb = g * k * n;
    let tid = lid.y * 16u + lid.x;
    let a_depth_fast = a_depth == 1u;
    let b_depth_fast = b_depth == 1u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Each invocation stages 4 values of each operand per slice. The next slice's values are
    // loaded into registers while the current one is multiplied, so the loads' latency hides
    // behind the arithmetic instead of adding to every slice (a single 32 x 64 tile over
    // k = 256 is 16 slices in a row).
    var va: array<f32, 4>;
    var vb: array<f32, 4>;
    for (var l = 0u; l < 4u; l++) {
        let e = tid + l * 256u;
        va[l] = load_a(r.x, e, 0u, row0, ga, m, k, a_row, a_depth, a_depth_fast);
        vb[l] = load_b(r.y, e, 0u, col0, gb, n, k, b_depth, b_col, b_depth_fast);
    }
    for (var k0 = 0u; k0 < k; k0 += DEPTH) {
        for (var l = 0u; l < 4u; l++) {
            let e = tid + l * 256u;
            tile_a[slot(e, a_depth_fast)] = va[l];
            tile_b[slot(e, b_depth_fast)] = vb[l];
        }
        workgroupBarrier();
        let k1 = k0 + DEPTH;
        if (k1 < k) {
            for (var l = 0u; l < 4u; l++) {
                let e = tid + l * 256u;
                va[l] = load_a(r.x, e, k1, row0, ga, m, k, a_row, a_depth, a_depth_fast);
                vb[l] = load_b(r.y, e, k1, col0, gb, n, k, b_depth, b_col, b_depth_fast);
            }
        }
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
    return Block(acc0, acc1, acc2, acc3, p, g, row0 + lid.y * 4u, col0 + lid.x * 4u, true);
}

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = tiled_product(wid, nwg, lid);
    if (!b.live) { return; }
    let m = pw(b.p, 1u);
    let n = pw(b.p, 3u);
    let gy = b.g * m * n;
    for (var q = 0u; q < 4u; q++) {
        let v = block_row(b, q);
        if (b.r + q < m) {
            for (var t = 0u; t < 4u; t++) {
                if (b.c + t < n) {
                    let e = gy + (b.r + q) * n + b.c + t;
                    if (b.p == 0u) {
                        y[e] = v[t];
                    } else {
                        s0[e] = v[t];
                    }
                }
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = tiled_product(wid, nwg, lid);
    if (!b.live) { return; }
    let m = pu(1u);
    let n = pu(3u);
    let gy = b.g * m * n;
    let bias = b.g * pu(11u);
    for (var q = 0u; q < 4u; q++) {
        let v = block_row(b, q);
        if (b.r + q < m) {
            for (var t = 0u; t < 4u; t++) {
                if (b.c + t < n) {
                    let e = gy + (b.r + q) * n + b.c + t;
                    y[e] = v[t];
                    let sum = v[t] + x2[bias + b.c + t];
                    s0[e] = sum;
                    after_bias(e, sum);
                }
            }
        }
    }
}
