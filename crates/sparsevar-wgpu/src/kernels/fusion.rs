//! Launches that the backend runs as one dispatch when they come one right after another:
//! on a GPU a single model's step is bound by its number of dispatches, and the executor
//! launches the same chains every step.
//!
//! * a MatMul and the Add of a bias to its product (`matmul_*_bias`), and after them an
//!   activation of the sum or a residual added to it;
//! * two independent MatMuls of the same kernel, among at most three operands (a linear
//!   layer's backward: dx = dy·Wᵀ and dW = xᵀ·dy share dy), as one two-product dispatch;
//! * two identical Permutes of different buffers (a head split of the keys and the values);
//! * a CrossEntropy and its backward on the same logits;
//! * an Affine and the Softmax of its output (attention's scaled scores), and in backward a
//!   SoftmaxBackward and the Affine of its output;
//! * a LayerNorm, its product with a scale and the sum with a shift (`layer_norm_affine`);
//! * in backward, the shift's gradient (a SumTo of dy over rows), dy times the scale and dy
//!   times the normalised input (`norm_affine_backward`; the scale's gradient, the SumTo of
//!   that last product, stays a launch of its own, so its sum adds the same rounded terms).
//!
//! A fused dispatch writes every output of the launches it replaces (a later launch may read
//! any of them) with the same arithmetic. A product and its bias keep their bits on any
//! driver; a norm's scale then shift becomes a multiply and an add in one shader, which a
//! driver may contract into one FMA (lavapipe does not: the recording tests compare every
//! chain with its launches one by one, bit for bit). Either way the chains are fixed by the
//! graph, so a member's numbers do not depend on the ensemble it trains in.

use sparsevar_core::backend::{BinaryOp, BufferId, Kernel};

use super::{Plan, Step, plan_kernel};
use crate::pipelines::{Binding, Pipe, SLOTS};

/// Storage buffers the fused entry points bind at most (a product, its bias and a residual:
/// y, x0, x1, x2, s0, s1, g1); a device with fewer records every launch on its own.
pub(crate) const STORAGE_BUFFERS: u32 = 7;

/// One launch as the backend received it (checked).
pub(crate) struct Launch {
    pub kernel: Kernel,
    pub inputs: Vec<BufferId>,
    pub output: BufferId,
}

/// A fused chain's plan and the buffers of its binding slots.
pub(crate) type Fused = (Plan, [Option<BufferId>; SLOTS]);

/// What a chain of held launches is.
#[allow(clippy::large_enum_variant)] // returned and taken apart at once, never stored
pub(crate) enum Fit {
    /// A whole fused chain that nothing may extend: record it now.
    Whole(Plan, [Option<BufferId>; SLOTS]),
    /// Hold it: it may start a (longer) fused chain. If the next launch does not continue it,
    /// [`fused`] says what to record.
    Start,
    /// Nothing to fuse: record the launches one by one.
    No,
}

/// Which fused chain, if any, `chain` is or starts.
pub(crate) fn fit(chain: &[Launch]) -> Fit {
    match classify(chain) {
        (Some((plan, slots)), false) => Fit::Whole(plan, slots),
        (_, true) => Fit::Start,
        (None, false) => Fit::No,
    }
}

/// The fused dispatch of a held chain that the next launch did not continue, if the chain
/// is whole (else its launches are recorded one by one).
pub(crate) fn fused(chain: &[Launch]) -> Option<Fused> {
    classify(chain).0
}

/// Whether a chain may start with `kernel` (the kinds of [`classify`]'s one-launch arms).
pub(crate) fn may_start(kernel: &Kernel) -> bool {
    matches!(
        kernel,
        Kernel::MatMul { .. }
            | Kernel::LayerNorm { .. }
            | Kernel::SumTo { .. }
            | Kernel::Affine { .. }
            | Kernel::SoftmaxBackward { .. }
            | Kernel::Permute { .. }
            | Kernel::CrossEntropy { .. }
    )
}

