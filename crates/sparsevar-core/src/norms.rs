//! The norms of the paper's capacity bound, and the norm balls of bounded training.
//!
//! Edelman et al. bound the capacity of a bounded-norm attention head by the norms of its
//! query-key product W_Q W_Kᵀ, its value and output maps W_V and W_O, and the size of its
//! inputs (token plus position embeddings). [`capacity_norms`] measures exactly these on a
//! member's parameters; [`MaxNorm`] names balls that bounded training projects the same
//! parameter groups back onto after every optimizer step ([`Projector`]).
//!
//! Every linear map here is affine (`x W + b`), so each group's matrix is the weight with
//! its bias appended as one more row: the map as a matrix acting on `[x, 1]`. A head's
//! query-key form is `[x, 1] A_Q^h (A_K^h)ᵀ [x', 1]ᵀ`, with `A^h` the head's columns of the
//! augmented matrix; the attention variant's own score scale (e.g. 1/sqrt(d_head)) is not
//! included.

use serde::{Deserialize, Deserializer, Serialize};

use crate::backend::{Backend, BackendError, BufferId, Update, run_updates};
use crate::graph::{ParamId, ParamStore};

/// The parameters of one attention layer whose norms the bound reads: (weight, bias) each.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AttentionParams {
    pub q: (ParamId, ParamId),
    pub k: (ParamId, ParamId),
    pub v: (ParamId, ParamId),
    pub o: (ParamId, ParamId),
}

/// Where a transformer keeps the parameters of the capacity bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormLayout {
    pub d_model: usize,
    pub heads: usize,
    /// Token embedding [alphabet + 1, d].
    pub tok: ParamId,
    /// Learned position embedding [T + 1, d] (`None` for fixed or no positions).
    pub pos: Option<ParamId>,
    pub layers: Vec<AttentionParams>,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|v| v.unwrap_or(f64::NAN))
}

/// One member's norms (see the module doc for the augmented matrices). Per layer l:
/// `qk_spectral_l` = max over heads h of ‖A_Q^{l,h} (A_K^{l,h})ᵀ‖₂, `qk_frobenius_l` the same
/// with the Frobenius norm, `v_l` = ‖[W_V; b_V]‖_F, `o_l` = ‖[W_O; b_O]‖_F. The fields are the
/// products over layers (for the paper's one-layer model, the layer's values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityNorms {
    #[serde(deserialize_with = "nan_if_null")]
    pub qk_spectral: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub qk_frobenius: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub v: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub o: f64,
    /// ‖E_tok‖_F.
    #[serde(deserialize_with = "nan_if_null")]
    pub tok: f64,
    /// ‖E_pos‖_F (0 without a learned position embedding).
    #[serde(deserialize_with = "nan_if_null")]
    pub pos: f64,
    /// embed · qk_frobenius · v · o, with embed = sqrt(tok² + pos²) = ‖[E_tok; E_pos]‖_F: the
    /// product of the norms of the groups [`MaxNorm`] bounds, so training under
    /// `max_norm: {qk: Bqk, v: Bv, o: Bo, embed: Be}` keeps it at most Be·(Bqk·Bv·Bo)^layers.
    #[serde(deserialize_with = "nan_if_null")]
    pub bound: f64,
}

/// Cyclic Jacobi sweeps at most: far more than a matrix of a head's size needs.
const JACOBI_SWEEPS: usize = 64;

/// Eigenvalues and eigenvectors (columns of a row-major n×n matrix) of the symmetric n×n
/// matrix `a`, by cyclic Jacobi rotations in a fixed order: the same input always gives
/// the same numbers.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _ in 0..JACOBI_SWEEPS {
        let total: f64 = a.iter().map(|x| x * x).sum();
        let off: f64 = (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).map(|(i, j)| a[i * n + j] * a[i * n + j]).sum();
        if off <= total * 1e-32 || !off.is_finite() {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Numerical Recipes' stable form).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Gram matrix AᵀA of the columns `cols` of the row-major `rows`×`width` matrix `a`.
fn gram(a: &[f64], rows: usize, width: usize, cols: std::ops::Range<usize>) -> Vec<f64> {
    let n = cols.len();
    let mut g = vec![0.0; n * n];
    for r in 0..rows {
        let row = &a[r * width + cols.start..r * width + cols.end];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] += row[i] * row[j];
            }
        }
    }
    g
}

