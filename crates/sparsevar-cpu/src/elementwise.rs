//! Elementwise kernels: Binary (with broadcasting) and its reduction SumTo, Affine, Fill,
//! Unary and UnaryBackward.

use sparsevar_core::backend::{BinaryOp, UnaryOp};

use crate::Float;
use crate::par::{ELEM_CHUNK, for_chunks, go_parallel, twin};
use crate::strided::{Layout, MAX_RANK};

pub(crate) fn binary<F: Float>(op: BinaryOp, shape: &[usize], a_strides: &[usize], b_strides: &[usize], a: &[F], b: &[F], y: &mut [F]) -> Result<(), String> {
    if shape.len() > MAX_RANK {
        return Err(format!("binary: rank {} exceeds {MAX_RANK}", shape.len()));
    }
    if a_strides.len() != shape.len() || b_strides.len() != shape.len() {
        return Err(format!("binary: shape has rank {} but strides have {} and {}", shape.len(), a_strides.len(), b_strides.len()));
    }
    let layout = Layout::new(shape, [a_strides, b_strides]).ok_or("binary: rank checked above")?;
    match op {
        BinaryOp::Add => binary_with(|x, y| x + y, &layout, a, b, y),
        BinaryOp::Sub => binary_with(|x, y| x - y, &layout, a, b, y),
        BinaryOp::Mul => binary_with(|x, y| x * y, &layout, a, b, y),
    }
    Ok(())
}

/// One loop for every layout: after merging, same-shape operands are one contiguous run and
/// a bias broadcast ([M, C] op [C]) is M contiguous runs of C, so the specialised inner loops
/// below are the fast paths.
#[inline(always)]
fn binary_with<F: Float>(f: impl Fn(F, F) -> F + Sync + Send + Copy, layout: &Layout<2>, a: &[F], b: &[F], y: &mut [F]) {
    for_chunks(y, ELEM_CHUNK, layout.len(), |start, yc| binary_chunk(layout, a, b, start, yc, f));
}

twin! {
    /// Outputs start..start + y.len() of a Binary.
    fn binary_chunk<F: Float>(layout: &Layout<2>, a: &[F], b: &[F], start: usize, y: &mut [F], f: impl Fn(F, F) -> F + Copy) {
        let [sa, sb] = layout.inner_strides();
        // A row-broadcast operand ([M, C] op [C] or [C] op [M, C], the bias of a linear layer
        // or LayerNorm's gain) over whole rows: rows of fixed width, without the general
        // walk's per-row set-up (it cost about as much as a 64-wide row's arithmetic).
        let cols = layout.dims[1];
        let (ra, rb) = (layout.strides[0][0], layout.strides[1][0]);
        if layout.rank == 2
            && sa == 1
            && sb == 1
            && matches!((ra, rb), (r, 0) | (0, r) if r == cols)
            && start.is_multiple_of(cols)
            && y.len().is_multiple_of(cols)
        {
            // Row r of an operand starts at r · (its row stride): 0 for the broadcast one.
            for (r, yr) in (start / cols..).zip(y.chunks_exact_mut(cols)) {
                for ((o, &x), &z) in yr.iter_mut().zip(&a[r * ra..r * ra + cols]).zip(&b[r * rb..r * rb + cols]) {
                    *o = f(x, z);
                }
            }
            return;
        }
        for (pos, run, [oa, ob]) in layout.runs(start, y.len()) {
            let out = &mut y[pos..pos + run];
            match (sa, sb) {
                (1, 1) => {
                    for ((o, &x), &z) in out.iter_mut().zip(&a[oa..oa + run]).zip(&b[ob..ob + run]) {
                        *o = f(x, z);
                    }
                }
                (1, 0) => {
                    let z = b[ob];
                    for (o, &x) in out.iter_mut().zip(&a[oa..oa + run]) {
                        *o = f(x, z);
                    }
                }
                (0, 1) => {
                    let x = a[oa];
                    for (o, &z) in out.iter_mut().zip(&b[ob..ob + run]) {
                        *o = f(x, z);
                    }
                }
                _ => {
                    for (t, o) in out.iter_mut().enumerate() {
                        *o = f(a[oa + t * sa], b[ob + t * sb]);
                    }
                }
            }
        }
    }
}

