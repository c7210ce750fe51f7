//! The shared workflows: what `run_train` and `run_sweep` write when they finish, when the
//! observer stops them, and which errors count as the user's input.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::results::{Provenance, load_metrics, load_train_summary};
use sparsevar_experiment::sweep::{SweepConfig, read_runs, run_sweep};
use sparsevar_experiment::workflow::{Event, Observer, RunError, observe, run_train};
use sparsevar_test_support::ScratchDir;

const TRAIN: &str = "task: { kind: sparse_parity, T: 12, s: 3 }\nmodel: { kind: mlp }\ntrain: { max_steps: 400, eval_every: 10 }\nseeds: [0, 1]\n";

fn make() -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(CpuBackend::<f32>::new()))
}

/// Sets its flag (as Ctrl-C would) at the third evaluation.
struct CtrlC(Arc<AtomicBool>, usize);
impl Observer for CtrlC {
    fn event(&mut self, e: Event<'_>) -> bool {
        if let Event::Evaluated { .. } = e {
            self.1 += 1;
            if self.1 == 3 {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        true
    }
    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        Some(self.0.clone())
    }
}

#[test]
fn a_stopped_training_run_writes_an_interrupted_summary() {
    let reg = Registry::builtin();
    let cfg = ExperimentConfig::parse(TRAIN, "t.yaml", &[], &reg).unwrap();
    let prov = Provenance::new("test", None, "cpu".into(), 1, cfg.seeds.clone());
    let d = ScratchDir::new("workflow-train");
    let mut backend = make().unwrap();
    // The flag is checked after every step: the run stops at the step after the third
    // evaluation, evaluates there, and writes everything.
    let mut ctrl_c = CtrlC(Arc::new(AtomicBool::new(false)), 0);
    let outcome = run_train(&cfg, &d, backend.as_mut(), &reg, &prov, &mut ctrl_c).unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.result.steps, 31);
    let summary = load_train_summary(&d).unwrap();
    assert!(summary.interrupted && summary.steps == 31);
    assert!(summary.members.iter().all(|m| m.steps_trained == 31 && !m.learned));
    let curves = load_metrics(&d).unwrap();
    assert_eq!(curves.iter().map(|c| c.step).max(), Some(31));
    assert_eq!(curves.len(), 2 * 4, "two members at steps 10, 20, 30, 31");

    // The same run uninterrupted is not marked; a folder with results is the user's input.
    let whole = ScratchDir::new("workflow-train-whole");
    let outcome = run_train(&cfg, &whole, make().unwrap().as_mut(), &reg, &prov, &mut observe(|_| true)).unwrap();
    assert!(!outcome.interrupted && !load_train_summary(&whole).unwrap().interrupted);
    let e = run_train(&cfg, &whole, make().unwrap().as_mut(), &reg, &prov, &mut observe(|_| true)).unwrap_err();
    assert!(e.is_input() && e.to_string().contains("already holds results"), "{e}");
}

#[test]
fn a_stopped_sweep_keeps_its_finished_ensembles_for_resume() {
    let reg = Registry::builtin();
    let text = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: mlp } }\ntrain: { max_steps: 30, eval_every: 10 }\nsweep: { T: [6, 8, 10], m: [16], seeds: [0, 1] }\n";
    let cfg = SweepConfig::parse(text, "s.yaml", &[], &reg).unwrap();
    let prov = Provenance::new("test", None, "cpu".into(), 1, vec![0, 1]);
    let d = ScratchDir::new("workflow-sweep");
    let mut ensembles = 0;
    let e = run_sweep(
        &cfg,
        &d,
        false,
        &reg,
        &mut make,
        &prov,
        &mut observe(|e| match e {
            Event::Ensemble { .. } => {
                ensembles += 1;
                true
            }
            // Stop in the middle of the second ensemble: its members are not results.
            Event::Evaluated { step, .. } => !(ensembles == 2 && step == 20),
            _ => true,
        }),
    )
    .unwrap_err();
    assert!(matches!(e, RunError::Interrupted) && !e.is_input(), "{e}");
    assert_eq!(read_runs(&d).unwrap().len(), 2, "the first ensemble only");
    assert!(!d.join("summary.json").exists());
    let outcome = run_sweep(&cfg, &d, true, &reg, &mut make, &prov, &mut observe(|_| true)).unwrap();
    assert_eq!(outcome.runs.len(), 6);
    assert_eq!(read_runs(&d).unwrap(), outcome.runs);
}
