//! The guards: every call from the host into plugin code runs under `catch_unwind` here.
//!
//! This code is compiled into each plugin (the plugin links its own copy of this crate) and
//! installed by the generic [`Registrar`](crate::Registrar) methods the plugin calls, so a
//! panic is caught by the copy of std that raised it. A host-side `catch_unwind` could not
//! do it: to the host's std a plugin's panic is a foreign exception, and it aborts.
//!
//! Tasks and attention variants are immutable (`&self` methods only), so the guards share
//! the plugin's object through an `Arc`: cloning a guard never calls plugin code. A task's
//! shape (name, `T`, alphabet, classes, `S`) is read once, under the guard, when it is made
//! and checked for sense; `sample` and `clean_label` results are checked on every call.
//!
//! Nothing is ever substituted for what a plugin failed to produce: a call that can fail
//! returns an error naming the plugin file, the call and what happened
//! ([`PluginFault`]); every fault is also recorded in the host's fault log, which the
//! trainer reads at every evaluation through the registry's fault probe, so a fault in a
//! call without an error channel (`describe`, `clean_label`, `Backend::name`) stops the run
//! too.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use sparsevar_core::attention::{Attention, AttentionError};
use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, MemberLaunch, MemberUpdate, Update};
use sparsevar_core::fault::PluginFault;
use sparsevar_core::graph::{Graph, NodeId};
use sparsevar_core::registry::{AttentionFactory, BackendFactory, TaskFactory};
use sparsevar_core::rng::Pcg32;
use sparsevar_core::task::{Task, TaskError, TaskSpec};

use crate::registrar::{FaultSink, Registrar};

/// The text of a panic payload (`&str` or `String`; anything else is "non-string payload").
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic with a non-string payload)".to_string()
    }
}

/// Run `f`, turning a panic into its message.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// Drop `x` (running plugin `Drop` code) without letting a panic escape.
fn guarded_drop<T>(x: T) {
    let _ = guarded(move || drop(x));
}

/// What every guard of one plugin shares: the plugin's origin and the host's fault sink.
pub(crate) struct Ctx {
    origin: String,
    sink: Arc<dyn FaultSink>,
}

impl Ctx {
    pub(crate) fn new(r: &dyn Registrar) -> Arc<Self> {
        Arc::new(Ctx { origin: r.origin().to_string(), sink: r.fault_sink() })
    }

    /// Record a fault in the host's log and return it, to go into an error; it reads e.g.
    /// "plugin libx.so: Task::sample of task `t` panicked: boom".
    fn fault(&self, call: &str, message: &str) -> PluginFault {
        self.sink.record(call, message);
        PluginFault { plugin: self.origin.clone(), call: call.to_string(), message: message.to_string() }
    }
}

// ---------------------------------------------------------------------------------------
// Tasks

/// A task's shape, read once under the guard when it is made.
struct TaskShape {
    name: String,
    seq_len: usize,
    alphabet: usize,
    num_classes: usize,
    relevant: Vec<usize>,
}

/// A plugin's task behind the guard.
#[derive(Clone)]
struct GuardedTask {
    /// `None` only while dropping.
    inner: Option<Arc<dyn Task>>,
    shape: Arc<TaskShape>,
    ctx: Arc<Ctx>,
}

impl GuardedTask {
    /// Read and check the task's shape; a panic or nonsense becomes an error.
    fn new(registered: &str, task: Box<dyn Task>, ctx: Arc<Ctx>) -> Result<Self, TaskError> {
        let what = format!("task `{registered}`");
        let read = guarded(|| TaskShape {
            name: task.name().to_string(),
            seq_len: task.seq_len(),
            alphabet: task.alphabet(),
            num_classes: task.num_classes(),
            relevant: task.relevant().to_vec(),
        });
        let shape = match read {
            Ok(s) => s,
            Err(msg) => {
                let e = ctx.fault(&what, &format!("panicked while describing itself: {msg}"));
                guarded_drop(task);
                return Err(e.into());
            }
        };
        let bad = if shape.seq_len == 0 {
            Some("has seq_len() = 0".to_string())
        } else if !(1..=256).contains(&shape.alphabet) {
            Some(format!("has alphabet() = {}: tokens are u8, so it must be in 1..=256", shape.alphabet))
        } else if !(1..=256).contains(&shape.num_classes) {
            Some(format!("has num_classes() = {}: labels are u8, so it must be in 1..=256", shape.num_classes))
        } else if shape.relevant.windows(2).any(|w| w[0] >= w[1]) || shape.relevant.iter().any(|&i| i >= shape.seq_len) {
            Some(format!("has relevant() = {:?}: it must be sorted, distinct and below T = {}", shape.relevant, shape.seq_len))
        } else {
            None
        };
        if let Some(b) = bad {
            guarded_drop(task);
            return Err(ctx.fault(&what, &b).into());
        }
        Ok(GuardedTask { inner: Some(Arc::from(task)), shape: Arc::new(shape), ctx })
    }

