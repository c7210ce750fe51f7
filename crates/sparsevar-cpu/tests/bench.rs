//! Rough timings, not run by default: `cargo test --release -p sparsevar-cpu --test bench -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::{Rng, upload};
use sparsevar_core::backend::{Backend, BinaryOp, Kernel, UnaryOp};
use sparsevar_cpu::CpuBackend;

/// Median seconds per launch of `k` on random inputs (f32 backend, global rayon pool).
fn time_kernel(k: &Kernel) -> f64 {
    let mut rng = Rng::new(1);
    let be = &mut CpuBackend::<f32>::new();
    let (lens, out) = k.lengths();
    let ids: Vec<_> = lens.iter().map(|&n| upload(be, &rng.indices(n, 2))).collect();
    let y = be.alloc(out).unwrap();
    be.launch(k, &ids, y).unwrap();
    let mut times = Vec::new();
    for _ in 0..7 {
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            be.launch(k, &ids, y).unwrap();
        }
        times.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

fn report(k: &Kernel) {
    let s = time_kernel(k);
    let gf = k.flops() as f64 / s / 1e9;
    println!("{:>9.1} µs {:>7.2} GFLOP/s  {:?}", s * 1e6, gf, k);
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
