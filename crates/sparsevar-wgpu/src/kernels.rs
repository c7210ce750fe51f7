//! From a [`Kernel`] or [`Update`] to what the GPU runs: the pipelines to dispatch (one, or
//! two for ScatterAdd), how many workgroups each needs, and the 32 parameter words of the
//! launch's uniform buffer. Shapes are checked here, with the CPU backend's messages, and
//! merged (size-1 axes dropped, contiguous axes fused) so the shaders loop over few axes.
//!
//! Word layouts are documented next to each entry point in the WGSL files beside this one.

use sparsevar_core::backend::{BinaryOp, Kernel, UnaryOp, Update};

use crate::pipelines::Pipe;

pub(crate) mod fusion;

/// Words in a launch's uniform buffer (`array<vec4<u32>, 8>` in WGSL).
pub(crate) const WORDS: usize = 32;
/// Word 31 always holds a quiet NaN (WGSL has no NaN literal).
const NAN_WORD: usize = 31;
/// Highest rank Binary accepts (the contract's limit); Permute and SumTo share it.
const MAX_RANK: usize = 6;
/// Table rows up to which ScatterAdd can sort, in workgroup memory (`SHARED_ROWS` in
/// scatter.wgsl). Larger tables always scan: a sort in global memory, one invocation per
/// group, gave wrong sums on lavapipe once its scratch reached 128 KiB.
const SCATTER_SHARED_ROWS: usize = 2048;
/// Table rows × rows (over all groups) up to which ScatterAdd scans instead of sorting: a
/// sort runs one workgroup per group, so a scatter with few groups (a table attention's
/// scores at R = 1: 8,224 rows into one 513-row table at T = 256) sorts on one GPU core while
/// the rest idle. Scanning reads a group's indices once per table row, spread over every core.
const SCATTER_SCAN_WORK: usize = 1 << 26;
/// Rows per group from which a scan runs a workgroup per table row (scatter_scan_shared,
/// 256 indices tested at once) rather than an invocation per output walking every row: the
/// walk took 227 µs for 2,080 rows into [129, 4] on an H200. Shorter groups keep the walk,
/// which needs one invocation per output instead of 256 per table row.
const SCAN_SHARED_ROWS: usize = 128;
/// Output tile edge of the tiled matmul; smaller products take the per-element kernel.
const TILE: usize = 64;
/// Products with m, n and k all at least this also take the tiled kernel, half its tile
/// empty at worst: an ensemble's per-member linears (m = the batch, 32) re-read both operands
/// from memory k times in the per-element kernel (H200, R = 256: [32 × 64] · [64 × 64] per
/// member at about 0.3 TFLOP/s).
const MID: usize = 32;

/// One dispatch: a pipeline and its number of workgroups (folded into 2D at encode time).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub pipe: Pipe,
    pub workgroups: u64,
}

/// Everything one launch needs besides its buffers.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub words: [u32; WORDS],
    /// Bit i set: word i may change from one call of the same launch site to the next
    /// (learning rate, bias corrections), so it is left out of the site key.
    pub dynamic: u32,
    pub steps: [Option<Step>; 2],
    /// u32 scratch words the launch site owns (ScatterAdd's sorted rows).
    pub scratch_words: usize,
}

impl Plan {
    fn new() -> Self {
        let mut words = [0; WORDS];
        words[NAN_WORD] = f32::NAN.to_bits();
        Plan { words, dynamic: 0, steps: [None, None], scratch_words: 0 }
    }

    fn set(&mut self, at: usize, values: &[usize]) -> Result<(), String> {
        for (i, &v) in values.iter().enumerate() {
            self.words[at + i] = word(v)?;
        }
        Ok(())
    }

    fn float(&mut self, at: usize, v: f64) {
        self.words[at] = (v as f32).to_bits();
    }

