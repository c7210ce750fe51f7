//! The registry: every task, attention variant and backend the host knows, by name.
//!
//! Built-ins are registered by [`Registry::builtin`]; plugins add theirs at load time. Names
//! are the only identity (never `TypeId`), so a plugin's task is used from a config exactly
//! like a built-in one. Each entry remembers where it came from, for listings and errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::attention::{Attention, AttentionError, BUILTIN_ATTENTION, builtin_attention};
use crate::backend::{Backend, BackendError};
use crate::fault::{FaultProbe, PluginFault};
use crate::task::{BUILTIN_TASKS, Task, TaskError, TaskSpec, build_task};

/// Builds a member's task from the config section and the member seed.
pub type TaskFactory = Arc<dyn Fn(&TaskSpec, u64) -> Result<Box<dyn Task>, TaskError> + Send + Sync>;
/// Makes a fresh attention variant.
pub type AttentionFactory = Arc<dyn Fn() -> Result<Box<dyn Attention>, AttentionError> + Send + Sync>;
/// Makes a fresh backend.
pub type BackendFactory = Arc<dyn Fn() -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

/// Why the registry could not make what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No task of that kind is registered.
    #[error("unknown task kind `{kind}`; known kinds: {known}")]
    UnknownTask {
        /// The kind asked for.
        kind: String,
        /// The registered kinds, comma-separated.
        known: String,
    },
    /// No attention variant of that name is registered.
    #[error("model.attention `{name}` is unknown; known variants: {known}")]
    UnknownAttention {
        /// The name asked for.
        name: String,
        /// The registered variants, comma-separated.
        known: String,
    },
    /// No backend of that name is registered.
    #[error("backend `{name}` is unknown; available backends: {known}")]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The registered backends, comma-separated.
        known: String,
    },
    /// The task's factory refused the config or faulted.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The attention variant's factory faulted.
    #[error(transparent)]
    Attention(#[from] AttentionError),
    /// The backend could not be made (no device, a plugin fault, …).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl RegistryError {
    /// Whether the error is about the user's input (an unknown name, a task config the
    /// task refuses) rather than a failure of the machine or of plugin code.
    pub fn is_user_input(&self) -> bool {
        match self {
            RegistryError::UnknownTask { .. } | RegistryError::UnknownAttention { .. } | RegistryError::UnknownBackend { .. } => true,
            RegistryError::Task(e) => e.is_config_error(),
            RegistryError::Attention(_) | RegistryError::Backend(_) => false,
        }
    }
}

/// A position in the registry's fault record ([`Registry::fault_mark`]): faults recorded
/// after it are new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultMark(Vec<u64>);

/// One registered name: where it came from and how to make it.
#[derive(Clone)]
pub struct Entry<F> {
    /// "built-in" or the plugin file that registered it.
    pub origin: String,
    pub make: F,
}

impl<F> std::fmt::Debug for Entry<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({})", self.origin)
    }
}

/// A name registered twice.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} `{name}` from {new_origin} is already registered by {old_origin}; rename one of them")]
pub struct DuplicateName {
    pub what: &'static str,
    pub name: String,
    pub old_origin: String,
    pub new_origin: String,
}

/// Every task, attention variant and backend by name, and the probes that see faults of
/// the plugins that registered some of them.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub tasks: BTreeMap<String, Entry<TaskFactory>>,
    pub attention: BTreeMap<String, Entry<AttentionFactory>>,
    pub backends: BTreeMap<String, Entry<BackendFactory>>,
    probes: Vec<Probe>,
}

/// A fault probe with its origin (for `Debug`).
#[derive(Clone)]
struct Probe {
    origin: String,
    probe: Arc<dyn FaultProbe>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProbe({})", self.origin)
    }
}

fn insert<F>(map: &mut BTreeMap<String, Entry<F>>, what: &'static str, name: &str, origin: &str, make: F) -> Result<(), DuplicateName> {
    if let Some(old) = map.get(name) {
        return Err(DuplicateName { what, name: name.to_string(), old_origin: old.origin.clone(), new_origin: origin.to_string() });
    }
    map.insert(name.to_string(), Entry { origin: origin.to_string(), make });
    Ok(())
}

