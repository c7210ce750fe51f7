//! sparsevar-wgpu: the GPU [`Backend`] — every [`Kernel`] and [`Update`] of
//! `sparsevar_core::backend` as a WGSL compute shader on wgpu (Vulkan, Metal, DX12; Mesa's
//! lavapipe on a machine without a GPU). Numbers are f32 on the device; the trait's f64
//! host values are converted at `write` and `read`.
//!
//! # One submission per training step
//!
//! The executor launches the same ~100 kernels on the same buffers every step, so the design
//! is about doing nothing per launch but record it:
//!
//! * pipelines are compiled once per kernel kind (`pipelines.rs`); every launch *site* (kernel
//!   parameters + buffer ids) gets its uniform buffer and bind group on first use and keeps
//!   them, so after the first step nothing is created per step;
//! * launches are recorded into one open compute pass and submitted lazily: `write` submits
//!   first (a queued buffer write would otherwise overtake recorded but unsubmitted work),
//!   `read` and `sync` submit and wait. A step — write the batch, run forward, backward and
//!   the optimizer — is one `queue.submit`.
//!
//! On a GPU a step of a single model is bound by the number of dispatches (about 5 µs each
//! on an H200, even empty), so the recorder saves the ones it can without changing a bit:
//! consecutive AccumulateSquares into the same sums, and consecutive Adam updates with the
//! same settings, share a dispatch (`Held`), as do short chains of launches (a MatMul and its
//! bias, a scaled softmax, a LayerNorm and its scale and shift, their backward, a linear
//! layer's two backward products: `kernels::fusion`; the fused kernels write every output of
//! the chain, since later launches may read any), and a ScatterAdd whose index buffer has not
//! been written since its last sort skips the sort (buffers are dated at every write).
//!
//! # Determinism
//!
//! Every reduction runs inside one invocation in a fixed order (or, for the rows of Softmax
//! and LayerNorm and for sums of squares, in one workgroup with a fixed tree), and ScatterAdd
//! either scans each group's rows in increasing order for every output (small scatters and
//! large tables) or sorts them by table row (a stable counting sort) and then gathers each
//! output's rows in increasing order, instead of using float atomics. So results repeat bit
//! for bit, and a member of an ensemble gets the same numbers as when trained alone (tested).
//! SumTo and ScatterAdd even add in the CPU's order and agree with CPU f32 to the bit; the
//! rest match it to f32 rounding (other summation orders, `exp`, fused multiply-adds).
//!
//! Workgroup counts beyond the adapter's per-dimension limit fold into a 2D grid, and
//! integer division in index arithmetic goes through an exact f32-based `udiv` (CPU drivers
//! such as lavapipe have no vector integer divide).
//!
//! # Errors
//!
//! Shader, pipeline, buffer and bind-group creation run in error scopes and come back as
//! `Result`s; errors that surface later (at submission) are recorded by an uncaptured-error
//! handler, instead of wgpu's default panic, and returned by the next call as
//! [`BackendError::Device`]. An index out of range (Gather, ScatterAdd, CrossEntropy labels)
//! cannot be reported without a read-back, so it turns the affected outputs into NaN where
//! the CPU backend returns an error.

mod device;
mod headless;
mod kernels;
mod pipelines;
mod timing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, Update};

pub use device::{AdapterSummary, WgpuError, adapters};
pub use headless::nvidia_egl_driver_env;
use kernels::fusion::{self, Fit, Launch};
use kernels::{Plan, WORDS};
use pipelines::{Binding, Pipe, Pipelines, SLOTS, scoped};

const NAME: &str = "wgpu";

/// Live counts that a caller can watch while a trainer holds the backend (a cheap clone of
/// a shared handle): how often work was submitted and how many device objects exist.
#[derive(Clone, Debug, Default)]
pub struct Counters(Arc<CounterCells>);

#[derive(Debug, Default)]
struct CounterCells {
    submissions: AtomicU64,
    dispatches: AtomicU64,
    launch_sites: AtomicU64,
    device_objects: AtomicU64,
}

impl Counters {
    /// Queue submissions so far (a training step should add exactly one).
    pub fn submissions(&self) -> u64 {
        self.0.submissions.load(Ordering::Relaxed)
    }

    /// Compute dispatches recorded so far.
    pub fn dispatches(&self) -> u64 {
        self.0.dispatches.load(Ordering::Relaxed)
    }

    /// Launch sites (kernel parameters + buffers) seen so far; each owns its uniform buffer
    /// and bind groups.
    pub fn launch_sites(&self) -> u64 {
        self.0.launch_sites.load(Ordering::Relaxed)
    }