    /// A single pipeline over `items` independent items, `per` to a workgroup.
    fn one(mut self, pipe: Pipe, items: usize, per: usize) -> Self {
        if items > 0 {
            self.steps[0] = Some(Step { pipe, workgroups: items.div_ceil(per) as u64 });
        }
        self
    }
}

fn word(v: usize) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("size {v} does not fit the GPU's 32-bit indices"))
}

/// Plan one kernel launch; lengths are already checked by the caller.
pub(crate) fn plan_kernel(kernel: &Kernel) -> Result<Plan, String> {
    use Kernel as K;
    let mut p = Plan::new();
    let (ins, out) = kernel.lengths();
    // Every index a shader forms stays below the longest buffer, so checking those suffices.
    for &len in ins.iter().chain([&out]) {
        word(len)?;
    }
    Ok(match kernel {
        K::MatMul { batch, m, k, n, trans_a, trans_b } => {
            let (batch, m, k, n) = (*batch, *m, *k, *n);
            // Strides of op(a) along (row, depth) and of op(b) along (depth, column).
            let (a_row, a_depth) = if *trans_a { (1, m) } else { (k, 1) };
            let (b_depth, b_col) = if *trans_b { (1, k) } else { (n, 1) };
            let (tm, tn) = (m.div_ceil(TILE), n.div_ceil(TILE));
            p.set(0, &[batch, m, k, n, a_row, a_depth, b_depth, b_col, tm, tn, out])?;
            if out == 0 {
                p
            } else if (m >= TILE && n >= TILE) || (m >= MID && n >= MID && k >= MID) {
                p.steps[0] = Some(Step { pipe: Pipe::MatMulTiled, workgroups: (batch * tm * tn) as u64 });
                p.set(12, &[batch * tm * tn])?;
                p
            } else {
                p.set(12, &[out.div_ceil(64)])?;
                p.one(Pipe::MatMulSmall, out, 64)
            }
        }
        K::Binary { op, shape, a_strides, b_strides } => {
            if shape.len() > MAX_RANK {
                return Err(format!("binary: rank {} exceeds {MAX_RANK}", shape.len()));
            }
            if a_strides.len() != shape.len() || b_strides.len() != shape.len() {
                return Err(format!("binary: shape has rank {} but strides have {} and {}", shape.len(), a_strides.len(), b_strides.len()));
            }
            let (dims, [sa, sb]) = merge(shape, [a_strides, b_strides]);
            let op = match op {
                BinaryOp::Add => 0,
                BinaryOp::Sub => 1,
                BinaryOp::Mul => 2,
            };
            p.set(0, &[out, op, dims.len()])?;
            p.set(3, &dims)?;
            p.set(9, &sa)?;
            p.set(15, &sb)?;
            p.one(Pipe::Binary, out, 256)
        }
        K::SumTo { from, to } => plan_sum_to(p, from, to, out)?,
        K::Affine { len, scale, shift } => {
            p.set(0, &[*len])?;
            p.float(1, *scale);
            p.float(2, *shift);
            p.one(Pipe::Affine, *len, 256)
        }
        K::Fill { len, value } => {
            p.set(0, &[*len])?;
            p.float(1, *value);
            p.one(Pipe::Fill, *len, 256)
        }
        K::Unary { op, len } => {
            p.set(0, &[*len, unary_code(*op)])?;
            p.one(Pipe::Unary, *len, 256)
        }
        K::UnaryBackward { op, len } => {
            p.set(0, &[*len, unary_code(*op)])?;
            p.one(Pipe::UnaryBackward, *len, 256)
        }
        K::Softmax { rows, cols } | K::SoftmaxBackward { rows, cols } => {
            let pipe = if matches!(kernel, K::Softmax { .. }) { Pipe::Softmax } else { Pipe::SoftmaxBackward };
            p.set(0, &[*rows, *cols])?;
            // One workgroup per row (rows.wgsl).
            p.one(pipe, if *cols == 0 { 0 } else { *rows }, 1)
        }
        K::LayerNorm { rows, cols, eps } | K::LayerNormBackward { rows, cols, eps } => {
            let pipe = if matches!(kernel, K::LayerNorm { .. }) { Pipe::LayerNorm } else { Pipe::LayerNormBackward };
            p.set(0, &[*rows, *cols])?;
            p.float(2, *eps);
            p.one(pipe, if *cols == 0 { 0 } else { *rows }, 1)
        }
        K::Gather { table_rows, rows, cols, .. } => {
            p.set(0, &[out, *table_rows, *rows, *cols])?;
            p.one(Pipe::Gather, out, 256)
        }
        K::ScatterAdd { groups, table_rows, rows, cols } => {
            let blocks = cols.div_ceil(256);
            p.set(0, &[*groups, *table_rows, *rows, *cols, out, blocks])?;
            let scan_work = groups.saturating_mul(*table_rows).saturating_mul(*rows);
            // Every path adds the same sums in the same order (increasing row).
            if out == 0 {
                p
            } else if scan_work <= SCATTER_SCAN_WORK || *table_rows > SCATTER_SHARED_ROWS {
                if *rows >= SCAN_SHARED_ROWS {
                    p.steps[0] = Some(Step { pipe: Pipe::ScatterScanShared, workgroups: (groups * table_rows * blocks) as u64 });
                    p
                } else {
                    p.one(Pipe::ScatterScan, out, 256)
                }
            } else {
                p.steps = [
                    Some(Step { pipe: Pipe::ScatterIndexShared, workgroups: *groups as u64 }),
                    Some(Step { pipe: Pipe::ScatterSum, workgroups: out.div_ceil(256) as u64 }),
                ];
                p.scratch_words = groups * (table_rows + 2) + groups * rows;
                word(p.scratch_words)?;
                p
            }
        }
        K::Permute { shape, perm } => {
            let rank = shape.len();
            let mut seen = [false; MAX_RANK];
            if rank > MAX_RANK || perm.len() != rank || perm.iter().any(|&q| q >= rank || std::mem::replace(&mut seen[q], true)) {
                return Err(format!("permute: {perm:?} is not a permutation of the axes of {shape:?} (rank ≤ {MAX_RANK})"));
            }
            let xs = row_major(shape);
            let ydims: Vec<usize> = perm.iter().map(|&q| shape[q]).collect();
            let ystr: Vec<usize> = perm.iter().map(|&q| xs[q]).collect();
            let (dims, [st]) = merge(&ydims, [&ystr]);
            p.set(0, &[out, dims.len()])?;
            p.set(2, &dims)?;
            p.set(8, &st)?;
            p.set(14, &[out.div_ceil(256)])?;
            p.one(Pipe::Permute, out, 256)
        }
        K::Narrow { axis, start, len, inner, .. } | K::NarrowBackward { axis, start, len, inner, .. } => {
            if start.checked_add(*len).is_none_or(|end| end > *axis) {
                return Err(format!("narrow: {start}..{start}+{len} outside an axis of {axis}"));
            }
            let pipe = if matches!(kernel, K::Narrow { .. }) { Pipe::Narrow } else { Pipe::NarrowBackward };
            p.set(0, &[out, *axis, *start, *len, *inner])?;
            p.one(pipe, out, 256)
        }
        K::CrossEntropy { groups, batch, classes } => {
            p.set(0, &[*groups, *batch, *classes, groups.div_ceil(64)])?;
            p.one(Pipe::CrossEntropy, *groups, 64)
        }
        K::CrossEntropyBackward { groups, batch, classes } => {
            p.set(0, &[groups * batch, *batch, *classes])?;
            p.one(Pipe::CrossEntropyBackward, if *classes == 0 { 0 } else { groups * batch }, 64)
        }
    })
}