/// SumTo: each output element is the sum of its inputs in row-major (lexicographic) order of
/// the reduced axes, starting from zero, whichever path below computes it.
pub(crate) fn sum_to<F: Float>(from: &[usize], to: &[usize], x: &[F], y: &mut [F]) -> Result<(), String> {
    if from.len() != to.len() {
        return Err(format!("sum_to: ranks differ ({from:?} to {to:?})"));
    }
    if from.iter().zip(to).any(|(&f, &t)| t != f && t != 1) {
        return Err(format!("sum_to: cannot reduce {from:?} to {to:?}"));
    }
    if y.is_empty() {
        return Ok(());
    }
    // Merge neighbouring axes of the same kind (kept / reduced), dropping size-1 axes of
    // `from`; both x and y stay row-major over the merged axes.
    let mut dims: Vec<(usize, bool)> = Vec::with_capacity(from.len());
    for (&f, &t) in from.iter().zip(to) {
        if f == 1 {
            continue;
        }
        let reduced = t != f;
        match dims.last_mut() {
            Some((size, r)) if *r == reduced => *size *= f,
            _ => dims.push((f, reduced)),
        }
    }
    if x.is_empty() {
        y.fill(F::ZERO);
        return Ok(());
    }
    if dims.iter().all(|&(_, r)| !r) {
        y.copy_from_slice(x);
        return Ok(());
    }
    // The bias gradient's shape, [rows, cols] → [cols], small enough for one task: rows
    // added in order into the zeroed output, as the general path below adds them, without
    // its per-row walk of the reduced axes.
    if let [(_, true), (cols, false)] = dims[..]
        && !go_parallel(x.len())
    {
        column_sums(cols, x, y);
        return Ok(());
    }
    // x strides of the merged axes, then the reduced axes alone (dims and x strides).
    let mut xs = vec![0; dims.len()];
    let mut s = 1;
    for i in (0..dims.len()).rev() {
        xs[i] = s;
        s *= dims[i].0;
    }
    let red_dims: Vec<usize> = dims.iter().filter(|d| d.1).map(|d| d.0).collect();
    let red_strides: Vec<usize> = dims.iter().zip(&xs).filter(|(d, _)| d.1).map(|(_, &s)| s).collect();
    let kept: Vec<(usize, usize)> = dims.iter().zip(&xs).filter(|(d, _)| !d.1).map(|(d, &s)| (d.0, s)).collect();
    // x offset of the kept multi-index whose row-major position in y is `e`.
    let kept_offset = |kept: &[(usize, usize)], mut e: usize| {
        let mut off = 0;
        for &(size, stride) in kept.iter().rev() {
            off += (e % size) * stride;
            e /= size;
        }
        off
    };
    let work = x.len();
    let (last, last_reduced) = *dims.last().expect("at least one reduced axis");
    if !last_reduced {
        // Contiguous kept tail of `last` elements: add whole row segments (vectorises), the
        // reduced multi-index running in lexicographic order. Leading-axes reduction (bias
        // gradient) is this path with a single output row.
        let outer = &kept[..kept.len() - 1];
        // Tasks: one output row, or 256-column pieces of it when that divides it evenly.
        let chunk = if last > 256 && last.is_multiple_of(256) { 256 } else { last };
        for_chunks(y, chunk, work, |start, yc| {
            let mut done = 0;
            while done < yc.len() {
                let e = start + done;
                let (row, col) = (e / last, e % last);
                let seg = (last - col).min(yc.len() - done);
                let acc = &mut yc[done..done + seg];
                acc.fill(F::ZERO);
                let base = kept_offset(outer, row) + col;
                for_each_offset(&red_dims, &red_strides, base, &mut |off| {
                    for (o, &v) in acc.iter_mut().zip(&x[off..off + seg]) {
                        *o += v;
                    }
                });
                done += seg;
            }
        });
    } else {
        // Reduced contiguous tail: each output is a sequential sum of runs of `last` values.
        let outer_red = &red_dims[..red_dims.len() - 1];
        let outer_strides = &red_strides[..red_strides.len() - 1];
        let per = x.len() / y.len();
        for_chunks(y, (ELEM_CHUNK / per.max(1)).max(1), work, |start, yc| {
            for (i, o) in yc.iter_mut().enumerate() {
                let mut acc = F::ZERO;
                for_each_offset(outer_red, outer_strides, kept_offset(&kept, start + i), &mut |off| {
                    for &v in &x[off..off + last] {
                        acc += v;
                    }
                });
                *o = acc;
            }
        });
    }
    Ok(())
}

twin! {
    /// y[j] = Σ_r x[r, j], r increasing from a zero start.
    fn column_sums<F: Float>(cols: usize, x: &[F], y: &mut [F]) {
        y.fill(F::ZERO);
        for row in x.chunks_exact(cols) {
            for (o, &v) in y.iter_mut().zip(row) {
                *o += v;
            }
        }
    }
}

/// Calls `f(base + Σ i_d · strides_d)` for every multi-index of `dims`, lexicographically.
fn for_each_offset(dims: &[usize], strides: &[usize], base: usize, f: &mut impl FnMut(usize)) {
    match dims.split_first() {
        None => f(base),
        Some((&d, rest)) => {
            for i in 0..d {
                for_each_offset(rest, &strides[1..], base + i * strides[0], f);
            }
        }
    }
}

