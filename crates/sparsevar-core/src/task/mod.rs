//! Tasks: distributions over token sequences and labels.
//!
//! A [`Task`] draws one input of `T` tokens and its label. The built-in tasks are sparse
//! Boolean functions (Edelman et al., "Inductive Biases and Variable Creation in
//! Self-Attention Mechanisms"): the input is `T` bits, and the label depends only on the bits
//! at a small set `S` of `s` positions (see [`BooleanTask`]).
//!
//! Boolean coding: token `b ∈ {0, 1}` is the bit `b` (in the ±1 coding of the paper, token 0
//! is `x_i = +1` and token 1 is `x_i = −1`, so parity is the XOR of the bits). Labels are
//! `0` or `1` in the same way.
//!
//! Tasks are built from a serializable [`TaskSpec`] by [`build_task`]; a fixed set of samples
//! is a [`Dataset`].

mod boolean;

pub use boolean::{BooleanKind, BooleanOptions, BooleanTask, MAX_JUNTA_S};

use crate::fault::PluginFault;
use crate::rng::{Pcg32, streams};
use serde::{Deserialize, Serialize};

/// A distribution over inputs (`seq_len()` tokens from `0..alphabet()`) and labels
/// (`0..num_classes()`).
///
/// Implementations are cheap to clone ([`dyn_clone`] makes `Box<dyn Task>` cloneable) and
/// immutable: all randomness comes from the [`Pcg32`] passed to [`Task::sample`].
pub trait Task: dyn_clone::DynClone + Send + Sync + std::fmt::Debug {
    /// The registry name of the task kind, e.g. `"sparse_parity"` (one of [`BUILTIN_TASKS`]
    /// for the built-ins).
    fn name(&self) -> &str;
    /// The sequence length `T`: the number of input tokens.
    fn seq_len(&self) -> usize;
    /// The input vocabulary size: tokens are `0..alphabet()` (2 for Boolean tasks).
    fn alphabet(&self) -> usize;
    /// The number of label classes: labels are `0..num_classes()` (2 for Boolean tasks).
    fn num_classes(&self) -> usize;
    /// The relevant set `S`: the sorted, distinct, 0-based input positions the label depends
    /// on.
    fn relevant(&self) -> &[usize];
    /// The noise-free label of `tokens` (length `T`): the target function itself. Used by
    /// [`Task::sample`] before label noise is applied, and by tests and baselines.
    fn clean_label(&self, tokens: &[u8]) -> u8;
    /// Fill `tokens` (length `T`) with one input drawn from the task's input distribution
    /// and return its (possibly noisy) label, or say why it cannot ([`TaskError::Failed`];
    /// a plugin's guard turns any error or panic into [`TaskError::Fault`]). The trainer
    /// stops the member on an error: no substitute sample is ever used.
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError>;
    /// A one-line description with every parameter, e.g.
    /// `"sparse_parity T=16 s=3 S=[1, 7, 9] p=0.5 noise=0"`.
    fn describe(&self) -> String;
}

dyn_clone::clone_trait_object!(Task);

/// The task kinds [`build_task`] knows, by registry name.
pub const BUILTIN_TASKS: &[&str] = &["sparse_parity", "sparse_majority", "sparse_and", "sparse_or", "junta"];

