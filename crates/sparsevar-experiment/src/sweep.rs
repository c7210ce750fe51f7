//! Sample-complexity sweeps: for each T, find the smallest training-set size m*(T) that a
//! model needs to learn the task, and fit how m* grows with T.
//!
//! All (m, seed) members of one T and one model train as one ensemble (chunked to
//! `max_ensemble`), so a sweep costs about one training run per T and model. A seed uses
//! the same initialisation, S and batch stream at every m, and its training sets are nested
//! (the first m samples of one stream), so success is close to monotone in m.
//! Each ensemble is a work unit with its own result file (see [`crate::units`]), so many
//! processes can share a sweep; runs.csv and summary.json are merged from them, and
//! `--resume` runs the units that have no result.
//!
//! A member whose (plugin) task faults is not a failure to learn: it is written with the
//! fault in its `faulted` column, the rest of its ensemble is trained again without it
//! (members are independent, so their numbers do not change), it counts neither for nor
//! against m*, and the summary lists it. A fault that belongs to no one member stops the
//! sweep with the error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use sparsevar_core::backend::Backend;
use sparsevar_core::model::ModelSpec;
use sparsevar_core::registry::Registry;
use sparsevar_core::rng::{Pcg32, streams};
use sparsevar_core::task::{Dataset, TaskSpec};

use crate::baselines::{SubsetSearch, gf2_parity, log2_binomial, subset_search_parity};
use crate::budget::{Knob, MAX_SWEEP_RUNS};
use crate::checkpoint::{read_checkpoint_file, write_checkpoint_file};
use crate::config::{ConfigError, TrainConfig, apply_override};
use crate::fits::{ScalingFit, fit_scaling, fit_scaling_of, wilson};
use crate::learners::{LearnerKind, LearnerSpec, Recipe, RestartOutcome, StopRule, Stopped, Validation, select};
use crate::results::{Provenance, ResultsError, file_in, holds_files, io, nan_if_null, read_csv, read_json};
use crate::train::{EnsembleResult, RunSpec, TrainError, Trainer};
use crate::units::{Held, collect, lock_folder, work_claim, write_plan, write_runs};
use crate::weights::{SaveWeights, Snapshot, WEIGHTS_DIR};
use crate::workflow::{Event, Observer, RunError};

/// The m grid: explicit values or a geometric progression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum MGrid {
    List(Vec<usize>),
    Geometric { from: usize, to: usize, factor: f64 },
}

impl MGrid {
    pub fn values(&self) -> Vec<usize> {
        match self {
            MGrid::List(v) => {
                let mut v = v.clone();
                v.sort();
                v.dedup();
                v
            }
            MGrid::Geometric { from, to, factor } => {
                let mut v = Vec::new();
                if !(*factor > 1.0 && factor.is_finite()) || *from == 0 {
                    // Not a progression (validation says why); never loop forever on it.
                    return v;
                }
                let mut x = *from as f64;
                while x.round() as usize <= *to {
                    let m = x.round() as usize;
                    if v.last() != Some(&m) {
                        v.push(m);
                    }
                    x *= factor;
                }
                v
            }
        }
    }
}

fn default_grid() -> MGrid {
    MGrid::Geometric { from: 16, to: 4096, factor: 2.0 }
}
fn default_sweep_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}
fn default_max_ensemble() -> usize {
    64
}
fn default_cap() -> f64 {
    2e7
}

/// The `sweep:` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Input lengths.
    #[serde(rename = "T")]
    pub t: Vec<usize>,
    /// Training-set sizes (refused with train.online: true, which has no training set).
    #[serde(default = "default_grid")]
    pub m: MGrid,
    /// Seeds per cell; seed k uses the same S, init and batch stream at every m.
    #[serde(default = "default_sweep_seeds")]
    pub seeds: Vec<u64>,
    /// A cell succeeds when at least this fraction of its seeds learn (default: a strict
    /// majority).
    #[serde(default)]
    pub success_fraction: Option<f64>,
    /// Largest ensemble trained at once (memory bound).
    #[serde(default = "default_max_ensemble")]
    pub max_ensemble: usize,
    /// Bisection steps between the last failing and the first successful m.
    #[serde(default)]
    pub refine: usize,
    /// Non-neural baselines to run (sparse parity only): gf2, subset_search.
    #[serde(default)]
    pub baselines: Vec<String>,
    /// Subset search is skipped where C(T, s) exceeds this.
    #[serde(default = "default_cap")]
    pub subset_search_cap: f64,
    /// Weights files of the trained members (train.save_weights is for `train` only):
    /// none (the default), final, learned or both, into
    /// `weights/<model>/T<T>-m<m>-seed-<n>[-restart-<j>][.learned].safetensors` (the
    /// restart index for a learner's restarts).
    #[serde(default = "no_weights")]
    pub weights: SaveWeights,
    /// Step budgets at which to report m*, strictly increasing, each a multiple of
    /// train.eval_every (e.g. [10000, 40000, 160000]). The sweep trains once, to the last
    /// budget (which replaces train.max_steps); a member counts as learned within budget b
    /// when it learned by step b. With a learner, each restart's state within b (at the
    /// evaluation at b, or where it stopped if earlier) is a row of runs.csv with its
    /// `budget`, and every learner of the point's list is read at each budget. Each point
    /// (and learner) then says whether m* was stable under the last doubling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<usize>,
    /// How the restarts of one training set become one hypothesis: majority (the default:
    /// a cell succeeds when most seeds learn), best_of_k or min_norm (see the book's "Is it
    /// log T?"). With best_of_k or min_norm each seed is an instance: it draws its m samples
    /// and trains `k` restarts on them.
    #[serde(default, skip_serializing_if = "is_majority")]
    pub learner: LearnerKind,
    /// Restarts per instance (best_of_k, min_norm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// best_of_k: samples held out of m for validation, a share in (0, 1) or a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// When a learner's restart stops training, on what the learner may see: validation
    /// (validation and training accuracy reach train.target_accuracy; best_of_k's default),
    /// fit (training accuracy 1.0; min_norm's default) or budget (every restart trains to
    /// the step budget). Its row's `learned` is then whether its test accuracy reaches the
    /// target in that state. Majority sweeps stop on the test set and take no `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopRule>,
    /// best_of_k, min_norm: optimizer recipes the restarts are spread over, each a mapping
    /// of `train:` keys it replaces (lr, weight_decay, beta1, beta2, eps, momentum,
    /// warmup_steps), e.g. [{ lr: 0.0003, weight_decay: 0.1 }, { lr: 0.001, weight_decay: 1.0 }].
    /// Restart j of an instance uses recipe j mod n (n recipes; k must be a multiple of n)
    /// with its usual initialisation seed and the instance's data, so the learner's
    /// selection tunes the recipe per instance. runs.csv's `recipe` column and the summary's
    /// `choices` say which recipe each instance chose. Restarts of different recipes train
    /// in separate ensembles: a decided instance (stop: validation) stops early only the
    /// restarts of the recipe that decided it (the output is the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipes: Option<Vec<Recipe>>,
    /// stop: validation or fit: a restart stops only once its rule has held at this many
    /// consecutive evaluations (default 1: at the first), so that a small validation split
    /// that reaches the target while the model is still improving does not stop it there.
    /// A decided instance is decided where its restart actually stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
}

fn is_majority(l: &LearnerKind) -> bool {
    *l == LearnerKind::Majority
}

fn no_weights() -> SaveWeights {
    SaveWeights::None
}

/// A sweep config: a task (its T comes from the sweep), named models, training, the grid.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepConfig {
    pub task: TaskSpec,
    /// Models by name, in the order given.
    pub models: Vec<(String, ModelSpec)>,
    pub train: TrainConfig,
    pub sweep: SweepSection,
    pub backend: String,
    pub threads: Option<usize>,
    /// `slurm:` — sbatch options for `--executor slurm` (`partition: gpu` becomes
    /// `#SBATCH --partition=gpu`; `exclusive: true` a bare flag), in file order.
    pub slurm: Vec<(String, Option<String>)>,
}

