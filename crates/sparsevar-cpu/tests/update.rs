//! Updates: Zero, AccumulateSquares, and two steps of Adam and Sgd against references
//! written out step by step.

mod common;

use common::{Rng, assert_close, upload};
use sparsevar_core::backend::{Backend, BufferId, Update};
use sparsevar_cpu::CpuBackend;

fn read(be: &mut dyn Backend, id: BufferId) -> Vec<f64> {
    let mut v = Vec::new();
    be.read(id, &mut v).unwrap();
    v
}

#[test]
fn zero_and_accumulate_squares() {
    let mut rng = Rng::new(21);
    let (groups, len) = (3, 21);
    let x = rng.vec(groups * len);
    let acc0 = vec![0.5, -1.0, 2.0];
    for be in [&mut CpuBackend::<f64>::new() as &mut dyn Backend, &mut CpuBackend::<f32>::new()] {
        let (xb, acc) = (upload(be, &x), upload(be, &acc0));
        be.update(&Update::AccumulateSquares { groups, len }, &[xb, acc]).unwrap();
        let want: Vec<f64> = (0..groups).map(|g| acc0[g] + x[g * len..(g + 1) * len].iter().map(|v| v * v).sum::<f64>()).collect();
        assert_close(&read(be, acc), &want, 1e-6, "accumulate_squares");
        be.update(&Update::Zero { len: groups * len }, &[xb]).unwrap();
        assert!(read(be, xb).iter().all(|&v| v == 0.0));
    }
}

/// Step-by-step AdamW for one group (the documented formula, scalar code).
#[allow(clippy::too_many_arguments)]
fn adam_ref(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64, wd: f64, scale: f64) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (bias1, bias2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..p.len() {
        let gi = g[i] * scale;
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        p[i] -= lr * (m[i] / bias1 / ((v[i] / bias2).sqrt() + eps) + wd * p[i]);
    }
}

#[test]
fn adam_two_steps_by_hand() {
    // One weight, g = 0.5 twice, lr 0.1, no decay: m̂ = 0.5 and v̂ = 0.25 at both steps, so
    // each step moves p by lr · 0.5 / (0.5 + 1e-8) ≈ 0.1: p = 1 → 0.9 → 0.8.
    let b = &mut CpuBackend::<f64>::new();
    let (p, g, m, v) = (upload(b, &[1.0]), upload(b, &[0.5]), upload(b, &[0.0]), upload(b, &[0.0]));
    for t in 1..=2 {
        let u = Update::Adam {
            groups: 1,
            len: 1,
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            bias1: 1.0 - 0.9f64.powi(t),
            bias2: 1.0 - 0.999f64.powi(t),
            clip: None,
        };
        b.update(&u, &[p, g, m, v]).unwrap();
    }
    assert_close(&read(b, p), &[0.8], 1e-8, "adam by hand");
    assert_close(&read(b, m), &[0.095], 1e-15, "adam m");
    assert_close(&read(b, v), &[0.00049975], 1e-15, "adam v");
}

#[test]
fn adam_matches_reference_with_decay_and_clip() {
    let mut rng = Rng::new(22);
    let (groups, len, lr, wd, clip) = (2, 5, 0.01, 0.1, 1.0);
    let p0 = rng.vec(groups * len);
    // Group 0 is clipped (norm > 1), group 1 is not.
    let g1: Vec<f64> = rng.vec(groups * len).iter().enumerate().map(|(i, v)| if i < len { 3.0 * v } else { 0.2 * v }).collect();
    let g2: Vec<f64> = rng.vec(groups * len);
    for (be, tol) in [(&mut CpuBackend::<f64>::new() as &mut dyn Backend, 1e-12), (&mut CpuBackend::<f32>::new(), 1e-5)] {
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; groups * len], vec![0.0; groups * len]);
        let (pb, gb, mb, vb, sq) =
            (upload(be, &p0), be.alloc(groups * len).unwrap(), be.alloc(groups * len).unwrap(), be.alloc(groups * len).unwrap(), be.alloc(groups).unwrap());
        for (t, g) in [(1, &g1), (2, &g2)] {
            be.write(gb, g).unwrap();
            be.update(&Update::Zero { len: groups }, &[sq]).unwrap();
            be.update(&Update::AccumulateSquares { groups, len }, &[gb, sq]).unwrap();
            let u = Update::Adam {
                groups,
                len,
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
                bias1: 1.0 - 0.9f64.powi(t),
                bias2: 1.0 - 0.999f64.powi(t),
                clip: Some(clip),
            };
            be.update(&u, &[pb, gb, mb, vb, sq]).unwrap();
            for gi in 0..groups {
                let r = gi * len..(gi + 1) * len;
                let norm = g[r.clone()].iter().map(|x| x * x).sum::<f64>().sqrt();
                let scale = (clip / (norm + 1e-6)).min(1.0);
                adam_ref(&mut p[r.clone()], &g[r.clone()], &mut m[r.clone()], &mut v[r.clone()], t, lr, wd, scale);
            }
        }
        assert_close(&read(be, pb), &p, tol, &format!("{} adam p", be.name()));
        assert_close(&read(be, mb), &m, tol, "adam m");
        assert_close(&read(be, vb), &v, tol, "adam v");
    }
}

