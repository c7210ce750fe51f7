//! Row kernels: Softmax, LayerNorm and CrossEntropy, each followed by its backward. A row is
//! the unit of work; its reductions run inside one task in the fixed order of `fold8`.

use crate::Float;
use crate::par::{fold8, for_chunks, max_of, row_chunk, sum8, twin};

/// Run `f(first_element, block)` over blocks of whole rows of `cols` (parallel over the
/// fixed row blocks of [`row_chunk`]); `f` gets the block's offset into the row-major data.
#[inline(always)]
fn for_blocks<F: Float>(y: &mut [F], cols: usize, f: impl Fn(usize, &mut [F]) + Sync + Send) {
    if cols == 0 {
        return;
    }
    let work = y.len();
    for_chunks(y, row_chunk(cols), work, f);
}

/// Run `f(row_index, out_row)` over rows of `cols` (parallel over fixed row blocks).
#[inline(always)]
fn for_rows<F: Float>(y: &mut [F], cols: usize, f: impl Fn(usize, &mut [F]) + Sync + Send) {
    for_blocks(y, cols, |start, yc| {
        for (i, row) in yc.chunks_mut(cols).enumerate() {
            f(start / cols + i, row);
        }
    });
}

pub(crate) fn softmax<F: Float>(cols: usize, x: &[F], y: &mut [F]) {
    for_blocks(y, cols, |start, yc| softmax_rows(cols, &x[start..start + yc.len()], yc));
}

twin! {
    /// Softmax of whole rows of `cols`: x and y hold the same rows.
    fn softmax_rows<F: Float>(cols: usize, x: &[F], y: &mut [F]) {
        for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
            softmax_row(xr, yr);
        }
    }
}

#[inline(always)]
fn softmax_row<F: Float>(x: &[F], y: &mut [F]) {
    let max = max_of(x);
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - max).exp();
    }
    let inv = F::ONE / sum8(y);
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// dx = y ⊙ (dy − Σ_j dy_j y_j); inputs `[y, dy]`.
pub(crate) fn softmax_backward<F: Float>(cols: usize, y: &[F], dy: &[F], dx: &mut [F]) {
    for_blocks(dx, cols, |start, dc| {
        let end = start + dc.len();
        softmax_backward_rows(cols, &y[start..end], &dy[start..end], dc);
    });
}

twin! {
    fn softmax_backward_rows<F: Float>(cols: usize, y: &[F], dy: &[F], dx: &mut [F]) {
        for ((yr, gr), dxr) in y.chunks_exact(cols).zip(dy.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols)) {
            let dot = fold8(yr, gr, |a, b| a * b);
            for ((o, &p), &g) in dxr.iter_mut().zip(yr).zip(gr) {
                *o = p * (g - dot);
            }
        }
    }
}

/// Mean and 1/sqrt(biased variance + eps) of one row (two passes, like torch).
#[inline(always)]
fn moments<F: Float>(x: &[F], eps: F) -> (F, F) {
    let n = F::from_usize(x.len());
    let mean = sum8(x) / n;
    let var = fold8(x, x, |v, _| (v - mean) * (v - mean)) / n;
    (mean, F::ONE / (var + eps).sqrt())
}

pub(crate) fn layer_norm<F: Float>(cols: usize, eps: f64, x: &[F], y: &mut [F]) {
    let eps = F::from_f64(eps);
    for_blocks(y, cols, |start, yc| layer_norm_rows(cols, eps, &x[start..start + yc.len()], yc));
}

twin! {
    fn layer_norm_rows<F: Float>(cols: usize, eps: F, x: &[F], y: &mut [F]) {
        for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
            let (mean, rstd) = moments(xr, eps);
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = (v - mean) * rstd;
            }
        }
    }
}

/// Inputs `[x, dy]`; mean and rstd are recomputed from x.
/// dx = rstd · (dy − mean(dy) − x̂ · mean(dy ⊙ x̂)), x̂ = (x − mean) · rstd.
pub(crate) fn layer_norm_backward<F: Float>(cols: usize, eps: f64, x: &[F], dy: &[F], dx: &mut [F]) {
    let eps = F::from_f64(eps);
    for_blocks(dx, cols, |start, dc| {
        let end = start + dc.len();
        layer_norm_backward_rows(cols, eps, &x[start..end], &dy[start..end], dc);
    });
}

twin! {
    fn layer_norm_backward_rows<F: Float>(cols: usize, eps: F, x: &[F], dy: &[F], dx: &mut [F]) {
        let n = F::from_usize(cols);
        for ((xr, gr), dxr) in x.chunks_exact(cols).zip(dy.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols)) {
            let (mean, rstd) = moments(xr, eps);
            let mean_g = sum8(gr) / n;
            let mean_gx = fold8(xr, gr, |v, g| g * ((v - mean) * rstd)) / n;
            for ((o, &v), &g) in dxr.iter_mut().zip(xr).zip(gr) {
                *o = rstd * (g - mean_g - (v - mean) * rstd * mean_gx);
            }
        }
    }
}

/// A float holding a class id / row index, checked to be an integer in `0..limit`.
#[inline]
pub(crate) fn index_of<F: Float>(v: F, limit: usize, what: &str) -> Result<usize, String> {
    let f = v.to_f64();
    // The round trip through usize is exact only for integers in range (NaN, negatives and
    // fractions fail it); cheaper than `fract`, a libm call on baseline x86-64.
    let i = f as usize;
    if i as f64 == f && i < limit { Ok(i) } else { Err(format!("{what}: index {f} outside 0..{limit}")) }
}

fn check_labels<F: Float>(labels: &[F], classes: usize, what: &str) -> Result<(), String> {
    labels.iter().try_for_each(|&l| index_of(l, classes, what).map(|_| ()))
}

/// y[g] = (1/batch) Σ_b (logsumexp(logits[g, b]) − logits[g, b, label]), b in increasing order.
pub(crate) fn cross_entropy<F: Float>((batch, classes): (usize, usize), logits: &[F], labels: &[F], y: &mut [F]) -> Result<(), String> {
    check_labels(labels, classes, "cross_entropy")?;
    if batch == 0 || classes == 0 {
        // Mean over an empty batch: 0/0, as torch gives NaN.
        y.fill(F::from_f64(f64::NAN));
        return Ok(());
    }
    let per = batch * classes;
    let nb = F::from_usize(batch);
    for_chunks(y, 1, y.len() * per, |g, yg| {
        let mut total = F::ZERO;
        for b in 0..batch {
            let row = &logits[g * per + b * classes..g * per + (b + 1) * classes];
            let label = labels[g * batch + b].to_f64() as usize;
            let max = max_of(row);
            let lse = max + fold8(row, row, |v, _| (v - max).exp()).ln();
            total += lse - row[label];
        }
        yg[0] = total / nb;
    });
    Ok(())
}

/// dlogits[g, b, :] = (softmax(logits[g, b]) − onehot(label)) · dloss[g] / batch.
pub(crate) fn cross_entropy_backward<F: Float>((batch, classes): (usize, usize), logits: &[F], labels: &[F], dloss: &[F], dx: &mut [F]) -> Result<(), String> {
    check_labels(labels, classes, "cross_entropy_backward")?;
    let nb = F::from_usize(batch);
    for_rows(dx, classes, |r, dr| {
        let g = r / batch;
        let scale = dloss[g] / nb;
        softmax_row(&logits[r * classes..(r + 1) * classes], dr);
        dr[labels[r].to_f64() as usize] -= F::ONE;
        for o in dr.iter_mut() {
            *o *= scale;
        }
    });
    Ok(())
}
