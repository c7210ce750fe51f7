//! Shared test helpers: a tiny deterministic RNG, launch-and-read, closeness checks.
#![allow(dead_code)]

use sparsevar_core::backend::{Backend, BufferId, Kernel};
use sparsevar_cpu::CpuBackend;

/// splitmix64: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f64 {
        2.0 * self.uniform() - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.sym()).collect()
    }
    /// Integers in 0..limit, as floats (index data travels as floats).
    pub fn indices(&mut self, n: usize, limit: usize) -> Vec<f64> {
        (0..n).map(|_| (self.next_u64() % limit as u64) as f64).collect()
    }
}

/// Upload host data into a fresh buffer.
pub fn upload(be: &mut dyn Backend, data: &[f64]) -> BufferId {
    let id = be.alloc(data.len()).unwrap();
    be.write(id, data).unwrap();
    id
}

/// Launch `k` on fresh buffers holding `inputs`; return the output.
pub fn run(be: &mut dyn Backend, k: &Kernel, inputs: &[&[f64]]) -> Vec<f64> {
    let ids: Vec<BufferId> = inputs.iter().map(|d| upload(be, d)).collect();
    let out = be.alloc(k.lengths().1).unwrap();
    be.launch(k, &ids, out).unwrap();
    let mut v = Vec::new();
    be.read(out, &mut v).unwrap();
    v
}

/// Run `f` on both CPU backends with a tolerance suited to each precision.
pub fn each_backend(mut f: impl FnMut(&mut dyn Backend, f64)) {
    f(&mut CpuBackend::<f64>::new(), 1e-12);
    f(&mut CpuBackend::<f32>::new(), 3e-5);
}

/// |got − want| ≤ tol · (1 + |want|) elementwise.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i}: got {g}, want {w} (tol {tol})");
    }
}

/// Row-major strides (test-side copy, so tests do not trust the code under test).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Every multi-index of `shape`, row-major.
pub fn multi_indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = shape.iter().product();
    (0..total)
        .map(|mut l| {
            let mut idx = vec![0; shape.len()];
            for d in (0..shape.len()).rev() {
                idx[d] = l % shape[d];
                l /= shape[d];
            }
            idx
        })
        .collect()
}

pub fn dot(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
