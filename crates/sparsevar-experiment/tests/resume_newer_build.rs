//! A sweep folder written by an older build resumes under a newer one: a config key added
//! since (at its default) is missing from the folder's config.yaml, whose text then differs
//! from this build's, yet the experiment is the same. A changed value is still refused.

use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::results::Provenance;
use sparsevar_experiment::sweep::{SweepConfig, run_sweep};
use sparsevar_experiment::workflow::{RunError, observe};
use sparsevar_test_support::ScratchDir;

const SWEEP: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 8, heads: 2, mlp: 1 }
train: { batch: 16, max_steps: 40, lr: 0.003, eval_every: 20, test_samples: 64 }
sweep: { T: [6], m: [16], seeds: [0, 1] }
";

fn resume(dir: &ScratchDir, cfg: &SweepConfig) -> Result<(), RunError> {
    let reg = Registry::builtin();
    let prov = Provenance::new("test", None, "cpu".into(), 1, cfg.sweep.seeds.clone());
    let mut make = || -> Result<Box<dyn sparsevar_core::backend::Backend>, String> { Ok(Box::new(CpuBackend::<f32>::new())) };
    run_sweep(cfg, dir, true, &reg, &mut make, &prov, &mut observe(|_| true)).map(drop)
}

#[test]
fn a_key_missing_at_its_default_resumes_and_a_changed_value_is_refused() {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(SWEEP, "s.yaml", &[], &reg).unwrap();
    let dir = ScratchDir::new("resume-newer-build");
    resume(&dir, &cfg).unwrap();
    let path = dir.join("config.yaml");
    let written = std::fs::read_to_string(&path).unwrap();
    // As an older build would have written it: without a key that has its default.
    let line = written.lines().find(|l| l.trim() == "init_std: 0.02").expect("the resolved config lists init_std");
    let older = written.replacen(&format!("{line}\n"), "", 1);
    assert_ne!(older, written);
    std::fs::write(&path, &older).unwrap();
    resume(&dir, &cfg).unwrap();
    // A value that differs is another experiment.
    std::fs::write(&path, written.replace("lr: 0.003", "lr: 0.001")).unwrap();
    match resume(&dir, &cfg) {
        Err(RunError::OtherConfig(_)) => {}
        other => panic!("a changed lr must be refused, got {other:?}"),
    }
}
