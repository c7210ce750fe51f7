//! sparsevar-cpu: the CPU [`Backend`] — ndarray/matrixmultiply for MatMul, rayon for the
//! parallel loops, plain slices for everything else. `CpuBackend<f32>` ("cpu") is the fast
//! default; `CpuBackend<f64>` ("cpu-f64") exists for gradient checks and reference runs.
//!
//! # Determinism
//!
//! Results are bit-identical for any rayon thread count, and a group (ensemble member) gives
//! the same bits whether it is launched alone or with others. Three rules buy this:
//!
//! * only independent *output* items are split across threads, with partitions that are
//!   constants or functions of the kernel's shape, never of the thread count (see `par`);
//!   serial runs below the size threshold walk the same partition;
//! * every reduction runs inside one output item in an order fixed by the kernel's shape:
//!   left to right (SumTo, ScatterAdd, CrossEntropy's batch mean, the plain-loop matmul),
//!   matrixmultiply's microkernel order over the full k (one FMA chain per 256 terms, which
//!   `gemm512` repeats exactly), or eight interleaved partial sums
//!   combined in a fixed tree (softmax sums, layer-norm moments, sums of squares, dot
//!   products), which vectorises and is just as reproducible;
//! * nothing reads how many groups there are: group `g` touches only its own slices.
//!
//! matrixmultiply picks its microkernel from the CPU's features (FMA or not), so f32/f64
//! bits are reproducible on one kind of CPU, not promised across different ones.
//!
//! Arithmetic runs in `F` itself (f32 stays f32), like the GPU backends.
//!
//! # Speed
//!
//! An ensemble of at least one member per thread runs member by member
//! (`Backend::run_members`): each thread takes whole members through every kernel of the
//! step, so a member's activations stay in its core's cache instead of the whole ensemble's
//! streaming through memory once per kernel, and its temporaries live in one arena per
//! thread that the next member reuses (`scratch`). Otherwise launches below a size threshold run
//! on the calling thread. The threshold is higher when the caller is outside every rayon
//! pool, because each parallel launch from outside costs two thread hand-offs (about 10 µs);
//! a training loop run inside `ThreadPool::install` parallelises much smaller launches.
//!
//! f32 MatMul on a CPU with AVX-512F uses our own kernel (`gemm512`), which gives
//! matrixmultiply's bits without its packing; otherwise matrixmultiply, except for tiny
//! rows, columns or k (attention's single query row) where a plain loop avoids its packing.
//! The elementwise, row and update loops are compiled a second time for AVX-512 and picked
//! at run time (`par::twin!`; no FMA contraction, so the same bits). A loop has to sit in the
//! target-feature copy itself: one inside a closure handed to a generic wrapper stays out of
//! line, compiled for SSE2 (`objdump -d` shows which functions use zmm registers). f32 `exp` is our own
//! vectorisable polynomial (softmax, GELU and sigmoid are exp-bound).

mod elementwise;
mod float;
mod gemm512;
mod index;
mod matmul;
mod par;
mod rows;
mod scratch;
mod strided;
mod update;

use std::marker::PhantomData;

use rayon::prelude::*;
use scratch::Place;
use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, MemberLaunch, MemberUpdate, Update};

pub use float::Float;

/// A backend computing in `F` (`f32` or `f64`) on the CPU. Buffers are plain `Vec<F>`s.
#[derive(Debug, Default)]
pub struct CpuBackend<F: Float = f32> {
    buffers: Vec<Vec<F>>,
    /// One scratch arena per pool thread for `run_members`' temporaries, kept between
    /// calls so that it stays allocated and cached.
    arenas: Vec<std::sync::Mutex<Vec<F>>>,
    _f: PhantomData<F>,
}

impl<F: Float> CpuBackend<F> {
    /// An empty backend: `CpuBackend::<f32>::new()` is "cpu", `CpuBackend::<f64>::new()` is
    /// "cpu-f64".
    pub fn new() -> Self {
        CpuBackend { buffers: Vec::new(), arenas: Vec::new(), _f: PhantomData }
    }

