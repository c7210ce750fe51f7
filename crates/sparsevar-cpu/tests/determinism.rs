//! Bit-identical results whatever the thread count, and a group's result independent of how
//! many groups share the launch.

mod common;

use common::{Rng, run};
use sparsevar_core::backend::{Backend, BinaryOp, Kernel, Update};
use sparsevar_cpu::CpuBackend;

/// Run `k` in a pool of `threads` threads; the output's exact bits.
fn bits_with_threads<F>(threads: usize, k: &Kernel, inputs: &[Vec<f64>]) -> Vec<u64>
where
    F: sparsevar_cpu::Float,
    CpuBackend<F>: Backend,
{
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let be = &mut CpuBackend::<F>::new();
        let refs: Vec<&[f64]> = inputs.iter().map(|v| &v[..]).collect();
        // f32 → f64 is exact, so the f64 bits pin the f32 bits down too.
        run(be, k, &refs).iter().map(|v| v.to_bits()).collect()
    })
}

/// The same from the test's own thread, outside any pool (the global pool, with the higher
/// threshold for going parallel).
fn bits_outside_pool<F>(k: &Kernel, inputs: &[Vec<f64>]) -> Vec<u64>
where
    F: sparsevar_cpu::Float,
    CpuBackend<F>: Backend,
{
    let be = &mut CpuBackend::<F>::new();
    let refs: Vec<&[f64]> = inputs.iter().map(|v| &v[..]).collect();
    run(be, k, &refs).iter().map(|v| v.to_bits()).collect()
}

#[track_caller]
fn same_for_1_2_3_threads(k: &Kernel, inputs: &[Vec<f64>]) {
    let one = bits_with_threads::<f32>(1, k, inputs);
    for t in [2, 3] {
        assert!(one == bits_with_threads::<f32>(t, k, inputs), "f32 {} differs with {t} threads", k.name());
    }
    assert!(one == bits_outside_pool::<f32>(k, inputs), "f32 {} differs outside the pool", k.name());
    let one = bits_with_threads::<f64>(1, k, inputs);
    assert!(one == bits_with_threads::<f64>(2, k, inputs), "f64 {} differs with 2 threads", k.name());
}

fn random_inputs(k: &Kernel, rng: &mut Rng) -> Vec<Vec<f64>> {
    k.lengths().0.iter().map(|&n| rng.vec(n)).collect()
}

#[test]
fn matmul_is_thread_count_independent() {
    let mut rng = Rng::new(31);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (batch, m, k, n) in [(1, 2000, 64, 128), (32, 17, 33, 9), (3, 300, 70, 50), (128, 1, 16, 65), (128, 65, 16, 1)] {
            let kern = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
            let inputs = random_inputs(&kern, &mut rng);
            same_for_1_2_3_threads(&kern, &inputs);
        }
    }
}

#[test]
fn row_kernels_are_thread_count_independent() {
    let mut rng = Rng::new(32);
    let (rows, cols) = (3000, 37);
    let x: Vec<f64> = rng.vec(rows * cols).iter().map(|v| 4.0 * v).collect();
    let dy = rng.vec(rows * cols);
    same_for_1_2_3_threads(&Kernel::Softmax { rows, cols }, std::slice::from_ref(&x));
    same_for_1_2_3_threads(&Kernel::SoftmaxBackward { rows, cols }, &[x.clone(), dy.clone()]);
    same_for_1_2_3_threads(&Kernel::LayerNorm { rows, cols, eps: 1e-5 }, std::slice::from_ref(&x));
    same_for_1_2_3_threads(&Kernel::LayerNormBackward { rows, cols, eps: 1e-5 }, &[x, dy]);
}

#[test]
fn scatter_add_and_reductions_are_thread_count_independent() {
    let mut rng = Rng::new(33);
    let (groups, table_rows, rows, cols) = (8, 50, 5000, 16);
    let idx = rng.indices(groups * rows, table_rows);
    let dy = rng.vec(groups * rows * cols);
    same_for_1_2_3_threads(&Kernel::ScatterAdd { groups, table_rows, rows, cols }, &[idx, dy]);
    let x = rng.vec(4 * 3000 * 24);
    same_for_1_2_3_threads(&Kernel::SumTo { from: vec![4, 3000, 24], to: vec![4, 1, 24] }, std::slice::from_ref(&x));
    same_for_1_2_3_threads(&Kernel::SumTo { from: vec![4, 3000, 24], to: vec![4, 3000, 1] }, std::slice::from_ref(&x));
    same_for_1_2_3_threads(&Kernel::SumTo { from: vec![4, 3000, 24], to: vec![1, 3000, 1] }, std::slice::from_ref(&x));
    let b = rng.vec(24);
    let bias = Kernel::Binary { op: BinaryOp::Add, shape: vec![12000, 24], a_strides: vec![24, 1], b_strides: vec![0, 1] };
    same_for_1_2_3_threads(&bias, &[x, b]);
}

