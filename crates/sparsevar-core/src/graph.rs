//! The computation graph, its reverse-mode autodiff and its executor.
//!
//! A model builds a [`Graph`] once per experiment shape: every node is one [`Kernel`] launch
//! (or a parameter, an input, or a free reshape). [`Graph::backward`] appends the backward
//! nodes, so gradients are ordinary nodes of the same graph and run on any backend.
//! [`Executor`] plans one buffer per needed node once, then each step only launches kernels.
//!
//! Shapes are written outermost first; the first axis of every model tensor is the ensemble
//! axis R.

use std::collections::HashMap;

use crate::backend::{Backend, BackendError, BinaryOp, BufferId, Kernel, MemberLaunch, MemberUpdate, UnaryOp, Update, run_updates, strides_of};

/// A tensor shape, outermost axis first.
pub type Shape = Vec<usize>;

/// A node of a [`Graph`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// A parameter tensor of a [`ParamStore`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// What a node computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Values written by the host before each run (tokens, labels, constants).
    Input(String),
    /// A trainable parameter, stored outside the graph so several graphs share it.
    Param(ParamId),
    /// Same values, another shape: shares its input's buffer.
    Reshape,
    /// One kernel launch.
    Kernel(Kernel),
}

/// One node: its operation, its inputs and its output shape.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
}

