//! Restarts of a learner stop on what the learner may see: best_of_k's on validation and
//! training accuracy, min_norm's when they fit, or at the budget; never on the test set.

mod common;

use common::SmallRestarts;
use sparsevar_experiment::learners::{StopRule, Stopped};
use sparsevar_experiment::train::EnsembleResult;

fn run(target: f64, stop: Option<StopRule>, validation: usize) -> EnsembleResult {
    SmallRestarts { instances: 3, k: 4, max_steps: 600, target, validation, stop, decide: false, patience: 1 }.run()
}

/// The first evaluation of member `i` at which `rule` holds, read from its curve.
fn first_where(r: &EnsembleResult, i: usize, rule: impl Fn(&sparsevar_experiment::train::CurvePoint) -> bool) -> Option<usize> {
    r.curves.iter().filter(|c| c.member == i).find(|c| rule(c)).map(|c| c.step)
}

#[test]
fn a_restart_stops_on_validation_never_on_the_test_set() {
    let target = 0.9;
    let r = run(target, Some(StopRule::Validation), 8);
    let mut test_first = 0;
    for (i, m) in r.members.iter().enumerate() {
        let validated = first_where(&r, i, |c| c.validation_accuracy.unwrap() >= target && c.train_accuracy.unwrap() >= target);
        assert_eq!(m.step, validated.or(Some(600)), "member {i} stops at its first validation (else at the budget)");
        assert_eq!(m.stopped, Some(if validated.is_some() { Stopped::Validation } else { Stopped::Budget }));
        assert_eq!(r.curves.iter().filter(|c| c.member == i).map(|c| c.step).max(), m.step, "member {i} left at its stop");
        // `learned` judges the state it stopped in, on the test set.
        let last = r.curves.iter().rfind(|c| c.member == i).unwrap();
        assert_eq!(m.learned, last.test_accuracy >= target);
        assert_eq!(m.test_accuracy, last.test_accuracy);
        if first_where(&r, i, |c| c.test_accuracy >= target) < m.step {
            test_first += 1;
        }
    }
    assert!(test_first > 0, "some restart reached the target on its test set before its validation did, and trained on");
    // The test-set rule (majority's) stops those restarts earlier: the rules differ here.
    let plain = run(target, None, 8);
    assert!(plain.members.iter().zip(&r.members).any(|(p, v)| p.step < v.step), "the test rule would have stopped earlier");
    assert!(plain.members.iter().all(|p| p.stopped.is_some_and(|s| s == Stopped::Test || s == Stopped::Budget || s == Stopped::Diverged)));
}

#[test]
fn a_restart_whose_validation_crosses_first_stops_there_even_if_its_test_accuracy_is_short() {
    let target = 0.8;
    let r = run(target, Some(StopRule::Validation), 8);
    let short = r.members.iter().enumerate().filter(|(i, m)| {
        m.stopped == Some(Stopped::Validation)
            && !m.learned
            && first_where(&r, *i, |c| c.validation_accuracy.unwrap() >= target && c.train_accuracy.unwrap() >= target) == m.step
    });
    assert!(short.count() > 0, "some restart validated before its test accuracy reached the target, stopped there and did not learn");
}

#[test]
fn fit_stops_at_the_first_interpolation_and_budget_never_stops_early() {
    let r = run(0.99, Some(StopRule::Fit), 0);
    for (i, m) in r.members.iter().enumerate() {
        let fit = first_where(&r, i, |c| c.train_accuracy.unwrap() >= 1.0);
        assert_eq!(m.step, fit.or(Some(600)), "member {i}");
        assert_eq!(m.stopped, Some(if fit.is_some() { Stopped::Fit } else { Stopped::Budget }));
        assert!(m.scores.as_ref().unwrap().validation_accuracy.is_none());
    }
    let r = run(0.99, Some(StopRule::Budget), 8);
    for (i, m) in r.members.iter().enumerate().filter(|(_, m)| !m.diverged) {
        assert_eq!((m.step, m.steps_trained, m.stopped), (Some(600), 600, Some(Stopped::Budget)), "member {i}");
        let last = r.curves.iter().rfind(|c| c.member == i).unwrap();
        assert_eq!(m.learned, last.test_accuracy >= 0.99, "judged in its final state");
    }
}

