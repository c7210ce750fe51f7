//! MatMul: per-group products, either through matrixmultiply (`general_mat_mul`) or, for
//! tiny per-group shapes where its packing costs more than the product, a plain loop.
//!
//! Which of the two computes a group depends only on (m, k, n, trans_a, trans_b), never on
//! the batch size or the thread count. Tasks are whole groups (batched small products, in
//! fixed-size runs of groups) or (group, block of `ROW_BLOCK` output rows); either way each
//! output element is one full-k dot product whose arithmetic does not depend on the task it
//! lands in (matrixmultiply's microkernel treats every row of a block alike), so the
//! partition never changes a bit. k is never split.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, s};
use rayon::prelude::*;

use crate::Float;
use crate::gemm512;
use crate::par::{fold8, go_parallel, twin, wide};

/// Output rows per task when a single group is large; a constant.
const ROW_BLOCK: usize = 64;
/// Multiply-adds per task when many small groups share a launch.
const TASK_WORK: usize = 1 << 15;
/// Longest reduction the plain loop handles (its transposed-A row lives on the stack).
const SMALL_K: usize = 256;

/// Shape-only choice of the plain loop: matrixmultiply pads m and n up to its register
/// tiles and packs both operands, which dominates for a row or two (attention's query row
/// against its keys), a column or two, or k ≤ 2 (outer products); otherwise it wins.
fn use_small(m: usize, k: usize, n: usize) -> bool {
    k <= SMALL_K && (m <= 4 || n <= 2 || k <= 2)
}

pub(crate) fn matmul<F: Float>(a: &[F], b: &[F], y: &mut [F], (batch, m, k, n): (usize, usize, usize, usize), trans_a: bool, trans_b: bool) {
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let small = use_small(m, k, n);
    // Rows r0.. of group g into `yc` (whole rows).
    let block = |g: usize, r0: usize, yc: &mut [F]| {
        let ag = &a[g * m * k..(g + 1) * m * k];
        let bg = &b[g * k * n..(g + 1) * k * n];
        if small {
            wide(|| small_block(ag, bg, yc, r0, (m, k, n), trans_a, trans_b));
        } else if !fast_f32(ag, bg, yc, r0, (m, k, n), trans_a, trans_b) {
            gemm_block(ag, bg, yc, r0, (m, k, n), trans_a, trans_b);
        }
    };
    let per = m * n * k.max(1);
    // A multiply-add costs far less than an elementwise kernel's element (packed SIMD FMAs),
    // so it counts as a fraction of one in the parallel threshold.
    let parallel = go_parallel(batch.saturating_mul(per) / if small { 2 } else { 16 });
    if per >= TASK_WORK && m > ROW_BLOCK {
        // Big groups: (group, row block) tasks.
        let group = |(g, yg): (usize, &mut [F])| {
            if parallel {
                yg.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(i, yc)| block(g, i * ROW_BLOCK, yc));
            } else {
                yg.chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(i, yc)| block(g, i * ROW_BLOCK, yc));
            }
        };
        if parallel && batch > 1 {
            y.par_chunks_mut(m * n).enumerate().for_each(group);
        } else {
            y.chunks_mut(m * n).enumerate().for_each(group);
        }
    } else {
        // Small groups: runs of whole groups, sized from the shape alone.
        let groups_per_task = (TASK_WORK / per).max(1);
        let run = |(t, yt): (usize, &mut [F])| {
            for (i, yg) in yt.chunks_mut(m * n).enumerate() {
                block(t * groups_per_task + i, 0, yg);
            }
        };
        if parallel {
            y.par_chunks_mut(groups_per_task * m * n).enumerate().for_each(run);
        } else {
            y.chunks_mut(groups_per_task * m * n).enumerate().for_each(run);
        }
    }
}

/// The AVX-512 kernel on rows r0.. of one group when `F` is f32 and the CPU has it (same
/// bits as matrixmultiply); false where it did nothing.
#[inline]
fn fast_f32<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, shape: (usize, usize, usize), ta: bool, tb: bool) -> bool {
    match (F::as_f32(ag), F::as_f32(bg), F::as_f32_mut(yc)) {
        (Some(a), Some(b), Some(y)) => gemm512::gemm_rows(a, b, y, r0, shape, ta, tb),
        _ => false,
    }
}

/// matrixmultiply on rows r0..r0+rows of one group.
fn gemm_block<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) {
    let rows = yc.len() / n;
    // Views cannot fail: the slices have exactly the shapes' lengths.
    let av = if ta {
        let full = ArrayView2::from_shape((k, m), ag).expect("a shape");
        full.slice_move(s![.., r0..r0 + rows]).reversed_axes()
    } else {
        ArrayView2::from_shape((rows, k), &ag[r0 * k..(r0 + rows) * k]).expect("a shape")
    };
    let bv = if tb { ArrayView2::from_shape((n, k), bg).expect("b shape").reversed_axes() } else { ArrayView2::from_shape((k, n), bg).expect("b shape") };
    let mut cv = ArrayViewMut2::from_shape((rows, n), yc).expect("y shape");
    general_mat_mul(F::ONE, &av, &bv, F::ZERO, &mut cv);
}

