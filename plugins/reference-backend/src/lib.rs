//! reference-backend: a backend plugin for sparsevar — `reference`, every kernel and update
//! of `sparsevar_core::backend` written as the plainest loops over `f64`, single-threaded.
//!
//! It exists to be obviously right, not fast: each kernel below is the formula from the
//! kernel's documentation, indexed by hand, with every reduction summed left to right. That
//! makes it an oracle for the other backends (its tests compare it with the CPU backend on
//! every kernel) and a template for writing a backend plugin.
//!
//! Use it from a config with `backend: reference`.

#![warn(missing_docs)]

use sparsevar_plugin::{Backend, BackendError, BinaryOp, BufferId, Kernel, Registrar, UnaryOp, Update};

/// The registry name.
pub const NAME: &str = "reference";

/// Flat `f64` buffers and plain loops.
#[derive(Debug, Default)]
pub struct ReferenceBackend {
    buffers: Vec<Vec<f64>>,
}

impl ReferenceBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn device(message: String) -> BackendError {
        BackendError::Device { backend: NAME.to_string(), message }
    }

    /// The buffer `id`, which must hold exactly `need` values.
    fn checked(&self, id: BufferId, need: usize, what: &str) -> Result<&Vec<f64>, BackendError> {
        let b = self.buffers.get(id.0).ok_or_else(|| BackendError::UnknownBuffer(id, NAME.to_string()))?;
        if b.len() != need {
            return Err(BackendError::BufferSize { backend: NAME.into(), kernel: what.into(), buffer: id, have: b.len(), need });
        }
        Ok(b)
    }
}

/// Row-major multi-index of flat position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = flat % shape[d];
        flat /= shape[d];
    }
    idx
}

/// Flat position of `idx` under `strides`.
fn offset(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    sparsevar_plugin::strides_of(shape)
}

/// `v` as an index below `limit` (index data travels as floats holding whole numbers).
fn index(v: f64, limit: usize, what: &str) -> Result<usize, BackendError> {
    if v >= 0.0 && v < limit as f64 && v.fract() == 0.0 {
        Ok(v as usize)
    } else {
        Err(ReferenceBackend::device(format!("{what}: index {v} outside 0..{limit}")))
    }
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
const GELU_A: f64 = 0.044715;

fn unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Gelu => 0.5 * x * (1.0 + (GELU_C * (x + GELU_A * x * x * x)).tanh()),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// d op / dx times `dy`; `u` is the input (Relu, Gelu) or the output (Sigmoid).
fn unary_backward(op: UnaryOp, u: f64, dy: f64) -> f64 {
    match op {
        UnaryOp::Relu => {
            if u > 0.0 {
                dy
            } else {
                0.0
            }
        }
        UnaryOp::Gelu => {
            let t = (GELU_C * (u + GELU_A * u * u * u)).tanh();
            dy * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * u * u))
        }
        UnaryOp::Sigmoid => dy * u * (1.0 - u),
    }
}