    fn inner(&self) -> &dyn Task {
        self.inner.as_deref().expect("present until dropped")
    }

    fn what(&self, method: &str) -> String {
        format!("Task::{method} of task `{}`", self.shape.name)
    }
}

impl Drop for GuardedTask {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            guarded_drop(inner);
        }
    }
}

impl fmt::Debug for GuardedTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginTask").field("name", &self.shape.name).field("plugin", &self.ctx.origin).finish()
    }
}

impl Task for GuardedTask {
    fn name(&self) -> &str {
        &self.shape.name
    }
    fn seq_len(&self) -> usize {
        self.shape.seq_len
    }
    fn alphabet(&self) -> usize {
        self.shape.alphabet
    }
    fn num_classes(&self) -> usize {
        self.shape.num_classes
    }
    fn relevant(&self) -> &[usize] {
        &self.shape.relevant
    }

    /// No error channel: a fault is recorded (the trainer's fault probe stops the run at
    /// its next evaluation) and 0 returned to the caller, which is never a trainer.
    fn clean_label(&self, tokens: &[u8]) -> u8 {
        match guarded(|| self.inner().clean_label(tokens)) {
            Ok(y) if (y as usize) < self.shape.num_classes => y,
            Ok(y) => {
                self.ctx.fault(&self.what("clean_label"), &format!("returned label {y}, outside 0..{}", self.shape.num_classes));
                0
            }
            Err(msg) => {
                self.ctx.fault(&self.what("clean_label"), &format!("panicked: {msg}"));
                0
            }
        }
    }

    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        let problem = match guarded(|| self.inner().sample(rng, tokens)) {
            Ok(Ok(y)) => {
                let a = self.shape.alphabet;
                if (y as usize) >= self.shape.num_classes {
                    format!("returned label {y}, outside 0..{}", self.shape.num_classes)
                } else if let Some(&t) = tokens.iter().find(|&&t| t as usize >= a) {
                    format!("wrote token {t}, outside the alphabet 0..{a}")
                } else {
                    return Ok(y);
                }
            }
            Ok(Err(e)) => format!("returned an error: {e}"),
            Err(msg) => format!("panicked: {msg}"),
        };
        Err(self.ctx.fault(&self.what("sample"), &problem).into())
    }

    /// No error channel: a panic is recorded as a fault of "Task::describe of task `…`"
    /// (the trainer's fault probe stops the run at its next evaluation).
    fn describe(&self) -> String {
        guarded(|| self.inner().describe()).unwrap_or_else(|msg| {
            self.ctx.fault(&self.what("describe"), &format!("panicked: {msg}"));
            format!("{} (describe panicked)", self.shape.name)
        })
    }
}

/// Wrap a plugin's task factory: panics become errors, tasks come back guarded.
pub(crate) fn task_factory<F>(name: &str, ctx: Arc<Ctx>, make: F) -> TaskFactory
where
    F: Fn(&TaskSpec, u64) -> Result<Box<dyn Task>, TaskError> + Send + Sync + 'static,
{
    let name = name.to_string();
    Arc::new(move |spec: &TaskSpec, seed: u64| match guarded(|| make(spec, seed)) {
        Ok(Ok(task)) => Ok(Box::new(GuardedTask::new(&name, task, ctx.clone())?) as Box<dyn Task>),
        // The factory's own refusal (usually a config error naming the key) passes as is.
        Ok(Err(e)) => Err(e),
        Err(msg) => Err(ctx.fault(&format!("the factory of task `{name}`"), &format!("panicked: {msg}")).into()),
    })
}

// ---------------------------------------------------------------------------------------
// Attention variants

/// A plugin's attention variant behind the guard.
#[derive(Clone)]
struct GuardedAttention {
    /// `None` only while dropping.
    inner: Option<Arc<dyn Attention>>,
    name: String,
    selects: bool,
    ctx: Arc<Ctx>,
}

impl Drop for GuardedAttention {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            guarded_drop(inner);
        }
    }
}

impl fmt::Debug for GuardedAttention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginAttention").field("name", &self.name).field("plugin", &self.ctx.origin).finish()
    }
}

impl Attention for GuardedAttention {
    fn name(&self) -> &str {
        &self.name
    }

    fn weights(&self, g: &mut Graph, scores: NodeId, head_dim: usize) -> Result<NodeId, AttentionError> {
        let what = format!("Attention::weights of `{}`", self.name);
        let inner = self.inner.as_deref().ok_or_else(|| self.ctx.fault(&what, "called while dropping"))?;
        let problem = match guarded(|| inner.weights(g, scores, head_dim)) {
            Ok(Ok(w)) if w.0 < g.nodes().len() && g.shape(w) == g.shape(scores) => return Ok(w),
            Ok(Ok(w)) => {
                let got = g.nodes().get(w.0).map(|n| format!("{:?}", n.shape)).unwrap_or_else(|| "no such node".into());
                format!("returned a node of shape {got} for scores of shape {:?}", g.shape(scores))
            }
            Ok(Err(e)) => format!("returned an error: {e}"),
            Err(msg) => format!("panicked: {msg}"),
        };
        Err(self.ctx.fault(&what, &problem).into())
    }