/// The raw file shape (models as a YAML mapping, parsed in order afterwards).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    task: Value,
    models: Value,
    #[serde(default)]
    train: TrainConfig,
    sweep: SweepSection,
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    slurm: Option<Value>,
}

/// `slurm:` as (option, value) pairs; the Slurm executor checks the names.
fn slurm_options(v: Option<Value>) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Mapping(m) = v else {
        return Err(ConfigError::Invalid("slurm must be a mapping of sbatch options, e.g. slurm: { partition: gpu, time: \"01:00:00\" }".into()));
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let key = k.as_str().ok_or_else(|| ConfigError::Invalid("slurm: every option name must be a string".into()))?.to_string();
        let value = match v {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(true) => None,
            Value::Bool(false) => continue,
            _ => return Err(ConfigError::Invalid(format!("slurm.{key} must be a string, a number or true (a flag)"))),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn default_backend() -> String {
    "cpu".into()
}

impl SweepConfig {
    pub fn load(path: &Path, overrides: &[String], registry: &Registry) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string(), overrides, registry)
    }

    pub fn parse(text: &str, origin: &str, overrides: &[String], registry: &Registry) -> Result<Self, ConfigError> {
        let perr = |section: &str, e: serde_yaml::Error| ConfigError::Parse { path: origin.to_string(), message: format!("{section}{e}") };
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| perr("", e))?;
        if let Value::Mapping(m) = &mut value
            && let Some(Value::Mapping(task)) = m.get_mut("task")
        {
            // T comes from sweep.T; a placeholder lets the task section parse on its own.
            if !task.contains_key("T") {
                task.insert(Value::String("T".into()), Value::Number(1.into()));
            }
        }
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let from_value = |value: Value| -> Result<SweepConfig, ConfigError> {
            // Without overrides parse the text itself, so errors keep their line and column.
            let raw: RawSweep = if overrides.is_empty() {
                serde_yaml::from_str(text).map_err(|e| perr("", e))?
            } else {
                serde_yaml::from_value(value.clone()).map_err(|e| perr("", e))?
            };
            let task_value = value.get("task").cloned().unwrap_or(raw.task);
            let task: TaskSpec = serde_yaml::from_value(task_value).map_err(|e| perr("task: ", e))?;
            let Value::Mapping(models) = raw.models else {
                return Err(ConfigError::Invalid("models must be a mapping from a name to a model, e.g. models: { attention: { kind: transformer } }".into()));
            };
            let mut named = Vec::new();
            for (k, v) in models {
                let name = k.as_str().map(str::to_string).ok_or_else(|| ConfigError::Invalid("models: every name must be a string".into()))?;
                let spec: ModelSpec = serde_yaml::from_value(v).map_err(|e| perr(&format!("models.{name}: "), e))?;
                named.push((name, spec));
            }
            let slurm = slurm_options(raw.slurm)?;
            Ok(SweepConfig { task, models: named, train: raw.train, sweep: raw.sweep, backend: raw.backend, threads: raw.threads, slurm })
        };
        let cfg = if overrides.is_empty() {
            from_value(value)?
        } else {
            // The placeholder T, as above, so that only the overrides differ.
            let mut base: Value = serde_yaml::from_str(text).map_err(|e| perr("", e))?;
            if let Value::Mapping(m) = &mut base
                && let Some(Value::Mapping(task)) = m.get_mut("task")
                && !task.contains_key("T")
            {
                task.insert(Value::String("T".into()), Value::Number(1.into()));
            }
            let base = serde_yaml::to_string(&base).map_err(|e| perr("", e))?;
            from_value(value).map_err(|e| crate::config::blame_override(&base, overrides, e, &|v| from_value(v).map(drop)))?
        };
        cfg.validate(registry)?;
        Ok(cfg)
    }

    /// The learner's settings.
    pub fn learner(&self) -> LearnerSpec {
        LearnerSpec { kind: self.sweep.learner, k: self.sweep.k.unwrap_or(1), validation: self.sweep.validation, stop: self.sweep.stop }
    }

    /// (m, seed, restart) of every member trained at `m`: one per seed under `majority`,
    /// k per seed (instance) under the other learners.
    pub fn members_at(&self, m: usize) -> Vec<(usize, u64, usize)> {
        let k = if self.sweep.learner == LearnerKind::Majority { 1 } else { self.learner().k };
        self.sweep.seeds.iter().flat_map(|&s| (0..k).map(move |j| (m, s, j))).collect()
    }

    /// The training settings a sweep trains with: `train`, with the last of `sweep.budgets`
    /// (if any) as the step budget.
    pub fn train_config(&self) -> TrainConfig {
        let mut t = self.train.clone();
        if let Some(&last) = self.sweep.budgets.last() {
            t.max_steps = last;
        }
        t
    }

    /// The recipe (index into `sweep.recipes`) of a learner's restart `j`: j mod the number
    /// of recipes; `None` without recipes or without a restart index.
    pub fn recipe_of(&self, restart: Option<usize>) -> Option<usize> {
        let n = self.sweep.recipes.as_ref().map_or(0, Vec::len);
        restart.filter(|_| n > 0).map(|j| j % n)
    }

    /// [`SweepConfig::train_config`] with recipe `recipe` (if any) in force.
    pub fn train_config_for(&self, recipe: Option<usize>) -> TrainConfig {
        let t = self.train_config();
        match (recipe, &self.sweep.recipes) {
            (Some(r), Some(list)) => list[r].apply(&t),
            _ => t,
        }
    }

    pub fn validate(&self, registry: &Registry) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.sweep;
        if s.learner != LearnerKind::Majority {
            if self.train.online {
                return bad(format!("sweep.learner = {:?} needs training sets: set train.online: false", s.learner));
            }
            if s.k.is_none() {
                return bad("sweep.k is missing: how many restarts each instance trains, e.g. k: 8".into());
            }
        } else if s.k.is_some() || s.validation.is_some() {
            return bad("sweep.k and sweep.validation belong to a learner: set sweep.learner: best_of_k or min_norm (or remove them)".into());
        } else if s.stop.is_some() {
            self.learner().check(&[]).map_err(ConfigError::Invalid)?;
        }
        self.check_recipes().map_err(ConfigError::Invalid)?;
        let b = &s.budgets;
        if b.contains(&0) || b.windows(2).any(|w| w[1] <= w[0]) {
            return bad(format!("sweep.budgets = {b:?} must be step counts that increase strictly, e.g. [10000, 40000, 160000]"));
        }
        if let Some(x) = b.iter().find(|&&x| self.train.eval_every > 0 && !x.is_multiple_of(self.train.eval_every)) {
            return bad(format!(
                "sweep.budgets: {x} is not a multiple of train.eval_every = {}: a budget must fall on an evaluation, so that learning by then is seen there",
                self.train.eval_every
            ));
        }
        if self.train.online {
            // Fresh samples every step: there is no training set, so nothing about one applies.
            // (An m equal to the default is what an unset m reads as, e.g. in config.yaml.)
            if s.m != default_grid() {
                return bad("sweep.m is set, but train.online: true draws fresh samples every step (no training set to size): remove sweep.m".into());
            }
            if s.refine > 0 {
                return bad("sweep.refine bisects the m grid, but train.online: true has none: remove sweep.refine".into());
            }
            if !s.budgets.is_empty() {
                return bad(
                    "sweep.budgets reports m* per budget, but train.online: true has no m: remove sweep.budgets (train.max_steps is the one budget)".into()
                );
            }
            if let Some(b) = s.baselines.first() {
                return bad(format!("sweep.baselines: `{b}` needs training sets, but train.online: true has none: remove sweep.baselines"));
            }
        }
        if s.t.is_empty() {
            return bad("sweep.T is empty: list the input lengths, e.g. T: [8, 16, 32]".into());
        }
        if s.seeds.is_empty() {
            return bad("sweep.seeds is empty".into());
        }
        if self.models.is_empty() {
            return bad("models is empty: name at least one model".into());
        }
        if !self.train.online {
            match &s.m {
                MGrid::Geometric { factor, .. } if !(*factor > 1.0 && factor.is_finite()) => {
                    return bad(format!("sweep.m.factor = {factor} must be a number above 1, e.g. 2"));
                }
                MGrid::Geometric { from: 0, .. } => return bad("sweep.m.from must be at least 1".into()),
                MGrid::Geometric { from, to, .. } if to < from => {
                    return bad(format!("sweep.m: to = {to} is below from = {from}"));
                }
                MGrid::List(v) if v.contains(&0) => return bad("sweep.m: a training set needs at least 1 sample, but the list holds 0".into()),
                MGrid::List(v) if v.is_empty() => return bad("sweep.m is empty: list training-set sizes, e.g. m: [64, 128, 256]".into()),
                _ => {}
            }
        }
        if let Some(p) = s.success_fraction
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("sweep.success_fraction = {p} must be in (0, 1]"));
        }
        if s.max_ensemble == 0 {
            return bad("sweep.max_ensemble must be at least 1".into());
        }
        for b in &s.baselines {
            if b != "gf2" && b != "subset_search" {
                return bad(format!("sweep.baselines: unknown baseline `{b}`; known: gf2, subset_search"));
            }
            if self.task.kind != "sparse_parity" {
                return bad(format!("sweep.baselines: `{b}` learns sparse parities only, but task.kind is {}", self.task.kind));
            }
        }
        // The grid is counted before it is listed: a progression with a factor near 1
        // would otherwise list billions of sizes.
        let m_count: u128 = match (&s.m, self.train.online) {
            (_, true) => 1,
            (MGrid::List(v), _) => v.len() as u128,
            (MGrid::Geometric { from, to, factor }, _) => ((*to as f64 / *from as f64).ln() / factor.ln()).floor() as u128 + 1,
        };
        let restarts = if s.learner == LearnerKind::Majority { 1 } else { self.learner().k.max(1) as u128 };
        let runs = s.t.len() as u128 * m_count * s.seeds.len() as u128 * restarts * self.models.len() as u128;
        if runs > MAX_SWEEP_RUNS {
            return bad(format!(
                "the sweep grid is too large: sweep.T ({}) × sweep.m ({m_count}) × sweep.seeds ({}) × models ({}) = {runs} training runs, more than the {MAX_SWEEP_RUNS} a sweep may hold; use fewer T, m or seeds",
                s.t.len(),
                s.seeds.len(),
                self.models.len()
            ));
        }
        // After the grid is counted: listing a huge grid would take forever.
        if s.learner != LearnerKind::Majority {
            self.learner().check(&s.m.values()).map_err(ConfigError::Invalid)?;
        }
        // The largest ensemble the sweep trains: up to max_ensemble (m, seed) members, each
        // sized here for the largest m.
        let m_values = if self.train.online { vec![self.train.samples] } else { s.m.values() };
        let largest_m = m_values.iter().copied().max().unwrap_or(1);
        let members = (m_values.len() * s.seeds.len() * restarts as usize).min(s.max_ensemble);
        // Each (T, model) must make a valid experiment.
        for &t in &s.t {
            for (name, model) in &self.models {
                let names = |k: Knob| -> (String, String) {
                    match k {
                        Knob::T => ("sweep.T".into(), t.to_string()),
                        Knob::Samples => ("sweep.m".into(), format!("{largest_m} (the largest m)")),
                        Knob::TestSamples => ("train.test_samples".into(), self.train.test_samples.to_string()),
                        Knob::Batch => ("train.batch".into(), self.train.batch.to_string()),
                        Knob::Members => (
                            "sweep.max_ensemble".into(),
                            format!("{} (the sweep trains {members} members at once: sweep.seeds × sweep.m, at most sweep.max_ensemble)", s.max_ensemble),
                        ),
                        k => {
                            let (key, value) = crate::config::model_knob(model, k);
                            (format!("models.{name}.{}", key.trim_start_matches("model.")), value)
                        }
                    }
                };
                let exp = crate::config::ExperimentConfig {
                    task: TaskSpec { t, ..self.task.clone() },
                    model: model.clone(),
                    train: self.train_config(),
                    seeds: s.seeds.clone(),
                    backend: self.backend.clone(),
                    threads: self.threads,
                };
                exp.validate_sized(registry, members, largest_m, &names).map_err(|e| ConfigError::Invalid(format!("T = {t}, models.{name}: {e}")))?;
            }
        }
        Ok(())
    }

    /// `sweep.recipes` and `sweep.patience`, before any training.
    fn check_recipes(&self) -> Result<(), String> {
        let s = &self.sweep;
        if let Some(list) = &s.recipes {
            if s.learner == LearnerKind::Majority {
                return Err(
                    "sweep.recipes spreads a learner's restarts over optimizer settings, but a majority sweep has no restarts: set sweep.learner: best_of_k or min_norm (or remove sweep.recipes)".into()
                );
            }
            let n = list.len();
            if n == 0 {
                return Err("sweep.recipes is empty: list at least one recipe, e.g. recipes: [{ lr: 0.001, weight_decay: 1.0 }] (or remove it)".into());
            }
            let k = s.k.unwrap_or(1);
            if !k.is_multiple_of(n) {
                return Err(format!(
                    "sweep.k = {k} is not a multiple of the {n} sweep.recipes: restart j uses recipe j mod {n}, so each recipe needs as many restarts; use k: {}",
                    (k / n).max(1) * n
                ));
            }
            for (i, r) in list.iter().enumerate() {
                r.check(i, &self.train)?;
            }
        }
        if let Some(p) = s.patience {
            let rule = StopRule::of(&self.learner());
            if p == 0 {
                return Err("sweep.patience = 0: a restart stops once its rule has held at this many consecutive evaluations, at least 1".into());
            }
            if !matches!(rule, Some(StopRule::Validation | StopRule::Fit)) {
                return Err(format!(
                    "sweep.patience applies to a learner's stop: validation or fit, but this sweep stops {}: remove sweep.patience",
                    rule.map_or("on the test set (majority)", |r| if r == StopRule::Budget { "at the budget" } else { r.name() })
                ));
            }
        }
        Ok(())
    }

    /// Seeds that must learn for a cell to count as a success.
    pub fn needed(&self) -> usize {
        self.needed_of(self.sweep.seeds.len())
    }

    /// Seeds that must learn for a cell of `k` seeds (those that did not fault) to count as
    /// a success.
    pub fn needed_of(&self, k: usize) -> usize {
        match self.sweep.success_fraction {
            Some(p) => ((p * k as f64) - 1e-9).ceil().max(1.0) as usize,
            None => k / 2 + 1,
        }
    }

    pub fn to_yaml(&self) -> String {
        let mut map = serde_yaml::Mapping::new();
        map.insert("task".into(), serde_yaml::to_value(&self.task).expect("yaml"));
        let mut models = serde_yaml::Mapping::new();
        for (n, m) in &self.models {
            models.insert(n.clone().into(), serde_yaml::to_value(m).expect("yaml"));
        }
        map.insert("models".into(), Value::Mapping(models));
        map.insert("train".into(), serde_yaml::to_value(&self.train).expect("yaml"));
        map.insert("sweep".into(), serde_yaml::to_value(&self.sweep).expect("yaml"));
        map.insert("backend".into(), self.backend.clone().into());
        if let Some(t) = self.threads {
            map.insert("threads".into(), (t as u64).into());
        }
        serde_yaml::to_string(&Value::Mapping(map)).expect("yaml")
    }
}

