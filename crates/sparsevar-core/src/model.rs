//! Models: a transformer encoder with a [CLS] token, and a fully connected baseline.
//!
//! A model declares its parameters once ([`Model::new`]) and then builds graphs over them
//! for any batch size ([`Model::build`]): the training graph (loss and gradients) and the
//! evaluation graph (logits and attention) share the same parameter buffers.
//!
//! Two exact savings shape the transformer graph, both switchable for testing:
//! - **CLS shortcut**: with a CLS readout only the CLS row of the last layer reaches the
//!   loss, so the last layer computes its query, attention output and MLP for that row only.
//! - **Token table**: before the first attention mixes positions, every row is a function
//!   of (token, position) alone, so the first layer's norm and projections run on the
//!   table of all |alphabet+1| × N pairs and are then gathered per sample — fewer rows than
//!   B × N whenever the alphabet is smaller than the batch.

use serde::{Deserialize, Serialize};

use crate::attention::{Attention, AttentionError};
use crate::graph::{Graph, Init, NodeId, ParamId, ParamStore};

/// Why a model could not be declared or its graph built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A size that cannot make a model; the message names the key and the rule.
    #[error("{0}")]
    Invalid(String),
    /// A transformer was declared without an attention variant.
    #[error("a transformer needs an attention variant (model.attention)")]
    MissingAttention,
    /// The attention variant failed while building its weights.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// The attention variant returned weights that are not of the scores' shape.
    #[error("attention variant `{variant}` returned weights of shape {got} for scores of shape {want:?}; weights must have the scores' shape")]
    WeightsShape {
        /// The variant's name.
        variant: String,
        /// The shape it returned (or "no such node").
        got: String,
        /// The scores' shape.
        want: Vec<usize>,
    },
}

/// Positional embedding.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A trained embedding per position, N(0, init_std²) at init.
    Learned,
    /// The fixed sin/cos table of Vaswani et al.
    Sinusoidal,
    /// No position information (the model sees a bag of tokens).
    None,
}

/// Where LayerNorm sits in each block.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// LayerNorm before attention and MLP, plus a final LayerNorm (GPT-2 style).
    Pre,
    /// LayerNorm after each residual addition (original Transformer).
    Post,
    /// No LayerNorm.
    None,
}

/// How the sequence becomes class logits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    /// The final state of the [CLS] token at position 0.
    Cls,
    /// The mean of every position's final state.
    Mean,
}

/// Transformer encoder options. Defaults are the paper's one-layer model ("paper1l").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerConfig {
    /// Number of attention blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads per block (must divide d_model).
    pub heads: usize,
    /// MLP width as a multiple of d_model; 0 turns the MLP off.
    pub mlp: usize,
    /// Attention variant by name: softmax, relu, sigmoid, linear, uniform, or a plugin's.
    pub attention: String,
    /// Positional embedding: learned, sinusoidal or none.
    pub positions: Positions,
    /// LayerNorm placement: pre, post or none.
    pub norm: Norm,
    /// Readout: cls or mean.
    pub readout: Readout,
    /// Standard deviation of the token and position embeddings at init.
    pub init_std: f64,
    /// LayerNorm epsilon (inside the square root).
    pub ln_eps: f64,
    /// Compute only the CLS row in the last layer (exact; off only for testing).
    pub cls_shortcut: bool,
    /// Run the first layer's tokenwise work on the (token, position) table (exact).
    pub token_table: bool,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        Self {
            layers: 1,
            d_model: 64,
            heads: 4,
            mlp: 4,
            attention: "softmax".into(),
            positions: Positions::Learned,
            norm: Norm::Pre,
            readout: Readout::Cls,
            init_std: 0.02,
            ln_eps: 1e-5,
            cls_shortcut: true,
            token_table: true,
        }
    }
}

/// Fully connected baseline on the ±1-coded bits (one-hot for larger alphabets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    /// Hidden layers.
    pub depth: usize,
    /// Units per hidden layer (ReLU).
    pub width: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self { depth: 2, width: 256 }
    }
}

/// Which model, with its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// `kind: transformer`: a transformer encoder with a [CLS] token.
    Transformer(TransformerConfig),
    /// `kind: mlp`: a fully connected ReLU network on the bits.
    Mlp(MlpConfig),
}

