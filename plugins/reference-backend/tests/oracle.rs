//! The reference backend against the CPU backend (`CpuBackend<f64>`), kernel by kernel and
//! update by update, on random inputs of awkward sizes; then its own error checks.
//!
//! Every `Kernel` variant must appear among the cases: `variant` below matches them all
//! without a wildcard, so a new kernel does not compile until it is listed, and the test
//! fails until a case exercises it.

use reference_backend::ReferenceBackend;
use sparsevar_cpu::CpuBackend;
use sparsevar_plugin::{Backend, BackendError, BinaryOp, BufferId, Kernel, Pcg32, UnaryOp, Update, strides_of};

/// The position of a kernel's variant in the enum.
fn variant(k: &Kernel) -> usize {
    match k {
        Kernel::MatMul { .. } => 0,
        Kernel::Binary { .. } => 1,
        Kernel::SumTo { .. } => 2,
        Kernel::Affine { .. } => 3,
        Kernel::Fill { .. } => 4,
        Kernel::Unary { .. } => 5,
        Kernel::UnaryBackward { .. } => 6,
        Kernel::Softmax { .. } => 7,
        Kernel::SoftmaxBackward { .. } => 8,
        Kernel::LayerNorm { .. } => 9,
        Kernel::LayerNormBackward { .. } => 10,
        Kernel::Gather { .. } => 11,
        Kernel::ScatterAdd { .. } => 12,
        Kernel::Permute { .. } => 13,
        Kernel::Narrow { .. } => 14,
        Kernel::NarrowBackward { .. } => 15,
        Kernel::CrossEntropy { .. } => 16,
        Kernel::CrossEntropyBackward { .. } => 17,
    }
}
const VARIANTS: usize = 18;

/// Same values, same tolerance: |a − b| ≤ 1e-12 + 1e-10 |b| (the backends may sum in other
/// orders). Prints the first mismatches.
fn assert_close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let bad: Vec<String> = a
        .iter()
        .zip(b)
        .enumerate()
        // Written so that a NaN on either side counts as a mismatch.
        .filter(|(_, (x, y))| {
            let within = (*x - *y).abs().partial_cmp(&(1e-12 + 1e-10 * y.abs()));
            !matches!(within, Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal))
        })
        .take(5)
        .map(|(i, (x, y))| format!("[{i}] reference {x} vs cpu {y}"))
        .collect();
    assert!(bad.is_empty(), "{what}: {}", bad.join("; "));
}

/// Random inputs for `k`: normal values, except index inputs (whole numbers in range).
fn inputs(k: &Kernel, rng: &mut Pcg32) -> Vec<Vec<f64>> {
    let (lens, _) = k.lengths();
    let mut ins: Vec<Vec<f64>> = lens.iter().map(|&n| (0..n).map(|_| rng.normal()).collect()).collect();
    let idx = |n: usize, limit: usize, rng: &mut Pcg32| (0..n).map(|_| rng.below(limit as u64) as f64).collect::<Vec<f64>>();
    match k {
        Kernel::Gather { table_rows, .. } => ins[1] = idx(ins[1].len(), *table_rows, rng),
        Kernel::ScatterAdd { table_rows, .. } => ins[0] = idx(ins[0].len(), *table_rows, rng),
        Kernel::CrossEntropy { classes, .. } | Kernel::CrossEntropyBackward { classes, .. } => ins[1] = idx(ins[1].len(), *classes, rng),
        // Backward of the sigmoid takes its output: keep it in (0, 1).
        Kernel::UnaryBackward { op: UnaryOp::Sigmoid, .. } => ins[0].iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        // Softmax backward takes the softmax output: rows of probabilities.
        Kernel::SoftmaxBackward { cols, .. } => {
            for row in ins[0].chunks_mut(*cols) {
                let z: f64 = row.iter().map(|v| v.exp()).sum();
                row.iter_mut().for_each(|v| *v = v.exp() / z);
            }
        }
        _ => {}
    }
    ins
}

/// Run `k` on both backends with the same inputs and return (reference, cpu) outputs.
fn run_both(k: &Kernel, ins: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    fn run(be: &mut dyn Backend, k: &Kernel, ins: &[Vec<f64>]) -> Vec<f64> {
        let ids: Vec<BufferId> = ins
            .iter()
            .map(|v| {
                let id = be.alloc(v.len()).unwrap();
                be.write(id, v).unwrap();
                id
            })
            .collect();
        let out = be.alloc(k.lengths().1).unwrap();
        // A stale output must not leak into the result.
        be.write(out, &vec![f64::NAN; k.lengths().1]).unwrap();
        be.launch(k, &ids, out).unwrap_or_else(|e| panic!("{}: {e}", k.name()));
        let mut y = Vec::new();
        be.read(out, &mut y).unwrap();
        y
    }
    (run(&mut ReferenceBackend::new(), k, ins), run(&mut CpuBackend::<f64>::new(), k, ins))
}

