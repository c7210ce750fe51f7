//! Shared test helpers: the adapter policy, a deterministic RNG, upload/launch/read, and the
//! conformance comparison (absolute + relative tolerance, first mismatches printed).
#![allow(dead_code)]

use sparsevar_core::backend::{Backend, BufferId, Kernel};
use sparsevar_cpu::CpuBackend;
use sparsevar_wgpu::WgpuBackend;

/// The one place the adapter policy lives: the wgpu backend, or `None` when no adapter can
/// be opened — the test then skips with the reason printed — except under `CI=true`, where
/// a missing adapter fails the test (CI installs Mesa's lavapipe, so it must be there).
pub fn wgpu_or_skip(test: &str) -> Option<WgpuBackend> {
    match WgpuBackend::new() {
        Ok(be) => Some(be),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: CI=true requires a GPU adapter (Mesa's lavapipe will do): {e}")
        }
        Err(e) => {
            println!("wgpu tests skipped: no adapter ({test}): {e}");
            None
        }
    }
}

/// Which backend a conformance trial checks against the f64 reference (see [`harness`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Cpu,
    Wgpu,
}

/// Whether `conform` prints its largest errors (`-- --nocapture`).
pub static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// Set by the harness around each trial; plain `cargo test` threads start on wgpu.
    pub static SIDE: std::cell::Cell<Side> = const { std::cell::Cell::new(Side::Wgpu) };
}

/// The test harness of the wgpu test files (`harness = false`, libtest-mimic), so that a
/// test that needs an adapter is reported as `ignored` — with the reason, once — on a machine
/// without one, instead of passing without having run. Under `CI=true` nothing is ignored
/// (the tests then fail on the missing adapter, see [`wgpu_or_skip`]). `wgpu_tests` run on
/// wgpu only; each of `conformance` runs twice, `cpu/NAME` (CPU f32 against the f64
/// reference, always) and `wgpu/NAME`; `always` need no adapter.
pub fn harness(wgpu_tests: &[(&'static str, fn())], conformance: &[(&'static str, fn())], always: &[(&'static str, fn())]) -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    // This harness does not capture output: the error report of `conform` waits for --nocapture.
    VERBOSE.store(args.nocapture, std::sync::atomic::Ordering::Relaxed);
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let missing = if ci { None } else { WgpuBackend::new().err() };
    if let Some(e) = &missing {
        println!("wgpu tests ignored: no adapter ({e})");
    }
    let trial = |name: String, f: fn(), side: Side| {
        let t = libtest_mimic::Trial::test(name, move || {
            SIDE.set(side);
            f();
            Ok(())
        });
        t.with_ignored_flag(side == Side::Wgpu && missing.is_some())
    };
    let mut trials: Vec<libtest_mimic::Trial> = wgpu_tests.iter().map(|&(n, f)| trial(n.to_string(), f, Side::Wgpu)).collect();
    for &(n, f) in conformance {
        trials.push(trial(format!("cpu/{n}"), f, Side::Cpu));
        trials.push(trial(format!("wgpu/{n}"), f, Side::Wgpu));
    }
    trials.extend(always.iter().map(|&(n, f)| trial(n.to_string(), f, Side::Cpu)));
    libtest_mimic::run(&args, trials).exit_code()
}

/// `[(name, fn)]` from function names, for [`harness`].
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => { &[$((stringify!($f), $f as fn())),*] };
}

/// splitmix64: deterministic and dependency-free.
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
    /// Uniform in [-1, 1), rounded to f32 so every backend starts from the same values.
    pub fn sym(&mut self) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * u - 1.0) as f32 as f64
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.sym()).collect()
    }
    /// `n` values uniform in [-scale, scale).
    pub fn scaled(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| (self.sym() * scale) as f32 as f64).collect()
    }
    /// Integers in 0..limit, as floats (index data travels as floats).
    pub fn indices(&mut self, n: usize, limit: usize) -> Vec<f64> {
        (0..n).map(|_| (self.next_u64() % limit as u64) as f64).collect()
    }
}

pub fn upload(be: &mut dyn Backend, data: &[f64]) -> BufferId {
    let id = be.alloc(data.len()).unwrap();
    be.write(id, data).unwrap();
    id
}

pub fn download(be: &mut dyn Backend, id: BufferId) -> Vec<f64> {
    let mut v = Vec::new();
    be.read(id, &mut v).unwrap();
    v
}

/// Launch `k` on fresh buffers holding `inputs`; return the output.
pub fn run(be: &mut dyn Backend, k: &Kernel, inputs: &[&[f64]]) -> Vec<f64> {
    let ids: Vec<BufferId> = inputs.iter().map(|d| upload(be, d)).collect();
    let out = be.alloc(k.lengths().1).unwrap();
    be.launch(k, &ids, out).unwrap();
    download(be, out)
}

/// Tolerance: |got − want| ≤ abs + rel · |want|.
#[derive(Copy, Clone, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

/// The default for f32 against the f64 reference.
pub const F32: Tol = Tol { abs: 1e-5, rel: 1e-4 };

/// Compare; on failure list the first mismatches. Returns the largest absolute error and the
/// largest relative error among expected values of magnitude ≥ 1e-3.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], tol: Tol, what: &str) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same_nan = g.is_nan() && w.is_nan();
        let err = (g - w).abs();
        if !same_nan {
            max_abs = max_abs.max(err);
            if w.abs() >= 1e-3 {
                max_rel = max_rel.max(err / w.abs());
            }
        }
        // Written so that a NaN error (one side NaN) counts as a mismatch.
        let within = err <= tol.abs + tol.rel * w.abs();
        if !same_nan && !within {
            bad.push((i, w, g));
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad.iter().take(8).map(|(i, w, g)| format!("  [{i}] expected {w:e}, got {g:e}")).collect();
        panic!("{what}: {} of {} values differ beyond {tol:?}; first:\n{}", bad.len(), got.len(), first.join("\n"));
    }
    (max_abs, max_rel)
}

/// Run `case` (a function of the backend returning named outputs) on the f64 CPU reference,
/// then on CPU f32 and wgpu (when an adapter exists), and compare each with the reference.
pub fn conform(test: &str, tol: Tol, case: impl Fn(&mut dyn Backend) -> Vec<(String, Vec<f64>)>) {
    let want = case(&mut CpuBackend::<f64>::new());
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    match SIDE.get() {
        Side::Cpu => backends.push(Box::new(CpuBackend::<f32>::new())),
        Side::Wgpu => backends.extend(wgpu_or_skip(test).map(|be| Box::new(be) as Box<dyn Backend>)),
    }
    for be in &mut backends {
        let got = case(be.as_mut());
        assert_eq!(got.len(), want.len());
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            let (abs, rel) = assert_close(g, w, tol, &format!("{test}/{name} on {}", be.name()));
            if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
                println!("{test}/{name} on {}: max abs err {abs:.2e}, max rel err {rel:.2e} ({} values)", be.name(), g.len());
            }
        }
    }
}