    /// Buffers, uniform buffers and bind groups created so far (after the first training
    /// step this stops growing).
    pub fn device_objects(&self) -> u64 {
        self.0.device_objects.load(Ordering::Relaxed)
    }

    fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }
}

/// A device buffer of `len` f32 values (at least 4 bytes: wgpu cannot bind empty buffers).
struct GpuBuffer {
    buffer: wgpu::Buffer,
    len: usize,
    /// When the buffer was last written or bound for writing (`WgpuBackend::clock`).
    written: u64,
}

/// What identifies a launch site: the first pipeline, the parameter words that do not change
/// between steps, and the buffers in each binding slot.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SiteKey {
    pipe: Pipe,
    words: [u32; WORDS],
    slots: [u32; SLOTS],
}

/// A launch site's resources, created on its first launch and reused ever after.
struct Site {
    uniform: wgpu::Buffer,
    /// What the uniform holds now.
    words: [u32; WORDS],
    /// Pipeline, bind group and workgroup grid per dispatch.
    dispatches: Vec<(Pipe, wgpu::BindGroup, (u32, u32))>,
    /// Submission the site was last recorded into (see `WgpuBackend::batch`).
    last_batch: u64,
    /// ScatterAdd: the index buffer's `written` when its sort was last recorded. The sort
    /// depends on nothing else, so while the indices stay the same (a position table's
    /// fixed indices) the scratch still holds it and only the sum runs.
    sorted: Option<u64>,
    /// ScatterAdd's u32 scratch; kept alive by the bind groups too.
    _scratch: Option<wgpu::Buffer>,
}

/// AccumulateSquares launches not recorded yet: consecutive ones into the same sums become
/// one dispatch of up to [`kernels::SQUARES_MANY_PER_DISPATCH`] gradients where the device
/// has the storage bindings, else [`kernels::SQUARES_PER_DISPATCH`] (a clipped optimizer step
/// sums the squares of every parameter's gradient: 22 launches, one dispatch, for paper1l).
/// Every other call records them first, so the order of work is unchanged.
struct HeldSquares {
    groups: usize,
    norm: BufferId,
    /// Gradient buffers and their lengths per group.
    grads: Vec<(BufferId, usize)>,
    /// A Zero launch on the sums came first (held too: the sums then start from zero in the
    /// same dispatch, 0 + total being the total). With no gradient after it, it is recorded
    /// as it is.
    from_zero: bool,
}

/// Adam updates not recorded yet: consecutive ones with the same settings and norm buffer
/// become one dispatch of up to [`kernels::ADAM_PER_DISPATCH`] parameters (paper1l's step
/// has 22), where the device has the storage bindings for it.
struct HeldAdam {
    /// The first update; the others differ from it in their sizes only.
    first: Update,
    norm: Option<BufferId>,
    /// Members, elements per member, and [parameter, gradient, m, v] of each parameter.
    params: Vec<(usize, usize, [BufferId; 4])>,
}

/// Work held back to share a dispatch with the launches after it. Every other call records
/// it first, so the order of work is unchanged.
enum Held {
    Squares(HeldSquares),
    Adam(HeldAdam),
    /// Launches that start a chain the backend fuses into one dispatch ([`kernels::fusion`]).
    Chain(Vec<Launch>),
}

/// Recorded, unsubmitted work.
struct Pending {
    /// The open compute pass; detached from the encoder's borrow with `forget_lifetime`,
    /// so it must end before the encoder is used again (declared first: dropped first).
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: wgpu::CommandEncoder,
}

/// The wgpu backend ("wgpu"): f32 buffers on one device, WGSL kernels, one submission per
/// training step.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: AdapterSummary,
    limits: wgpu::Limits,
    buffers: Vec<GpuBuffer>,
    pipelines: Pipelines,
    sites: HashMap<SiteKey, Site>,
    pending: Option<Pending>,
    held: Option<Held>,
    /// Parameters a merged Adam dispatch may take: 1 where the device has too few storage
    /// bindings for `adam_many`.
    adam_per_dispatch: usize,
    /// Most AccumulateSquares recorded as one dispatch (27 with the merged entry points'
    /// bindings, else 3).
    squares_per_dispatch: usize,
    /// Whether launches may fuse into chains ([`kernels::fusion`]): the device has the
    /// storage bindings of the fused entry points (`can_fuse`), and fusing is not switched off.
    fuse: bool,
    can_fuse: bool,
    /// Bound where an entry point writes a binding that a launch leaves empty (a single
    /// product in the two-product matmul kernels); never read.
    spare: wgpu::Buffer,
    /// Number of submissions so far: a site whose `last_batch` equals it is recorded in the
    /// pending work, so rewriting its uniform must wait for a submission.
    batch: u64,
    /// Counts buffer writes (host writes, kernel outputs, updates) to date them.
    clock: u64,
    staging: Option<wgpu::Buffer>,
    host: Vec<f32>,
    /// Device-side launch timing (`Backend::time_launches_as`), once asked for.
    timer: Option<timing::Timer>,
    /// Errors caught by the uncaptured-error handler, returned by the next call.
    errors: Arc<Mutex<Vec<String>>>,
    counters: Counters,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend").field("adapter", &self.adapter).field("buffers", &self.buffers.len()).finish()
    }
}

