//! best_of_k with stop = validation: once one restart of an instance validates, the instance
//! is decided (its output is the first restart to validate), and its other restarts leave
//! the ensemble there; the learner's output is the same as if they had trained on.

mod common;

use common::SmallRestarts;
use sparsevar_experiment::learners::{LearnerKind, RestartOutcome, StopRule, Stopped, select};
use sparsevar_experiment::train::EnsembleResult;

const K: usize = 4;

fn run(target: f64, decide: bool) -> EnsembleResult {
    SmallRestarts { instances: 5, k: K, max_steps: 400, target, validation: 8, stop: Some(StopRule::Validation), decide, patience: 1 }.run()
}

fn outcomes(r: &EnsembleResult, instance: usize) -> Vec<RestartOutcome> {
    (0..K)
        .map(|j| {
            let m = &r.members[instance * K + j];
            let s = m.scores.clone().unwrap();
            RestartOutcome {
                restart: j,
                train_accuracy: s.train_accuracy,
                train_loss: s.train_loss,
                validation_accuracy: s.validation_accuracy,
                norm_bound: m.norms.as_ref().map(|n| n.bound),
                test_accuracy: m.test_accuracy,
                stopped: m.stopped,
                step: m.step,
            }
        })
        .collect()
}

#[test]
fn a_decided_instance_stops_as_a_whole_and_its_output_does_not_change() {
    for target in [0.9, 0.99] {
        let (decided, full) = (run(target, true), run(target, false));
        let mut stopped_early = 0;
        for i in 0..5 {
            let d = &decided.members[i * K..(i + 1) * K];
            let first = d.iter().filter(|m| m.stopped == Some(Stopped::Validation)).filter_map(|m| m.step).min();
            match first {
                Some(s) => {
                    // Everyone left by the decision: at it (validated or decided) or before (diverged).
                    for m in d {
                        match m.stopped {
                            Some(Stopped::Validation) | Some(Stopped::Decided) => assert_eq!(m.step, Some(s), "{m:?}"),
                            other => assert_eq!(other, Some(Stopped::Diverged)),
                        }
                        assert_eq!(m.learned, !m.diverged && m.test_accuracy >= target, "judged where it left");
                    }
                    stopped_early += d.iter().filter(|m| m.stopped == Some(Stopped::Decided)).count();
                }
                None => assert!(d.iter().all(|m| matches!(m.stopped, Some(Stopped::Budget) | Some(Stopped::Diverged)))),
            }
            // The learner's output is the same restart, in the same state, as when every
            // restart trains on to its own stop.
            let (a, b) = (outcomes(&decided, i), outcomes(&full, i));
            let (sa, sb) = (select(LearnerKind::BestOfK, &a), select(LearnerKind::BestOfK, &b));
            assert_eq!(sa, sb, "θ {target}, instance {i}");
            let j = sa.unwrap();
            assert_eq!((a[j].test_accuracy, a[j].step, a[j].stopped), (b[j].test_accuracy, b[j].step, b[j].stopped));
            assert_eq!(decided.members[i * K + j], full.members[i * K + j], "members are independent: the output is bit for bit the same");
        }
        assert!(stopped_early > 0, "θ {target}: some restart left because its instance was decided");
        // And the decided run trained fewer member-steps.
        let cost = |r: &EnsembleResult| r.members.iter().map(|m| m.steps_trained).sum::<usize>();
        assert!(cost(&decided) < cost(&full), "θ {target}: {} vs {}", cost(&decided), cost(&full));
    }
}

const SWEEP: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 400, lr: 0.003, eval_every: 20, test_samples: 128 }
sweep:
  T: [6]
  m: [16, 48]
  seeds: [0, 1, 2]
  learner: best_of_k
  k: 4
  validation: 0.25
  max_ensemble: 10
";

#[test]
fn in_a_sweep_an_instance_stops_at_its_first_validation_and_budget_trains_every_restart_to_the_end() {
    // max_ensemble 10 with k = 4: units of 8 members, so no instance is split.
    let (_, _, rows) = common::sweep(SWEEP, "decided-sweep");
    assert_eq!(rows.len(), 2 * 3 * K);
    let mut decided = 0;
    for m in [16, 48] {
        for seed in 0..3 {
            let own: Vec<_> = rows.iter().filter(|r| r.m == m && r.seed == seed).collect();
            if let Some(first) = own.iter().filter(|r| r.stopped == Some(Stopped::Validation)).filter_map(|r| r.step).min() {
                assert!(own.iter().all(|r| r.steps_trained <= first), "instance (m {m}, seed {seed}) stopped at {first}: {own:?}");
                decided += own.iter().filter(|r| r.stopped == Some(Stopped::Decided)).count();
            }
        }
    }
    assert!(decided > 0, "some restarts left with their decided instance");
    // stop: budget trains every restart to the budget, so every learner reads them as it
    // would train them.
    let (_, out, rows) = common::sweep(&SWEEP.replace("  max_ensemble: 10\n", "  max_ensemble: 10\n  stop: budget\n"), "decided-budget");
    assert!(rows.iter().all(|r| r.stopped == Some(Stopped::Budget) || r.stopped == Some(Stopped::Diverged)));
    let kinds: Vec<LearnerKind> = out.summary.models[0].points[0].learners.iter().map(|l| l.learner).collect();
    assert_eq!(kinds, vec![LearnerKind::Majority, LearnerKind::BestOfK, LearnerKind::MinNorm]);
}
