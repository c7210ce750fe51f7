//! Attention variants: how raw query·key scores become mixing weights.
//!
//! Each variant is written with graph operations, so its gradient and every backend come for
//! free. Variants are trait objects so a plugin can bring new ones at run time.

use std::fmt::Debug;

use crate::fault::PluginFault;
use crate::graph::{Graph, NodeId};

/// Why an attention variant could not build its weights.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttentionError {
    /// The variant's own report (e.g. scores of a shape it cannot handle).
    #[error("attention variant `{variant}` failed: {message}")]
    Failed {
        /// The variant's name.
        variant: String,
        /// What went wrong.
        message: String,
    },
    /// A plugin's variant faulted: returned an error, panicked, or returned a node of the
    /// wrong shape. The message names the plugin file and the call.
    #[error(transparent)]
    Fault(#[from] PluginFault),
}

/// Turns scores into weights. `scores`: [.., n_queries, n_keys], raw dot products q·k of
/// head width `head_dim`; the result has the same shape.
pub trait Attention: dyn_clone::DynClone + Send + Sync + Debug {
    /// Registry name ("softmax", …).
    fn name(&self) -> &str;
    /// Build the weights from the scores, or say why not: the model is then not built
    /// (no stand-in weights are ever used).
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError>;
    /// Whether the weights depend on the scores at all (false for fixed pooling: the query
    /// and key projections then get no gradient).
    fn selects(&self) -> bool {
        true
    }
}
dyn_clone::clone_trait_object!(Attention);

/// The number of keys: the last axis of `scores`.
fn n_keys(variant: &str, g: &Graph, scores: NodeId) -> Result<usize, AttentionError> {
    match g.shape(scores).last() {
        Some(&n) if n > 0 => Ok(n),
        _ => Err(AttentionError::Failed { variant: variant.into(), message: format!("scores of shape {:?} have no keys", g.shape(scores)) }),
    }
}

/// softmax(q·k / sqrt(d_head)): the standard scaled dot-product attention.
#[derive(Clone, Debug, Default)]
pub struct Softmax;
impl Attention for Softmax {
    fn name(&self) -> &str {
        "softmax"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        let s = g.scale(scores, 1.0 / (head_dim as f64).sqrt());
        Ok(g.softmax(s))
    }
}

/// ReLU(q·k / sqrt(d_head)) / T: unnormalised, non-negative, scaled by the number of keys.
#[derive(Clone, Debug, Default)]
pub struct Relu;
impl Attention for Relu {
    fn name(&self) -> &str {
        "relu"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        let t = n_keys(self.name(), g, scores)? as f64;
        let s = g.scale(scores, 1.0 / (head_dim as f64).sqrt());
        let r = g.relu(s);
        Ok(g.scale(r, 1.0 / t))
    }
}

/// sigmoid(q·k / sqrt(d_head) − ln T): each key weighted independently; the −ln T bias
/// keeps the total weight O(1) at initialisation whatever T is.
#[derive(Clone, Debug, Default)]
pub struct Sigmoid;
impl Attention for Sigmoid {
    fn name(&self) -> &str {
        "sigmoid"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        let t = n_keys(self.name(), g, scores)? as f64;
        let s = g.affine(scores, 1.0 / (head_dim as f64).sqrt(), -t.ln());
        Ok(g.sigmoid(s))
    }
}

/// (q·k / sqrt(d_head)) / T: linear attention without a feature map.
#[derive(Clone, Debug, Default)]
pub struct Linear;
impl Attention for Linear {
    fn name(&self) -> &str {
        "linear"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        let t = n_keys(self.name(), g, scores)? as f64;
        Ok(g.scale(scores, 1.0 / ((head_dim as f64).sqrt() * t)))
    }
}

/// 1/T on every key: mean pooling, attention that cannot select (the control).
#[derive(Clone, Debug, Default)]
pub struct Uniform;
impl Attention for Uniform {
    fn name(&self) -> &str {
        "uniform"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, _head_dim: usize) -> Result<NodeId, AttentionError> {
        let shape = g.shape(scores).to_vec();
        let t = n_keys(self.name(), g, scores)? as f64;
        Ok(g.constant(&shape, 1.0 / t))
    }
    fn selects(&self) -> bool {
        false
    }
}

/// Names of the built-in variants.
pub const BUILTIN_ATTENTION: &[&str] = &["softmax", "relu", "sigmoid", "linear", "uniform"];

/// A built-in variant by name.
pub fn builtin_attention(name: &str) -> Option<Box<dyn Attention>> {
    Some(match name {
        "softmax" => Box::new(Softmax),
        "relu" => Box::new(Relu),
        "sigmoid" => Box::new(Sigmoid),
        "linear" => Box::new(Linear),
        "uniform" => Box::new(Uniform),
        _ => return None,
    })
}
