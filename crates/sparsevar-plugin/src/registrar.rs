//! What a plugin registers into: the [`Registrar`] the host hands to a plugin's register
//! function, and the [`Plugin`] descriptor [`export_plugin!`](crate::export_plugin) writes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use sparsevar_core::attention::Attention;
use sparsevar_core::backend::{Backend, BackendError};
use sparsevar_core::registry::{AttentionFactory, BackendFactory, TaskFactory};
use sparsevar_core::task::{Task, TaskError, TaskSpec};

use crate::guard;

/// Where a plugin's guards record every fault they catch (a panic, an error from
/// [`Task::sample`], a label outside the task's classes, …), including those of methods that
/// cannot return an error (`describe`, `clean_label`, `Backend::name`). Implemented by the
/// host, whose log the trainer reads through the registry's fault probe; a plugin never
/// calls it directly.
pub trait FaultSink: Send + Sync {
    /// Record that `what` (e.g. "Task::sample of task `x`") went wrong: `message` says how
    /// (e.g. "panicked: index out of bounds").
    fn record(&self, what: &str, message: &str);
}

/// A task factory whose calls, and every method of the tasks it makes, run under the
/// plugin's panic guard. Only `<dyn Registrar>::task` can make one (its field is private),
/// so nothing unguarded reaches the host.
pub struct GuardedTaskFactory(pub(crate) TaskFactory);
/// An attention factory whose variants run under the plugin's panic guard (made by
/// `<dyn Registrar>::attention` only).
pub struct GuardedAttentionFactory(pub(crate) AttentionFactory);
/// A backend factory whose backends run under the plugin's panic guard (made by
/// `<dyn Registrar>::backend` only).
pub struct GuardedBackendFactory(pub(crate) BackendFactory);

/// The host's side of registration: a plugin's register function receives
/// `&mut dyn Registrar` and adds its names with `r.task(name, factory)`,
/// `r.attention(name, factory)` and `r.backend(name, factory)` (the methods on
/// `dyn Registrar` below).
///
/// Names are the only identity: a config asks for `task.kind: <name>`,
/// `model.attention: <name>` or `backend: <name>`. A name that is already taken (by a
/// built-in or another plugin) makes the whole plugin fail to load with
/// [`PluginError::Duplicate`](crate::PluginError::Duplicate); nothing of a plugin that fails is
/// registered.
///
/// The trait's own methods are the host's; plugins call the generic methods on
/// `dyn Registrar`, which wrap what they are given in guards compiled into the plugin (see
/// the crate docs: a panic can only be caught by the copy of std that raised it).
pub trait Registrar {
    /// The plugin file (or, for a statically linked plugin, the name) being registered;
    /// guards put it into every error they produce.
    fn origin(&self) -> &str;
    /// Where guards report faults of methods that cannot fail.
    fn fault_sink(&self) -> Arc<dyn FaultSink>;
    /// Add a guarded task factory (use `<dyn Registrar>::task`).
    fn add_task(&mut self, name: &str, make: GuardedTaskFactory);
    /// Add a guarded attention factory (use `<dyn Registrar>::attention`).
    fn add_attention(&mut self, name: &str, make: GuardedAttentionFactory);
    /// Add a guarded backend factory (use `<dyn Registrar>::backend`).
    fn add_backend(&mut self, name: &str, make: GuardedBackendFactory);
}

impl dyn Registrar + '_ {
    /// Register a task kind: `make(spec, member_seed)` builds one ensemble member's task
    /// from the config's `task:` section, or says what is wrong with it
    /// (`TaskError::invalid("task.params.alphabet must be …")`: name the key). Options
    /// beyond [`TaskSpec`]'s fields arrive in `spec.params`; reject the ones you do not know.
    pub fn task<F>(&mut self, name: &str, make: F)
    where
        F: Fn(&TaskSpec, u64) -> Result<Box<dyn Task>, TaskError> + Send + Sync + 'static,
    {
        let f = guard::task_factory(name, guard::Ctx::new(self), make);
        self.add_task(name, GuardedTaskFactory(f));
    }

    /// Register an attention variant: `make()` returns a fresh one (it is called once per
    /// model built).
    pub fn attention<F>(&mut self, name: &str, make: F)
    where
        F: Fn() -> Box<dyn Attention> + Send + Sync + 'static,
    {
        let f = guard::attention_factory(name, guard::Ctx::new(self), make);
        self.add_attention(name, GuardedAttentionFactory(f));
    }

    /// Register a backend: `make()` returns a fresh one, or says why it cannot
    /// (`BackendError::Device { .. }`: no device, …).
    pub fn backend<F>(&mut self, name: &str, make: F)
    where
        F: Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync + 'static,
    {
        let f = guard::backend_factory(name, guard::Ctx::new(self), make);
        self.add_backend(name, GuardedBackendFactory(f));
    }
}

/// A plugin as a value: what [`export_plugin!`](crate::export_plugin) exports as
/// `pub const PLUGIN`, and what [`PluginHost::register_static`](crate::PluginHost::register_static)
/// takes to link a plugin without the loader.
#[derive(Clone, Copy, Debug)]
pub struct Plugin {
    /// The plugin's name (its package name by default).
    pub name: &'static str,
    /// The plugin's version.
    pub version: &'static str,
    /// The plugin's register function.
    pub register: fn(&mut dyn Registrar),
}

impl Plugin {
    /// Run `register` under `catch_unwind`, returning the panic message if it panics. The
    /// exported entry point calls this, so the catching happens in the plugin's copy of std.
    pub fn run_register(register: fn(&mut dyn Registrar), r: &mut dyn Registrar) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| register(r))).map_err(|p| guard::panic_message(p.as_ref()))
    }
}
