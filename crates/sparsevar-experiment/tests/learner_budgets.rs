//! Learners × budgets: a restart's state at budget b is its state at the last evaluation
//! within b (or where it stopped, if earlier), so m* per learner per budget is what a sweep
//! with b as its budget finds; `stable` per learner compares the last two budgets.

mod common;

use sparsevar_core::registry::Registry;
use sparsevar_experiment::learners::{LearnerKind, Stopped};
use sparsevar_experiment::sweep::{RunRow, SweepConfig, summarize_point};

use common::BUDGETS_SWEEP as SWEEP;

fn sweep(text: &str, name: &str) -> (SweepConfig, Vec<RunRow>, sparsevar_experiment::sweep::SweepSummary) {
    let (cfg, out, rows) = common::sweep(text, name);
    (cfg, rows, out.summary)
}

/// A row without what differs between two runs of the same members (wall time).
fn comparable(r: &RunRow) -> RunRow {
    RunRow { seconds: 0.0, budget: None, ..r.clone() }
}

#[test]
fn a_restart_at_each_budget_is_what_a_sweep_with_that_budget_trains() {
    for stop in ["validation", "budget"] {
        let text = SWEEP.replace("  budgets: [40, 100]\n", &format!("  budgets: [40, 100]\n  stop: {stop}\n"));
        let (cfg, rows, summary) = sweep(&text, "lb-both");
        assert_eq!(rows.len(), 2 * 3 * 3 * 2, "one row per restart per budget");
        // Some restart was still training at 40 steps: its row there is its state then.
        assert!(rows.iter().any(|r| r.budget == Some(40) && r.steps_trained == 40 && r.stopped == Some(Stopped::Budget)));
        assert!(rows.iter().any(|r| r.budget == Some(100) && r.steps_trained > 40));
        for b in [40, 100] {
            // The same sweep with b as its only budget.
            let (_, alone, alone_summary) = sweep(&text.replace("budgets: [40, 100]", &format!("budgets: [{b}]")), "lb-one");
            let mut mine: Vec<RunRow> = rows.iter().filter(|r| r.budget == Some(b)).map(comparable).collect();
            let mut theirs: Vec<RunRow> = alone.iter().map(comparable).collect();
            let key = |r: &RunRow| (r.m, r.seed, r.restart);
            mine.sort_by_key(key);
            theirs.sort_by_key(key);
            assert_eq!(mine.len(), theirs.len());
            for (a, b) in mine.iter().zip(&theirs) {
                // NaN-free here: compare the whole row.
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "stop {stop}");
            }
            let p = &summary.models[0].points[0];
            let bp = p.budgets.iter().find(|x| x.budget == b).unwrap();
            assert_eq!(bp.m_star, alone_summary.models[0].points[0].m_star, "stop {stop}, budget {b}");
            assert_eq!(bp.learners.len(), p.learners.len());
        }
        let p = summarize_point(&cfg, &rows, "attn", 6);
        assert_eq!(p.m_star, p.budgets[1].m_star, "the point's m* is the last budget's");
        assert_eq!(p.stable, Some(p.budgets[0].m_star == p.budgets[1].m_star));
        for (i, l) in p.learners.iter().enumerate() {
            assert_eq!(l.stable, Some(p.budgets[0].learners[i].m_star == p.budgets[1].learners[i].m_star));
        }
        if stop == "budget" {
            assert_eq!(p.learners.len(), 3);
        }
    }
}

fn row(m: usize, seed: u64, restart: usize, budget: usize, val: f64, test: f64, stopped: Stopped) -> RunRow {
    RunRow {
        model: "attn".into(),
        t: 6,
        m,
        seed,
        restart: Some(restart),
        budget: Some(budget),
        learned: test >= 0.99,
        step: Some(budget),
        steps_trained: budget,
        test_accuracy: test,
        train_accuracy: Some(1.0),
        validation_accuracy: Some(val),
        train_set_loss: Some(0.1),
        norm_bound: Some(restart as f64 + 1.0),
        stopped: Some(stopped),
        ..RunRow::default()
    }
}

#[test]
fn m_star_per_learner_per_budget_on_hand_made_rows() {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(&SWEEP.replace("  budgets: [40, 100]\n", "  budgets: [40, 100]\n  stop: budget\n"), "h.yaml", &[], &reg).unwrap();
    let mut rows = Vec::new();
    for seed in 0..3 {
        // m = 16: by 40 steps restart 1 is best on validation but wrong on the test set; by
        // 100 it is right: best_of_k succeeds only within the larger budget.
        rows.push(row(16, seed, 0, 40, 0.5, 1.0, Stopped::Budget));
        rows.push(row(16, seed, 1, 40, 0.75, 0.5, Stopped::Budget));
        rows.push(row(16, seed, 0, 100, 0.5, 1.0, Stopped::Budget));
        rows.push(row(16, seed, 1, 100, 1.0, 1.0, Stopped::Budget));
        // m = 48: both budgets succeed for best_of_k.
        for b in [40, 100] {
            rows.push(row(48, seed, 0, b, 1.0, 1.0, Stopped::Budget));
            rows.push(row(48, seed, 1, b, 0.5, 0.5, Stopped::Budget));
        }
    }
    let p = summarize_point(&cfg, &rows, "attn", 6);
    let of = |b: usize, k: LearnerKind| p.budgets.iter().find(|x| x.budget == b).unwrap().learners.iter().find(|l| l.learner == k).unwrap().m_star;
    assert_eq!(of(40, LearnerKind::BestOfK), Some(48), "the restart best on validation was wrong at 40 steps");
    assert_eq!(of(100, LearnerKind::BestOfK), Some(16));
    assert_eq!(of(40, LearnerKind::Majority), Some(16), "restart 0 is right at both budgets");
    assert_eq!(of(100, LearnerKind::Majority), Some(16));
    // min_norm: restart 0 (the smaller bound) fits everywhere; right at m = 16, at m = 48 too.
    assert_eq!(of(40, LearnerKind::MinNorm), Some(16));
    let stable: Vec<(LearnerKind, Option<bool>)> = p.learners.iter().map(|l| (l.learner, l.stable)).collect();
    assert_eq!(stable, vec![(LearnerKind::Majority, Some(true)), (LearnerKind::BestOfK, Some(false)), (LearnerKind::MinNorm, Some(true))]);
    assert_eq!(p.m_star, Some(16));
    assert_eq!(p.stable, Some(false), "the sweep's own learner moved");
}
