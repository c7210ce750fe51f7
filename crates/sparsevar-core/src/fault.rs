//! Faults of extension code: what a plugin's task, attention variant or backend did wrong.
//!
//! A fault is never papered over with a substitute value. Calls that can fail return a
//! [`PluginFault`] inside their error ([`crate::task::TaskError::Fault`],
//! [`crate::attention::AttentionError::Fault`]); calls that cannot (a task's `describe`, a
//! backend's `name`, a kernel whose failure only shows later) record the fault where a
//! [`FaultProbe`] sees it, and the trainer asks the registry's probes at every evaluation
//! ([`crate::registry::Registry::faults_since`]), so no front end can forget to look.

/// One fault: which plugin, which call, what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin}: {call} {message}")]
pub struct PluginFault {
    /// The plugin file (or, for a statically linked plugin, its name).
    pub plugin: String,
    /// The call, e.g. "Task::sample of task `x`".
    pub call: String,
    /// What happened, e.g. "panicked: boom" or "failed: the table is empty".
    pub message: String,
}

/// Where faults of calls without an error channel can be seen. The plugin host installs
/// one per plugin into the [`Registry`](crate::registry::Registry).
pub trait FaultProbe: Send + Sync {
    /// How many faults were recorded so far (it only grows).
    fn count(&self) -> u64;
    /// The most recent fault, if any.
    fn latest(&self) -> Option<PluginFault>;
}