    /// Direct view of a buffer (tests and debugging; the executor goes through `read`).
    pub fn buffer(&self, id: BufferId) -> Option<&[F]> {
        self.buffers.get(id.0).map(|b| &b[..])
    }

    fn unknown(&self, id: BufferId) -> BackendError {
        BackendError::UnknownBuffer(id, F::BACKEND_NAME.to_string())
    }

    fn device(&self, message: String) -> BackendError {
        BackendError::Device { backend: F::BACKEND_NAME.to_string(), message }
    }

    /// Check an update's buffers, each holding `members` times the lengths it names, and
    /// none passed twice.
    fn check_update(&self, update: &Update, buffers: &[BufferId], members: usize) -> Result<(), BackendError> {
        let name = update.name();
        let lens = update.lengths();
        if buffers.len() != lens.len() {
            return Err(self.device(format!("{name} takes {} buffers, got {}", lens.len(), buffers.len())));
        }
        for (&id, &need) in buffers.iter().zip(&lens) {
            self.check(id, need * members, name)?;
        }
        for (i, id) in buffers.iter().enumerate() {
            if buffers[..i].contains(id) {
                return Err(self.device(format!("{name}: buffer {id:?} passed twice")));
            }
        }
        Ok(())
    }

    /// Check that `id` exists and holds exactly `need` values.
    fn check(&self, id: BufferId, need: usize, kernel: &str) -> Result<(), BackendError> {
        let have = self.buffers.get(id.0).ok_or_else(|| self.unknown(id))?.len();
        if have != need {
            return Err(BackendError::BufferSize { backend: F::BACKEND_NAME.to_string(), kernel: kernel.to_string(), buffer: id, have, need });
        }
        Ok(())
    }
}