fn unary_code(op: UnaryOp) -> usize {
    match op {
        UnaryOp::Relu => 0,
        UnaryOp::Gelu => 1,
        UnaryOp::Sigmoid => 2,
    }
}

/// SumTo, merged exactly like the CPU backend: neighbouring axes of the same kind (kept or
/// reduced) fuse, size-1 axes of `from` drop; each output then sums its reduced multi-index
/// in lexicographic order.
fn plan_sum_to(mut p: Plan, from: &[usize], to: &[usize], out: usize) -> Result<Plan, String> {
    if from.len() != to.len() {
        return Err(format!("sum_to: ranks differ ({from:?} to {to:?})"));
    }
    if from.iter().zip(to).any(|(&f, &t)| t != f && t != 1) {
        return Err(format!("sum_to: cannot reduce {from:?} to {to:?}"));
    }
    let mut dims: Vec<(usize, bool)> = Vec::with_capacity(from.len());
    for (&f, &t) in from.iter().zip(to) {
        if f == 1 {
            continue;
        }
        let reduced = t != f;
        match dims.last_mut() {
            Some((size, r)) if *r == reduced => *size *= f,
            _ => dims.push((f, reduced)),
        }
    }
    let sizes: Vec<usize> = dims.iter().map(|d| d.0).collect();
    let xs = row_major(&sizes);
    let pick = |reduced: bool| -> (Vec<usize>, Vec<usize>) { dims.iter().zip(&xs).filter(|(d, _)| d.1 == reduced).map(|(d, &s)| (d.0, s)).unzip() };
    let (kept, kept_strides) = pick(false);
    let (mut red, mut red_strides) = pick(true);
    if red.is_empty() {
        // Nothing reduced: a copy, written as a sum over one element.
        red.push(1);
        red_strides.push(0);
    }
    if kept.len() > MAX_RANK || red.len() > MAX_RANK {
        return Err(format!("sum_to: {from:?} to {to:?} alternates kept and reduced axes more than {MAX_RANK} times"));
    }
    p.set(0, &[out, kept.len()])?;
    p.set(2, &kept)?;
    p.set(8, &kept_strides)?;
    p.set(14, &[red.len()])?;
    p.set(15, &red)?;
    p.set(21, &red_strides)?;
    p.set(27, &[red.iter().product()])?;
    Ok(p.one(Pipe::SumTo, out, 256))
}

