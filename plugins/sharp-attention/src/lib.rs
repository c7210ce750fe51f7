//! sharp-attention: an attention plugin for sparsevar with two variants that sharpen the
//! choice of keys, both written with the graph's primitives so that their gradients and
//! every backend come for free.
//!
//! * **`ssmax`** — scalable softmax (Nakanishi 2025, "Scalable-Softmax Is Superior for
//!   Attention"): `softmax(ln(N) · q·k / sqrt(d_head))` over the `N` keys. Plain softmax
//!   fades as the sequence grows: with scores of fixed size, the weight any one key can get
//!   shrinks like `1/N`. Multiplying the scores by `ln N` keeps the largest weight of order 1
//!   whatever `N` is — the property a sparse task needs when `T` grows and the `s` relevant
//!   tokens must stand out among more and more others. (The paper learns a scale per head;
//!   here it is fixed at 1, because an attention variant has no parameters of its own.)
//! * **`relu2`** — squared-ReLU attention (So et al. 2021, "Primer"; Hua et al. 2022,
//!   "Transformer Quality in Linear Time"): `relu(q·k / sqrt(d_head))² / N`. Unnormalised
//!   like the built-in `relu`, it gives keys with negative scores exactly zero weight, and
//!   squaring widens the gap between strong and weak keys.
//!
//! Use it from a config with `model: { kind: transformer, attention: ssmax }` (or `relu2`).
//!
//! The one design decision: every variant is a composition of existing `Graph` operations —
//! `affine`, `softmax`, `relu`, `mul` — never a new kernel, so the reference backend, the CPU
//! backend and the GPU backend all run it unchanged, and its backward is autodiff's.

#![warn(missing_docs)]

use sparsevar_plugin::{Attention, AttentionError, Graph, NodeId, Registrar};

/// The number of keys: the last axis of the scores (an error, not a panic, if there is none).
fn n_keys(variant: &str, g: &Graph, scores: NodeId) -> Result<usize, AttentionError> {
    match g.shape(scores).last() {
        Some(&n) if n > 0 => Ok(n),
        _ => Err(AttentionError::Failed { variant: variant.into(), message: format!("scores of shape {:?} have no keys", g.shape(scores)) }),
    }
}

/// `softmax(ln(N) · scores / sqrt(d_head))`.
#[derive(Clone, Debug, Default)]
pub struct ScalableSoftmax;

impl ScalableSoftmax {
    /// The factor the raw scores are multiplied by: `ln(N) / sqrt(d_head)`.
    pub fn scale(n_keys: usize, head_dim: usize) -> f64 {
        (n_keys as f64).ln() / (head_dim as f64).sqrt()
    }
}

impl Attention for ScalableSoftmax {
    fn name(&self) -> &str {
        "ssmax"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        // scores, result: [.., n_queries, N]
        let s = g.scale(scores, Self::scale(n_keys(self.name(), g, scores)?, head_dim));
        Ok(g.softmax(s))
    }
}

/// `relu(scores / sqrt(d_head))² / N`.
#[derive(Clone, Debug, Default)]
pub struct SquaredRelu;

impl Attention for SquaredRelu {
    fn name(&self) -> &str {
        "relu2"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        // scores, result: [.., n_queries, N]
        let n = n_keys(self.name(), g, scores)? as f64;
        let s = g.scale(scores, 1.0 / (head_dim as f64).sqrt());
        let r = g.relu(s);
        let r2 = g.mul(r, r);
        Ok(g.scale(r2, 1.0 / n))
    }
}

/// Register `ssmax` and `relu2`.
pub fn register(r: &mut dyn Registrar) {
    r.attention("ssmax", || Box::new(ScalableSoftmax));
    r.attention("relu2", || Box::new(SquaredRelu));
}

sparsevar_plugin::export_plugin!(register);