/// A computation graph. Nodes are appended in topological order.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    /// One node per parameter, so each gets exactly one gradient.
    param_nodes: HashMap<ParamId, NodeId>,
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.0].shape
    }

    fn push(&mut self, op: Op, inputs: Vec<NodeId>, shape: Shape) -> NodeId {
        self.nodes.push(Node { op, inputs, shape });
        NodeId(self.nodes.len() - 1)
    }

    fn kernel(&mut self, k: Kernel, inputs: Vec<NodeId>, shape: Shape) -> NodeId {
        debug_assert_eq!(k.arity(), inputs.len(), "{} arity", k.name());
        self.push(Op::Kernel(k), inputs, shape)
    }

    /// A host-written input.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        self.push(Op::Input(name.to_string()), vec![], shape.to_vec())
    }

    /// A parameter of `params`, shape [R, ..].
    pub fn param(&mut self, params: &ParamStore, id: ParamId) -> NodeId {
        if let Some(&n) = self.param_nodes.get(&id) {
            return n;
        }
        let shape = params.full_shape(id);
        let n = self.push(Op::Param(id), vec![], shape);
        self.param_nodes.insert(id, n);
        n
    }

    /// A tensor filled with `value`.
    pub fn constant(&mut self, shape: &[usize], value: f64) -> NodeId {
        self.kernel(Kernel::Fill { len: numel(shape), value }, vec![], shape.to_vec())
    }

    pub fn reshape(&mut self, x: NodeId, shape: &[usize]) -> NodeId {
        assert_eq!(numel(self.shape(x)), numel(shape), "reshape {:?} -> {:?}", self.shape(x), shape);
        if self.shape(x) == shape {
            return x;
        }
        self.push(Op::Reshape, vec![x], shape.to_vec())
    }

    /// Batched matrix product over the leading axes: a [.., m, k], b [.., k, n] → [.., m, n]
    /// (with `trans_a` a is [.., k, m]; with `trans_b` b is [.., n, k]).
    pub fn matmul(&mut self, a: NodeId, b: NodeId, trans_a: bool, trans_b: bool) -> NodeId {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        assert!(sa.len() >= 2 && sa.len() == sb.len(), "matmul ranks {sa:?} {sb:?}");
        let r = sa.len();
        assert_eq!(sa[..r - 2], sb[..r - 2], "matmul batch axes {sa:?} {sb:?}");
        let (m, k) = if trans_a { (sa[r - 1], sa[r - 2]) } else { (sa[r - 2], sa[r - 1]) };
        let (k2, n) = if trans_b { (sb[r - 1], sb[r - 2]) } else { (sb[r - 2], sb[r - 1]) };
        assert_eq!(k, k2, "matmul inner dims {sa:?} {sb:?} (trans {trans_a} {trans_b})");
        let batch = numel(&sa[..r - 2]);
        let mut shape = sa[..r - 2].to_vec();
        shape.extend([m, n]);
        self.kernel(Kernel::MatMul { batch, m, k, n, trans_a, trans_b }, vec![a, b], shape)
    }

    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        assert_eq!(sa.len(), sb.len(), "broadcast needs equal ranks: {sa:?} {sb:?}");
        let shape: Shape = sa
            .iter()
            .zip(&sb)
            .map(|(&x, &y)| {
                assert!(x == y || x == 1 || y == 1, "cannot broadcast {sa:?} with {sb:?}");
                x.max(y)
            })
            .collect();
        let bstrides =
            |s: &[usize]| -> Vec<usize> { strides_of(s).into_iter().zip(s).zip(&shape).map(|((st, &d), &o)| if d == 1 && o != 1 { 0 } else { st }).collect() };
        let (a_strides, b_strides) = (bstrides(&sa), bstrides(&sb));
        self.kernel(Kernel::Binary { op, shape: shape.clone(), a_strides, b_strides }, vec![a, b], shape)
    }

    /// a + b with broadcasting over axes of extent 1 (equal ranks).
    pub fn add(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> NodeId {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// Sum over the axes where `to` is 1.
    pub fn sum_to(&mut self, x: NodeId, to: &[usize]) -> NodeId {
        let from = self.shape(x).to_vec();
        if from == to {
            return x;
        }
        assert_eq!(from.len(), to.len(), "sum_to {from:?} -> {to:?}");
        self.kernel(Kernel::SumTo { from, to: to.to_vec() }, vec![x], to.to_vec())
    }

    /// Broadcast x to `shape` (axes of extent 1 repeated).
    pub fn expand(&mut self, x: NodeId, shape: &[usize]) -> NodeId {
        if self.shape(x) == shape {
            return x;
        }
        // x + zeros(shape): the broadcasting Binary kernel does the copy, so no extra kernel
        // is needed; the zeros are a constant computed once at planning.
        let zeros = self.constant(shape, 0.0);
        let y = self.add(x, zeros);
        assert_eq!(self.shape(y), shape, "expand {:?} -> {shape:?}", self.shape(x));
        y
    }

    pub fn affine(&mut self, x: NodeId, scale: f64, shift: f64) -> NodeId {
        let s = self.shape(x).to_vec();
        self.kernel(Kernel::Affine { len: numel(&s), scale, shift }, vec![x], s)
    }
    pub fn scale(&mut self, x: NodeId, c: f64) -> NodeId {
        self.affine(x, c, 0.0)
    }
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> NodeId {
        let s = self.shape(x).to_vec();
        self.kernel(Kernel::Unary { op, len: numel(&s) }, vec![x], s)
    }
    pub fn relu(&mut self, x: NodeId) -> NodeId {
        self.unary(UnaryOp::Relu, x)
    }
    pub fn gelu(&mut self, x: NodeId) -> NodeId {
        self.unary(UnaryOp::Gelu, x)
    }
    pub fn sigmoid(&mut self, x: NodeId) -> NodeId {
        self.unary(UnaryOp::Sigmoid, x)
    }

    fn rows_cols(&self, x: NodeId) -> (usize, usize) {
        let s = self.shape(x);
        let cols = *s.last().expect("rank ≥ 1");
        (numel(s) / cols, cols)
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: NodeId) -> NodeId {
        let (rows, cols) = self.rows_cols(x);
        let s = self.shape(x).to_vec();
        self.kernel(Kernel::Softmax { rows, cols }, vec![x], s)
    }

    /// Layer normalisation over the last axis, without the affine part.
    pub fn layer_norm(&mut self, x: NodeId, eps: f64) -> NodeId {
        let (rows, cols) = self.rows_cols(x);
        let s = self.shape(x).to_vec();
        self.kernel(Kernel::LayerNorm { rows, cols, eps }, vec![x], s)
    }

    /// table [G, rows, cols], idx [G, M] → [G, M, cols].
    pub fn gather(&mut self, table: NodeId, idx: NodeId) -> NodeId {
        let (st, si) = (self.shape(table).to_vec(), self.shape(idx).to_vec());
        assert!(st.len() == 3 && si.len() == 2 && st[0] == si[0], "gather table {st:?} idx {si:?}");
        let k = Kernel::Gather { groups: st[0], table_rows: st[1], rows: si[1], cols: st[2] };
        self.kernel(k, vec![table, idx], vec![st[0], si[1], st[2]])
    }

    /// The adjoint of [`Graph::gather`]: idx [G, M], src [G, M, cols] → [G, table_rows, cols]
    /// with src rows added into the rows idx names.
    pub fn scatter_add(&mut self, idx: NodeId, src: NodeId, table_rows: usize) -> NodeId {
        let (si, ss) = (self.shape(idx).to_vec(), self.shape(src).to_vec());
        assert!(si.len() == 2 && ss.len() == 3 && ss[..2] == si[..], "scatter_add idx {si:?} src {ss:?}");
        let k = Kernel::ScatterAdd { groups: si[0], table_rows, rows: si[1], cols: ss[2] };
        self.kernel(k, vec![idx, src], vec![si[0], table_rows, ss[2]])
    }

    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> NodeId {
        let shape = self.shape(x).to_vec();
        assert_eq!(perm.len(), shape.len(), "permute {shape:?} by {perm:?}");
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return x;
        }
        let out = perm.iter().map(|&p| shape[p]).collect();
        self.kernel(Kernel::Permute { shape, perm: perm.to_vec() }, vec![x], out)
    }

    /// x[.., start..start+len, ..] along `axis`.
    pub fn narrow(&mut self, x: NodeId, axis: usize, start: usize, len: usize) -> NodeId {
        let s = self.shape(x).to_vec();
        assert!(start + len <= s[axis], "narrow {s:?} axis {axis} {start}+{len}");
        if start == 0 && len == s[axis] {
            return x;
        }
        let (outer, inner) = (numel(&s[..axis]), numel(&s[axis + 1..]));
        let mut out = s.clone();
        out[axis] = len;
        self.kernel(Kernel::Narrow { outer, axis: s[axis], start, len, inner }, vec![x], out)
    }

    /// Mean cross-entropy per ensemble member: logits [R, B, C], labels [R, B] → [R].
    pub fn cross_entropy(&mut self, logits: NodeId, labels: NodeId) -> NodeId {
        let (sl, sy) = (self.shape(logits).to_vec(), self.shape(labels).to_vec());
        assert!(sl.len() == 3 && sy == sl[..2], "cross_entropy logits {sl:?} labels {sy:?}");
        let k = Kernel::CrossEntropy { groups: sl[0], batch: sl[1], classes: sl[2] };
        self.kernel(k, vec![logits, labels], vec![sl[0]])
    }

    /// Append the backward of `loss` (shape [R]: each member's loss, each seeded with
    /// d loss = 1) and return the gradient node of each of `wrt` (None where the loss does
    /// not depend on it).
    pub fn backward(&mut self, loss: NodeId, wrt: &[NodeId]) -> Vec<Option<NodeId>> {
        let n = loss.0 + 1;
        // Which nodes depend on something we differentiate with respect to.
        let mut live = vec![false; n];
        for w in wrt {
            if w.0 < n {
                live[w.0] = true;
            }
        }
        for i in 0..n {
            if !live[i] && self.nodes[i].inputs.iter().any(|x| live[x.0]) {
                live[i] = true;
            }
        }
        let mut grads: HashMap<usize, NodeId> = HashMap::new();
        // The copy is needed: the shape borrows `self`, which `constant` takes mutably.
        let shape = self.shape(loss).to_vec();
        let seed = self.constant(&shape, 1.0);
        grads.insert(loss.0, seed);
        for i in (0..n).rev() {
            let Some(&dy) = grads.get(&i) else { continue };
            if !live[i] {
                continue;
            }
            let node = self.nodes[i].clone();
            let contributions = self.node_backward(NodeId(i), &node, dy, &live);
            for (x, dx) in contributions {
                let acc = match grads.get(&x.0) {
                    Some(&prev) => self.add(prev, dx),
                    None => dx,
                };
                grads.insert(x.0, acc);
            }
        }
        wrt.iter().map(|w| grads.get(&w.0).copied()).collect()
    }

    /// The gradient contributions of one node to its live inputs.
    fn node_backward(&mut self, y: NodeId, node: &Node, dy: NodeId, live: &[bool]) -> Vec<(NodeId, NodeId)> {
        let ins = node.inputs.clone();
        let wants = |j: usize| live[ins[j].0];
        let mut out = Vec::new();
        match &node.op {
            Op::Input(_) | Op::Param(_) => {}
            Op::Reshape => {
                let s = self.shape(ins[0]).to_vec();
                out.push((ins[0], self.reshape(dy, &s)));
            }
            Op::Kernel(k) => match k.clone() {
                Kernel::MatMul { trans_a, trans_b, .. } => {
                    let (a, b) = (ins[0], ins[1]);
                    if wants(0) {
                        let da = if trans_a { self.matmul(b, dy, trans_b, true) } else { self.matmul(dy, b, false, !trans_b) };
                        out.push((a, da));
                    }
                    if wants(1) {
                        let db = if trans_b { self.matmul(dy, a, true, trans_a) } else { self.matmul(a, dy, !trans_a, false) };
                        out.push((b, db));
                    }
                }
                Kernel::Binary { op, .. } => {
                    let (a, b) = (ins[0], ins[1]);
                    let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
                    if wants(0) {
                        let d = if op == BinaryOp::Mul { self.mul(dy, b) } else { dy };
                        out.push((a, self.sum_to(d, &sa)));
                    }
                    if wants(1) {
                        let d = match op {
                            BinaryOp::Add => dy,
                            BinaryOp::Sub => self.scale(dy, -1.0),
                            BinaryOp::Mul => self.mul(dy, a),
                        };
                        out.push((b, self.sum_to(d, &sb)));
                    }
                }
                Kernel::SumTo { from, .. } => out.push((ins[0], self.expand(dy, &from))),
                Kernel::Affine { scale, .. } => out.push((ins[0], self.scale(dy, scale))),
                Kernel::Fill { .. } => {}
                Kernel::Unary { op, len } => {
                    let from = if op == UnaryOp::Sigmoid { y } else { ins[0] };
                    let s = self.shape(y).to_vec();
                    out.push((ins[0], self.kernel(Kernel::UnaryBackward { op, len }, vec![from, dy], s)));
                }
                Kernel::Softmax { rows, cols } => {
                    let s = self.shape(y).to_vec();
                    out.push((ins[0], self.kernel(Kernel::SoftmaxBackward { rows, cols }, vec![y, dy], s)));
                }
                Kernel::LayerNorm { rows, cols, eps } => {
                    let s = self.shape(y).to_vec();
                    out.push((ins[0], self.kernel(Kernel::LayerNormBackward { rows, cols, eps }, vec![ins[0], dy], s)));
                }
                Kernel::Gather { groups, table_rows, rows, cols } => {
                    if wants(0) {
                        let s = self.shape(ins[0]).to_vec();
                        let k = Kernel::ScatterAdd { groups, table_rows, rows, cols };
                        out.push((ins[0], self.kernel(k, vec![ins[1], dy], s)));
                    }
                }
                Kernel::ScatterAdd { .. } => {
                    if wants(1) {
                        out.push((ins[1], self.gather(dy, ins[0])));
                    }
                }
                Kernel::Permute { perm, .. } => {
                    let mut inv = vec![0; perm.len()];
                    for (i, &p) in perm.iter().enumerate() {
                        inv[p] = i;
                    }
                    out.push((ins[0], self.permute(dy, &inv)));
                }
                Kernel::Narrow { outer, axis, start, len, inner } => {
                    let s = self.shape(ins[0]).to_vec();
                    let k = Kernel::NarrowBackward { outer, axis, start, len, inner };
                    out.push((ins[0], self.kernel(k, vec![dy], s)));
                }
                Kernel::NarrowBackward { outer, axis, start, len, inner } => {
                    let s = self.shape(ins[0]).to_vec();
                    out.push((ins[0], self.kernel(Kernel::Narrow { outer, axis, start, len, inner }, vec![dy], s)));
                }
                Kernel::CrossEntropy { groups, batch, classes } => {
                    if wants(0) {
                        let s = self.shape(ins[0]).to_vec();
                        let k = Kernel::CrossEntropyBackward { groups, batch, classes };
                        out.push((ins[0], self.kernel(k, vec![ins[0], ins[1], dy], s)));
                    }
                }
                other => panic!("{} has no backward (second derivatives are not supported)", other.name()),
            },
        }
        out
    }
}