/// Fewer output columns than this go to [`narrow_rows`].
const NARROW: usize = 4;

/// Rows per block of [`narrow_rows`]: one AVX-512 vector of f32 lanes.
const NARROW_ROWS: usize = 16;
/// Columns of A per piece of [`narrow_rows`]' copy of A's block.
const NARROW_K: usize = 64;

twin! {
    /// B untransposed with n < `NARROW` (a two-class head and its weight gradient): the same
    /// sums in the same order as [`small_block`]'s row loop (A(i, 0) · B[0, j] first, then
    /// the next term A(i, p) · B[p, j] added in order of p), but for `NARROW_ROWS` rows at
    /// once, one row per vector lane: one row alone is n chains of k dependent additions,
    /// which wait on the adder's latency. A's block is first copied column by column (its
    /// rows are k apart unless A is transposed), so each term is one vector multiply-add.
    fn narrow_rows<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, shape: (usize, usize, usize), ta: bool) {
        let (m, k, n) = shape;
        // A's block in pieces of NARROW_K columns (a small buffer to clear per call).
        let mut at = [F::ZERO; NARROW_K * NARROW_ROWS];
        for (bi, yb) in yc.chunks_mut(NARROW_ROWS * n).enumerate() {
            let i0 = r0 + bi * NARROW_ROWS;
            let rows = yb.len() / n;
            let mut acc = [[F::ZERO; NARROW_ROWS]; NARROW];
            for p0 in (0..k).step_by(NARROW_K) {
                let kp = NARROW_K.min(k - p0);
                // at[q][r] = A(i0 + r, p0 + q); lanes past `rows` keep older values, never stored.
                for q in 0..kp {
                    let (p, col) = (p0 + q, &mut at[q * NARROW_ROWS..q * NARROW_ROWS + rows]);
                    if ta {
                        col.copy_from_slice(&ag[p * m + i0..p * m + i0 + rows]);
                    } else {
                        for (r, c) in col.iter_mut().enumerate() {
                            *c = ag[(i0 + r) * k + p];
                        }
                    }
                }
                if p0 == 0 {
                    // The first term starts the sum (no zero added), as in the row loop.
                    for j in 0..n {
                        for r in 0..NARROW_ROWS {
                            acc[j][r] = at[r] * bg[j];
                        }
                    }
                }
                for q in usize::from(p0 == 0)..kp {
                    let (p, aq) = (p0 + q, &at[q * NARROW_ROWS..(q + 1) * NARROW_ROWS]);
                    for j in 0..n {
                        let b = bg[p * n + j];
                        for r in 0..NARROW_ROWS {
                            acc[j][r] += aq[r] * b;
                        }
                    }
                }
            }
            for (r, yr) in yb.chunks_mut(n).enumerate() {
                for (j, y) in yr.iter_mut().enumerate() {
                    *y = acc[j][r];
                }
            }
        }
    }
}

/// Columns per block of [`short_dots`] (its transposed copy of B lives on the stack).
const SHORT_COLS: usize = 64;

twin! {
    /// B transposed with 1 ≤ k < 8 (a two-class head's input gradient, k = 2): [`fold8`] of
    /// so short a dot has only its tail, so y[i, j] = 0 + ((0 + A(i, 0)·B[j, 0]) + A(i, 1)·B[j, 1]
    /// + …), the very same operations, here along whole rows of B's transpose (copied per
    /// block of columns) so that they vectorise; fold8 per element ran 8,192 scalar dots of
    /// length 2 per MLP member step (8% of it). The outer `0 +` is left out: it changes only
    /// a −0, and after the inner one the sum is never −0 (x + y is −0 only when both are).
    fn short_dots<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, shape: (usize, usize, usize), ta: bool) {
        let (m, k, n) = shape;
        let mut bt = [F::ZERO; 8 * SHORT_COLS];
        let rows = yc.len() / n;
        for j0 in (0..n).step_by(SHORT_COLS) {
            let w = SHORT_COLS.min(n - j0);
            for p in 0..k {
                for j in 0..w {
                    bt[p * SHORT_COLS + j] = bg[(j0 + j) * k + p];
                }
            }
            for di in 0..rows {
                let i = r0 + di;
                let a_at = |p: usize| if ta { ag[p * m + i] } else { ag[i * k + p] };
                let y = &mut yc[di * n + j0..di * n + j0 + w];
                let a0 = a_at(0);
                for (o, &b) in y.iter_mut().zip(&bt[..w]) {
                    *o = F::ZERO + a0 * b;
                }
                for p in 1..k {
                    let ap = a_at(p);
                    for (o, &b) in y.iter_mut().zip(&bt[p * SHORT_COLS..p * SHORT_COLS + w]) {
                        *o += ap * b;
                    }
                }
            }
        }
    }
}