/// A chain's fused dispatch if it is a whole chain, and whether a longer one may start with it.
fn classify(chain: &[Launch]) -> (Option<Fused>, bool) {
    let pipe = |l: &Launch| plan_kernel(&l.kernel).ok().and_then(|p| p.steps[0]).map(|s| s.pipe);
    match chain {
        [mm] if matches!(mm.kernel, Kernel::MatMul { .. }) => (None, matches!(pipe(mm), Some(Pipe::MatMulSmall | Pipe::MatMulTiled))),
        [mm, next] if matches!(mm.kernel, Kernel::MatMul { .. }) => match biased_product(mm, next, None) {
            Some(fused) => (Some(fused), true),
            None => (paired_products(mm, next), false),
        },
        [mm, add, after] if matches!(mm.kernel, Kernel::MatMul { .. }) => (biased_product(mm, add, Some(after)), false),
        [loss] if matches!(loss.kernel, Kernel::CrossEntropy { .. }) => (None, pipe(loss).is_some()),
        [loss, back] if matches!(loss.kernel, Kernel::CrossEntropy { .. }) => (loss_and_gradient(loss, back), false),
        [affine] if matches!(affine.kernel, Kernel::Affine { .. }) => (None, true),
        [affine, softmax] if matches!(affine.kernel, Kernel::Affine { .. }) => (scaled_softmax(affine, softmax), false),
        [back] if matches!(back.kernel, Kernel::SoftmaxBackward { .. }) => (None, pipe(back).is_some()),
        [back, affine] if matches!(back.kernel, Kernel::SoftmaxBackward { .. }) => (scaled_softmax_backward(back, affine), false),
        [one] if matches!(one.kernel, Kernel::Permute { .. }) => (None, pipe(one).is_some()),
        [one, two] if matches!(one.kernel, Kernel::Permute { .. }) => (paired_permutes(one, two), false),
        [ln] if matches!(ln.kernel, Kernel::LayerNorm { .. }) => (None, pipe(ln) == Some(Pipe::LayerNorm)),
        [ln, mul] if matches!(ln.kernel, Kernel::LayerNorm { .. }) => (None, scale(ln, mul).is_some()),
        [ln, mul, add] if matches!(ln.kernel, Kernel::LayerNorm { .. }) => (normalized_affine(ln, mul, add), false),
        [sum] if matches!(sum.kernel, Kernel::SumTo { .. }) => (None, column_sums(&sum.kernel).is_some()),
        [sum, mul] if matches!(sum.kernel, Kernel::SumTo { .. }) => (None, scaled_gradient(sum, mul).is_some()),
        [sum, mul, times_h] if matches!(sum.kernel, Kernel::SumTo { .. }) => (affine_backward(sum, mul, times_h), false),
        _ => (None, false),
    }
}

/// Slot index of a binding.
fn slot(b: Binding) -> usize {
    b.slot().expect("a buffer slot")
}

/// Binding slots holding the given buffers, the others empty.
fn bound(pairs: &[(Binding, BufferId)]) -> [Option<BufferId>; SLOTS] {
    let mut slots = [None; SLOTS];
    for &(b, id) in pairs {
        slots[slot(b)] = Some(id);
    }
    slots
}

/// True when no written buffer is another written one or is read in the same dispatch (a
/// buffer may not be bound read-only and read-write at once).
fn separate(written: &[BufferId], read: &[BufferId]) -> bool {
    written.iter().enumerate().all(|(i, w)| !written[..i].contains(w) && !read.contains(w))
}

/// [MatMul a·b = p, Add p + bias = s] as one `matmul_*_bias` dispatch, with `after` (if
/// given) a third launch on the sum: the Unary activation of s, or s plus a residual of its
/// shape (either operand order), written to s1.
fn biased_product(mm: &Launch, add: &Launch, after: Option<&Launch>) -> Option<Fused> {
    let Kernel::MatMul { batch, m, n, .. } = mm.kernel else { return None };
    let (p, bias, s) = (mm.output, add.inputs.get(1).copied()?, add.output);
    let total = batch * m * n;
    let mut reads = vec![mm.inputs[0], mm.inputs[1], bias];
    let mut written = vec![p, s];
    let mut plan = plan_kernel(&mm.kernel).ok()?;
    let mut slots = bound(&[(Binding::Y, p), (Binding::X0, mm.inputs[0]), (Binding::X1, mm.inputs[1]), (Binding::X2, bias), (Binding::S0, s)]);
    match after.map(|l| (&l.kernel, &l.inputs[..], l.output)) {
        None => {}
        Some((&Kernel::Unary { op, len }, &[x], out)) if x == s && len == total => {
            plan.words[15] = 1;
            plan.words[27] = super::unary_code(op) as u32;
            written.push(out);
        }
        Some((Kernel::Binary { op: BinaryOp::Add, shape, a_strides, b_strides }, &[a, b], out)) => {
            let other = if a == s { b } else { a };
            if (a == s) == (b == s) || shape.iter().product::<usize>() != total || !dense(shape, a_strides) || !dense(shape, b_strides) {
                return None;
            }
            plan.words[15] = 2;
            slots[slot(Binding::G1)] = Some(other);
            reads.push(other);
            written.push(out);
        }
        Some(_) => return None,
    }
    if let Some(&out) = written.get(2) {
        slots[slot(Binding::S1)] = Some(out);
    }
    if add.inputs[0] != p || !separate(&written, &reads) {
        return None;
    }
    let (_, stride) = column_operand(&add.kernel, BinaryOp::Add, total, n, Some(m))?;
    let step = plan.steps[0].as_mut()?;
    step.pipe = match step.pipe {
        Pipe::MatMulSmall => Pipe::MatMulSmallBias,
        Pipe::MatMulTiled => Pipe::MatMulTiledBias,
        _ => return None,
    };
    plan.set(11, &[stride]).ok()?;
    Some((plan, slots))
}