impl<F: Float> Backend for CpuBackend<F> {
    fn name(&self) -> String {
        F::BACKEND_NAME.to_string()
    }

    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError> {
        self.buffers.push(vec![F::ZERO; len]);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn free(&mut self, buf: BufferId) -> Result<(), BackendError> {
        let unknown = self.unknown(buf);
        // The slot stays (ids are never reused); an empty buffer fails every later size check.
        *self.buffers.get_mut(buf.0).ok_or(unknown)? = Vec::new();
        Ok(())
    }

    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError> {
        self.check(buf, data.len(), "write")?;
        for (o, &v) in self.buffers[buf.0].iter_mut().zip(data) {
            *o = F::from_f64(v);
        }
        Ok(())
    }

    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        let b = self.buffers.get(buf.0).ok_or_else(|| self.unknown(buf))?;
        out.clear();
        out.extend(b.iter().map(|v| v.to_f64()));
        Ok(())
    }

    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        let name = kernel.name();
        if inputs.len() != kernel.arity() {
            return Err(self.device(format!("{name} takes {} inputs, got {}", kernel.arity(), inputs.len())));
        }
        let (in_lens, out_len) = kernel.lengths();
        for (&id, &need) in inputs.iter().zip(&in_lens) {
            self.check(id, need, name)?;
        }
        self.check(output, out_len, name)?;
        if inputs.contains(&output) {
            return Err(self.device(format!("{name}: output {output:?} aliases an input")));
        }
        // Take the output out so the inputs can be borrowed while it is written.
        let mut out = std::mem::take(&mut self.buffers[output.0]);
        let mut ins: [&[F]; 3] = [&[]; 3];
        for (slot, id) in ins.iter_mut().zip(inputs) {
            *slot = &self.buffers[id.0];
        }
        let result = run_kernel(kernel, &ins, &mut out);
        self.buffers[output.0] = out;
        result.map_err(|m| self.device(m))
    }

    /// Members in parallel, each through the whole list on one thread (its kernels run
    /// serially there), so a member's activations stay in that core's cache from one kernel
    /// to the next instead of streaming the whole ensemble's through memory per kernel. The
    /// list's temporaries live in the thread's arena, reused member after member (`scratch`).
    /// With fewer members than threads whole-ensemble launches use more cores; from one
    /// member per thread on, whole members win (measured on 2 cores, T = 64: R = 2 runs at
    /// 1.9× the rate of its whole-ensemble launches).
    fn run_members(&mut self, members: usize, launches: &[MemberLaunch], updates: &[MemberUpdate]) -> Result<bool, BackendError> {
        if members == 0 || members < rayon::current_num_threads() {
            return Ok(false);
        }
        // Check everything first, as `launch` does, at the full sizes.
        let mut ids: Vec<usize> = Vec::new();
        for l in launches {
            let name = l.kernel.name();
            if l.inputs.len() != l.kernel.arity() {
                return Err(self.device(format!("{name} takes {} inputs, got {}", l.kernel.arity(), l.inputs.len())));
            }
            let (in_lens, out_len) = l.kernel.lengths();
            for (&id, &need) in l.inputs.iter().zip(&in_lens) {
                self.check(id, need * members, name)?;
            }
            self.check(l.output, out_len * members, name)?;
            if l.inputs.contains(&l.output) {
                return Err(self.device(format!("{name}: output {:?} aliases an input", l.output)));
            }
            ids.extend(l.inputs.iter().chain([&l.output]).map(|b| b.0));
        }
        for u in updates {
            self.check_update(&u.update, &u.buffers, members)?;
            ids.extend(u.buffers.iter().map(|b| b.0));
        }
        ids.sort_unstable();
        ids.dedup();
        let slot = |b: BufferId| ids.binary_search(&b.0).expect("collected above");
        let table: Vec<(&Kernel, [usize; 3], usize, usize)> = launches
            .iter()
            .map(|l| {
                let mut ins = [0; 3];
                for (s, &b) in ins.iter_mut().zip(&l.inputs) {
                    *s = slot(b);
                }
                (&l.kernel, ins, l.inputs.len(), slot(l.output))
            })
            .collect();
        let lens: Vec<usize> = ids.iter().map(|&i| self.buffers[i].len() / members).collect();
        // An output only the updates read (a gradient) is a temporary too when they run here.
        let temporary = |l: &MemberLaunch| l.scratch || (l.for_updates && !updates.is_empty());
        let uses: Vec<scratch::Use> =
            table.iter().zip(launches).map(|(&(_, ref ins, n, out), l)| scratch::Use { inputs: &ins[..n], output: out, scratch: temporary(l) }).collect();
        let member_updates: Vec<(&Update, Vec<usize>)> = updates.iter().map(|u| (&u.update, u.buffers.iter().map(|&b| slot(b)).collect())).collect();
        let updated: Vec<usize> = member_updates.iter().flat_map(|(_, slots)| slots.iter().copied()).collect();
        let (places, arena_len) = scratch::plan(&lens, &uses, &updated);
        let threads = rayon::current_num_threads();
        if self.arenas.len() < threads {
            self.arenas.resize_with(threads, Default::default);
        }
        // Take the buffers out and hand each member its slice of every one (temporaries
        // included: their slices go unused, and cost nothing until touched).
        let mut taken: Vec<Vec<F>> = ids.iter().map(|&i| std::mem::take(&mut self.buffers[i])).collect();
        let mut per: Vec<Vec<&mut [F]>> = (0..members).map(|_| Vec::with_capacity(ids.len())).collect();
        for buf in taken.iter_mut() {
            let len = buf.len() / members;
            if len == 0 {
                per.iter_mut().for_each(|p| p.push(&mut []));
            } else {
                per.iter_mut().zip(buf.chunks_mut(len)).for_each(|(p, c)| p.push(c));
            }
        }
        let arenas = &self.arenas;
        let results: Vec<Result<(), String>> = per
            .into_par_iter()
            .map(|mut mine| {
                // Each thread locks only its own arena; a fresh one if that ever fails.
                let mut own = arenas.get(rayon::current_thread_index().unwrap_or(0)).and_then(|a| a.try_lock().ok());
                let mut fresh = Vec::new();
                let arena: &mut Vec<F> = own.as_deref_mut().unwrap_or(&mut fresh);
                if arena.len() < arena_len {
                    // NaN, so that a kernel reading memory it did not write shows in the tests.
                    arena.resize(arena_len, F::from_f64(f64::NAN));
                }
                par::serial(|| {
                    run_member(&table, &places, &mut mine, arena)?;
                    for (u, slots) in &member_updates {
                        run_member_update(u, slots, &places, &mut mine, arena);
                    }
                    Ok(())
                })
            })
            .collect();
        for (&i, buf) in ids.iter().zip(taken) {
            self.buffers[i] = buf;
        }
        // The first failing member's error (member order, whatever ran first).
        results.into_iter().collect::<Result<(), String>>().map_err(|m| self.device(m))?;
        Ok(true)
    }

    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        self.check_update(update, buffers, 1)?;
        // Take every buffer out (moves, not copies), run, put them all back.
        let mut bufs: [Vec<F>; 5] = Default::default();
        for (slot, id) in bufs.iter_mut().zip(buffers) {
            *slot = std::mem::take(&mut self.buffers[id.0]);
        }
        run_update(update, &mut bufs.each_mut().map(|b| &mut b[..]));
        for (slot, id) in bufs.iter_mut().zip(buffers) {
            self.buffers[id.0] = std::mem::take(slot);
        }
        Ok(())
    }
}

