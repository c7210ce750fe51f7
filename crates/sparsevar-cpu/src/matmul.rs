//! MatMul: one `general_mat_mul` (matrixmultiply) per task.
//!
//! Tasks are (group, block of `ROW_BLOCK` output rows), the same partition on every run. Each
//! output element is one full-k dot product computed by matrixmultiply's microkernel, whose
//! arithmetic for an element does not depend on where its row sits in the block, so neither
//! the blocking nor the number of groups changes a single bit. k is never split.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, s};
use rayon::prelude::*;

use crate::Float;
use crate::par::PAR_WORK;

/// Output rows per task; a constant so the partition never depends on the thread count.
const ROW_BLOCK: usize = 64;

pub(crate) fn matmul<F: Float>(
    a: &[F],
    b: &[F],
    y: &mut [F],
    (batch, m, k, n): (usize, usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
) {
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    let block = |g: usize, r0: usize, yc: &mut [F]| {
        let rows = yc.len() / n;
        let ag = &a[g * m * k..(g + 1) * m * k];
        let bg = &b[g * k * n..(g + 1) * k * n];
        // Views cannot fail: the slices have exactly the shapes' lengths.
        let av = if trans_a {
            let full = ArrayView2::from_shape((k, m), ag).expect("a shape");
            full.slice_move(s![.., r0..r0 + rows]).reversed_axes()
        } else {
            ArrayView2::from_shape((rows, k), &ag[r0 * k..(r0 + rows) * k]).expect("a shape")
        };
        let bv = if trans_b {
            ArrayView2::from_shape((n, k), bg).expect("b shape").reversed_axes()
        } else {
            ArrayView2::from_shape((k, n), bg).expect("b shape")
        };
        let mut cv = ArrayViewMut2::from_shape((rows, n), yc).expect("y shape");
        general_mat_mul(F::ONE, &av, &bv, F::ZERO, &mut cv);
    };
    let group = |g: usize, yg: &mut [F], par: bool| {
        if par && m > ROW_BLOCK {
            yg.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(i, yc)| block(g, i * ROW_BLOCK, yc));
        } else {
            yg.chunks_mut(ROW_BLOCK * n).enumerate().for_each(|(i, yc)| block(g, i * ROW_BLOCK, yc));
        }
    };
    let work = batch.saturating_mul(m).saturating_mul(n).saturating_mul(k.max(1));
    if work < PAR_WORK {
        y.chunks_mut(m * n).enumerate().for_each(|(g, yg)| group(g, yg, false));
    } else if batch == 1 {
        group(0, y, true);
    } else {
        // Groups in parallel; blocks inside a group too when a group alone is big enough.
        let inner = m * n * k.max(1) >= PAR_WORK;
        y.par_chunks_mut(m * n).enumerate().for_each(|(g, yg)| group(g, yg, inner));
    }
}
