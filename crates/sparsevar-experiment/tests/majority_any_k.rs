//! Majority reads restart 0 of each instance alone, and under `stop: budget` restart 0 trains
//! the same whatever k is: same seed, same data, same split, to the same budget. So a sweep
//! with k = 1 gives majority's m* of a k-restart sweep at a k-th of the cost (script 06's
//! budget doubling relies on it for an m that only majority needs).

mod common;

use sparsevar_experiment::learners::LearnerKind;
use sparsevar_experiment::sweep::RunRow;

/// The learner-budget sweep, every restart trained to the budget.
fn sweep_text() -> String {
    common::BUDGETS_SWEEP.replace("  budgets: [40, 100]\n", "  budgets: [40, 100]\n  stop: budget\n")
}

/// Restart 0's rows without the wall time, in (m, seed, budget) order.
fn restart_zero(rows: &[RunRow]) -> Vec<String> {
    let mut mine: Vec<&RunRow> = rows.iter().filter(|r| r.restart == Some(0)).collect();
    mine.sort_by_key(|r| (r.m, r.seed, r.budget));
    mine.iter().map(|r| format!("{:?}", RunRow { seconds: 0.0, ..(*r).clone() })).collect()
}

#[test]
fn restart_zero_and_majority_do_not_depend_on_k_under_stop_budget() {
    let (_, three, rows3) = common::sweep(&sweep_text(), "mk-3");
    let (_, one, rows1) = common::sweep(&sweep_text().replace("k: 3", "k: 1"), "mk-1");
    assert_eq!(rows3.len(), 3 * rows1.len(), "three restarts per instance against one");
    assert_eq!(restart_zero(&rows3), restart_zero(&rows1));
    let majority = |s: &sparsevar_experiment::sweep::SweepSummary| {
        let p = &s.models[0].points[0];
        let last = p.learners.iter().find(|l| l.learner == LearnerKind::Majority).unwrap().m_star;
        let per_budget: Vec<Option<usize>> = p.budgets.iter().map(|b| b.learners.iter().find(|l| l.learner == LearnerKind::Majority).unwrap().m_star).collect();
        (last, per_budget)
    };
    assert_eq!(majority(&three.summary), majority(&one.summary));
    // Something learned, so the comparison is not between two empty results.
    assert!(rows1.iter().any(|r| r.learned), "no restart learned: the test compares nothing");
}