/// [MatMul a·b = y, MatMul c·d = z], z not depending on y, as one two-product dispatch of
/// their common kernel: a and b in x0 and x1, and whichever of c and d is neither in x2.
fn paired_products(first: &Launch, second: &Launch) -> Option<Fused> {
    if !matches!(second.kernel, Kernel::MatMul { .. }) {
        return None;
    }
    let (one, two) = (plan_kernel(&first.kernel).ok()?, plan_kernel(&second.kernel).ok()?);
    let (s1, s2) = (one.steps[0]?, two.steps[0]?);
    if s1.pipe != s2.pipe || !matches!(s1.pipe, Pipe::MatMulSmall | Pipe::MatMulTiled) {
        return None;
    }
    let mut reads = vec![first.inputs[0], first.inputs[1]];
    let mut roles = [0; 2];
    for (role, &id) in roles.iter_mut().zip(&second.inputs) {
        *role = match reads.iter().position(|&r| r == id) {
            Some(at) => at,
            None if reads.len() < 3 => {
                reads.push(id);
                2
            }
            None => return None,
        };
    }
    if !separate(&[first.output, second.output], &reads) {
        return None;
    }
    let mut plan = one;
    plan.words[13] = roles[0] as u32;
    plan.words[14] = roles[1] as u32;
    plan.words[16..27].copy_from_slice(&two.words[0..11]);
    plan.steps[0] = Some(Step { pipe: s1.pipe, workgroups: s1.workgroups + s2.workgroups });
    let mut slots = bound(&[(Binding::Y, first.output), (Binding::X0, reads[0]), (Binding::X1, reads[1]), (Binding::S0, second.output)]);
    slots[slot(Binding::X2)] = reads.get(2).copied();
    Some((plan, slots))
}

/// [Permute x = y, the same Permute z = w] on other buffers, w not depending on y, as one
/// dispatch: the first permute's workgroups, then the second's (x1 into s0).
fn paired_permutes(first: &Launch, second: &Launch) -> Option<Fused> {
    let (x, z) = (first.inputs[0], *second.inputs.first()?);
    if second.kernel != first.kernel || !separate(&[first.output, second.output], &[x, z]) {
        return None;
    }
    let mut plan = plan_kernel(&first.kernel).ok()?;
    let step = plan.steps[0].as_mut()?;
    step.workgroups *= 2;
    Some((plan, bound(&[(Binding::Y, first.output), (Binding::X0, x), (Binding::X1, z), (Binding::S0, second.output)])))
}

/// [CrossEntropy (logits, labels) = loss, CrossEntropyBackward (logits, labels, dloss) =
/// dlogits] of the same logits as one dispatch: the loss's workgroups, then the gradient's
/// rows into s0 (the gradient does not read the loss: dloss is the host's).
fn loss_and_gradient(loss: &Launch, back: &Launch) -> Option<Fused> {
    let (Kernel::CrossEntropy { groups, batch, classes }, Kernel::CrossEntropyBackward { groups: g2, batch: b2, classes: c2 }) = (&loss.kernel, &back.kernel)
    else {
        return None;
    };
    let (logits, labels, dloss) = (loss.inputs[0], loss.inputs[1], *back.inputs.get(2)?);
    if (groups, batch, classes) != (g2, b2, c2) || back.inputs[..2] != loss.inputs[..] || !separate(&[loss.output, back.output], &[logits, labels, dloss]) {
        return None;
    }
    let mut plan = plan_kernel(&loss.kernel).ok()?;
    let gradient = plan_kernel(&back.kernel).ok()?.steps[0]?;
    plan.steps[0].as_mut()?.workgroups += gradient.workgroups;
    Some((plan, bound(&[(Binding::Y, loss.output), (Binding::X0, logits), (Binding::X1, labels), (Binding::X2, dloss), (Binding::S0, back.output)])))
}

