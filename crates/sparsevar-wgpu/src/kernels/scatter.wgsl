// ScatterAdd without float atomics: dtable[g, t, :] = sum of dy[g, i, :] over the rows i with
// idx[g, i] = t, added in increasing i (the CPU order, so the bits agree).
// Small scatters (table rows x rows up to SCATTER_SCAN_WORK in kernels.rs) and tables too
// large to sort in workgroup memory scan in one pass without scratch: scatter_scan_shared for
// long groups, scatter_scan for short ones. The others take two passes over a launch site's
// own u32 scratch:
//   scatter_index_shared: per group, a stable counting sort of the rows by table row;
//   scatter_sum:          per output element, a gather-style loop over its rows.
// Words: 0 = groups, 1 = table_rows T, 2 = rows, 3 = cols, 4 = groups T cols.
// Scratch: per group g, T + 2 words at g (T + 2) (row ends, then a bad-index flag), and the
// sorted rows at groups (T + 2) + g rows.

// Up to SHARED_ROWS table rows: one workgroup per group sorts in workgroup memory, counting
// with workgroup atomics (the counts do not depend on their order) and placing 64 rows at a
// time, each at its start plus the number of equal indices before it in the chunk.
const SHARED_ROWS: u32 = 2048u;
var<workgroup> cursor: array<atomic<u32>, 2048>;
var<workgroup> chunk: array<u32, 64>;
var<workgroup> bad: atomic<u32>;

@compute @workgroup_size(64)
fn scatter_index_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    let groups = pu(0u);
    // Whole workgroups past the end leave together (uniform control flow for the barriers).
    if (g >= groups) { return; }
    let t_rows = pu(1u);
    let rows = pu(2u);
    let h = g * (t_rows + 2u);
    let o = groups * (t_rows + 2u) + g * rows;
    let l = lid.x;
    for (var t = l; t < t_rows; t += 64u) {
        atomicStore(&cursor[t], 0u);
    }
    if (l == 0u) {
        atomicStore(&bad, 0u);
    }
    workgroupBarrier();
    for (var i = l; i < rows; i += 64u) {
        let t = index_of(x0[g * rows + i], t_rows);
        if (t == BAD_INDEX) {
            atomicStore(&bad, 1u);
        } else {
            atomicAdd(&cursor[t], 1u);
        }
    }
    workgroupBarrier();
    if (l == 0u) {
        // Exclusive prefix sum: each table row's start.
        var run = 0u;
        for (var t = 0u; t < t_rows; t++) {
            let c = atomicLoad(&cursor[t]);
            atomicStore(&cursor[t], run);
            run += c;
        }
    }
    workgroupBarrier();
    for (var c0 = 0u; c0 < rows; c0 += 64u) {
        let i = c0 + l;
        var t = BAD_INDEX;
        if (i < rows) {
            t = index_of(x0[g * rows + i], t_rows);
        }
        chunk[l] = t;
        workgroupBarrier();
        var before = 0u;
        var last = true;
        if (t != BAD_INDEX) {
            for (var j = 0u; j < 64u; j++) {
                if (chunk[j] == t) {
                    if (j < l) {
                        before += 1u;
                    } else if (j > l) {
                        last = false;
                    }
                }
            }
            scratch[o + atomicLoad(&cursor[t]) + before] = i;
        }
        // Everyone has read the cursors; the last row of each table row moves its cursor.
        workgroupBarrier();
        if (t != BAD_INDEX && last) {
            atomicAdd(&cursor[t], before + 1u);
        }
        workgroupBarrier();
    }
    // Each cursor now holds its row's end (= the next row's start), as scatter_sum expects.
    for (var t = l; t < t_rows; t += 64u) {
        scratch[h + t] = atomicLoad(&cursor[t]);
    }
    if (l == 0u) {
        scratch[h + t_rows + 1u] = atomicLoad(&bad);
    }
}

// Output element e of [groups, T, cols]: (group, table row, column).
fn output_place(e: u32, t_rows: u32, cols: u32) -> vec3<u32> {
    let r = udiv(e, cols);
    let g = udiv(r, t_rows);
    return vec3<u32>(g, r - g * t_rows, e - r * cols);
}

