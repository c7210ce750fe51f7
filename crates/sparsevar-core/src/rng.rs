//! Seeded random numbers.
//!
//! [`Pcg32`] is O'Neill's PCG-XSH-RR 64/32 generator, implemented here rather than taken from a
//! crate so that a seed names the same stream of numbers forever, whatever dependency versions
//! the workspace moves to. Every derived draw ([`Pcg32::uniform`], [`Pcg32::below`],
//! [`Pcg32::normal`], ...) is defined in this file and consumes a documented number of raw
//! outputs, so results are reproducible bit for bit.
//!
//! One member seed feeds several independent consumers (weight init, training data, batches,
//! ...); each consumer uses its own PCG stream, named in [`streams`], so that adding draws to
//! one consumer never shifts the numbers another one sees.

/// PCG multiplier for the 64-bit LCG state (from the reference implementation).
const PCG_MULT: u64 = 6_364_136_223_846_793_005;

/// The PCG-XSH-RR 64/32 generator (`pcg32` of the reference C library).
///
/// Seeding follows the reference `pcg32_srandom_r(initstate, initseq)`: the seed is the initial
/// state and the stream selects one of 2^63 distinct sequences.
///
/// It serializes as its two words, so a checkpoint can store a stream's position and a
/// resumed run draws exactly the numbers the uninterrupted one draws.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pcg32 {
    /// The 64-bit LCG state.
    state: u64,
    /// The LCG increment; always odd, `(stream << 1) | 1`.
    inc: u64,
}

impl Pcg32 {
    /// A generator seeded like the reference `pcg32_srandom_r(seed, stream)`.
    ///
    /// Generators with the same seed but different streams produce unrelated sequences; see
    /// [`streams`] for the stream assigned to each consumer.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Pcg32 { state: 0, inc: (stream << 1) | 1 };
        rng.step();
        rng.state = rng.state.wrapping_add(seed);
        rng.step();
        rng
    }

    /// Advance the LCG state by one step.
    #[inline]
    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// The next 32 uniformly distributed bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.step();
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// The next 64 uniformly distributed bits: two [`Pcg32::next_u32`] outputs, the first one
    /// in the high half.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits (the top 53 bits of one
    /// [`Pcg32::next_u64`]).
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's multiply-and-reject method on
    /// [`Pcg32::next_u64`]).
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Pcg32::below(0): the range 0..0 is empty");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            // Reject the values that would make some residues more likely than others.
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// A standard normal `f64` (mean 0, variance 1) by the Box–Muller transform.
    ///
    /// Consumes exactly two [`Pcg32::uniform`] draws and returns the cosine branch only; the
    /// sine branch is not cached, so every call advances the stream by the same amount.
    pub fn normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `true` with probability `p` (one [`Pcg32::uniform`] draw; `p <= 0` is never true and
    /// `p >= 1` always is).
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Shuffle `items` uniformly in place (Fisher–Yates, from the back, using
    /// [`Pcg32::below`]).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` distinct elements of `0..n`, chosen uniformly among all such sets and returned in
    /// increasing order (a partial Fisher–Yates shuffle of `0..n`, then a sort).
    ///
    /// The shuffled array is kept sparse: only the positions a swap moved are stored, so a
    /// subset costs O(k) time and memory whatever n is (s of T positions, T as large as a
    /// task allows), with the same draws and result as shuffling all of `0..n`.
    ///
    /// # Panics
    /// If `k > n`.
    pub fn subset(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "Pcg32::subset: cannot choose {k} distinct elements of 0..{n}");
        // moved[p] = the value now at position p, where a swap changed it.
        let mut moved: std::collections::HashMap<usize, usize> = std::collections::HashMap::with_capacity(2 * k);
        let mut out = Vec::with_capacity(k);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            let at_j = moved.get(&j).copied().unwrap_or(j);
            let at_i = moved.get(&i).copied().unwrap_or(i);
            moved.insert(j, at_i);
            out.push(at_j);
        }
        out.sort_unstable();
        out
    }
}

/// The PCG stream of each consumer of a member seed: `Pcg32::new(member_seed, streams::X)`.
///
/// Keeping consumers on separate streams means that, for example, changing the batch size
/// (more or fewer [`BATCH`](crate::rng::streams::BATCH) draws) leaves the initial weights and the datasets unchanged.
pub mod streams {
    /// Model parameter initialization.
    pub const INIT: u64 = 1;
    /// The fixed training set.
    pub const TRAIN_DATA: u64 = 2;
    /// Mini-batch selection from the training set.
    pub const BATCH: u64 = 3;
    /// The held-out test set.
    pub const TEST_DATA: u64 = 4;
    /// The relevant subset S of a task, when not given explicitly.
    pub const SUBSET: u64 = 5;
    /// The truth table of a random junta.
    pub const TABLE: u64 = 6;
    /// Fresh samples for online (infinite-data) training.
    pub const ONLINE: u64 = 7;
    /// Fresh samples to evaluate a saved model on (`sparsevar eval --samples`).
    pub const EVAL: u64 = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pcg32_reference_output() {
        // pcg32-demo: pcg32_srandom_r(&rng, 42u, 54u), first six pcg32_random_r outputs.
        let mut rng = Pcg32::new(42, 54);
        let expected = [0xa15c02b7u32, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e];
        for &e in &expected {
            assert_eq!(rng.next_u32(), e);
        }
    }

