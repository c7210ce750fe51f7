//! Every forward kernel against a naive reference, in f64 and f32, on odd sizes.

mod common;

use common::{Rng, assert_close, dot, each_backend, multi_indices, run, strides};
use sparsevar_core::backend::{BinaryOp, Kernel, UnaryOp};

fn matmul_ref(a: &[f64], b: &[f64], (batch, m, k, n): (usize, usize, usize, usize), ta: bool, tb: bool) -> Vec<f64> {
    let mut y = vec![0.0; batch * m * n];
    for g in 0..batch {
        let (ag, bg) = (&a[g * m * k..], &b[g * k * n..]);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { ag[p * m + i] } else { ag[i * k + p] };
                    let bv = if tb { bg[j * k + p] } else { bg[p * n + j] };
                    s += av * bv;
                }
                y[g * m * n + i * n + j] = s;
            }
        }
    }
    y
}

#[test]
fn matmul_matches_naive() {
    let mut rng = Rng::new(1);
    // Odd sizes; the second crosses row blocks (64) and matrixmultiply's k block (256);
    // (3, 2, 5, 11), (2, 6, 7, 1) and (1, 1, 1, 1) take the plain loop for tiny rows/columns.
    for &(batch, m, k, n) in &[(3, 7, 5, 11), (2, 130, 300, 9), (3, 2, 5, 11), (2, 6, 7, 1), (2, 3, 300, 4), (1, 1, 1, 1), (4, 3, 0, 2)] {
        let a = rng.vec(batch * m * k);
        let b = rng.vec(batch * k * n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let want = matmul_ref(&a, &b, (batch, m, k, n), ta, tb);
            let kern = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
            each_backend(|be, tol| {
                let tol = tol * (k as f64).max(1.0);
                assert_close(&run(be, &kern, &[&a, &b]), &want, tol, &format!("{} {kern:?}", be.name()));
            });
        }
    }
}

fn binary_ref(op: BinaryOp, shape: &[usize], sa: &[usize], sb: &[usize], a: &[f64], b: &[f64]) -> Vec<f64> {
    multi_indices(shape)
        .iter()
        .map(|idx| {
            let (x, y) = (a[dot(idx, sa)], b[dot(idx, sb)]);
            match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
            }
        })
        .collect()
}

#[test]
fn binary_matches_naive() {
    let mut rng = Rng::new(2);
    type Case = (Vec<usize>, Vec<usize>, Vec<usize>);
    let cases: Vec<Case> = vec![
        // same shape
        (vec![3, 7, 5], vec![35, 5, 1], vec![35, 5, 1]),
        // bias: [M, C] + [C]
        (vec![13, 6], vec![6, 1], vec![0, 1]),
        // bias on the left (Sub order matters)
        (vec![13, 6], vec![0, 1], vec![6, 1]),
        // per-row scale [M, C] * [M, 1]
        (vec![5, 7], vec![7, 1], vec![1, 0]),
        // scalar
        (vec![4, 9], vec![9, 1], vec![0, 0]),
        // transposed a (stored [5, 3]) against a contiguous b
        (vec![3, 5], vec![1, 3], vec![5, 1]),
        // ensemble-style broadcast [R, B, T, C] + [R, 1, 1, C] with a size-1 axis
        (vec![3, 2, 1, 5, 4], vec![40, 20, 20, 4, 1], vec![4, 0, 0, 0, 1]),
        // rank 6, mixed
        (vec![2, 3, 1, 2, 3, 2], vec![36, 12, 12, 6, 2, 1], vec![0, 2, 0, 1, 0, 6]),
        // big enough to run in parallel, broadcast along the middle
        (vec![17, 300, 9], vec![2700, 9, 1], vec![9, 0, 1]),
        // biases over several chunks: chunks that start on a row (64 divides the chunk
        // size) and chunks that start inside one (100 does not), on either side
        (vec![600, 64], vec![64, 1], vec![0, 1]),
        (vec![600, 64], vec![0, 1], vec![64, 1]),
        (vec![300, 100], vec![100, 1], vec![0, 1]),
        // empty
        (vec![3, 0, 2], vec![0, 2, 1], vec![2, 0, 1]),
    ];
    for (shape, sa, sb) in cases {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            let kern = Kernel::Binary { op, shape: shape.clone(), a_strides: sa.clone(), b_strides: sb.clone() };
            let (lens, _) = kern.lengths();
            let a = rng.vec(lens[0]);
            let b = rng.vec(lens[1]);
            let want = binary_ref(op, &shape, &sa, &sb, &a, &b);
            each_backend(|be, tol| assert_close(&run(be, &kern, &[&a, &b]), &want, tol, &format!("{kern:?}")));
        }
    }
}