/// [Affine x = s, Softmax s = p] (attention's scaled scores) as one softmax dispatch that
/// writes s (the Affine kernel's arithmetic) and then p from it.
fn scaled_softmax(affine: &Launch, softmax: &Launch) -> Option<Fused> {
    let (Kernel::Affine { len, scale, shift }, Kernel::Softmax { rows, cols }) = (&affine.kernel, &softmax.kernel) else { return None };
    let (x, s, p) = (affine.inputs[0], affine.output, softmax.output);
    if softmax.inputs.first() != Some(&s) || rows * cols != *len || !separate(&[s, p], &[x]) {
        return None;
    }
    let plan = scaled(plan_kernel(&softmax.kernel).ok()?, *scale, *shift)?;
    Some((plan, bound(&[(Binding::Y, s), (Binding::X0, x), (Binding::S0, p)])))
}

/// A softmax (or its backward) plan that also applies an Affine's `scale · v + shift`: before
/// the softmax, to its input; after the backward, to its output (words 2 to 4 of rows.wgsl).
fn scaled(mut plan: Plan, scale: f64, shift: f64) -> Option<Plan> {
    plan.steps[0]?;
    plan.words[2] = 1;
    plan.float(3, scale);
    plan.float(4, shift);
    Some(plan)
}

/// [SoftmaxBackward (p, dp) = ds, Affine ds = dx] as one softmax backward dispatch writing both.
fn scaled_softmax_backward(back: &Launch, affine: &Launch) -> Option<Fused> {
    let (Kernel::SoftmaxBackward { rows, cols }, Kernel::Affine { len, scale, shift }) = (&back.kernel, &affine.kernel) else { return None };
    let (p, dp, ds, dx) = (back.inputs[0], back.inputs[1], back.output, affine.output);
    if affine.inputs.first() != Some(&ds) || rows * cols != *len || !separate(&[ds, dx], &[p, dp]) {
        return None;
    }
    let plan = scaled(plan_kernel(&back.kernel).ok()?, *scale, *shift)?;
    Some((plan, bound(&[(Binding::Y, ds), (Binding::X0, p), (Binding::X1, dp), (Binding::S0, dx)])))
}

/// The layout of a LayerNorm's scale: (rows per scale, stride between scales).
fn scale(ln: &Launch, mul: &Launch) -> Option<(usize, usize)> {
    let Kernel::LayerNorm { rows, cols, .. } = ln.kernel else { return None };
    if mul.inputs.first() != Some(&ln.output) || mul.inputs.get(1) == Some(&ln.output) {
        return None;
    }
    column_operand(&mul.kernel, BinaryOp::Mul, rows * cols, cols, None)
}

/// [LayerNorm x = h, Mul h · scale = t, Add t + shift = o] as one `layer_norm_affine`
/// dispatch: the normalisation of a pre-norm or post-norm block with its affine part.
fn normalized_affine(ln: &Launch, mul: &Launch, add: &Launch) -> Option<Fused> {
    let Kernel::LayerNorm { rows, cols, .. } = ln.kernel else { return None };
    let (scale_rows, scale_stride) = scale(ln, mul)?;
    let (x, h, gain, t, shift, o) = (ln.inputs[0], ln.output, mul.inputs[1], mul.output, add.inputs.get(1).copied()?, add.output);
    if add.inputs[0] != t || !separate(&[h, t, o], &[x, gain, shift]) {
        return None;
    }
    let (shift_rows, shift_stride) = column_operand(&add.kernel, BinaryOp::Add, rows * cols, cols, None)?;
    let mut plan = plan_kernel(&ln.kernel).ok()?;
    plan.steps[0].as_mut()?.pipe = Pipe::LayerNormAffine;
    plan.set(3, &[scale_rows, scale_stride, shift_rows, shift_stride]).ok()?;
    Some((plan, bound(&[(Binding::Y, h), (Binding::X0, x), (Binding::X1, gain), (Binding::X2, shift), (Binding::S0, t), (Binding::S1, o)])))
}

