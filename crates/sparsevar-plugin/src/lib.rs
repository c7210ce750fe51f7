//! sparsevar-plugin: the one crate a plugin depends on, and the loader the host uses.
//!
//! # Three roles
//!
//! * **This crate, the interface.** It re-exports what a plugin implements or builds with
//!   (the [`Task`], [`Attention`] and [`Backend`] traits, [`Graph`], [`TaskSpec`], [`Pcg32`],
//!   [`Kernel`], [`Update`], …) and defines how a plugin announces itself:
//!   [`export_plugin!`] and the [`Registrar`] it registers into. A plugin sees nothing else
//!   of sparsevar.
//! * **Plugins**: `cdylib` crates (see `plugins/` in the workspace) that implement some of the
//!   traits and call `export_plugin!(register)` once at their crate root. They also build as
//!   `rlib`s, so the same `register` function can be linked statically
//!   ([`PluginHost::register_static`]) — tests compare both paths.
//! * **The host**: the `sparsevar` program. It finds shared libraries ([`search_path`],
//!   [`discover`]) and loads them with [`PluginHost::load`] into a
//!   [`Registry`](sparsevar_core::registry::Registry), where configs find a plugin's task,
//!   attention variant or backend by name exactly like a built-in one. Only this crate calls
//!   `libloading`.
//!
//! # Loading in stages
//!
//! Nothing in a library is called before it has proved it was built for this host:
//!
//! 1. the file must exist, be a shared library this host can map (parsed with `object`
//!    before it is even opened: headers, format, class, architecture, every segment and
//!    section within the file — the dynamic loader crashes on a truncated file), and export
//!    the entry point `sparsevar_plugin_abi_version__<crate>` in its dynamic symbol table (so
//!    a stray library's initialisers never run); `<crate>` is the plugin crate's name, which
//!    keeps the symbols of several statically linked plugins apart;
//! 2. that `extern "C" fn() -> u32` — frozen forever — must return [`ABI_VERSION`];
//! 3. `extern "C" fn() -> CompatRecord` (`sparsevar_plugin_compat__<crate>`) describes the
//!    build: compiler (`rustc --version`), this crate's version, a fingerprint of the
//!    interface sources, the target, the panic strategy, and the plugin's name and version.
//!    The host compares it field by field with its own ([`CompatInfo`]) and prints both side
//!    by side on any mismatch;
//! 4. only then is the Rust-ABI function `sparsevar_plugin_register__<crate>`, of type
//!    [`RegisterEntry`], called with the host's `&mut dyn Registrar`. Passing trait objects
//!    and std types across is sound from here on *because* the same compiler built both
//!    sides from the same interface sources.
//!
//! Whatever fails, [`PluginHost::load`] returns a [`PluginError`] naming the file and the
//! host carries on; a plugin that fails registers nothing.
//!
//! # Rules of the boundary
//!
//! * **No panic crosses the boundary.** A `cdylib` contains its own copy of the standard
//!   library, and a panic raised by one copy cannot be caught by another: the host's
//!   `catch_unwind` would see a foreign exception and abort the process. So the catching is
//!   done *inside the plugin*: the [`Registrar`] methods a plugin calls wrap every factory
//!   and every object it makes in guard types compiled into the plugin (module `guard`),
//!   whose trait methods run the plugin's code under `std::panic::catch_unwind`.
//! * **A fault fails loudly, nothing is substituted.** A panic, an error or a result outside
//!   the contract in [`Task::sample`], [`Attention::weights`] or a factory becomes an error
//!   naming the plugin file, the call and what happened ([`PluginFault`]); the trainer stops
//!   the member (a sweep marks it `faulted`) or the run. Every fault is also recorded in the
//!   host's log, which the registry exposes as a fault probe and the trainer reads at every
//!   evaluation, so a fault in a method without an error channel (`describe`,
//!   `clean_label`, `Backend::name`) stops the run too. Plugins must be built with
//!   `panic = "unwind"` (the default); the host refuses `panic = "abort"` builds.
//! * **Types are identified by name strings only**, never `TypeId` (two separate builds of
//!   the same crate need not agree on it): tasks, attention variants and backends are
//!   registered and looked up by name.
//! * **Whoever allocates frees, through one allocator.** Objects a plugin makes are dropped
//!   through their vtables, so their `Drop` code is the plugin's. The memory itself
//!   (boxes, the `String`s and `Vec`s the traits pass by value) may be released by either
//!   side: both copies of std use Rust's default global allocator, the process's `malloc`.
//!   Neither the host nor a plugin may therefore install a `#[global_allocator]`.
//! * **Libraries are never unloaded.** Code, vtables and string constants of a plugin stay
//!   valid for the life of the process; [`PluginHost`] keeps every library it opened.
//!
//! # Writing a plugin
//!
//! A `cdylib` crate (with `rlib` too, so that it can also be linked statically) whose
//! register function adds its names, and one `export_plugin!` at its crate root:
//!
//! ```
//! use sparsevar_plugin::{PluginHost, Registrar, Task, TaskError, TaskSpec};
//! use sparsevar_plugin::core::registry::Registry;
//!
//! pub fn register(r: &mut dyn Registrar) {
//!     r.task("my_task", |spec: &TaskSpec, seed: u64| -> Result<Box<dyn Task>, TaskError> {
//!         Err(TaskError::invalid(format!("my_task is not written yet (T = {}, seed {seed})", spec.t)))
//!     });
//! }
//! sparsevar_plugin::export_plugin!(register);
//!
//! // What the host does with it (here linked statically; `PluginHost::load` for the `.so`).
//! let mut registry = Registry::builtin();
//! let info = PluginHost::new().register_static(&PLUGIN, "example", &mut registry).unwrap();
//! assert_eq!(info.tasks, ["my_task"]);
//! let e = registry.task(&TaskSpec::new("my_task", 8, 2), 0).unwrap_err();
//! assert_eq!(e.to_string(), "my_task is not written yet (T = 8, seed 0)");
//! ```
//!
//! `cargo build` puts `lib<crate>.so` next to the `sparsevar` program, where the host finds
//! it. The workspace's `plugins/` folder holds three complete examples: a task
//! (`sparse-sum-task`), attention variants (`sharp-attention`) and a backend
//! (`reference-backend`).