/// Gradients one AccumulateSquares dispatch sums (x0, x1, x2 in update.wgsl)...
pub(crate) const SQUARES_PER_DISPATCH: usize = 3;
/// ... and where the device has the storage bindings of the merged entry points (28), also
/// in p1 to v6.
pub(crate) const SQUARES_MANY_PER_DISPATCH: usize = 27;

/// AccumulateSquares of up to [`SQUARES_MANY_PER_DISPATCH`] gradients of `lens` per group
/// into the same sums, in order (more than [`SQUARES_PER_DISPATCH`]: the many-bindings
/// entry point). Empty gradients add nothing and are left out.
pub(crate) fn plan_squares(groups: usize, lens: &[usize], from_zero: bool) -> Result<Plan, String> {
    let lens: Vec<usize> = lens.iter().copied().filter(|&l| l > 0).collect();
    assert!(lens.len() <= SQUARES_MANY_PER_DISPATCH, "at most {SQUARES_MANY_PER_DISPATCH} gradients a dispatch");
    let mut p = Plan::new();
    p.set(0, &[groups, lens.len()])?;
    p.set(2, &lens)?;
    p.set(29, &[usize::from(from_zero)])?;
    let pipe = if lens.len() > SQUARES_PER_DISPATCH { Pipe::AccumulateSquaresMany } else { Pipe::AccumulateSquares };
    // One workgroup per group.
    Ok(p.one(pipe, if lens.is_empty() { 0 } else { groups }, 1))
}

/// Parameters one merged Adam dispatch updates (adam_many in update.wgsl), where the device
/// has the storage bindings for it.
pub(crate) const ADAM_PER_DISPATCH: usize = 6;

