//! Learners: how the trained restarts of one training set become one hypothesis.
//!
//! A sweep today measures `majority` (a cell succeeds when a majority of its seeds learn).
//! The honest learning algorithms of "Is it log T?" see only their own m samples:
//! - `best_of_k`: k restarts on the samples minus a held-out validation split; the output is
//!   the restart with the best validation accuracy (ties: lower training loss, then the
//!   smaller norm bound, then the lower restart index);
//! - `min_norm`: among restarts that fit their training set (training accuracy 1.0), the one
//!   with the smallest norm bound (bounded-norm ERM, the theorem's own rule).
//!
//! The rules here are pure functions over restart outcomes, so they are tested on hand-made
//! outcomes; `sweep` applies them to the rows of a sweep with `sweep.learner` set, whose
//! restarts the trainer runs with `train::Restarts`.

use serde::{Deserialize, Serialize};

/// Which learner turns restarts into a hypothesis.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LearnerKind {
    /// A cell succeeds when a majority of its seeds learn (the sweep's rule).
    #[default]
    Majority,
    /// The restart with the best validation accuracy.
    BestOfK,
    /// The smallest-norm restart among those that fit their training set.
    MinNorm,
}

/// The held-out validation split: a share of the m samples (in (0, 1)) or a count (≥ 1).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Validation {
    Count(usize),
    Share(f64),
}

impl Validation {
    /// Samples held out of `m`: a share rounds to the nearest count, at least 1.
    pub fn count(&self, m: usize) -> usize {
        match *self {
            Validation::Count(v) => v,
            Validation::Share(p) => ((p * m as f64).round() as usize).max(1),
        }
    }
}

/// A learner's settings (`sweep.learner`, `sweep.k`, `sweep.validation`).
#[derive(Clone, Debug, PartialEq)]
pub struct LearnerSpec {
    pub kind: LearnerKind,
    /// Restarts per instance.
    pub k: usize,
    /// best_of_k's validation split.
    pub validation: Option<Validation>,
}

impl LearnerSpec {
    /// Check the settings for training sets of the sizes `m_values`; the message names the
    /// key and the fix.
    pub fn check(&self, m_values: &[usize]) -> Result<(), String> {
        if self.kind == LearnerKind::Majority {
            return Ok(());
        }
        if self.k == 0 {
            return Err("sweep.k = 0: a learner needs at least one restart per instance, e.g. k: 8".into());
        }
        if self.kind == LearnerKind::BestOfK {
            match self.validation {
                None => return Err("sweep.validation is missing: best_of_k holds out a share (e.g. 0.2) or a count of the m samples".into()),
                Some(Validation::Share(p)) if !(p > 0.0 && p < 1.0) => {
                    return Err(format!("sweep.validation = {p} must be a share in (0, 1) or a count of samples (e.g. 0.2 or 8)"));
                }
                Some(v) => {
                    for &m in m_values {
                        let held = v.count(m);
                        if held == 0 || held + 1 > m {
                            return Err(format!(
                                "sweep.validation holds out {held} of m = {m} samples, but at most m − 1 = {} can be held out (and at least 1): use a smaller validation or a larger sweep.m",
                                m.saturating_sub(1)
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What one restart of an instance ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartOutcome {
    /// Its index among the instance's restarts.
    pub restart: usize,
    pub train_accuracy: f64,
    pub train_loss: f64,
    /// On the instance's held-out split (best_of_k only).
    pub validation_accuracy: Option<f64>,
    /// The capacity-bound value at the end.
    pub norm_bound: Option<f64>,
    /// On the fresh test set: never used to select, only to judge the output.
    pub test_accuracy: f64,
}

/// NaN sorts last whatever the direction: a restart with an unknown value never wins.
fn key(x: Option<f64>) -> f64 {
    x.filter(|v| v.is_finite()).unwrap_or(f64::INFINITY)
}

/// The restart a learner outputs (its position in `outcomes`), or `None` when it outputs
/// none (`min_norm` with no restart that fits, or no restarts). `majority` has no single
/// output: `None`.
pub fn select(kind: LearnerKind, outcomes: &[RestartOutcome]) -> Option<usize> {
    let order = |a: &&RestartOutcome, b: &&RestartOutcome| {
        let (na, nb) = (key(a.norm_bound), key(b.norm_bound));
        let (la, lb) = (key(Some(a.train_loss)), key(Some(b.train_loss)));
        match kind {
            LearnerKind::BestOfK => {
                // Higher validation accuracy first: compare the negatives.
                let (va, vb) = (key(a.validation_accuracy.map(|v| -v)), key(b.validation_accuracy.map(|v| -v)));
                va.total_cmp(&vb).then(la.total_cmp(&lb)).then(na.total_cmp(&nb)).then(a.restart.cmp(&b.restart))
            }
            _ => na.total_cmp(&nb).then(la.total_cmp(&lb)).then(a.restart.cmp(&b.restart)),
        }
    };
    let best = match kind {
        LearnerKind::Majority => return None,
        LearnerKind::BestOfK => outcomes.iter().min_by(order),
        LearnerKind::MinNorm => outcomes.iter().filter(|o| o.train_accuracy >= 1.0).min_by(order),
    }?;
    outcomes.iter().position(|o| std::ptr::eq(o, best))
}

/// Whether an instance succeeds: its output reaches `target` test accuracy.
pub fn instance_succeeds(kind: LearnerKind, outcomes: &[RestartOutcome], target: f64) -> bool {
    select(kind, outcomes).is_some_and(|i| outcomes[i].test_accuracy >= target)
}

/// m* of a learner: the smallest m at which a strict majority of its instances succeed.
/// `instances[m]` lists, per instance at that m, its restarts' outcomes.
pub fn m_star(kind: LearnerKind, instances: &std::collections::BTreeMap<usize, Vec<Vec<RestartOutcome>>>, target: f64) -> Option<usize> {
    instances.iter().find(|(_, inst)| !inst.is_empty() && inst.iter().filter(|o| instance_succeeds(kind, o, target)).count() > inst.len() / 2).map(|(&m, _)| m)
}
