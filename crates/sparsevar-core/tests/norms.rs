//! The capacity-bound norms equal a direct computation on hand-made parameters.

use sparsevar_core::graph::ParamId;
use sparsevar_core::norms::{AttentionParams, NormLayout, capacity_norms, product_norms, symmetric_eigen};

/// A small deterministic stream of values in (-1, 1).
fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Spectral norm of a row-major r×c matrix by many plain power iterations on MᵀM: an
/// independent, slow oracle.
fn spectral_oracle(m: &[f64], r: usize, c: usize) -> f64 {
    let mut v: Vec<f64> = (0..c).map(|i| 1.0 + 0.01 * i as f64).collect();
    let mut sigma = 0.0;
    for _ in 0..20_000 {
        let mv: Vec<f64> = (0..r).map(|i| (0..c).map(|j| m[i * c + j] * v[j]).sum()).collect();
        let mtmv: Vec<f64> = (0..c).map(|j| (0..r).map(|i| m[i * c + j] * mv[i]).sum()).collect();
        let n = mtmv.iter().map(|x| x * x).sum::<f64>().sqrt();
        sigma = n.sqrt();
        v = mtmv.iter().map(|x| x / n).collect();
    }
    sigma
}

fn frob(xs: &[f64]) -> f64 {
    xs.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn jacobi_finds_the_eigenvalues_of_a_known_matrix() {
    // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
    let (mut lam, v) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
    lam.sort_by(f64::total_cmp);
    assert!((lam[0] - 1.0).abs() < 1e-12 && (lam[1] - 3.0).abs() < 1e-12, "{lam:?}");
    // The eigenvectors are orthonormal.
    let dot = v[0] * v[1] + v[2] * v[3];
    assert!(dot.abs() < 1e-12);
}

#[test]
fn the_norms_of_a_two_by_two_model_by_hand() {
    // d = 2, one head, biases 0: W_Q W_Kᵀ = [[1, 2], [0, 1]] (W_K = I), whose singular
    // values are sqrt(2) ± 1: spectral norm 1 + sqrt(2), Frobenius sqrt(6).
    let p = |i| ParamId(i);
    let layout = NormLayout {
        d_model: 2,
        heads: 1,
        tok: p(0),
        pos: Some(p(1)),
        layers: vec![AttentionParams { q: (p(2), p(3)), k: (p(4), p(5)), v: (p(6), p(7)), o: (p(8), p(9)) }],
    };
    let store: Vec<Vec<f64>> = vec![
        vec![3.0, 0.0, 0.0, 0.0, 0.0, 0.0], // tok: ‖·‖ = 3
        vec![0.0, 4.0, 0.0, 0.0],           // pos: ‖·‖ = 4
        vec![1.0, 2.0, 0.0, 1.0],           // W_Q
        vec![0.0, 0.0],
        vec![1.0, 0.0, 0.0, 1.0], // W_K = I
        vec![0.0, 0.0],
        vec![2.0, 0.0, 0.0, 0.0], // W_V
        vec![0.0, 0.0],
        vec![1.0, 1.0, 1.0, 1.0], // W_O: ‖·‖ = 2
        vec![0.0, 0.0],
    ];
    let n = capacity_norms(&layout, &|id: ParamId| store[id.0].as_slice());
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1.0);
    assert!(close(n.qk_spectral, 1.0 + 2f64.sqrt()), "{n:?}");
    assert!(close(n.qk_frobenius, 6f64.sqrt()), "{n:?}");
    assert!(close(n.v, 2.0) && close(n.o, 2.0) && close(n.tok, 3.0) && close(n.pos, 4.0), "{n:?}");
    // embed = sqrt(3² + 4²) = 5.
    assert!(close(n.bound, 5.0 * 6f64.sqrt() * 2.0 * 2.0), "{n:?}");
}

#[test]
fn the_norms_equal_a_direct_computation_on_random_parameters() {
    // Two layers, d = 6, three heads of width 2, biases nonzero.
    let (d, heads, layers) = (6, 3, 2);
    let dh = d / heads;
    let mut store: Vec<Vec<f64>> = vec![values(1, 3 * d), values(2, 7 * d)];
    let mut blocks = Vec::new();
    for l in 0..layers {
        let base = store.len();
        for k in 0..4 {
            store.push(values(10 + 8 * l as u64 + 2 * k, d * d));
            store.push(values(11 + 8 * l as u64 + 2 * k, d));
        }
        let p = |i: usize| ParamId(base + i);
        blocks.push(AttentionParams { q: (p(0), p(1)), k: (p(2), p(3)), v: (p(4), p(5)), o: (p(6), p(7)) });
    }
    let layout = NormLayout { d_model: d, heads, tok: ParamId(0), pos: Some(ParamId(1)), layers: blocks.clone() };
    let n = capacity_norms(&layout, &|id: ParamId| store[id.0].as_slice());

    // Directly: build each head's (d+1)×(d+1) matrix [W_Q; b_Q]^h ([W_K; b_K]^h)ᵀ.
    let aug = |w: ParamId, b: ParamId| -> Vec<f64> { store[w.0].iter().chain(&store[b.0]).copied().collect() };
    let (mut spec, mut fro, mut v, mut o) = (1.0, 1.0, 1.0, 1.0);
    for blk in &blocks {
        let (aq, ak) = (aug(blk.q.0, blk.q.1), aug(blk.k.0, blk.k.1));
        let (mut s_l, mut f_l) = (0.0f64, 0.0f64);
        for h in 0..heads {
            let rows = d + 1;
            let mut m = vec![0.0; rows * rows];
            for i in 0..rows {
                for j in 0..rows {
                    m[i * rows + j] = (h * dh..(h + 1) * dh).map(|c| aq[i * d + c] * ak[j * d + c]).sum();
                }
            }
            s_l = s_l.max(spectral_oracle(&m, rows, rows));
            f_l = f_l.max(frob(&m));
        }
        spec *= s_l;
        fro *= f_l;
        v *= frob(&aug(blk.v.0, blk.v.1));
        o *= frob(&aug(blk.o.0, blk.o.1));
    }
    let (tok, pos) = (frob(&store[0]), frob(&store[1]));
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-9 * b.abs(), "{what}: {a} vs direct {b}");
    close(n.qk_spectral, spec, "qk spectral");
    close(n.qk_frobenius, fro, "qk frobenius");
    close(n.v, v, "v");
    close(n.o, o, "o");
    close(n.tok, tok, "tok");
    close(n.pos, pos, "pos");
    close(n.bound, (tok * tok + pos * pos).sqrt() * fro * v * o, "bound");
    // The spectral norm is below the Frobenius norm, and not equal to it (rank 2 heads).
    assert!(n.qk_spectral < n.qk_frobenius);
}

#[test]
fn product_norms_of_a_rank_deficient_pair() {
    // A = B = e1 (one column): A Bᵀ = e1 e1ᵀ has norm 1 both ways; a zero Q gives 0.
    let (s, f) = product_norms(&[1.0], &[1.0], 1);
    assert!((s - 1.0).abs() < 1e-12 && (f - 1.0).abs() < 1e-12);
    let (s, f) = product_norms(&[1.0, 0.0, 0.0, 0.0], &[0.0; 4], 2);
    assert_eq!((s, f), (0.0, 0.0));
}
