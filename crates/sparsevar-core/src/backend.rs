//! The `Backend` trait and the fixed kernel set every backend implements.
//!
//! A backend owns flat buffers of floats (f32 on the GPU, f32 or f64 on the CPU) and runs
//! [`Kernel`]s on them. The graph executor is the only caller in the hot loop: it allocates
//! every buffer once when a graph is planned and then only launches kernels. Buffers are
//! row-major; every shape below is written outermost first, and index data (token ids,
//! labels) travels as floats holding small integers (exact up to 2^24).
//!
//! Each kernel's backward sits next to it in this enum; the autodiff in `graph` decides which
//! backward kernels a graph needs.

use std::fmt;

/// Handle to a buffer owned by a backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

/// Elementwise binary operations (with broadcasting, see [`Kernel::Binary`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

/// Elementwise unary operations, each with its derivative in [`Kernel::UnaryBackward`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Relu,
    /// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    Gelu,
    Sigmoid,
}

/// One launch of a primitive: `inputs` → one freshly written `output` buffer.
///
/// The output never aliases an input. Every reduction runs in a fixed order inside one
/// output element, so results do not depend on how a backend splits the work.
#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// y[g] = op(a[g]) · op(b[g]) for g in 0..batch.
    /// a: [batch, m, k] ([batch, k, m] if `trans_a`), b: [batch, k, n] ([batch, n, k] if
    /// `trans_b`), y: [batch, m, n]. Backward: two more MatMuls with flipped transposes.
    MatMul { batch: usize, m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool },
    /// y[i] = a[i·a_strides] op b[i·b_strides] over the multi-index i of `shape` (rank ≤ 6);
    /// a stride of 0 broadcasts that axis. Backward: Binary again plus [`Kernel::SumTo`].
    Binary { op: BinaryOp, shape: Vec<usize>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    /// y = x summed over every axis where `to` is 1 and `from` is not (same rank).
    /// The reduction a broadcast needs in its backward; its own backward is a broadcast.
    SumTo { from: Vec<usize>, to: Vec<usize> },
    /// y = scale · x + shift.
    Affine { len: usize, scale: f64, shift: f64 },
    /// y = value (no inputs).
    Fill { len: usize, value: f64 },
    /// y = op(x).
    Unary { op: UnaryOp, len: usize },
    /// dx = dy · op'(·). Inputs: [x, dy] for Relu and Gelu, [y, dy] for Sigmoid (its
    /// derivative is cheapest from the output).
    UnaryBackward { op: UnaryOp, len: usize },
    /// Softmax over the last axis: x, y: [rows, cols].
    Softmax { rows: usize, cols: usize },
    /// dx = y ⊙ (dy − Σ_j dy_j y_j). Inputs: [y, dy].
    SoftmaxBackward { rows: usize, cols: usize },
    /// Normalise each row to mean 0, variance 1 (biased variance, `eps` inside the root);
    /// no affine part (the graph composes it). x, y: [rows, cols].
    LayerNorm { rows: usize, cols: usize, eps: f64 },
    /// Inputs: [x, dy] (the forward input, not its output). dx: [rows, cols].
    LayerNormBackward { rows: usize, cols: usize, eps: f64 },
    /// y[g, i, :] = table[g, idx[g, i], :]. Inputs: [table: [groups, table_rows, cols],
    /// idx: [groups, rows]]. y: [groups, rows, cols].
    Gather { groups: usize, table_rows: usize, rows: usize, cols: usize },
    /// dtable[g, idx[g, i], :] += dy[g, i, :], rows summed in increasing i (deterministic).
    /// Inputs: [idx: [groups, rows], dy: [groups, rows, cols]]. y: [groups, table_rows, cols].
    ScatterAdd { groups: usize, table_rows: usize, rows: usize, cols: usize },
    /// y = x with its axes permuted: y.shape[i] = shape[perm[i]]. Backward: the inverse
    /// permutation.
    Permute { shape: Vec<usize>, perm: Vec<usize> },
    /// y = x[:, start..start+len, :] with x: [outer, axis, inner], y: [outer, len, inner].
    Narrow { outer: usize, axis: usize, start: usize, len: usize, inner: usize },
    /// dx: [outer, axis, inner], zero outside start..start+len where it is dy.
    NarrowBackward { outer: usize, axis: usize, start: usize, len: usize, inner: usize },
    /// Mean cross-entropy per group. Inputs: [logits: [groups, batch, classes],
    /// labels: [groups, batch]]. y: [groups].
    CrossEntropy { groups: usize, batch: usize, classes: usize },
    /// Inputs: [logits, labels, dloss: [groups]]. y = dlogits: [groups, batch, classes].
    CrossEntropyBackward { groups: usize, batch: usize, classes: usize },
}