/// One member's outcome: a row of runs.csv.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub model: String,
    pub variant: String,
    #[serde(rename = "T")]
    pub t: usize,
    /// Training-set size (0 in online mode).
    pub m: usize,
    pub seed: u64,
    pub learned: bool,
    pub diverged: bool,
    pub step: Option<usize>,
    pub steps_trained: usize,
    pub test_accuracy: f64,
    #[serde(rename = "mass_on_S")]
    pub mass_on_s: Option<f64>,
    /// First evaluation at which the best head put more than half its CLS attention on S.
    pub variable_step: Option<usize>,
    /// Wall time of the ensemble this member trained in.
    pub seconds: f64,
    /// The fault that stopped this member (plugin file, call, message); such a member is
    /// excluded from m*. `None` for a member that trained normally (and in files written
    /// before the column existed).
    #[serde(default)]
    pub faulted: Option<String>,
    /// The member's capacity-bound value when it finished (`CapacityNorms::bound`:
    /// ‖[E_tok; E_pos]‖_F · max_h ‖A_Q^h A_K^hᵀ‖_F · ‖[W_V; b_V]‖_F · ‖[W_O; b_O]‖_F);
    /// `None` for a model without attention, a faulted member, and in older files.
    #[serde(default)]
    pub norm_bound: Option<f64>,
    /// A learner's restart index within its instance (the seed); `None` under `majority`.
    #[serde(default)]
    pub restart: Option<usize>,
    /// A learner's restart: accuracy on its training samples (the m minus validation).
    #[serde(default)]
    pub train_accuracy: Option<f64>,
    /// best_of_k: accuracy on the held-out validation samples.
    #[serde(default)]
    pub validation_accuracy: Option<f64>,
    /// A learner's restart: mean loss on its training samples.
    #[serde(default)]
    pub train_set_loss: Option<f64>,
    /// Why the member left training: test (reached the target on its test set, majority's
    /// rule), validation, fit (a learner's stop rules, `sweep.stop`), budget, diverged, or
    /// decided (another restart of its instance validated first). Under a learner, `step` is
    /// where it stopped and `learned` whether its test accuracy reached the target there.
    /// `None` in files written before the column existed.
    #[serde(default)]
    pub stopped: Option<Stopped>,
    /// A learner's sweep with `sweep.budgets`: the budget this row describes the restart at
    /// (its state at the last evaluation within the budget, or where it stopped if that was
    /// earlier); each restart has one row per budget. `None` otherwise.
    #[serde(default)]
    pub budget: Option<usize>,
    /// With `sweep.recipes`: the recipe (index into the list) a learner's restart trained
    /// with. `None` otherwise.
    #[serde(default)]
    pub recipe: Option<usize>,
}