/// (‖A Bᵀ‖₂, ‖A Bᵀ‖_F) from the Gram matrices P = AᵀA and Q = BᵀB (n×n): the nonzero
/// squared singular values of A Bᵀ are the eigenvalues of P^½ Q P^½, and ‖A Bᵀ‖_F² = Σ P∘Q.
pub fn product_norms(p: &[f64], q: &[f64], n: usize) -> (f64, f64) {
    let frob2: f64 = p.iter().zip(q).map(|(a, b)| a * b).sum();
    let (lam, u) = symmetric_eigen(p, n);
    // P^½ = U diag(sqrt λ) Uᵀ (negative rounding noise clamped to 0).
    let mut half = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            half[i * n + j] = (0..n).map(|k| u[i * n + k] * lam[k].max(0.0).sqrt() * u[j * n + k]).sum();
        }
    }
    let hq: Vec<f64> = (0..n * n).map(|ij| (0..n).map(|k| half[(ij / n) * n + k] * q[k * n + ij % n]).sum()).collect();
    let s: Vec<f64> = (0..n * n).map(|ij| (0..n).map(|k| hq[(ij / n) * n + k] * half[k * n + ij % n]).sum()).collect();
    let (mu, _) = symmetric_eigen(&s, n);
    let top = mu.iter().copied().fold(0.0, f64::max);
    (top.sqrt(), frob2.max(0.0).sqrt())
}

/// The augmented matrix [W; b] of an affine map (row-major (fan_in + 1) × fan_out).
fn augmented(w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut a = w.to_vec();
    a.extend_from_slice(b);
    a
}

fn frobenius(xs: &[&[f64]]) -> f64 {
    xs.iter().flat_map(|x| x.iter()).map(|v| v * v).sum::<f64>().sqrt()
}

/// One member's [`CapacityNorms`]; `value(id)` is that member's values of parameter `id`.
pub fn capacity_norms<'a>(layout: &NormLayout, value: &dyn Fn(ParamId) -> &'a [f64]) -> CapacityNorms {
    let d = layout.d_model;
    let dh = d / layout.heads;
    let mut n = CapacityNorms { qk_spectral: 1.0, qk_frobenius: 1.0, v: 1.0, o: 1.0, ..Default::default() };
    for l in &layout.layers {
        let aq = augmented(value(l.q.0), value(l.q.1));
        let ak = augmented(value(l.k.0), value(l.k.1));
        let (mut spec, mut frob) = (0.0f64, 0.0f64);
        for h in 0..layout.heads {
            let cols = h * dh..(h + 1) * dh;
            let (s, f) = product_norms(&gram(&aq, d + 1, d, cols.clone()), &gram(&ak, d + 1, d, cols), dh);
            spec = spec.max(s);
            frob = frob.max(f);
        }
        n.qk_spectral *= spec;
        n.qk_frobenius *= frob;
        n.v *= frobenius(&[value(l.v.0), value(l.v.1)]);
        n.o *= frobenius(&[value(l.o.0), value(l.o.1)]);
    }
    n.tok = frobenius(&[value(layout.tok)]);
    n.pos = layout.pos.map_or(0.0, |p| frobenius(&[value(p)]));
    n.bound = n.tok.hypot(n.pos) * n.qk_frobenius * n.v * n.o;
    n
}

// ---------------------------------------------------------------------------------------
// Bounded training: balls the parameters are projected back onto after every step.

/// `train.max_norm`: a Frobenius bound per parameter group (`None` = unbounded). Each
/// weight is taken with its bias appended (the affine map as a matrix on [x, 1]):
/// - `qk`: every layer's [W_Q; b_Q] and [W_K; b_K], each projected onto the ball of radius
///   sqrt(B), which bounds every head's ‖A_Q^h (A_K^h)ᵀ‖_F ≤ ‖A_Q‖_F ‖A_K‖_F ≤ B (and the
///   spectral norm with it);
/// - `v`: every layer's [W_V; b_V], radius B;
/// - `o`: every layer's [W_O; b_O], radius B;
/// - `embed`: the token and learned position embeddings together, ‖[E_tok; E_pos]‖_F ≤ B.
///
/// Layer norms, the MLP and the readout head are never bounded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaxNorm {
    /// Bound on ‖W_Q W_Kᵀ‖_F per head (W_Q and W_K each kept within sqrt(B)).
    #[serde(default)]
    pub qk: Option<f64>,
    /// Bound on ‖[W_V; b_V]‖_F per layer.
    #[serde(default)]
    pub v: Option<f64>,
    /// Bound on ‖[W_O; b_O]‖_F per layer.
    #[serde(default)]
    pub o: Option<f64>,
    /// Bound on ‖[E_tok; E_pos]‖_F.
    #[serde(default)]
    pub embed: Option<f64>,
}