fn sum_to_ref(from: &[usize], to: &[usize], x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; to.iter().product()];
    let ts = strides(to);
    for (l, idx) in multi_indices(from).iter().enumerate() {
        let yi: Vec<usize> = idx.iter().zip(to).map(|(&i, &t)| if t == 1 { 0 } else { i }).collect();
        y[dot(&yi, &ts)] += x[l];
    }
    y
}

#[test]
fn sum_to_matches_naive() {
    let mut rng = Rng::new(3);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![13, 6], vec![1, 6]),
        (vec![13, 6], vec![13, 1]),
        (vec![2, 3, 4], vec![2, 1, 4]),
        (vec![2, 3, 4], vec![1, 3, 1]),
        (vec![2, 3, 4, 5], vec![1, 3, 1, 5]),
        (vec![2, 3, 4, 5], vec![2, 1, 4, 1]),
        (vec![2, 3, 4], vec![1, 1, 1]),
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![3, 1, 4], vec![1, 1, 4]),
        // long kept rows (> 256, not a multiple), and a large parallel reduction
        (vec![3, 7, 300], vec![3, 1, 300]),
        (vec![2, 2000, 24], vec![2, 1, 24]),
        (vec![600, 70], vec![600, 1]),
        (vec![3, 0, 2], vec![3, 1, 2]),
    ];
    for (from, to) in cases {
        let x = rng.vec(from.iter().product());
        let want = sum_to_ref(&from, &to, &x);
        let kern = Kernel::SumTo { from: from.clone(), to: to.clone() };
        let red = (x.len() / want.len().max(1)).max(1) as f64;
        each_backend(|be, tol| assert_close(&run(be, &kern, &[&x]), &want, tol * red, &format!("{kern:?}")));
    }
}

#[test]
fn affine_fill_unary_match_formulas() {
    let mut rng = Rng::new(4);
    let len = 37;
    let x: Vec<f64> = rng.vec(len).iter().map(|v| 4.0 * v).collect();
    each_backend(|be, tol| {
        let want: Vec<f64> = x.iter().map(|v| -1.5 * v + 0.25).collect();
        assert_close(&run(be, &Kernel::Affine { len, scale: -1.5, shift: 0.25 }, &[&x]), &want, tol, "affine");
        assert_close(&run(be, &Kernel::Fill { len, value: 0.375 }, &[]), &vec![0.375; len], 0.0, "fill");
        let relu: Vec<f64> = x.iter().map(|&v| v.max(0.0)).collect();
        assert_close(&run(be, &Kernel::Unary { op: UnaryOp::Relu, len }, &[&x]), &relu, tol, "relu");
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let gelu: Vec<f64> = x.iter().map(|&v| 0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())).collect();
        assert_close(&run(be, &Kernel::Unary { op: UnaryOp::Gelu, len }, &[&x]), &gelu, tol, "gelu");
        let sig: Vec<f64> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        assert_close(&run(be, &Kernel::Unary { op: UnaryOp::Sigmoid, len }, &[&x]), &sig, tol, "sigmoid");
    });
    // GELU and its derivative stay finite far out (exp(−2u) overflows to inf there).
    each_backend(|be, _| {
        let x = [-1000.0, -20.0, 20.0, 1000.0];
        let y = run(be, &Kernel::Unary { op: UnaryOp::Gelu, len: 4 }, &[&x]);
        assert_close(&y, &[0.0, 0.0, 20.0, 1000.0], 1e-6, "gelu extremes");
        let d = run(be, &Kernel::UnaryBackward { op: UnaryOp::Gelu, len: 4 }, &[&x, &[1.0; 4]]);
        assert_close(&d, &[0.0, 0.0, 1.0, 1.0], 1e-6, "gelu' extremes");
    });
    // Sigmoid must not overflow at the extremes.
    each_backend(|be, _| {
        let y = run(be, &Kernel::Unary { op: UnaryOp::Sigmoid, len: 4 }, &[&[-1000.0, -100.0, 100.0, 1000.0]]);
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        assert_eq!(y[3], 1.0);
        assert!(y[0] >= 0.0 && y[0] < 1e-30);
    });
}

