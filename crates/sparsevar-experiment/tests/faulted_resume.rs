//! A resumed sweep gives members that faulted another chance: their units train again (the
//! fault may be fixed by now, e.g. a plugin rebuilt), the old results are kept in
//! `faulted/`, and the rows come out as if the fault had never happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sparsevar_core::registry::Registry;
use sparsevar_core::rng::Pcg32;
use sparsevar_core::task::{Task, TaskError, TaskSpec, build_task};
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::results::Provenance;
use sparsevar_experiment::sweep::{RunRow, SweepConfig, read_runs, run_sweep};
use sparsevar_experiment::units::faulted_units;
use sparsevar_experiment::workflow::observe;
use sparsevar_test_support::ScratchDir;

/// While set, the `flaky` task of seed 1 fails at its first sample.
static BROKEN: AtomicBool = AtomicBool::new(true);

/// sparse_parity, except while [`BROKEN`] for seed 1.
#[derive(Clone, Debug)]
struct Flaky {
    inner: Box<dyn Task>,
    seed: u64,
}

impl Task for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn seq_len(&self) -> usize {
        self.inner.seq_len()
    }
    fn alphabet(&self) -> usize {
        self.inner.alphabet()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn relevant(&self) -> &[usize] {
        self.inner.relevant()
    }
    fn clean_label(&self, tokens: &[u8]) -> u8 {
        self.inner.clean_label(tokens)
    }
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        if self.seed == 1 && BROKEN.load(Ordering::SeqCst) {
            return Err(TaskError::Failed { task: "flaky".into(), message: "broken for seed 1".into() });
        }
        self.inner.sample(rng, tokens)
    }
    fn describe(&self) -> String {
        format!("flaky {}", self.inner.describe())
    }
}

const SWEEP: &str = "
task: { kind: flaky, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 200, lr: 0.003, eval_every: 20, test_samples: 128 }
sweep:
  T: [6]
  m: [16, 48]
  seeds: [0, 1, 2]
  max_ensemble: 2
";

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register_task(
        "flaky",
        "test",
        Arc::new(|spec: &TaskSpec, seed: u64| {
            let inner = build_task(&TaskSpec { kind: "sparse_parity".into(), ..spec.clone() }, seed)?;
            Ok(Box::new(Flaky { inner, seed }) as Box<dyn Task>)
        }),
    )
    .unwrap();
    r
}

fn sweep(dir: &ScratchDir, resume: bool) -> Vec<RunRow> {
    let reg = registry();
    let cfg = SweepConfig::parse(SWEEP, "flaky.yaml", &[], &reg).unwrap();
    let prov = Provenance::new("test", None, "cpu".into(), 1, cfg.sweep.seeds.clone());
    let mut make = || -> Result<Box<dyn sparsevar_core::backend::Backend>, String> { Ok(Box::new(CpuBackend::<f32>::new())) };
    run_sweep(&cfg, dir, resume, &reg, &mut make, &prov, &mut observe(|_| true)).unwrap();
    read_runs(dir).unwrap()
}

/// Rows without the wall time, in (m, seed) order.
fn comparable(rows: &[RunRow]) -> Vec<String> {
    let mut v: Vec<&RunRow> = rows.iter().collect();
    v.sort_by_key(|r| (r.m, r.seed));
    v.iter().map(|r| format!("{:?}", RunRow { seconds: 0.0, ..(*r).clone() })).collect()
}

#[test]
fn resume_trains_the_units_of_faulted_members_again_and_keeps_the_rest() {
    let dir = ScratchDir::new("faulted-resume");
    BROKEN.store(true, Ordering::SeqCst);
    let first = sweep(&dir, false);
    assert_eq!(first.iter().filter(|r| r.faulted.is_some()).map(|r| r.seed).collect::<Vec<_>>(), [1, 1], "seed 1 faulted at both m");
    let faulted = faulted_units(&dir).unwrap();
    assert!(!faulted.is_empty());
    let untouched: Vec<(usize, Vec<u8>)> =
        (0..6).filter(|i| !faulted.contains(i)).filter_map(|i| std::fs::read(dir.join(format!("results/{i:04}.csv"))).ok().map(|b| (i, b))).collect();
    assert!(!untouched.is_empty(), "some unit held no faulted member");

    // The fault is fixed; resume.
    BROKEN.store(false, Ordering::SeqCst);
    let resumed = sweep(&dir, true);
    assert!(resumed.iter().all(|r| r.faulted.is_none()), "every member trained");
    assert!(faulted_units(&dir).unwrap().is_empty());
    for &i in &faulted {
        assert!(dir.join(format!("faulted/{i:04}.csv")).exists(), "the old result of unit {i} is kept");
    }
    // Units without a fault were not trained again: their result files are byte for byte.
    for (i, bytes) in &untouched {
        assert_eq!(&std::fs::read(dir.join(format!("results/{i:04}.csv"))).unwrap(), bytes, "unit {i}");
    }
    // Everything is what a sweep that never faulted gives.
    let clean = ScratchDir::new("faulted-resume-clean");
    let never = sweep(&clean, false);
    assert_eq!(comparable(&resumed), comparable(&never));
    let log = std::fs::read_to_string(dir.join("starts.log")).unwrap();
    assert!(log.contains("requeued: a member had faulted"), "{log}");
}