/// A Binary kernel over `shape` with `a` and `b` broadcast where their shapes have a 1.
fn binary(op: BinaryOp, shape: &[usize], a: &[usize], b: &[usize]) -> Kernel {
    let bstrides = |s: &[usize]| -> Vec<usize> { strides_of(s).into_iter().zip(s).map(|(st, &d)| if d == 1 { 0 } else { st }).collect() };
    Kernel::Binary { op, shape: shape.to_vec(), a_strides: bstrides(a), b_strides: bstrides(b) }
}

fn every_kernel_case() -> Vec<Kernel> {
    let mut cases = Vec::new();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        cases.push(Kernel::MatMul { batch: 3, m: 5, k: 7, n: 4, trans_a: ta, trans_b: tb });
    }
    cases.push(Kernel::MatMul { batch: 1, m: 1, k: 33, n: 1, trans_a: false, trans_b: false });
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
        cases.push(binary(op, &[2, 3, 5], &[2, 3, 5], &[2, 3, 5]));
        cases.push(binary(op, &[2, 3, 5], &[2, 1, 5], &[1, 3, 1]));
        cases.push(binary(op, &[4, 1, 3, 2], &[4, 1, 1, 2], &[1, 1, 3, 2]));
    }
    for (from, to) in [
        (vec![3, 4, 5], vec![3, 1, 5]),
        (vec![3, 4, 5], vec![1, 4, 1]),
        (vec![3, 4, 5], vec![3, 4, 1]),
        (vec![3, 4, 5], vec![1, 1, 1]),
        (vec![2, 3, 4, 5], vec![2, 1, 4, 1]),
        (vec![6, 7], vec![6, 7]),
    ] {
        cases.push(Kernel::SumTo { from, to });
    }
    cases.push(Kernel::Affine { len: 37, scale: -1.7, shift: 0.3 });
    cases.push(Kernel::Fill { len: 11, value: 2.5 });
    for op in [UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid] {
        cases.push(Kernel::Unary { op, len: 41 });
        cases.push(Kernel::UnaryBackward { op, len: 41 });
    }
    for (rows, cols) in [(7, 9), (1, 1), (3, 33)] {
        cases.push(Kernel::Softmax { rows, cols });
        cases.push(Kernel::SoftmaxBackward { rows, cols });
        cases.push(Kernel::LayerNorm { rows, cols, eps: 1e-5 });
        cases.push(Kernel::LayerNormBackward { rows, cols, eps: 1e-5 });
    }
    cases.push(Kernel::Gather { groups: 3, table_rows: 5, rows: 8, cols: 4 });
    cases.push(Kernel::ScatterAdd { groups: 3, table_rows: 5, rows: 8, cols: 4 });
    for (shape, perm) in
        [(vec![2, 3, 4], vec![0, 2, 1]), (vec![2, 3, 4], vec![2, 0, 1]), (vec![2, 3, 4, 5], vec![0, 2, 1, 3]), (vec![2, 3, 4, 5], vec![3, 1, 0, 2])]
    {
        cases.push(Kernel::Permute { shape, perm });
    }
    cases.push(Kernel::Narrow { outer: 3, axis: 7, start: 2, len: 4, inner: 5 });
    cases.push(Kernel::Narrow { outer: 2, axis: 5, start: 0, len: 5, inner: 1 });
    cases.push(Kernel::NarrowBackward { outer: 3, axis: 7, start: 2, len: 4, inner: 5 });
    cases.push(Kernel::CrossEntropy { groups: 3, batch: 6, classes: 4 });
    cases.push(Kernel::CrossEntropyBackward { groups: 3, batch: 6, classes: 4 });
    cases
}

#[test]
fn every_kernel_matches_the_cpu_backend() {
    let mut rng = Pcg32::new(42, 0);
    let mut seen = [false; VARIANTS];
    for k in every_kernel_case() {
        seen[variant(&k)] = true;
        let ins = inputs(&k, &mut rng);
        let (r, c) = run_both(&k, &ins);
        assert!(r.iter().all(|v| v.is_finite()), "{k:?}: {r:?}");
        assert_close(&format!("{k:?}"), &r, &c);
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&v| !seen[v]).collect();
    assert!(missing.is_empty(), "kernel variants without a case: {missing:?}");
}

/// Run `u` on both backends with the same buffers; each buffer afterwards, both ways.
fn update_both(u: &Update, bufs: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    fn run(be: &mut dyn Backend, u: &Update, bufs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let ids: Vec<BufferId> = bufs
            .iter()
            .map(|v| {
                let id = be.alloc(v.len()).unwrap();
                be.write(id, v).unwrap();
                id
            })
            .collect();
        be.update(u, &ids).unwrap();
        ids.iter()
            .map(|&id| {
                let mut v = Vec::new();
                be.read(id, &mut v).unwrap();
                v
            })
            .collect()
    }
    (run(&mut ReferenceBackend::new(), u, bufs), run(&mut CpuBackend::<f64>::new(), u, bufs))
}