#[test]
fn softmax_and_layer_norm_match_naive() {
    let mut rng = Rng::new(5);
    for &(rows, cols) in &[(7, 13), (5, 1), (3, 40), (900, 37)] {
        let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| 5.0 * v).collect();
        let mut sm = vec![0.0; rows * cols];
        let mut ln = vec![0.0; rows * cols];
        let eps = 1e-5;
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
            for c in 0..cols {
                sm[r * cols + c] = (row[c] - max).exp() / z;
                ln[r * cols + c] = (row[c] - mean) / (var + eps).sqrt();
            }
        }
        each_backend(|be, tol| {
            assert_close(&run(be, &Kernel::Softmax { rows, cols }, &[&x]), &sm, tol, "softmax");
            assert_close(&run(be, &Kernel::LayerNorm { rows, cols, eps }, &[&x]), &ln, tol * 10.0, "layer_norm");
        });
    }
    // Large logits: subtracting the row max keeps it finite.
    each_backend(|be, _| {
        let y = run(be, &Kernel::Softmax { rows: 1, cols: 3 }, &[&[1000.0, 1000.0, -1000.0]]);
        assert_close(&y, &[0.5, 0.5, 0.0], 1e-7, "softmax large");
    });
}

#[test]
fn gather_scatter_match_naive() {
    let mut rng = Rng::new(6);
    let (groups, table_rows, rows, cols) = (3, 5, 11, 7);
    let table = rng.vec(groups * table_rows * cols);
    let idx = rng.indices(groups * rows, table_rows);
    let dy = rng.vec(groups * rows * cols);
    let mut gather = vec![0.0; groups * rows * cols];
    let mut scatter = vec![0.0; groups * table_rows * cols];
    for g in 0..groups {
        for i in 0..rows {
            let t = idx[g * rows + i] as usize;
            for c in 0..cols {
                gather[(g * rows + i) * cols + c] = table[(g * table_rows + t) * cols + c];
                scatter[(g * table_rows + t) * cols + c] += dy[(g * rows + i) * cols + c];
            }
        }
    }
    each_backend(|be, tol| {
        let y = run(be, &Kernel::Gather { groups, table_rows, rows, cols }, &[&table, &idx]);
        assert_close(&y, &gather, tol, "gather");
        let y = run(be, &Kernel::ScatterAdd { groups, table_rows, rows, cols }, &[&idx, &dy]);
        assert_close(&y, &scatter, tol * 4.0, "scatter_add");
    });
}

