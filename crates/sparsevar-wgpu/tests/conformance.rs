//! Kernel conformance: every Kernel and Update, written once as a function of the backend,
//! run on the f64 CPU reference, on CPU f32 and on wgpu, compared with an absolute +
//! relative tolerance. Sizes are deliberately not multiples of any workgroup size.
//!
//! `cargo test -p sparsevar-wgpu --test conformance -- --nocapture` prints the largest errors.

#[macro_use]
mod common;

use common::{F32, Rng, Tol, conform, download, run, upload};
use sparsevar_core::backend::{Backend, BinaryOp, Kernel, UnaryOp, Update, strides_of};

type Outputs = Vec<(String, Vec<f64>)>;

fn matmul_all_transposes_and_shapes() {
    conform("matmul", F32, |be| {
        let mut rng = Rng::new(1);
        let mut outs: Outputs = Vec::new();
        // Small (per-element kernel), tiled (64 x 64 tiles with ragged edges), tiled with
        // m, n < 64 (an ensemble's per-member linears), the attention shape (many
        // 1 x 16 . 16 x 65 products), and an empty depth.
        for &(batch, m, k, n) in &[(3, 7, 5, 11), (2, 70, 33, 130), (1, 129, 100, 65), (4, 33, 40, 50), (128, 1, 16, 65), (2, 3, 0, 4)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let kern = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
                    let a = rng.vec(batch * m * k);
                    let b = rng.vec(batch * k * n);
                    outs.push((format!("{batch}x{m}x{k}x{n} ta={ta} tb={tb}"), run(be, &kern, &[&a, &b])));
                }
            }
        }
        outs
    });
}

fn binary_with_broadcasts() {
    conform("binary", F32, |be| {
        let mut rng = Rng::new(2);
        let mut outs: Outputs = Vec::new();
        let shape = vec![3, 7, 5, 11];
        let full = strides_of(&shape);
        // b broadcast over axes 0 and 2 ([1, 7, 1, 11] stored contiguously).
        let bcast = vec![0, 11, 0, 1];
        // A scalar, and a broadcast of a along the last axis.
        let cases: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
            (shape.clone(), full.clone(), full.clone()),
            (shape.clone(), full.clone(), bcast.clone()),
            (shape.clone(), bcast.clone(), full.clone()),
            (shape.clone(), full.clone(), vec![0, 0, 0, 0]),
            (vec![2, 3, 1, 4, 5, 3], strides_of(&[2, 3, 1, 4, 5, 3]), vec![0, 15, 0, 0, 3, 1]),
            (vec![1000], vec![1], vec![1]),
            (vec![], vec![], vec![]),
        ];
        for (shape, sa, sb) in cases {
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
                let kern = Kernel::Binary { op, shape: shape.clone(), a_strides: sa.clone(), b_strides: sb.clone() };
                let (lens, _) = kern.lengths();
                let a = rng.vec(lens[0]);
                let b = rng.vec(lens[1]);
                outs.push((format!("{op:?} {shape:?} {sa:?} {sb:?}"), run(be, &kern, &[&a, &b])));
            }
        }
        outs
    });
}

fn sum_to_every_reduction_pattern() {
    conform("sum_to", F32, |be| {
        let mut rng = Rng::new(3);
        let from = vec![3, 7, 5, 11];
        let x = rng.vec(3 * 7 * 5 * 11);
        let mut outs: Outputs = Vec::new();
        for to in [vec![3, 1, 1, 11], vec![1, 7, 5, 1], vec![1, 1, 1, 1], vec![3, 7, 5, 11], vec![1, 7, 1, 11], vec![3, 7, 5, 1]] {
            let kern = Kernel::SumTo { from: from.clone(), to: to.clone() };
            outs.push((format!("{to:?}"), run(be, &kern, &[&x])));
        }
        // The bias-gradient shape: [R, rows, C] -> [R, 1, C].
        let y = rng.vec(2 * 1000 * 65);
        outs.push(("bias".into(), run(be, &Kernel::SumTo { from: vec![2, 1000, 65], to: vec![2, 1, 65] }, &[&y])));
        outs
    });
}