/// The plain loop. B untransposed: y[i, :] = A(i, 0) · B[0, :] + A(i, 1) · B[1, :] + … in
/// order of p (vectorises along the row). B transposed: y[i, j] = fold8 dot of A's row i and B's row j.
fn small_block<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) {
    if !tb && k > 2 && n < NARROW {
        narrow_rows(ag, bg, yc, r0, (m, k, n), ta);
        return;
    }
    if tb && (1..8).contains(&k) {
        short_dots(ag, bg, yc, r0, (m, k, n), ta);
        return;
    }
    let mut scratch = [F::ZERO; SMALL_K];
    for (di, yrow) in yc.chunks_mut(n).enumerate() {
        let i = r0 + di;
        if tb {
            let arow: &[F] = if ta {
                for (p, s) in scratch[..k].iter_mut().enumerate() {
                    *s = ag[p * m + i];
                }
                &scratch[..k]
            } else {
                &ag[i * k..(i + 1) * k]
            };
            for (j, o) in yrow.iter_mut().enumerate() {
                *o = fold8(arow, &bg[j * k..(j + 1) * k], |x, y| x * y);
            }
        } else if k == 0 {
            yrow.fill(F::ZERO);
        } else {
            // The first term initialises the row (one pass fewer than zero-fill-and-add).
            // Full blocks of NB columns accumulate in a local array the compiler keeps in
            // registers; the tail goes through memory. Same order of terms either way.
            const NB: usize = 16;
            let a_at = |p: usize| if ta { ag[p * m + i] } else { ag[i * k + p] };
            // (With k ≤ 2 there is little to keep: write the row directly.)
            let full = if k > 2 { n - n % NB } else { 0 };
            for j0 in (0..full).step_by(NB) {
                let mut acc = [F::ZERO; NB];
                let (av, b0) = (a_at(0), &bg[j0..j0 + NB]);
                for l in 0..NB {
                    acc[l] = av * b0[l];
                }
                for p in 1..k {
                    let (av, bp) = (a_at(p), &bg[p * n + j0..p * n + j0 + NB]);
                    for l in 0..NB {
                        acc[l] += av * bp[l];
                    }
                }
                yrow[j0..j0 + NB].copy_from_slice(&acc);
            }
            if full < n {
                let tail = &mut yrow[full..];
                let av = a_at(0);
                for (o, &bv) in tail.iter_mut().zip(&bg[full..n]) {
                    *o = av * bv;
                }
                for p in 1..k {
                    let av = a_at(p);
                    for (o, &bv) in tail.iter_mut().zip(&bg[p * n + full..(p + 1) * n]) {
                        *o += av * bv;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spanning signs and magnitudes, with exact zeros, signed zeros
    /// and products that underflow to ∓0 (where an FMA chain's sign of zero shows).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let u = (s >> 40) as u32;
                match u % 16 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => -1e-30 * (u % 7) as f32,
                    3 => 1e-25,
                    _ => ((u >> 4) as f32 / (1 << 20) as f32 - 0.5) * 4.0,
                }
            })
            .collect()
    }

    /// The AVX-512 kernel gives matrixmultiply's bits for every shape, transpose, row block
    /// and k beyond one 256-block (skipped on CPUs without AVX-512F).
    #[test]
    fn avx512_kernel_matches_matrixmultiply_bit_for_bit() {
        if !gemm512::available() {
            eprintln!("no AVX-512F here: kernel not exercised");
            return;
        }
        let shapes = [
            (195, 64, 64),
            (32, 195, 16),
            (64, 195, 64),
            (195, 32, 16),
            (32, 16, 195),
            (32, 256, 64),
            (5, 300, 33),
            (17, 513, 7),
            (9, 1, 47),
            (3, 70, 130),
            (32, 256, 256),
            (7, 600, 300),
            (300, 64, 200),
        ];
        for (si, &(m, k, n)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = values(m * k, si as u64 * 4 + 1);
                let b = values(k * n, si as u64 * 4 + 2);
                for r0 in [0, m / 3] {
                    let rows = m - r0;
                    let mut want = vec![f32::NAN; rows * n];
                    let mut got = vec![f32::NAN; rows * n];
                    gemm_block(&a, &b, &mut want, r0, (m, k, n), ta, tb);
                    assert!(gemm512::gemm_rows(&a, &b, &mut got, r0, (m, k, n), ta, tb));
                    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                        assert_eq!(w.to_bits(), g.to_bits(), "m={m} k={k} n={n} ta={ta} tb={tb} r0={r0} at {i}: {w} vs {g}");
                    }
                }
            }
        }
    }

    /// Narrow products (n < 4) several rows at a time keep the row loop's bits: each output is
    /// A(i, 0)·B[0, j] and then + A(i, p)·B[p, j] in order of p, as written out here.
    #[test]
    fn narrow_rows_keep_the_row_loops_order() {
        for (si, &(m, k, n)) in [(32, 256, 2), (256, 32, 2), (17, 9, 3), (9, 3, 1), (5, 64, 2)].iter().enumerate() {
            for ta in [false, true] {
                let a = values(m * k, 40 + si as u64);
                let b = values(k * n, 50 + si as u64);
                let a_at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                for r0 in [0, m / 3] {
                    let mut got = vec![f32::NAN; (m - r0) * n];
                    small_block(&a, &b, &mut got, r0, (m, k, n), ta, false);
                    for (e, g) in got.iter().enumerate() {
                        let (i, j) = (r0 + e / n, e % n);
                        let mut want = a_at(i, 0) * b[j];
                        for p in 1..k {
                            want += a_at(i, p) * b[p * n + j];
                        }
                        assert_eq!(want.to_bits(), g.to_bits(), "m={m} k={k} n={n} ta={ta} r0={r0} at ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn short_dots_keep_fold8s_bits() {
        // Signed zeros in `values` make the leading `0 +` of fold8 show.
        for (si, &(m, k, n)) in [(32, 2, 256), (32, 2, 2), (5, 7, 130), (9, 1, 65), (3, 3, 64)].iter().enumerate() {
            for ta in [false, true] {
                let a = values(m * k, 60 + si as u64);
                let b = values(k * n, 70 + si as u64);
                let a_at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
                for r0 in [0, m / 3] {
                    let mut got = vec![f32::NAN; (m - r0) * n];
                    small_block(&a, &b, &mut got, r0, (m, k, n), ta, true);
                    let arow: Vec<Vec<f32>> = (0..m).map(|i| (0..k).map(|p| a_at(i, p)).collect()).collect();
                    for (e, g) in got.iter().enumerate() {
                        let (i, j) = (r0 + e / n, e % n);
                        let want = fold8(&arow[i], &b[j * k..(j + 1) * k], |x, y| x * y);
                        assert_eq!(want.to_bits(), g.to_bits(), "m={m} k={k} n={n} ta={ta} r0={r0} at ({i}, {j})");
                    }
                }
            }
        }
    }

    /// `cargo test --release -p sparsevar-cpu --lib -- --ignored --nocapture gemm_speed`
    #[test]
    #[ignore]
    fn gemm_speed() {
        for &(batch, m, k, n, ta, tb) in &[
            (32, 129, 64, 64, false, true),
            (32, 129, 64, 64, false, false),
            (32, 64, 129, 64, true, false),
            (32, 64, 32, 256, true, false),
            (32, 256, 32, 64, true, false),
            (32, 195, 64, 64, false, true),
            (32, 195, 64, 64, false, false),
            (32, 64, 195, 64, true, false),
            (128, 32, 195, 16, false, false),
            (128, 32, 16, 195, false, true),
            (128, 195, 32, 16, true, false),
            (32, 32, 256, 64, false, true),
            (32, 32, 64, 256, false, false),
            // The MLP's (depth 2, width 256, T = 64, B = 32) products, forward and backward.
            (32, 32, 256, 256, false, false),
            (32, 32, 256, 256, false, true),
            (32, 256, 32, 256, true, false),
            (32, 64, 32, 256, true, false),
        ] {
            let a = values(batch * m * k, 1);
            let b = values(batch * k * n, 2);
            let mut y = vec![0.0f32; batch * m * n];
            let flops = 2.0 * (batch * m * k * n) as f64;
            let mut time = |f: &mut dyn FnMut(&mut [f32])| {
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    f(&mut y);
                    best = best.min(t.elapsed().as_secs_f64());
                }
                flops / best / 1e9
            };
            let mm = time(&mut |y| {
                for (g, yg) in y.chunks_mut(m * n).enumerate() {
                    gemm_block(&a[g * m * k..], &b[g * k * n..], yg, 0, (m, k, n), ta, tb);
                }
            });
            let fast = time(&mut |y| {
                for (g, yg) in y.chunks_mut(m * n).enumerate() {
                    gemm512::gemm_rows(&a[g * m * k..(g + 1) * m * k], &b[g * k * n..(g + 1) * k * n], yg, 0, (m, k, n), ta, tb);
                }
            });
            println!("[{batch}] {m}x{k}x{n} ta={ta} tb={tb}: matrixmultiply {mm:.1} GFLOP/s, avx512 {fast:.1} GFLOP/s (one thread)");
        }
    }
}