impl RunRow {
    pub(crate) fn key(&self) -> RowKey {
        (self.model.clone(), self.t, self.m, self.seed, self.restart, self.budget)
    }
}

/// What identifies a member in runs.csv: model, T, m, seed and (for a learner) restart and
/// budget.
pub(crate) type RowKey = (String, usize, usize, u64, Option<usize>, Option<usize>);

/// Success statistics of one (model, T, m) cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub m: usize,
    pub learned: usize,
    pub seeds: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub rate: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub wilson_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub wilson_high: f64,
    pub success: bool,
    /// Median step at which the learned seeds learned.
    pub median_step: Option<f64>,
}

/// Everything found for one model at one T.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PointSummary {
    pub t: usize,
    pub cells: Vec<Cell>,
    /// Smallest successful m (None if no m in the grid succeeded).
    pub m_star: Option<usize>,
    /// Largest failing m below m* (the bracket refinement works in).
    pub m_below: Option<usize>,
    /// Online mode: median steps to learn over all seeds, a seed that did not learn counting
    /// as slower than any that did; `None` unless a strict majority learned (a median over
    /// the learned seeds alone would flatter a T where most seeds fail).
    #[serde(default)]
    pub median_steps_to_learn: Option<f64>,
    /// Online mode: median first step at which a variable was created (attention mass on S
    /// above 0.5), over seeds where it happened.
    #[serde(default)]
    pub median_variable_step: Option<f64>,
    /// m* within each of `sweep.budgets`, in order (empty without budgets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetPoint>,
    /// With two or more budgets: whether the last one left m* where the one before had it
    /// (a missing m* at both counts as stable). `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<bool>,
    /// A learner's sweep: m* of each learner its rows allow (majority over restart 0, the
    /// sweep's own learner, min_norm), from the same restarts, which stopped by the sweep's
    /// stop rule: only under `sweep.stop: budget` is each the m* of that learner as it would
    /// train them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<LearnerPoint>,
    /// Online (i.i.d.) mode: each seed's learning step and the samples it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlinePoint>,
    /// With `sweep.recipes`: per learner that selects (the sweep's best_of_k, min_norm),
    /// cell and instance, the restart it output and that restart's recipe (at the last
    /// budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<RecipeChoice>,
    /// With `sweep.recipes`: per learner and recipe, how many of this T's instances (over
    /// every m) output a restart of that recipe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipe_counts: Vec<RecipeCount>,
}

/// Which restart (and recipe) one learner instance output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecipeChoice {
    pub learner: LearnerKind,
    pub m: usize,
    pub seed: u64,
    /// `None`: the learner output nothing (min_norm with no restart that fits).
    pub restart: Option<usize>,
    pub recipe: Option<usize>,
    /// Whether the output reached the target on the test set.
    pub learned: bool,
}

/// How often one learner chose one recipe at one T.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecipeCount {
    pub learner: LearnerKind,
    pub recipe: usize,
    /// Instances whose output trained with this recipe.
    pub chosen: usize,
    /// Of those, the ones whose output learned.
    pub learned: usize,
}

/// Steps to learn at one T in the i.i.d. regime (`train.online: true`): every step draws
/// `train.batch` fresh samples, so samples seen = steps × batch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OnlinePoint {
    /// Seeds that reached the target accuracy within `max_steps` (faulted seeds left out).
    pub learned: usize,
    /// Seeds trained (faulted seeds left out).
    pub seeds: usize,
    /// Median samples seen before learning (median steps × batch; same rule as
    /// `median_steps_to_learn`).
    pub median_samples_seen: Option<f64>,
    /// Per seed, in seed order.
    pub per_seed: Vec<SeedSteps>,
}

/// One seed's outcome in the i.i.d. regime.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeedSteps {
    pub seed: u64,
    /// The evaluation step at which it reached the target; `None`: not learned within
    /// `max_steps`.
    pub step: Option<usize>,
    /// step × batch, where it learned.
    pub samples_seen: Option<usize>,
    /// Steps it trained (the budget where it did not learn or diverged).
    pub steps_trained: usize,
}

/// m* of one learner at one T.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LearnerPoint {
    pub learner: LearnerKind,
    pub m_star: Option<usize>,
    /// With two or more `sweep.budgets`: whether the last budget left this learner's m*
    /// where the one before had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<bool>,
}

/// m* within one step budget.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BudgetPoint {
    pub budget: usize,
    pub m_star: Option<usize>,
    /// A learner's sweep: m* of each learner of the point's `learners` within this budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<LearnerPoint>,
}

/// Per-T results of the non-neural baselines.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BaselinePoint {
    pub t: usize,
    /// log2 C(T, s): the information-theoretic floor.
    #[serde(deserialize_with = "nan_if_null")]
    pub info_floor: f64,
    pub gf2_m_star: Option<usize>,
    pub subset_search_m_star: Option<usize>,
    #[serde(default)]
    pub subset_search_skipped: bool,
}

/// A model's whole scaling curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    pub model: String,
    pub points: Vec<PointSummary>,
    pub fit: Option<ScalingFit>,
}

/// A member that faulted, as listed in the summary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultedRun {
    pub model: String,
    #[serde(rename = "T")]
    pub t: usize,
    pub m: usize,
    pub seed: u64,
    /// The fault: plugin file, call and message.
    pub fault: String,
}

/// What a sweep found: the `summary` of its summary.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepSummary {
    pub s: usize,
    pub task: String,
    pub success_rule: String,
    pub max_steps: usize,
    pub models: Vec<ModelSummary>,
    #[serde(default)]
    pub baselines: Vec<BaselinePoint>,
    /// Members whose task faulted: excluded from m*, neither successes nor failures.
    #[serde(default)]
    pub faulted: Vec<FaultedRun>,
    #[serde(default, deserialize_with = "nan_if_null")]
    pub seconds: f64,
}

