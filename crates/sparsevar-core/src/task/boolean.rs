//! The built-in sparse Boolean tasks.

use super::{Task, TaskError};
use crate::rng::{Pcg32, streams};

/// The largest `s` a [`BooleanKind::Junta`] accepts (its truth table has `2^s` entries).
pub const MAX_JUNTA_S: usize = 20;

/// Which Boolean function of the relevant bits `x_S` is the label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BooleanKind {
    /// `sparse_parity`: the XOR of the bits on `S`.
    Parity,
    /// `sparse_majority`: 1 iff more ones than zeros on `S` (`s` must be odd).
    Majority,
    /// `sparse_and`: 1 iff every bit on `S` is 1.
    And,
    /// `sparse_or`: 1 iff some bit on `S` is 1.
    Or,
    /// `junta`: a random function of the bits on `S`, given by a truth table of `2^s` labels
    /// (`s <= MAX_JUNTA_S`).
    ///
    /// The table is drawn from `Pcg32::new(table_seed, streams::TABLE)`, one uniform bit per
    /// entry (the top bit of one `next_u32`), entry 0 first; a whole table is redrawn until
    /// the function depends on every one of the `s` relevant bits, i.e. for each `j` some
    /// pair of inputs differing only in bit `S[j]` gets different labels. So [`Task::relevant`]
    /// is exactly the set of variables the label depends on (and the function is never
    /// constant). The table is *not* guaranteed balanced. Entry `k` is the label of the inputs
    /// whose relevant bits satisfy `x[S[j]] = (k >> j) & 1` for every `j` (bit `j` of the index
    /// is the `j`-th smallest relevant position).
    Junta {
        /// Seed of the truth table.
        table_seed: u64,
    },
}

impl BooleanKind {
    /// The registry name of the kind (one of [`super::BUILTIN_TASKS`]).
    pub fn name(&self) -> &'static str {
        match self {
            BooleanKind::Parity => "sparse_parity",
            BooleanKind::Majority => "sparse_majority",
            BooleanKind::And => "sparse_and",
            BooleanKind::Or => "sparse_or",
            BooleanKind::Junta { .. } => "junta",
        }
    }
}

/// The input distribution and label noise shared by every Boolean task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BooleanOptions {
    /// `P[x_i = 1]`, the same for every position and independent across positions; in (0, 1).
    pub bias: f64,
    /// The probability that a sampled label is flipped, independently per sample; in [0, 0.5].
    pub noise: f64,
}

impl Default for BooleanOptions {
    /// Uniform inputs (`bias = 0.5`) and clean labels (`noise = 0`).
    fn default() -> Self {
        BooleanOptions { bias: 0.5, noise: 0.0 }
    }
}

impl BooleanOptions {
    /// Check `bias ∈ (0, 1)` and `noise ∈ [0, 0.5]` (NaN fails both).
    pub fn validate(&self) -> Result<(), TaskError> {
        if !(self.bias > 0.0 && self.bias < 1.0) {
            return Err(TaskError::BadBias { bias: self.bias });
        }
        if !(self.noise >= 0.0 && self.noise <= 0.5) {
            return Err(TaskError::BadNoise { noise: self.noise });
        }
        Ok(())
    }
}

/// Check `T >= 1`, `1 <= s <= T`, and the kind's own constraint on `s`.
pub(super) fn check_sizes(kind: BooleanKind, t: usize, s: usize) -> Result<(), TaskError> {
    if t == 0 {
        return Err(TaskError::EmptySequence { t });
    }
    if s == 0 {
        return Err(TaskError::EmptySubset { s });
    }
    if s > t {
        return Err(TaskError::SubsetTooLarge { s, t });
    }
    match kind {
        BooleanKind::Majority if s.is_multiple_of(2) => Err(TaskError::EvenMajority { s }),
        BooleanKind::Junta { .. } if s > MAX_JUNTA_S => Err(TaskError::JuntaTooLarge { s }),
        _ => Ok(()),
    }
}