impl Registry {
    /// The built-in tasks and attention variants (backends are registered by the program,
    /// which is the only place that knows them).
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        for &name in BUILTIN_TASKS {
            let f: TaskFactory = Arc::new(build_task);
            r.register_task(name, "built-in", f).expect("built-in names are distinct");
        }
        for &name in BUILTIN_ATTENTION {
            let f: AttentionFactory =
                Arc::new(move || builtin_attention(name).ok_or_else(|| AttentionError::Failed { variant: name.to_string(), message: "not built in".into() }));
            r.register_attention(name, "built-in", f).expect("built-in names are distinct");
        }
        r
    }

    pub fn register_task(&mut self, name: &str, origin: &str, make: TaskFactory) -> Result<(), DuplicateName> {
        insert(&mut self.tasks, "task", name, origin, make)
    }
    pub fn register_attention(&mut self, name: &str, origin: &str, make: AttentionFactory) -> Result<(), DuplicateName> {
        insert(&mut self.attention, "attention variant", name, origin, make)
    }
    pub fn register_backend(&mut self, name: &str, origin: &str, make: BackendFactory) -> Result<(), DuplicateName> {
        insert(&mut self.backends, "backend", name, origin, make)
    }

    /// Install a probe that sees the faults of the plugin `origin` (the plugin host does
    /// this for every plugin it loads); the trainer asks it at every evaluation.
    pub fn add_fault_probe(&mut self, origin: &str, probe: Arc<dyn FaultProbe>) {
        self.probes.push(Probe { origin: origin.to_string(), probe });
    }

    /// Where the fault record stands now; pass it to [`Registry::faults_since`] later.
    pub fn fault_mark(&self) -> FaultMark {
        FaultMark(self.probes.iter().map(|p| p.probe.count()).collect())
    }

    /// `Err` with a fault recorded since `mark` (the latest of the first plugin that
    /// recorded one), if any.
    pub fn faults_since(&self, mark: &FaultMark) -> Result<(), PluginFault> {
        for (i, p) in self.probes.iter().enumerate() {
            let before = mark.0.get(i).copied().unwrap_or(0);
            if p.probe.count() > before {
                let fault = p.probe.latest().unwrap_or_else(|| PluginFault {
                    plugin: p.origin.clone(),
                    call: "(a call)".into(),
                    message: "faulted (no details kept)".into(),
                });
                return Err(fault);
            }
        }
        Ok(())
    }

    /// Build a member's task; errors name the kind and list the known ones.
    pub fn task(&self, spec: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, RegistryError> {
        match self.tasks.get(&spec.kind) {
            Some(e) => Ok((e.make)(spec, seed)?),
            None => Err(RegistryError::UnknownTask { kind: spec.kind.clone(), known: self.task_names().join(", ") }),
        }
    }

    /// A fresh attention variant; errors list the known ones.
    pub fn attention(&self, name: &str) -> Result<Box<dyn Attention>, RegistryError> {
        match self.attention.get(name) {
            Some(e) => Ok((e.make)()?),
            None => Err(RegistryError::UnknownAttention { name: name.to_string(), known: self.attention_names().join(", ") }),
        }
    }

    /// A fresh backend; errors list the known ones.
    pub fn backend(&self, name: &str) -> Result<Box<dyn Backend>, RegistryError> {
        match self.backends.get(name) {
            Some(e) => Ok((e.make)()?),
            None => Err(RegistryError::UnknownBackend { name: name.to_string(), known: self.backend_names().join(", ") }),
        }
    }

    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.keys().map(String::as_str).collect()
    }
    pub fn attention_names(&self) -> Vec<&str> {
        self.attention.keys().map(String::as_str).collect()
    }
    pub fn backend_names(&self) -> Vec<&str> {
        self.backends.keys().map(String::as_str).collect()
    }
}
