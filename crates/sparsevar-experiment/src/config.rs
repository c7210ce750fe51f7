//! Experiment configuration: the YAML schema, `key=value` overrides and validation.
//!
//! Every section rejects unknown keys, naming the key and the valid ones, so a typo never
//! silently falls back to a default.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use sparsevar_core::model::{DataShape, ModelSpec, TransformerConfig};
use sparsevar_core::norms::MaxNorm;
use sparsevar_core::optim::{OptimConfig, OptimizerKind, Schedule};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;

use crate::budget::{self, Knob};
use crate::weights::SaveWeights;

/// How an ensemble trains and when a member counts as having learned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Training-set size m per member (ignored when `online`).
    pub samples: usize,
    /// Fresh samples every step instead of a fixed training set.
    pub online: bool,
    /// Minibatch size per member.
    pub batch: usize,
    /// Step budget: a member that has not learned by then counts as not learned.
    pub max_steps: usize,
    /// adam, adamw (decoupled weight decay; the default) or sgd (with momentum).
    pub optimizer: OptimizerKind,
    /// Peak learning rate. The default 3e-4 matters: at 1e-3 most seeds of the paper's
    /// transformer never leave chance at T = 128 (see scripts/sweep_paper_s2.yaml).
    pub lr: f64,
    /// Adam's first-moment decay.
    pub beta1: f64,
    /// Adam's second-moment decay.
    pub beta2: f64,
    /// Adam's epsilon.
    pub eps: f64,
    /// adamw: decoupled decay per step (× lr), default 0.1; sgd: L2 added to the gradient,
    /// default 0; adam: none (leave unset or 0).
    pub weight_decay: Option<f64>,
    /// SGD momentum.
    pub momentum: f64,
    /// Clip each member's global gradient norm to this (`null` turns clipping off). The
    /// default 1.0 matters: without it Adam at lr 1e-3 stalls 2 of the 4 seeds of
    /// scripts/parity_t16.yaml with a head saturated off S.
    pub clip: Option<f64>,
    /// Learning-rate schedule: constant or cosine (to 0 at max_steps).
    pub schedule: Schedule,
    /// Linear warmup from 0 over this many steps.
    pub warmup_steps: usize,
    /// Evaluate on the test set every this many steps.
    pub eval_every: usize,
    /// Success: test accuracy at least this.
    pub target_accuracy: f64,
    /// Size of each member's fresh test set.
    pub test_samples: usize,
    /// Weights written into `weights/` (safetensors): final (every member at the end,
    /// `seed-<n>.safetensors`), learned (members that learned, at that step,
    /// `seed-<n>.learned.safetensors`), both, or none. `train` only: a sweep writes the
    /// weights `sweep.weights` asks for.
    pub save_weights: SaveWeights,
    /// `sparsevar train` writes a checkpoint (checkpoint.safetensors in the results folder)
    /// every this many steps, and once at the end, so `--resume` continues a run that was
    /// cut short; 0 turns checkpoints off. The default 1000 loses at most a few minutes of
    /// a long run, while one checkpoint (a copy of the parameters and Adam moments of the
    /// members still training, and the curves) costs far less than the 1000 steps between
    /// two. A sweep's work units write theirs to
    /// checkpoints/ while they train, so a preempted unit continues where it was.
    pub checkpoint_every: usize,
    /// Norm-bounded training: `{ qk: B, v: B, o: B, embed: B }`, each a Frobenius bound on a
    /// parameter group (`null` or absent = unbounded) that every member is projected back
    /// onto after every optimizer step. qk: every layer's [W_Q; b_Q] and [W_K; b_K] each
    /// within sqrt(B), so every head's ‖W_Q W_Kᵀ‖_F ≤ B; v, o: every layer's [W_V; b_V],
    /// [W_O; b_O]; embed: the token and learned position embeddings together.
    #[serde(skip_serializing_if = "MaxNorm::is_unbounded")]
    pub max_norm: MaxNorm,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let o = OptimConfig::default();
        Self {
            samples: 1000,
            online: false,
            batch: 32,
            max_steps: 20_000,
            optimizer: OptimizerKind::Adamw,
            lr: 3e-4,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: None,
            momentum: o.momentum,
            clip: Some(1.0),
            schedule: Schedule::Constant,
            warmup_steps: 0,
            eval_every: 100,
            target_accuracy: 0.99,
            test_samples: 2048,
            save_weights: SaveWeights::Final,
            checkpoint_every: 1000,
            max_norm: MaxNorm::default(),
        }
    }
}

