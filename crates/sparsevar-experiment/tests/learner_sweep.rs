//! A sweep with a learner: each seed is an instance whose k restarts share its training set
//! (minus the validation split) and differ in initialisation; cells count instances; m* is
//! reported for every learner the restarts allow; bad settings are refused naming the key.

mod common;

use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::learners::{LearnerKind, Stopped};
use sparsevar_experiment::sweep::{SweepConfig, instance_rows};

const SWEEP: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 300, lr: 0.003, eval_every: 100, test_samples: 128 }
sweep:
  T: [6]
  m: [16, 64]
  seeds: [0, 1, 2]
  learner: best_of_k
  k: 2
  validation: 0.25
";

#[test]
fn a_best_of_k_sweep_trains_k_restarts_per_instance_and_reports_every_learner() {
    let (_cfg, out, rows) = common::sweep(SWEEP, "learner-sweep");
    assert_eq!(rows.len(), 2 * 3 * 2, "m × seeds × k restarts");
    for r in &rows {
        assert!(r.restart.is_some() && r.train_accuracy.is_some() && r.validation_accuracy.is_some() && r.norm_bound.is_some(), "{r:?}");
    }
    // Restarts of one instance share S and data but not their initialisation.
    let pair: Vec<_> = rows.iter().filter(|r| r.m == 64 && r.seed == 1).collect();
    assert_eq!(pair.len(), 2);
    assert_ne!((pair[0].norm_bound, pair[0].test_accuracy, pair[0].steps_trained), (pair[1].norm_bound, pair[1].test_accuracy, pair[1].steps_trained));
    // Cells count instances, not restarts.
    let point = &out.summary.models[0].points[0];
    assert!(point.cells.iter().all(|c| c.seeds == 3), "{:?}", point.cells);
    let kinds: Vec<LearnerKind> = point.learners.iter().map(|l| l.learner).collect();
    assert_eq!(kinds, vec![LearnerKind::Majority, LearnerKind::BestOfK, LearnerKind::MinNorm]);
    assert_eq!(point.learners[1].m_star, point.m_star, "the sweep's own learner");
    // Restarts stop on validation (best_of_k's default), never on the test set: a row that
    // stopped on validation has validation and training accuracy at the target, and
    // `learned` says whether its test accuracy reached it there.
    for r in &rows {
        match r.stopped {
            Some(Stopped::Validation) => assert!(r.validation_accuracy.unwrap() >= 0.99 && r.train_accuracy.unwrap() >= 0.99, "{r:?}"),
            Some(Stopped::Budget) => assert_eq!(r.step, Some(300), "{r:?}"),
            Some(Stopped::Decided) => {}
            other => assert_eq!(other, Some(Stopped::Diverged), "{r:?}"),
        }
        assert_eq!(r.learned, !r.diverged && r.test_accuracy >= 0.99, "{r:?}");
    }
    assert!(rows.iter().any(|r| r.stopped == Some(Stopped::Validation)));
    // The instance rows pick, per instance, the first restart to validate, else the one with
    // the best validation accuracy.
    let inst = instance_rows(LearnerKind::BestOfK, &rows);
    assert_eq!(inst.len(), 6);
    for i in &inst {
        let own: Vec<_> = rows.iter().filter(|r| r.m == i.m && r.seed == i.seed).collect();
        match own.iter().filter(|r| r.stopped == Some(Stopped::Validation)).filter_map(|r| r.step).min() {
            Some(first) => assert_eq!((i.stopped, i.step), (Some(Stopped::Validation), Some(first))),
            None => assert_eq!(i.validation_accuracy, own.iter().map(|r| r.validation_accuracy).max_by(|a, b| a.partial_cmp(b).unwrap()).unwrap()),
        }
    }
    // Restart 0 of each instance is the member a majority sweep trains.
    let plain = SweepConfig::parse(&SWEEP.replace("  learner: best_of_k\n  k: 2\n  validation: 0.25\n", ""), "plain.yaml", &[], &Registry::builtin()).unwrap();
    assert!(plain.to_yaml().find("learner").is_none(), "a majority sweep's config reads as before");
}