/// How a parameter is initialised.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f64),
    /// U(−a, a).
    Uniform(f64),
    Constant(f64),
}

/// One parameter tensor: its name, per-member shape and initialisation.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Shape,
    pub init: Init,
}

/// The parameters of an ensemble of R models, stored on a backend and shared by every
/// graph built over them (training and evaluation graphs of different batch sizes).
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    pub members: usize,
    pub specs: Vec<ParamSpec>,
    pub buffers: Vec<BufferId>,
}

impl ParamStore {
    pub fn new(members: usize) -> Self {
        Self { members, ..Self::default() }
    }

    /// Declare a parameter (per-member shape).
    pub fn declare(&mut self, name: &str, shape: &[usize], init: Init) -> ParamId {
        self.specs.push(ParamSpec { name: name.to_string(), shape: shape.to_vec(), init });
        ParamId(self.specs.len() - 1)
    }

    pub fn full_shape(&self, id: ParamId) -> Shape {
        let mut s = vec![self.members];
        s.extend(&self.specs[id.0].shape);
        s
    }

    /// Values per member of one parameter.
    pub fn member_len(&self, id: ParamId) -> usize {
        numel(&self.specs[id.0].shape)
    }

    /// Total trainable values per member.
    pub fn count_per_member(&self) -> usize {
        (0..self.specs.len()).map(|i| self.member_len(ParamId(i))).sum()
    }

    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.specs.len()).map(ParamId)
    }

    /// Draw every member's initial values from its own generator (member r's values depend
    /// only on `member_rngs[r]`, in declaration order) and upload them.
    pub fn initialize(&mut self, backend: &mut dyn Backend, member_rngs: &mut [crate::rng::Pcg32]) -> Result<(), BackendError> {
        assert_eq!(member_rngs.len(), self.members);
        let mut host: Vec<Vec<f64>> = self.specs.iter().map(|s| Vec::with_capacity(numel(&s.shape) * self.members)).collect();
        for rng in member_rngs.iter_mut() {
            for (spec, h) in self.specs.iter().zip(host.iter_mut()) {
                for _ in 0..numel(&spec.shape) {
                    h.push(match spec.init {
                        Init::Normal(std) => std * rng.normal(),
                        Init::Uniform(a) => a * (2.0 * rng.uniform() - 1.0),
                        Init::Constant(c) => c,
                    });
                }
            }
        }
        self.buffers.clear();
        for h in host {
            let b = backend.alloc(h.len())?;
            backend.write(b, &h)?;
            self.buffers.push(b);
        }
        Ok(())
    }

    pub fn buffer(&self, id: ParamId) -> BufferId {
        self.buffers[id.0]
    }

    /// Shrink to the members `keep` (in that order), their values copied exactly; the old
    /// buffers are freed.
    pub fn retain(&mut self, backend: &mut dyn Backend, keep: &[usize]) -> Result<(), BackendError> {
        for i in 0..self.buffers.len() {
            let len = self.member_len(ParamId(i));
            self.buffers[i] = retain_rows(backend, self.buffers[i], len, keep)?;
        }
        self.members = keep.len();
        Ok(())
    }
}

