//! `train.max_norm`'s projection on wgpu: the same checks as on the CPU (every bounded group
//! within its bound to 1e-6, the rest untouched), and the same numbers as the CPU in f32.

#[macro_use]
mod common;

use sparsevar_cpu::CpuBackend;
use sparsevar_test_support::projection::project_and_check;

fn projection_bounds_each_group_and_matches_the_cpu() {
    let mut gpu = common::wgpu_or_skip("projection").expect("the harness runs this only with an adapter");
    let on_gpu = project_and_check(&mut gpu, 1e-6);
    let on_cpu = project_and_check(&mut CpuBackend::<f32>::new(), 1e-6);
    for (g, c) in on_gpu.iter().zip(&on_cpu) {
        for (a, b) in g.iter().zip(c) {
            assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "wgpu {a} vs cpu {b}");
        }
    }
}

fn main() -> std::process::ExitCode {
    common::harness(tests![projection_bounds_each_group_and_matches_the_cpu], &[], &[])
}