/// (groups, rows, cols) where `kernel` is a SumTo from a contiguous [groups, rows, cols] to
/// [groups, 1, cols] with rows > 1 (a bias or shift gradient, per member).
fn column_sums(kernel: &Kernel) -> Option<(usize, usize, usize)> {
    let Kernel::SumTo { from, to } = kernel else { return None };
    if from.len() != to.len() {
        return None;
    }
    // Size-1 axes dropped, neighbours of the same kind merged, as the SumTo plan does.
    let mut dims: Vec<(usize, bool)> = Vec::new();
    for (&f, &t) in from.iter().zip(to) {
        let reduced = match (f, t) {
            (1, _) => continue,
            (f, t) if t == f => false,
            (_, 1) => true,
            _ => return None,
        };
        match dims.last_mut() {
            Some((size, r)) if *r == reduced => *size *= f,
            _ => dims.push((f, reduced)),
        }
    }
    match dims[..] {
        [(rows, true), (cols, false)] => Some((1, rows, cols)),
        [(groups, false), (rows, true), (cols, false)] => Some((groups, rows, cols)),
        _ => None,
    }
}

/// The stride between scales of [SumTo dy, Mul dy · scale]: per group (cols) or shared (0).
fn scaled_gradient(sum: &Launch, mul: &Launch) -> Option<usize> {
    let (groups, rows, cols) = column_sums(&sum.kernel)?;
    let dy = sum.inputs[0];
    if mul.inputs.first() != Some(&dy) || mul.inputs.get(1) == Some(&dy) {
        return None;
    }
    column_operand(&mul.kernel, BinaryOp::Mul, groups * rows * cols, cols, Some(rows)).map(|(_, stride)| stride)
}

/// [SumTo dy = dshift, Mul dy · scale = dh, Mul dy · h = p] as one `norm_affine_backward`
/// dispatch: an invocation per column sums dy down its rows and writes both products there.
fn affine_backward(sum: &Launch, mul: &Launch, times_h: &Launch) -> Option<Fused> {
    let (groups, rows, cols) = column_sums(&sum.kernel)?;
    let stride = scaled_gradient(sum, mul)?;
    let (dy, dshift, scale, dh, h, p) = (sum.inputs[0], sum.output, mul.inputs[1], mul.output, times_h.inputs.get(1).copied()?, times_h.output);
    let Kernel::Binary { op: BinaryOp::Mul, shape, a_strides, b_strides } = &times_h.kernel else { return None };
    let total = groups * rows * cols;
    if times_h.inputs[0] != dy || shape.iter().product::<usize>() != total || !dense(shape, a_strides) || !dense(shape, b_strides) {
        return None;
    }
    if !separate(&[dshift, dh, p], &[dy, scale, h]) {
        return None;
    }
    let mut plan = Plan::new();
    plan.set(0, &[groups * cols, rows, cols, stride]).ok()?;
    super::word(total).ok()?;
    let plan = plan.one(Pipe::NormAffineBackward, groups * cols, 256);
    Some((plan, bound(&[(Binding::Y, dshift), (Binding::X0, dy), (Binding::X1, scale), (Binding::X2, h), (Binding::S0, dh), (Binding::S1, p)])))
}

/// Whether `strides` walk `shape` in row-major order (size-1 axes aside).
fn dense(shape: &[usize], strides: &[usize]) -> bool {
    strides.len() == shape.len() && shape.iter().zip(strides).zip(super::row_major(shape)).all(|((&size, &stride), want)| size == 1 || stride == want)
}