/// A new buffer holding rows `keep` (of `row_len` values each) of `buf`, in that order;
/// `buf` is freed. Values pass through f64 on the host, which every backend's own precision
/// round-trips exactly.
pub fn retain_rows(backend: &mut dyn Backend, buf: BufferId, row_len: usize, keep: &[usize]) -> Result<BufferId, BackendError> {
    let mut all = Vec::new();
    backend.read(buf, &mut all)?;
    let kept: Vec<f64> = keep.iter().flat_map(|&r| all[r * row_len..(r + 1) * row_len].iter().copied()).collect();
    let out = backend.alloc(kept.len())?;
    backend.write(out, &kept)?;
    backend.free(buf)?;
    Ok(out)
}

/// A graph planned on a backend: one buffer per needed node, constants computed once.
#[derive(Debug)]
pub struct Executor {
    graph: Graph,
    buffers: Vec<Option<BufferId>>,
    /// The outputs' buffers: the only ones whose values [`Executor::read`] promises.
    kept: Vec<BufferId>,
    steps: Vec<usize>,
    flops: u64,
    /// The steps as per-member launches for [`Backend::run_members`], where every one of
    /// them splits by member (ensembles of two or more).
    by_member: Option<(usize, Vec<MemberLaunch>)>,
    /// Outputs declared [`Executor::read_by_updates_only`].
    for_updates: Vec<BufferId>,
}