/// A sweep's summary.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepFile {
    pub summary: SweepSummary,
    /// The process that collected it last.
    pub provenance: Provenance,
    /// The processes that collected it before, oldest first: a sweep resumed (to train the
    /// units of faulted members again, say) keeps who made the rest, binary and command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Provenance>,
    /// Sum of the units' ensemble wall times: the training time in this folder over every
    /// process and resume (`summary.seconds` is the collecting process's own wall time).
    #[serde(default, deserialize_with = "nan_if_null")]
    pub unit_seconds: f64,
    /// The builds that trained its units ([`crate::units::builds`]); more than one means
    /// its rows may differ in their last bits from one unit to another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<String>,
}

/// A sweep's summary (`path` its folder or its summary.json). Also reads a bare summary
/// (the `summary` object alone, as scripts may save it).
pub fn load_sweep_summary(path: &Path) -> Result<SweepSummary, ResultsError> {
    let p = file_in(path, "summary.json");
    let text = std::fs::read_to_string(&p).map_err(io(&p))?;
    let wrapped = serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v.get("summary").is_some());
    if wrapped { Ok(read_json::<SweepFile>(&p, "a sweep summary")?.summary) } else { read_json(&p, "a sweep summary") }
}

/// What [`run_sweep`] found: the summary (as written to summary.json) and every row of
/// runs.csv.
#[derive(Clone, Debug)]
pub struct SweepOutcome {
    pub summary: SweepSummary,
    pub runs: Vec<RunRow>,
    /// The builds that trained its units (see [`SweepFile::builds`]).
    pub builds: Vec<String>,
}

/// Open a sweep's results folder for this process: hold its `sweep.lock` (refused while
/// another live process holds it), then plan a fresh folder, or check that the one to
/// resume was planned from the same config and requeue its units with faulted members
/// ([`crate::units::faulted_units`]).
pub fn open_sweep(cfg: &SweepConfig, dir: &Path, resume: bool) -> Result<Held, RunError> {
    // A file in the way is refused here, before anything is created.
    holds_files(dir)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock = lock_folder(dir)?;
    let fresh = std::fs::read_dir(dir).map_err(io(dir))?.filter_map(Result::ok).all(|e| e.file_name() == "sweep.lock");
    if fresh {
        write_plan(cfg, dir)?;
        return Ok(lock);
    }
    if !resume {
        return Err(RunError::SweepExists(dir.to_path_buf()));
    }
    let cfg_path = dir.join("config.yaml");
    let old = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    if old != cfg.to_yaml() && !same_config_by_newer_build(&old, cfg) {
        return Err(RunError::OtherConfig(dir.to_path_buf()));
    }
    if !dir.join("plan.json").exists() {
        return Err(RunError::NoPlan(dir.to_path_buf()));
    }
    // Members that faulted get another chance: the fault may be fixed by now.
    crate::units::requeue_faulted(dir)?;
    Ok(lock)
}

/// Whether a folder's config.yaml written by an older build is `cfg` as this build reads it:
/// a key added since (at its default) is missing from the old text, which then differs
/// although the experiment is the same. Read with the built-in registry only; a config that
/// needs a plugin to read stays refused unless its text is the same.
fn same_config_by_newer_build(old: &str, cfg: &SweepConfig) -> bool {
    SweepConfig::parse(old, "config.yaml", &[], &Registry::builtin()).is_ok_and(|o| o.to_yaml() == cfg.to_yaml())
}

/// Run a sweep into `dir` in this process (`resume`: continue the one there): plan, run
/// every unit that has no result (see [`crate::units`]), collect. `make_backend` gives a
/// fresh backend per ensemble. runs.csv is rewritten after each unit. The observer sees
/// each ensemble, evaluation and refinement; when it returns false (or its stop flag is
/// set) the sweep stops with [`RunError::Interrupted`]: the ensemble in training is
/// dropped, the finished ones are in results/ for `--resume`.
pub fn run_sweep(
    cfg: &SweepConfig,
    dir: &Path,
    resume: bool,
    registry: &Registry,
    make_backend: &mut dyn FnMut() -> Result<Box<dyn Backend>, String>,
    provenance: &Provenance,
    observer: &mut dyn Observer,
) -> Result<SweepOutcome, RunError> {
    let started = Instant::now();
    // Links and `..` resolved first, so the "never overwrite" check sees the real folder.
    let dir = &crate::results::resolve_path(dir);
    let _lock = open_sweep(cfg, dir, resume)?;
    let ran = work_claim(cfg, dir, registry, make_backend, observer, &mut || write_runs(dir).map(drop))?;
    // A finished sweep resumed trains nothing: its summary keeps who made it and how long it took.
    let before: Option<SweepFile> = if ran == 0 { crate::results::read_json(&dir.join("summary.json"), "a sweep summary").ok() } else { None };
    match before {
        Some(b) => collect(cfg, dir, registry, &b.provenance, Some(b.summary.seconds)),
        None => collect(cfg, dir, registry, provenance, Some(started.elapsed().as_secs_f64())),
    }
}

/// What a unit's checkpoint is checked against: the sweep's resolved config and the
/// ensemble (model, T, members), so a checkpoint of another unit or sweep is never restored.
pub(crate) fn unit_fingerprint(cfg: &SweepConfig, name: &str, t: usize, members: &[(usize, u64, Option<usize>)]) -> String {
    let pairs: Vec<(usize, u64)> = members.iter().map(|x| (x.0, x.1)).collect();
    let restarts: Vec<usize> = members.iter().filter_map(|x| x.2).collect();
    let restarts = if restarts.is_empty() { String::new() } else { format!(", restarts {restarts:?}") };
    format!("{}\n# unit: model {name}, T {t}, members (m, seed) {pairs:?}{restarts}\n", cfg.to_yaml())
}