#[test]
fn every_update_matches_the_cpu_backend() {
    let mut rng = Pcg32::new(7, 0);
    let (groups, len) = (3, 10);
    let adam = |clip| Update::Adam { groups, len, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1, bias1: 0.19, bias2: 0.002, clip };
    let sgd = |clip| Update::Sgd { groups, len, lr: 0.05, momentum: 0.9, weight_decay: 0.01, clip };
    for u in [Update::Zero { len: 13 }, Update::AccumulateSquares { groups, len }, adam(None), adam(Some(0.5)), sgd(None), sgd(Some(0.5))] {
        let mut bufs: Vec<Vec<f64>> = u.lengths().iter().map(|&n| (0..n).map(|_| rng.normal()).collect()).collect();
        // The second moment is non-negative; the squared norms are sums of squares, large
        // enough for one member to be clipped and small enough for another not to be.
        if let Update::Adam { clip, .. } = u {
            bufs[3].iter_mut().for_each(|v| *v = v.abs());
            if clip.is_some() {
                bufs[4] = vec![4.0, 0.01, 1.0];
            }
        }
        if let Update::Sgd { clip: Some(_), .. } = u {
            bufs[3] = vec![4.0, 0.01, 1.0];
        }
        let (r, c) = update_both(&u, &bufs);
        for (i, (a, b)) in r.iter().zip(&c).enumerate() {
            assert_close(&format!("{u:?} buffer {i}"), a, b);
        }
        // The update did something (the comparison can fail).
        assert_ne!(r, bufs, "{u:?} changed nothing");
    }
}

#[test]
fn bad_launches_are_errors_not_panics() {
    let mut be = ReferenceBackend::new();
    let a = be.alloc(6).unwrap();
    let b = be.alloc(5).unwrap();
    let idx = be.alloc(2).unwrap();
    let out = be.alloc(6).unwrap();
    let k = Kernel::Affine { len: 6, scale: 1.0, shift: 0.0 };
    assert!(matches!(be.launch(&k, &[b], out), Err(BackendError::BufferSize { have: 5, need: 6, .. })));
    assert!(matches!(be.launch(&k, &[BufferId(99)], out), Err(BackendError::UnknownBuffer(BufferId(99), _))));
    let e = be.launch(&k, &[a], a).unwrap_err().to_string();
    assert!(e.contains("aliases an input"), "{e}");
    let e = be.launch(&k, &[a, b], out).unwrap_err().to_string();
    assert!(e.contains("takes 1 inputs, got 2"), "{e}");
    be.write(idx, &[0.0, 3.0]).unwrap();
    let gather = Kernel::Gather { groups: 1, table_rows: 3, rows: 2, cols: 2 };
    let table = be.alloc(6).unwrap();
    let y = be.alloc(4).unwrap();
    let e = be.launch(&gather, &[table, idx], y).unwrap_err().to_string();
    assert!(e.contains("gather: index 3 outside 0..3"), "{e}");
    assert!(be.write(a, &[1.0; 4]).is_err());
    let (g, m) = (be.alloc(6).unwrap(), be.alloc(6).unwrap());
    let adam = Update::Adam { groups: 1, len: 6, lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, bias1: 0.1, bias2: 0.01, clip: None };
    let e = be.update(&adam, &[a, g, m, a]).unwrap_err().to_string();
    assert!(e.contains("buffer BufferId(0) passed twice"), "{e}");
    let e = be.update(&adam, &[a, g, m]).unwrap_err().to_string();
    assert!(e.contains("takes 4 buffers, got 3"), "{e}");
    assert_eq!(be.name(), "reference");
}

#[test]
fn a_whole_training_run_matches_the_cpu_backend() {
    use sparsevar_experiment::config::TrainConfig;
    use sparsevar_experiment::train::{RunSpec, Trainer};
    use sparsevar_plugin::core::model::{ModelSpec, TransformerConfig};
    use sparsevar_plugin::core::registry::Registry;
    let spec = RunSpec {
        task: sparsevar_plugin::TaskSpec::new("sparse_parity", 6, 2),
        model: ModelSpec::Transformer(TransformerConfig { d_model: 8, heads: 2, mlp: 2, ..TransformerConfig::default() }),
        train: TrainConfig { samples: 64, batch: 8, max_steps: 12, eval_every: 4, test_samples: 16, ..TrainConfig::default() },
        seeds: vec![1, 2],
        samples: None,
    };
    let registry = Registry::builtin();
    let mut reference = ReferenceBackend::new();
    let mut cpu = CpuBackend::<f64>::new();
    let mut a = Trainer::new(&mut reference, spec.clone(), &registry).unwrap();
    let ra = a.run(&mut |_| true).unwrap();
    let pa = a.parameters().unwrap();
    let mut b = Trainer::new(&mut cpu, spec, &registry).unwrap();
    let rb = b.run(&mut |_| true).unwrap();
    let pb = b.parameters().unwrap();
    assert_eq!(ra.curves.len(), rb.curves.len());
    for (x, y) in ra.curves.iter().zip(&rb.curves) {
        assert!((x.train_loss - y.train_loss).abs() <= 1e-10 * y.train_loss.abs().max(1.0), "{x:?} vs {y:?}");
        assert_eq!(x.test_accuracy, y.test_accuracy);
    }
    for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
        assert_close(&format!("parameter {i} after training"), x, y);
    }
}
