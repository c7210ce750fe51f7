//! Divergence beyond NaN: a run whose loss explodes to a large but finite value is diverged,
//! not "not learned" (see `train::DIVERGENCE_FACTOR` for the rule and why).

use sparsevar_core::model::{MlpConfig, ModelSpec};
use sparsevar_core::optim::{OptimizerKind, Schedule};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{DIVERGENCE_FACTOR, DIVERGENCE_FLOOR, RunSpec, Trainer, has_diverged};

#[test]
fn a_loss_that_explodes_but_stays_finite_is_diverged() {
    // Adam at lr 10 without clipping: by the first evaluation the train loss is in the
    // tens of thousands (found by trying; lr 1 gives ~100, the default lr ~0.69).
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 16, 3),
        model: ModelSpec::Mlp(MlpConfig { width: 64, depth: 2 }),
        train: TrainConfig {
            samples: 256,
            batch: 32,
            max_steps: 200,
            eval_every: 10,
            test_samples: 64,
            optimizer: OptimizerKind::Adam,
            lr: 10.0,
            clip: None,
            weight_decay: Some(0.0),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            ..TrainConfig::default()
        },
        seeds: vec![0, 1],
        samples: None,
    };
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
    let r = t.run(&mut |_| true).unwrap();
    for m in &r.members {
        assert!(m.train_loss.is_finite() && m.train_loss > 1e3, "the loss exploded without becoming NaN: {m:?}");
        assert!(m.diverged && !m.learned, "{m:?}");
        assert_eq!(m.steps_trained, 10, "it leaves at the first evaluation: {m:?}");
    }
}

#[test]
fn the_rule_needs_both_the_factor_and_the_floor() {
    let ln2 = std::f64::consts::LN_2;
    assert!(!has_diverged(0.9, 0.9, ln2), "a noisy but healthy loss");
    assert!(!has_diverged(60.0, 80.0, ln2), "below 100x ln 2 = 69.3; a test loss that grows is overfitting, not divergence");
    assert!(has_diverged(DIVERGENCE_FACTOR * ln2 + 1.0, 1.0, ln2));
    // A tiny initial loss (very unbalanced labels): 100x of it is still below the floor.
    assert!(!has_diverged(5.0, 5.0, 0.01));
    assert!(has_diverged(DIVERGENCE_FLOOR + 1.0, 1.0, 0.01));
    // Non-finite losses are diverged whatever the start was (or if it is unknown).
    assert!(has_diverged(f64::NAN, 1.0, ln2) && has_diverged(1.0, f64::INFINITY, f64::NAN));
    assert!(!has_diverged(1e6, 1.0, f64::NAN), "without a start, only non-finite losses count");
}
