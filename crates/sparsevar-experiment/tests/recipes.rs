//! `sweep.recipes`: a learner's restarts spread over optimizer settings (restart j uses
//! recipe j mod n). A restart trained under a recipe is the restart a plain sweep with that
//! recipe's settings in `train:` trains; the summary says which recipe each instance's output
//! used, by the learner's own rule on runs.csv; bad recipes are refused naming the key.

mod common;

use sparsevar_core::registry::Registry;
use sparsevar_experiment::learners::{LearnerKind, RestartOutcome, select};
use sparsevar_experiment::sweep::{RunRow, SweepConfig, SweepOutcome};
use sparsevar_test_support::ScratchDir;

const BASE: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 200, lr: 0.003, eval_every: 100, test_samples: 128 }
sweep:
  T: [6]
  m: [24, 48]
  seeds: [0, 1]
  learner: best_of_k
  k: 4
  validation: 0.25
";

const RECIPES: &str = "  recipes: [ { lr: 0.003, weight_decay: 0.1 }, { lr: 0.01, weight_decay: 1.0 } ]\n";

fn sweep(yaml: &str, name: &str) -> (SweepOutcome, Vec<RunRow>) {
    let (_, out, rows) = common::sweep(yaml, name);
    (out, rows)
}

/// What a row says about training, without wall time and the recipe index.
fn trained(r: &RunRow) -> String {
    format!("{:?}", RunRow { seconds: 0.0, recipe: None, ..r.clone() })
}

#[test]
fn a_restart_under_a_recipe_is_the_restart_of_a_plain_sweep_with_that_recipe() {
    // stop: budget, so that no decided instance stops a restart because of another one.
    let multi = format!("{BASE}  stop: budget\n{RECIPES}");
    let (_, rows) = sweep(&multi, "recipes-multi");
    assert_eq!(rows.len(), 2 * 2 * 4);
    for r in &rows {
        assert_eq!(r.recipe, Some(r.restart.unwrap() % 2), "restart j uses recipe j mod 2: {r:?}");
    }
    // Recipe 0 is train: as given (lr 0.003, weight decay 0.1 is adamw's default); recipe 1
    // is lr 0.01, weight decay 1.0 written into train:.
    let plain0 = format!("{BASE}  stop: budget\n");
    let plain1 = plain0.replace("lr: 0.003,", "lr: 0.01, weight_decay: 1.0,");
    let (_, rows0) = sweep(&plain0, "recipes-plain0");
    let (_, rows1) = sweep(&plain1, "recipes-plain1");
    let find = |rows: &[RunRow], r: &RunRow| rows.iter().find(|x| (x.m, x.seed, x.restart) == (r.m, r.seed, r.restart)).cloned().unwrap();
    let mut differ = 0;
    for r in &rows {
        let (same, other) = if r.recipe == Some(0) { (&rows0, &rows1) } else { (&rows1, &rows0) };
        assert_eq!(trained(r), trained(&find(same, r)), "bit for bit the plain sweep's restart");
        assert!(find(same, r).recipe.is_none(), "a sweep without recipes writes no recipe");
        differ += usize::from(trained(r) != trained(&find(other, r)));
    }
    // The other recipe's restart trains differently: recipes reach the optimizer.
    assert_eq!(differ, rows.len());
}

#[test]
fn the_summary_names_the_recipe_of_the_restart_each_learner_selects() {
    let n = 2;
    let (out, rows) = sweep(&format!("{BASE}{RECIPES}"), "recipes-choice");
    let point = &out.summary.models[0].points[0];
    assert!(out.summary.success_rule.contains("recipe j mod 2"), "{}", out.summary.success_rule);
    for kind in [LearnerKind::BestOfK, LearnerKind::MinNorm] {
        let choices: Vec<_> = point.choices.iter().filter(|c| c.learner == kind).collect();
        assert_eq!(choices.len(), 2 * 2, "one per instance (m, seed)");
        for c in &choices {
            // The learner's rule, applied here to the instance's rows of runs.csv.
            let own: Vec<&RunRow> = rows.iter().filter(|r| (r.m, r.seed) == (c.m, c.seed)).collect();
            let outcomes: Vec<RestartOutcome> = own
                .iter()
                .map(|r| RestartOutcome {
                    restart: r.restart.unwrap(),
                    train_accuracy: r.train_accuracy.unwrap(),
                    train_loss: r.train_set_loss.unwrap(),
                    validation_accuracy: r.validation_accuracy,
                    norm_bound: r.norm_bound,
                    test_accuracy: r.test_accuracy,
                    stopped: r.stopped,
                    step: r.step,
                })
                .collect();
            let restart = select(kind, &outcomes).map(|i| outcomes[i].restart);
            assert_eq!(c.restart, restart, "{kind:?} m {} seed {}", c.m, c.seed);
            assert_eq!(c.recipe, restart.map(|j| j % n));
            assert_eq!(c.learned, restart.is_some_and(|j| own.iter().find(|r| r.restart == Some(j)).unwrap().learned));
        }
        let counts: Vec<_> = point.recipe_counts.iter().filter(|c| c.learner == kind).collect();
        assert_eq!(counts.iter().map(|c| c.recipe).collect::<Vec<_>>(), vec![0, 1]);
        for c in &counts {
            assert_eq!(c.chosen, choices.iter().filter(|x| x.recipe == Some(c.recipe)).count());
            assert_eq!(c.learned, choices.iter().filter(|x| x.recipe == Some(c.recipe) && x.learned).count());
        }
    }
    // Majority reads no single output: it chooses no recipe.
    assert!(point.choices.iter().all(|c| c.learner != LearnerKind::Majority));
}

