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
use crate::par::{fold8, go_parallel};

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
            small_block(ag, bg, yc, r0, (m, k, n), trans_a, trans_b);
        } else {
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

/// The plain loop. B untransposed: y[i, :] = A(i, 0) · B[0, :] + A(i, 1) · B[1, :] + … in
/// order of p (vectorises along the row). B transposed: y[i, j] = fold8 dot of A's row i and B's row j.
fn small_block<F: Float>(ag: &[F], bg: &[F], yc: &mut [F], r0: usize, (m, k, n): (usize, usize, usize), ta: bool, tb: bool) {
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