/// Why a task could not be built. Each message names the offending parameter (as it is
/// spelled in a config, `task.<field>`) and says what would be accepted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// `task.kind` is not one of [`BUILTIN_TASKS`].
    #[error("unknown task kind `{kind}`; known kinds: {}", BUILTIN_TASKS.join(", "))]
    UnknownKind {
        /// The kind that was asked for.
        kind: String,
    },
    /// `task.params` holds a key the task does not take.
    #[error("task.params.{key}: task kind `{kind}` takes no option `{key}`; remove it")]
    UnknownParam {
        /// The task kind.
        kind: String,
        /// The unexpected key.
        key: String,
    },
    /// `task.T` is 0.
    #[error("task.T must be at least 1 (got {t})")]
    EmptySequence {
        /// The sequence length given.
        t: usize,
    },
    /// `task.s` is 0.
    #[error("task.s must be at least 1 (got {s}): s must be between 1 and T")]
    EmptySubset {
        /// The subset size given.
        s: usize,
    },
    /// `task.s` is larger than `task.T`.
    #[error("task.s = {s} exceeds task.T = {t}: s must be between 1 and T")]
    SubsetTooLarge {
        /// The subset size given.
        s: usize,
        /// The sequence length given.
        t: usize,
    },
    /// `sparse_majority` with an even `s`, where votes could tie.
    #[error("task.kind sparse_majority needs an odd s (got {s}) so that the vote never ties")]
    EvenMajority {
        /// The (even) subset size given.
        s: usize,
    },
    /// `junta` with `s` beyond [`MAX_JUNTA_S`]: its truth table would have `2^s` entries.
    #[error("task.kind junta needs s <= {max} (got {s}): its truth table has 2^s entries", max = MAX_JUNTA_S)]
    JuntaTooLarge {
        /// The subset size given.
        s: usize,
    },
    /// `task.bias` outside the open interval (0, 1).
    #[error("task.bias must be in (0, 1) (got {bias}): it is P[x_i = 1] for every input bit")]
    BadBias {
        /// The bias given.
        bias: f64,
    },
    /// `task.noise` outside [0, 0.5].
    #[error("task.noise must be in [0, 0.5] (got {noise}): it is the probability that a label is flipped")]
    BadNoise {
        /// The noise level given.
        noise: f64,
    },
    /// `task.subset` does not list exactly `task.s` positions.
    #[error("task.subset has {len} positions but task.s = {s}: list exactly s positions, or omit task.subset to draw one")]
    SubsetLength {
        /// The number of positions listed.
        len: usize,
        /// The subset size given.
        s: usize,
    },
    /// A `task.subset` position is not a valid 0-based index into the sequence.
    #[error("task.subset position {pos} is out of range for task.T = {t}: positions are 0-based, from 0 to T-1")]
    SubsetOutOfRange {
        /// The offending position.
        pos: usize,
        /// The sequence length given.
        t: usize,
    },
    /// A `task.subset` position is listed more than once.
    #[error("task.subset lists position {pos} more than once: positions must be distinct")]
    SubsetDuplicate {
        /// The repeated position.
        pos: usize,
    },
    /// A plugin's task rejected its config section; the message names the key (e.g.
    /// "task.params.alphabet must be at least 2").
    #[error("{message}")]
    Invalid {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `sample` was handed a buffer that is not `T` tokens long.
    #[error("task `{task}`: sample needs a buffer of T = {t} tokens, got {len}")]
    BufferLength {
        /// The task's name.
        task: String,
        /// Its sequence length.
        t: usize,
        /// The buffer's length.
        len: usize,
    },
    /// A task could not do what was asked (a task's own report; see [`Task::sample`]).
    #[error("task `{task}` failed: {message}")]
    Failed {
        /// The task's name.
        task: String,
        /// What went wrong.
        message: String,
    },
    /// A plugin's task faulted: returned an error, panicked, or returned a value outside
    /// its contract. The message names the plugin file and the call.
    #[error(transparent)]
    Fault(#[from] PluginFault),
}

impl TaskError {
    /// A plugin task's config error (see [`TaskError::Invalid`]).
    pub fn invalid(message: impl Into<String>) -> Self {
        TaskError::Invalid { message: message.into() }
    }

    /// Whether the error is about the config (the user's input) rather than a failure
    /// while running.
    pub fn is_config_error(&self) -> bool {
        !matches!(self, TaskError::BufferLength { .. } | TaskError::Failed { .. } | TaskError::Fault(_))
    }
}

/// Default for [`TaskSpec::bias`]: uniform input bits.
fn default_bias() -> f64 {
    0.5
}

/// The serializable description of a task, as it appears under `task:` in a config.
///
/// In serialized form the sequence length is the field `T` (`t` is accepted as an alias);
/// `bias` defaults to 0.5, `noise` to 0, and the `Option` fields to absent. Unknown fields are
/// rejected so that typos do not pass silently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task kind: sparse_parity, sparse_majority (odd s), sparse_and, sparse_or, junta
    /// (a random s-junta), or a plugin's.
    pub kind: String,
    /// The sequence length `T`.
    #[serde(rename = "T", alias = "t")]
    pub t: usize,
    /// The number `s` of relevant positions.
    pub s: usize,
    /// The relevant positions, 0-based; drawn at random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<Vec<usize>>,
    /// Seed for drawing the relevant positions when `subset` is absent; defaults to the
    /// member seed, so each ensemble member gets its own `S`. Ignored when `subset` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_seed: Option<u64>,
    /// `P[x_i = 1]` for every input bit, in (0, 1).
    #[serde(default = "default_bias")]
    pub bias: f64,
    /// Label flip probability, in [0, 0.5].
    #[serde(default)]
    pub noise: f64,
    /// Seed for a junta's truth table; defaults to the member seed. Ignored by other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_seed: Option<u64>,
    /// Extra numeric options of tasks that plugins bring (e.g. `alphabet: 8`); built-in
    /// tasks take none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, f64>,
}