fn affine_and_fill() {
    conform("affine_fill", F32, |be| {
        let mut rng = Rng::new(4);
        let x = rng.vec(1000);
        vec![
            ("affine".into(), run(be, &Kernel::Affine { len: 1000, scale: -1.7, shift: 0.25 }, &[&x])),
            ("fill".into(), run(be, &Kernel::Fill { len: 1000, value: 0.125 }, &[])),
            ("fill_one".into(), run(be, &Kernel::Fill { len: 1, value: -3.0 }, &[])),
        ]
    });
}

fn unary_forward() {
    conform("unary", F32, |be| {
        let mut rng = Rng::new(5);
        // Wide range, so GELU's and sigmoid's tails are exercised.
        let x = rng.scaled(1000, 12.0);
        [UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid].into_iter().map(|op| (format!("{op:?}"), run(be, &Kernel::Unary { op, len: 1000 }, &[&x]))).collect()
    });
}

fn unary_backward() {
    conform("unary_backward", F32, |be| {
        let mut rng = Rng::new(6);
        let x = rng.scaled(1000, 6.0);
        let dy = rng.vec(1000);
        // Sigmoid's backward takes the output y in (0, 1).
        let y: Vec<f64> = rng.vec(1000).iter().map(|v| 0.5 + 0.49 * v).collect();
        vec![
            ("Relu".into(), run(be, &Kernel::UnaryBackward { op: UnaryOp::Relu, len: 1000 }, &[&x, &dy])),
            ("Gelu".into(), run(be, &Kernel::UnaryBackward { op: UnaryOp::Gelu, len: 1000 }, &[&x, &dy])),
            ("Sigmoid".into(), run(be, &Kernel::UnaryBackward { op: UnaryOp::Sigmoid, len: 1000 }, &[&y, &dy])),
        ]
    });
}

fn softmax_and_backward() {
    conform("softmax", F32, |be| {
        let mut rng = Rng::new(7);
        let (rows, cols) = (150, 65);
        let x = rng.scaled(rows * cols, 5.0);
        let y = run(be, &Kernel::Softmax { rows, cols }, &[&x]);
        let dy = rng.vec(rows * cols);
        let dx = run(be, &Kernel::SoftmaxBackward { rows, cols }, &[&y, &dy]);
        let one = run(be, &Kernel::Softmax { rows: 3, cols: 1 }, &[&x[..3]]);
        let mut outs: Outputs = vec![("y".into(), y), ("dx".into(), dx), ("one_col".into(), one)];
        // A row per workgroup: rows longer than the 64 invocations sharing one, and more rows
        // than a grid dimension holds (65,535 workgroups).
        for (rows, cols) in [(40, 257), (70_000, 3)] {
            let x = rng.scaled(rows * cols, 5.0);
            let y = run(be, &Kernel::Softmax { rows, cols }, &[&x]);
            let dy = rng.vec(rows * cols);
            outs.push((format!("dx {rows}x{cols}"), run(be, &Kernel::SoftmaxBackward { rows, cols }, &[&y, &dy])));
            outs.push((format!("y {rows}x{cols}"), y));
        }
        outs
    });
}

fn layer_norm_and_backward() {
    conform("layer_norm", F32, |be| {
        let mut rng = Rng::new(8);
        let mut outs: Outputs = Vec::new();
        // Rows shorter and longer than the 64 invocations sharing one, and more rows than a
        // grid dimension holds.
        for (rows, cols) in [(130, 65), (50, 20), (40, 257), (70_000, 8)] {
            let eps = 1e-5;
            // An offset mean, as real activations have.
            let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| (2.0 * v + 0.7) as f32 as f64).collect();
            let dy = rng.vec(rows * cols);
            outs.push((format!("y {rows}x{cols}"), run(be, &Kernel::LayerNorm { rows, cols, eps }, &[&x])));
            outs.push((format!("dx {rows}x{cols}"), run(be, &Kernel::LayerNormBackward { rows, cols, eps }, &[&x, &dy])));
        }
        outs
    });
}