/// Softmax of one row.
fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f64> = row.iter().map(|&v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Mean and 1/sqrt(biased variance + eps) of one row.
fn moments(row: &[f64], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Run one kernel: `x` are the inputs (lengths already checked), `y` the output.
fn run(kernel: &Kernel, x: &[&[f64]], y: &mut [f64]) -> Result<(), BackendError> {
    match kernel {
        Kernel::MatMul { batch, m, k, n, trans_a, trans_b } => {
            let (a, b) = (x[0], x[1]);
            for g in 0..*batch {
                for i in 0..*m {
                    for j in 0..*n {
                        let mut acc = 0.0;
                        for p in 0..*k {
                            let av = if *trans_a { a[(g * k + p) * m + i] } else { a[(g * m + i) * k + p] };
                            let bv = if *trans_b { b[(g * n + j) * k + p] } else { b[(g * k + p) * n + j] };
                            acc += av * bv;
                        }
                        y[(g * m + i) * n + j] = acc;
                    }
                }
            }
        }
        Kernel::Binary { op, shape, a_strides, b_strides } => {
            if a_strides.len() != shape.len() || b_strides.len() != shape.len() {
                return Err(ReferenceBackend::device(format!("binary: strides {a_strides:?} {b_strides:?} for shape {shape:?}")));
            }
            for (flat, out) in y.iter_mut().enumerate() {
                let idx = unravel(flat, shape);
                let (u, v) = (x[0][offset(&idx, a_strides)], x[1][offset(&idx, b_strides)]);
                *out = match op {
                    BinaryOp::Add => u + v,
                    BinaryOp::Sub => u - v,
                    BinaryOp::Mul => u * v,
                };
            }
        }
        Kernel::SumTo { from, to } => {
            if from.len() != to.len() || from.iter().zip(to).any(|(&f, &t)| t != f && t != 1) {
                return Err(ReferenceBackend::device(format!("sum_to: cannot reduce {from:?} to {to:?}")));
            }
            let to_strides = strides(to);
            y.fill(0.0);
            for (flat, &v) in x[0].iter().enumerate() {
                let mut idx = unravel(flat, from);
                for (i, &t) in idx.iter_mut().zip(to) {
                    if t == 1 {
                        *i = 0;
                    }
                }
                y[offset(&idx, &to_strides)] += v;
            }
        }
        Kernel::Affine { scale, shift, .. } => {
            for (o, &v) in y.iter_mut().zip(x[0]) {
                *o = scale * v + shift;
            }
        }
        Kernel::Fill { value, .. } => y.fill(*value),
        Kernel::Unary { op, .. } => {
            for (o, &v) in y.iter_mut().zip(x[0]) {
                *o = unary(*op, v);
            }
        }
        Kernel::UnaryBackward { op, .. } => {
            for ((o, &u), &dy) in y.iter_mut().zip(x[0]).zip(x[1]) {
                *o = unary_backward(*op, u, dy);
            }
        }
        Kernel::Softmax { rows, cols } => {
            for r in 0..*rows {
                let s = softmax(&x[0][r * cols..(r + 1) * cols]);
                y[r * cols..(r + 1) * cols].copy_from_slice(&s);
            }
        }
        Kernel::SoftmaxBackward { rows, cols } => {
            for r in 0..*rows {
                let (p, dy) = (&x[0][r * cols..(r + 1) * cols], &x[1][r * cols..(r + 1) * cols]);
                let dot: f64 = p.iter().zip(dy).map(|(a, b)| a * b).sum();
                for c in 0..*cols {
                    y[r * cols + c] = p[c] * (dy[c] - dot);
                }
            }
        }
        Kernel::LayerNorm { rows, cols, eps } => {
            for r in 0..*rows {
                let row = &x[0][r * cols..(r + 1) * cols];
                let (mean, rstd) = moments(row, *eps);
                for c in 0..*cols {
                    y[r * cols + c] = (row[c] - mean) * rstd;
                }
            }
        }
        Kernel::LayerNormBackward { rows, cols, eps } => {
            for r in 0..*rows {
                let (row, dy) = (&x[0][r * cols..(r + 1) * cols], &x[1][r * cols..(r + 1) * cols]);
                let (mean, rstd) = moments(row, *eps);
                let n = *cols as f64;
                let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
                let mean_dy = dy.iter().sum::<f64>() / n;
                let mean_dy_xhat = dy.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / n;
                for c in 0..*cols {
                    y[r * cols + c] = rstd * (dy[c] - mean_dy - xhat[c] * mean_dy_xhat);
                }
            }
        }
        Kernel::Gather { groups, table_rows, rows, cols } => {
            for g in 0..*groups {
                for i in 0..*rows {
                    let t = index(x[1][g * rows + i], *table_rows, "gather")?;
                    for c in 0..*cols {
                        y[(g * rows + i) * cols + c] = x[0][(g * table_rows + t) * cols + c];
                    }
                }
            }
        }
        Kernel::ScatterAdd { groups, table_rows, rows, cols } => {
            y.fill(0.0);
            for g in 0..*groups {
                for i in 0..*rows {
                    let t = index(x[0][g * rows + i], *table_rows, "scatter_add")?;
                    for c in 0..*cols {
                        y[(g * table_rows + t) * cols + c] += x[1][(g * rows + i) * cols + c];
                    }
                }
            }
        }
        Kernel::Permute { shape, perm } => {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if perm.len() != shape.len() || sorted.iter().enumerate().any(|(i, &p)| i != p) {
                return Err(ReferenceBackend::device(format!("permute: {perm:?} is not a permutation of the axes of {shape:?}")));
            }
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let in_strides = strides(shape);
            for (flat, o) in y.iter_mut().enumerate() {
                // Output axis i is input axis perm[i].
                let out_idx = unravel(flat, &out_shape);
                let src: usize = out_idx.iter().zip(perm).map(|(&j, &p)| j * in_strides[p]).sum();
                *o = x[0][src];
            }
        }
        Kernel::Narrow { outer, axis, start, len, inner } => {
            if start + len > *axis {
                return Err(ReferenceBackend::device(format!("narrow: {start}..{start}+{len} outside an axis of {axis}")));
            }
            for o in 0..*outer {
                for a in 0..*len {
                    for i in 0..*inner {
                        y[(o * len + a) * inner + i] = x[0][(o * axis + start + a) * inner + i];
                    }
                }
            }
        }
        Kernel::NarrowBackward { outer, axis, start, len, inner } => {
            if start + len > *axis {
                return Err(ReferenceBackend::device(format!("narrow_backward: {start}..{start}+{len} outside an axis of {axis}")));
            }
            y.fill(0.0);
            for o in 0..*outer {
                for a in 0..*len {
                    for i in 0..*inner {
                        y[(o * axis + start + a) * inner + i] = x[0][(o * len + a) * inner + i];
                    }
                }
            }
        }
        Kernel::CrossEntropy { groups, batch, classes } => {
            for g in 0..*groups {
                let mut total = 0.0;
                for b in 0..*batch {
                    let r = g * batch + b;
                    let row = &x[0][r * classes..(r + 1) * classes];
                    let label = index(x[1][r], *classes, "cross_entropy")?;
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    total += lse - row[label];
                }
                y[g] = total / *batch as f64;
            }
        }
        Kernel::CrossEntropyBackward { groups, batch, classes } => {
            for g in 0..*groups {
                for b in 0..*batch {
                    let r = g * batch + b;
                    let label = index(x[1][r], *classes, "cross_entropy_backward")?;
                    let p = softmax(&x[0][r * classes..(r + 1) * classes]);
                    for c in 0..*classes {
                        let onehot = if c == label { 1.0 } else { 0.0 };
                        y[r * classes + c] = (p[c] - onehot) * x[2][g] / *batch as f64;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The gradient scale of member `g` under norm clipping: min(1, clip / (‖g‖ + 1e-6)).
fn clip_scale(clip: Option<f64>, squares: Option<&Vec<f64>>, g: usize) -> f64 {
    match (clip, squares) {
        (Some(c), Some(sq)) => (c / (sq[g].sqrt() + 1e-6)).min(1.0),
        _ => 1.0,
    }
}

impl Backend for ReferenceBackend {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError> {
        self.buffers.push(vec![0.0; len]);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError> {
        self.checked(buf, data.len(), "write")?;
        self.buffers[buf.0].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        let b = self.buffers.get(buf.0).ok_or_else(|| BackendError::UnknownBuffer(buf, NAME.to_string()))?;
        out.clear();
        out.extend_from_slice(b);
        Ok(())
    }

    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        let name = kernel.name();
        if inputs.len() != kernel.arity() {
            return Err(Self::device(format!("{name} takes {} inputs, got {}", kernel.arity(), inputs.len())));
        }
        if inputs.contains(&output) {
            return Err(Self::device(format!("{name}: output {output:?} aliases an input")));
        }
        let (in_lens, out_len) = kernel.lengths();
        for (&id, &need) in inputs.iter().zip(&in_lens) {
            self.checked(id, need, name)?;
        }
        self.checked(output, out_len, name)?;
        // Take the output out (it aliases no input) so the inputs can be borrowed.
        let mut y = std::mem::take(&mut self.buffers[output.0]);
        let views: Vec<&[f64]> = inputs.iter().map(|id| &self.buffers[id.0][..]).collect();
        let result = run(kernel, &views, &mut y);
        self.buffers[output.0] = y;
        result
    }

    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        let lens = update.lengths();
        if buffers.len() != lens.len() {
            return Err(Self::device(format!("update takes {} buffers, got {}", lens.len(), buffers.len())));
        }
        for (i, (&id, &need)) in buffers.iter().zip(&lens).enumerate() {
            self.checked(id, need, "update")?;
            if buffers[..i].contains(&id) {
                return Err(Self::device(format!("update: buffer {id:?} passed twice")));
            }
        }
        // Work on copies, then write every buffer back.
        let mut b: Vec<Vec<f64>> = buffers.iter().map(|id| self.buffers[id.0].clone()).collect();
        match update {
            Update::Zero { .. } => b[0].fill(0.0),
            Update::AccumulateSquares { groups, len } => {
                for g in 0..*groups {
                    let mut acc = 0.0;
                    for i in 0..*len {
                        acc += b[0][g * len + i] * b[0][g * len + i];
                    }
                    b[1][g] += acc;
                }
            }
            Update::ScaleToBall { groups, len, radius } => {
                for g in 0..*groups {
                    let norm = b[1][g].sqrt();
                    if norm > *radius {
                        let f = radius / norm;
                        b[0][g * len..(g + 1) * len].iter_mut().for_each(|v| *v *= f);
                    }
                }
            }
            Update::Adam { groups, len, lr, beta1, beta2, eps, weight_decay, bias1, bias2, clip } => {
                let squares = clip.map(|_| b[4].clone());
                for g in 0..*groups {
                    let scale = clip_scale(*clip, squares.as_ref(), g);
                    for i in g * len..(g + 1) * len {
                        let grad = b[1][i] * scale;
                        b[2][i] = beta1 * b[2][i] + (1.0 - beta1) * grad;
                        b[3][i] = beta2 * b[3][i] + (1.0 - beta2) * grad * grad;
                        let step = b[2][i] / bias1 / ((b[3][i] / bias2).sqrt() + eps) + weight_decay * b[0][i];
                        b[0][i] -= lr * step;
                    }
                }
            }
            Update::Sgd { groups, len, lr, momentum, weight_decay, clip } => {
                let squares = clip.map(|_| b[3].clone());
                for g in 0..*groups {
                    let scale = clip_scale(*clip, squares.as_ref(), g);
                    for i in g * len..(g + 1) * len {
                        let grad = b[1][i] * scale + weight_decay * b[0][i];
                        b[2][i] = momentum * b[2][i] + grad;
                        b[0][i] -= lr * b[2][i];
                    }
                }
            }
        }
        for (id, v) in buffers.iter().zip(b) {
            self.buffers[id.0] = v;
        }
        Ok(())
    }
}

/// Register the `reference` backend.
pub fn register(r: &mut dyn Registrar) {
    r.backend(NAME, || Ok(Box::new(ReferenceBackend::new())));
}

sparsevar_plugin::export_plugin!(register);
