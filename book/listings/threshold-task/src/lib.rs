//! threshold-task: a task plugin for sparsevar — `sparse_threshold`, whose label is 1 when
//! at least `k` of the `s` relevant bits are 1.
//!
//! One family holds three built-in tasks: `k = 1` is `sparse_or`, `k = s` is `sparse_and`,
//! and `k = (s + 1) / 2` with `s` odd is `sparse_majority`. Inputs, `S` and label noise are
//! drawn exactly as the built-in tasks draw them, so for those `k` a member sees the very
//! same samples as under the built-in kind (the tests check it).
//!
//! Config: `task: { kind: sparse_threshold, T: 16, s: 3, params: { k: 2 } }`.

#![warn(missing_docs)]

use sparsevar_plugin::{Pcg32, Registrar, Task, TaskError, TaskSpec, streams};

/// The registry name of the task kind.
pub const KIND: &str = "sparse_threshold";

/// Label 1 iff at least `k` of the bits at `S` are 1.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseThreshold {
    t: usize,
    k: usize,
    relevant: Vec<usize>,
    bias: f64,
    noise: f64,
}

/// Build a member's task from its config section: `task.params.k` (default: a majority,
/// `(s + 1) / 2`), `bias`, `noise`, and `S` from `subset`, `subset_seed` or the member seed.
/// A bad value is `TaskError::invalid`, with a message that names the key.
pub fn build(spec: &TaskSpec, member_seed: u64) -> Result<Box<dyn Task>, TaskError> {
    let (t, s) = (spec.t, spec.s);
    if t == 0 || s == 0 || s > t {
        return Err(TaskError::invalid(format!("task.s = {s} with task.T = {t}: s must be between 1 and T")));
    }
    let mut k = s.div_ceil(2);
    for (key, &value) in &spec.params {
        match key.as_str() {
            "k" => {
                if value.fract() != 0.0 || value < 1.0 || value > s as f64 {
                    return Err(TaskError::invalid(format!("task.params.k must be a whole number from 1 to s = {s} (got {value})")));
                }
                k = value as usize;
            }
            other => return Err(TaskError::invalid(format!("task.params.{other}: task kind `{KIND}` takes no option `{other}`; it takes: k"))),
        }
    }
    if !(spec.bias > 0.0 && spec.bias < 1.0) {
        return Err(TaskError::invalid(format!("task.bias must be in (0, 1) (got {}): it is P[x_i = 1]", spec.bias)));
    }
    if !(0.0..=0.5).contains(&spec.noise) {
        return Err(TaskError::invalid(format!("task.noise must be in [0, 0.5] (got {}): it is the probability that a label is flipped", spec.noise)));
    }
    let relevant = match &spec.subset {
        Some(given) => {
            let mut sorted = given.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != s || sorted.iter().any(|&p| p >= t) {
                return Err(TaskError::invalid(format!("task.subset {given:?} must list s = {s} distinct positions from 0 to T-1 = {}", t - 1)));
            }
            sorted
        }
        // The built-in tasks' draw, so a member gets the same S under every kind.
        None => Pcg32::new(spec.subset_seed.unwrap_or(member_seed), streams::SUBSET).subset(t, s),
    };
    Ok(Box::new(SparseThreshold { t, k, relevant, bias: spec.bias, noise: spec.noise }))
}

impl Task for SparseThreshold {
    fn name(&self) -> &str {
        KIND
    }
    fn seq_len(&self) -> usize {
        self.t
    }
    fn alphabet(&self) -> usize {
        2
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn relevant(&self) -> &[usize] {
        &self.relevant
    }
    fn clean_label(&self, tokens: &[u8]) -> u8 {
        let ones = self.relevant.iter().filter(|&&i| tokens[i] == 1).count();
        u8::from(ones >= self.k)
    }
    /// The built-in tasks' order of draws: one `bernoulli(bias)` per token, position 0
    /// first, then one `bernoulli(noise)` that flips the label.
    /// It cannot fail, so it always returns `Ok`; a task that can (a table that runs out, a
    /// file it reads) returns `Err(TaskError::Failed { .. })`, and the trainer stops that
    /// member instead of training on a made-up sample.
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        for x in tokens.iter_mut() {
            *x = u8::from(rng.bernoulli(self.bias));
        }
        let flip = rng.bernoulli(self.noise);
        Ok(self.clean_label(tokens) ^ u8::from(flip))
    }
    fn describe(&self) -> String {
        format!("{KIND} T={} s={} S={:?} k={} p={} noise={}", self.t, self.relevant.len(), self.relevant, self.k, self.bias, self.noise)
    }
}

/// Register `sparse_threshold`.
pub fn register(r: &mut dyn Registrar) {
    r.task(KIND, build);
}

sparsevar_plugin::export_plugin!(register);