/// Which nodes `outputs` need: themselves and everything they read, transitively.
fn needed_nodes(graph: &Graph, outputs: &[NodeId]) -> Vec<bool> {
    let n = graph.nodes.len();
    let mut needed = vec![false; n];
    for o in outputs {
        needed[o.0] = true;
    }
    for i in (0..n).rev() {
        if needed[i] {
            for x in &graph.nodes[i].inputs {
                needed[x.0] = true;
            }
        }
    }
    needed
}

/// The values [`Executor::new`] allocates to compute `outputs` of `graph` — one buffer per
/// needed input or kernel node; parameters and reshapes share buffers — counted without a
/// backend, so a config can be sized before anything is allocated.
pub fn planned_values(graph: &Graph, outputs: &[NodeId]) -> u128 {
    let needed = needed_nodes(graph, outputs);
    graph
        .nodes
        .iter()
        .zip(needed)
        .filter(|(node, needed)| *needed && matches!(node.op, Op::Input(_) | Op::Kernel(_)))
        .map(|(node, _)| node.shape.iter().map(|&d| d as u128).product::<u128>())
        .sum()
}

impl Executor {
    /// Plan `graph` to compute `outputs` (and only what they need).
    pub fn new(backend: &mut dyn Backend, graph: Graph, outputs: &[NodeId], params: &ParamStore) -> Result<Self, BackendError> {
        let n = graph.nodes.len();
        let needed = needed_nodes(&graph, outputs);
        let mut buffers = vec![None; n];
        let mut steps = Vec::new();
        let mut flops = 0;
        for i in 0..n {
            if !needed[i] {
                continue;
            }
            let node = &graph.nodes[i];
            buffers[i] = Some(match &node.op {
                Op::Param(p) => params.buffer(*p),
                Op::Reshape => buffers[node.inputs[0].0].expect("planned in order"),
                Op::Input(_) => backend.alloc(numel(&node.shape))?,
                Op::Kernel(k) => {
                    let b = backend.alloc(numel(&node.shape))?;
                    if let Kernel::Fill { .. } = k {
                        // Constants are computed once, here.
                        backend.launch(k, &[], b)?;
                    } else {
                        steps.push(i);
                        flops += k.flops();
                    }
                    b
                }
            });
        }
        // Launch outputs nobody reads after the run (every buffer but the outputs') are
        // temporaries that a member-by-member run may keep in scratch memory.
        let kept: Vec<BufferId> = outputs.iter().filter_map(|o| buffers[o.0]).collect();
        let members = params.members;
        let by_member = (members > 1)
            .then(|| {
                steps
                    .iter()
                    .map(|&i| {
                        let node = &graph.nodes[i];
                        let Op::Kernel(k) = &node.op else { return None };
                        let inputs = node.inputs.iter().map(|x| buffers[x.0]).collect::<Option<Vec<_>>>()?;
                        let output = buffers[i]?;
                        Some(MemberLaunch { kernel: k.for_one_member(members)?, inputs, output, scratch: !kept.contains(&output), for_updates: false })
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .flatten()
            .map(|launches| (members, launches));
        Ok(Self { graph, buffers, kept, steps, flops, by_member, for_updates: Vec::new() })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Give back the buffers this executor allocated (parameters belong to their store).
    pub fn free(self, backend: &mut dyn Backend) -> Result<(), BackendError> {
        for (node, buf) in self.graph.nodes.iter().zip(&self.buffers) {
            if let (Some(b), Op::Input(_) | Op::Kernel(_)) = (buf, &node.op) {
                backend.free(*b)?;
            }
        }
        Ok(())
    }

    /// The buffer holding a node's values (None if the node is not needed).
    pub fn buffer(&self, id: NodeId) -> Option<BufferId> {
        self.buffers[id.0]
    }

    /// Floating-point operations of one run.
    pub fn flops(&self) -> u64 {
        self.flops
    }

    /// Number of kernel launches per run.
    pub fn launches(&self) -> usize {
        self.steps.len()
    }

    /// Write an input node's values (ignored when no output depends on the input).
    pub fn write(&self, backend: &mut dyn Backend, id: NodeId, data: &[f64]) -> Result<(), BackendError> {
        match self.buffer(id) {
            Some(b) => backend.write(b, data),
            None => Ok(()),
        }
    }

    /// Read an output's values (or an input's or parameter's). Other nodes are temporaries,
    /// which a member-by-member run may never write to their buffers, and so are outputs
    /// declared [`Executor::read_by_updates_only`].
    pub fn read(&self, backend: &mut dyn Backend, id: NodeId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        let buf = self.buffer(id).expect("node is not computed by this executor");
        let temporary = !self.kept.contains(&buf) && self.steps.iter().any(|&i| self.buffers[i] == Some(buf));
        assert!(!temporary, "node {id:?} is not an output of this executor: list it in `outputs` to read it");
        assert!(!self.for_updates.contains(&buf), "node {id:?} is read by updates only (Executor::read_by_updates_only)");
        backend.read(buf, out)
    }

    /// Declare outputs that nothing but the updates of [`Executor::run_then`] reads (the
    /// gradients an optimizer consumes): a member-by-member run with updates may then keep
    /// them in scratch memory like temporaries, where each member's update reads its
    /// gradients while they are still in cache, and [`Executor::read`] refuses them.
    pub fn read_by_updates_only(&mut self, nodes: &[NodeId]) {
        let bufs: Vec<BufferId> = nodes.iter().filter_map(|&n| self.buffer(n)).collect();
        if let Some((_, launches)) = &mut self.by_member {
            for l in launches.iter_mut().filter(|l| bufs.contains(&l.output)) {
                l.for_updates = true;
            }
        }
        self.for_updates.extend(bufs);
    }

    /// Run every kernel once, like [`Executor::run`], adding each launch's wall time to
    /// `profile` under its kernel name (call count, seconds). Synchronises after every launch.
    /// A backend that times launches on the device (GPU timestamps) runs them as usual, and
    /// the times are collected by the caller's [`Backend::launch_times`]; any other waits
    /// for each launch and adds its wall time here.
    pub fn run_profiled(&self, backend: &mut dyn Backend, profile: &mut std::collections::BTreeMap<String, (u64, f64)>) -> Result<(), BackendError> {
        for &i in &self.steps {
            let node = &self.graph.nodes[i];
            let Op::Kernel(k) = &node.op else { unreachable!() };
            let ins: Vec<BufferId> = node.inputs.iter().map(|x| self.buffers[x.0].expect("planned")).collect();
            let label = format!("{} {:?}", k.name(), node.shape);
            if backend.time_launches_as(Some(&label))? {
                backend.launch(k, &ins, self.buffers[i].expect("planned"))?;
                continue;
            }
            let start = std::time::Instant::now();
            backend.launch(k, &ins, self.buffers[i].expect("planned"))?;
            backend.sync()?;
            let e = profile.entry(label).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += start.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Run every kernel once, in order (member by member where the backend prefers that:
    /// the same numbers).
    pub fn run(&self, backend: &mut dyn Backend) -> Result<(), BackendError> {
        self.run_then(backend, &[])
    }

    /// Run every kernel once and then `updates` (whole-ensemble updates with their
    /// buffers, in order): member by member where the backend prefers that, so that each
    /// member's update reads the gradients it has just computed, still in cache. The same
    /// numbers either way.
    pub fn run_then(&self, backend: &mut dyn Backend, updates: &[(Update, Vec<BufferId>)]) -> Result<(), BackendError> {
        if let Some((members, launches)) = &self.by_member {
            let split: Option<Vec<MemberUpdate>> =
                updates.iter().map(|(u, b)| Some(MemberUpdate { update: u.for_one_member(*members)?, buffers: b.clone() })).collect();
            match split {
                Some(per) if backend.run_members(*members, launches, &per)? => return Ok(()),
                // Updates that do not split by member run whole, after the members.
                None if backend.run_members(*members, launches, &[])? => return run_updates(backend, updates),
                _ => {}
            }
        }
        let mut ins: Vec<BufferId> = Vec::with_capacity(4);
        for &i in &self.steps {
            let node = &self.graph.nodes[i];
            let Op::Kernel(k) = &node.op else { unreachable!() };
            ins.clear();
            ins.extend(node.inputs.iter().map(|x| self.buffers[x.0].expect("planned")));
            backend.launch(k, &ins, self.buffers[i].expect("planned"))?;
        }
        run_updates(backend, updates)
    }
}
