//! Training-step throughput on the wgpu adapter (lavapipe on a machine without a GPU), not
//! run by default:
//!
//! `cargo test --release -p sparsevar-wgpu --test bench -- --ignored --nocapture`
//!
//! paper1l (`TransformerConfig::default()`), T = 64, batch 32, R = 1 and R = 32, with the
//! CPU f32 backend on the same machine alongside for scale. `SPARSEVAR_BENCH_STEPS` sets
//! the timed steps (default 10); `SPARSEVAR_BENCH_PROFILE=1` adds a per-kernel profile.
//! `dispatch_overhead` and `matmul_shapes` time the pieces.

mod common;

use std::time::Instant;

use common::wgpu_or_skip;
use sparsevar_core::backend::Backend;
use sparsevar_core::model::{ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};
use sparsevar_wgpu::Counters;

/// Seconds per training step (after warm-up), and launches per step; with `counters` (a
/// wgpu backend's counter), also its dispatches and submissions per step.
fn time_steps(be: &mut dyn Backend, runs: usize, steps: usize, counters: Option<&Counters>) -> (f64, usize) {
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 64, 3),
        model: ModelSpec::Transformer(TransformerConfig::default()),
        // A small test set keeps the evaluation graph's [R, chunk·65, 64] activations under
        // lavapipe's 128 MiB storage-binding limit at R = 32 (only training steps are timed).
        train: TrainConfig { samples: 4096, batch: 32, max_steps: usize::MAX, test_samples: 64, ..TrainConfig::default() },
        seeds: (0..runs as u64).collect(),
        samples: None,
    };
    let mut t = Trainer::new(be, spec, &Registry::builtin()).unwrap();
    // Warm-up: pipelines, launch sites, first submissions. The loss read waits for the device.
    for _ in 0..2 {
        t.step().unwrap();
    }
    t.train_loss().unwrap();
    let counted = counters.map(|c| (c.dispatches(), c.submissions()));
    let start = Instant::now();
    for _ in 0..steps {
        t.step().unwrap();
    }
    let loss = t.train_loss().unwrap();
    let secs = start.elapsed().as_secs_f64() / steps as f64;
    if let (Some(c), Some((d, s))) = (counters, counted) {
        // The loss read submits the last step's work.
        let per = |n: u64| n as f64 / steps as f64;
        println!("  {:.1} dispatches and {:.2} submissions per step", per(c.dispatches() - d), per(c.submissions() - s));
    }
    assert!(loss.iter().all(|l| l.is_finite()));
    if std::env::var("SPARSEVAR_BENCH_PROFILE").is_ok() {
        // Each launch synchronised: device time plus one submit-and-wait per launch.
        let mut table = std::collections::BTreeMap::new();
        for _ in 0..steps {
            t.step_profiled(&mut table).unwrap();
        }
        let mut rows: Vec<_> = table.into_iter().collect();
        rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        for (name, (calls, secs)) in rows.iter().take(25) {
            println!("  {:>9.1} us x{:<3} {name}", secs * 1e6 / steps as f64, calls / steps as u64);
        }
    }
    (secs, t.step_launches())
}

#[test]
#[ignore]
fn paper1l_training_step_throughput() {
    let Some(mut gpu) = wgpu_or_skip("paper1l_training_step_throughput") else { return };
    let steps: usize = std::env::var("SPARSEVAR_BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    println!("adapter: {}", gpu.adapter());
    for runs in [1, 32] {
        let counters = gpu.counters();
        let (secs, launches) = time_steps(&mut gpu, runs, steps, Some(&counters));
        println!(
            "paper1l T=64 B=32 R={runs} on wgpu ({}): {:.1} ms/step, {:.1} model-steps/s ({launches} launches/step, {steps} steps)",
            gpu.adapter().name,
            secs * 1e3,
            runs as f64 / secs
        );
        let (secs, _) = time_steps(&mut CpuBackend::<f32>::new(), runs, steps, None);
        println!("paper1l T=64 B=32 R={runs} on cpu f32: {:.1} ms/step, {:.1} model-steps/s", secs * 1e3, runs as f64 / secs);
    }
}

/// The floor under every step: what one tiny dispatch costs when many are submitted
/// together — each reading the one before (a barrier between every two) or all on buffers of
/// their own (no barriers needed) — and what a submit-and-wait costs. "queued" is the host's
/// time to record and submit, "run" includes waiting for the device.
#[test]
#[ignore]
fn dispatch_overhead() {
    use sparsevar_core::backend::Kernel;
    let Some(mut gpu) = wgpu_or_skip("dispatch_overhead") else { return };
    let n = 200;
    let bufs: Vec<_> = (0..2 * n).map(|_| gpu.alloc(64).unwrap()).collect();
    let k = Kernel::Affine { len: 64, scale: 1.0, shift: 1.0 };
    let time = |gpu: &mut sparsevar_wgpu::WgpuBackend, pairs: &dyn Fn(usize) -> (usize, usize), what: &str| {
        for round in 0..3 {
            let start = Instant::now();
            for i in 0..n {
                let (x, y) = pairs(i);
                gpu.launch(&k, &[bufs[x]], bufs[y]).unwrap();
            }
            gpu.submit_recorded().unwrap();
            let queued = start.elapsed().as_secs_f64();
            gpu.sync().unwrap();
            let run = start.elapsed().as_secs_f64();
            if round > 0 {
                println!("{what}: {:.1} us queued, {:.1} us run per dispatch", queued * 1e6 / n as f64, run * 1e6 / n as f64);
            }
        }
    };
    time(&mut gpu, &|i| if i % 2 == 0 { (0, 1) } else { (1, 0) }, "chain (each reads the last)");
    time(&mut gpu, &|i| (2 * i, 2 * i + 1), "independent (own buffers)");
    let (a, b) = (bufs[0], bufs[1]);
    let start = Instant::now();
    for _ in 0..50 {
        gpu.launch(&k, &[a], b).unwrap();
        gpu.sync().unwrap();
    }
    println!("{:.1} us per dispatch + submit + wait", start.elapsed().as_secs_f64() * 1e6 / 50.0);
}

/// GFLOP/s of the matmul shapes that dominate a paper1l step (token table and weight
/// gradients at R = 32), one launch at a time.
#[test]
#[ignore]
fn matmul_shapes() {
    use sparsevar_core::backend::Kernel;
    let Some(mut gpu) = wgpu_or_skip("matmul_shapes") else { return };
    for &(batch, m, k, n, ta, tb) in &[
        (32, 195, 64, 64, false, false),
        (32, 64, 195, 64, true, false),
        (32, 195, 64, 64, false, true),
        (32, 32, 64, 64, false, false),
        (32, 2080, 64, 64, false, false),
    ] {
        let kern = Kernel::MatMul { batch, m, k, n, trans_a: ta, trans_b: tb };
        let (lens, out) = kern.lengths();
        let a = gpu.alloc(lens[0]).unwrap();
        let b = gpu.alloc(lens[1]).unwrap();
        let y = gpu.alloc(out).unwrap();
        gpu.launch(&kern, &[a, b], y).unwrap();
        gpu.sync().unwrap();
        let reps = 5;
        let start = Instant::now();
        for _ in 0..reps {
            gpu.launch(&kern, &[a, b], y).unwrap();
        }
        gpu.sync().unwrap();
        let s = start.elapsed().as_secs_f64() / reps as f64;
        println!("{batch}x{m}x{k}x{n} ta={ta} tb={tb}: {:.2} ms, {:.2} GFLOP/s", s * 1e3, kern.flops() as f64 / s / 1e9);
    }
}