#[test]
fn batched_matmul_equals_per_group_launches() {
    let mut rng = Rng::new(34);
    // Small groups (serial path), large ones (parallel groups and row blocks), and shapes
    // for the plain loop (one row; two columns).
    for (m, k, n) in [(7, 5, 11), (300, 70, 50), (1, 40, 30), (3000, 17, 2)] {
        for (ta, tb) in [(false, false), (true, true), (true, false)] {
            let batch = 5;
            let kern = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
            let a = rng.vec(batch * m * k);
            let b = rng.vec(batch * k * n);
            let be = &mut CpuBackend::<f32>::new();
            let all = run(be, &kern, &[&a, &b]);
            let one = Kernel::MatMul { batch: 1, m, k, n, trans_a: ta, trans_b: tb };
            for g in 0..batch {
                let y = run(be, &one, &[&a[g * m * k..(g + 1) * m * k], &b[g * k * n..(g + 1) * k * n]]);
                assert!(y == all[g * m * n..(g + 1) * m * n], "group {g} of {kern:?}");
            }
        }
    }
}

#[test]
fn matmul_rows_do_not_depend_on_m() {
    // The first 130 rows of a 2000-row product equal a 130-row product bit for bit: row
    // blocking never changes a row's arithmetic.
    let mut rng = Rng::new(35);
    let (k, n) = (64, 128);
    let a = rng.vec(2000 * k);
    let b = rng.vec(k * n);
    let be = &mut CpuBackend::<f32>::new();
    let big = run(be, &Kernel::MatMul { batch: 1, m: 2000, k, n, trans_a: false, trans_b: false }, &[&a, &b]);
    let small = run(be, &Kernel::MatMul { batch: 1, m: 130, k, n, trans_a: false, trans_b: false }, &[&a[..130 * k], &b]);
    assert!(small == big[..130 * n]);
}

#[test]
fn ensemble_row_kernels_equal_member_launches() {
    let mut rng = Rng::new(36);
    let (groups, batch, classes) = (6, 700, 10);
    let logits: Vec<f64> = rng.vec(groups * batch * classes).iter().map(|v| 3.0 * v).collect();
    let labels = rng.indices(groups * batch, classes);
    let be = &mut CpuBackend::<f32>::new();
    let all = run(be, &Kernel::CrossEntropy { groups, batch, classes }, &[&logits, &labels]);
    for g in 0..groups {
        let one = run(
            be,
            &Kernel::CrossEntropy { groups: 1, batch, classes },
            &[&logits[g * batch * classes..(g + 1) * batch * classes], &labels[g * batch..(g + 1) * batch]],
        );
        assert_eq!(one[0].to_bits(), all[g].to_bits());
    }
}

#[test]
fn updates_are_thread_count_independent() {
    let mut rng = Rng::new(37);
    let (groups, len) = (4, 30_000);
    let p = rng.vec(groups * len);
    let g = rng.vec(groups * len);
    let run_with = |threads: usize| -> Vec<u64> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let be = &mut CpuBackend::<f32>::new();
            let (pb, gb) = (common::upload(be, &p), common::upload(be, &g));
            let (mb, vb, sq) = (be.alloc(groups * len).unwrap(), be.alloc(groups * len).unwrap(), be.alloc(groups).unwrap());
            be.update(&Update::AccumulateSquares { groups, len }, &[gb, sq]).unwrap();
            let u = Update::Adam { groups, len, lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, bias1: 0.1, bias2: 0.001, clip: Some(10.0) };
            be.update(&u, &[pb, gb, mb, vb, sq]).unwrap();
            let (mut out, mut s) = (Vec::new(), Vec::new());
            be.read(pb, &mut out).unwrap();
            be.read(sq, &mut s).unwrap();
            out.extend(s);
            out.iter().map(|v| v.to_bits()).collect()
        })
    };
    assert!(run_with(1) == run_with(2));
}