/// Adam over `first` and then `more` parameters of the same settings (members × elements per
/// member each, laid end to end), one dispatch. The words of the first's own plan, plus the
/// others' sizes.
pub(crate) fn plan_adam_many(first: &Update, more: &[(usize, usize)]) -> Result<Plan, String> {
    assert!(matches!(first, Update::Adam { .. }) && !more.is_empty() && more.len() < ADAM_PER_DISPATCH);
    let mut p = plan_update(first)?;
    p.set(13, &[1 + more.len()])?;
    let mut total = p.words[0] as usize;
    for (b, &(groups, len)) in more.iter().enumerate() {
        p.set(14 + 2 * b, &[groups * len, len])?;
        total += groups * len;
    }
    word(total)?;
    p.steps = [None, None];
    Ok(p.one(Pipe::AdamMany, total, 256))
}

/// Row-major strides of `shape`.
fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Drop size-1 axes and fuse neighbours that are contiguous for every operand (the CPU's
/// `Layout`), so a same-shape or bias-broadcast Binary has rank 1 or 2. Rank ≥ 1 always.
fn merge<const N: usize>(shape: &[usize], strides: [&[usize]; N]) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out: [Vec<usize>; N] = std::array::from_fn(|_| Vec::with_capacity(shape.len()));
    for (d, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        if let Some(last) = dims.len().checked_sub(1)
            && (0..N).all(|k| out[k][last] == strides[k][d] * size)
        {
            dims[last] *= size;
            for k in 0..N {
                out[k][last] = strides[k][d];
            }
            continue;
        }
        dims.push(size);
        for k in 0..N {
            out[k].push(strides[k][d]);
        }
    }
    if dims.is_empty() {
        dims.push(1);
        for o in &mut out {
            o.push(0);
        }
    }
    (dims, out)
}