/// Shape of the data a model reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DataShape {
    /// Input length T.
    pub seq_len: usize,
    /// Tokens are 0..alphabet.
    pub alphabet: usize,
    pub classes: usize,
}

/// A graph built by [`Model::build`] with the nodes the trainer needs.
#[derive(Debug)]
pub struct ModelGraph {
    pub graph: Graph,
    pub batch: usize,
    /// Per-member encoded inputs, [R, ..]; filled with [`Model::encode`].
    pub inputs: NodeId,
    /// Labels [R, B] (class ids as floats).
    pub labels: NodeId,
    /// Logits [R, B, C].
    pub logits: NodeId,
    /// Mean loss per member [R].
    pub loss: NodeId,
    /// Per layer, the CLS query's attention weights [R, B, H, N] (key 0 is CLS itself).
    pub attention: Vec<NodeId>,
    /// Constant inputs and their values, written once after planning.
    pub constants: Vec<(NodeId, Vec<f64>)>,
    /// Gradient node of each parameter that the loss depends on (training graphs only).
    pub grads: Vec<(ParamId, NodeId)>,
}

#[derive(Clone, Debug)]
struct Linear {
    w: ParamId,
    b: ParamId,
}

#[derive(Clone, Debug)]
struct LnParams {
    gain: ParamId,
    bias: ParamId,
}

#[derive(Clone, Debug)]
struct Block {
    ln1: Option<LnParams>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: Option<LnParams>,
    mlp: Option<(Linear, Linear)>,
}

#[derive(Clone, Debug)]
enum Layout {
    Transformer { cfg: TransformerConfig, tok: ParamId, pos: Option<ParamId>, blocks: Vec<Block>, ln_f: Option<LnParams>, head: Linear },
    Mlp { layers: Vec<Linear> },
}

/// A model over an ensemble of R members.
#[derive(Clone, Debug)]
pub struct Model {
    pub spec: ModelSpec,
    pub data: DataShape,
    attention: Option<Box<dyn Attention>>,
    layout: Layout,
}

fn declare_linear(p: &mut ParamStore, name: &str, fan_in: usize, fan_out: usize) -> Linear {
    // PyTorch's nn.Linear default: U(−1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    let a = 1.0 / (fan_in as f64).sqrt();
    Linear { w: p.declare(&format!("{name}.w"), &[fan_in, fan_out], Init::Uniform(a)), b: p.declare(&format!("{name}.b"), &[fan_out], Init::Uniform(a)) }
}

fn declare_ln(p: &mut ParamStore, name: &str, d: usize) -> LnParams {
    LnParams { gain: p.declare(&format!("{name}.gain"), &[d], Init::Constant(1.0)), bias: p.declare(&format!("{name}.bias"), &[d], Init::Constant(0.0)) }
}

/// Rows of the residual stream: either the (token, position) table or one row per
/// (sample, position).
#[derive(Copy, Clone, Debug)]
enum Rows {
    Table(NodeId),
    Full(NodeId),
}

