//! `train.max_norm`'s projection on the CPU backend: every bounded group of every member
//! ends within its bound (to 1e-6), groups inside their ball and unbounded tensors are left
//! bit for bit, and the result does not depend on the thread count.

use sparsevar_cpu::CpuBackend;
use sparsevar_test_support::projection::project_and_check;

#[test]
fn the_projection_bounds_each_group_and_leaves_the_rest() {
    project_and_check(&mut CpuBackend::<f64>::new(), 1e-12);
    project_and_check(&mut CpuBackend::<f32>::new(), 1e-6);
}

#[test]
fn the_projection_does_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| project_and_check(&mut CpuBackend::<f32>::new(), 1e-6))
    };
    assert_eq!(run(1), run(2));
}
