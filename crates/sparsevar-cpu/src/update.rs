//! In-place updates: Zero, AccumulateSquares, ScaleToBall and the optimizer steps. All but the sum of
//! squares are elementwise, so any split is deterministic; the sum runs inside one group.

use rayon::prelude::*;

use crate::Float;
use crate::par::{ELEM_CHUNK, fold8, go_parallel, twin, wide};

pub(crate) fn zero<F: Float>(buf: &mut [F]) {
    buf.fill(F::ZERO);
}

/// acc[g] += Σ_i x[g, i]² (the sum in `fold8`'s fixed order, then added).
pub(crate) fn accumulate_squares<F: Float>(len: usize, x: &[F], acc: &mut [F]) {
    if len == 0 {
        return;
    }
    let one = |(a, xg): (&mut F, &[F])| *a += wide(|| fold8(xg, xg, |v, _| v * v));
    if !go_parallel(x.len()) {
        acc.iter_mut().zip(x.chunks(len)).for_each(one);
    } else {
        acc.par_iter_mut().zip(x.par_chunks(len)).for_each(one);
    }
}

/// x[g, :] *= radius / ‖x[g]‖ where ‖x[g]‖ = sqrt(sq[g]) exceeds radius (elementwise, so
/// any split is deterministic).
pub(crate) fn scale_to_ball<F: Float>(len: usize, radius: f64, x: &mut [F], sq: &[F]) {
    if len == 0 {
        return;
    }
    let one = |(xg, s): (&mut [F], &F)| {
        let norm = s.to_f64().sqrt();
        if norm > radius {
            let f = F::from_f64(radius / norm);
            xg.iter_mut().for_each(|v| *v *= f);
        }
    };
    if !go_parallel(x.len()) {
        x.chunks_mut(len).zip(sq).for_each(one);
    } else {
        x.par_chunks_mut(len).zip(sq.par_iter()).for_each(one);
    }
}

/// Per-group clip factor min(1, clip / (‖g‖ + 1e-6)), ‖g‖ = sqrt of the squared norm buffer.
#[inline]
fn clip_scale<F: Float>(clip: Option<f64>, sq: Option<&[F]>, g: usize) -> F {
    match (clip, sq) {
        (Some(c), Some(sq)) => {
            let norm = sq[g].to_f64().sqrt();
            F::from_f64((c / (norm + 1e-6)).min(1.0))
        }
        _ => F::ONE,
    }
}

/// Calls `f(group, p, g, s1, s2)` on matching pieces of one parameter's buffers, groups and
/// fixed-size pieces of a group in parallel when large. `s2` may be empty (Sgd has one state).
fn for_pieces<F: Float>(len: usize, p: &mut [F], g: &[F], s1: &mut [F], s2: &mut [F], f: impl Fn(usize, &mut [F], &[F], &mut [F], &mut [F]) + Sync + Send) {
    if len == 0 || p.is_empty() {
        return;
    }
    let has2 = !s2.is_empty();
    if !go_parallel(p.len()) {
        for (gi, ((pg, gg), s1g)) in p.chunks_mut(len).zip(g.chunks(len)).zip(s1.chunks_mut(len)).enumerate() {
            let s2g: &mut [F] = if has2 { &mut s2[gi * len..(gi + 1) * len] } else { &mut [] };
            f(gi, pg, gg, s1g, s2g);
        }
        return;
    }
    let piece = ELEM_CHUNK;
    // Group by group, then fixed pieces of a group: every element is updated on its own.
    if has2 {
        (p.par_chunks_mut(len), g.par_chunks(len), s1.par_chunks_mut(len), s2.par_chunks_mut(len)).into_par_iter().enumerate().for_each(
            |(gi, (pg, gg, s1g, s2g))| {
                (pg.par_chunks_mut(piece), gg.par_chunks(piece), s1g.par_chunks_mut(piece), s2g.par_chunks_mut(piece))
                    .into_par_iter()
                    .for_each(|(a, b, c, d)| f(gi, a, b, c, d));
            },
        );
    } else {
        (p.par_chunks_mut(len), g.par_chunks(len), s1.par_chunks_mut(len)).into_par_iter().enumerate().for_each(|(gi, (pg, gg, s1g))| {
            (pg.par_chunks_mut(piece), gg.par_chunks(piece), s1g.par_chunks_mut(piece)).into_par_iter().for_each(|(a, b, c)| f(gi, a, b, c, &mut []));
        });
    }
}