impl Model {
    /// Declare the parameters of `spec` for R = `members` and return the model and its store
    /// (not yet initialised: see [`ParamStore::initialize`]). `attention` is required for a
    /// transformer.
    pub fn new(spec: &ModelSpec, data: DataShape, members: usize, attention: Option<Box<dyn Attention>>) -> Result<(Model, ParamStore), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if members == 0 {
            return bad("a model needs at least one ensemble member".into());
        }
        if data.seq_len == 0 || data.alphabet == 0 || data.classes == 0 {
            return bad(format!("the task's shape (T = {}, alphabet {}, {} classes) has a zero", data.seq_len, data.alphabet, data.classes));
        }
        if let ModelSpec::Transformer(cfg) = spec {
            if attention.is_none() {
                return Err(ModelError::MissingAttention);
            }
            if cfg.layers == 0 {
                return bad("model.layers must be at least 1".into());
            }
            if cfg.d_model == 0 || cfg.heads == 0 || !cfg.d_model.is_multiple_of(cfg.heads) {
                return bad(format!("model.heads = {} must divide model.d_model = {} (both at least 1)", cfg.heads, cfg.d_model));
            }
        }
        let mut p = ParamStore::new(members);
        let layout = match spec {
            ModelSpec::Transformer(cfg) => {
                let d = cfg.d_model;
                let n = data.seq_len + 1;
                let tok = p.declare("tok_emb", &[data.alphabet + 1, d], Init::Normal(cfg.init_std));
                let pos = (cfg.positions == Positions::Learned).then(|| p.declare("pos_emb", &[n, d], Init::Normal(cfg.init_std)));
                let ln = cfg.norm != Norm::None;
                let blocks = (0..cfg.layers)
                    .map(|l| Block {
                        ln1: ln.then(|| declare_ln(&mut p, &format!("l{l}.ln1"), d)),
                        q: declare_linear(&mut p, &format!("l{l}.q"), d, d),
                        k: declare_linear(&mut p, &format!("l{l}.k"), d, d),
                        v: declare_linear(&mut p, &format!("l{l}.v"), d, d),
                        o: declare_linear(&mut p, &format!("l{l}.o"), d, d),
                        ln2: (ln && cfg.mlp > 0).then(|| declare_ln(&mut p, &format!("l{l}.ln2"), d)),
                        mlp: (cfg.mlp > 0).then(|| {
                            (declare_linear(&mut p, &format!("l{l}.mlp1"), d, cfg.mlp * d), declare_linear(&mut p, &format!("l{l}.mlp2"), cfg.mlp * d, d))
                        }),
                    })
                    .collect();
                let ln_f = (cfg.norm == Norm::Pre).then(|| declare_ln(&mut p, "ln_f", d));
                let head = declare_linear(&mut p, "head", d, data.classes);
                Layout::Transformer { cfg: cfg.clone(), tok, pos, blocks, ln_f, head }
            }
            ModelSpec::Mlp(cfg) => {
                let mut fan_in = Self::mlp_features(data);
                let mut layers = Vec::new();
                for l in 0..cfg.depth {
                    layers.push(declare_linear(&mut p, &format!("fc{l}"), fan_in, cfg.width));
                    fan_in = cfg.width;
                }
                layers.push(declare_linear(&mut p, "head", fan_in, data.classes));
                Layout::Mlp { layers }
            }
        };
        Ok((Model { spec: spec.clone(), data, attention, layout }, p))
    }

    /// Where the parameters of the capacity bound live (transformers only; see
    /// [`crate::norms`]).
    pub fn norm_layout(&self) -> Option<crate::norms::NormLayout> {
        match &self.layout {
            Layout::Transformer { cfg, tok, pos, blocks, .. } => Some(crate::norms::NormLayout {
                d_model: cfg.d_model,
                heads: cfg.heads,
                tok: *tok,
                pos: *pos,
                layers: blocks
                    .iter()
                    .map(|b| crate::norms::AttentionParams { q: (b.q.w, b.q.b), k: (b.k.w, b.k.b), v: (b.v.w, b.v.b), o: (b.o.w, b.o.b) })
                    .collect(),
            }),
            Layout::Mlp { .. } => None,
        }
    }

    fn mlp_features(data: DataShape) -> usize {
        if data.alphabet == 2 { data.seq_len } else { data.seq_len * data.alphabet }
    }

    /// Values per member and sample of the model's input node.
    pub fn input_width(&self) -> usize {
        match &self.layout {
            Layout::Transformer { .. } => self.data.seq_len + 1,
            Layout::Mlp { .. } => Self::mlp_features(self.data),
        }
    }

    fn uses_table(&self, batch: usize) -> bool {
        match &self.layout {
            Layout::Transformer { cfg, .. } => cfg.token_table && self.data.alphabet + 1 < batch,
            Layout::Mlp { .. } => false,
        }
    }

    /// The row of (token, position) in the first layer's table: with positions, the
    /// (CLS, 0) row and then the (token, i ≥ 1) rows, token-major, the only pairs that occur;
    /// without, one row per token.
    fn table_row(&self, tok: usize, pos: usize, with_pos: bool) -> usize {
        match (with_pos, pos) {
            (false, _) => tok,
            (true, 0) => 0,
            (true, _) => 1 + tok * self.data.seq_len + pos - 1,
        }
    }

    /// Encode one member's batch (`tokens`: B × T, row-major) into `out` (appended), the
    /// values of that member's slice of the input node of a graph built for `batch`.
    pub fn encode(&self, batch: usize, tokens: &[u8], out: &mut Vec<f64>) {
        let t = self.data.seq_len;
        debug_assert_eq!(tokens.len(), batch * t);
        match &self.layout {
            Layout::Transformer { cfg, .. } => {
                let cls = self.data.alphabet;
                let table = self.uses_table(batch);
                let with_pos = cfg.positions != Positions::None;
                for row in tokens.chunks(t) {
                    // Position 0 is the CLS token, input bit i sits at position i + 1.
                    let id = |tok: usize, pos: usize| if table { self.table_row(tok, pos, with_pos) as f64 } else { tok as f64 };
                    out.push(id(cls, 0));
                    out.extend(row.iter().enumerate().map(|(i, &x)| id(x as usize, i + 1)));
                }
            }
            Layout::Mlp { .. } => {
                for row in tokens.chunks(t) {
                    if self.data.alphabet == 2 {
                        out.extend(row.iter().map(|&x| if x == 1 { 1.0 } else { -1.0 }));
                    } else {
                        for &x in row {
                            out.extend((0..self.data.alphabet).map(|a| if a == x as usize { 1.0 } else { 0.0 }));
                        }
                    }
                }
            }
        }
    }

    /// Build a graph for batches of `batch` samples per member. With `train`, the graph
    /// also holds the loss's gradient for every parameter it depends on.
    /// An attention variant that fails is an error; nothing stands in for it.
    pub fn build(&self, params: &ParamStore, batch: usize, train: bool) -> Result<ModelGraph, ModelError> {
        let r = params.members;
        let mut g = Graph::new();
        let mut constants = Vec::new();
        let labels = g.input("labels", &[r, batch]);
        let (inputs, logits, attention) = match &self.layout {
            Layout::Transformer { cfg, tok, pos, blocks, ln_f, head } => {
                self.build_transformer(&mut g, params, &mut constants, batch, cfg, *tok, *pos, blocks, ln_f.as_ref(), head)?
            }
            Layout::Mlp { layers } => {
                let x = g.input("features", &[r, batch, self.input_width()]);
                let mut h = x;
                for (i, l) in layers.iter().enumerate() {
                    h = linear(&mut g, params, h, l);
                    if i + 1 < layers.len() {
                        h = g.relu(h);
                    }
                }
                (x, h, vec![])
            }
        };
        let loss = g.cross_entropy(logits, labels);
        let mut grads = Vec::new();
        if train {
            let param_nodes: Vec<(ParamId, NodeId)> =
                g.nodes().iter().enumerate().filter_map(|(i, n)| if let crate::graph::Op::Param(p) = n.op { Some((p, NodeId(i))) } else { None }).collect();
            let wrt: Vec<NodeId> = param_nodes.iter().map(|x| x.1).collect();
            let gs = g.backward(loss, &wrt);
            grads = param_nodes.iter().zip(gs).filter_map(|((p, _), gr)| gr.map(|gr| (*p, gr))).collect();
        }
        Ok(ModelGraph { graph: g, batch, inputs, labels, logits, loss, attention, constants, grads })
    }

    #[allow(clippy::too_many_arguments)]
    fn build_transformer(
        &self,
        g: &mut Graph,
        params: &ParamStore,
        constants: &mut Vec<(NodeId, Vec<f64>)>,
        batch: usize,
        cfg: &TransformerConfig,
        tok: ParamId,
        pos: Option<ParamId>,
        blocks: &[Block],
        ln_f: Option<&LnParams>,
        head: &Linear,
    ) -> Result<(NodeId, NodeId, Vec<NodeId>), ModelError> {
        let r = params.members;
        let (d, h) = (cfg.d_model, cfg.heads);
        let dh = d / h;
        let n = self.data.seq_len + 1;
        let v_rows = self.data.alphabet + 1;
        let idx = g.input("tokens", &[r, batch * n]);
        let e = g.param(params, tok);
        let p = match cfg.positions {
            Positions::Learned => Some(g.param(params, pos.expect("declared"))),
            Positions::Sinusoidal => {
                let c = g.input("sinusoidal_positions", &[r, n, d]);
                let one = sinusoidal(n, d);
                constants.push((c, (0..r).flat_map(|_| one.iter().copied()).collect()));
                Some(c)
            }
            Positions::None => None,
        };
        let table = self.uses_table(batch);
        let mut x = if table {
            match p {
                Some(p) => {
                    let e4 = g.reshape(e, &[r, v_rows, 1, d]);
                    let p4 = g.reshape(p, &[r, 1, n, d]);
                    let t = g.add(e4, p4);
                    let t = g.reshape(t, &[r, v_rows * n, d]);
                    // Only (CLS, 0) and (token, i ≥ 1) occur: keep those rows, a third fewer
                    // for Boolean tasks, where `table_row` puts them (what `encode` uses).
                    let alphabet = self.data.alphabet;
                    let mut pairs = vec![0.0; 1 + alphabet * (n - 1)];
                    let occurring = std::iter::once((alphabet, 0)).chain((0..alphabet).flat_map(|tok| (1..n).map(move |pos| (tok, pos))));
                    for (tok, pos) in occurring {
                        pairs[self.table_row(tok, pos, true)] = (tok * n + pos) as f64;
                    }
                    let used = g.input("table_pairs", &[r, pairs.len()]);
                    constants.push((used, (0..r).flat_map(|_| pairs.iter().copied()).collect()));
                    Rows::Table(g.gather(t, used))
                }
                None => Rows::Table(e),
            }
        } else {
            let emb = g.gather(e, idx);
            match p {
                Some(p) => {
                    let emb4 = g.reshape(emb, &[r, batch, n, d]);
                    let p4 = g.reshape(p, &[r, 1, n, d]);
                    let s = g.add(emb4, p4);
                    Rows::Full(g.reshape(s, &[r, batch * n, d]))
                }
                None => Rows::Full(emb),
            }
        };
        // Index of each sample's CLS row in the table (for the CLS shortcut in table form),
        // and the same row once per member (the CLS query, which no sample changes).
        let (cls_idx, cls_row) = if table {
            let id = self.table_row(self.data.alphabet, 0, p.is_some());
            let c = g.input("cls_rows", &[r, batch]);
            constants.push((c, vec![id as f64; r * batch]));
            let one = g.input("cls_row", &[r, 1]);
            constants.push((one, vec![id as f64; r]));
            (Some(c), Some(one))
        } else {
            (None, None)
        };
        let full = |g: &mut Graph, z: Rows| match z {
            Rows::Table(t) => g.gather(t, idx),
            Rows::Full(f) => f,
        };
        let cls_only = |g: &mut Graph, z: Rows| match z {
            Rows::Table(t) => g.gather(t, cls_idx.expect("table mode")),
            Rows::Full(f) => {
                let e = *g.shape(f).last().unwrap();
                let f4 = g.reshape(f, &[r, batch, n, e]);
                let c = g.narrow(f4, 2, 0, 1);
                g.reshape(c, &[r, batch, e])
            }
        };
        let map = |g: &mut Graph, z: Rows, f: &mut dyn FnMut(&mut Graph, NodeId) -> NodeId| match z {
            Rows::Table(t) => Rows::Table(f(g, t)),
            Rows::Full(t) => Rows::Full(f(g, t)),
        };
        let attention = self.attention.as_ref().ok_or(ModelError::MissingAttention)?;
        let mut attn_nodes = Vec::new();
        let shortcut_possible = cfg.readout == Readout::Cls && cfg.cls_shortcut;
        for (l, blk) in blocks.iter().enumerate() {
            let cls_queries = shortcut_possible && l + 1 == blocks.len();
            let nq = if cls_queries { 1 } else { n };
            let hsrc = match (&blk.ln1, cfg.norm) {
                (Some(ln), Norm::Pre) => map(g, x, &mut |g, t| layer_norm(g, params, t, ln, cfg.ln_eps)),
                _ => x,
            };
            let k = map(g, hsrc, &mut |g, t| linear(g, params, t, &blk.k));
            let v = map(g, hsrc, &mut |g, t| linear(g, params, t, &blk.v));
            let o = match (cls_queries, hsrc, k, v) {
                (true, Rows::Table(ht), Rows::Table(kt), Rows::Table(vt)) => {
                    // Keys and values are functions of (token, position), and the CLS query of
                    // the CLS row alone: compute the query once per member, score it against
                    // the key table once and gather each sample's scores, instead of B query
                    // rows against B × N gathered and permuted keys.
                    let hq = g.gather(ht, cls_row.expect("table mode"));
                    let q = linear(g, params, hq, &blk.q);
                    let (w, o) = table_attention(g, attention.as_ref(), q, kt, vt, idx, [r, batch, n, h, dh])?;
                    attn_nodes.push(w);
                    o
                }
                (_, hsrc, k, v) => {
                    let q = map(g, hsrc, &mut |g, t| linear(g, params, t, &blk.q));
                    let (k, v) = (full(g, k), full(g, v));
                    let q = if cls_queries { cls_only(g, q) } else { full(g, q) };
                    // [R, B·Nq, d] → [R, B, H, Nq, dh]
                    let heads = |g: &mut Graph, z: NodeId, rows: usize| {
                        let z5 = g.reshape(z, &[r, batch, rows, h, dh]);
                        g.permute(z5, &[0, 1, 3, 2, 4])
                    };
                    let (qh, kh, vh) = (heads(g, q, nq), heads(g, k, n), heads(g, v, n));
                    let scores = g.matmul(qh, kh, false, true); // [R, B, H, Nq, N]
                    let w = weights(g, attention.as_ref(), scores, dh)?;
                    let cls_w = if nq == 1 { w } else { g.narrow(w, 3, 0, 1) };
                    attn_nodes.push(g.reshape(cls_w, &[r, batch, h, n]));
                    let o = g.matmul(w, vh, false, false); // [R, B, H, Nq, dh]
                    let o = g.permute(o, &[0, 1, 3, 2, 4]);
                    g.reshape(o, &[r, batch * nq, d])
                }
            };
            let resid = if cls_queries { cls_only(g, x) } else { full(g, x) };
            let o = linear(g, params, o, &blk.o);
            let resid = g.reshape(resid, &[r, batch * nq, d]);
            let mut y = g.add(resid, o);
            if let (Some(ln), Norm::Post) = (&blk.ln1, cfg.norm) {
                y = layer_norm(g, params, y, ln, cfg.ln_eps);
            }
            if let Some((m1, m2)) = &blk.mlp {
                let hin = match (&blk.ln2, cfg.norm) {
                    (Some(ln), Norm::Pre) => layer_norm(g, params, y, ln, cfg.ln_eps),
                    _ => y,
                };
                let a = linear(g, params, hin, m1);
                let a = g.gelu(a);
                let m = linear(g, params, a, m2);
                y = g.add(y, m);
                if let (Some(ln), Norm::Post) = (&blk.ln2, cfg.norm) {
                    y = layer_norm(g, params, y, ln, cfg.ln_eps);
                }
            }
            x = Rows::Full(y);
        }
        let Rows::Full(last) = x else { unreachable!("at least one layer") };
        let rows_per_sample = g.shape(last)[1] / batch;
        let pooled = match cfg.readout {
            Readout::Cls if rows_per_sample == 1 => last,
            Readout::Cls => cls_only(g, x),
            Readout::Mean => {
                let l4 = g.reshape(last, &[r, batch, n, d]);
                let s = g.sum_to(l4, &[r, batch, 1, d]);
                let m = g.scale(s, 1.0 / n as f64);
                g.reshape(m, &[r, batch, d])
            }
        };
        let pooled = g.reshape(pooled, &[r, batch, d]);
        let pooled = match ln_f {
            Some(ln) => layer_norm(g, params, pooled, ln, cfg.ln_eps),
            None => pooled,
        };
        let logits = linear(g, params, pooled, head);
        Ok((idx, logits, attn_nodes))
    }
}

