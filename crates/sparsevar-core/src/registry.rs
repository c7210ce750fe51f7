//! The registry: every task, attention variant and backend the host knows, by name.
//!
//! Built-ins are registered by [`Registry::builtin`]; plugins add theirs at load time. Names
//! are the only identity (never `TypeId`), so a plugin's task is used from a config exactly
//! like a built-in one. Each entry remembers where it came from, for listings and errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::attention::{Attention, BUILTIN_ATTENTION, builtin_attention};
use crate::backend::Backend;
use crate::task::{BUILTIN_TASKS, Task, TaskSpec, build_task};

/// Builds a member's task from the config section and the member seed.
pub type TaskFactory = Arc<dyn Fn(&TaskSpec, u64) -> Result<Box<dyn Task>, String> + Send + Sync>;
/// Makes a fresh attention variant.
pub type AttentionFactory = Arc<dyn Fn() -> Box<dyn Attention> + Send + Sync>;
/// Makes a fresh backend.
pub type BackendFactory = Arc<dyn Fn() -> Result<Box<dyn Backend>, String> + Send + Sync>;

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

/// Every task, attention variant and backend by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub tasks: BTreeMap<String, Entry<TaskFactory>>,
    pub attention: BTreeMap<String, Entry<AttentionFactory>>,
    pub backends: BTreeMap<String, Entry<BackendFactory>>,
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
            let f: TaskFactory = Arc::new(|spec: &TaskSpec, seed: u64| build_task(spec, seed).map_err(|e| e.to_string()));
            r.register_task(name, "built-in", f).expect("built-in names are distinct");
        }
        for &name in BUILTIN_ATTENTION {
            let f: AttentionFactory = Arc::new(move || builtin_attention(name).expect("built-in"));
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

    /// Build a member's task; errors name the kind and list the known ones.
    pub fn task(&self, spec: &TaskSpec, seed: u64) -> Result<Box<dyn Task>, String> {
        match self.tasks.get(&spec.kind) {
            Some(e) => (e.make)(spec, seed),
            None => Err(format!("unknown task kind `{}`; known kinds: {}", spec.kind, self.task_names().join(", "))),
        }
    }

    /// A fresh attention variant; errors list the known ones.
    pub fn attention(&self, name: &str) -> Result<Box<dyn Attention>, String> {
        match self.attention.get(name) {
            Some(e) => Ok((e.make)()),
            None => Err(format!("model.attention `{name}` is unknown; known variants: {}", self.attention_names().join(", "))),
        }
    }

    /// A fresh backend; errors list the known ones.
    pub fn backend(&self, name: &str) -> Result<Box<dyn Backend>, String> {
        match self.backends.get(name) {
            Some(e) => (e.make)(),
            None => Err(format!("backend `{name}` is unknown; available backends: {}", self.backend_names().join(", "))),
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