#[test]
fn sgd_two_steps_by_hand() {
    // p = 1, g = 0.5, lr 0.1, momentum 0.9, wd 0.1:
    // step 1: g' = 0.5 + 0.1 = 0.6, vel = 0.6, p = 1 − 0.06 = 0.94
    // step 2: g' = 0.5 + 0.094 = 0.594, vel = 0.54 + 0.594 = 1.134, p = 0.94 − 0.1134 = 0.8266
    let b = &mut CpuBackend::<f64>::new();
    let (p, g, vel) = (upload(b, &[1.0]), upload(b, &[0.5]), upload(b, &[0.0]));
    let u = Update::Sgd { groups: 1, len: 1, lr: 0.1, momentum: 0.9, weight_decay: 0.1, clip: None };
    b.update(&u, &[p, g, vel]).unwrap();
    assert_close(&read(b, p), &[0.94], 1e-15, "sgd step 1");
    b.update(&u, &[p, g, vel]).unwrap();
    assert_close(&read(b, p), &[0.8266], 1e-15, "sgd step 2");
    assert_close(&read(b, vel), &[1.134], 1e-15, "sgd velocity");

    // Clipping: g = [3, 4] has norm 5, clip 1 scales it to [0.6, 0.8].
    let (p, g, vel, sq) = (upload(b, &[0.0, 0.0]), upload(b, &[3.0, 4.0]), upload(b, &[0.0, 0.0]), upload(b, &[25.0]));
    let u = Update::Sgd { groups: 1, len: 2, lr: 1.0, momentum: 0.0, weight_decay: 0.0, clip: Some(1.0) };
    b.update(&u, &[p, g, vel, sq]).unwrap();
    let s = 1.0 / (5.0 + 1e-6);
    assert_close(&read(b, p), &[-3.0 * s, -4.0 * s], 1e-15, "sgd clip");
}

#[test]
fn large_updates_match_small_ones() {
    // Big enough to take the parallel path; each element must still follow the formula,
    // so the result equals running the groups one at a time.
    let mut rng = Rng::new(23);
    let (groups, len) = (3, 40_000);
    let p0 = rng.vec(groups * len);
    let g = rng.vec(groups * len);
    let sqv = vec![4.0, 0.25, 100.0];
    let big = &mut CpuBackend::<f32>::new();
    let (pb, gb, mb, vb, sq) = (upload(big, &p0), upload(big, &g), big.alloc(groups * len).unwrap(), big.alloc(groups * len).unwrap(), upload(big, &sqv));
    let adam =
        |groups| Update::Adam { groups, len, lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01, bias1: 0.1, bias2: 0.05, clip: Some(1.0) };
    big.update(&adam(groups), &[pb, gb, mb, vb, sq]).unwrap();
    let got = read(big, pb);
    for gi in 0..groups {
        let one = &mut CpuBackend::<f32>::new();
        let r = gi * len..(gi + 1) * len;
        let (p1, g1, m1, v1, s1) =
            (upload(one, &p0[r.clone()]), upload(one, &g[r.clone()]), one.alloc(len).unwrap(), one.alloc(len).unwrap(), upload(one, &sqv[gi..gi + 1]));
        one.update(&adam(1), &[p1, g1, m1, v1, s1]).unwrap();
        assert_eq!(read(one, p1), got[r], "group {gi}");
    }
}

/// Bias corrections that are exactly 1 (every step after the first few hundred) skip their
/// division; x / 1 = x, so the f32 result keeps the documented formula's bits in all four
/// cases. The reference is scalar f32 in the formula's order.
#[test]
fn adam_f32_bits_follow_the_formula_with_unit_bias_corrections() {
    let mut rng = Rng::new(24);
    let len = 1000; // whole vectors and a tail
    let (p0, g, m0, v0) = (rng.vec(len), rng.vec(len), rng.vec(len), rng.vec(len).iter().map(|x| x * x).collect::<Vec<f64>>());
    let (lr, beta1, beta2, eps, wd) = (1e-3, 0.9, 0.98, 1e-8, 0.01);
    for (bias1, bias2) in [(1.0, 1.0), (1.0, 0.3), (0.7, 1.0), (0.7, 0.3)] {
        let be = &mut CpuBackend::<f32>::new();
        let (pb, gb, mb, vb) = (upload(be, &p0), upload(be, &g), upload(be, &m0), upload(be, &v0));
        let u = Update::Adam { groups: 1, len, lr, beta1, beta2, eps, weight_decay: wd, bias1, bias2, clip: None };
        be.update(&u, &[pb, gb, mb, vb]).unwrap();
        let c = |x: f64| x as f32;
        let (b1, nb1, b2, nb2) = (c(beta1), c(1.0 - beta1), c(beta2), c(1.0 - beta2));
        let (got_p, got_m, got_v) = (read(be, pb), read(be, mb), read(be, vb));
        for i in 0..len {
            let gi = c(g[i]);
            let m = b1 * c(m0[i]) + nb1 * gi;
            let v = b2 * c(v0[i]) + nb2 * gi * gi;
            let p = c(p0[i]) - c(lr) * (m / c(bias1) / ((v / c(bias2)).sqrt() + c(eps)) + c(wd) * c(p0[i]));
            let what = format!("bias1 {bias1} bias2 {bias2} at {i}");
            assert_eq!((got_m[i] as f32).to_bits(), m.to_bits(), "m, {what}");
            assert_eq!((got_v[i] as f32).to_bits(), v.to_bits(), "v, {what}");
            assert_eq!((got_p[i] as f32).to_bits(), p.to_bits(), "p, {what}");
        }
    }
}
