// Elementwise and data-movement kernels: one invocation per output element, 256 per
// workgroup. Words: 0 = number of output elements n, then per kernel as noted.

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return workgroup_index(wid, nwg) * 256u + lid.x;
}

// 1: value.
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    y[i] = pf(1u);
}

// 1: scale, 2: shift.
@compute @workgroup_size(256)
fn affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    y[i] = pf(1u) * x0[i] + pf(2u);
}

// 1: op (0 relu, 1 gelu, 2 sigmoid).
@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    y[i] = activation(pu(1u), x0[i]);
}

// Inputs [x, dy] (relu, gelu) or [y, dy] (sigmoid). 1: op.
@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let u = x0[i];
    let g = x1[i];
    switch pu(1u) {
        case 0u: { y[i] = select(0.0, g, u > 0.0); }
        case 1u: {
            // gelu = x s, s = sigmoid(2c(x + a x^3)): gelu' = s + x s (1 - s) 2c (1 + 3a x^2).
            let x2 = u * u;
            let s = 1.0 / (1.0 + exp(-(GELU_C2 * (u + GELU_A * x2 * u))));
            y[i] = g * (s + u * s * (1.0 - s) * GELU_C2 * (1.0 + 3.0 * GELU_A * x2));
        }
        default: { y[i] = g * u * (1.0 - u); }
    }
}

// 1: op (0 add, 1 sub, 2 mul), 2: rank r <= 6 (axes merged on the host),
// 3..8: dims, 9..14: a strides, 15..20: b strides.
@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    var rem = i;
    var oa = 0u;
    var ob = 0u;
    for (var d = pu(2u); d > 0u; d--) {
        let size = pu(2u + d);
        let q = udiv(rem, size);
        let c = rem - q * size;
        rem = q;
        oa += c * pu(8u + d);
        ob += c * pu(14u + d);
    }
    let a = x0[oa];
    let b = x1[ob];
    switch pu(1u) {
        case 0u: { y[i] = a + b; }
        case 1u: { y[i] = a - b; }
        default: { y[i] = a * b; }
    }
}

// The backward of a LayerNorm's scale and shift, fused by the backend from [SumTo dy, Mul
// dy * scale, Mul dy * h]: y[g, j] = the sum over rows i of dy[g, i, j] (in increasing order
// from zero, as sum_to adds), s0 = dy * scale[g * word 3 + j] (word 3: cols for a scale per
// group, 0 for one shared), s1 = dy * h. Inputs [dy, scale, h]. Words: 0 = groups * cols,
// 1 = rows per group, 2 = cols. An invocation per column walks down its rows.
@compute @workgroup_size(256)
fn norm_affine_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = element(wid, nwg, lid);
    if (o >= pu(0u)) { return; }
    let rows = pu(1u);
    let cols = pu(2u);
    let g = udiv(o, cols);
    let j = o - g * cols;
    let scale = x1[g * pu(3u) + j];
    var at = g * rows * cols + j;
    var acc = 0.0;
    for (var i = 0u; i < rows; i++) {
        let v = x0[at];
        acc += v;
        s0[at] = v * scale;
        s1[at] = v * x2[at];
        at += cols;
    }
    y[o] = acc;
}