/// Whether the truth table (indexed as in [`BooleanKind::Junta`]) depends on each of its
/// `s` input bits.
fn depends_on_every_bit(table: &[u8], s: usize) -> bool {
    (0..s).all(|j| {
        let bit = 1usize << j;
        (0..table.len()).any(|k| k & bit == 0 && table[k] != table[k | bit])
    })
}

/// Draw a junta truth table as documented on [`BooleanKind::Junta`].
fn draw_junta_table(s: usize, table_seed: u64) -> Vec<u8> {
    let mut rng = Pcg32::new(table_seed, streams::TABLE);
    loop {
        let table: Vec<u8> = (0..1usize << s).map(|_| (rng.next_u32() >> 31) as u8).collect();
        if depends_on_every_bit(&table, s) {
            return table;
        }
    }
}

/// A sparse Boolean task: `T` input bits, i.i.d. with `P[x_i = 1] = bias`, and a label that
/// is a fixed Boolean function ([`BooleanKind`]) of the bits at the relevant positions `S`,
/// flipped with probability `noise`.
#[derive(Clone, Debug, PartialEq)]
pub struct BooleanTask {
    /// The function of the relevant bits.
    kind: BooleanKind,
    /// The sequence length `T`.
    t: usize,
    /// The relevant positions `S`, sorted and distinct.
    subset: Vec<usize>,
    /// Input bias and label noise.
    options: BooleanOptions,
    /// The junta truth table (`2^s` labels); empty for the other kinds.
    table: Vec<u8>,
}

impl BooleanTask {
    /// A task of `kind` on `t` bits whose label depends on the positions in `subset` (in any
    /// order; stored sorted), so `s = subset.len()`.
    ///
    /// Fails when `t == 0`, `subset` is empty or longer than `t`, the kind rejects
    /// `s` (even majority, junta beyond [`MAX_JUNTA_S`]), the options are out of range, or a
    /// position is `>= t` or repeated.
    pub fn new(kind: BooleanKind, t: usize, mut subset: Vec<usize>, options: BooleanOptions) -> Result<Self, TaskError> {
        let s = subset.len();
        check_sizes(kind, t, s)?;
        options.validate()?;
        if let Some(&pos) = subset.iter().find(|&&p| p >= t) {
            return Err(TaskError::SubsetOutOfRange { pos, t });
        }
        subset.sort_unstable();
        if let Some(w) = subset.windows(2).find(|w| w[0] == w[1]) {
            return Err(TaskError::SubsetDuplicate { pos: w[0] });
        }
        let table = match kind {
            BooleanKind::Junta { table_seed } => draw_junta_table(s, table_seed),
            _ => Vec::new(),
        };
        Ok(BooleanTask { kind, t, subset, options, table })
    }

    /// The Boolean function of the relevant bits.
    pub fn kind(&self) -> BooleanKind {
        self.kind
    }

    /// Input bias and label noise.
    pub fn options(&self) -> BooleanOptions {
        self.options
    }

    /// The junta truth table (`2^s` labels, indexed as documented on [`BooleanKind::Junta`]),
    /// or `None` for the other kinds.
    pub fn table(&self) -> Option<&[u8]> {
        match self.kind {
            BooleanKind::Junta { .. } => Some(&self.table),
            _ => None,
        }
    }
}

impl Task for BooleanTask {
    fn name(&self) -> &str {
        self.kind.name()
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
        &self.subset
    }

