//! Non-neural learners that mark the ends of the sample-complexity scale for sparse parity.
//!
//! - Gaussian elimination over GF(2) learns any parity (sparse or not) from about T samples
//!   in polynomial time: it ignores sparsity.
//! - Exhaustive search over s-subsets learns from about log2 C(T, s) samples but takes
//!   C(T, s) time: it uses sparsity fully.
//! - log2 C(T, s) itself is the information-theoretic floor.

use sparsevar_core::task::Dataset;

/// log2 of the binomial coefficient C(n, k).
pub fn log2_binomial(n: usize, k: usize) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    (0..k).map(|i| ((n - i) as f64).log2() - ((i + 1) as f64).log2()).sum()
}

/// C(n, k) as f64 (exact for the sizes used here).
pub fn binomial(n: usize, k: usize) -> f64 {
    2f64.powf(log2_binomial(n, k)).round()
}

/// Bit vectors of up to 64·W bits.
fn pack(row: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; row.len().div_ceil(64)];
    for (i, &b) in row.iter().enumerate() {
        if b == 1 {
            v[i / 64] |= 1 << (i % 64);
        }
    }
    v
}

/// Learn a parity by Gaussian elimination over GF(2): returns the parity's support if the
/// training set determines it uniquely, `None` if several parities fit (too few samples) or
/// none does (noisy labels).
pub fn gf2_parity(data: &Dataset) -> Option<Vec<usize>> {
    let t = data.t;
    let words = (t + 1).div_ceil(64);
    // Each row: T coefficient bits, then the label bit at position T.
    let mut rows: Vec<Vec<u64>> = (0..data.len())
        .map(|i| {
            let mut r = pack(data.row(i));
            r.resize(words, 0);
            if data.labels[i] == 1 {
                r[t / 64] |= 1 << (t % 64);
            }
            r
        })
        .collect();
    let bit = |r: &[u64], j: usize| (r[j / 64] >> (j % 64)) & 1 == 1;
    let mut pivot_row = 0;
    let mut pivots = Vec::new();
    for col in 0..t {
        let Some(p) = (pivot_row..rows.len()).find(|&i| bit(&rows[i], col)) else { continue };
        rows.swap(pivot_row, p);
        let pr = rows[pivot_row].clone();
        for (i, r) in rows.iter_mut().enumerate() {
            if i != pivot_row && bit(r, col) {
                for (a, b) in r.iter_mut().zip(&pr) {
                    *a ^= b;
                }
            }
        }
        pivots.push(col);
        pivot_row += 1;
    }
    // An all-zero coefficient row with label 1: inconsistent.
    if rows[pivot_row..].iter().any(|r| bit(r, t)) {
        return None;
    }
    if pivots.len() < t {
        return None; // a free variable: more than one parity fits
    }
    Some((0..t).filter(|&c| bit(&rows[c], t)).collect())
}

/// Outcome of the exhaustive subset search.
#[derive(Clone, Debug, PartialEq)]
pub enum SubsetSearch {
    /// Exactly one s-subset is consistent with the data: the learned S.
    Unique(Vec<usize>),
    /// Several s-subsets are consistent (too few samples); how many.
    Ambiguous(usize),
    /// No s-subset is consistent (noisy labels).
    None,
    /// C(T, s) exceeds the cap; not run.
    TooLarge,
}

/// Search every s-subset for one whose parity matches every label.
pub fn subset_search_parity(data: &Dataset, s: usize, cap: f64) -> SubsetSearch {
    let t = data.t;
    if binomial(t, s) > cap {
        return SubsetSearch::TooLarge;
    }
    let rows: Vec<Vec<u64>> = (0..data.len()).map(|i| pack(data.row(i))).collect();
    let mut found = Vec::new();
    let mut count = 0;
    let mut subset: Vec<usize> = (0..s).collect();
    loop {
        let consistent = rows.iter().zip(&data.labels).all(|(r, &y)| {
            let parity = subset.iter().fold(0u64, |acc, &j| acc ^ ((r[j / 64] >> (j % 64)) & 1));
            parity == y as u64
        });
        if consistent {
            count += 1;
            if count == 1 {
                found = subset.clone();
            }
        }
        // Next subset in lexicographic order.
        let mut i = s;
        loop {
            if i == 0 {
                return match count {
                    0 => SubsetSearch::None,
                    1 => SubsetSearch::Unique(found),
                    n => SubsetSearch::Ambiguous(n),
                };
            }
            i -= 1;
            if subset[i] < t - s + i {
                subset[i] += 1;
                for j in i + 1..s {
                    subset[j] = subset[j - 1] + 1;
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsevar_core::rng::Pcg32;
    use sparsevar_core::task::{TaskSpec, build_task};

    fn parity_data(t: usize, s: usize, m: usize, seed: u64) -> (Dataset, Vec<usize>) {
        let task = build_task(&TaskSpec::new("sparse_parity", t, s), seed).unwrap();
        (Dataset::draw(task.as_ref(), m, &mut Pcg32::new(seed, 2)).unwrap(), task.relevant().to_vec())
    }

    #[test]
    fn binomials() {
        assert_eq!(binomial(16, 3), 560.0);
        assert_eq!(binomial(128, 2), 8128.0);
        assert!((log2_binomial(64, 3) - 41664f64.log2()).abs() < 1e-9);
    }

    #[test]
    fn gf2_needs_about_t_samples_and_then_finds_s() {
        let (d, s) = parity_data(20, 3, 60, 1);
        assert_eq!(gf2_parity(&d), Some(s));
        let (d, _) = parity_data(20, 3, 12, 1);
        assert_eq!(gf2_parity(&d), None, "12 equations cannot pin down 20 unknowns");
    }

    #[test]
    fn gf2_rejects_inconsistent_labels() {
        let (mut d, _) = parity_data(10, 2, 40, 2);
        d.tokens.extend(d.row(0).to_vec());
        d.labels.push(1 - d.labels[0]);
        assert_eq!(gf2_parity(&d), None);
    }

    #[test]
    fn subset_search_needs_about_log_c_samples() {
        let (d, s) = parity_data(32, 2, 40, 3);
        assert_eq!(subset_search_parity(&d, 2, 1e9), SubsetSearch::Unique(s));
        let (d, _) = parity_data(32, 2, 3, 3);
        assert!(matches!(subset_search_parity(&d, 2, 1e9), SubsetSearch::Ambiguous(n) if n > 1));
        assert_eq!(subset_search_parity(&d, 2, 10.0), SubsetSearch::TooLarge);
    }
}