    #[test]
    fn next_u64_is_two_u32_high_first() {
        let mut a = Pcg32::new(7, 3);
        let mut b = a.clone();
        let hi = u64::from(b.next_u32());
        let lo = u64::from(b.next_u32());
        assert_eq!(a.next_u64(), (hi << 32) | lo);
    }

    #[test]
    fn streams_differ_and_seeds_repeat() {
        let a: Vec<u32> = {
            let mut r = Pcg32::new(1, streams::INIT);
            (0..8).map(|_| r.next_u32()).collect()
        };
        let b: Vec<u32> = {
            let mut r = Pcg32::new(1, streams::TRAIN_DATA);
            (0..8).map(|_| r.next_u32()).collect()
        };
        let c: Vec<u32> = {
            let mut r = Pcg32::new(1, streams::INIT);
            (0..8).map(|_| r.next_u32()).collect()
        };
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn uniform_in_unit_interval_with_mean_half() {
        let mut rng = Pcg32::new(3, 0);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.01);
    }

    #[test]
    fn below_in_range_and_roughly_uniform() {
        let mut rng = Pcg32::new(11, 0);
        let n = 7u64;
        let draws = 70_000;
        let mut counts = [0usize; 7];
        for _ in 0..draws {
            let x = rng.below(n);
            assert!(x < n);
            counts[x as usize] += 1;
        }
        let expected = draws as f64 / n as f64;
        for &c in &counts {
            // Standard deviation is about 90; allow a generous 6 sigma.
            assert!((c as f64 - expected).abs() < 550.0, "counts {counts:?}");
        }
        assert_eq!(rng.below(1), 0);
        // Huge ranges stay in range too.
        for _ in 0..1000 {
            assert!(rng.below(u64::MAX - 3) < u64::MAX - 3);
        }
    }

    #[test]
    #[should_panic(expected = "below(0)")]
    fn below_zero_panics() {
        Pcg32::new(0, 0).below(0);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Pcg32::new(5, 0);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        assert!(xs.iter().all(|x| x.is_finite()));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "var {var}");
    }

    #[test]
    fn bernoulli_frequency() {
        let mut rng = Pcg32::new(9, 0);
        let n = 100_000;
        let ones = (0..n).filter(|_| rng.bernoulli(0.3)).count();
        assert!((ones as f64 / n as f64 - 0.3).abs() < 0.01);
        assert!(!rng.bernoulli(0.0));
        assert!(rng.bernoulli(1.0));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = Pcg32::new(13, 0);
        let mut v: Vec<usize> = (0..50).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
        let mut empty: [u8; 0] = [];
        rng.shuffle(&mut empty);
    }

    #[test]
    fn subset_distinct_sorted_and_covers_range() {
        let mut rng = Pcg32::new(17, streams::SUBSET);
        let mut seen = [0usize; 10];
        for _ in 0..2000 {
            let s = rng.subset(10, 3);
            assert_eq!(s.len(), 3);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "not sorted/distinct: {s:?}");
            assert!(s.iter().all(|&i| i < 10));
            for &i in &s {
                seen[i] += 1;
            }
        }
        // Each position is included with probability 3/10: about 600 times.
        assert!(seen.iter().all(|&c| (450..750).contains(&c)), "{seen:?}");
        assert_eq!(rng.subset(5, 5), vec![0, 1, 2, 3, 4]);
        assert!(rng.subset(5, 0).is_empty());
    }

    #[test]
    fn a_subset_is_that_of_shuffling_the_whole_range_and_needs_no_memory_for_it() {
        // The dense partial shuffle the sparse one replaces: every seed's S must stay the same.
        let dense = |rng: &mut Pcg32, n: usize, k: usize| {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + rng.below((n - i) as u64) as usize;
                pool.swap(i, j);
            }
            pool.truncate(k);
            pool.sort_unstable();
            pool
        };
        for seed in 0..200 {
            for &(n, k) in &[(8, 2), (16, 3), (64, 2), (256, 3), (50, 50), (7, 0), (1000, 17)] {
                let (mut a, mut b) = (Pcg32::new(seed, streams::SUBSET), Pcg32::new(seed, streams::SUBSET));
                assert_eq!(a.subset(n, k), dense(&mut b, n, k), "seed {seed}, {k} of {n}");
                assert_eq!(a.next_u32(), b.next_u32(), "the same draws");
            }
        }
        // Three of 2^60 positions: a dense pool would need 2^63 bytes.
        let s = Pcg32::new(1, streams::SUBSET).subset(1 << 60, 3);
        assert!(s.len() == 3 && s.windows(2).all(|w| w[0] < w[1]) && s[2] < 1 << 60);
    }
}
