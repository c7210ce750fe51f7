//! `sweep.patience`: a learner's restart stops only once its rule has held at N consecutive
//! evaluations. Where the rule keeps holding, a restart that would stop at evaluation e
//! stops at e + (N − 1)·eval_every, in exactly the state the same member has there when it
//! trains on; a decided instance is decided where its restart actually stops.

mod common;

use common::SmallRestarts;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::checkpoint::Checkpoint;
use sparsevar_experiment::learners::{StopRule, Stopped};
use sparsevar_experiment::train::{CurvePoint, EnsembleResult, Trainer};

const K: usize = 4;
const EVERY: usize = common::EVAL_EVERY;
const STEPS: usize = 600;
const TARGET: f64 = 0.9;

fn small(stop: StopRule, patience: usize, decide: bool) -> SmallRestarts {
    SmallRestarts { instances: 4, k: K, max_steps: STEPS, target: TARGET, validation: 8, stop: Some(stop), decide, patience }
}

fn run(stop: StopRule, patience: usize, decide: bool) -> EnsembleResult {
    small(stop, patience, decide).run()
}

fn holds(c: &CurvePoint) -> bool {
    StopRule::Validation.stops(c.train_accuracy.unwrap(), c.validation_accuracy, TARGET)
}

/// The step at which member `i`'s rule has held `n` evaluations in a row, read from the
/// curve of a run in which it trained on.
fn held_for(full: &EnsembleResult, i: usize, n: usize) -> Option<usize> {
    let mut run = 0;
    for c in full.curves.iter().filter(|c| c.member == i) {
        run = if holds(c) { run + 1 } else { 0 };
        if run == n {
            return Some(c.step);
        }
    }
    None
}

#[test]
fn with_patience_a_restart_stops_once_its_rule_has_held_n_times_in_the_state_it_has_there() {
    let n = 3;
    // Every member trains to the budget here: its whole curve.
    let full = run(StopRule::Budget, 1, false);
    let once = run(StopRule::Validation, 1, false);
    let patient = run(StopRule::Validation, n, false);
    let mut kept_holding = 0;
    for (i, m) in patient.members.iter().enumerate() {
        let at = held_for(&full, i, n);
        assert_eq!(m.step, at.or(Some(STEPS)), "member {i}");
        assert_eq!(m.stopped, Some(if at.is_some() { Stopped::Validation } else { Stopped::Budget }), "member {i}");
        let e = once.members[i].step.filter(|_| once.members[i].stopped == Some(Stopped::Validation));
        assert_eq!(e, held_for(&full, i, 1), "patience 1 stops at the first hold (today's rule)");
        if let (Some(e), Some(at)) = (e, at)
            && at == e + (n - 1) * EVERY
        {
            kept_holding += 1;
        }
        if let Some(at) = at {
            // Bit for bit the member's state at that step when it trains on.
            let c = full.curves.iter().find(|c| c.member == i && c.step == at).unwrap();
            let s = m.scores.as_ref().unwrap();
            assert_eq!(
                (m.test_accuracy, Some(s.train_accuracy), s.validation_accuracy, Some(s.train_loss), m.norms.as_ref().map(|x| x.bound)),
                (c.test_accuracy, c.train_accuracy, c.validation_accuracy, c.train_set_loss, c.norm_bound),
                "member {i} at step {at}"
            );
            assert_eq!(m.learned, c.test_accuracy >= TARGET);
        }
    }
    assert!(kept_holding > 0, "some restart whose rule kept holding stopped (n − 1) evaluations after its first hold");
    assert!(patient.members.iter().zip(&once.members).any(|(p, o)| p.step > o.step), "patience changes some stop");
}

#[test]
fn a_decided_instance_follows_the_restart_that_actually_stops() {
    let n = 2;
    let alone = run(StopRule::Validation, n, false);
    let decided = run(StopRule::Validation, n, true);
    let mut early = 0;
    for inst in 0..4 {
        let own = &alone.members[inst * K..(inst + 1) * K];
        let first = own.iter().filter(|m| m.stopped == Some(Stopped::Validation)).filter_map(|m| m.step).min();
        for (j, m) in decided.members[inst * K..(inst + 1) * K].iter().enumerate() {
            let a = &own[j];
            match first {
                // Restarts that stop (or diverge) by the decision are unchanged; the others
                // leave at it.
                Some(s) if a.step.is_none_or(|x| x > s) && !a.diverged => {
                    assert_eq!((m.stopped, m.step), (Some(Stopped::Decided), Some(s)), "instance {inst} restart {j}");
                    early += 1;
                }
                _ => assert_eq!((m.stopped, m.step, m.test_accuracy), (a.stopped, a.step, a.test_accuracy), "instance {inst} restart {j}"),
            }
        }
    }
    assert!(early > 0, "some instance was decided before all its restarts stopped");
}

#[test]
fn a_run_resumed_mid_patience_stops_where_the_uninterrupted_run_stops() {
    let (spec, restarts) = small(StopRule::Validation, 3, true).setup();
    let train = |ck: Option<&Checkpoint>, cks: &mut Vec<Checkpoint>| {
        let mut be = CpuBackend::<f32>::new();
        let mut t = Trainer::with_restarts(&mut be, spec.clone(), &Registry::builtin(), Some(restarts.clone())).unwrap();
        if let Some(ck) = ck {
            t.restore(ck).unwrap();
        }
        let r = t
            .run_checkpointed(&mut |_| true, EVERY, &mut |ck| {
                cks.push(ck);
                Ok(())
            })
            .unwrap();
        format!("{:?}", r.members)
    };
    let mut cks = Vec::new();
    let whole = train(None, &mut cks);
    // Checkpoints at every evaluation: some fall between a restart's first hold and its stop.
    for ck in &cks[..cks.len() - 1] {
        assert_eq!(train(Some(ck), &mut Vec::new()), whole, "resumed at step {}", ck.state.step);
    }
}

const SWEEP: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 400, lr: 0.003, eval_every: 20, test_samples: 128 }
sweep: { T: [6], m: [24, 48], seeds: [0, 1], learner: min_norm, k: 3 }
";

fn sweep_rows(extra: &str, name: &str) -> Vec<sparsevar_experiment::sweep::RunRow> {
    let (_, _, mut rows) = common::sweep(&SWEEP.replace("k: 3 }", &format!("k: 3{extra} }}")), name);
    for r in &mut rows {
        r.seconds = 0.0;
    }
    rows
}

#[test]
fn a_sweep_passes_its_patience_to_the_restarts_and_patience_1_is_the_default() {
    let plain = sweep_rows("", "patience-default");
    assert_eq!(format!("{plain:?}"), format!("{:?}", sweep_rows(", patience: 1", "patience-1")), "patience 1 is today's rule, row for row");
    let patient = sweep_rows(", patience: 2", "patience-2");
    let mut later = 0;
    for (p, q) in patient.iter().zip(&plain) {
        assert_eq!((p.m, p.seed, p.restart), (q.m, q.seed, q.restart));
        // stop: fit held twice in a row: at least one evaluation after it first held.
        if p.stopped == Some(Stopped::Fit) {
            assert_eq!(q.stopped, Some(Stopped::Fit), "{q:?}");
            assert!(p.step.unwrap() >= q.step.unwrap() + EVERY, "{p:?} vs {q:?}");
            later += 1;
        }
    }
    assert!(later > 0, "some restart fitted under patience 2");
}
