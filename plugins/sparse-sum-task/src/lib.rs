//! sparse-sum-task: a task plugin for sparsevar — `sparse_sum`, sparse parity over an
//! alphabet of `q` letters.
//!
//! Inputs are `T` tokens drawn uniformly from `0..q`; the label is the sum of the tokens at
//! the `s` relevant positions `S`, modulo `q` (so there are `q` classes). For `q = 2` it is
//! exactly `sparse_parity` (same `S` for the same seed, same labels). The design decision
//! that shapes it: keep parity's defining property — the label is uniform and independent of
//! any proper subset of the relevant tokens, so nothing short of all of `S` helps — while
//! letting the alphabet grow, which makes every wrong guess about `S` look like noise over
//! `q` classes instead of 2.
//!
//! Config (`task.params` takes `alphabet`, default 4):
//!
//! ```yaml
//! task: { kind: sparse_sum, T: 16, s: 3, params: { alphabet: 5 } }
//! ```
//!
//! `subset`, `subset_seed` and `noise` mean what they mean for the built-in tasks (noise
//! replaces the label by one of the other `q − 1` classes, uniformly); `bias` is a Boolean
//! option and is refused unless left at 0.5.

#![warn(missing_docs)]

use sparsevar_plugin::{Pcg32, Registrar, Task, TaskError, TaskSpec, streams};

/// The registry name of the task kind.
pub const KIND: &str = "sparse_sum";

/// The alphabet size when `task.params.alphabet` is absent.
pub const DEFAULT_ALPHABET: usize = 4;

/// Sum of the tokens at `S`, modulo `q`.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseSum {
    t: usize,
    q: usize,
    relevant: Vec<usize>,
    noise: f64,
}

impl SparseSum {
    /// A task over `t` tokens from `0..q` whose label depends on the positions `relevant`
    /// (sorted here); labels are replaced by another class with probability `noise`.
    pub fn new(t: usize, q: usize, mut relevant: Vec<usize>, noise: f64) -> Result<Self, String> {
        if t == 0 {
            return Err(format!("task.T must be at least 1 (got {t})"));
        }
        if !(2..=256).contains(&q) {
            return Err(format!("task.params.alphabet must be a whole number from 2 to 256 (got {q}): tokens and labels are bytes"));
        }
        if !(0.0..=0.5).contains(&noise) {
            return Err(format!("task.noise must be in [0, 0.5] (got {noise}): it is the probability that a label is replaced"));
        }
        relevant.sort_unstable();
        if let Some(&pos) = relevant.iter().find(|&&p| p >= t) {
            return Err(format!("task.subset position {pos} is out of range for task.T = {t}: positions are 0-based, from 0 to T-1"));
        }
        if let Some(w) = relevant.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("task.subset lists position {} more than once: positions must be distinct", w[0]));
        }
        if relevant.is_empty() {
            return Err("task.s must be at least 1 (got 0): s must be between 1 and T".into());
        }
        Ok(SparseSum { t, q, relevant, noise })
    }
}

/// Build a member's task from its config section (see the crate docs for the keys); an
/// error names the key (`TaskError::Invalid`).
pub fn build(spec: &TaskSpec, member_seed: u64) -> Result<Box<dyn Task>, TaskError> {
    checked(spec, member_seed).map_err(TaskError::invalid)
}

fn checked(spec: &TaskSpec, member_seed: u64) -> Result<Box<dyn Task>, String> {
    let mut q = DEFAULT_ALPHABET;
    for (key, &value) in &spec.params {
        match key.as_str() {
            "alphabet" => {
                if value.fract() != 0.0 || !(2.0..=256.0).contains(&value) {
                    return Err(format!("task.params.alphabet must be a whole number from 2 to 256 (got {value})"));
                }
                q = value as usize;
            }
            other => return Err(format!("task.params.{other}: task kind `{KIND}` takes no option `{other}`; it takes: alphabet")),
        }
    }
    let (t, s) = (spec.t, spec.s);
    if t == 0 {
        return Err(format!("task.T must be at least 1 (got {t})"));
    }
    if s == 0 {
        return Err(format!("task.s must be at least 1 (got {s}): s must be between 1 and T"));
    }
    if s > t {
        return Err(format!("task.s = {s} exceeds task.T = {t}: s must be between 1 and T"));
    }
    if spec.bias != 0.5 {
        return Err(format!("task.bias = {} is not supported by `{KIND}`: its tokens are uniform over 0..alphabet; remove task.bias", spec.bias));
    }
    let subset = match &spec.subset {
        Some(given) if given.len() != s => {
            return Err(format!("task.subset has {} positions but task.s = {s}: list exactly s positions, or omit task.subset to draw one", given.len()));
        }
        Some(given) => given.clone(),
        // The same draw as the built-in tasks, so a member gets the same S for every kind.
        None => Pcg32::new(spec.subset_seed.unwrap_or(member_seed), streams::SUBSET).subset(t, s),
    };
    Ok(Box::new(SparseSum::new(t, q, subset, spec.noise)?))
}

impl Task for SparseSum {
    fn name(&self) -> &str {
        KIND
    }
    fn seq_len(&self) -> usize {
        self.t
    }
    fn alphabet(&self) -> usize {
        self.q
    }
    fn num_classes(&self) -> usize {
        self.q
    }
    fn relevant(&self) -> &[usize] {
        &self.relevant
    }
    fn clean_label(&self, tokens: &[u8]) -> u8 {
        (self.relevant.iter().map(|&i| tokens[i] as usize).sum::<usize>() % self.q) as u8
    }
    /// Tokens by `rng.below(q)` in order, then one `bernoulli(noise)` draw, then (only when
    /// it says so) one `below(q − 1)` for the replacement class.
    /// A buffer of the wrong length is an error (the guard reports it naming this plugin).
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        if tokens.len() != self.t {
            return Err(TaskError::BufferLength { task: KIND.into(), t: self.t, len: tokens.len() });
        }
        for x in tokens.iter_mut() {
            *x = rng.below(self.q as u64) as u8;
        }
        let y = self.clean_label(tokens) as usize;
        Ok(if rng.bernoulli(self.noise) { ((y + 1 + rng.below(self.q as u64 - 1) as usize) % self.q) as u8 } else { y as u8 })
    }
    fn describe(&self) -> String {
        format!("{KIND} T={} s={} S={:?} q={} noise={}", self.t, self.relevant.len(), self.relevant, self.q, self.noise)
    }
}

/// Register `sparse_sum`.
pub fn register(r: &mut dyn Registrar) {
    r.task(KIND, build);
}

sparsevar_plugin::export_plugin!(register);
