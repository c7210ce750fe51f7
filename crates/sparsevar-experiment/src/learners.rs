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
//! A learner sees only its m samples, so its restarts also *stop* on what they may see
//! (`sweep.stop`, [`StopRule`]): best_of_k's once validation and training accuracy reach the
//! target, min_norm's once they fit their training set, or every restart at the step
//! budget. The test set only judges the output. (Majority sweeps keep their test-set rule:
//! their definition is on the test set.)
//!
//! The rules here are pure functions over restart outcomes, so they are tested on hand-made
//! outcomes; `sweep` applies them to the rows of a sweep with `sweep.learner` set, whose
//! restarts the trainer runs with `train::Restarts`.

use serde::{Deserialize, Serialize};
use sparsevar_core::optim::OptimizerKind;

use crate::config::TrainConfig;

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

impl LearnerKind {
    /// The name as written in a config.
    pub fn name(self) -> &'static str {
        match self {
            LearnerKind::Majority => "majority",
            LearnerKind::BestOfK => "best_of_k",
            LearnerKind::MinNorm => "min_norm",
        }
    }
}

/// When a restart of a learner leaves training (`sweep.stop`); the default depends on the
/// learner ([`StopRule::default_for`]). The divergence rule applies under every rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// Validation accuracy and training accuracy both reach train.target_accuracy
    /// (best_of_k's default).
    Validation,
    /// Training accuracy 1.0: the restart interpolates its training set (min_norm's default).
    Fit,
    /// No early stop: every restart trains to the step budget.
    Budget,
}

impl StopRule {
    /// The name as written in a config.
    pub fn name(self) -> &'static str {
        match self {
            StopRule::Validation => "validation",
            StopRule::Fit => "fit",
            StopRule::Budget => "budget",
        }
    }

    /// The rule of a learner's spec: `sweep.stop`, else the learner's default.
    pub fn of(spec: &LearnerSpec) -> Option<StopRule> {
        if spec.kind == LearnerKind::Majority { None } else { spec.stop.or(StopRule::default_for(spec.kind)) }
    }

    /// The rule a learner uses unless `sweep.stop` says otherwise (`None` for majority, whose
    /// members stop on the test set).
    pub fn default_for(kind: LearnerKind) -> Option<StopRule> {
        match kind {
            LearnerKind::Majority => None,
            LearnerKind::BestOfK => Some(StopRule::Validation),
            LearnerKind::MinNorm => Some(StopRule::Fit),
        }
    }

    /// Whether a restart whose accuracy on its training samples is `train_accuracy` and on
    /// its validation split `validation_accuracy` stops here. Never looks at the test set.
    pub fn stops(self, train_accuracy: f64, validation_accuracy: Option<f64>, target: f64) -> bool {
        match self {
            StopRule::Validation => validation_accuracy.is_some_and(|v| v >= target) && train_accuracy >= target,
            StopRule::Fit => train_accuracy >= 1.0,
            StopRule::Budget => false,
        }
    }
}

/// Why a member left training: the `stopped` column of runs.csv.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// Reached the target on its test set (majority's rule).
    Test,
    /// Reached the target on its validation split and its training samples.
    Validation,
    /// Fitted its training set.
    Fit,
    /// Trained to the step budget.
    Budget,
    /// Its loss blew up (see `train::DIVERGENCE_FACTOR`).
    Diverged,
    /// Another restart of its instance stopped on validation, which decided the instance.
    Decided,
}

impl Stopped {
    /// The reason of a stop by `rule` (`None`: the test-set rule).
    pub fn by(rule: Option<StopRule>) -> Stopped {
        match rule {
            None => Stopped::Test,
            Some(StopRule::Validation) => Stopped::Validation,
            Some(StopRule::Fit) => Stopped::Fit,
            Some(StopRule::Budget) => Stopped::Budget,
        }
    }
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

/// One entry of `sweep.recipes`: optimizer settings that replace those of `train:` for the
/// restarts that use it (a key left out keeps `train:`'s value). Restart j of an instance
/// uses recipe j mod (number of recipes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Peak learning rate (train.lr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Weight decay (train.weight_decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Adam's first-moment decay (train.beta1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    /// Adam's second-moment decay (train.beta2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f64>,
    /// Adam's epsilon (train.eps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// SGD momentum (train.momentum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Linear warmup steps (train.warmup_steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
}