impl TrainConfig {
    /// The weight decay in force: the configured one, or the optimizer's default.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(if self.optimizer == OptimizerKind::Adamw { 0.1 } else { 0.0 })
    }

    /// The optimizer settings this config describes.
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            kind: self.optimizer,
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay(),
            momentum: self.momentum,
            clip: self.clip,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            total_steps: self.max_steps,
        }
    }
}

fn default_model() -> ModelSpec {
    ModelSpec::Transformer(TransformerConfig::default())
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_backend() -> String {
    "cpu".into()
}

/// One training experiment: a task, a model, how to train, and the seeds of the ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The distribution of inputs and labels.
    pub task: TaskSpec,
    /// The model (default: the one-layer transformer "paper1l").
    #[serde(default = "default_model")]
    pub model: ModelSpec,
    /// How to train and when a member has learned.
    #[serde(default)]
    pub train: TrainConfig,
    /// One ensemble member per seed: its init, data, S (unless fixed) and batches.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Compute backend by registered name ("cpu", …).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Worker threads for the CPU backend (default: all cores). Results do not depend on it.
    #[serde(default)]
    pub threads: Option<usize>,
}

/// A config that cannot be used, with a message naming the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("override `{0}`: expected key=value, e.g. train.lr=0.01")]
    Override(String),
    #[error("{0}")]
    Invalid(String),
}