/// In-place updates: optimizer steps and small accumulations that write existing buffers.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// buf[..len] = 0.
    Zero { len: usize },
    /// acc[g] += Σ_i x[g, i]². Buffers: [x: [groups, len], acc: [groups]].
    AccumulateSquares { groups: usize, len: usize },
    /// AdamW on one parameter tensor of an ensemble. Buffers: [param, grad, m, v] and, when
    /// `clip` is set, a fifth: the per-member squared gradient norm [groups].
    /// g' = g · min(1, clip / (‖g‖ + 1e-6)); m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²;
    /// p -= lr (m / bias1 / (sqrt(v / bias2) + eps) + weight_decay p).
    /// `bias1` = 1 − β1^t and `bias2` = 1 − β2^t are computed by the caller.
    Adam { groups: usize, len: usize, lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64, bias1: f64, bias2: f64, clip: Option<f64> },
    /// SGD with momentum (PyTorch convention). Buffers: [param, grad, velocity] (+ the
    /// squared norm buffer when `clip` is set). g' = clipped g + weight_decay p;
    /// vel = momentum vel + g'; p -= lr vel.
    Sgd { groups: usize, len: usize, lr: f64, momentum: f64, weight_decay: f64, clip: Option<f64> },
    /// Projection onto a Frobenius ball, given the norm: x[g, :] *= radius / sqrt(sq[g])
    /// where sqrt(sq[g]) > radius, untouched otherwise. Buffers: [x: [groups, len],
    /// sq: [groups]] (sq from [`Update::AccumulateSquares`], summed over every tensor of the
    /// ball, so a ball may span several buffers). Elementwise: any split is deterministic.
    ScaleToBall { groups: usize, len: usize, radius: f64 },
}

/// One launch of [`Backend::run_members`]: a kernel sized for one member and its buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberLaunch {
    pub kernel: Kernel,
    pub inputs: Vec<BufferId>,
    pub output: BufferId,
    /// The output is a temporary: only later launches of the same list read it, and nobody
    /// reads its buffer afterwards. A backend may keep it in per-thread scratch memory
    /// instead (the buffer's values are then unspecified), so one member's temporaries reuse
    /// the memory, still in cache, of the member before it.
    pub scratch: bool,
    /// The output is read only by later launches and by the updates given with the list (a
    /// gradient that only the optimizer reads): when [`Backend::run_members`] gets updates,
    /// it is a temporary like a `scratch` one, and its buffer's values are unspecified
    /// afterwards; without updates it is written to its buffer.
    pub for_updates: bool,
}

/// One in-place update of [`Backend::run_members`], sized for one member
/// ([`Update::for_one_member`]), run after the member's launches.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberUpdate {
    pub update: Update,
    pub buffers: Vec<BufferId>,
}

/// Run whole-ensemble `updates` (each with its buffers) in order.
pub fn run_updates(backend: &mut dyn Backend, updates: &[(Update, Vec<BufferId>)]) -> Result<(), BackendError> {
    for (u, b) in updates {
        backend.update(u, b)?;
    }
    Ok(())
}

/// What can go wrong inside a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend}: buffer {buffer:?} holds {have} values but {kernel} needs {need}")]
    BufferSize { backend: String, kernel: String, buffer: BufferId, have: usize, need: usize },
    #[error("{backend}: unknown buffer {0:?}", backend = .1)]
    UnknownBuffer(BufferId, String),
    #[error("{backend}: {message}")]
    Device { backend: String, message: String },
}