impl WgpuBackend {
    /// Open the best adapter: a discrete GPU, then an integrated one, then a software one.
    pub fn new() -> Result<Self, WgpuError> {
        let adapters = device::enumerate();
        let index = device::best(&adapters).ok_or(WgpuError::NoAdapter)?;
        Self::open(index, &adapters[index])
    }

    /// Open adapter `index` of [`adapters`].
    pub fn with_adapter(index: usize) -> Result<Self, WgpuError> {
        let adapters = device::enumerate();
        match adapters.get(index) {
            Some(a) => Self::open(index, a),
            None if adapters.is_empty() => Err(WgpuError::NoAdapter),
            None => Err(WgpuError::AdapterIndex { index, count: adapters.len() }),
        }
    }

    fn open(index: usize, adapter: &wgpu::Adapter) -> Result<Self, WgpuError> {
        let (device, queue) = device::open(adapter)?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        // wgpu's default handler panics; record the error and fail the next call instead.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            lost.lock().unwrap_or_else(|p| p.into_inner()).push(format!("device lost ({reason:?}): {message}"));
        });
        let limits = device.limits();
        let many = limits.max_storage_buffers_per_shader_stage >= device::MANY_STORAGE_BUFFERS
            && limits.max_buffers_and_acceleration_structures_per_shader_stage > device::MANY_STORAGE_BUFFERS;
        let adam_per_dispatch = if many { kernels::ADAM_PER_DISPATCH } else { 1 };
        let squares_per_dispatch = if many { kernels::SQUARES_MANY_PER_DISPATCH } else { kernels::SQUARES_PER_DISPATCH };
        let fuse = limits.max_storage_buffers_per_shader_stage >= fusion::STORAGE_BUFFERS
            && limits.max_buffers_and_acceleration_structures_per_shader_stage > fusion::STORAGE_BUFFERS;
        let spare =
            device.create_buffer(&wgpu::BufferDescriptor { label: Some("spare"), size: 4, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        let counters = Counters::default();
        Counters::add(&counters.0.device_objects, 1);
        Ok(WgpuBackend {
            device,
            queue,
            adapter: device::summary(index, adapter),
            limits,
            buffers: Vec::new(),
            pipelines: Pipelines::new(),
            sites: HashMap::new(),
            pending: None,
            held: None,
            adam_per_dispatch,
            squares_per_dispatch,
            fuse,
            can_fuse: fuse,
            batch: 0,
            clock: 0,
            staging: None,
            host: Vec::new(),
            timer: None,
            errors,
            counters,
            spare,
        })
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// A handle on this backend's live counts (submissions, launch sites, device objects).
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    fn err(&self, message: impl Into<String>) -> BackendError {
        device_error(message.into())
    }

    /// Return (and clear) errors the uncaptured-error handler recorded.
    fn check_errors(&self) -> Result<(), BackendError> {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.drain(..).collect::<Vec<_>>().join("; ");
        Err(self.err(message))
    }

    fn buffer(&self, id: BufferId) -> Result<&GpuBuffer, BackendError> {
        self.buffers.get(id.0).ok_or_else(|| BackendError::UnknownBuffer(id, NAME.to_string()))
    }

    /// Check that `id` exists and holds exactly `need` values.
    fn check(&self, id: BufferId, need: usize, kernel: &str) -> Result<(), BackendError> {
        let have = self.buffer(id)?.len;
        if have != need {
            return Err(BackendError::BufferSize { backend: NAME.to_string(), kernel: kernel.to_string(), buffer: id, have, need });
        }
        Ok(())
    }

    /// Date a write of `id` (recorded or queued): launch sites that cache what they computed
    /// from it see that it changed.
    fn mark_written(&mut self, id: BufferId) {
        self.clock += 1;
        self.buffers[id.0].written = self.clock;
    }

    /// Fuse chains of launches into single dispatches (on by default, where the device has
    /// the storage bindings) or record every launch on its own: the numbers are the same
    /// either way on drivers that do not contract a multiply and an add into an FMA (see
    /// `kernels::fusion`); off is for checking that, and for comparing speeds.
    pub fn fuse_chains(&mut self, on: bool) -> Result<(), BackendError> {
        self.record_held()?;
        self.fuse = on && self.can_fuse;
        Ok(())
    }

    /// Submit the work recorded so far without waiting for it (benchmarks time the queueing
    /// apart from the run).
    pub fn submit_recorded(&mut self) -> Result<(), BackendError> {
        self.record_held()?;
        self.flush()
    }

    /// Record the held launches as one dispatch.
    fn record_held(&mut self) -> Result<(), BackendError> {
        match self.held.take() {
            None => Ok(()),
            Some(Held::Squares(h)) if h.grads.is_empty() => {
                let plan = kernels::plan_update(&Update::Zero { len: h.groups }).map_err(|m| self.err(m))?;
                self.record(&plan, update_slots(&Update::Zero { len: h.groups }, &[h.norm]))
            }
            Some(Held::Squares(h)) => {
                let lens: Vec<usize> = h.grads.iter().map(|g| g.1).collect();
                let plan = kernels::plan_squares(h.groups, &lens, h.from_zero).map_err(|m| self.err(m))?;
                let Some(step) = plan.steps[0] else { return Ok(()) };
                let mut slots = [None; SLOTS];
                // The entry point's bindings after y take the gradients in the order its
                // shader reads them (x0, x1, x2, and in the many one p1 to v2). An unused one
                // repeats the first gradient where it is read-only, the written sums where it
                // is read_write (a buffer may not be bound both ways in one dispatch); the
                // shader never reads either.
                let (_, _, bindings) = step.pipe.info();
                for (i, &b) in bindings.iter().filter(|&&b| b != Binding::Y).enumerate() {
                    let filler = if b.read_only() { h.grads[0].0 } else { h.norm };
                    slots[b.slot().expect("a buffer slot")] = Some(h.grads.get(i).map_or(filler, |g| g.0));
                }
                slots[Binding::Y.slot().expect("a buffer slot")] = Some(h.norm);
                self.record(&plan, slots)
            }
            Some(Held::Chain(chain)) => {
                if let Some((plan, slots)) = fusion::fused(&chain) {
                    return self.record(&plan, slots);
                }
                for l in chain {
                    self.record_launch(&l.kernel, &l.inputs, l.output)?;
                }
                Ok(())
            }
            Some(Held::Adam(h)) => {
                let first = h.params[0].2;
                let mut buffers = first.to_vec();
                buffers.extend(h.norm);
                let mut slots = update_slots(&h.first, &buffers);
                let more: Vec<(usize, usize)> = h.params[1..].iter().map(|p| (p.0, p.1)).collect();
                let plan = if more.is_empty() { kernels::plan_update(&h.first) } else { kernels::plan_adam_many(&h.first, &more) };
                let plan = plan.map_err(|m| self.err(m))?;
                if !more.is_empty() {
                    let p1 = Binding::P1.slot().expect("a buffer slot");
                    for b in 1..kernels::ADAM_PER_DISPATCH {
                        // A missing third repeats the second: bound, never touched.
                        let bufs = h.params.get(b).unwrap_or(&h.params[h.params.len() - 1]).2;
                        for (j, id) in bufs.into_iter().enumerate() {
                            slots[p1 + 4 * (b - 1) + j] = Some(id);
                        }
                    }
                }
                self.record(&plan, slots)
            }
        }
    }

    /// Hold an AccumulateSquares launch (checked by the caller), recording what was held
    /// before when it cannot join.
    fn hold_squares(&mut self, groups: usize, len: usize, grad: BufferId, norm: BufferId) -> Result<(), BackendError> {
        if len == 0 || groups == 0 {
            return Ok(()); // adds nothing
        }
        let joins = matches!(&self.held, Some(Held::Squares(h)) if h.norm == norm && h.groups == groups && h.grads.len() < self.squares_per_dispatch);
        if !joins {
            self.record_held()?;
            self.held = Some(Held::Squares(HeldSquares { groups, norm, grads: Vec::new(), from_zero: false }));
        }
        if let Some(Held::Squares(h)) = &mut self.held {
            h.grads.push((grad, len));
        }
        self.mark_written(norm);
        Ok(())
    }

    /// Hold an Adam update (checked by the caller; buffers [param, grad, m, v] and maybe the
    /// norm), recording what was held before when it cannot join: other settings, another
    /// norm, a full dispatch, or a buffer it shares with a held parameter.
    fn hold_adam(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        let Update::Adam { groups, len, .. } = *update else { unreachable!("called for Adam") };
        if len == 0 || groups == 0 {
            return Ok(()); // changes nothing
        }
        let own = [buffers[0], buffers[1], buffers[2], buffers[3]];
        let norm = buffers.get(4).copied();
        let joins = matches!(&self.held, Some(Held::Adam(h))
            if h.norm == norm
                && h.params.len() < self.adam_per_dispatch
                && same_settings(&h.first, update)
                && !h.params.iter().any(|p| p.2.iter().any(|b| own.contains(b))));
        if !joins {
            self.record_held()?;
            self.held = Some(Held::Adam(HeldAdam { first: update.clone(), norm, params: Vec::new() }));
        }
        if let Some(Held::Adam(h)) = &mut self.held {
            h.params.push((groups, len, own));
        }
        for &id in buffers {
            self.mark_written(id);
        }
        Ok(())
    }

    /// Record one launch as it is (checked by the caller).
    fn record_launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        let plan = kernels::plan_kernel(kernel).map_err(|m| self.err(m))?;
        let mut slots = [None; SLOTS];
        slots[Binding::Y as usize - 1] = Some(output);
        for (i, &id) in inputs.iter().enumerate() {
            slots[Binding::X0 as usize - 1 + i] = Some(id);
        }
        self.record(&plan, slots)
    }

    /// Submit recorded work, if any.
    fn flush(&mut self) -> Result<(), BackendError> {
        let Some(p) = self.pending.take() else { return Ok(()) };
        self.submit(p)
    }

    fn submit(&mut self, p: Pending) -> Result<(), BackendError> {
        let Pending { encoder, pass } = p;
        drop(pass);
        self.batch += 1;
        Counters::add(&self.counters.0.submissions, 1);
        let queue = &self.queue;
        scoped(&self.device, || {
            queue.submit([encoder.finish()]);
        })
        .map_err(|e| self.err(format!("submission failed: {e}")))
    }

    /// Workgroup grid for `n` workgroups: x up to the per-dimension limit, the rest in y.
    fn grid(&self, n: u64) -> Result<(u32, u32), BackendError> {
        let max = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        let x = n.min(max);
        let y = n.div_ceil(x.max(1));
        if y > max {
            return Err(self.err(format!("{n} workgroups exceed the device's {max} × {max} grid")));
        }
        Ok((x as u32, y as u32))
    }

    /// Record `plan` on the buffers in `slots` (Y, X0, X1, X2, S0, S1).
    fn record(&mut self, plan: &Plan, slots: [Option<BufferId>; SLOTS]) -> Result<(), BackendError> {
        let Some(first) = plan.steps[0] else { return Ok(()) };
        let mut key_words = plan.words;
        for (i, w) in key_words.iter_mut().enumerate() {
            if plan.dynamic & (1 << i) != 0 {
                *w = 0;
            }
        }
        let key = SiteKey { pipe: first.pipe, words: key_words, slots: slots.map(|s| s.map_or(u32::MAX, |b| b.0 as u32)) };
        if !self.sites.contains_key(&key) {
            let site = self.create_site(plan, &slots)?;
            let objects = 1 + site.dispatches.len() + site._scratch.is_some() as usize;
            Counters::add(&self.counters.0.device_objects, objects as u64);
            Counters::add(&self.counters.0.launch_sites, 1);
            self.sites.insert(key.clone(), site);
        }
        let (stale, recorded) = {
            let site = &self.sites[&key];
            (site.words != plan.words, site.last_batch == self.batch)
        };
        if stale {
            // Only hyper-parameters change here; a queued write would overtake the recorded
            // use of the old values, so submit those first.
            if recorded && self.pending.is_some() {
                self.flush()?;
            }
            self.queue.write_buffer(&self.sites[&key].uniform, 0, bytemuck::cast_slice(&plan.words));
        }
        if self.timer.as_ref().is_some_and(|t| t.full()) {
            self.read_timestamps()?;
        }
        let batch = self.batch;
        let pass = {
            let device = &self.device;
            let p = self.pending.get_or_insert_with(|| Pending {
                encoder: device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sparsevar step") }),
                pass: None,
            });
            p.pass.get_or_insert_with(|| {
                p.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kernels"), timestamp_writes: None }).forget_lifetime()
            })
        };
        let index_written = slots[Binding::X0 as usize - 1].map(|b| self.buffers[b.0].written);
        let site = self.sites.get_mut(&key).expect("inserted above");
        site.words = plan.words;
        site.last_batch = batch;
        let mut skip = 0;
        if first.pipe == Pipe::ScatterIndexShared {
            if site.sorted.is_some() && site.sorted == index_written {
                skip = 1;
            }
            site.sorted = index_written;
        }
        Counters::add(&self.counters.0.dispatches, (site.dispatches.len() - skip) as u64);
        let timed = self.timer.as_mut().and_then(|t| Some((t.next_pair()?, &t.query_set)));
        if let Some(((start, _), query_set)) = timed {
            pass.write_timestamp(query_set, start);
        }
        for (pipe, bind_group, (x, y)) in &site.dispatches[skip..] {
            let compiled = self.pipelines.get(&self.device, *pipe).map_err(device_error)?;
            pass.set_pipeline(&compiled.pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
        if let Some(((_, end), query_set)) = timed {
            pass.write_timestamp(query_set, end);
        }
        Ok(())
    }

    /// Uniform buffer, scratch and bind groups of a new launch site.
    fn create_site(&mut self, plan: &Plan, slots: &[Option<BufferId>; SLOTS]) -> Result<Site, BackendError> {
        let mut grids = Vec::new();
        for step in plan.steps.iter().flatten() {
            grids.push((step.pipe, self.grid(step.workgroups)?));
            // Compile now, outside the pass, so a shader error is reported here.
            self.pipelines.get(&self.device, step.pipe).map_err(device_error)?;
        }
        let device = &self.device;
        let buffers = &self.buffers;
        let spare = &self.spare;
        let pipelines = &mut self.pipelines;
        let result = scoped(device, || {
            use wgpu::util::DeviceExt;
            let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("launch parameters"),
                contents: bytemuck::cast_slice(&plan.words),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            let scratch = (plan.scratch_words > 0).then(|| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("scatter scratch"),
                    size: (plan.scratch_words * 4) as u64,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            });
            let mut dispatches = Vec::new();
            for (pipe, grid) in &grids {
                let (_, _, bindings) = pipe.info();
                let compiled = pipelines.get(device, *pipe).expect("compiled above");
                let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
                for &b in bindings {
                    let buffer = match (b.slot(), b.read_only()) {
                        (Some(s), _) if slots[s].is_some() => &buffers[slots[s].expect("checked").0].buffer,
                        // A binding the launch leaves empty (a single product's second operand
                        // and output): never touched, but bound. Read-only, the first input
                        // again; written, a spare buffer bound nowhere else.
                        (Some(_), true) => &buffers[slots[Binding::X0.slot().expect("a buffer slot")].expect("launches bind x0").0].buffer,
                        (Some(_), false) => spare,
                        (None, _) => scratch.as_ref().expect("scatter plans have scratch"),
                    };
                    entries.push(wgpu::BindGroupEntry { binding: b as u32, resource: buffer.as_entire_binding() });
                }
                let bind_group =
                    device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(pipe.info().1), layout: &compiled.layout, entries: &entries });
                dispatches.push((*pipe, bind_group, *grid));
            }
            Site { uniform, words: plan.words, dispatches, last_batch: u64::MAX, sorted: None, _scratch: scratch }
        });
        result.map_err(|e| self.err(format!("cannot set up a launch: {e}")))
    }

    /// Submit the recorded work with `prepare` encoded after it and a copy of `bytes` of
    /// `source` into the staging buffer, wait, and hand the copied bytes to `take`.
    fn read_back<T>(
        &mut self,
        source: &wgpu::Buffer,
        bytes: u64,
        what: &str,
        prepare: impl FnOnce(&mut wgpu::CommandEncoder),
        take: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, BackendError> {
        let staging = self.staging(bytes)?;
        let mut p = self.pending.take().unwrap_or_else(|| Pending {
            encoder: self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read-back") }),
            pass: None,
        });
        drop(p.pass.take());
        prepare(&mut p.encoder);
        p.encoder.copy_buffer_to_buffer(source, 0, &staging, 0, bytes);
        self.submit(p)?;
        let slice = staging.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.err(format!("read-back of {what} failed: {e}"))),
            Err(_) => return Err(self.err(format!("read-back of {what} did not complete"))),
        }
        let value = {
            let view = slice.get_mapped_range().map_err(|e| self.err(format!("read-back of {what}: {e}")))?;
            take(&view)
        };
        staging.unmap();
        Ok(value)
    }

    /// Submit the recorded work, then resolve and read back its launch timestamps into the
    /// timer's totals.
    fn read_timestamps(&mut self) -> Result<(), BackendError> {
        let Some(t) = &self.timer else { return Ok(()) };
        let queries = 2 * t.pending.len() as u32;
        if queries == 0 {
            return Ok(());
        }
        let (query_set, resolved) = (t.query_set.clone(), t.resolved.clone());
        let ticks = self.read_back(
            &resolved,
            u64::from(queries) * 8,
            "launch timestamps",
            |encoder| encoder.resolve_query_set(&query_set, 0..queries, &resolved, 0),
            |bytes| bytemuck::cast_slice::<u8, u64>(bytes).to_vec(),
        )?;
        let period = f64::from(self.queue.get_timestamp_period());
        self.timer.as_mut().expect("checked above").add(&ticks, period);
        self.check_errors()
    }

    /// Make sure a staging buffer of at least `bytes` exists.
    fn staging(&mut self, bytes: u64) -> Result<wgpu::Buffer, BackendError> {
        if let Some(s) = &self.staging
            && s.size() >= bytes
        {
            return Ok(s.clone());
        }
        let size = bytes.next_power_of_two().max(256);
        let device = &self.device;
        let s = scoped(device, || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .map_err(|e| self.err(format!("cannot allocate a {size}-byte read-back buffer: {e}")))?;
        self.staging = Some(s.clone());
        Counters::add(&self.counters.0.device_objects, 1);
        Ok(s)
    }

    fn wait(&self) -> Result<(), BackendError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| self.err(format!("waiting for the device: {e}")))?;
        Ok(())
    }
}