/// The variant's weights for `scores`, checked to be a node of the scores' shape.
fn weights(g: &mut Graph, attention: &dyn Attention, scores: NodeId, head_dim: usize) -> Result<NodeId, ModelError> {
    let w = attention.weights(g, scores, head_dim)?;
    let want = g.shape(scores).to_vec();
    match g.nodes().get(w.0) {
        Some(node) if node.shape == want => Ok(w),
        Some(node) => Err(ModelError::WeightsShape { variant: attention.name().to_string(), got: format!("{:?}", node.shape), want }),
        None => Err(ModelError::WeightsShape { variant: attention.name().to_string(), got: "(no such node)".into(), want }),
    }
}

/// CLS-query attention over keys and values given as (token, position) tables.
/// q: [R, 1, d] (the one CLS query of each member); kt, vt: [R, Vt, d]; idx: [R, B·N]
/// (each sample's table rows). Returns the weights [R, B, H, N] and the output [R, B, d].
fn table_attention(
    g: &mut Graph,
    attention: &dyn Attention,
    q: NodeId,
    kt: NodeId,
    vt: NodeId,
    idx: NodeId,
    dims: [usize; 5],
) -> Result<(NodeId, NodeId), ModelError> {
    let [r, batch, n, h, dh] = dims;
    let d = h * dh;
    let vt_rows = g.shape(kt)[1];
    let per_head = |g: &mut Graph, z: NodeId, rows: usize| {
        let z4 = g.reshape(z, &[r, rows, h, dh]);
        g.permute(z4, &[0, 2, 1, 3]) // [R, H, rows, dh]
    };
    let (qh, kh, vh) = (per_head(g, q, 1), per_head(g, kt, vt_rows), per_head(g, vt, vt_rows));
    let table_scores = g.matmul(qh, kh, false, true); // [R, H, 1, Vt]: every table row's score
    let ts = g.permute(table_scores, &[0, 2, 3, 1]); // [R, 1, Vt, H]
    let ts = g.reshape(ts, &[r, vt_rows, h]);
    let scores = g.gather(ts, idx); // [R, B·N, H]
    let rows = g.reshape(idx, &[r * batch, n]);
    let scores = g.reshape(scores, &[r, batch, n, h]);
    let scores = g.permute(scores, &[0, 1, 3, 2]); // [R, B, H, N]
    let scores = g.reshape(scores, &[r, batch, h, 1, n]);
    let w = weights(g, attention, scores, dh)?;
    let w = g.reshape(w, &[r, batch, h, n]);
    // Σ_t w_t V[idx_t] = Σ_j (Σ_{t: idx_t = j} w_t) V_j: pool the weights per table row first.
    let wt = g.permute(w, &[0, 1, 3, 2]); // [R, B, N, H]
    let wt = g.reshape(wt, &[r * batch, n, h]);
    let pooled = g.scatter_add(rows, wt, vt_rows); // [R·B, Vt, H]
    let pooled = g.reshape(pooled, &[r, batch, vt_rows, h]);
    let pooled = g.permute(pooled, &[0, 3, 1, 2]); // [R, H, B, Vt]
    let o = g.matmul(pooled, vh, false, false); // [R, H, B, dh]
    let o = g.permute(o, &[0, 2, 1, 3]); // [R, B, H, dh]
    Ok((w, g.reshape(o, &[r, batch, d])))
}