/// Where numbers live and kernels run. Object-safe, so plugins can bring their own.
pub trait Backend: Send {
    /// Short name: "cpu", "cpu-f64", "wgpu", …
    fn name(&self) -> String;
    /// A new buffer of `len` zeros.
    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError>;
    /// Copy host values into a buffer (`data.len()` must equal the buffer's length).
    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError>;
    /// Copy a buffer back to the host into `out` (resized to the buffer's length).
    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError>;
    /// Run one kernel.
    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError>;
    /// Run one in-place update.
    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError>;
    /// Wait until everything launched so far has finished (a no-op on the CPU).
    fn sync(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Run `launches` and then `updates` in order for each of `members` ensemble members,
    /// where every buffer they name holds the members' values one after another in `members`
    /// equal slices and each kernel or update is sized for one member
    /// ([`Kernel::for_one_member`], [`Update::for_one_member`]): member r's launches read and
    /// write only slice r. Returns `Ok(false)`, having done nothing, where the
    /// backend prefers whole-ensemble launches (the default); the caller then launches the
    /// full kernels and updates. The CPU runs members concurrently, each through the whole
    /// list, so a member's operands stay in its core's cache between kernels (its gradients
    /// are still there when its optimizer step reads them); a member's numbers are the ones
    /// it gets alone, so the result equals the whole-ensemble launches bit for bit.
    fn run_members(&mut self, members: usize, launches: &[MemberLaunch], updates: &[MemberUpdate]) -> Result<bool, BackendError> {
        let _ = (members, launches, updates);
        Ok(false)
    }
    /// Give a buffer's memory back; the id is never reused and later use of it is an error
    /// (a backend may also keep the memory until it is dropped: the default does).
    fn free(&mut self, buf: BufferId) -> Result<(), BackendError> {
        let _ = buf;
        Ok(())
    }
    /// Time the launches and updates that follow on the device, each counted under `label`
    /// (until the next call; `None` stops timing), without waiting between them: GPU
    /// timestamps, for profiles of the steps as they really run. Returns false, doing
    /// nothing, where the backend cannot (the default); a profile then waits for each launch.
    fn time_launches_as(&mut self, label: Option<&str>) -> Result<bool, BackendError> {
        let _ = label;
        Ok(false)
    }
    /// The device time of what was timed since the last call, per label: (label, launches,
    /// seconds). Waits for the device.
    fn launch_times(&mut self) -> Result<Vec<(String, u64, f64)>, BackendError> {
        Ok(Vec::new())
    }
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.name())
    }
}

impl Kernel {
    /// Number of inputs the kernel reads.
    pub fn arity(&self) -> usize {
        match self {
            Kernel::Fill { .. } => 0,
            Kernel::SumTo { .. }
            | Kernel::Affine { .. }
            | Kernel::Unary { .. }
            | Kernel::Softmax { .. }
            | Kernel::LayerNorm { .. }
            | Kernel::Permute { .. }
            | Kernel::Narrow { .. }
            | Kernel::NarrowBackward { .. } => 1,
            Kernel::MatMul { .. }
            | Kernel::Binary { .. }
            | Kernel::UnaryBackward { .. }
            | Kernel::SoftmaxBackward { .. }
            | Kernel::LayerNormBackward { .. }
            | Kernel::Gather { .. }
            | Kernel::ScatterAdd { .. }
            | Kernel::CrossEntropy { .. } => 2,
            Kernel::CrossEntropyBackward { .. } => 3,
        }
    }

    /// Lengths of the input buffers, in order, then the output length.
    pub fn lengths(&self) -> (Vec<usize>, usize) {
        let prod = |s: &[usize]| s.iter().product::<usize>();
        match self {
            Kernel::MatMul { batch, m, k, n, .. } => (vec![batch * m * k, batch * k * n], batch * m * n),
            Kernel::Binary { shape, a_strides, b_strides, .. } => {
                let extent = |st: &[usize]| shape.iter().zip(st).map(|(&d, &s)| if s == 0 || d == 0 { 0 } else { (d - 1) * s }).sum::<usize>() + 1;
                (vec![extent(a_strides), extent(b_strides)], prod(shape))
            }
            Kernel::SumTo { from, to } => (vec![prod(from)], prod(to)),
            Kernel::Affine { len, .. } | Kernel::Unary { len, .. } => (vec![*len], *len),
            Kernel::Fill { len, .. } => (vec![], *len),
            Kernel::UnaryBackward { len, .. } => (vec![*len, *len], *len),
            Kernel::Softmax { rows, cols } | Kernel::LayerNorm { rows, cols, .. } => (vec![rows * cols], rows * cols),
            Kernel::SoftmaxBackward { rows, cols } | Kernel::LayerNormBackward { rows, cols, .. } => (vec![rows * cols, rows * cols], rows * cols),
            Kernel::Gather { groups, table_rows, rows, cols } => (vec![groups * table_rows * cols, groups * rows], groups * rows * cols),
            Kernel::ScatterAdd { groups, table_rows, rows, cols } => (vec![groups * rows, groups * rows * cols], groups * table_rows * cols),
            Kernel::Permute { shape, .. } => (vec![prod(shape)], prod(shape)),
            Kernel::Narrow { outer, axis, len, inner, .. } => (vec![outer * axis * inner], outer * len * inner),
            Kernel::NarrowBackward { outer, axis, len, inner, .. } => (vec![outer * len * inner], outer * axis * inner),
            Kernel::CrossEntropy { groups, batch, classes } => (vec![groups * batch * classes, groups * batch], *groups),
            Kernel::CrossEntropyBackward { groups, batch, classes } => (vec![groups * batch * classes, groups * batch, *groups], groups * batch * classes),
        }
    }

