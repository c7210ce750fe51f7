//! Rough timings, not run by default: `cargo test --release -p sparsevar-cpu --test bench -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::{Rng, upload};
use sparsevar_core::backend::{Backend, BinaryOp, Kernel, UnaryOp};
use sparsevar_cpu::CpuBackend;

/// Best-of-15 seconds per launch (the machine is shared; the minimum is the stable statistic) of `k` on random inputs (f32 backend, global rayon pool).
fn time_kernel(k: &Kernel) -> f64 {
    let mut rng = Rng::new(1);
    let be = &mut CpuBackend::<f32>::new();
    let (lens, out) = k.lengths();
    let ids: Vec<_> = lens.iter().map(|&n| upload(be, &rng.indices(n, 2))).collect();
    let y = be.alloc(out).unwrap();
    be.launch(k, &ids, y).unwrap();
    let mut times = Vec::new();
    for _ in 0..15 {
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            be.launch(k, &ids, y).unwrap();
        }
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[0]
}

/// Times from the main thread (global pool), then inside 2- and 1-thread pools.
fn report(k: &Kernel) {
    let main = time_kernel(k);
    let in_pool = |t: usize| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap().install(|| time_kernel(k));
    let (two, one) = (in_pool(2), in_pool(1));
    let gf = k.flops() as f64 / two / 1e9;
    println!("main {:>8.1} µs | pool2 {:>8.1} µs {:>6.1} GFLOP/s | pool1 {:>8.1} µs  {:?}", main * 1e6, two * 1e6, gf, one * 1e6, k);
}

#[test]
#[ignore]
fn bench_matmul() {
    println!("rayon threads: {}", rayon::current_num_threads());
    let mm = |batch, m, k, n, ta, tb| Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
    report(&mm(1, 2080, 64, 128, false, false));
    report(&mm(1, 2080, 64, 128, true, false));
    report(&mm(1, 2080, 64, 128, false, true));
    // Shapes of the one-layer parity transformer (R 4, B 32, T 17, d 64, 4 heads of 16).
    report(&mm(4, 544, 64, 192, false, false));
    report(&mm(4, 64, 544, 192, true, false));
    report(&mm(512, 1, 16, 17, false, true));
    report(&mm(512, 1, 17, 16, false, false));
    report(&mm(512, 17, 16, 17, false, true));
    report(&mm(512, 17, 17, 16, false, false));
    report(&mm(512, 16, 17, 17, true, false));
    report(&mm(4, 32, 64, 256, false, false));
    report(&mm(4, 32, 256, 64, false, false));
    report(&mm(4, 34, 64, 192, false, false));
    // T = 64, B = 32, R = 1 (the `sparsevar bench` default): 128 heads, 65 tokens.
    for (m, k, n, ta, tb) in [
        (1, 16, 65, false, true),
        (1, 65, 16, false, false),
        (65, 1, 16, true, false),
        (1, 16, 65, false, false),
        (65, 16, 1, false, true),
        (65, 16, 65, false, true),
        (65, 65, 16, false, false),
        (4, 16, 65, false, true),
        (8, 16, 65, false, true),
        (16, 16, 16, false, false),
        (16, 16, 16, false, true),
    ] {
        report(&mm(128, m, k, n, ta, tb));
    }
    // One member's linear layers at T = 64: the table (195 or 129 rows), the batch's CLS rows
    // (32) and the 256-wide MLP block, forward and both backward products.
    for (m, k, n, ta, tb) in [
        (195, 64, 64, false, false),
        (64, 195, 64, true, false),
        (195, 64, 64, false, true),
        (32, 64, 256, false, false),
        (64, 32, 256, true, false),
        (32, 64, 64, false, false),
        (32, 64, 64, false, true),
        (64, 32, 64, true, false),
        (129, 64, 64, false, false),
        (129, 64, 64, false, true),
        (64, 129, 64, true, false),
        (32, 256, 64, false, false),
        (32, 64, 256, false, true),
        (256, 32, 64, true, false),
    ] {
        report(&mm(1, m, k, n, ta, tb));
    }
}