/// One ball: parameters projected together (their values concatenated per member).
#[derive(Clone, Debug, PartialEq)]
pub struct Ball {
    /// The group's key: qk, v, o or embed.
    pub group: &'static str,
    pub params: Vec<ParamId>,
    pub radius: f64,
}

impl MaxNorm {
    /// Whether no group is bounded.
    pub fn is_unbounded(&self) -> bool {
        self.groups().iter().all(|g| g.1.is_none())
    }

    /// (key, bound) of every group, in a fixed order.
    pub fn groups(&self) -> [(&'static str, Option<f64>); 4] {
        [("qk", self.qk), ("v", self.v), ("o", self.o), ("embed", self.embed)]
    }

    /// The first bound that is not a positive number, as a message naming `prefix.key`.
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        for (key, b) in self.groups() {
            if let Some(b) = b
                && !(b > 0.0 && b.is_finite())
            {
                return Err(format!("{prefix}.{key} = {b} must be a positive number (or null for no bound)"));
            }
        }
        Ok(())
    }

    /// The balls these bounds make on a model with `layout`.
    pub fn balls(&self, layout: &NormLayout) -> Vec<Ball> {
        let mut out = Vec::new();
        for l in &layout.layers {
            if let Some(b) = self.qk {
                out.push(Ball { group: "qk", params: vec![l.q.0, l.q.1], radius: b.sqrt() });
                out.push(Ball { group: "qk", params: vec![l.k.0, l.k.1], radius: b.sqrt() });
            }
            if let Some(b) = self.v {
                out.push(Ball { group: "v", params: vec![l.v.0, l.v.1], radius: b });
            }
            if let Some(b) = self.o {
                out.push(Ball { group: "o", params: vec![l.o.0, l.o.1], radius: b });
            }
        }
        if let Some(b) = self.embed {
            out.push(Ball { group: "embed", params: std::iter::once(layout.tok).chain(layout.pos).collect(), radius: b });
        }
        out
    }
}

/// Projects an ensemble's bounded parameter groups back onto their balls, per member, on
/// the backend: for each ball, the squared norm over its tensors is summed
/// ([`Update::AccumulateSquares`], a fixed order) into one per-member buffer, then each
/// tensor is scaled ([`Update::ScaleToBall`]). Nothing travels to the host.
#[derive(Debug)]
pub struct Projector {
    balls: Vec<Ball>,
    /// Per-member squared norms, sized for `groups` members.
    sq: Option<BufferId>,
    groups: usize,
}

impl Projector {
    pub fn new(balls: Vec<Ball>) -> Self {
        Projector { balls, sq: None, groups: 0 }
    }

    pub fn balls(&self) -> &[Ball] {
        &self.balls
    }

    /// Project every ball of every member in `params` (its current ensemble size).
    pub fn project(&mut self, backend: &mut dyn Backend, params: &ParamStore) -> Result<(), BackendError> {
        let updates = self.updates(backend, params)?;
        run_updates(backend, &updates)
    }

    /// The updates of [`Projector::project`], in order, to run later (after an optimizer
    /// step, member by member with it where the backend prefers that).
    pub fn updates(&mut self, backend: &mut dyn Backend, params: &ParamStore) -> Result<Vec<(Update, Vec<BufferId>)>, BackendError> {
        let mut out = Vec::new();
        if self.balls.is_empty() {
            return Ok(out);
        }
        let groups = params.members;
        // Members left the ensemble: a buffer of the new size.
        if self.groups != groups || self.sq.is_none() {
            if let Some(b) = self.sq.take() {
                backend.free(b)?;
            }
            self.sq = Some(backend.alloc(groups)?);
            self.groups = groups;
        }
        let sq = self.sq.expect("allocated");
        for ball in &self.balls {
            out.push((Update::Zero { len: groups }, vec![sq]));
            for &p in &ball.params {
                out.push((Update::AccumulateSquares { groups, len: params.member_len(p) }, vec![params.buffer(p), sq]));
            }
            for &p in &ball.params {
                out.push((Update::ScaleToBall { groups, len: params.member_len(p), radius: ball.radius }, vec![params.buffer(p), sq]));
            }
        }
        Ok(out)
    }

    /// Give the norm buffer back.
    pub fn free(&mut self, backend: &mut dyn Backend) -> Result<(), BackendError> {
        if let Some(b) = self.sq.take() {
            backend.free(b)?;
        }
        Ok(())
    }
}