    /// The same kernel for one of `members` ensemble members, where every buffer holds the
    /// members' values one after another (member r in the r-th of `members` equal slices).
    /// None where the kernel mixes members (a reduction over the member axis) or reads a
    /// buffer not split that way (a broadcast over members).
    pub fn for_one_member(&self, members: usize) -> Option<Kernel> {
        let m = members;
        let div = |x: usize| (m > 0 && x.is_multiple_of(m)).then(|| x / m);
        let one_first = |shape: &[usize]| -> Option<Vec<usize>> {
            let mut s = shape.to_vec();
            (s.first() == Some(&m)).then(|| s[0] = 1)?;
            Some(s)
        };
        let k = match self.clone() {
            Kernel::MatMul { batch, m: rows, k, n, trans_a, trans_b } => Kernel::MatMul { batch: div(batch)?, m: rows, k, n, trans_a, trans_b },
            Kernel::Binary { op, shape, a_strides, b_strides } => Kernel::Binary { op, shape: one_first(&shape)?, a_strides, b_strides },
            Kernel::SumTo { from, to } => Kernel::SumTo { from: one_first(&from)?, to: one_first(&to)? },
            Kernel::Affine { len, scale, shift } => Kernel::Affine { len: div(len)?, scale, shift },
            Kernel::Fill { len, value } => Kernel::Fill { len: div(len)?, value },
            Kernel::Unary { op, len } => Kernel::Unary { op, len: div(len)? },
            Kernel::UnaryBackward { op, len } => Kernel::UnaryBackward { op, len: div(len)? },
            Kernel::Softmax { rows, cols } => Kernel::Softmax { rows: div(rows)?, cols },
            Kernel::SoftmaxBackward { rows, cols } => Kernel::SoftmaxBackward { rows: div(rows)?, cols },
            Kernel::LayerNorm { rows, cols, eps } => Kernel::LayerNorm { rows: div(rows)?, cols, eps },
            Kernel::LayerNormBackward { rows, cols, eps } => Kernel::LayerNormBackward { rows: div(rows)?, cols, eps },
            Kernel::Gather { groups, table_rows, rows, cols } => Kernel::Gather { groups: div(groups)?, table_rows, rows, cols },
            Kernel::ScatterAdd { groups, table_rows, rows, cols } => Kernel::ScatterAdd { groups: div(groups)?, table_rows, rows, cols },
            Kernel::Permute { shape, perm } => {
                if perm.first() != Some(&0) {
                    return None;
                }
                Kernel::Permute { shape: one_first(&shape)?, perm }
            }
            Kernel::Narrow { outer, axis, start, len, inner } => Kernel::Narrow { outer: div(outer)?, axis, start, len, inner },
            Kernel::NarrowBackward { outer, axis, start, len, inner } => Kernel::NarrowBackward { outer: div(outer)?, axis, start, len, inner },
            Kernel::CrossEntropy { groups, batch, classes } => Kernel::CrossEntropy { groups: div(groups)?, batch, classes },
            Kernel::CrossEntropyBackward { groups, batch, classes } => Kernel::CrossEntropyBackward { groups: div(groups)?, batch, classes },
        };
        // Every buffer must be exactly `members` of the member kernel's (a broadcast input
        // over members, stride 0, is shorter and fails here).
        let ((ins, out), (ins1, out1)) = (self.lengths(), k.lengths());
        (out == out1 * m && ins.iter().zip(&ins1).all(|(&a, &b)| a == b * m)).then_some(k)
    }