pub(crate) struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub bias1: f64,
    pub bias2: f64,
    pub clip: Option<f64>,
}

/// AdamW exactly as documented: g' = scale·g; m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²;
/// p -= lr (m / bias1 / (sqrt(v / bias2) + eps) + wd p).
pub(crate) fn adam<F: Float>(len: usize, h: &AdamHyper, p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], sq: Option<&[F]>) {
    let c = |x: f64| F::from_f64(x);
    let (lr, b1, b2, eps, wd) = (c(h.lr), c(h.beta1), c(h.beta2), c(h.eps), c(h.weight_decay));
    let (nb1, nb2, bias1, bias2) = (c(1.0 - h.beta1), c(1.0 - h.beta2), c(h.bias1), c(h.bias2));
    let clip = h.clip;
    for_pieces(len, p, g, m, v, |gi, p, g, m, v| {
        let scale = clip_scale(clip, sq, gi);
        adam_piece(p, g, m, v, [scale, b1, nb1, b2, nb2, lr, bias1, bias2, eps, wd]);
    });
}

twin! {
    /// One piece of [`adam`]; `k` = [scale, β1, 1−β1, β2, 1−β2, lr, bias1, bias2, eps, wd].
    fn adam_piece<F: Float>(p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], k: [F; 10]) {
        // After a few hundred steps a bias correction is exactly 1 in F (1 − β1^t rounds to
        // 1 once β1^t is below half an ulp), and x / 1 = x exactly: skipping that division
        // keeps every bit. It pays where the state is in cache (R = 1: about +3%); an
        // ensemble's cold m and v make the loop wait on memory instead.
        match (k[6] == F::ONE, k[7] == F::ONE) {
            (true, true) => adam_loop::<F, false, false>(p, g, m, v, k),
            (true, false) => adam_loop::<F, false, true>(p, g, m, v, k),
            (false, true) => adam_loop::<F, true, false>(p, g, m, v, k),
            (false, false) => adam_loop::<F, true, true>(p, g, m, v, k),
        }
    }
}

/// [`adam_piece`]'s loop, dividing by bias1 only if `DIV1` and by bias2 only if `DIV2`.
#[inline(always)]
fn adam_loop<F: Float, const DIV1: bool, const DIV2: bool>(p: &mut [F], g: &[F], m: &mut [F], v: &mut [F], k: [F; 10]) {
    let [scale, b1, nb1, b2, nb2, lr, bias1, bias2, eps, wd] = k;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * scale;
        *m = b1 * *m + nb1 * g;
        *v = b2 * *v + nb2 * g * g;
        let mh = if DIV1 { *m / bias1 } else { *m };
        let vh = if DIV2 { *v / bias2 } else { *v };
        *p -= lr * (mh / (vh.sqrt() + eps) + wd * *p);
    }
}

/// SGD with momentum, PyTorch convention (no dampening): g' = scale·g + wd p;
/// vel = momentum vel + g'; p -= lr vel.
pub(crate) fn sgd<F: Float>(
    len: usize,
    (lr, momentum, weight_decay, clip): (f64, f64, f64, Option<f64>),
    p: &mut [F],
    g: &[F],
    vel: &mut [F],
    sq: Option<&[F]>,
) {
    let (lr, mom, wd) = (F::from_f64(lr), F::from_f64(momentum), F::from_f64(weight_decay));
    for_pieces(len, p, g, vel, &mut [], |gi, p, g, vel, _| {
        let scale = clip_scale(clip, sq, gi);
        for ((p, &g), vel) in p.iter_mut().zip(g).zip(vel.iter_mut()) {
            let g = g * scale + wd * *p;
            *vel = mom * *vel + g;
            *p -= lr * *vel;
        }
    });
}