    /// The label of `tokens` (bits, 0 or 1) before noise.
    fn clean_label(&self, tokens: &[u8]) -> u8 {
        debug_assert_eq!(tokens.len(), self.t, "clean_label: expected T = {} tokens", self.t);
        debug_assert!(self.subset.iter().all(|&p| tokens[p] <= 1), "clean_label: Boolean tokens must be 0 or 1");
        let bits = self.subset.iter().map(|&p| tokens[p] & 1);
        match self.kind {
            BooleanKind::Parity => bits.fold(0, |acc, b| acc ^ b),
            BooleanKind::Majority => {
                let ones = bits.map(usize::from).sum::<usize>();
                u8::from(2 * ones > self.subset.len())
            }
            BooleanKind::And => u8::from(bits.into_iter().all(|b| b == 1)),
            BooleanKind::Or => u8::from(bits.into_iter().any(|b| b == 1)),
            BooleanKind::Junta { .. } => {
                let index = bits.enumerate().fold(0usize, |acc, (j, b)| acc | (usize::from(b) << j));
                self.table[index]
            }
        }
    }

    /// Draws `T` bits with `bias` (one `uniform` each, position 0 first), then one more
    /// `uniform` that decides the label flip. That last draw happens even when `noise = 0`,
    /// so tasks that differ only in noise see the same inputs from the same generator.
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        if tokens.len() != self.t {
            return Err(TaskError::BufferLength { task: self.kind.name().to_string(), t: self.t, len: tokens.len() });
        }
        for x in tokens.iter_mut() {
            *x = u8::from(rng.bernoulli(self.options.bias));
        }
        let flip = rng.bernoulli(self.options.noise);
        Ok(self.clean_label(tokens) ^ u8::from(flip))
    }

    /// `"<name> T=<T> s=<s> S=[..] p=<bias> noise=<noise>"`, and for a junta also
    /// `table_seed=<seed>` and, when `s <= 5`, `table=<bits, entry 0 first>`.
    fn describe(&self) -> String {
        let mut line =
            format!("{} T={} s={} S={:?} p={} noise={}", self.kind.name(), self.t, self.subset.len(), self.subset, self.options.bias, self.options.noise);
        if let BooleanKind::Junta { table_seed } = self.kind {
            line.push_str(&format!(" table_seed={table_seed}"));
            if self.subset.len() <= 5 {
                let bits: String = self.table.iter().map(|&b| char::from(b'0' + b)).collect();
                line.push_str(&format!(" table={bits}"));
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: BooleanKind, t: usize, subset: &[usize]) -> BooleanTask {
        BooleanTask::new(kind, t, subset.to_vec(), BooleanOptions::default()).unwrap()
    }

    #[test]
    fn parity_clean_labels() {
        let p = task(BooleanKind::Parity, 3, &[0, 2]);
        assert_eq!(p.clean_label(&[1, 0, 1]), 0);
        assert_eq!(p.clean_label(&[1, 1, 0]), 1);
        assert_eq!(p.clean_label(&[0, 1, 0]), 0);
        assert_eq!(p.clean_label(&[0, 0, 1]), 1);
        let p3 = task(BooleanKind::Parity, 5, &[4, 1, 3]);
        assert_eq!(p3.relevant(), &[1, 3, 4]);
        assert_eq!(p3.clean_label(&[0, 1, 0, 1, 1]), 1);
        assert_eq!(p3.clean_label(&[1, 1, 1, 1, 0]), 0);
    }

    #[test]
    fn majority_clean_labels() {
        let m = task(BooleanKind::Majority, 5, &[0, 1, 2]);
        assert_eq!(m.clean_label(&[1, 1, 0, 0, 0]), 1);
        assert_eq!(m.clean_label(&[1, 0, 0, 1, 1]), 0);
        assert_eq!(m.clean_label(&[1, 1, 1, 0, 0]), 1);
        assert_eq!(m.clean_label(&[0, 0, 0, 1, 1]), 0);
    }

    #[test]
    fn and_or_clean_labels() {
        let a = task(BooleanKind::And, 4, &[1, 3]);
        assert_eq!(a.clean_label(&[0, 1, 0, 1]), 1);
        assert_eq!(a.clean_label(&[1, 1, 1, 0]), 0);
        let o = task(BooleanKind::Or, 4, &[1, 3]);
        assert_eq!(o.clean_label(&[1, 0, 1, 0]), 0);
        assert_eq!(o.clean_label(&[0, 0, 0, 1]), 1);
        assert_eq!(o.clean_label(&[0, 1, 0, 1]), 1);
    }

    #[test]
    fn junta_reads_its_table() {
        let j = task(BooleanKind::Junta { table_seed: 5 }, 6, &[4, 1]);
        let table = j.table().unwrap().to_vec();
        assert_eq!(table.len(), 4);
        // Bit 0 of the index is position 1 (the smaller), bit 1 is position 4.
        assert_eq!(j.clean_label(&[0, 0, 0, 0, 0, 0]), table[0]);
        assert_eq!(j.clean_label(&[1, 1, 1, 1, 0, 1]), table[1]);
        assert_eq!(j.clean_label(&[0, 0, 0, 0, 1, 0]), table[2]);
        assert_eq!(j.clean_label(&[0, 1, 0, 0, 1, 0]), table[3]);
        assert!(task(BooleanKind::Parity, 3, &[0]).table().is_none());
        assert!(j.describe().contains("table_seed=5 table="));
    }

    #[test]
    fn junta_depends_on_every_relevant_bit() {
        for seed in 0..200 {
            for s in 1..=6 {
                let j = task(BooleanKind::Junta { table_seed: seed }, 8, &(0..s).collect::<Vec<_>>());
                let table = j.table().unwrap();
                assert_eq!(table.len(), 1 << s);
                assert!(depends_on_every_bit(table, s), "seed {seed} s {s}");
                assert!(table.contains(&0) && table.contains(&1));
            }
        }
        assert!(!depends_on_every_bit(&[0, 1, 0, 1], 2));
        assert!(!depends_on_every_bit(&[1, 1], 1));
        assert!(depends_on_every_bit(&[0, 1, 1, 0], 2));
        // Same seed, same table.
        let a = task(BooleanKind::Junta { table_seed: 9 }, 10, &[0, 1, 2, 3]);
        let b = task(BooleanKind::Junta { table_seed: 9 }, 10, &[0, 1, 2, 3]);
        assert_eq!(a.table(), b.table());
    }

    #[test]
    fn largest_junta_builds() {
        let j = task(BooleanKind::Junta { table_seed: 1 }, 20, &(0..20).collect::<Vec<_>>());
        assert_eq!(j.table().unwrap().len(), 1 << 20);
        assert!(!j.describe().contains("table="));
    }

    #[test]
    fn constructor_validates() {
        let o = BooleanOptions::default();
        assert_eq!(BooleanTask::new(BooleanKind::Parity, 3, vec![], o), Err(TaskError::EmptySubset { s: 0 }));
        assert_eq!(BooleanTask::new(BooleanKind::Parity, 3, vec![0, 3], o), Err(TaskError::SubsetOutOfRange { pos: 3, t: 3 }));
        assert_eq!(BooleanTask::new(BooleanKind::Parity, 3, vec![1, 1], o), Err(TaskError::SubsetDuplicate { pos: 1 }));
        assert_eq!(BooleanTask::new(BooleanKind::Majority, 3, vec![0, 1], o), Err(TaskError::EvenMajority { s: 2 }));
        let bad = BooleanOptions { bias: 0.5, noise: 0.51 };
        assert_eq!(BooleanTask::new(BooleanKind::Or, 3, vec![0], bad), Err(TaskError::BadNoise { noise: 0.51 }));
    }

    #[test]
    fn noise_free_samples_match_clean_label() {
        let t = task(BooleanKind::Majority, 9, &[0, 4, 8]);
        let mut rng = Pcg32::new(2, streams::ONLINE);
        let mut buf = [0u8; 9];
        for _ in 0..500 {
            let y = t.sample(&mut rng, &mut buf).unwrap();
            assert_eq!(y, t.clean_label(&buf));
        }
    }
}