#[test]
fn the_stop_rule_gives_the_same_numbers_with_one_or_two_threads() {
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run(0.9, Some(StopRule::Validation), 8))
    };
    let (a, b) = (with(1), with(2));
    assert_eq!(a.members, b.members);
    assert_eq!(a.curves, b.curves);
}

#[test]
fn the_rules_on_hand_made_scores() {
    let v = StopRule::Validation;
    // Test accuracy is not an argument at all: a restart at 1.0 on its test set but 0.8 on
    // validation goes on.
    assert!(!v.stops(1.0, Some(0.8), 0.9));
    assert!(v.stops(0.9, Some(0.9), 0.9), "both at the target");
    assert!(!v.stops(0.85, Some(1.0), 0.9), "validation alone is not enough");
    assert!(!v.stops(1.0, None, 0.9), "no split, no validation stop");
    assert!(!v.stops(1.0, Some(f64::NAN), 0.9));
    assert!(StopRule::Fit.stops(1.0, None, 0.99) && !StopRule::Fit.stops(0.999, Some(1.0), 0.5));
    assert!(!StopRule::Budget.stops(1.0, Some(1.0), 0.5));
    use sparsevar_experiment::learners::LearnerKind;
    assert_eq!(StopRule::default_for(LearnerKind::BestOfK), Some(StopRule::Validation));
    assert_eq!(StopRule::default_for(LearnerKind::MinNorm), Some(StopRule::Fit));
    assert_eq!(StopRule::default_for(LearnerKind::Majority), None);
}

#[test]
fn best_of_k_outputs_the_first_restart_to_validate() {
    use sparsevar_experiment::learners::{LearnerKind, RestartOutcome, select};
    let r = |restart, val: f64, loss, stopped, step, test| RestartOutcome {
        restart,
        train_accuracy: 1.0,
        train_loss: loss,
        validation_accuracy: Some(val),
        norm_bound: Some(1.0),
        test_accuracy: test,
        stopped: Some(stopped),
        step: Some(step),
    };
    // Restart 1 validated later with a higher validation accuracy: the earlier one is the output.
    let out = [r(0, 0.95, 0.1, Stopped::Validation, 400, 0.5), r(1, 1.0, 0.0, Stopped::Validation, 800, 1.0), r(2, 0.5, 0.6, Stopped::Budget, 1000, 0.5)];
    assert_eq!(select(LearnerKind::BestOfK, &out), Some(0));
    // Two at the same step: the tie rule (validation, then training loss).
    let out = [r(0, 0.95, 0.1, Stopped::Validation, 400, 0.5), r(1, 1.0, 0.2, Stopped::Validation, 400, 1.0), r(2, 1.0, 0.0, Stopped::Validation, 800, 0.5)];
    assert_eq!(select(LearnerKind::BestOfK, &out), Some(1));
    // A restart that left because its instance was decided never outranks the one that decided it.
    let out = [r(0, 1.0, 0.0, Stopped::Decided, 400, 1.0), r(1, 0.95, 0.2, Stopped::Validation, 400, 0.5)];
    assert_eq!(select(LearnerKind::BestOfK, &out), Some(1));
    // None validated: the best on validation in its final state.
    let out = [r(0, 0.7, 0.1, Stopped::Budget, 1000, 0.5), r(1, 0.8, 0.2, Stopped::Budget, 1000, 1.0), r(2, 0.9, 0.0, Stopped::Diverged, 300, 0.5)];
    assert_eq!(select(LearnerKind::BestOfK, &out), Some(2));
}