pub(crate) fn affine<F: Float>(scale: f64, shift: f64, x: &[F], y: &mut [F]) {
    let (scale, shift) = (F::from_f64(scale), F::from_f64(shift));
    map(x, y, |v| scale * v + shift);
}

pub(crate) fn fill<F: Float>(value: f64, y: &mut [F]) {
    y.fill(F::from_f64(value));
}

#[inline(always)]
fn map<F: Float>(x: &[F], y: &mut [F], f: impl Fn(F) -> F + Sync + Send + Copy) {
    for_chunks(y, ELEM_CHUNK, x.len(), |start, yc| map_chunk(&x[start..], yc, f));
}

twin! {
    fn map_chunk<F: Float>(x: &[F], y: &mut [F], f: impl Fn(F) -> F) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = f(v);
        }
    }
}

#[inline(always)]
fn map2<F: Float>(a: &[F], b: &[F], y: &mut [F], f: impl Fn(F, F) -> F + Sync + Send + Copy) {
    for_chunks(y, ELEM_CHUNK, a.len(), |start, yc| map2_chunk(&a[start..], &b[start..], yc, f));
}

twin! {
    fn map2_chunk<F: Float>(a: &[F], b: &[F], y: &mut [F], f: impl Fn(F, F) -> F) {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            *o = f(u, v);
        }
    }
}

/// sqrt(2/π) of the tanh GELU.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044715;

#[inline(always)]
fn sigmoid<F: Float>(x: F) -> F {
    // Stable both ways: e = exp(−|x|) never overflows; written as selects so it vectorises.
    let e = (if x < F::ZERO { x } else { -x }).exp();
    let r = F::ONE / (F::ONE + e);
    if x < F::ZERO { e * r } else { r }
}

pub(crate) fn unary<F: Float>(op: UnaryOp, x: &[F], y: &mut [F]) {
    match op {
        // `x < 0 → 0` keeps NaN as NaN, like torch.relu.
        UnaryOp::Relu => map(x, y, |v| if v < F::ZERO { F::ZERO } else { v }),
        UnaryOp::Gelu => {
            // ½(1 + tanh u) = σ(2u): the documented function, one exp instead of a tanh, and
            // no cancellation in 1 + tanh u for very negative x.
            let (c2, a) = (F::from_f64(2.0 * GELU_C), F::from_f64(GELU_A));
            map(x, y, move |v| v / (F::ONE + (-(c2 * (v + a * v * v * v))).exp()))
        }
        UnaryOp::Sigmoid => map(x, y, sigmoid),
    }
}

/// Inputs `[x, dy]` (Relu, Gelu) or `[y, dy]` (Sigmoid).
pub(crate) fn unary_backward<F: Float>(op: UnaryOp, u: &[F], dy: &[F], dx: &mut [F]) {
    match op {
        // Subgradient 0 at x = 0, as torch's threshold_backward.
        UnaryOp::Relu => map2(u, dy, dx, |x, g| if x > F::ZERO { g } else { F::ZERO }),
        UnaryOp::Gelu => {
            let (c2, a, three_a) = (F::from_f64(2.0 * GELU_C), F::from_f64(GELU_A), F::from_f64(3.0 * GELU_A));
            map2(u, dy, dx, move |x, g| {
                // gelu = x·s with s = σ(2u), u = c(x + a x³):
                // gelu' = s + x·s(1−s)·2c(1 + 3a x²)  (= ½(1+t) + ½x(1−t²)c(1+3a x²), t = tanh u)
                let x2 = x * x;
                let s = F::ONE / (F::ONE + (-(c2 * (x + a * x2 * x))).exp());
                g * (s + x * s * (F::ONE - s) * c2 * (F::ONE + three_a * x2))
            })
        }
        UnaryOp::Sigmoid => map2(u, dy, dx, |y, g| g * y * (F::ONE - y)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain column sums give the general path's bits (which of the two runs depends on
    /// the size and on the calling thread, so they must agree).
    #[test]
    fn column_sums_keep_the_general_paths_bits() {
        let (rows, cols) = (5000, 64);
        assert!(go_parallel(rows * cols), "the size must take the general (parallel) path");
        let mut s = 7u64;
        let x: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect();
        let (mut general, mut plain) = (vec![f32::NAN; cols], vec![f32::NAN; cols]);
        sum_to(&[rows, cols], &[1, cols], &x, &mut general).unwrap();
        column_sums(cols, &x, &mut plain);
        assert_eq!(general.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}