impl TaskSpec {
    /// A spec with the given kind, `T` and `s`, uniform inputs, no label noise, and `S`
    /// (and a junta's table) drawn from the member seed.
    pub fn new(kind: impl Into<String>, t: usize, s: usize) -> Self {
        TaskSpec { kind: kind.into(), t, s, subset: None, subset_seed: None, bias: default_bias(), noise: 0.0, table_seed: None, params: Default::default() }
    }
}

/// Build the task `spec` describes for the ensemble member with seed `member_seed`.
///
/// `S` is `spec.subset` (validated: exactly `s` distinct positions below `T`, then sorted)
/// when given, and otherwise
/// `Pcg32::new(spec.subset_seed.unwrap_or(member_seed), streams::SUBSET).subset(T, s)`.
/// A junta's truth table is drawn from `spec.table_seed.unwrap_or(member_seed)` (see
/// [`BooleanKind::Junta`]).
///
/// Checks run in this order and the first failure is returned: kind, `T`, `s` against `T`,
/// `s` against the kind, bias, noise, subset.
pub fn build_task(spec: &TaskSpec, member_seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let table_seed = spec.table_seed.unwrap_or(member_seed);
    let kind = match spec.kind.as_str() {
        "sparse_parity" => BooleanKind::Parity,
        "sparse_majority" => BooleanKind::Majority,
        "sparse_and" => BooleanKind::And,
        "sparse_or" => BooleanKind::Or,
        "junta" => BooleanKind::Junta { table_seed },
        other => return Err(TaskError::UnknownKind { kind: other.to_string() }),
    };
    if let Some(key) = spec.params.keys().next() {
        return Err(TaskError::UnknownParam { kind: spec.kind.clone(), key: key.clone() });
    }
    let (t, s) = (spec.t, spec.s);
    let options = BooleanOptions { bias: spec.bias, noise: spec.noise };
    boolean::check_sizes(kind, t, s)?;
    options.validate()?;
    let subset = match &spec.subset {
        Some(given) => {
            if given.len() != s {
                return Err(TaskError::SubsetLength { len: given.len(), s });
            }
            given.clone()
        }
        None => Pcg32::new(spec.subset_seed.unwrap_or(member_seed), streams::SUBSET).subset(t, s),
    };
    Ok(Box::new(BooleanTask::new(kind, t, subset, options)?))
}

