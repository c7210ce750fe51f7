//! What this program knows: built-in tasks and attention variants, the backends (cpu,
//! cpu-f64, wgpu, and `auto`), and everything the plugins on the search path add.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use sparsevar_core::backend::{Backend, BackendError};
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_plugin::{PluginError, PluginHost, discover, search_path};
use sparsevar_wgpu::WgpuBackend;

use crate::{BadInput, bad};

/// The registry with every plugin loaded, and what failed to load.
pub struct Host {
    pub registry: Registry,
    pub plugins: PluginHost,
    /// Plugin files that did not load, each error naming its file.
    pub load_errors: Vec<PluginError>,
    /// Directories searched, in order.
    pub search_path: Vec<PathBuf>,
    /// The plugin directories the user named (`--plugins`, `SPARSEVAR_PLUGIN_PATH`): load
    /// errors of files there are warnings.
    explicit: Vec<PathBuf>,
}

impl Host {
    /// Register the built-ins and load the plugins on the search path (`--plugins DIR`,
    /// `SPARSEVAR_PLUGIN_PATH`, then the build output next to this program). A plugin that
    /// fails to load is reported, never fatal.
    pub fn new(plugin_dir: Option<&Path>) -> Host {
        let mut registry = Registry::builtin();
        registry.register_backend("cpu", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f32>::new()) as Box<dyn Backend>))).expect("distinct");
        registry.register_backend("cpu-f64", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f64>::new()) as Box<dyn Backend>))).expect("distinct");
        registry
            .register_backend(
                "wgpu",
                "built-in",
                Arc::new(|| {
                    WgpuBackend::new()
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                        .map_err(|e| BackendError::Device { backend: "wgpu".into(), message: e.to_string() })
                }),
            )
            .expect("distinct");
        let search = search_path(plugin_dir);
        let mut plugins = PluginHost::new();
        let load_errors = plugins.load_all(&discover(&search), &mut registry);
        let mut explicit: Vec<PathBuf> = plugin_dir.map(Path::to_path_buf).into_iter().collect();
        explicit.extend(std::env::var_os(sparsevar_plugin::PLUGIN_PATH_ENV).iter().flat_map(std::env::split_paths));
        Host { registry, plugins, load_errors, search_path: search, explicit }
    }

    /// Print plugin load failures as warnings when the user asked for plugins; stale
    /// libraries in the build output are only listed by `sparsevar plugins`.
    pub fn warn_load_errors(&self) {
        for e in self.load_errors.iter().filter(|e| self.explicit.iter().any(|d| e.file().parent() == Some(d.as_path()))) {
            eprintln!("warning: {e}");
        }
    }

    /// The concrete backend a name means: `auto` is wgpu on a real GPU, else cpu.
    pub fn resolve(&self, name: &str) -> String {
        if name != "auto" {
            return name.to_string();
        }
        let gpu = sparsevar_wgpu::adapters().iter().any(|a| a.device_type == "discrete" || a.device_type == "integrated");
        if gpu { "wgpu".into() } else { "cpu".into() }
    }

    /// A fresh backend by name (or `auto`); an unknown name is bad input.
    pub fn backend(&self, name: &str) -> Result<Box<dyn Backend>> {
        let name = self.resolve(name);
        if !self.registry.backends.contains_key(&name) {
            let mut msg = self.registry.backend(&name).err().map(|e| e.to_string()).unwrap_or_default();
            msg.push_str(", auto");
            return bad(msg);
        }
        self.registry.backend(&name).map_err(|e| anyhow::Error::new(BadInput(format!("backend {name}: {e}"))))
    }
}
