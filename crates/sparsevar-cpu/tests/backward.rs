//! Every backward kernel against central finite differences of its forward, in f64:
//! with L(x) = Σ w ⊙ forward(x) for a random w, the backward fed w must return ∂L/∂x.

mod common;

use common::{Rng, assert_close, run};
use sparsevar_core::backend::{BinaryOp, Kernel, UnaryOp};
use sparsevar_cpu::CpuBackend;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Central differences of L(x) = Σ w ⊙ f(x) with respect to every x_i.
fn numeric_grad(x: &[f64], w: &[f64], mut f: impl FnMut(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut loss = |x: &[f64]| -> f64 {
        let y = f(x);
        assert_eq!(y.len(), w.len());
        y.iter().zip(w).map(|(a, b)| a * b).sum()
    };
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + EPS;
            let up = loss(&xp);
            xp[i] = x[i] - EPS;
            let down = loss(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

fn be() -> CpuBackend<f64> {
    CpuBackend::<f64>::new()
}

#[test]
fn unary_backward_all_ops() {
    let mut rng = Rng::new(11);
    let len = 29;
    // Keep x away from Relu's kink, where the difference quotient is meaningless.
    let x: Vec<f64> = rng.vec(len).iter().map(|v| 3.0 * v + if *v >= 0.0 { 0.01 } else { -0.01 }).collect();
    let w = rng.vec(len);
    let b = &mut be();
    for op in [UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid] {
        let fwd = Kernel::Unary { op, len };
        let num = numeric_grad(&x, &w, |x| run(b, &fwd, &[x]));
        // Sigmoid's backward takes its output, the others their input.
        let first = if op == UnaryOp::Sigmoid { run(b, &fwd, &[&x]) } else { x.clone() };
        let got = run(b, &Kernel::UnaryBackward { op, len }, &[&first, &w]);
        assert_close(&got, &num, TOL, &format!("{op:?}"));
    }
}

#[test]
fn softmax_backward() {
    let mut rng = Rng::new(12);
    let (rows, cols) = (4, 9);
    let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| 2.0 * v).collect();
    let w = rng.vec(rows * cols);
    let b = &mut be();
    let fwd = Kernel::Softmax { rows, cols };
    let num = numeric_grad(&x, &w, |x| run(b, &fwd, &[x]));
    let y = run(b, &fwd, &[&x]);
    let got = run(b, &Kernel::SoftmaxBackward { rows, cols }, &[&y, &w]);
    assert_close(&got, &num, TOL, "softmax_backward");
}

#[test]
fn layer_norm_backward() {
    let mut rng = Rng::new(13);
    // 19 columns: exercises fold8's lanes and its tail.
    let (rows, cols, eps) = (5, 19, 1e-5);
    let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| 2.0 * v + 0.3).collect();
    let w = rng.vec(rows * cols);
    let b = &mut be();
    let fwd = Kernel::LayerNorm { rows, cols, eps };
    let num = numeric_grad(&x, &w, |x| run(b, &fwd, &[x]));
    let got = run(b, &Kernel::LayerNormBackward { rows, cols, eps }, &[&x, &w]);
    assert_close(&got, &num, TOL, "layer_norm_backward");
}

#[test]
fn scatter_add_is_the_adjoint_of_gather() {
    let mut rng = Rng::new(14);
    let (groups, table_rows, rows, cols) = (2, 4, 9, 3); // 9 rows into 4: repeated indices
    let table = rng.vec(groups * table_rows * cols);
    let idx = rng.indices(groups * rows, table_rows);
    let w = rng.vec(groups * rows * cols);
    let b = &mut be();
    let fwd = Kernel::Gather { groups, table_rows, rows, cols };
    let num = numeric_grad(&table, &w, |t| run(b, &fwd, &[t, &idx]));
    let got = run(b, &Kernel::ScatterAdd { groups, table_rows, rows, cols }, &[&idx, &w]);
    assert_close(&got, &num, TOL, "scatter_add");
}

#[test]
fn narrow_backward_is_the_adjoint_of_narrow() {
    let mut rng = Rng::new(15);
    let (outer, axis, start, len, inner) = (3, 7, 2, 3, 4);
    let x = rng.vec(outer * axis * inner);
    let w = rng.vec(outer * len * inner);
    let b = &mut be();
    let fwd = Kernel::Narrow { outer, axis, start, len, inner };
    let num = numeric_grad(&x, &w, |x| run(b, &fwd, &[x]));
    let got = run(b, &Kernel::NarrowBackward { outer, axis, start, len, inner }, &[&w]);
    assert_close(&got, &num, TOL, "narrow_backward");
}

#[test]
fn cross_entropy_backward() {
    let mut rng = Rng::new(16);
    let (groups, batch, classes) = (3, 5, 7);
    let logits: Vec<f64> = rng.vec(groups * batch * classes).iter().map(|v| 2.0 * v).collect();
    let labels = rng.indices(groups * batch, classes);
    let w = rng.vec(groups); // plays dloss
    let b = &mut be();
    let fwd = Kernel::CrossEntropy { groups, batch, classes };
    let num = numeric_grad(&logits, &w, |l| run(b, &fwd, &[l, &labels]));
    let got = run(b, &Kernel::CrossEntropyBackward { groups, batch, classes }, &[&logits, &labels, &w]);
    assert_close(&got, &num, TOL, "cross_entropy_backward");
}

#[test]
fn sum_to_is_the_adjoint_of_broadcasting_binary() {
    let mut rng = Rng::new(17);
    // (full shape, b's shape): b broadcast along the axes where it is 1.
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![6, 5], vec![1, 5]),
        (vec![6, 5], vec![6, 1]),
        (vec![2, 3, 4], vec![2, 1, 4]),
        (vec![2, 3, 4], vec![1, 3, 1]),
        (vec![2, 3, 4], vec![1, 1, 1]),
    ];
    let b = &mut be();
    for (shape, bshape) in cases {
        let full = common::strides(&shape);
        let bs: Vec<usize> = common::strides(&bshape).iter().zip(&bshape).map(|(&s, &d)| if d == 1 { 0 } else { s }).collect();
        let a = rng.vec(shape.iter().product());
        let bv = rng.vec(bshape.iter().product());
        let w = rng.vec(a.len());
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            let fwd = Kernel::Binary { op, shape: shape.clone(), a_strides: full.clone(), b_strides: bs.clone() };
            let num = numeric_grad(&bv, &w, |bv| run(b, &fwd, &[&a, bv]));
            // ∂L/∂b = SumTo(w) for Add, SumTo(w ⊙ a) for Mul.
            let upstream = match op {
                BinaryOp::Mul => w.iter().zip(&a).map(|(x, y)| x * y).collect(),
                _ => w.clone(),
            };
            let got = run(b, &Kernel::SumTo { from: shape.clone(), to: bshape.clone() }, &[&upstream]);
            assert_close(&got, &num, TOL, &format!("{op:?} {shape:?} -> {bshape:?}"));
        }
    }
}