#[test]
fn bad_learner_settings_are_refused_before_training() {
    let reg = Registry::builtin();
    let err = |from: &str, to: &str| SweepConfig::parse(&SWEEP.replace(from, to), "s.yaml", &[], &reg).unwrap_err().to_string();
    for (from, to, want) in [
        ("k: 2", "k: 0", "sweep.k = 0"),
        ("validation: 0.25", "validation: 1.5", "sweep.validation = 1.5 must be a share in (0, 1)"),
        ("validation: 0.25", "validation: 0.0", "sweep.validation = 0"),
        ("validation: 0.25", "validation: 16", "sweep.validation holds out 16 of m = 16 samples"),
        ("  k: 2\n", "", "sweep.k is missing"),
        ("  learner: best_of_k\n", "", "sweep.k and sweep.validation belong to a learner"),
        ("learner: best_of_k", "learner: best_of_three", "sweep.learner"),
        ("  k: 2\n", "  k: 2\n  stop: test\n", "sweep.stop"),
        ("  learner: best_of_k\n  k: 2\n  validation: 0.25\n", "  stop: budget\n", "sweep.stop = budget belongs to a learner"),
        ("learner: best_of_k\n  k: 2\n  validation: 0.25", "learner: min_norm\n  k: 2\n  stop: validation", "sweep.stop = validation needs a validation split"),
    ] {
        let e = err(from, to);
        assert!(e.contains(want), "{to}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn restarts_share_data_score_their_own_samples_and_restart_zero_is_the_plain_member() {
    use sparsevar_core::model::{ModelSpec, TransformerConfig};
    use sparsevar_core::task::TaskSpec;
    use sparsevar_experiment::config::TrainConfig;
    use sparsevar_experiment::sweep::restart_seed;
    use sparsevar_experiment::train::{Restarts, RunSpec, Trainer};
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 6, 2),
        model: ModelSpec::Transformer(TransformerConfig { d_model: 8, heads: 2, mlp: 1, ..TransformerConfig::default() }),
        train: TrainConfig { samples: 16, batch: 8, max_steps: 40, eval_every: 20, test_samples: 64, ..TrainConfig::default() },
        seeds: vec![3, 3, 3],
        samples: None,
    };
    let reg = Registry::builtin();
    let restarts = Restarts { init_seeds: vec![3, restart_seed(3, 1), 3], validation: vec![0, 0, 4], stop: None, instances: Vec::new(), patience: 1 };
    let mut be = CpuBackend::<f64>::new();
    let with = Trainer::with_restarts(&mut be, spec.clone(), &reg, Some(restarts)).unwrap().run(&mut |_| true).unwrap();
    let mut be = CpuBackend::<f64>::new();
    let plain = Trainer::new(&mut be, RunSpec { seeds: vec![3], ..spec }, &reg).unwrap().run(&mut |_| true).unwrap();
    // Restart 0 without a split is the plain member, bit for bit (plus its scores).
    assert_eq!(with.members[0].norms, plain.members[0].norms);
    assert_eq!(with.members[0].test_accuracy, plain.members[0].test_accuracy);
    // Same S and data, another initialisation: other numbers.
    assert_eq!(with.members[1].relevant, with.members[0].relevant);
    assert_ne!(with.members[1].norms, with.members[0].norms);
    // Scores are fractions of the member's own samples: 16 to train on, or 12 and 4 held out.
    let s0 = with.members[0].scores.clone().unwrap();
    assert!(s0.validation_accuracy.is_none());
    let whole = |x: f64| (x - x.round()).abs() < 1e-9;
    assert!(whole(s0.train_accuracy * 16.0), "{s0:?}");
    let s2 = with.members[2].scores.clone().unwrap();
    let v = s2.validation_accuracy.unwrap();
    assert!(whole(v * 4.0), "{s2:?}");
    assert!(whole(s2.train_accuracy * 12.0), "{s2:?}");
    assert!(s2.train_loss.is_finite() && s2.train_loss > 0.0);
}