#[test]
#[ignore]
fn bench_elementwise() {
    let (r, m, c) = (4, 544, 64);
    report(&Kernel::Binary { op: BinaryOp::Add, shape: vec![r, m, c], a_strides: vec![m * c, c, 1], b_strides: vec![c, 0, 1] });
    report(&Kernel::Binary { op: BinaryOp::Mul, shape: vec![r * m * c], a_strides: vec![1], b_strides: vec![1] });
    report(&Kernel::SumTo { from: vec![r, m, c], to: vec![r, 1, c] });
    report(&Kernel::Unary { op: UnaryOp::Gelu, len: r * m * c });
    report(&Kernel::Softmax { rows: 512 * 17, cols: 17 });
    report(&Kernel::SoftmaxBackward { rows: 512 * 17, cols: 17 });
    report(&Kernel::LayerNorm { rows: r * m, cols: c, eps: 1e-5 });
    report(&Kernel::LayerNormBackward { rows: r * m, cols: c, eps: 1e-5 });
    report(&Kernel::Permute { shape: vec![r, 32, 17, 4, 16], perm: vec![0, 1, 3, 2, 4] });
    report(&Kernel::Gather { groups: r, table_rows: 34, rows: m, cols: 192 });
    report(&Kernel::ScatterAdd { groups: r, table_rows: 34, rows: m, cols: 192 });
    report(&Kernel::CrossEntropy { groups: r, batch: 32, classes: 2 });
}

/// The permutes, gather and scatter of the table attention (T = 64, B = 32, 4 heads of 16),
/// one member.
#[test]
#[ignore]
fn bench_permute() {
    let (b, vt, n, h, dh) = (32, 195, 65, 4, 16);
    for (shape, perm) in [
        (vec![1, h, b, vt], vec![0, 2, 3, 1]),  // table scores [R, H, B, Vt] -> [R, B, Vt, H]
        (vec![1, b, vt, h], vec![0, 3, 1, 2]),  // its backward, and the pooled weights
        (vec![1, b, n, h], vec![0, 1, 3, 2]),   // gathered scores -> [R, B, H, N]
        (vec![1, b, h, n], vec![0, 1, 3, 2]),   // weights -> [R, B, N, H]
        (vec![1, vt, h, dh], vec![0, 2, 1, 3]), // per head
        (vec![1, h, vt, dh], vec![0, 2, 1, 3]),
    ] {
        one_member(Kernel::Permute { shape, perm });
    }
    // The gather of each sample's scores from the table and its backward.
    one_member(Kernel::Gather { groups: b, table_rows: vt, rows: n, cols: h });
    one_member(Kernel::ScatterAdd { groups: b, table_rows: vt, rows: n, cols: h });
    // A launch that does nothing much: the fixed cost of one.
    one_member(Kernel::Affine { len: 1, scale: 2.0, shift: 0.0 });
    one_member(Kernel::Affine { len: b * h * n, scale: 0.25, shift: 0.0 });
    // The row and elementwise kernels around it.
    one_member(Kernel::Softmax { rows: b * h, cols: n });
    one_member(Kernel::SoftmaxBackward { rows: b * h, cols: n });
    one_member(Kernel::LayerNormBackward { rows: vt, cols: 64, eps: 1e-5 });
    one_member(Kernel::UnaryBackward { op: UnaryOp::Gelu, len: b * 256 });
    one_member(Kernel::SumTo { from: vec![1, vt, 64], to: vec![1, 1, 64] });
    one_member(Kernel::Binary { op: BinaryOp::Add, shape: vec![1, vt, 64], a_strides: vec![vt * 64, 64, 1], b_strides: vec![64, 0, 1] });
    one_member(Kernel::Binary { op: BinaryOp::Add, shape: vec![1, vt, 64], a_strides: vec![vt * 64, 64, 1], b_strides: vec![vt * 64, 64, 1] });
}

/// Time `k` in a one-thread pool (one member's kernels run serially) and per output element.
fn one_member(k: Kernel) {
    let elems = k.lengths().1;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| time_kernel(&k));
    println!("pool1 {:>8.2} µs {:>6.3} ns/element  {:?}", one * 1e6, one * 1e9 / elems as f64, k);
}