impl ExperimentConfig {
    /// Read a YAML file, apply `key=value` overrides, parse and validate.
    pub fn load(path: &Path, overrides: &[String], registry: &Registry) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string(), overrides, registry)
    }

    /// Parse YAML text (`origin` names it in errors), apply overrides, validate.
    pub fn parse(text: &str, origin: &str, overrides: &[String], registry: &Registry) -> Result<Self, ConfigError> {
        let parse_err = |e: serde_yaml::Error| ConfigError::Parse { path: origin.to_string(), message: e.to_string() };
        let mut value: Value = serde_yaml::from_str(text).map_err(parse_err)?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        // The model section first: serde loses line numbers inside internally tagged enums,
        // so name the section in the message ourselves.
        let check_model = |value: &Value| -> Result<(), ConfigError> {
            if let Value::Mapping(m) = value
                && let Some(model) = m.get("model")
            {
                serde_yaml::from_value::<ModelSpec>(model.clone())
                    .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: format!("model: {e}") })?;
            }
            Ok(())
        };
        let from_value = |value: Value| -> Result<ExperimentConfig, ConfigError> {
            check_model(&value)?;
            serde_yaml::from_value(value).map_err(parse_err)
        };
        // Without overrides parse the text itself, so errors keep their line and column.
        let cfg: ExperimentConfig = if overrides.is_empty() {
            check_model(&value)?;
            serde_yaml::from_str(text).map_err(parse_err)?
        } else {
            from_value(value).map_err(|e| blame_override(text, overrides, e, &|v| from_value(v).map(drop)))?
        };
        cfg.validate(registry)?;
        Ok(cfg)
    }

    /// Check every value a parse cannot check; the message names the key and the fix.
    pub fn validate(&self, registry: &Registry) -> Result<(), ConfigError> {
        let names = |k: Knob| -> (String, String) {
            match k {
                Knob::T => ("task.T".into(), self.task.t.to_string()),
                Knob::Samples => ("train.samples".into(), self.train.samples.to_string()),
                Knob::TestSamples => ("train.test_samples".into(), self.train.test_samples.to_string()),
                Knob::Batch => ("train.batch".into(), self.train.batch.to_string()),
                Knob::Members => ("seeds".into(), format!("{} seeds (one member each)", self.seeds.len())),
                _ => model_knob(&self.model, k),
            }
        };
        self.validate_sized(registry, self.seeds.len(), self.train.samples, &names)
    }

    /// [`ExperimentConfig::validate`] with sizes named by `names` (key, value), for callers
    /// that take them from elsewhere, e.g. command-line flags.
    pub fn validate_as(&self, registry: &Registry, names: &dyn Fn(Knob) -> (String, String)) -> Result<(), ConfigError> {
        self.validate_sized(registry, self.seeds.len(), self.train.samples, names)
    }

    /// [`ExperimentConfig::validate`] for an ensemble of `members` with training sets of
    /// up to `samples`, naming sizes through `names` (a sweep spells them its own way).
    pub(crate) fn validate_sized(
        &self,
        registry: &Registry,
        members: usize,
        samples: usize,
        names: &dyn Fn(Knob) -> (String, String),
    ) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.seeds.is_empty() {
            return bad("seeds is empty: give at least one seed, e.g. seeds: [0]".into());
        }
        let mut s = self.seeds.clone();
        s.sort();
        s.dedup();
        if s.len() != self.seeds.len() {
            return bad(format!("seeds {:?} repeat a seed: each member needs its own", self.seeds));
        }
        if let Some(n) = self.threads {
            budget::check_threads("threads", n).map_err(ConfigError::Invalid)?;
        }
        let mut attention = None;
        match &self.model {
            ModelSpec::Transformer(m) => {
                attention = Some(registry.attention(&m.attention).map_err(|e| ConfigError::Invalid(e.to_string()))?);
                if m.layers == 0 || m.d_model == 0 || m.heads == 0 {
                    return bad("model.layers, model.d_model and model.heads must be at least 1".into());
                }
                if m.d_model % m.heads != 0 {
                    return bad(format!("model.d_model = {} is not divisible by model.heads = {}", m.d_model, m.heads));
                }
                if m.init_std <= 0.0 || !m.init_std.is_finite() {
                    return bad(format!("model.init_std = {} must be positive", m.init_std));
                }
            }
            ModelSpec::Mlp(m) => {
                if m.width == 0 {
                    return bad("model.width must be at least 1".into());
                }
            }
        }
        let t = &self.train;
        if t.batch == 0 {
            return bad("train.batch must be at least 1".into());
        }
        if !t.online && t.samples == 0 {
            return bad("train.samples must be at least 1 (or set train.online: true)".into());
        }
        if t.eval_every == 0 {
            return bad("train.eval_every must be at least 1".into());
        }
        if t.test_samples == 0 {
            return bad("train.test_samples must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad(format!("train.lr = {} must be a positive number", t.lr));
        }
        if !(t.target_accuracy > 0.0 && t.target_accuracy <= 1.0) {
            return bad(format!("train.target_accuracy = {} must be in (0, 1]", t.target_accuracy));
        }
        if let Some(w) = t.weight_decay
            && !(w >= 0.0 && w.is_finite())
        {
            return bad(format!("train.weight_decay = {w} must be a number at least 0"));
        }
        if t.optimizer == OptimizerKind::Adam && t.weight_decay() != 0.0 {
            return bad("train.weight_decay needs train.optimizer: adamw (decoupled) or sgd; plain adam has none".into());
        }
        if let Some(c) = t.clip
            && c <= 0.0
        {
            return bad(format!("train.clip = {c} must be positive (or remove it)"));
        }
        t.max_norm.check("train.max_norm").map_err(ConfigError::Invalid)?;
        if !t.max_norm.is_unbounded() && matches!(self.model, ModelSpec::Mlp(_)) {
            return bad("train.max_norm bounds attention parameters (qk, v, o, embed), but model.kind is mlp: remove train.max_norm".into());
        }
        if !registry.backends.is_empty() && !registry.backends.contains_key(&self.backend) {
            return bad(format!("backend `{}` is unknown; available backends: {}", self.backend, registry.backend_names().join(", ")));
        }
        // A plugin's variant is sized as softmax: validation runs no plugin code (a fault is
        // the trainer's to report, naming the members).
        let built_in = |name: &str| registry.attention.get(name).is_some_and(|e| e.origin == "built-in");
        let sizing_attention = match &self.model {
            ModelSpec::Transformer(m) if !built_in(&m.attention) => registry.attention("softmax").ok(),
            _ => attention,
        };
        // Sizes before anything large is built: first with the shape of the built-in tasks
        // (drawing a task's S alone takes memory in T), then with the task's own.
        let limit = budget::memory_limit();
        let mut plan = budget::Plan {
            model: self.model.clone(),
            train: self.train.clone(),
            data: DataShape { seq_len: self.task.t, alphabet: 2, classes: 2 },
            members,
            samples,
            value_bytes: budget::value_bytes(&self.backend),
            attention: sizing_attention.as_deref(),
        };
        let name = |k: Knob| names(k).0;
        let value = |k: Knob| names(k).1;
        let knobs = budget::KnobNames { name: &name, value: &value };
        if self.task.t >= 1024 {
            // Below that, drawing S costs nothing, and the task reports a bad T itself.
            budget::check(&plan, &limit, &knobs).map_err(ConfigError::Invalid)?;
        }
        let first = registry.task(&self.task, self.seeds[0]).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        plan.data = DataShape { seq_len: first.seq_len(), alphabet: first.alphabet(), classes: first.num_classes() };
        budget::check(&plan, &limit, &knobs).map_err(ConfigError::Invalid)?;
        for &seed in &self.seeds[1..] {
            registry.task(&self.task, seed).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// The resolved config as YAML (every default written out).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }
}

/// When a config with overrides does not deserialize, name the override to blame: the one
/// without which the error goes away or changes (the key, its value and what serde
/// expected). `check` deserializes a value the way the caller does; `err` is returned
/// unchanged when no single override is to blame (the file itself is wrong).
pub(crate) fn blame_override(text: &str, overrides: &[String], err: ConfigError, check: &dyn Fn(Value) -> Result<(), ConfigError>) -> ConfigError {
    let Ok(base) = serde_yaml::from_str::<Value>(text) else { return err };
    let message = |e: &ConfigError| match e {
        ConfigError::Parse { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let why = message(&err);
    for (i, culprit) in overrides.iter().enumerate().rev() {
        let mut v = base.clone();
        let others = overrides.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, o)| o);
        if others.map(|o| apply_override(&mut v, o)).any(|r| r.is_err()) {
            continue;
        }
        if check(v).as_ref().err().map(message) != Some(why.clone()) {
            let (key, raw) = culprit.split_once('=').unwrap_or((culprit, ""));
            // serde names the expected type ("expected f64", "expected one of `adam`, …").
            let why = why.rsplit_once(": ").filter(|(head, _)| !head.contains(' ')).map_or(why.as_str(), |(_, tail)| tail);
            return ConfigError::Invalid(format!("override `{culprit}`: `{}` is not a valid {}: {why}", raw.trim(), key.trim()));
        }
    }
    err
}

/// Set `a.b.c=value` in a YAML mapping; the value is parsed as YAML (`0.01`, `true`, `[1,2]`).
pub fn apply_override(root: &mut Value, text: &str) -> Result<(), ConfigError> {
    let (key, raw) = text.split_once('=').ok_or_else(|| ConfigError::Override(text.to_string()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::Override(text.to_string()));
    }
    let value: Value = serde_yaml::from_str(raw).map_err(|e| {
        ConfigError::Invalid(format!(
            "override `{text}`: the value `{}` for {key} is not valid YAML ({e}); give a number, a word, or a list like [8, 16]",
            raw.trim()
        ))
    })?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            } else {
                return Err(ConfigError::Invalid(format!("override `{text}`: `{}` is not a section", parts[..i].join("."))));
            }
        }
        let map = node.as_mapping_mut().expect("mapping");
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    Ok(())
}

/// Name and value of a model size knob, as the config spells them.
pub(crate) fn model_knob(model: &ModelSpec, k: Knob) -> (String, String) {
    match (model, k) {
        (ModelSpec::Transformer(m), Knob::Width) => ("model.d_model".into(), m.d_model.to_string()),
        (ModelSpec::Transformer(m), Knob::Heads) => ("model.heads".into(), m.heads.to_string()),
        (ModelSpec::Transformer(m), Knob::Mlp) => ("model.mlp".into(), m.mlp.to_string()),
        (ModelSpec::Transformer(m), Knob::Depth) => ("model.layers".into(), m.layers.to_string()),
        (ModelSpec::Mlp(m), Knob::Width) => ("model.width".into(), m.width.to_string()),
        (ModelSpec::Mlp(m), Knob::Depth) => ("model.depth".into(), m.depth.to_string()),
        (_, k) => (format!("{k:?}"), String::new()),
    }
}