    /// Floating-point operations one launch performs (multiply-adds count two); used for
    /// the throughput figures of `sparsevar bench`.
    pub fn flops(&self) -> u64 {
        let (ins, out) = self.lengths();
        let out = out as u64;
        match self {
            Kernel::MatMul { batch, m, k, n, .. } => 2 * (batch * m * k * n) as u64,
            Kernel::SumTo { .. } | Kernel::ScatterAdd { .. } => ins.iter().sum::<usize>() as u64,
            Kernel::Softmax { .. } | Kernel::LayerNorm { .. } => 5 * out,
            Kernel::SoftmaxBackward { .. } | Kernel::LayerNormBackward { .. } => 8 * out,
            Kernel::Unary { op: UnaryOp::Gelu, .. } | Kernel::UnaryBackward { op: UnaryOp::Gelu, .. } => 12 * out,
            Kernel::CrossEntropy { .. } => 4 * ins[0] as u64,
            Kernel::CrossEntropyBackward { .. } => 4 * ins[0] as u64,
            Kernel::Gather { .. } | Kernel::Permute { .. } | Kernel::Narrow { .. } | Kernel::NarrowBackward { .. } | Kernel::Fill { .. } => 0,
            _ => out,
        }
    }

    /// Short name for error messages and profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::MatMul { .. } => "matmul",
            Kernel::Binary { .. } => "binary",
            Kernel::SumTo { .. } => "sum_to",
            Kernel::Affine { .. } => "affine",
            Kernel::Fill { .. } => "fill",
            Kernel::Unary { .. } => "unary",
            Kernel::UnaryBackward { .. } => "unary_backward",
            Kernel::Softmax { .. } => "softmax",
            Kernel::SoftmaxBackward { .. } => "softmax_backward",
            Kernel::LayerNorm { .. } => "layer_norm",
            Kernel::LayerNormBackward { .. } => "layer_norm_backward",
            Kernel::Gather { .. } => "gather",
            Kernel::ScatterAdd { .. } => "scatter_add",
            Kernel::Permute { .. } => "permute",
            Kernel::Narrow { .. } => "narrow",
            Kernel::NarrowBackward { .. } => "narrow_backward",
            Kernel::CrossEntropy { .. } => "cross_entropy",
            Kernel::CrossEntropyBackward { .. } => "cross_entropy_backward",
        }
    }
}

impl Update {
    /// The same update for one member of `members`, where each buffer holds the members'
    /// values one after another (`groups` is the member axis). None where the update is not
    /// split that way.
    pub fn for_one_member(&self, members: usize) -> Option<Update> {
        let one = |groups: usize| (groups == members).then_some(1);
        let mut u = self.clone();
        match &mut u {
            Update::Zero { len } => *len = (members > 0 && len.is_multiple_of(members)).then(|| *len / members)?,
            Update::AccumulateSquares { groups, .. } | Update::ScaleToBall { groups, .. } | Update::Adam { groups, .. } | Update::Sgd { groups, .. } => {
                *groups = one(*groups)?
            }
        }
        Some(u)
    }

    /// Short name for error messages and profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Update::Zero { .. } => "zero",
            Update::AccumulateSquares { .. } => "accumulate_squares",
            Update::Adam { .. } => "adam",
            Update::Sgd { .. } => "sgd",
            Update::ScaleToBall { .. } => "scale_to_ball",
        }
    }

    /// Lengths of the buffers the update touches, in order.
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Update::Zero { len } => vec![*len],
            Update::AccumulateSquares { groups, len } | Update::ScaleToBall { groups, len, .. } => vec![groups * len, *groups],
            Update::Adam { groups, len, clip, .. } => {
                let mut v = vec![groups * len; 4];
                if clip.is_some() {
                    v.push(*groups);
                }
                v
            }
            Update::Sgd { groups, len, clip, .. } => {
                let mut v = vec![groups * len; 3];
                if clip.is_some() {
                    v.push(*groups);
                }
                v
            }
        }
    }
}

/// Row-major strides of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