impl Recipe {
    /// `train` with this recipe's settings in place of its own.
    pub fn apply(&self, train: &TrainConfig) -> TrainConfig {
        let mut t = train.clone();
        t.lr = self.lr.unwrap_or(t.lr);
        t.weight_decay = self.weight_decay.or(t.weight_decay);
        t.beta1 = self.beta1.unwrap_or(t.beta1);
        t.beta2 = self.beta2.unwrap_or(t.beta2);
        t.eps = self.eps.unwrap_or(t.eps);
        t.momentum = self.momentum.unwrap_or(t.momentum);
        t.warmup_steps = self.warmup_steps.unwrap_or(t.warmup_steps);
        t
    }

    /// Check recipe `i` against `train` (for its optimizer); the message names
    /// `sweep.recipes[i].<key>`.
    pub fn check(&self, i: usize, train: &TrainConfig) -> Result<(), String> {
        let key = |k: &str| format!("sweep.recipes[{i}].{k}");
        if let Some(lr) = self.lr
            && !(lr > 0.0 && lr.is_finite())
        {
            return Err(format!("{} = {lr} must be a positive number, e.g. 0.001", key("lr")));
        }
        if let Some(w) = self.weight_decay {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("{} = {w} must be a number at least 0", key("weight_decay")));
            }
            if train.optimizer == OptimizerKind::Adam && w != 0.0 {
                return Err(format!("{} = {w} needs train.optimizer: adamw (decoupled) or sgd; plain adam has none", key("weight_decay")));
            }
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2), ("momentum", self.momentum)] {
            if let Some(v) = v
                && !(0.0..1.0).contains(&v)
            {
                return Err(format!("{} = {v} must be in [0, 1)", key(name)));
            }
        }
        if let Some(e) = self.eps
            && !(e > 0.0 && e.is_finite())
        {
            return Err(format!("{} = {e} must be a positive number, e.g. 1e-8", key("eps")));
        }
        Ok(())
    }

    /// A short description, e.g. `lr 0.001, weight_decay 1` (`train:` as it is when empty).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        };
        put("lr", self.lr.map(|x| x.to_string()));
        put("weight_decay", self.weight_decay.map(|x| x.to_string()));
        put("beta1", self.beta1.map(|x| x.to_string()));
        put("beta2", self.beta2.map(|x| x.to_string()));
        put("eps", self.eps.map(|x| x.to_string()));
        put("momentum", self.momentum.map(|x| x.to_string()));
        put("warmup_steps", self.warmup_steps.map(|x| x.to_string()));
        if parts.is_empty() { "train: as given".into() } else { parts.join(", ") }
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
    /// `sweep.stop` as written (`None`: the learner's default, [`StopRule::default_for`]).
    pub stop: Option<StopRule>,
}

impl LearnerSpec {
    /// Check the settings for training sets of the sizes `m_values`; the message names the
    /// key and the fix.
    pub fn check(&self, m_values: &[usize]) -> Result<(), String> {
        if self.kind == LearnerKind::Majority {
            if let Some(rule) = self.stop {
                return Err(format!(
                    "sweep.stop = {} belongs to a learner: a majority sweep's members stop on the test set; set sweep.learner: best_of_k or min_norm (or remove sweep.stop)",
                    rule.name()
                ));
            }
            return Ok(());
        }
        if self.stop == Some(StopRule::Validation) && self.kind != LearnerKind::BestOfK {
            return Err("sweep.stop = validation needs a validation split, which only best_of_k holds out: use fit or budget".into());
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
    /// Why it left training (`None`: not known, as in rows written before it was recorded).
    pub stopped: Option<Stopped>,
    /// The step it left training at.
    pub step: Option<usize>,
}

/// NaN sorts last whatever the direction: a restart with an unknown value never wins.
fn key(x: Option<f64>) -> f64 {
    x.filter(|v| v.is_finite()).unwrap_or(f64::INFINITY)
}

/// The restart a learner outputs (its position in `outcomes`), or `None` when it outputs
/// none (`min_norm` with no restart that fits, or no restarts). `majority` has no single
/// output: `None`.
///
/// best_of_k outputs the *first restart to validate*: among restarts that stopped on
/// validation, the one that stopped at the earliest step (several at that step: the best
/// validation accuracy, then the lower training loss, the smaller norm bound, the lower
/// index). Where none validated, the restart with the best validation accuracy in its final
/// state (same ties). So the output is known as soon as one restart validates, and the
/// instance's other restarts may stop there without changing it.
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
        LearnerKind::BestOfK => {
            let first = outcomes.iter().filter(|o| o.stopped == Some(Stopped::Validation)).filter_map(|o| o.step).min();
            match first {
                Some(s) => outcomes.iter().filter(|o| o.stopped == Some(Stopped::Validation) && o.step == Some(s)).min_by(order),
                None => outcomes.iter().min_by(order),
            }
        }
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