/// Plan one in-place update.
pub(crate) fn plan_update(update: &Update) -> Result<Plan, String> {
    let mut p = Plan::new();
    for len in update.lengths() {
        word(len)?;
    }
    Ok(match update {
        Update::Zero { len } => {
            p.set(0, &[*len])?;
            p.one(Pipe::Zero, *len, 256)
        }
        Update::AccumulateSquares { groups, len } => plan_squares(*groups, &[*len], false)?,
        Update::ScaleToBall { groups, len, radius } => {
            let n = groups * len;
            p.set(0, &[n, *len])?;
            p.float(2, *radius);
            p.one(Pipe::ScaleToBall, n, 256)
        }
        Update::Adam { groups, len, lr, beta1, beta2, eps, weight_decay, bias1, bias2, clip } => {
            let n = groups * len;
            p.set(0, &[n, *len])?;
            p.float(2, *lr);
            p.float(3, *beta1);
            p.float(4, 1.0 - beta1);
            p.float(5, *beta2);
            p.float(6, 1.0 - beta2);
            p.float(7, *eps);
            p.float(8, *weight_decay);
            p.float(9, *bias1);
            p.float(10, *bias2);
            p.words[11] = clip.is_some() as u32;
            p.float(12, clip.unwrap_or(0.0));
            p.dynamic = 1 << 2 | 1 << 9 | 1 << 10;
            p.one(Pipe::Adam, n, 256)
        }
        Update::Sgd { groups, len, lr, momentum, weight_decay, clip } => {
            let n = groups * len;
            p.set(0, &[n, *len])?;
            p.float(2, *lr);
            p.float(3, *momentum);
            p.float(4, *weight_decay);
            p.words[5] = clip.is_some() as u32;
            p.float(6, clip.unwrap_or(0.0));
            p.dynamic = 1 << 2;
            p.one(Pipe::Sgd, n, 256)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// prelude.wgsl's `udiv`, step for step in f32 (Rust's `as` saturates like WGSL's
    /// conversions). `nudge` moves the reciprocal by whole ulps: GPUs may round `1.0 / d`
    /// less carefully than IEEE division.
    fn udiv(n: u32, d: u32, nudge: i32) -> u32 {
        let inv = f32::from_bits((1.0f32 / d as f32).to_bits().wrapping_add_signed(nudge));
        let mut q = (n as f32 * inv) as u32;
        let r = n.wrapping_sub(q.wrapping_mul(d)) as i32;
        q = (q as i32).wrapping_add((r as f32 * inv).floor() as i32) as u32;
        let r2 = n.wrapping_sub(q.wrapping_mul(d)) as i32;
        if r2 < 0 {
            q = q.wrapping_sub(1);
        } else if r2 >= d as i32 {
            q += 1;
        }
        q
    }

    #[test]
    fn shader_division_is_exact() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 32) as u32
        };
        let mut divisors: Vec<u32> = (1..=300).collect();
        divisors.extend([1000, 2080, 4095, 4096, 65535, 65536, 1 << 20, (1 << 24) + 1, (1 << 30) - 1]);
        divisors.extend((0..200).map(|_| next() % (1 << 30) + 1));
        for &d in &divisors {
            let mut ns = vec![0, 1, d - 1, d, d + 1, u32::MAX, u32::MAX - 1, 1 << 24, (1 << 24) + 1, 1 << 31];
            for k in [2u64, 3, 1000, 65536, 1 << 20] {
                let m = k * d as u64;
                if m < u32::MAX as u64 {
                    ns.extend([m as u32 - 1, m as u32, m as u32 + 1]);
                }
            }
            ns.extend((0..300).map(|_| next()));
            ns.extend((0..300).map(|_| next() % (1 << 26)));
            for &n in &ns {
                for nudge in [-4, 0, 4] {
                    assert_eq!(udiv(n, d, nudge), n / d, "{n} / {d} (reciprocal nudged {nudge} ulp)");
                }
            }
        }
    }

    #[test]
    fn merge_fuses_contiguous_axes_and_keeps_broadcasts() {
        // Same shape: one run.
        let (d, [a, b]) = merge(&[2, 3, 4], [&[12, 4, 1], &[12, 4, 1]]);
        assert_eq!((d, a, b), (vec![24], vec![1], vec![1]));
        // Bias broadcast [M, C] + [C].
        let (d, [a, b]) = merge(&[5, 1, 7], [&[7, 7, 1], &[0, 0, 1]]);
        assert_eq!((d, a, b), (vec![5, 7], vec![7, 1], vec![0, 1]));
        // Scalar shape.
        let (d, [a]) = merge(&[], [&[]]);
        assert_eq!((d, a), (vec![1], vec![0]));
    }

    #[test]
    fn sum_to_words_follow_the_cpu_merge() {
        let p = plan_kernel(&Kernel::SumTo { from: vec![3, 7, 5, 11], to: vec![3, 1, 1, 11] }).unwrap();
        // kept [3, 11] (strides 385, 1), reduced [35] (stride 11).
        assert_eq!(&p.words[0..4], &[33, 2, 3, 11]);
        assert_eq!(&p.words[8..10], &[385, 1]);
        assert_eq!(&p.words[14..16], &[1, 35]);
        assert_eq!(p.words[21], 11);
        assert_eq!(p.words[27], 35);
    }

    #[test]
    fn matmul_picks_the_kernel_by_shape_only() {
        let mm = |batch, m, k, n| plan_kernel(&Kernel::MatMul { batch, m, k, n, trans_a: false, trans_b: false }).unwrap();
        assert_eq!(mm(1, 64, 8, 64).steps[0].unwrap().pipe, Pipe::MatMulTiled);
        assert_eq!(mm(128, 1, 16, 65).steps[0].unwrap().pipe, Pipe::MatMulSmall);
        assert_eq!(mm(1, 1, 16, 65).steps[0].unwrap().pipe, Pipe::MatMulSmall);
        assert!(mm(0, 3, 4, 5).steps[0].is_none());
    }
}