#![warn(missing_docs)]

mod compat;
mod guard;
mod host;
mod registrar;

pub use compat::{CompatInfo, CompatRecord, RecordStr};
pub use host::{Fault, LoadedPlugin, PLUGIN_PATH_ENV, PluginError, PluginHost, discover, search_path};
pub use registrar::{FaultSink, GuardedAttentionFactory, GuardedBackendFactory, GuardedTaskFactory, Plugin, Registrar};

pub use sparsevar_core::attention::{Attention, AttentionError};
pub use sparsevar_core::backend::{Backend, BackendError, BinaryOp, BufferId, Kernel, UnaryOp, Update, strides_of};
pub use sparsevar_core::fault::PluginFault;
pub use sparsevar_core::graph::{Graph, NodeId};
pub use sparsevar_core::rng::{Pcg32, streams};
pub use sparsevar_core::task::{Task, TaskError, TaskSpec};

/// The whole of sparsevar-core, for plugins that need more than the re-exports above (e.g.
/// tests that build graphs with parameters). It is compiled into the plugin from the same
/// sources as the host's (the compatibility fingerprint checks that).
pub use sparsevar_core as core;

/// The plugin interface version: what `sparsevar_plugin_abi_version__<crate>` returns. It changes
/// whenever the layout of [`CompatRecord`] or the signature of the registration entry point
/// changes; the entry point returning it never does.
pub const ABI_VERSION: u32 = 1;

/// This crate's version, stamped into every plugin's [`CompatRecord`].
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `rustc --version` of the compiler that built this copy of the crate.
pub const RUSTC_VERSION: &str = env!("SPARSEVAR_PLUGIN_RUSTC");

/// The target triple this copy of the crate was built for.
pub const TARGET: &str = env!("SPARSEVAR_PLUGIN_TARGET");

/// A fingerprint (FNV-1a, hex) of the interface sources — sparsevar-core's and this crate's —
/// this copy was built from. Two builds with equal fingerprints agree on every type that
/// crosses the boundary; any edit to those sources changes it, so a stale plugin is refused
/// rather than misread.
pub const INTERFACE_FINGERPRINT: &str = env!("SPARSEVAR_PLUGIN_FINGERPRINT");