/// Two Adam updates that differ at most in their sizes (one dispatch can run both).
fn same_settings(a: &Update, b: &Update) -> bool {
    let settings = |u: &Update| match *u {
        Update::Adam { lr, beta1, beta2, eps, weight_decay, bias1, bias2, clip, .. } => Some((lr, beta1, beta2, eps, weight_decay, bias1, bias2, clip)),
        _ => None,
    };
    settings(a).is_some() && settings(a) == settings(b)
}

fn device_error(message: String) -> BackendError {
    BackendError::Device { backend: NAME.to_string(), message }
}

/// Buffer slots of an update's buffers (in `Update::lengths` order). A missing norm buffer
/// is bound as the gradient again: the binding must exist, the shader never reads it.
fn update_slots(update: &Update, b: &[BufferId]) -> [Option<BufferId>; SLOTS] {
    const Y: usize = Binding::Y as usize - 1;
    const X0: usize = Binding::X0 as usize - 1;
    const X1: usize = Binding::X1 as usize - 1;
    const S0: usize = Binding::S0 as usize - 1;
    const S1: usize = Binding::S1 as usize - 1;
    let mut s = [None; SLOTS];
    match update {
        Update::Zero { .. } => s[Y] = Some(b[0]),
        Update::ScaleToBall { .. } => {
            s[Y] = Some(b[0]);
            s[X0] = Some(b[1]);
        }
        // Recorded by `record_held`, which binds up to three gradients.
        Update::AccumulateSquares { .. } => {
            s[X0] = Some(b[0]);
            s[Y] = Some(b[1]);
        }
        Update::Adam { .. } => {
            s[Y] = Some(b[0]);
            s[X0] = Some(b[1]);
            s[S0] = Some(b[2]);
            s[S1] = Some(b[3]);
            s[X1] = Some(*b.get(4).unwrap_or(&b[1]));
        }
        Update::Sgd { .. } => {
            s[Y] = Some(b[0]);
            s[X0] = Some(b[1]);
            s[S0] = Some(b[2]);
            s[X1] = Some(*b.get(3).unwrap_or(&b[1]));
        }
    }
    s
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        NAME.to_string()
    }

    fn free(&mut self, buf: BufferId) -> Result<(), BackendError> {
        self.record_held()?;
        self.buffer(buf)?;
        // Recorded work may still bind it: submit that first. Launch sites that bind it go
        // too (their bind groups would keep the memory alive).
        self.flush()?;
        let id = buf.0 as u32;
        self.sites.retain(|key, _| !key.slots.contains(&id));
        let b = &mut self.buffers[buf.0];
        b.buffer.destroy();
        // Length 0: every later use fails its size check.
        b.len = 0;
        Ok(())
    }

    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError> {
        self.check_errors()?;
        let bytes = (len.max(1) as u64).saturating_mul(4);
        let max = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(self.err(format!("a buffer of {len} values ({} MiB) exceeds the adapter's {} MiB storage binding limit", bytes >> 20, max >> 20)));
        }
        let device = &self.device;
        // New buffers are zeroed by wgpu, as the trait requires.
        let buffer = scoped(device, || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .map_err(|e| self.err(format!("cannot allocate {len} values: {e}")))?;
        self.buffers.push(GpuBuffer { buffer, len, written: 0 });
        Counters::add(&self.counters.0.device_objects, 1);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError> {
        self.record_held()?;
        self.check_errors()?;
        self.check(buf, data.len(), "write")?;
        if data.is_empty() {
            return Ok(());
        }
        // queue.write_buffer runs before everything in the next submission, so work recorded
        // so far must go first.
        self.flush()?;
        self.mark_written(buf);
        self.host.clear();
        self.host.extend(data.iter().map(|&v| v as f32));
        self.queue.write_buffer(&self.buffers[buf.0].buffer, 0, bytemuck::cast_slice(&self.host));
        Ok(())
    }

    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        self.record_held()?;
        self.check_errors()?;
        let len = self.buffer(buf)?.len;
        out.clear();
        if len == 0 {
            return self.flush();
        }
        let source = self.buffers[buf.0].buffer.clone();
        self.read_back(
            &source,
            (len * 4) as u64,
            &format!("{buf:?}"),
            |_| {},
            |bytes| {
                out.extend(bytemuck::cast_slice::<u8, f32>(bytes).iter().map(|&v| f64::from(v)));
            },
        )?;
        self.check_errors()
    }

    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        self.check_errors()?;
        let name = kernel.name();
        if inputs.len() != kernel.arity() {
            return Err(self.err(format!("{name} takes {} inputs, got {}", kernel.arity(), inputs.len())));
        }
        let (in_lens, out_len) = kernel.lengths();
        for (&id, &need) in inputs.iter().zip(&in_lens) {
            self.check(id, need, name)?;
        }
        self.check(output, out_len, name)?;
        if inputs.contains(&output) {
            return Err(self.err(format!("{name}: output {output:?} aliases an input")));
        }
        if let Some(Held::Chain(chain)) = &mut self.held {
            chain.push(Launch { kernel: kernel.clone(), inputs: inputs.to_vec(), output });
            match fusion::fit(chain) {
                Fit::Whole(plan, slots) => {
                    self.held = None;
                    self.mark_written(output);
                    return self.record(&plan, slots);
                }
                Fit::Start => {
                    self.mark_written(output);
                    return Ok(());
                }
                Fit::No => drop(chain.pop()),
            }
        }
        self.record_held()?;
        self.mark_written(output);
        // Most launches start no chain: they are recorded without a copy of their arguments.
        if self.fuse && fusion::may_start(kernel) {
            let launch = Launch { kernel: kernel.clone(), inputs: inputs.to_vec(), output };
            if matches!(fusion::fit(std::slice::from_ref(&launch)), Fit::Start) {
                self.held = Some(Held::Chain(vec![launch]));
                return Ok(());
            }
        }
        self.record_launch(kernel, inputs, output)
    }

    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        self.check_errors()?;
        let name = update.name();
        let lens = update.lengths();
        if buffers.len() != lens.len() {
            return Err(self.err(format!("{name} takes {} buffers, got {}", lens.len(), buffers.len())));
        }
        for (&id, &need) in buffers.iter().zip(&lens) {
            self.check(id, need, name)?;
        }
        for (i, id) in buffers.iter().enumerate() {
            if buffers[..i].contains(id) {
                return Err(self.err(format!("{name}: buffer {id:?} passed twice")));
            }
        }
        if let Update::AccumulateSquares { groups, len } = *update {
            return self.hold_squares(groups, len, buffers[0], buffers[1]);
        }
        if let Update::Zero { len } = *update
            && len > 0
        {
            // The sums of squares that a clipped step starts with: the first sums join it.
            self.record_held()?;
            self.held = Some(Held::Squares(HeldSquares { groups: len, norm: buffers[0], grads: Vec::new(), from_zero: true }));
            self.mark_written(buffers[0]);
            return Ok(());
        }
        if matches!(update, Update::Adam { .. }) && self.adam_per_dispatch > 1 {
            return self.hold_adam(update, buffers);
        }
        self.record_held()?;
        let plan = kernels::plan_update(update).map_err(|m| self.err(m))?;
        self.record(&plan, update_slots(update, buffers))?;
        // Updates write some of their buffers; dating them all is simpler and safe.
        for &id in buffers {
            self.mark_written(id);
        }
        Ok(())
    }

    fn time_launches_as(&mut self, label: Option<&str>) -> Result<bool, BackendError> {
        let needs = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !self.device.features().contains(needs) {
            return Ok(false);
        }
        // Held launches were made under the label before.
        self.record_held()?;
        let device = &self.device;
        let timer = match &mut self.timer {
            Some(t) => t,
            None => {
                let t = scoped(device, || timing::Timer::new(device)).map_err(|e| self.err(format!("cannot set up launch timing: {e}")))?;
                Counters::add(&self.counters.0.device_objects, 2);
                self.timer.insert(t)
            }
        };
        timer.label = label.map(str::to_string);
        Ok(true)
    }

    fn launch_times(&mut self) -> Result<Vec<(String, u64, f64)>, BackendError> {
        self.record_held()?;
        self.read_timestamps()?;
        let totals = self.timer.as_mut().map(|t| std::mem::take(&mut t.totals)).unwrap_or_default();
        Ok(totals.into_iter().map(|(label, (calls, seconds))| (label, calls, seconds)).collect())
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        self.record_held()?;
        self.check_errors()?;
        self.flush()?;
        self.wait()?;
        self.check_errors()
    }
}