/// Train the ensemble of `members` (m, seed) of model `name` at `t` into rows. With
/// `checkpoint` (a file path), a checkpoint is written there every
/// `train.checkpoint_every` steps, and a checkpoint found there for this very ensemble is
/// continued, so a preempted unit loses at most those steps (the rows are the same).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_cells(
    cfg: &SweepConfig,
    dir: &Path,
    name: &str,
    model: &ModelSpec,
    t: usize,
    members: &[(usize, u64)],
    restarts: &[usize],
    registry: &Registry,
    make_backend: &mut dyn FnMut() -> Result<Box<dyn Backend>, String>,
    observer: &mut dyn Observer,
    checkpoint: Option<&Path>,
) -> Result<Vec<RunRow>, RunError> {
    let variant = match model {
        ModelSpec::Transformer(c) => c.attention.clone(),
        ModelSpec::Mlp(_) => "mlp".into(),
    };
    // Members carry their restart index (None under majority) through refits after faults.
    let mut members: Vec<(usize, u64, Option<usize>)> = members.iter().enumerate().map(|(i, &(m, s))| (m, s, restarts.get(i).copied())).collect();
    let learner = cfg.learner();
    // Restarts of different recipes train in different ensembles (the optimizer's settings
    // are the ensemble's): the plan gives a unit one recipe.
    let recipes: BTreeSet<Option<usize>> = members.iter().map(|x| cfg.recipe_of(x.2)).collect();
    if recipes.len() > 1 {
        let source = TrainError::Setup(format!("one ensemble holds restarts of the recipes {recipes:?}; a unit must hold one recipe"));
        return Err(RunError::Train { context: format!("T = {t}, model {name}"), source: Box::new(source) });
    }
    let recipe = recipes.into_iter().next().flatten();
    let mut faulted_rows = Vec::new();
    loop {
        if members.is_empty() {
            return Ok(faulted_rows);
        }
        let spec = RunSpec {
            task: TaskSpec { t, ..cfg.task.clone() },
            model: model.clone(),
            train: cfg.train_config_for(recipe),
            seeds: members.iter().map(|x| x.1).collect(),
            samples: (!cfg.train.online).then(|| members.iter().map(|x| x.0).collect()),
        };
        let mut backend = make_backend().map_err(|message| RunError::Backend { name: cfg.backend.clone(), message })?;
        let flag = observer.stop_flag();
        let mut go = true;
        let fingerprint = unit_fingerprint(cfg, name, t, &members);
        // A checkpoint that does not read, or belongs to another ensemble (members dropped
        // after a fault), is not continued: training from the start gives the same rows.
        let resume = checkpoint.and_then(|p| read_checkpoint_file(p).ok()).filter(|ck| ck.config == fingerprint);
        let every = if checkpoint.is_some() { cfg.train.checkpoint_every } else { 0 };
        // A learner's restarts share their instance's data (seed) and differ in their
        // initialisation; restart 0 uses the seed itself.
        let restarts = members.iter().any(|x| x.2.is_some()).then(|| crate::train::Restarts {
            init_seeds: members.iter().map(|x| restart_seed(x.1, x.2.unwrap_or(0))).collect(),
            validation: members.iter().map(|x| if learner.kind == LearnerKind::BestOfK { learner.validation.map_or(0, |v| v.count(x.0)) } else { 0 }).collect(),
            stop: StopRule::of(&learner),
            // An instance is its (m, seed): its restarts share them.
            // (its first member's position names it).
            instances: members.iter().map(|x| members.iter().position(|y| (y.0, y.1) == (x.0, x.1)).expect("its own")).collect(),
            patience: cfg.sweep.patience.unwrap_or(1),
        });
        let result = Trainer::with_restarts(backend.as_mut(), spec, registry, restarts).and_then(|mut trainer| {
            if let Some(f) = &flag {
                trainer.stop_on(f.clone());
            }
            if let Some(ck) = &resume {
                trainer.restore(ck)?;
            }
            let result = trainer.run_checkpointed(
                &mut |p| {
                    go = observer.event(Event::evaluated(&p));
                    go
                },
                every,
                &mut |mut ck| {
                    ck.config = fingerprint.clone();
                    Ok(write_checkpoint_file(checkpoint.expect("checkpoints only with a path"), &ck)?)
                },
            )?;
            let saved = save_weights(&mut trainer, cfg, dir, name, t, &members, &result);
            Ok((result, saved))
        });
        let result = match result {
            Ok((result, saved)) => {
                saved?;
                Ok(result)
            }
            Err(e) => Err(e),
        };
        // A stopped ensemble's members did not finish: they are not results.
        if result.is_ok() && (!go || flag.is_some_and(|f| f.load(Ordering::Relaxed))) {
            return Err(RunError::Interrupted);
        }
        match result {
            Ok(result) => {
                let mut rows = rows_of(&result, name, &variant, t, &members);
                if learner.kind != LearnerKind::Majority && !cfg.sweep.budgets.is_empty() {
                    rows = rows_per_budget(&result, rows, &cfg.sweep.budgets, cfg.train.target_accuracy);
                }
                rows.extend(faulted_rows);
                for r in &mut rows {
                    r.recipe = cfg.recipe_of(r.restart);
                }
                return Ok(rows);
            }
            // Members whose task faulted are written as faulted; the others train again
            // without them (members are independent, so their numbers are unchanged).
            Err(TrainError::MemberFaults { step, faults }) => {
                for f in &faults {
                    let (m, seed, restart) = members[f.member];
                    faulted_rows.push(RunRow {
                        model: name.to_string(),
                        variant: variant.clone(),
                        t,
                        m,
                        seed,
                        learned: false,
                        diverged: false,
                        step: None,
                        steps_trained: step,
                        test_accuracy: f64::NAN,
                        mass_on_s: None,
                        variable_step: None,
                        seconds: 0.0,
                        faulted: Some(f.error.to_string()),
                        norm_bound: None,
                        restart,
                        train_accuracy: None,
                        validation_accuracy: None,
                        train_set_loss: None,
                        stopped: None,
                        budget: None,
                        recipe: cfg.recipe_of(restart),
                    });
                }
                let gone: BTreeSet<usize> = faults.iter().map(|f| f.member).collect();
                members = members.iter().enumerate().filter(|(i, _)| !gone.contains(i)).map(|(_, x)| *x).collect();
            }
            Err(source) => return Err(RunError::Train { context: format!("T = {t}, model {name}"), source: Box::new(source) }),
        }
    }
}

/// The unit's weights files, as `sweep.weights` asks (see [`crate::weights`]):
/// `weights/<model>/T<T>-m<m>-seed-<n>[-restart-<j>][.learned].safetensors`.
fn save_weights(
    trainer: &mut Trainer<'_>,
    cfg: &SweepConfig,
    dir: &Path,
    name: &str,
    t: usize,
    members: &[(usize, u64, Option<usize>)],
    result: &EnsembleResult,
) -> Result<(), RunError> {
    let task = TaskSpec { t, ..cfg.task.clone() };
    let path = |i: usize, snapshot: Snapshot| {
        let (m, seed, restart) = members[i];
        let suffix = if snapshot == Snapshot::Learned { ".learned" } else { "" };
        // A learner's restarts share their seed: the restart index tells their files apart.
        let restart = restart.map_or(String::new(), |j| format!("-restart-{j}"));
        dir.join(WEIGHTS_DIR).join(name).join(format!("T{t}-m{m}-seed-{seed}{restart}{suffix}.safetensors"))
    };
    crate::weights::save_members(trainer, &task, result, cfg.sweep.weights, &path)
        .map_err(|source| RunError::Train { context: format!("saving the weights of T = {t}, model {name}"), source: Box::new(source) })
}

/// The initialisation seed of restart `j` of the instance with `seed` (restart 0: the seed).
pub fn restart_seed(seed: u64, j: usize) -> u64 {
    if j == 0 { seed } else { seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) }
}

fn rows_of(result: &EnsembleResult, model: &str, variant: &str, t: usize, members: &[(usize, u64, Option<usize>)]) -> Vec<RunRow> {
    result
        .members
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let variable_step = result.curves.iter().filter(|c| c.member == i).find(|c| c.best_mass_on_s.is_some_and(|x| x > 0.5)).map(|c| c.step);
            RunRow {
                model: model.to_string(),
                variant: variant.to_string(),
                t,
                m: members[i].0,
                seed: r.seed,
                learned: r.learned,
                diverged: r.diverged,
                step: r.step,
                steps_trained: r.steps_trained,
                test_accuracy: r.test_accuracy,
                mass_on_s: r.attention.as_ref().map(|a| a.mass_on_s[a.best_head.0][a.best_head.1]),
                variable_step,
                seconds: result.seconds,
                faulted: None,
                norm_bound: r.norms.as_ref().map(|n| n.bound),
                restart: members[i].2,
                train_accuracy: r.scores.as_ref().map(|s| s.train_accuracy),
                validation_accuracy: r.scores.as_ref().and_then(|s| s.validation_accuracy),
                train_set_loss: r.scores.as_ref().map(|s| s.train_loss),
                // A plain member's reason follows from its outcome.
                stopped: Some(r.stopped.unwrap_or(if r.diverged {
                    Stopped::Diverged
                } else if r.learned {
                    Stopped::Test
                } else {
                    Stopped::Budget
                })),
                budget: None,
                recipe: None,
            }
        })
        .collect()
}

/// The median of `n` values of which `finite` are given and the rest are larger than any
/// of them (seeds that did not learn): defined when a strict majority is finite.
pub fn censored_median(mut finite: Vec<f64>, n: usize) -> Option<f64> {
    if 2 * finite.len() <= n {
        return None;
    }
    finite.sort_by(f64::total_cmp);
    Some(if n % 2 == 1 { finite[n / 2] } else { 0.5 * (finite[n / 2 - 1] + finite[n / 2]) })
}