// Each output sums its inputs in lexicographic order of the reduced axes (the CPU order).
// 1: kept rank, 2..7: kept dims, 8..13: their x strides, 14: reduced rank,
// 15..20: reduced dims, 21..26: their x strides, 27: number of reduced elements.
@compute @workgroup_size(256)
fn sum_to(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    var rem = i;
    var base = 0u;
    for (var d = pu(1u); d > 0u; d--) {
        let size = pu(1u + d);
        let q = udiv(rem, size);
        base += (rem - q * size) * pu(7u + d);
        rem = q;
    }
    let rank = pu(14u);
    var off = base;
    var acc = 0.0;
    let total = pu(27u);
    let inner = pu(14u + rank);
    let inner_stride = pu(20u + rank);
    if (rank == 1u) {
        // One reduced axis (bias gradients: [rows, cols] to [cols]): a strided walk, four
        // loads issued before their adds, which stay in order (the same sum as the odometer).
        var j = 0u;
        for (; j + 4u <= total; j += 4u) {
            let a = x0[off];
            let b = x0[off + inner_stride];
            let c = x0[off + 2u * inner_stride];
            let d = x0[off + 3u * inner_stride];
            acc += a;
            acc += b;
            acc += c;
            acc += d;
            off += 4u * inner_stride;
        }
        for (; j < total; j++) {
            acc += x0[off];
            off += inner_stride;
        }
        y[i] = acc;
        return;
    }
    // Odometer over the reduced axes, last axis fastest (the private index array lives in
    // slow local memory on GPUs, hence the path above).
    var idx = array<u32, 6>(0u, 0u, 0u, 0u, 0u, 0u);
    for (var j = 0u; j < total; j++) {
        acc += x0[off];
        idx[rank - 1u] += 1u;
        off += inner_stride;
        if (idx[rank - 1u] == inner) {
            // Carry: recompute the offset from the multi-index (rare: once per inner run).
            var d = rank - 1u;
            loop {
                if (d == 0u || idx[d] < pu(15u + d)) { break; }
                idx[d] = 0u;
                d -= 1u;
                idx[d] += 1u;
            }
            off = base;
            for (var e = 0u; e < rank; e++) {
                off += idx[e] * pu(21u + e);
            }
        }
    }
    y[i] = acc;
}

// y walks row-major; x is read through permuted strides. 1: rank, 2..7: y dims,
// 8..13: x strides of y's axes. 14: the workgroups of this permute; the backend may pair two
// identical permutes of other buffers in one dispatch, the later workgroups moving x1 into s0.
@compute @workgroup_size(256)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = workgroup_index(wid, nwg);
    let second = w >= pu(14u);
    let i = select(w, w - pu(14u), second) * 256u + lid.x;
    if (i >= pu(0u)) { return; }
    var rem = i;
    var o = 0u;
    for (var d = pu(1u); d > 0u; d--) {
        let size = pu(1u + d);
        let q = udiv(rem, size);
        o += (rem - q * size) * pu(7u + d);
        rem = q;
    }
    if (second) {
        s0[i] = x1[o];
    } else {
        y[i] = x0[o];
    }
}

// x: [outer, axis, inner] -> y: [outer, len, inner]. 1: axis, 2: start, 3: len, 4: inner.
@compute @workgroup_size(256)
fn narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let seg = pu(3u) * pu(4u);
    let o = udiv(i, seg);
    y[i] = x0[(o * pu(1u) + pu(2u)) * pu(4u) + i - o * seg];
}

// dy: [outer, len, inner] -> dx: [outer, axis, inner], zero outside the window.
@compute @workgroup_size(256)
fn narrow_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let inner = pu(4u);
    let row = udiv(i, inner);
    let c = i - row * inner;
    let o = udiv(row, pu(1u));
    let a = row - o * pu(1u);
    let start = pu(2u);
    let len = pu(3u);
    if (a >= start && a < start + len) {
        y[i] = x0[(o * len + a - start) * inner + c];
    } else {
        y[i] = 0.0;
    }
}

// y[g, r, c] = table[g, idx[g, r], c]; an index outside 0..table_rows gives NaN (the CPU
// backend reports it as an error; the GPU cannot without a read-back).
// Inputs [table, idx]. 1: table_rows, 2: rows, 3: cols.
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    let table_rows = pu(1u);
    let cols = pu(3u);
    let r = udiv(i, cols);
    let g = udiv(r, pu(2u));
    let t = index_of(x1[r], table_rows);
    if (t == BAD_INDEX) {
        y[i] = nan();
    } else {
        y[i] = x0[(g * table_rows + t) * cols + i - r * cols];
    }
}

// Zero: buf[..n] = 0 (an update: `y` is the buffer).
@compute @workgroup_size(256)
fn zero(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = element(wid, nwg, lid);
    if (i >= pu(0u)) { return; }
    y[i] = 0.0;
}