fn gather_and_scatter_add() {
    conform("gather_scatter", F32, |be| {
        let mut rng = Rng::new(9);
        let (groups, table_rows, rows, cols) = (3, 13, 200, 65);
        let table = rng.vec(groups * table_rows * cols);
        // Repeated indices, and some table rows never hit.
        let idx = rng.indices(groups * rows, table_rows - 2);
        // Many groups: one workgroup each in the shared-memory sort.
        let many_idx = rng.indices(700 * 65, 5);
        let many_dy = rng.vec(700 * 65 * 4);
        let dy = rng.vec(groups * rows * cols);
        let mut outs: Outputs = vec![
            ("gather".into(), run(be, &Kernel::Gather { groups, table_rows, rows, cols }, &[&table, &idx])),
            ("scatter".into(), run(be, &Kernel::ScatterAdd { groups, table_rows, rows, cols }, &[&idx, &dy])),
            ("scatter_many_groups".into(), run(be, &Kernel::ScatterAdd { groups: 700, table_rows: 5, rows: 65, cols: 4 }, &[&many_idx, &many_dy])),
        ];
        // The transformer's CLS read-out: every row gathers the same table row.
        let same = vec![7.0; groups * 33];
        let dy2 = rng.vec(groups * 33 * cols);
        outs.push(("scatter_same".into(), run(be, &Kernel::ScatterAdd { groups, table_rows, rows: 33, cols }, &[&same, &dy2])));
        // A table too large for the workgroup-memory sort takes the serial one.
        let (big_rows, n) = (2500, 300);
        let idx3 = rng.indices(2 * n, big_rows);
        let dy3 = rng.vec(2 * n * 3);
        let table3 = rng.vec(2 * big_rows * 3);
        outs.push(("scatter_big_table".into(), run(be, &Kernel::ScatterAdd { groups: 2, table_rows: big_rows, rows: n, cols: 3 }, &[&idx3, &dy3])));
        outs.push(("gather_big_table".into(), run(be, &Kernel::Gather { groups: 2, table_rows: big_rows, rows: n, cols: 3 }, &[&table3, &idx3])));
        outs
    });
}

fn permute_axes() {
    conform("permute", Tol { abs: 0.0, rel: 0.0 }, |be| {
        let mut rng = Rng::new(10);
        let shape = vec![3, 7, 5, 11];
        let x = rng.vec(3 * 7 * 5 * 11);
        let mut outs: Outputs = Vec::new();
        for perm in [vec![0, 2, 1, 3], vec![3, 2, 1, 0], vec![1, 0, 3, 2], vec![0, 1, 2, 3], vec![2, 3, 0, 1]] {
            outs.push((format!("{perm:?}"), run(be, &Kernel::Permute { shape: shape.clone(), perm }, &[&x])));
        }
        outs
    });
}

fn narrow_and_backward() {
    conform("narrow", Tol { abs: 0.0, rel: 0.0 }, |be| {
        let mut rng = Rng::new(11);
        let (outer, axis, inner) = (7, 17, 13);
        let x = rng.vec(outer * axis * inner);
        let dy = rng.vec(outer * 5 * inner);
        vec![
            ("narrow".into(), run(be, &Kernel::Narrow { outer, axis, start: 3, len: 5, inner }, &[&x])),
            ("first".into(), run(be, &Kernel::Narrow { outer, axis, start: 0, len: 1, inner }, &[&x])),
            ("backward".into(), run(be, &Kernel::NarrowBackward { outer, axis, start: 3, len: 5, inner }, &[&dy])),
        ]
    });
}

fn cross_entropy_and_backward() {
    conform("cross_entropy", F32, |be| {
        let mut rng = Rng::new(12);
        let mut outs: Outputs = Vec::new();
        for &(groups, batch, classes) in &[(3, 33, 7), (5, 32, 2), (70, 3, 1)] {
            let logits = rng.scaled(groups * batch * classes, 4.0);
            let labels = rng.indices(groups * batch, classes);
            let dloss = rng.vec(groups);
            outs.push((format!("loss {groups}x{batch}x{classes}"), run(be, &Kernel::CrossEntropy { groups, batch, classes }, &[&logits, &labels])));
            outs.push((
                format!("dlogits {groups}x{batch}x{classes}"),
                run(be, &Kernel::CrossEntropyBackward { groups, batch, classes }, &[&logits, &labels, &dloss]),
            ));
        }
        outs
    });
}