/// x [R, .., fan_in] · W [R, fan_in, fan_out] + b.
fn linear(g: &mut Graph, params: &ParamStore, x: NodeId, l: &Linear) -> NodeId {
    let s = g.shape(x).to_vec();
    let r = s[0];
    let fan_in = *s.last().unwrap();
    let rows = s[1..s.len() - 1].iter().product::<usize>();
    let w = g.param(params, l.w);
    let fan_out = g.shape(w)[2];
    let x3 = g.reshape(x, &[r, rows, fan_in]);
    let y = g.matmul(x3, w, false, false);
    let b = g.param(params, l.b);
    let b3 = g.reshape(b, &[r, 1, fan_out]);
    let y = g.add(y, b3);
    let mut out = s.clone();
    *out.last_mut().unwrap() = fan_out;
    g.reshape(y, &out)
}

/// LayerNorm over the last axis with a per-feature gain and bias.
fn layer_norm(g: &mut Graph, params: &ParamStore, x: NodeId, ln: &LnParams, eps: f64) -> NodeId {
    let s = g.shape(x).to_vec();
    let d = *s.last().unwrap();
    let mut bshape = vec![1; s.len()];
    bshape[0] = s[0];
    *bshape.last_mut().unwrap() = d;
    let y = g.layer_norm(x, eps);
    let gain = g.param(params, ln.gain);
    let gain = g.reshape(gain, &bshape);
    let bias = g.param(params, ln.bias);
    let bias = g.reshape(bias, &bshape);
    let y = g.mul(y, gain);
    g.add(y, bias)
}

/// The fixed sinusoidal position table of Vaswani et al., [n, d].
pub fn sinusoidal(n: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * d];
    for p in 0..n {
        for i in 0..d {
            let rate = 1.0 / 10000f64.powf((2 * (i / 2)) as f64 / d as f64);
            let a = p as f64 * rate;
            out[p * d + i] = if i % 2 == 0 { a.sin() } else { a.cos() };
        }
    }
    out
}
