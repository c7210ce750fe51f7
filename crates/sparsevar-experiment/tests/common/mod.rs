//! Shared by the learner tests (stop rules, decided instances, patience, budgets, recipes):
//! the restarts of a learner's instances laid out as the sweep lays them out, on a tiny
//! sparse-parity task that trains in seconds, and a sweep run in-process on the CPU.

#![allow(dead_code)]

use sparsevar_core::model::{ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::learners::StopRule;
use sparsevar_experiment::results::Provenance;
use sparsevar_experiment::sweep::{RunRow, SweepConfig, SweepOutcome, read_runs, restart_seed, run_sweep};
use sparsevar_experiment::train::{EnsembleResult, Restarts, RunSpec, Trainer};
use sparsevar_experiment::workflow::observe;
use sparsevar_test_support::ScratchDir;

/// Three instances of three best_of_k restarts (T = 6, m = 16 and 48) read at budgets 40 and
/// 100 steps (learner_budgets, majority_any_k).
pub const BUDGETS_SWEEP: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 300, lr: 0.003, eval_every: 20, test_samples: 128 }
sweep:
  T: [6]
  m: [16, 48]
  seeds: [0, 1, 2]
  learner: best_of_k
  k: 3
  validation: 0.25
  budgets: [40, 100]
";

/// Steps between evaluations.
pub const EVAL_EVERY: usize = 20;

/// `instances` instances of `k` restarts each: member i belongs to instance i / k (its seed,
/// so its data and split) and is restart i % k (its initialisation), with `validation`
/// samples held out. T = 6, s = 2, 48 samples, batch 16, AdamW lr 0.003, evaluations every 20
/// steps on 128 test samples.
pub struct SmallRestarts {
    pub instances: u64,
    pub k: usize,
    pub max_steps: usize,
    pub target: f64,
    pub validation: usize,
    pub stop: Option<StopRule>,
    /// Whether a decided instance stops as a whole (the trainer's `instances`).
    pub decide: bool,
    pub patience: usize,
}

impl SmallRestarts {
    pub fn setup(&self) -> (RunSpec, Restarts) {
        let k = self.k;
        let seeds: Vec<u64> = (0..self.instances).flat_map(|s| vec![s; k]).collect();
        let spec = RunSpec {
            task: TaskSpec::new("sparse_parity", 6, 2),
            model: ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, ..TransformerConfig::default() }),
            train: TrainConfig {
                samples: 48,
                batch: 16,
                max_steps: self.max_steps,
                lr: 0.003,
                eval_every: EVAL_EVERY,
                test_samples: 128,
                target_accuracy: self.target,
                ..TrainConfig::default()
            },
            seeds: seeds.clone(),
            samples: None,
        };
        let restarts = Restarts {
            init_seeds: seeds.iter().enumerate().map(|(i, &x)| restart_seed(x, i % k)).collect(),
            validation: vec![self.validation; seeds.len()],
            stop: self.stop,
            instances: if self.decide { (0..seeds.len()).map(|i| i / k).collect() } else { Vec::new() },
            patience: self.patience,
        };
        (spec, restarts)
    }

    /// Train them together on the CPU (f32).
    pub fn run(&self) -> EnsembleResult {
        let (spec, restarts) = self.setup();
        let mut be = CpuBackend::<f32>::new();
        Trainer::with_restarts(&mut be, spec, &Registry::builtin(), Some(restarts)).unwrap().run(&mut |_| true).unwrap()
    }
}

/// Run the sweep `yaml` in-process on the CPU (f32) in a fresh scratch folder named `name`:
/// its parsed config, what it returned, and the rows of its runs.csv.
pub fn sweep(yaml: &str, name: &str) -> (SweepConfig, SweepOutcome, Vec<RunRow>) {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(yaml, &format!("{name}.yaml"), &[], &reg).unwrap();
    let dir = ScratchDir::new(name);
    let prov = Provenance::new("test", None, "cpu".into(), 1, cfg.sweep.seeds.clone());
    let mut make = || -> Result<Box<dyn sparsevar_core::backend::Backend>, String> { Ok(Box::new(CpuBackend::<f32>::new())) };
    let out = run_sweep(&cfg, &dir, false, &reg, &mut make, &prov, &mut observe(|_| true)).unwrap();
    let rows = read_runs(&dir).unwrap();
    (cfg, out, rows)
}