#[test]
fn permute_backward_is_the_inverse_permutation() {
    let mut rng = Rng::new(18);
    let shape = vec![2, 3, 4, 5];
    let perm = vec![2, 0, 3, 1];
    let x = rng.vec(shape.iter().product());
    let w = rng.vec(x.len());
    let b = &mut be();
    let fwd = Kernel::Permute { shape: shape.clone(), perm: perm.clone() };
    let num = numeric_grad(&x, &w, |x| run(b, &fwd, &[x]));
    let yshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let got = run(b, &Kernel::Permute { shape: yshape, perm: inv }, &[&w]);
    assert_close(&got, &num, TOL, "permute backward");
}

#[test]
fn matmul_backward_is_two_matmuls() {
    let mut rng = Rng::new(19);
    let (batch, m, k, n) = (2, 3, 4, 5);
    let b = &mut be();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = rng.vec(batch * m * k);
        let bm = rng.vec(batch * k * n);
        let w = rng.vec(batch * m * n);
        let fwd = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
        let num_a = numeric_grad(&a, &w, |a| run(b, &fwd, &[a, &bm]));
        let num_b = numeric_grad(&bm, &w, |x| run(b, &fwd, &[&a, x]));
        // dA = dY·op(B)ᵀ, laid out as A is (transposed when trans_a); dB likewise.
        let da = if ta {
            run(b, &Kernel::MatMul { batch, m: k, k: n, n: m, trans_a: tb, trans_b: true }, &[&bm, &w])
        } else {
            run(b, &Kernel::MatMul { batch, m, k: n, n: k, trans_a: false, trans_b: !tb }, &[&w, &bm])
        };
        let db = if tb {
            run(b, &Kernel::MatMul { batch, m: n, k: m, n: k, trans_a: true, trans_b: ta }, &[&w, &a])
        } else {
            run(b, &Kernel::MatMul { batch, m: k, k: m, n, trans_a: !ta, trans_b: false }, &[&a, &w])
        };
        assert_close(&da, &num_a, TOL, &format!("dA ta={ta} tb={tb}"));
        assert_close(&db, &num_b, TOL, &format!("dB ta={ta} tb={tb}"));
    }
}