/// One member through the whole launch list: each buffer is the member's slice (`mine`) or
/// a range of the thread's `arena`, as `places` says.
fn run_member<F: Float>(table: &[(&Kernel, [usize; 3], usize, usize)], places: &[Place], mine: &mut [&mut [F]], arena: &mut [F]) -> Result<(), String> {
    for &(kernel, ins, n, out) in table {
        let mut x: [&[F]; 3] = [&[]; 3];
        match &places[out] {
            Place::Member => {
                let y = std::mem::take(&mut mine[out]);
                for (slot, &i) in x.iter_mut().zip(&ins[..n]) {
                    *slot = input(&places[i], mine[i], arena, &[], usize::MAX);
                }
                let result = run_kernel(kernel, &x, y);
                mine[out] = y;
                result?;
            }
            Place::Arena(r) => {
                // The output's range is disjoint from every live input's (see `scratch::plan`).
                let (below, rest) = arena.split_at_mut(r.start);
                let (y, above) = rest.split_at_mut(mine[out].len());
                let above_start = r.start + y.len();
                for (slot, &i) in x.iter_mut().zip(&ins[..n]) {
                    *slot = input(&places[i], mine[i], below, above, above_start);
                }
                run_kernel(kernel, &x, y)?;
            }
        }
    }
    Ok(())
}

/// One update after the member's launches, on the member's slices of its buffers or, for a
/// temporary the update reads (a gradient), its arena range. Slots are distinct (checked) and
/// the ranges of temporaries live at the end of the list are disjoint (`scratch::plan`).
fn run_member_update<F: Float>(u: &Update, slots: &[usize], places: &[Place], mine: &mut [&mut [F]], arena: &mut [F]) {
    // The member's slices taken out (moves, not copies), to be put back after.
    let mut held: [&mut [F]; 5] = Default::default();
    for (h, &s) in held.iter_mut().zip(slots) {
        if places[s] == Place::Member {
            *h = std::mem::take(&mut mine[s]);
        }
    }
    {
        let mut bufs: [&mut [F]; 5] = Default::default();
        for (b, h) in bufs.iter_mut().zip(held.iter_mut()) {
            *b = &mut **h;
        }
        // The arena ranges (start, slot), cut out in increasing order of their start.
        let mut in_arena = [(usize::MAX, 0); 5];
        for (k, &s) in slots.iter().enumerate() {
            if let Place::Arena(r) = &places[s] {
                in_arena[k] = (r.start, k);
            }
        }
        in_arena.sort_unstable();
        let (mut rest, mut rest_start) = (arena, 0);
        for (start, k) in in_arena.into_iter().take_while(|&(start, _)| start != usize::MAX) {
            let (piece, tail) = rest[start - rest_start..].split_at_mut(mine[slots[k]].len());
            rest_start = start + piece.len();
            (bufs[k], rest) = (piece, tail);
        }
        run_update(u, &mut bufs);
    }
    for (h, &s) in held.iter_mut().zip(slots) {
        if places[s] == Place::Member {
            mine[s] = std::mem::take(h);
        }
    }
}