/// A learner's rows at each budget: per restart, for every budget b, its state at the last
/// evaluation within b (every budget falls on an evaluation), or its final row where it
/// stopped by b (the last budget is always its final row). A state within a budget is
/// judged as a stop there: `learned` when its test accuracy reaches `target`, `step` = b,
/// `stopped` = budget; the stop rules (and decided instances) act within the last budget.
fn rows_per_budget(result: &EnsembleResult, rows: Vec<RunRow>, budgets: &[usize], target: f64) -> Vec<RunRow> {
    let last = budgets.last().copied();
    let mut out = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        for &b in budgets {
            let at = result.curves.iter().find(|c| c.member == i && c.step == b);
            match at {
                Some(c) if row.steps_trained > b && Some(b) != last => out.push(RunRow {
                    learned: c.test_accuracy >= target,
                    diverged: false,
                    step: Some(b),
                    steps_trained: b,
                    test_accuracy: c.test_accuracy,
                    mass_on_s: c.best_mass_on_s,
                    variable_step: row.variable_step.filter(|&v| v <= b),
                    norm_bound: c.norm_bound,
                    train_accuracy: c.train_accuracy,
                    validation_accuracy: c.validation_accuracy,
                    train_set_loss: c.train_set_loss,
                    stopped: Some(Stopped::Budget),
                    budget: Some(b),
                    ..row.clone()
                }),
                _ => out.push(RunRow { budget: Some(b), ..row.clone() }),
            }
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// One row per instance (model, T, m, seed) whose `learned` says whether `kind`'s output
/// learned: the restarts of each instance collapsed by the learner's rule. Rows without a
/// restart index (a majority sweep) pass through; `majority` over restarts keeps restart 0.
pub fn instance_rows(kind: LearnerKind, rows: &[RunRow]) -> Vec<RunRow> {
    let mut by_instance: BTreeMap<(String, usize, usize, u64), Vec<&RunRow>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in rows {
        match r.restart {
            None => out.push(r.clone()),
            Some(_) if r.faulted.is_some() => {}
            Some(_) => by_instance.entry((r.model.clone(), r.t, r.m, r.seed)).or_default().push(r),
        }
    }
    for restarts in by_instance.values() {
        let outcomes: Vec<RestartOutcome> = restarts
            .iter()
            .map(|r| RestartOutcome {
                restart: r.restart.unwrap_or(0),
                train_accuracy: r.train_accuracy.unwrap_or(f64::NAN),
                train_loss: r.train_set_loss.unwrap_or(f64::NAN),
                validation_accuracy: r.validation_accuracy,
                norm_bound: r.norm_bound,
                test_accuracy: r.test_accuracy,
                stopped: r.stopped,
                step: r.step,
            })
            .collect();
        let chosen = match kind {
            LearnerKind::Majority => restarts.iter().position(|r| r.restart == Some(0)),
            k => select(k, &outcomes),
        };
        let first = restarts[0];
        out.push(match chosen {
            Some(i) => RunRow { restart: restarts[i].restart, ..restarts[i].clone() },
            // No output (min_norm where nothing fits): the instance fails.
            None => RunRow { learned: false, step: None, restart: None, ..first.clone() },
        });
    }
    out
}

/// Cells, m* and the bracket below it for one model at one T (under the sweep's learner,
/// cells count instances), m* within each budget, and for a learner's sweep m* of every
/// learner its rows allow.
pub fn summarize_point(cfg: &SweepConfig, rows: &[RunRow], model: &str, t: usize) -> PointSummary {
    let kind = cfg.sweep.learner;
    let budgets = &cfg.sweep.budgets;
    if kind == LearnerKind::Majority {
        let mut point = summarize_cells(cfg, rows, model, t);
        point.budgets = budgets
            .iter()
            .map(|&b| {
                // Learned within b: the member learned at an evaluation no later than b.
                let capped: Vec<RunRow> = rows.iter().map(|r| RunRow { learned: r.learned && r.step.is_some_and(|s| s <= b), ..r.clone() }).collect();
                BudgetPoint { budget: b, m_star: summarize_cells(cfg, &capped, model, t).m_star, learners: Vec::new() }
            })
            .collect();
        if let [.., before, last] = point.budgets.as_slice() {
            point.stable = Some(before.m_star == last.m_star);
        }
        return point;
    }
    // A learner's rows describe each restart at one budget (`None`: a sweep without budgets).
    let at = |b: Option<usize>| -> Vec<RunRow> { rows.iter().filter(|r| r.budget == b).cloned().collect() };
    let m_star = |k: LearnerKind, rows: &[RunRow]| summarize_cells(cfg, &instance_rows(k, rows), model, t).m_star;
    let final_rows = at(budgets.last().copied());
    let mut point = summarize_cells(cfg, &instance_rows(kind, &final_rows), model, t);
    // Every learner the rows allow, read from the same restarts. Only under stop: budget do
    // the others read them as they would have trained them; otherwise the restarts stopped
    // by this learner's rule (or with their decided instance), and the others' m* are
    // "that learner's rule applied to these restarts" (the book says so).
    let mut kinds = vec![LearnerKind::Majority, LearnerKind::MinNorm];
    if kind == LearnerKind::BestOfK {
        kinds.insert(1, LearnerKind::BestOfK);
    }
    point.budgets = budgets
        .iter()
        .map(|&b| {
            let rows = at(Some(b));
            let learners = kinds.iter().map(|&k| LearnerPoint { learner: k, m_star: m_star(k, &rows), stable: None }).collect();
            BudgetPoint { budget: b, m_star: m_star(kind, &rows), learners }
        })
        .collect();
    let last_two = match point.budgets.as_slice() {
        [.., before, last] => Some((before.clone(), last.clone())),
        _ => None,
    };
    point.stable = last_two.as_ref().map(|(before, last)| before.m_star == last.m_star);
    point.learners = kinds
        .iter()
        .enumerate()
        .map(|(i, &k)| LearnerPoint {
            learner: k,
            m_star: m_star(k, &final_rows),
            stable: last_two.as_ref().map(|(before, last)| before.learners[i].m_star == last.learners[i].m_star),
        })
        .collect();
    if cfg.sweep.recipes.is_some() {
        let mine: Vec<RunRow> = final_rows.iter().filter(|r| r.model == model && r.t == t).cloned().collect();
        (point.choices, point.recipe_counts) = recipe_choices(cfg, &mine, &kinds);
    }
    point
}

fn summarize_cells(cfg: &SweepConfig, rows: &[RunRow], model: &str, t: usize) -> PointSummary {
    let mut by_m: BTreeMap<usize, Vec<&RunRow>> = BTreeMap::new();
    // Faulted members count neither for nor against a cell; a cell of only faulted
    // members is no cell at all.
    for r in rows.iter().filter(|r| r.model == model && r.t == t && r.faulted.is_none()) {
        by_m.entry(r.m).or_default().push(r);
    }
    let cells: Vec<Cell> = by_m
        .iter()
        .map(|(&m, rs)| {
            let needed = cfg.needed_of(rs.len());
            let learned = rs.iter().filter(|r| r.learned).count();
            let (lo, hi) = wilson(learned, rs.len());
            Cell {
                m,
                learned,
                seeds: rs.len(),
                rate: learned as f64 / rs.len() as f64,
                wilson_low: lo,
                wilson_high: hi,
                success: learned >= needed,
                median_step: median(rs.iter().filter_map(|r| r.step.map(|s| s as f64)).collect()),
            }
        })
        .collect();
    let m_star = cells.iter().find(|c| c.success).map(|c| c.m);
    let m_below = m_star.and_then(|ms| cells.iter().filter(|c| c.m < ms && !c.success).map(|c| c.m).max());
    let all: Vec<&RunRow> = by_m.values().flatten().copied().collect();
    let (online, median_steps) = if cfg.train.online && !all.is_empty() {
        let (o, m) = online_point(cfg, &all);
        (Some(o), m)
    } else {
        (None, None)
    };
    PointSummary {
        t,
        m_star,
        m_below,
        median_steps_to_learn: median_steps,
        median_variable_step: cfg.train.online.then(|| median(all.iter().filter_map(|r| r.variable_step.map(|s| s as f64)).collect())).flatten(),
        cells,
        budgets: Vec::new(),
        stable: None,
        learners: Vec::new(),
        online,
        choices: Vec::new(),
        recipe_counts: Vec::new(),
    }
}

/// The recipe each instance's output trained with, per learner that selects, and how often
/// each recipe was chosen (`rows`: one model at one T, at one budget).
fn recipe_choices(cfg: &SweepConfig, rows: &[RunRow], kinds: &[LearnerKind]) -> (Vec<RecipeChoice>, Vec<RecipeCount>) {
    let n = cfg.sweep.recipes.as_ref().map_or(0, Vec::len);
    let (mut choices, mut counts) = (Vec::new(), Vec::new());
    for &kind in kinds.iter().filter(|&&k| k != LearnerKind::Majority) {
        let chosen: Vec<RecipeChoice> = instance_rows(kind, rows)
            .into_iter()
            .map(|r| RecipeChoice { learner: kind, m: r.m, seed: r.seed, restart: r.restart, recipe: r.restart.and(r.recipe), learned: r.learned })
            .collect();
        for recipe in 0..n {
            let of = chosen.iter().filter(|c| c.recipe == Some(recipe));
            counts.push(RecipeCount { learner: kind, recipe, chosen: of.clone().count(), learned: of.filter(|c| c.learned).count() });
        }
        choices.extend(chosen);
    }
    (choices, counts)
}

/// The i.i.d. regime at one (model, T): each seed's learning step, and the censored median
/// of the steps to learn.
fn online_point(cfg: &SweepConfig, rows: &[&RunRow]) -> (OnlinePoint, Option<f64>) {
    let batch = cfg.train.batch;
    let mut per_seed: Vec<SeedSteps> = rows
        .iter()
        .map(|r| {
            let step = r.step.filter(|_| r.learned);
            SeedSteps { seed: r.seed, step, samples_seen: step.map(|s| s * batch), steps_trained: r.steps_trained }
        })
        .collect();
    per_seed.sort_by_key(|s| s.seed);
    let steps: Vec<f64> = per_seed.iter().filter_map(|s| s.step.map(|x| x as f64)).collect();
    let learned = steps.len();
    let median = censored_median(steps, per_seed.len());
    (OnlinePoint { learned, seeds: per_seed.len(), median_samples_seen: median.map(|m| m * batch as f64), per_seed }, median)
}

/// Baseline m* per T on the same training sets the models saw.
pub fn baseline_points(cfg: &SweepConfig, registry: &Registry) -> Result<Vec<BaselinePoint>, String> {
    let grid = cfg.sweep.m.values();
    let needed = cfg.needed();
    let s = cfg.task.s;
    cfg.sweep
        .t
        .iter()
        .map(|&t| {
            let spec = TaskSpec { t, ..cfg.task.clone() };
            // A task that cannot be made or sampled is an error, never a missing m*.
            let run = |learner: &dyn Fn(&Dataset, &[usize]) -> Option<bool>| -> Result<(Option<usize>, bool), String> {
                for &m in &grid {
                    let mut ok = 0;
                    for &seed in &cfg.sweep.seeds {
                        let task = registry.task(&spec, seed).map_err(|e| format!("baselines, T = {t}, seed {seed}: {e}"))?;
                        let data = Dataset::draw(task.as_ref(), m, &mut Pcg32::new(seed, streams::TRAIN_DATA))
                            .map_err(|e| format!("baselines, T = {t}, seed {seed}: {e}"))?;
                        match learner(&data, task.relevant()) {
                            Some(true) => ok += 1,
                            Some(false) => {}
                            None => return Ok((None, true)),
                        }
                    }
                    if ok >= needed {
                        return Ok((Some(m), false));
                    }
                }
                Ok((None, false))
            };
            let gf2 = if cfg.sweep.baselines.iter().any(|b| b == "gf2") { run(&|d, rel| Some(gf2_parity(d).as_deref() == Some(rel)))?.0 } else { None };
            let cap = cfg.sweep.subset_search_cap;
            let (ss, skipped) = if cfg.sweep.baselines.iter().any(|b| b == "subset_search") {
                run(&|d, rel| match subset_search_parity(d, s, cap) {
                    SubsetSearch::Unique(found) => Some(found == rel),
                    SubsetSearch::TooLarge => None,
                    _ => Some(false),
                })?
            } else {
                (None, false)
            };
            Ok(BaselinePoint { t, info_floor: log2_binomial(t, s), gf2_m_star: gf2, subset_search_m_star: ss, subset_search_skipped: skipped })
        })
        .collect()
}

/// The summary of every model, with fits and baselines.
pub fn summarize(cfg: &SweepConfig, rows: &[RunRow], seconds: f64, registry: &Registry) -> Result<SweepSummary, String> {
    let models = cfg
        .models
        .iter()
        .map(|(name, _)| {
            let points: Vec<PointSummary> = cfg.sweep.t.iter().map(|&t| summarize_point(cfg, rows, name, t)).collect();
            let pts: Vec<(usize, f64)> = if cfg.train.online {
                points.iter().filter_map(|p| p.median_steps_to_learn.map(|m| (p.t, m))).collect()
            } else {
                points.iter().filter_map(|p| p.m_star.map(|m| (p.t, m as f64))).collect()
            };
            let fit = if cfg.train.online { fit_scaling_of(&pts, "steps") } else { fit_scaling(&pts) };
            ModelSummary { model: name.clone(), fit, points }
        })
        .collect();
    let needed = cfg.needed();
    let faulted: Vec<FaultedRun> =
        rows.iter().filter_map(|r| r.faulted.as_ref().map(|f| FaultedRun { model: r.model.clone(), t: r.t, m: r.m, seed: r.seed, fault: f.clone() })).collect();
    let mut success_rule = if cfg.train.online {
        format!(
            "i.i.d., {} fresh samples a step: a seed learns at test accuracy {} within {} steps; median over all {} seeds (non-learners slowest)",
            cfg.train.batch,
            cfg.train.target_accuracy,
            cfg.train_config().max_steps,
            cfg.sweep.seeds.len()
        )
    } else {
        format!(
            "a cell (T, m) succeeds when at least {needed} of {} seeds reach test accuracy {} within {} steps",
            cfg.sweep.seeds.len(),
            cfg.train.target_accuracy,
            cfg.train_config().max_steps
        )
    };
    let learner = cfg.learner();
    if learner.kind != LearnerKind::Majority {
        let theta = cfg.train.target_accuracy;
        let output = match learner.kind {
            LearnerKind::BestOfK => "the first restart to validate, else the best on validation",
            _ => "the smallest-norm restart that fits its training set",
        };
        let stop = match StopRule::of(&learner) {
            Some(StopRule::Validation) => format!("restarts stop once validation and training accuracy reach {theta}"),
            Some(StopRule::Fit) => "restarts stop once they fit their training set".to_string(),
            _ => "restarts train to the budget".to_string(),
        };
        let stop = match cfg.sweep.patience {
            Some(n) if n > 1 => format!("{stop} at {n} consecutive evaluations"),
            _ => stop,
        };
        success_rule = format!(
            "{}, k = {}, {stop}: an instance succeeds when its output ({output}) has test accuracy {theta} where it stopped (at most {} steps); a cell (T, m) when at least {needed} of {} instances do",
            learner.kind.name(),
            learner.k,
            cfg.train_config().max_steps,
            cfg.sweep.seeds.len(),
        );
    }
    if let Some(r) = &cfg.sweep.recipes {
        success_rule.push_str(&format!("; restart j trains with recipe j mod {} of sweep.recipes", r.len()));
    }
    if !faulted.is_empty() {
        success_rule.push_str("; members whose task faulted are left out, and the rule applies to the seeds that remain in their cell");
    }
    Ok(SweepSummary {
        s: cfg.task.s,
        task: cfg.task.kind.clone(),
        success_rule,
        max_steps: cfg.train_config().max_steps,
        models,
        baselines: if cfg.sweep.baselines.is_empty() { Vec::new() } else { baseline_points(cfg, registry)? },
        faulted,
        seconds,
    })
}

/// Read a sweep's runs.csv (`path` its folder or the file).
pub fn read_runs(path: &Path) -> Result<Vec<RunRow>, ResultsError> {
    let p: PathBuf = file_in(path, "runs.csv");
    read_csv(&p)
}