fn zero_and_accumulate_squares() {
    conform("accumulate_squares", F32, |be| {
        let mut rng = Rng::new(13);
        let (groups, len) = (3, 1000);
        let x = rng.vec(groups * len);
        let xb = upload(be, &x);
        let acc = upload(be, &[0.5, -1.0, 2.0]);
        be.update(&Update::AccumulateSquares { groups, len }, &[xb, acc]).unwrap();
        let x2 = rng.vec(groups * len);
        be.write(xb, &x2).unwrap();
        be.update(&Update::AccumulateSquares { groups, len }, &[xb, acc]).unwrap();
        let after_two = download(be, acc);
        // A long group (more than one pass of the 256-wide workgroup per invocation).
        let big = rng.vec(2 * 5000);
        let bb = upload(be, &big);
        let acc2 = be.alloc(2).unwrap();
        be.update(&Update::AccumulateSquares { groups: 2, len: 5000 }, &[bb, acc2]).unwrap();
        let long = download(be, acc2);
        be.update(&Update::Zero { len: groups }, &[acc]).unwrap();
        let zeroed = download(be, acc);
        vec![("two_sums".into(), after_two), ("long".into(), long), ("zeroed".into(), zeroed)]
    });
}

/// Several optimizer steps on the same buffers with changing learning rate and bias
/// corrections and no read in between, so the launch site's uniform is rewritten while its
/// previous use is still unsubmitted.
fn optimizer_steps(be: &mut dyn Backend, sgd: bool, clip: Option<f64>, weight_decay: f64) -> Outputs {
    let mut rng = Rng::new(14);
    let (groups, len) = (3, 333);
    let p = upload(be, &rng.vec(groups * len));
    let g = upload(be, &rng.scaled(groups * len, 0.5));
    let s0 = be.alloc(groups * len).unwrap();
    let s1 = be.alloc(groups * len).unwrap();
    let norm = be.alloc(groups).unwrap();
    for t in 1..=4 {
        let lr = 1e-2 / t as f64;
        if clip.is_some() {
            be.update(&Update::Zero { len: groups }, &[norm]).unwrap();
            be.update(&Update::AccumulateSquares { groups, len }, &[g, norm]).unwrap();
        }
        let u = if sgd {
            Update::Sgd { groups, len, lr, momentum: 0.9, weight_decay, clip }
        } else {
            let (b1, b2) = (0.9f64, 0.999f64);
            Update::Adam { groups, len, lr, beta1: b1, beta2: b2, eps: 1e-8, weight_decay, bias1: 1.0 - b1.powi(t), bias2: 1.0 - b2.powi(t), clip }
        };
        let mut bufs = vec![p, g, s0];
        if !sgd {
            bufs.push(s1);
        }
        if clip.is_some() {
            bufs.push(norm);
        }
        be.update(&u, &bufs).unwrap();
    }
    let mut outs = vec![("param".to_string(), download(be, p)), ("state".to_string(), download(be, s0))];
    if !sgd {
        outs.push(("second_moment".into(), download(be, s1)));
    }
    outs
}

fn adam_with_and_without_clip() {
    // Clipping at 2 bites: each group's gradient norm is about 5.
    conform("adam", F32, |be| optimizer_steps(be, false, None, 0.0));
    conform("adamw_clip", F32, |be| optimizer_steps(be, false, Some(2.0), 0.01));
}

fn sgd_with_and_without_clip() {
    conform("sgd", F32, |be| optimizer_steps(be, true, None, 0.0));
    conform("sgd_clip", F32, |be| optimizer_steps(be, true, Some(2.0), 0.01));
}