/// Where an input is: the member's slice, or the start of its arena range (a range may be
/// longer than the temporary, reused from a larger one). The arena comes split around the
/// output's range: `below` it, and `above` from index `above_start` on.
fn input<'a, F>(place: &Place, member: &'a [F], below: &'a [F], above: &'a [F], above_start: usize) -> &'a [F] {
    match place {
        Place::Member => member,
        Place::Arena(q) if q.start >= above_start => &above[q.start - above_start..][..member.len()],
        Place::Arena(q) => &below[q.start..][..member.len()],
    }
}

/// Dispatch one kernel; lengths are already checked. Errors are messages for `Device`.
fn run_kernel<F: Float>(kernel: &Kernel, x: &[&[F]; 3], y: &mut [F]) -> Result<(), String> {
    use Kernel as K;
    match kernel {
        K::MatMul { batch, m, k, n, trans_a, trans_b } => {
            matmul::matmul(x[0], x[1], y, (*batch, *m, *k, *n), *trans_a, *trans_b);
        }
        K::Binary { op, shape, a_strides, b_strides } => {
            elementwise::binary(*op, shape, a_strides, b_strides, x[0], x[1], y)?;
        }
        K::SumTo { from, to } => elementwise::sum_to(from, to, x[0], y)?,
        K::Affine { scale, shift, .. } => elementwise::affine(*scale, *shift, x[0], y),
        K::Fill { value, .. } => elementwise::fill(*value, y),
        K::Unary { op, .. } => elementwise::unary(*op, x[0], y),
        K::UnaryBackward { op, .. } => elementwise::unary_backward(*op, x[0], x[1], y),
        K::Softmax { cols, .. } => rows::softmax(*cols, x[0], y),
        K::SoftmaxBackward { cols, .. } => rows::softmax_backward(*cols, x[0], x[1], y),
        K::LayerNorm { cols, eps, .. } => rows::layer_norm(*cols, *eps, x[0], y),
        K::LayerNormBackward { cols, eps, .. } => rows::layer_norm_backward(*cols, *eps, x[0], x[1], y),
        K::Gather { table_rows, rows, cols, .. } => index::gather((*table_rows, *rows, *cols), x[0], x[1], y)?,
        K::ScatterAdd { table_rows, rows, cols, .. } => {
            index::scatter_add((*table_rows, *rows, *cols), x[0], x[1], y)?;
        }
        K::Permute { shape, perm } => index::permute(shape, perm, x[0], y)?,
        K::Narrow { axis, start, len, inner, .. } => index::narrow((*axis, *start, *len, *inner), x[0], y)?,
        K::NarrowBackward { axis, start, len, inner, .. } => {
            index::narrow_backward((*axis, *start, *len, *inner), x[0], y)?;
        }
        K::CrossEntropy { batch, classes, .. } => rows::cross_entropy((*batch, *classes), x[0], x[1], y)?,
        K::CrossEntropyBackward { batch, classes, .. } => {
            rows::cross_entropy_backward((*batch, *classes), x[0], x[1], x[2], y)?;
        }
    }
    Ok(())
}

/// Dispatch one update on buffers taken out of the backend (in `Update::lengths` order).
fn run_update<F: Float>(u: &Update, b: &mut [&mut [F]; 5]) {
    let [b0, b1, b2, b3, b4] = b;
    match u {
        Update::Zero { .. } => update::zero(b0),
        Update::AccumulateSquares { len, .. } => update::accumulate_squares(*len, b0, b1),
        Update::ScaleToBall { len, radius, .. } => update::scale_to_ball(*len, *radius, b0, b1),
        Update::Adam { len, lr, beta1, beta2, eps, weight_decay, bias1, bias2, clip, .. } => {
            let h =
                update::AdamHyper { lr: *lr, beta1: *beta1, beta2: *beta2, eps: *eps, weight_decay: *weight_decay, bias1: *bias1, bias2: *bias2, clip: *clip };
            let sq = clip.map(|_| &b4[..]);
            update::adam(*len, &h, b0, b1, b2, b3, sq);
        }
        Update::Sgd { len, lr, momentum, weight_decay, clip, .. } => {
            let sq = clip.map(|_| &b3[..]);
            update::sgd(*len, (*lr, *momentum, *weight_decay, *clip), b0, b1, b2, sq);
        }
    }
}