// Inputs [idx, dy] (idx was consumed by scatter_index_shared); `order` is the scratch, read-only.
// An index outside 0..T poisons its group with NaN (an error on the CPU).
@compute @workgroup_size(256)
fn scatter_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = workgroup_index(wid, nwg) * 256u + lid.x;
    if (e >= pu(4u)) { return; }
    let groups = pu(0u);
    let t_rows = pu(1u);
    let rows = pu(2u);
    let cols = pu(3u);
    let gtc = output_place(e, t_rows, cols);
    let g = gtc.x;
    let t = gtc.y;
    let c = gtc.z;
    let h = g * (t_rows + 2u);
    if (order[h + t_rows + 1u] != 0u) {
        y[e] = nan();
        return;
    }
    var start = 0u;
    if (t > 0u) { start = order[h + t - 1u]; }
    let end = order[h + t];
    let o = groups * (t_rows + 2u) + g * rows;
    var acc = 0.0;
    for (var p = start; p < end; p++) {
        acc += x1[(g * rows + order[o + p]) * cols + c];
    }
    y[e] = acc;
}

// Inputs [idx, dy]. Each output scans its group's rows in increasing i and adds those that
// point at its table row: the sum scatter_sum makes, without the sort. Any index outside
// 0..T poisons the whole group with NaN, as there.
@compute @workgroup_size(256)
fn scatter_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = workgroup_index(wid, nwg) * 256u + lid.x;
    if (e >= pu(4u)) { return; }
    let t_rows = pu(1u);
    let rows = pu(2u);
    let cols = pu(3u);
    let gtc = output_place(e, t_rows, cols);
    let g = gtc.x;
    let t = gtc.y;
    let c = gtc.z;
    var acc = 0.0;
    var bad = false;
    for (var i = 0u; i < rows; i++) {
        let k = index_of(x0[g * rows + i], t_rows);
        bad = bad || k == BAD_INDEX;
        if (k == t) {
            acc += x1[(g * rows + i) * cols + c];
        }
    }
    y[e] = select(acc, nan(), bad);
}

// Inputs [idx, dy]. One workgroup per table row of a group and block of 256 columns: the
// 256 invocations test 256 rows' indices at a time, mark the hits in a 256-bit mask, and each
// column's invocation adds the hit rows in increasing i. The sums of scatter_scan, but each
// index is read once per table row instead of once per output element, and the serial walk
// visits the hits only (a group of 2,080 rows into 129 table rows has about 16 per row).
// Words as above, and 5 = column blocks.
var<workgroup> hits: array<atomic<u32>, 8>;

@compute @workgroup_size(256)
fn scatter_scan_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = workgroup_index(wid, nwg);
    let t_rows = pu(1u);
    let rows = pu(2u);
    let cols = pu(3u);
    let blocks = pu(5u);
    let r = udiv(w, blocks);
    // Whole workgroups past the end leave together (uniform control flow for the barriers).
    if (r >= pu(0u) * t_rows) { return; }
    let g = udiv(r, t_rows);
    let t = r - g * t_rows;
    let l = lid.x;
    let c = (w - r * blocks) * 256u + l;
    if (l == 0u) {
        atomicStore(&bad, 0u);
    }
    var acc = 0.0;
    for (var c0 = 0u; c0 < rows; c0 += 256u) {
        if (l < 8u) {
            atomicStore(&hits[l], 0u);
        }
        workgroupBarrier();
        let i = c0 + l;
        if (i < rows) {
            let k = index_of(x0[g * rows + i], t_rows);
            if (k == BAD_INDEX) {
                atomicStore(&bad, 1u);
            } else if (k == t) {
                atomicOr(&hits[l >> 5u], 1u << (l & 31u));
            }
        }
        workgroupBarrier();
        if (c < cols) {
            for (var h = 0u; h < 8u; h++) {
                var bits = atomicLoad(&hits[h]);
                while (bits != 0u) {
                    let j = c0 + h * 32u + countTrailingZeros(bits);
                    bits &= bits - 1u;
                    acc += x1[(g * rows + j) * cols + c];
                }
            }
        }
        // Everyone has read the mask before the next chunk clears it.
        workgroupBarrier();
    }
    workgroupBarrier();
    if (c < cols) {
        y[r * cols + c] = select(acc, nan(), atomicLoad(&bad) != 0u);
    }
}