/// Prefix of the frozen `extern "C" fn() -> u32` every plugin exports (stage 1). The full
/// symbol is the prefix followed by the plugin crate's name (`CARGO_CRATE_NAME`), e.g.
/// `sparsevar_plugin_abi_version__sparse_sum_task`: unique per crate, so that several
/// plugins can be linked statically into one program without their symbols clashing.
pub const SYMBOL_ABI_VERSION: &str = "sparsevar_plugin_abi_version__";
/// Prefix of the `extern "C" fn() -> CompatRecord` every plugin exports (stage 2).
pub const SYMBOL_COMPAT: &str = "sparsevar_plugin_compat__";
/// Prefix of the Rust-ABI [`RegisterEntry`] every plugin exports (stage 3).
pub const SYMBOL_REGISTER: &str = "sparsevar_plugin_register__";

/// The registration entry point as exported: runs the plugin's register function under
/// `catch_unwind` (in the plugin) and returns the panic message if it panicked.
pub type RegisterEntry = fn(&mut dyn Registrar) -> Result<(), String>;

/// Write a plugin's entry points. Call it once, at the crate root of a `cdylib` crate, with
/// the function that registers the plugin's names: `export_plugin!(register)` (see the crate
/// docs for a whole plugin).
///
/// The plugin's name and version default to the crate's (`CARGO_PKG_NAME`,
/// `CARGO_PKG_VERSION`); `export_plugin!(register, name = "…", version = "…")` sets them.
///
/// It defines, in the calling crate (`<crate>` is its `CARGO_CRATE_NAME`, so building with
/// cargo is required):
/// * `pub const PLUGIN: sparsevar_plugin::Plugin` — name, version and register function, for
///   static linking ([`PluginHost::register_static`]);
/// * `extern "C" fn() -> u32`, exported as `sparsevar_plugin_abi_version__<crate>`
///   (returns [`ABI_VERSION`]);
/// * `extern "C" fn() -> CompatRecord`, exported as `sparsevar_plugin_compat__<crate>`
///   (this build's record);
/// * `fn(&mut dyn Registrar) -> Result<(), String>` (Rust ABI), exported as
///   `sparsevar_plugin_register__<crate>`, which runs `register` under `catch_unwind` so
///   that a panic while registering becomes an error instead of crossing into the host.
///
/// The crate name in the symbols keeps them distinct when several plugin crates are linked
/// statically into one program (their rlibs carry the symbols too).
#[macro_export]
macro_rules! export_plugin {
    ($register:path) => {
        $crate::export_plugin!($register, name = env!("CARGO_PKG_NAME"), version = env!("CARGO_PKG_VERSION"));
    };
    ($register:path, name = $name:expr, version = $version:expr) => {
        $crate::export_plugin!(@with $register, name = $name, version = $version,
            abi_version = $crate::ABI_VERSION,
            compat = $crate::CompatRecord::this_build($name, $version, cfg!(panic = "unwind")));
    };
    // For the host's own tests only: export a deliberately wrong version or record.
    (@with $register:path, name = $name:expr, version = $version:expr, abi_version = $abi:expr, compat = $compat:expr) => {
        /// This plugin's name, version and register function, for static linking.
        pub const PLUGIN: $crate::Plugin = $crate::Plugin { name: $name, version: $version, register: $register };

        /// Stage 1 of loading: the plugin interface version (frozen signature).
        #[allow(unsafe_code)]
        #[unsafe(export_name = concat!("sparsevar_plugin_abi_version__", env!("CARGO_CRATE_NAME")))]
        pub extern "C" fn sparsevar_plugin_abi_version() -> u32 {
            $abi
        }

        /// Stage 2 of loading: how this plugin was built.
        #[allow(unsafe_code)]
        #[unsafe(export_name = concat!("sparsevar_plugin_compat__", env!("CARGO_CRATE_NAME")))]
        pub extern "C" fn sparsevar_plugin_compat() -> $crate::CompatRecord {
            $compat
        }

        /// Stage 3 of loading: register everything, with panics caught on this side.
        #[allow(unsafe_code)]
        #[unsafe(export_name = concat!("sparsevar_plugin_register__", env!("CARGO_CRATE_NAME")))]
        pub fn sparsevar_plugin_register(r: &mut dyn $crate::Registrar) -> ::std::result::Result<(), ::std::string::String> {
            $crate::Plugin::run_register($register, r)
        }
    };
}
