//! `sweep.budgets`: m* within each step budget from one run to the last, the stable flag,
//! and budgets that do not increase refused naming the key.

use sparsevar_core::registry::Registry;
use sparsevar_experiment::sweep::{BudgetPoint, RunRow, SweepConfig, summarize_point};

fn cfg(budgets: &str) -> Result<SweepConfig, String> {
    let text = format!(
        "task: {{ kind: sparse_parity, s: 2 }}\nmodels: {{ attn: {{ kind: transformer, d_model: 8, heads: 2, mlp: 1 }} }}\ntrain: {{ max_steps: 1000, eval_every: 50 }}\nsweep: {{ T: [8], m: [16, 32, 64], seeds: [0, 1, 2]{budgets} }}\n"
    );
    SweepConfig::parse(&text, "b.yaml", &[], &Registry::builtin()).map_err(|e| e.to_string())
}

fn row(m: usize, seed: u64, step: Option<usize>) -> RunRow {
    RunRow { model: "attn".into(), t: 8, m, seed, learned: step.is_some(), step, steps_trained: step.unwrap_or(400), ..RunRow::default() }
}

#[test]
fn m_star_per_budget_and_the_stable_flag() {
    let c = cfg(", budgets: [100, 200, 400]").unwrap();
    assert_eq!(c.train_config().max_steps, 400, "the sweep trains to the last budget");
    // m = 64 learns early, m = 32 by step 200, m = 16 only by 400.
    let rows = vec![
        row(16, 0, None),
        row(16, 1, Some(300)),
        row(16, 2, Some(350)),
        row(32, 0, Some(150)),
        row(32, 1, Some(200)),
        row(32, 2, None),
        row(64, 0, Some(50)),
        row(64, 1, Some(100)),
        row(64, 2, Some(300)),
    ];
    let p = summarize_point(&c, &rows, "attn", 8);
    let want = |b, m| BudgetPoint { budget: b, m_star: m, learners: Vec::new() };
    assert_eq!(p.budgets, vec![want(100, Some(64)), want(200, Some(32)), want(400, Some(16))]);
    assert_eq!(p.stable, Some(false), "the last doubling moved m* from 32 to 16");
    assert_eq!(p.m_star, Some(16), "the last budget is the run's own m*");
    // Nothing new learns between 200 and 400: stable.
    let early: Vec<RunRow> = rows.iter().map(|r| if r.step.is_some_and(|s| s > 200) { row(r.m, r.seed, None) } else { r.clone() }).collect();
    let p = summarize_point(&c, &early, "attn", 8);
    assert_eq!(p.budgets.last(), Some(&want(400, Some(32))));
    assert_eq!(p.stable, Some(true));
    // Without budgets: no budget points, no flag, and the config reads as before.
    let plain = cfg("").unwrap();
    let p = summarize_point(&plain, &rows, "attn", 8);
    assert!(p.budgets.is_empty() && p.stable.is_none());
    assert_eq!(plain.train_config().max_steps, 1000);
    assert!(!plain.to_yaml().contains("budgets"));
    assert!(c.to_yaml().contains("budgets"));
}

#[test]
fn budgets_that_do_not_increase_or_miss_an_evaluation_are_refused() {
    for b in [", budgets: [400, 200]", ", budgets: [200, 200]", ", budgets: [0, 100]"] {
        let e = cfg(b).unwrap_err();
        assert!(e.contains("sweep.budgets = ") && e.contains("increase strictly"), "{b}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = cfg(", budgets: [100, 220]").unwrap_err();
    assert!(e.contains("sweep.budgets: 220 is not a multiple of train.eval_every = 50"), "{e}");
}