fn a_chain_of_launches_sees_each_others_results() {
    // No read between launches: every kernel reads what the previous one wrote within the
    // same pass, and a write in the middle must not overtake earlier launches.
    conform("chain", F32, |be| {
        let mut rng = Rng::new(15);
        let n = 1000;
        let x = upload(be, &rng.vec(n));
        let y = be.alloc(n).unwrap();
        let z = be.alloc(n).unwrap();
        be.launch(&Kernel::Affine { len: n, scale: 2.0, shift: 1.0 }, &[x], y).unwrap();
        be.launch(&Kernel::Unary { op: UnaryOp::Gelu, len: n }, &[y], z).unwrap();
        // Overwrite x after it was consumed: y and z must not change.
        be.write(x, &vec![100.0; n]).unwrap();
        be.launch(&Kernel::Binary { op: BinaryOp::Mul, shape: vec![n], a_strides: vec![1], b_strides: vec![1] }, &[z, y], x).unwrap();
        vec![("y".into(), download(be, y)), ("z".into(), download(be, z)), ("x".into(), download(be, x))]
    });
}

/// ScatterAdd and SumTo add in the CPU's order (increasing row; lexicographic over the
/// reduced axes), so with plain f32 additions they agree with CPU f32 to the bit — which a
/// tolerance could not tell from a wrong order.
fn ordered_sums_match_cpu_f32_bit_for_bit() {
    let Some(mut gpu) = common::wgpu_or_skip("ordered_sums_match_cpu_f32_bit_for_bit") else { return };
    let mut cpu = sparsevar_cpu::CpuBackend::<f32>::new();
    let mut rng = Rng::new(16);
    let mut cases: Vec<(Kernel, Vec<Vec<f64>>)> = Vec::new();
    // Scanned (table rows × rows up to 2^26, or a table of more than 2,048 rows): per output
    // below 128 rows a group, per table row from there; then sorted in workgroup memory.
    // (1, 3000, 30_000, 2) gave wrong sums on lavapipe when such tables sorted in global memory.
    for &(groups, table_rows, rows, cols) in &[
        (3, 13, 200, 65),
        (2, 5, 150, 300),
        (700, 5, 65, 4),
        (2, 2500, 300, 3),
        (2, 7, 1000, 1),
        (2, 600, 30_000, 2),
        (1, 2000, 40_000, 2),
        (1, 3000, 30_000, 2),
    ] {
        let idx = rng.indices(groups * rows, table_rows);
        let dy = rng.scaled(groups * rows * cols, 100.0);
        cases.push((Kernel::ScatterAdd { groups, table_rows, rows, cols }, vec![idx, dy]));
    }
    for to in [vec![3, 1, 1, 11], vec![1, 7, 5, 1], vec![1, 1, 1, 1], vec![1, 7, 1, 11]] {
        cases.push((Kernel::SumTo { from: vec![3, 7, 5, 11], to }, vec![rng.scaled(3 * 7 * 5 * 11, 100.0)]));
    }
    // A bias gradient: one reduced axis, a length that is not a multiple of 4.
    cases.push((Kernel::SumTo { from: vec![129, 64], to: vec![1, 64] }, vec![rng.scaled(129 * 64, 100.0)]));
    for (kern, inputs) in cases {
        let ins: Vec<&[f64]> = inputs.iter().map(|v| &v[..]).collect();
        let want = run(&mut cpu, &kern, &ins);
        let got = run(&mut gpu, &kern, &ins);
        let diff = want.iter().zip(&got).position(|(w, g)| w.to_bits() != g.to_bits());
        assert!(diff.is_none(), "{kern:?}: first difference at {diff:?}: cpu {:?}, wgpu {:?}", diff.map(|i| want[i]), diff.map(|i| got[i]));
    }
}

fn main() -> std::process::ExitCode {
    common::harness(
        tests![ordered_sums_match_cpu_f32_bit_for_bit],
        tests![
            matmul_all_transposes_and_shapes,
            binary_with_broadcasts,
            sum_to_every_reduction_pattern,
            affine_and_fill,
            unary_forward,
            unary_backward,
            softmax_and_backward,
            layer_norm_and_backward,
            gather_and_scatter_add,
            permute_axes,
            narrow_and_backward,
            cross_entropy_and_backward,
            zero_and_accumulate_squares,
            adam_with_and_without_clip,
            sgd_with_and_without_clip,
            a_chain_of_launches_sees_each_others_results,
        ],
        &[],
    )
}