#[test]
fn permute_matches_naive() {
    let mut rng = Rng::new(7);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 3, 4, 5], vec![0, 2, 1, 3]),
        (vec![2, 3, 4, 5], vec![3, 1, 0, 2]),
        (vec![2, 3, 4, 5], vec![0, 1, 3, 2]),
        (vec![2, 3, 4, 5], vec![0, 1, 2, 3]),
        (vec![7], vec![0]),
        (vec![2, 1, 3, 2, 1, 3], vec![5, 3, 0, 4, 2, 1]),
        (vec![3, 40, 30, 8], vec![0, 2, 1, 3]),
        // blocks moved whole in one task (three axes after merging): heads to the front,
        // and an odd block width
        (vec![1, 13, 4, 16], vec![0, 2, 1, 3]),
        (vec![5, 7, 3], vec![1, 0, 2]),
        // rank 8 with nothing to merge: the any-rank loop
        (vec![2, 3, 2, 3, 2, 3, 2, 2], vec![7, 5, 3, 1, 6, 4, 2, 0]),
        // rank 8 that merges down to rank 2
        (vec![2, 3, 2, 3, 2, 3, 2, 2], vec![4, 5, 6, 7, 0, 1, 2, 3]),
        // x's contiguous axis moved away from y's innermost: the tiled transpose, with
        // attention's head moves both ways (middle axes, planes of more than one tile)
        (vec![3, 4, 5, 70], vec![0, 2, 3, 1]),
        (vec![3, 5, 70, 4], vec![0, 3, 1, 2]),
        (vec![2, 40, 70], vec![0, 2, 1]),
        (vec![50, 33], vec![1, 0]),
        (vec![3, 4, 2, 5, 6], vec![4, 1, 3, 0, 2]),
    ];
    for (shape, perm) in cases {
        let x = rng.vec(shape.iter().product());
        let yshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let xs = strides(&shape);
        let want: Vec<f64> = multi_indices(&yshape)
            .iter()
            .map(|yi| {
                let mut xi = vec![0; shape.len()];
                for (i, &p) in perm.iter().enumerate() {
                    xi[p] = yi[i];
                }
                x[dot(&xi, &xs)]
            })
            .collect();
        let kern = Kernel::Permute { shape: shape.clone(), perm: perm.clone() };
        each_backend(|be, tol| assert_close(&run(be, &kern, &[&x]), &want, tol, &format!("{kern:?}")));
    }
}

#[test]
fn narrow_and_its_backward_match_naive() {
    let mut rng = Rng::new(8);
    for &(outer, axis, start, len, inner) in &[(3, 7, 2, 4, 5), (2, 5, 0, 5, 3), (4, 6, 5, 1, 1), (3, 4, 1, 0, 2)] {
        let x = rng.vec(outer * axis * inner);
        let dy = rng.vec(outer * len * inner);
        let mut y = vec![0.0; outer * len * inner];
        let mut dx = vec![0.0; outer * axis * inner];
        for o in 0..outer {
            for a in 0..len {
                for i in 0..inner {
                    y[(o * len + a) * inner + i] = x[(o * axis + start + a) * inner + i];
                    dx[(o * axis + start + a) * inner + i] = dy[(o * len + a) * inner + i];
                }
            }
        }
        each_backend(|be, tol| {
            assert_close(&run(be, &Kernel::Narrow { outer, axis, start, len, inner }, &[&x]), &y, tol, "narrow");
            let k = Kernel::NarrowBackward { outer, axis, start, len, inner };
            assert_close(&run(be, &k, &[&dy]), &dx, tol, "narrow_backward");
        });
    }
}

#[test]
fn cross_entropy_and_its_backward_match_naive() {
    let mut rng = Rng::new(9);
    let (groups, batch, classes) = (3, 7, 5);
    let logits: Vec<f64> = rng.vec(groups * batch * classes).iter().map(|v| 3.0 * v).collect();
    let labels = rng.indices(groups * batch, classes);
    let dloss = rng.vec(groups);
    let mut loss = vec![0.0; groups];
    let mut grad = vec![0.0; groups * batch * classes];
    for g in 0..groups {
        for b in 0..batch {
            let r = g * batch + b;
            let row = &logits[r * classes..(r + 1) * classes];
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            let label = labels[r] as usize;
            loss[g] += (z.ln() - row[label]) / batch as f64;
            for c in 0..classes {
                let onehot = if c == label { 1.0 } else { 0.0 };
                grad[r * classes + c] = (row[c].exp() / z - onehot) * dloss[g] / batch as f64;
            }
        }
    }
    each_backend(|be, tol| {
        let k = Kernel::CrossEntropy { groups, batch, classes };
        assert_close(&run(be, &k, &[&logits, &labels]), &loss, tol * 10.0, "cross_entropy");
        let k = Kernel::CrossEntropyBackward { groups, batch, classes };
        assert_close(&run(be, &k, &[&logits, &labels, &dloss]), &grad, tol, "cross_entropy_backward");
    });
}
