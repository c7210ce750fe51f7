//! plain-sigmoid: an attention plugin for sparsevar — `plain_sigmoid`, the built-in `sigmoid`
//! variant without its `−ln T` bias: `sigmoid(q·k / sqrt(d_head))`.
//!
//! The built-in variant subtracts `ln T` so that, at initialisation (scores near 0), each of
//! the `N = T + 1` keys gets weight about `1/T` and the total stays near 1 whatever `T` is.
//! Without the bias every key starts at weight 1/2 and the total at `N/2`: the attention
//! output grows with `T`. Comparing the two across `T` tests whether that bias matters for
//! learning a sparse function.

#![warn(missing_docs)]

use sparsevar_plugin::{Attention, AttentionError, Graph, NodeId, Registrar};

/// `sigmoid(scores / sqrt(d_head))`, each key weighted on its own.
#[derive(Clone, Debug, Default)]
pub struct PlainSigmoid;

impl Attention for PlainSigmoid {
    fn name(&self) -> &str {
        "plain_sigmoid"
    }
    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        // scores, result: [.., n_queries, N]
        let s = g.scale(scores, 1.0 / (head_dim as f64).sqrt());
        Ok(g.sigmoid(s))
    }
}

/// Register `plain_sigmoid`.
pub fn register(r: &mut dyn Registrar) {
    r.attention("plain_sigmoid", || Box::new(PlainSigmoid));
}

sparsevar_plugin::export_plugin!(register);