#[test]
fn bad_recipes_are_refused_naming_the_key_before_training() {
    let reg = Registry::builtin();
    let cases = [
        ("  recipes: []\n", "sweep.recipes is empty"),
        ("  recipes: [ { lr: 0.001 }, { lr: 0.001, weight_dacay: 1.0 } ]\n", "weight_dacay"),
        ("  recipes: [ { lr: 0.001 }, { lr: -0.001 } ]\n", "sweep.recipes[1].lr"),
        ("  recipes: [ { lr: .nan }, { lr: 0.001 } ]\n", "sweep.recipes[0].lr"),
        ("  recipes: [ { weight_decay: -1 }, { lr: 0.001 } ]\n", "sweep.recipes[0].weight_decay"),
        ("  recipes: [ { lr: 0.001 }, { lr: 0.003 }, { lr: 0.01 } ]\n", "sweep.k = 4 is not a multiple of the 3 sweep.recipes"),
    ];
    for (extra, needle) in cases {
        let e = SweepConfig::parse(&format!("{BASE}{extra}"), "bad.yaml", &[], &reg).unwrap_err().to_string();
        assert!(e.contains(needle), "{extra}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // An unknown key names where it is.
    let e = SweepConfig::parse(&format!("{BASE}  recipes: [ {{ lr: 0.001, weight_dacay: 1.0 }} ]\n"), "bad.yaml", &[], &reg).unwrap_err().to_string();
    assert!(e.contains("sweep.recipes[0]") && e.contains("unknown field `weight_dacay`"), "{e}");
    // A majority sweep has no restarts to spread.
    let majority = BASE.replace("  learner: best_of_k\n  k: 4\n  validation: 0.25\n", "");
    let e = SweepConfig::parse(&format!("{majority}{RECIPES}"), "bad.yaml", &[], &reg).unwrap_err().to_string();
    assert!(e.contains("sweep.recipes") && e.contains("majority") && !e.contains('\n'), "{e}");
    // Through an override as well.
    let e = SweepConfig::parse(BASE, "ok.yaml", &["sweep.recipes=[{lr: 0}]".into()], &reg).unwrap_err().to_string();
    assert!(e.contains("sweep.recipes[0].lr"), "{e}");
}

#[test]
fn the_plan_gives_each_unit_one_recipe_and_keeps_a_recipes_restarts_of_an_instance_together() {
    use sparsevar_experiment::units::{Unit, write_plan};
    let reg = Registry::builtin();
    // 3 recipes, k = 6: 2 restarts per recipe and instance; max_ensemble 5 holds 2 instances' pairs.
    let yaml = BASE.replace("k: 4", "k: 6").replace("  validation: 0.25\n", "  validation: 0.25\n  max_ensemble: 5\n")
        + "  recipes: [ { lr: 0.001 }, { lr: 0.003 }, { lr: 0.01 } ]\n";
    let cfg = SweepConfig::parse(&yaml, "plan.yaml", &[], &reg).unwrap();
    let dir = ScratchDir::created("recipes-plan");
    let n = write_plan(&cfg, &dir).unwrap();
    let mut seen = Vec::new();
    for i in 0..n {
        let unit: Unit = serde_json::from_str(&std::fs::read_to_string(dir.join("units").join(format!("{i:04}.json"))).unwrap()).unwrap();
        assert!(unit.members.len() <= 5);
        let recipes: std::collections::BTreeSet<usize> = unit.restarts.iter().map(|j| j % 3).collect();
        assert_eq!(recipes.len(), 1, "unit {i}: {unit:?}");
        // An instance's restarts of this recipe are in this unit together.
        for (&(m, seed), &j) in unit.members.iter().zip(&unit.restarts) {
            let mate = if j < 3 { j + 3 } else { j - 3 };
            assert!(unit.members.iter().zip(&unit.restarts).any(|(&x, &r)| x == (m, seed) && r == mate), "unit {i}: {unit:?}");
            seen.push((m, seed, j));
        }
    }
    seen.sort();
    let mut all: Vec<(usize, u64, usize)> = cfg.sweep.m.values().iter().flat_map(|&m| cfg.members_at(m)).collect();
    all.sort();
    assert_eq!(seen, all, "every restart planned once");
}