    fn selects(&self) -> bool {
        self.selects
    }
}

/// Wrap a plugin's attention factory: a panic (in the factory or in `selects`) becomes an
/// error naming the plugin, variants come back guarded.
pub(crate) fn attention_factory<F>(name: &str, ctx: Arc<Ctx>, make: F) -> AttentionFactory
where
    F: Fn() -> Box<dyn Attention> + Send + Sync + 'static,
{
    let name = name.to_string();
    Arc::new(move || {
        let made = guarded(|| {
            let a = make();
            let selects = a.selects();
            (a, selects)
        });
        match made {
            Ok((a, selects)) => {
                Ok(Box::new(GuardedAttention { inner: Some(Arc::from(a)), name: name.clone(), selects, ctx: ctx.clone() }) as Box<dyn Attention>)
            }
            Err(msg) => Err(ctx.fault(&format!("the factory of attention variant `{name}`"), &format!("panicked: {msg}")).into()),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Backends

/// A plugin's backend behind the guard. After a panic its state is unknown, so it is
/// poisoned: every later call fails with the first panic's message.
struct GuardedBackend {
    inner: Option<Box<dyn Backend>>,
    name: String,
    poisoned: Option<String>,
    ctx: Arc<Ctx>,
}

impl Drop for GuardedBackend {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            guarded_drop(inner);
        }
    }
}

impl GuardedBackend {
    fn call<R>(&mut self, method: &str, f: impl FnOnce(&mut dyn Backend) -> Result<R, BackendError>) -> Result<R, BackendError> {
        let device = |message: String| BackendError::Device { backend: self.name.clone(), message };
        if let Some(p) = &self.poisoned {
            return Err(device(format!("unusable after an earlier panic: {p}")));
        }
        let Some(inner) = self.inner.as_deref_mut() else { return Err(device("dropped".into())) };
        match guarded(|| f(inner)) {
            Ok(r) => r,
            Err(msg) => {
                let e = self.ctx.fault(&format!("Backend::{method} of backend `{}`", self.name), &format!("panicked: {msg}")).to_string();
                self.poisoned = Some(e.clone());
                Err(BackendError::Device { backend: self.name.clone(), message: e })
            }
        }
    }
}

impl Backend for GuardedBackend {
    fn name(&self) -> String {
        match self.inner.as_deref() {
            Some(inner) if self.poisoned.is_none() => guarded(|| inner.name()).unwrap_or_else(|msg| {
                self.ctx.fault(&format!("Backend::name of backend `{}`", self.name), &format!("panicked: {msg}"));
                self.name.clone()
            }),
            _ => self.name.clone(),
        }
    }
    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError> {
        self.call("alloc", |b| b.alloc(len))
    }
    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError> {
        self.call("write", |b| b.write(buf, data))
    }
    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        self.call("read", |b| b.read(buf, out))
    }
    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        self.call("launch", |b| b.launch(kernel, inputs, output))
    }
    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        self.call("update", |b| b.update(update, buffers))
    }
    fn sync(&mut self) -> Result<(), BackendError> {
        self.call("sync", |b| b.sync())
    }
    // Passed through, or a plugin backend that runs members one by one would silently get the
    // default (whole-ensemble launches) behind the guard.
    fn run_members(&mut self, members: usize, launches: &[MemberLaunch], updates: &[MemberUpdate]) -> Result<bool, BackendError> {
        self.call("run_members", |b| b.run_members(members, launches, updates))
    }
    fn free(&mut self, buf: BufferId) -> Result<(), BackendError> {
        self.call("free", |b| b.free(buf))
    }
    fn time_launches_as(&mut self, label: Option<&str>) -> Result<bool, BackendError> {
        self.call("time_launches_as", |b| b.time_launches_as(label))
    }
    fn launch_times(&mut self) -> Result<Vec<(String, u64, f64)>, BackendError> {
        self.call("launch_times", |b| b.launch_times())
    }
}

/// Wrap a plugin's backend factory: panics become errors, backends come back guarded.
pub(crate) fn backend_factory<F>(name: &str, ctx: Arc<Ctx>, make: F) -> BackendFactory
where
    F: Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync + 'static,
{
    let name = name.to_string();
    Arc::new(move || match guarded(&make) {
        Ok(Ok(b)) => Ok(Box::new(GuardedBackend { inner: Some(b), name: name.clone(), poisoned: None, ctx: ctx.clone() }) as Box<dyn Backend>),
        Ok(Err(e)) => Err(e),
        Err(msg) => {
            let e = ctx.fault(&format!("the factory of backend `{name}`"), &format!("panicked: {msg}"));
            Err(BackendError::Device { backend: name.clone(), message: e.to_string() })
        }
    })
}