/// A fixed set of `n` labelled inputs, stored row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// The sequence length `T` (the row width of `tokens`).
    pub t: usize,
    /// `n × T` tokens, row-major: input `i` is `tokens[i*T .. (i+1)*T]`.
    pub tokens: Vec<u8>,
    /// `n` labels, one per input.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Draw `n` independent samples of `task` from `rng`, in order; the first error of
    /// [`Task::sample`] stops the draw.
    pub fn draw(task: &dyn Task, n: usize, rng: &mut Pcg32) -> Result<Dataset, TaskError> {
        let t = task.seq_len();
        let mut tokens = vec![0u8; n * t];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            labels.push(task.sample(rng, &mut tokens[i * t..(i + 1) * t])?);
        }
        Ok(Dataset { t, tokens, labels })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The tokens of input `i` (length `T`).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn row(&self, i: usize) -> &[u8] {
        assert!(i < self.len(), "Dataset::row({i}) out of range for {} samples", self.len());
        &self.tokens[i * self.t..(i + 1) * self.t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, t: usize, s: usize) -> TaskSpec {
        TaskSpec::new(kind, t, s)
    }

    fn err(spec: &TaskSpec) -> String {
        build_task(spec, 0).unwrap_err().to_string()
    }

    #[test]
    fn builds_every_builtin() {
        for &kind in BUILTIN_TASKS {
            let task = build_task(&spec(kind, 16, 3), 7).unwrap();
            assert_eq!(task.name(), kind);
            assert_eq!(task.seq_len(), 16);
            assert_eq!(task.alphabet(), 2);
            assert_eq!(task.num_classes(), 2);
            assert_eq!(task.relevant().len(), 3);
            assert!(task.relevant().windows(2).all(|w| w[0] < w[1]));
            assert!(task.describe().starts_with(&format!("{kind} T=16 s=3 S=[")));
            let cloned = task.clone();
            assert_eq!(cloned.describe(), task.describe());
        }
    }

    #[test]
    fn describe_format() {
        let mut sp = spec("sparse_parity", 16, 3);
        sp.subset = Some(vec![9, 1, 7]);
        let task = build_task(&sp, 0).unwrap();
        assert_eq!(task.describe(), "sparse_parity T=16 s=3 S=[1, 7, 9] p=0.5 noise=0");
        assert_eq!(task.relevant(), &[1, 7, 9]);
    }

    #[test]
    fn subset_drawn_from_member_seed_or_subset_seed() {
        let sp = spec("sparse_parity", 50, 4);
        let a = build_task(&sp, 1).unwrap();
        let b = build_task(&sp, 1).unwrap();
        let expected = Pcg32::new(1, streams::SUBSET).subset(50, 4);
        assert_eq!(a.relevant(), expected.as_slice());
        assert_eq!(a.relevant(), b.relevant());
        // Different members, different S (with overwhelming probability for T=50, s=4).
        let c = build_task(&sp, 2).unwrap();
        assert_ne!(a.relevant(), c.relevant());
        // A shared subset_seed pins S across members.
        let mut pinned = sp.clone();
        pinned.subset_seed = Some(99);
        let d = build_task(&pinned, 1).unwrap();
        let e = build_task(&pinned, 2).unwrap();
        assert_eq!(d.relevant(), e.relevant());
        assert_eq!(d.relevant(), Pcg32::new(99, streams::SUBSET).subset(50, 4).as_slice());
    }

    #[test]
    fn junta_table_seed_defaults_to_member_seed() {
        let mut sp = spec("junta", 12, 5);
        sp.subset = Some(vec![0, 1, 2, 3, 4]);
        let a = build_task(&sp, 3).unwrap();
        let b = build_task(&sp, 4).unwrap();
        let tokens_set: Vec<Vec<u8>> = (0..32u8).map(|m| (0..12).map(|i| if i < 5 { (m >> i) & 1 } else { 0 }).collect()).collect();
        let la: Vec<u8> = tokens_set.iter().map(|x| a.clean_label(x)).collect();
        let lb: Vec<u8> = tokens_set.iter().map(|x| b.clean_label(x)).collect();
        assert_ne!(la, lb);
        sp.table_seed = Some(3);
        let c = build_task(&sp, 4).unwrap();
        let lc: Vec<u8> = tokens_set.iter().map(|x| c.clean_label(x)).collect();
        assert_eq!(la, lc);
    }

    #[test]
    fn error_messages_name_the_parameter() {
        let e = err(&spec("sparse_parity", 4, 5));
        assert!(e.contains("task.s = 5 exceeds task.T = 4: s must be between 1 and T"), "{e}");
        let e = err(&spec("sparse_parity", 0, 0));
        assert!(e.contains("task.T must be at least 1"), "{e}");
        let e = err(&spec("sparse_parity", 4, 0));
        assert!(e.contains("task.s must be at least 1"), "{e}");
        let e = err(&spec("foo", 4, 2));
        assert!(e.contains("unknown task kind `foo`; known kinds: sparse_parity, "), "{e}");
        assert!(e.contains("junta"), "{e}");
        let e = err(&spec("sparse_majority", 8, 4));
        assert!(e.contains("task.kind sparse_majority needs an odd s (got 4)"), "{e}");
        let e = err(&spec("junta", 30, 21));
        assert!(e.contains("task.kind junta needs s <= 20 (got 21)"), "{e}");
        for bias in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            let mut sp = spec("sparse_parity", 4, 2);
            sp.bias = bias;
            let e = err(&sp);
            assert!(e.contains("task.bias must be in (0, 1)"), "{e}");
        }
        for noise in [-0.1, 0.6, f64::NAN] {
            let mut sp = spec("sparse_parity", 4, 2);
            sp.noise = noise;
            let e = err(&sp);
            assert!(e.contains("task.noise must be in [0, 0.5]"), "{e}");
        }
        let mut sp = spec("sparse_parity", 4, 3);
        sp.subset = Some(vec![0, 1]);
        let e = err(&sp);
        assert!(e.contains("task.subset has 2 positions but task.s = 3"), "{e}");
        sp.subset = Some(vec![0, 1, 4]);
        let e = err(&sp);
        assert!(e.contains("task.subset position 4 is out of range for task.T = 4"), "{e}");
        sp.subset = Some(vec![2, 0, 2]);
        let e = err(&sp);
        assert!(e.contains("task.subset lists position 2 more than once"), "{e}");
        // Every message is one line.
        for e in [err(&spec("foo", 4, 2)), err(&spec("sparse_parity", 4, 5))] {
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn majority_even_s_rejected_odd_accepted() {
        assert!(matches!(build_task(&spec("sparse_majority", 10, 2), 0), Err(TaskError::EvenMajority { s: 2 })));
        assert!(build_task(&spec("sparse_majority", 10, 3), 0).is_ok());
        // Other kinds accept even s.
        assert!(build_task(&spec("sparse_parity", 10, 2), 0).is_ok());
    }

    #[test]
    fn noise_and_bias_boundaries_accepted() {
        let mut sp = spec("sparse_and", 6, 2);
        sp.noise = 0.5;
        sp.bias = 0.01;
        assert!(build_task(&sp, 0).is_ok());
        let task = build_task(&spec("sparse_parity", 1, 1), 0).unwrap();
        assert_eq!(task.relevant(), &[0]);
    }

    #[test]
    fn same_seed_same_dataset_different_seed_different() {
        let task = build_task(&spec("sparse_parity", 20, 3), 5).unwrap();
        let a = Dataset::draw(task.as_ref(), 100, &mut Pcg32::new(1, streams::TRAIN_DATA)).unwrap();
        let b = Dataset::draw(task.as_ref(), 100, &mut Pcg32::new(1, streams::TRAIN_DATA)).unwrap();
        let c = Dataset::draw(task.as_ref(), 100, &mut Pcg32::new(2, streams::TRAIN_DATA)).unwrap();
        let d = Dataset::draw(task.as_ref(), 100, &mut Pcg32::new(1, streams::TEST_DATA)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.tokens, c.tokens);
        assert_ne!(a.tokens, d.tokens);
        assert_eq!(a.len(), 100);
        assert!(!a.is_empty());
        assert_eq!(a.tokens.len(), 100 * 20);
        assert_eq!(a.row(3), &a.tokens[60..80]);
        for i in 0..a.len() {
            assert_eq!(a.labels[i], task.clean_label(a.row(i)));
        }
        let empty = Dataset::draw(task.as_ref(), 0, &mut Pcg32::new(1, 0)).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn parity_labels_balanced_on_uniform_inputs() {
        let task = build_task(&spec("sparse_parity", 30, 5), 11).unwrap();
        let n = 20_000;
        let data = Dataset::draw(task.as_ref(), n, &mut Pcg32::new(11, streams::TRAIN_DATA)).unwrap();
        let ones = data.labels.iter().filter(|&&l| l == 1).count() as f64 / n as f64;
        assert!((ones - 0.5).abs() < 0.02, "fraction of ones {ones}");
    }

    #[test]
    fn bias_controls_fraction_of_ones() {
        let mut sp = spec("sparse_or", 10, 2);
        sp.bias = 0.9;
        let task = build_task(&sp, 0).unwrap();
        let data = Dataset::draw(task.as_ref(), 10_000, &mut Pcg32::new(3, streams::TRAIN_DATA)).unwrap();
        let ones = data.tokens.iter().filter(|&&b| b == 1).count() as f64 / data.tokens.len() as f64;
        assert!((ones - 0.9).abs() < 0.01, "fraction of ones {ones}");
        assert!(data.tokens.iter().all(|&b| b <= 1));
    }

    #[test]
    fn noise_flips_that_fraction_of_labels() {
        let mut sp = spec("sparse_majority", 15, 5);
        sp.noise = 0.2;
        let task = build_task(&sp, 0).unwrap();
        let data = Dataset::draw(task.as_ref(), 20_000, &mut Pcg32::new(4, streams::TRAIN_DATA)).unwrap();
        let flipped = (0..data.len()).filter(|&i| data.labels[i] != task.clean_label(data.row(i))).count();
        let rate = flipped as f64 / data.len() as f64;
        assert!((rate - 0.2).abs() < 0.015, "flip rate {rate}");
    }

    #[test]
    fn noise_does_not_change_the_inputs() {
        let clean = build_task(&spec("sparse_parity", 12, 3), 8).unwrap();
        let mut sp = spec("sparse_parity", 12, 3);
        sp.noise = 0.3;
        let noisy = build_task(&sp, 8).unwrap();
        let a = Dataset::draw(clean.as_ref(), 50, &mut Pcg32::new(1, streams::TRAIN_DATA)).unwrap();
        let b = Dataset::draw(noisy.as_ref(), 50, &mut Pcg32::new(1, streams::TRAIN_DATA)).unwrap();
        assert_eq!(a.tokens, b.tokens);
    }
}
