//! The learners' selection rules on hand-made restart outcomes.

use std::collections::BTreeMap;

use sparsevar_experiment::learners::{LearnerKind, LearnerSpec, RestartOutcome, Validation, instance_succeeds, m_star, select};

fn r(restart: usize, train_acc: f64, loss: f64, val: Option<f64>, norm: Option<f64>, test: f64) -> RestartOutcome {
    RestartOutcome {
        restart,
        train_accuracy: train_acc,
        train_loss: loss,
        validation_accuracy: val,
        norm_bound: norm,
        test_accuracy: test,
        stopped: None,
        step: None,
    }
}

#[test]
fn best_of_k_picks_by_validation_never_by_test() {
    // Restart 0 is the best on the test set but worse on validation: it must not be chosen.
    let out = [r(0, 1.0, 0.01, Some(0.80), Some(1.0), 1.00), r(1, 1.0, 0.20, Some(0.95), Some(9.0), 0.70), r(2, 0.9, 0.30, Some(0.50), Some(0.5), 0.55)];
    assert_eq!(select(LearnerKind::BestOfK, &out), Some(1));
    // So this instance fails, though one of its restarts learned.
    assert!(!instance_succeeds(LearnerKind::BestOfK, &out, 0.99));
}

#[test]
fn best_of_k_breaks_ties_by_training_loss_then_norm_then_index() {
    let tie_loss = [r(0, 1.0, 0.3, Some(0.9), Some(1.0), 0.5), r(1, 1.0, 0.1, Some(0.9), Some(5.0), 1.0)];
    assert_eq!(select(LearnerKind::BestOfK, &tie_loss), Some(1), "lower training loss wins a validation tie");
    let tie_norm = [r(0, 1.0, 0.1, Some(0.9), Some(5.0), 0.5), r(1, 1.0, 0.1, Some(0.9), Some(2.0), 1.0)];
    assert_eq!(select(LearnerKind::BestOfK, &tie_norm), Some(1), "then the smaller bound");
    let full_tie = [r(3, 1.0, 0.1, Some(0.9), Some(2.0), 0.5), r(1, 1.0, 0.1, Some(0.9), Some(2.0), 1.0)];
    assert_eq!(select(LearnerKind::BestOfK, &full_tie), Some(1), "then the lower restart index");
    // An unknown validation accuracy never wins.
    let nan = [r(0, 1.0, 0.1, Some(f64::NAN), None, 1.0), r(1, 1.0, 0.9, Some(0.1), None, 0.5)];
    assert_eq!(select(LearnerKind::BestOfK, &nan), Some(1));
}

#[test]
fn min_norm_chooses_the_smallest_bound_among_restarts_that_fit() {
    // Restart 1 has the smallest norm but does not fit its training set.
    let out = [r(0, 1.0, 0.01, None, Some(4.0), 0.60), r(1, 0.95, 0.2, None, Some(0.5), 1.0), r(2, 1.0, 0.02, None, Some(3.0), 1.0)];
    assert_eq!(select(LearnerKind::MinNorm, &out), Some(2));
    assert!(instance_succeeds(LearnerKind::MinNorm, &out, 0.99));
    // Nothing fits: no output, no success.
    let none = [r(0, 0.9, 0.1, None, Some(1.0), 1.0)];
    assert_eq!(select(LearnerKind::MinNorm, &none), None);
    assert!(!instance_succeeds(LearnerKind::MinNorm, &none, 0.99));
    // Majority outputs no single restart.
    assert_eq!(select(LearnerKind::Majority, &out), None);
}

#[test]
fn m_star_is_the_smallest_m_where_a_majority_of_instances_succeed() {
    let good = vec![r(0, 1.0, 0.0, Some(1.0), Some(1.0), 1.0)];
    let bad = vec![r(0, 1.0, 0.0, Some(1.0), Some(1.0), 0.5)];
    let mut inst = BTreeMap::new();
    inst.insert(16, vec![good.clone(), bad.clone(), bad.clone()]);
    inst.insert(32, vec![good.clone(), good.clone(), bad.clone()]);
    inst.insert(64, vec![good.clone(), good.clone(), good.clone()]);
    assert_eq!(m_star(LearnerKind::BestOfK, &inst, 0.99), Some(32));
    inst.insert(32, vec![good.clone(), bad.clone()]);
    assert_eq!(m_star(LearnerKind::BestOfK, &inst, 0.99), Some(64), "half is not a majority");
}

#[test]
fn bad_learner_settings_are_one_line_errors_naming_the_key() {
    let spec = |kind, k, validation| LearnerSpec { kind, k, validation, stop: None };
    let e = spec(LearnerKind::BestOfK, 0, Some(Validation::Share(0.2))).check(&[16]).unwrap_err();
    assert!(e.starts_with("sweep.k = 0"), "{e}");
    for p in [0.0, 1.0, -0.5, f64::NAN] {
        let e = spec(LearnerKind::BestOfK, 4, Some(Validation::Share(p))).check(&[16]).unwrap_err();
        assert!(e.starts_with("sweep.validation = ") && e.contains("(0, 1)"), "{e}");
    }
    let e = spec(LearnerKind::BestOfK, 4, Some(Validation::Count(16))).check(&[8, 16]).unwrap_err();
    assert!(e.contains("sweep.validation holds out 16 of m = 8") && e.contains("m − 1 = 7"), "{e}");
    let e = spec(LearnerKind::BestOfK, 4, None).check(&[16]).unwrap_err();
    assert!(e.starts_with("sweep.validation is missing"), "{e}");
    assert_eq!(spec(LearnerKind::BestOfK, 0, None).check(&[16]).unwrap_err().lines().count(), 1);
    assert!(spec(LearnerKind::BestOfK, 8, Some(Validation::Share(0.2))).check(&[8, 16, 64]).is_ok());
    assert!(spec(LearnerKind::MinNorm, 8, None).check(&[8]).is_ok());
    assert!(spec(LearnerKind::Majority, 0, None).check(&[1]).is_ok(), "majority has no k");
    // A share rounds to a count of at least one.
    assert_eq!(Validation::Share(0.2).count(16), 3);
    assert_eq!(Validation::Share(0.01).count(16), 1);
}