/// Where `kernel` is the Binary `op` of a contiguous [groups, m, n] operand (`total`
/// elements) and a second operand read at `g·stride + j` for group g and column j — a bias
/// or scale per column, one per group (stride n) or shared (stride 0) — that (m, stride);
/// with `m` given, only that m. `None` for any other Binary.
fn column_operand(kernel: &Kernel, op: BinaryOp, total: usize, n: usize, m: Option<usize>) -> Option<(usize, usize)> {
    let Kernel::Binary { op: kop, shape, a_strides, b_strides } = kernel else { return None };
    if *kop != op || total == 0 || n == 0 || !total.is_multiple_of(n) || shape.iter().product::<usize>() != total {
        return None;
    }
    if a_strides.len() != shape.len() || b_strides.len() != shape.len() {
        return None;
    }
    // Each side's offset of element e is a sum over the digits of e in a mixed radix (the
    // shape's for the Binary's strides; columns, rows, groups for the fused kernel's) times a
    // coefficient. Two such sums agree for every e when they agree at each digit's unit in a
    // radix that refines both, so checking the offsets at those units suffices.
    let mut shape_units = vec![1];
    let mut suffix = 1;
    for &size in shape.iter().rev() {
        suffix *= size;
        shape_units.push(suffix);
    }
    let offset = |strides: &[usize], mut e: usize| -> usize {
        let mut at = 0;
        for (&size, &stride) in shape.iter().zip(strides).rev() {
            at += (e % size) * stride;
            e /= size;
        }
        at
    };
    let units_with = |m: usize| -> Option<Vec<usize>> {
        let mut units: Vec<usize> = shape_units.iter().copied().chain([n, m * n, total]).collect();
        units.sort_unstable();
        units.dedup();
        if units.windows(2).any(|w| w[1] % w[0] != 0) {
            return None;
        }
        units.pop();
        Some(units)
    };
    let agrees = |m: usize, stride: usize| -> bool {
        units_with(m).is_some_and(|units| units.iter().all(|&u| offset(a_strides, u) == u && offset(b_strides, u) == u / (m * n) * stride + u % n))
    };
    // The rows a group may span: the whole operand, or a unit of its shape.
    let mut candidates: Vec<usize> =
        m.map_or_else(|| shape_units.iter().filter(|&&u| u.is_multiple_of(n) && total.is_multiple_of(u)).map(|&u| u / n).collect(), |m| vec![m]);
    candidates.retain(|&m| m > 0 && total.is_multiple_of(m * n));
    candidates.sort_unstable();
    let shared = candidates.last().copied().filter(|&m| agrees(m, 0)).map(|m| (m, 0));
    shared.or_else(|| candidates.into_iter().find(|&m| agrees(m, n)).map(|m| (m, n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsevar_core::backend::UnaryOp;

    fn launch(kernel: Kernel, inputs: &[usize], output: usize) -> Launch {
        Launch { kernel, inputs: inputs.iter().map(|&i| BufferId(i)).collect(), output: BufferId(output) }
    }

    fn binary(op: BinaryOp, shape: &[usize], a: &[usize], b: &[usize]) -> Kernel {
        Kernel::Binary { op, shape: shape.to_vec(), a_strides: a.to_vec(), b_strides: b.to_vec() }
    }

    /// The fused pipe and word 11 (the bias stride) of [MatMul, Add], if fused.
    fn product_and_bias(batch: usize, m: usize, n: usize, add: Kernel) -> Option<(Pipe, u32)> {
        let mm = launch(Kernel::MatMul { batch, m, k: 64, n, trans_a: false, trans_b: true }, &[0, 1], 2);
        let chain = [mm, launch(add, &[2, 3], 4)];
        // Whole, but held: an activation or a residual may follow.
        assert!(!matches!(fit(&chain), Fit::Whole(..)));
        fused(&chain).map(|(plan, _)| (plan.steps[0].unwrap().pipe, plan.words[11]))
    }

    #[test]
    fn a_bias_add_fuses_with_the_product_before_it() {
        use BinaryOp::*;
        // A bias per member of an ensemble, shared by all, with size-1 axes anywhere.
        assert_eq!(product_and_bias(32, 32, 64, binary(Add, &[32, 32, 64], &[2048, 64, 1], &[64, 0, 1])), Some((Pipe::MatMulTiledBias, 64)));
        assert_eq!(product_and_bias(3, 5, 9, binary(Add, &[3, 1, 5, 9], &[45, 45, 9, 1], &[0, 7, 0, 1])), Some((Pipe::MatMulSmallBias, 0)));
        // The groups' rows and columns as one flat axis: m = 1, a bias per group.
        assert_eq!(product_and_bias(4, 1, 20, binary(Add, &[80], &[1], &[1])), Some((Pipe::MatMulSmallBias, 20)));
        // Not a bias: per row, a full matrix, a transposed product, Sub, another length.
        assert_eq!(product_and_bias(1, 32, 64, binary(Add, &[32, 64], &[64, 1], &[1, 0])), None);
        assert_eq!(product_and_bias(2, 8, 8, binary(Add, &[2, 8, 8], &[64, 8, 1], &[64, 8, 1])), None);
        assert_eq!(product_and_bias(1, 4, 6, binary(Add, &[6, 4], &[1, 6], &[0, 1])), None);
        assert_eq!(product_and_bias(1, 4, 6, binary(Sub, &[4, 6], &[6, 1], &[0, 1])), None);
        assert_eq!(product_and_bias(1, 4, 6, binary(Add, &[4, 5], &[5, 1], &[0, 1])), None);
        // Axes that cut across a group's rows: no common radix.
        assert_eq!(product_and_bias(2, 3, 4, binary(Add, &[4, 6], &[6, 1], &[0, 1])), None);
    }

    #[test]
    fn a_shift_gradient_fuses_with_the_two_products_after_it() {
        use BinaryOp::*;
        let sum = |from: &[usize], to: &[usize]| launch(Kernel::SumTo { from: from.to_vec(), to: to.to_vec() }, &[0], 1);
        let chain = |sum: Launch, scale: Kernel, times_h: Kernel, h: usize| -> Option<Vec<u32>> {
            match fit(&[sum, launch(scale, &[0, 2], 3), launch(times_h, &[0, h], 5)]) {
                Fit::Whole(plan, _) => Some(plan.words[0..4].to_vec()),
                _ => None,
            }
        };
        let dense3 = |op| binary(op, &[3, 32, 64], &[2048, 64, 1], &[2048, 64, 1]);
        let per_member = binary(Mul, &[3, 32, 64], &[2048, 64, 1], &[64, 0, 1]);
        // An ensemble of 3: 192 columns summed over 32 rows each, a scale per member.
        assert_eq!(chain(sum(&[3, 32, 64], &[3, 1, 64]), per_member.clone(), dense3(Mul), 4), Some(vec![192, 32, 64, 64]));
        // One model, size-1 axes, a shared scale.
        let one = |op| binary(op, &[1, 129, 64], &[8256, 64, 1], &[8256, 64, 1]);
        assert_eq!(chain(sum(&[1, 129, 64], &[1, 1, 64]), binary(Mul, &[1, 129, 64], &[8256, 64, 1], &[0, 0, 1]), one(Mul), 4), Some(vec![64, 129, 64, 0]));
        // Not this chain: a sum over columns, Add for the product, h broadcast, the second
        // product not of dy.
        assert!(matches!(fit(&[sum(&[3, 32, 64], &[3, 32, 1])]), Fit::No));
        assert_eq!(chain(sum(&[3, 32, 64], &[3, 1, 64]), per_member.clone(), dense3(Add), 4), None);
        assert_eq!(chain(sum(&[3, 32, 64], &[3, 1, 64]), per_member.clone(), binary(Mul, &[3, 32, 64], &[2048, 64, 1], &[64, 0, 1]), 4), None);
        let not_dy = fit(&[sum(&[3, 32, 64], &[3, 1, 64]), launch(per_member.clone(), &[0, 2], 3), launch(dense3(Mul), &[6, 4], 5)]);
        assert!(matches!(not_dy, Fit::No));
        // Read-only operands may repeat (h = dy); written ones may not be read.
        assert!(chain(sum(&[3, 32, 64], &[3, 1, 64]), per_member.clone(), dense3(Mul), 0).is_some());
        assert!(matches!(fit(&[sum(&[3, 32, 64], &[3, 1, 64]), launch(per_member, &[0, 2], 3), launch(dense3(Mul), &[0, 1], 5)]), Fit::No));
        assert!(matches!(fit(&[sum(&[3, 32, 64], &[3, 1, 64]), launch(dense3(Mul), &[0, 2], 3)]), Fit::No));
    }

    #[test]
    fn an_activation_or_a_residual_completes_a_biased_product() {
        use BinaryOp::*;
        let mm = || launch(Kernel::MatMul { batch: 1, m: 32, k: 64, n: 256, trans_a: false, trans_b: false }, &[0, 1], 2);
        let add = || launch(binary(Add, &[1, 32, 256], &[8192, 256, 1], &[256, 0, 1]), &[2, 3], 4);
        let dense = |op| binary(op, &[1, 32, 256], &[8192, 256, 1], &[8192, 256, 1]);
        let words = |third: Launch| match fit(&[mm(), add(), third]) {
            Fit::Whole(plan, slots) => Some((plan.words[15], plan.words[27], slots[slot(Binding::S1)], slots[slot(Binding::G1)])),
            _ => None,
        };
        let gelu = launch(Kernel::Unary { op: UnaryOp::Gelu, len: 8192 }, &[4], 5);
        assert_eq!(words(gelu), Some((1, 1, Some(BufferId(5)), None)));
        assert_eq!(words(launch(dense(Add), &[6, 4], 5)), Some((2, 0, Some(BufferId(5)), Some(BufferId(6)))));
        assert_eq!(words(launch(dense(Add), &[4, 6], 5)), Some((2, 0, Some(BufferId(5)), Some(BufferId(6)))));
        // Not the sum's activation or residual: the product's, the sum twice, a Mul, a write
        // over an operand. The pair is then recorded fused on its own.
        assert_eq!(words(launch(Kernel::Unary { op: UnaryOp::Gelu, len: 8192 }, &[2], 5)), None);
        assert_eq!(words(launch(dense(Add), &[4, 4], 5)), None);
        assert_eq!(words(launch(dense(Mul), &[4, 6], 5)), None);
        assert_eq!(words(launch(dense(Add), &[4, 6], 0)), None);
        assert!(fused(&[mm(), add()]).is_some());
    }

    #[test]
    fn two_products_pair_when_independent_over_three_operands() {
        let mm = |m, k, n, ta| Kernel::MatMul { batch: 1, m, k, n, trans_a: ta, trans_b: false };
        // The roles of the second product's a and b, whether its words are in 16.., what x2
        // holds, and whether the first product keeps its own workgroups in front.
        let first = plan_kernel(&mm(32, 64, 64, false)).unwrap();
        let second = plan_kernel(&mm(64, 32, 64, true)).unwrap();
        let pair = |next: Launch| match fit(&[launch(mm(32, 64, 64, false), &[0, 1], 2), next]) {
            Fit::Whole(plan, slots) => {
                Some((plan.words[13..15].to_vec(), plan.words[16..27] == second.words[0..11], slots[slot(Binding::X2)], plan.words[12] == first.words[12]))
            }
            _ => None,
        };
        // dW = xᵀ·dy after dx = dy·W: dy (x0) is the second product's b, x goes to x2.
        assert_eq!(pair(launch(mm(64, 32, 64, true), &[3, 0], 4)), Some((vec![2, 0], true, Some(BufferId(3)), true)));
        // Both operands already bound: nothing in x2.
        assert_eq!(pair(launch(mm(64, 32, 64, true), &[1, 0], 4)).map(|p| (p.0, p.2)), Some((vec![1, 0], None)));
        // Reading the first's output, four operands, writing an operand, another kernel: no.
        assert_eq!(pair(launch(mm(64, 32, 64, true), &[2, 0], 4)), None);
        assert_eq!(pair(launch(mm(64, 32, 64, true), &[3, 5], 4)), None);
        assert_eq!(pair(launch(mm(64, 32, 64, true), &[3, 0], 1)), None);
        // Another kernel (one row takes the per-element one; which the first takes depends
        // on the routing rule): paired only where both take the same.
        let row = mm(1, 32, 64, true);
        let same = plan_kernel(&row).unwrap().steps[0].unwrap().pipe == first.steps[0].unwrap().pipe;
        assert_eq!(pair(launch(row, &[3, 0], 4)).is_some(), same);
    }

    #[test]
    fn a_layer_norm_fuses_with_its_scale_and_shift() {
        use BinaryOp::*;
        let ln = || launch(Kernel::LayerNorm { rows: 96, cols: 64, eps: 1e-5 }, &[0], 1);
        let per_member = |op| binary(op, &[3, 32, 64], &[2048, 64, 1], &[64, 0, 1]);
        let words = |chain: &[Launch]| match fit(chain) {
            Fit::Whole(plan, slots) => Some((plan.steps[0].unwrap().pipe, plan.words[3..7].to_vec(), slots[slot(Binding::S1)])),
            _ => None,
        };
        // Scale per member (32 rows each), shift shared.
        let shared = binary(Add, &[96, 64], &[64, 1], &[0, 1]);
        assert!(matches!(fit(&[ln(), launch(per_member(Mul), &[1, 2], 3)]), Fit::Start));
        assert_eq!(
            words(&[ln(), launch(per_member(Mul), &[1, 2], 3), launch(shared.clone(), &[3, 4], 5)]),
            Some((Pipe::LayerNormAffine, vec![32, 64, 96, 0], Some(BufferId(5))))
        );
        // Scale before the norm's output, a shift that is the norm's output, or Add then Mul: no.
        assert!(matches!(fit(&[ln(), launch(per_member(Mul), &[2, 1], 3)]), Fit::No));
        assert_eq!(words(&[ln(), launch(per_member(Mul), &[1, 2], 3), launch(shared.clone(), &[3, 1], 5)]), None);
        assert!(matches!(fit(&[ln(), launch(per_member(Add), &[1, 2], 3)]), Fit::No));
        // The shift written over the input: read and written in one dispatch.
        assert_eq!(words(&[ln(), launch(per_member(Mul), &[1, 2], 3), launch(shared, &[3, 4], 0)]), None);
    }
}
