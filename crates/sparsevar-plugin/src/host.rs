//! The host's loader: finding plugin files, loading them in stages, registering what they
//! offer, and reporting what their guards caught. Only this module calls libloading.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sparsevar_core::fault::{FaultProbe, PluginFault};
use sparsevar_core::registry::{AttentionFactory, BackendFactory, DuplicateName, Registry, TaskFactory};

use crate::compat::{CompatInfo, CompatRecord};
use crate::registrar::{FaultSink, GuardedAttentionFactory, GuardedBackendFactory, GuardedTaskFactory, Plugin, Registrar};
use crate::{ABI_VERSION, RegisterEntry, SYMBOL_ABI_VERSION, SYMBOL_COMPAT, SYMBOL_REGISTER};

/// The environment variable holding extra plugin directories, separated like `PATH`
/// (`:` on Unix).
pub const PLUGIN_PATH_ENV: &str = "SPARSEVAR_PLUGIN_PATH";

/// Why a plugin could not be loaded, or what went wrong in one later. Every message names
/// the plugin file; the host keeps running after any of them.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The path does not exist (or is not a file).
    #[error("plugin {}: no such file", file.display())]
    Missing {
        /// The path asked for.
        file: PathBuf,
    },
    /// The file is not a shared library this system can open.
    #[error("plugin {}: not a shared library: {reason}", file.display())]
    NotALibrary {
        /// The file.
        file: PathBuf,
        /// What the file check or the dynamic loader said.
        reason: String,
    },
    /// A file that starts like a shared library of this system but cannot be mapped safely:
    /// truncated, corrupted, or built for another architecture. Checked before the dynamic
    /// loader sees it, which would crash the process on such a file (SIGBUS, SIGSEGV).
    #[error("plugin {}: not a loadable plugin: {reason}", file.display())]
    NotLoadable {
        /// The file.
        file: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// A shared library without the entry points of a sparsevar plugin.
    #[error(
        "plugin {}: not a sparsevar plugin: it has no `{symbol}` symbol (a plugin is a cdylib crate that calls sparsevar_plugin::export_plugin!)",
        file.display()
    )]
    NotAPlugin {
        /// The file.
        file: PathBuf,
        /// The entry point that is missing (`<crate>` where no crate name could be found).
        symbol: String,
    },
    /// Stage 1: the plugin speaks another interface version.
    #[error(
        "plugin {}: built for plugin interface version {found}, but this sparsevar speaks version {expected}; rebuild the plugin against this sparsevar",
        file.display()
    )]
    AbiMismatch {
        /// The file.
        file: PathBuf,
        /// What the plugin's `sparsevar_plugin_abi_version__<crate>` returned.
        found: u32,
        /// [`ABI_VERSION`](crate::ABI_VERSION).
        expected: u32,
    },
    /// Stage 2: built by another compiler, against other interface sources, for another
    /// target, or with `panic = "abort"`.
    #[error(
        "plugin {}: built differently from this sparsevar ({}); rebuild it with the same toolchain against this sparsevar (e.g. `cargo build -p {}`):\n{}",
        file.display(), mismatched.join(", "), plugin.plugin_name, host.side_by_side(plugin)
    )]
    Incompatible {
        /// The file.
        file: PathBuf,
        /// The fields that differ.
        mismatched: Vec<&'static str>,
        /// What the host requires.
        host: Box<CompatInfo>,
        /// What the plugin reported.
        plugin: Box<CompatInfo>,
    },
    /// A name the plugin registers is already taken; nothing of the plugin was registered.
    #[error("plugin {}: {duplicate}", file.display())]
    Duplicate {
        /// The file.
        file: PathBuf,
        /// Core's description of the clash.
        duplicate: DuplicateName,
    },
    /// The plugin's register function panicked; nothing of the plugin was registered.
    #[error("plugin {}: panicked while registering: {message}", file.display())]
    RegisterPanicked {
        /// The file.
        file: PathBuf,
        /// The panic message.
        message: String,
    },
    /// A guard caught a fault (a panic, an error, or a result outside the contract) in a
    /// plugin method; see [`PluginHost::check_faults`].
    #[error("plugin {}: {what} {message}", file.display())]
    Fault {
        /// The file.
        file: PathBuf,
        /// The method, e.g. "Task::sample of task `x`".
        what: String,
        /// What happened, e.g. "panicked: boom".
        message: String,
    },
}

impl PluginError {
    /// The plugin file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            PluginError::Missing { file, .. } => file,
            PluginError::NotALibrary { file, .. } => file,
            PluginError::NotLoadable { file, .. } => file,
            PluginError::NotAPlugin { file, .. } => file,
            PluginError::AbiMismatch { file, .. } => file,
            PluginError::Incompatible { file, .. } => file,
            PluginError::Duplicate { file, .. } => file,
            PluginError::RegisterPanicked { file, .. } => file,
            PluginError::Fault { file, .. } => file,
        }
    }
}

/// One fault a guard reported (see [`PluginError::Fault`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The plugin file (or static plugin name).
    pub file: PathBuf,
    /// The method, e.g. "Task::sample of task `x`".
    pub what: String,
    /// What happened, e.g. "panicked: boom".
    pub message: String,
}

impl From<Fault> for PluginError {
    fn from(f: Fault) -> Self {
        PluginError::Fault { file: f.file, what: f.what, message: f.message }
    }
}

/// At most this many faults are kept per plugin (the count goes on).
const KEPT_FAULTS: usize = 16;

/// The host's fault sink for one plugin. Its methods never panic: they run beneath the
/// plugin's frames, where a host panic could not be caught. It is also the plugin's
/// [`FaultProbe`] in the registry, through which the trainer sees every fault.
struct FaultLog {
    file: PathBuf,
    /// The first faults (at most [`KEPT_FAULTS`]), how many there were, and the latest.
    faults: Mutex<(Vec<Fault>, usize, Option<Fault>)>,
}

impl FaultLog {
    fn new(file: &Path) -> Self {
        FaultLog { file: file.to_path_buf(), faults: Mutex::new((Vec::new(), 0, None)) }
    }
}

impl FaultSink for FaultLog {
    fn record(&self, what: &str, message: &str) {
        let mut guard = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let (kept, count, latest) = &mut *guard;
        *count += 1;
        let fault = Fault { file: self.file.clone(), what: what.to_string(), message: message.to_string() };
        if kept.len() < KEPT_FAULTS {
            kept.push(fault.clone());
        }
        *latest = Some(fault);
    }
}

impl FaultProbe for FaultLog {
    fn count(&self) -> u64 {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).1 as u64
    }
    fn latest(&self) -> Option<PluginFault> {
        let guard = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        guard.2.as_ref().map(|f| PluginFault { plugin: f.file.display().to_string(), call: f.what.clone(), message: f.message.clone() })
    }
}

/// A plugin that loaded: where it came from and every name it registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedPlugin {
    /// The shared library (for a statically linked plugin: its name).
    pub file: PathBuf,
    /// The plugin's name, from its compatibility record.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Task kinds it registered, sorted.
    pub tasks: Vec<String>,
    /// Attention variants it registered, sorted.
    pub attention: Vec<String>,
    /// Backends it registered, sorted.
    pub backends: Vec<String>,
}

impl LoadedPlugin {
    /// A few lines for a `sparsevar plugins` listing:
    ///
    /// ```text
    /// sparse-sum-task 0.1.0  (/…/target/debug/libsparse_sum_task.so)
    ///   tasks: sparse_sum
    /// ```
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}  ({})", self.name, self.version, self.file.display());
        for (label, names) in [("tasks", &self.tasks), ("attention", &self.attention), ("backends", &self.backends)] {
            if !names.is_empty() {
                s.push_str(&format!("\n  {label}: {}", names.join(", ")));
            }
        }
        s
    }
}

/// The host's half of registration: collects what a plugin offers, to be committed to the
/// registry all at once (or not at all).
struct HostRegistrar {
    origin: String,
    sink: Arc<FaultLog>,
    tasks: Vec<(String, TaskFactory)>,
    attention: Vec<(String, AttentionFactory)>,
    backends: Vec<(String, BackendFactory)>,
}

impl Registrar for HostRegistrar {
    fn origin(&self) -> &str {
        &self.origin
    }
    fn fault_sink(&self) -> Arc<dyn FaultSink> {
        self.sink.clone()
    }
    fn add_task(&mut self, name: &str, make: GuardedTaskFactory) {
        self.tasks.push((name.to_string(), make.0));
    }
    fn add_attention(&mut self, name: &str, make: GuardedAttentionFactory) {
        self.attention.push((name.to_string(), make.0));
    }
    fn add_backend(&mut self, name: &str, make: GuardedBackendFactory) {
        self.backends.push((name.to_string(), make.0));
    }
}

impl HostRegistrar {
    fn new(file: &Path) -> Self {
        let origin = file.display().to_string();
        let sink = Arc::new(FaultLog::new(file));
        HostRegistrar { origin, sink, tasks: Vec::new(), attention: Vec::new(), backends: Vec::new() }
    }

    /// Register everything into `registry`, or nothing if any name clashes.
    fn commit(self, registry: &mut Registry, file: &Path, name: &str, version: &str) -> Result<(LoadedPlugin, Arc<FaultLog>), PluginError> {
        let mut trial = registry.clone();
        let dup = |duplicate| PluginError::Duplicate { file: file.to_path_buf(), duplicate };
        fn sorted<F>(v: &[(String, F)]) -> Vec<String> {
            let mut n: Vec<String> = v.iter().map(|(n, _)| n.clone()).collect();
            n.sort();
            n
        }
        let info = LoadedPlugin {
            file: file.to_path_buf(),
            name: name.to_string(),
            version: version.to_string(),
            tasks: sorted(&self.tasks),
            attention: sorted(&self.attention),
            backends: sorted(&self.backends),
        };
        for (n, f) in self.tasks {
            trial.register_task(&n, &self.origin, f).map_err(dup)?;
        }
        for (n, f) in self.attention {
            trial.register_attention(&n, &self.origin, f).map_err(dup)?;
        }
        for (n, f) in self.backends {
            trial.register_backend(&n, &self.origin, f).map_err(dup)?;
        }
        // The trainer reads this plugin's faults through the registry at every evaluation.
        trial.add_fault_probe(&self.origin, self.sink.clone());
        *registry = trial;
        Ok((info, self.sink))
    }
}

/// Every library ever opened. Never unloaded: code, vtables and constants of a plugin must
/// outlive everything it made, and a static is never dropped.
static LIBRARIES: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());

/// The plugin host: loads plugins into a [`Registry`] and keeps track of what they
/// registered and of the faults their guards reported.
///
/// ```no_run
/// use sparsevar_core::registry::Registry;
/// use sparsevar_cpu::CpuBackend;
/// use sparsevar_experiment::train::{RunSpec, Trainer};
/// use sparsevar_plugin::{discover, search_path, PluginHost};
///
/// fn train(spec: RunSpec, plugins_dir: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
///     let mut registry = Registry::builtin();
///     let mut host = PluginHost::new();
///     for e in host.load_all(&discover(&search_path(plugins_dir)), &mut registry) {
///         eprintln!("warning: {e}"); // the host carries on without that plugin
///     }
///     let mut backend = CpuBackend::<f32>::new();
///     // A plugin's fault is an error of `Trainer::new` or `run` naming the plugin file, the
///     // call and the member: the trainer reads the plugins' fault logs itself.
///     let mut trainer = Trainer::new(&mut backend, spec, &registry)?;
///     let result = trainer.run(&mut |_| true)?;
///     println!("{} steps", result.steps);
///     Ok(())
/// }
/// ```
#[derive(Default)]
pub struct PluginHost {
    plugins: Vec<LoadedPlugin>,
    logs: Vec<Arc<FaultLog>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").field("plugins", &self.plugins).finish()
    }
}

/// `names` (crate names `<crate>` of `sparsevar_plugin_abi_version__<crate>` symbols),
/// the file's own crate name (`lib<crate>.so`) first when it is among them. Only a
/// candidate list: the dynamic loader confirms which one is a real symbol.
fn entry_point_candidates(mut found: Vec<String>, file: &Path) -> Vec<String> {
    let own = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(std::env::consts::DLL_PREFIX))
        .and_then(|n| n.strip_suffix(std::env::consts::DLL_SUFFIX))
        .map(|n| n.replace('-', "_"));
    if let Some(pos) = own.and_then(|own| found.iter().position(|f| *f == own)) {
        let name = found.remove(pos);
        found.insert(0, name);
    }
    found
}

/// Whether `bytes` start like a shared library of this platform (None: cannot tell).
fn looks_like_library(bytes: &[u8]) -> Option<bool> {
    if cfg!(target_os = "linux") || cfg!(target_os = "freebsd") || cfg!(target_os = "android") {
        Some(bytes.starts_with(b"\x7fELF"))
    } else if cfg!(target_os = "windows") {
        Some(bytes.starts_with(b"MZ"))
    } else {
        None
    }
}

/// The object-file architecture of this host (None where `object` has no name for it).
fn host_architecture() -> Option<object::Architecture> {
    use object::Architecture as A;
    Some(match std::env::consts::ARCH {
        "x86_64" => A::X86_64,
        "x86" => A::I386,
        "aarch64" => A::Aarch64,
        "arm" => A::Arm,
        "riscv64" => A::Riscv64,
        "powerpc64" => A::PowerPc64,
        "s390x" => A::S390x,
        "loongarch64" => A::LoongArch64,
        _ => return None,
    })
}

/// Check that `bytes` are a shared library the dynamic loader can map on this host —
/// parsable headers, this host's format, class, byte order and architecture, every segment
/// and section within the file, a dynamic symbol table — and return the crate names of
/// the plugin entry points it exports. `Err` holds the reason.
fn check_library(bytes: &[u8]) -> Result<Vec<String>, String> {
    use object::{BinaryFormat, Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol};
    let file = object::File::parse(bytes).map_err(|e| format!("its headers cannot be read ({e}); the file is truncated or corrupted"))?;
    let format = if cfg!(target_os = "windows") {
        BinaryFormat::Pe
    } else if cfg!(target_vendor = "apple") {
        BinaryFormat::MachO
    } else {
        BinaryFormat::Elf
    };
    if file.format() != format {
        return Err(format!("it is a {:?} file, but this system loads {format:?}", file.format()));
    }
    if file.is_64() != cfg!(target_pointer_width = "64") || file.is_little_endian() != cfg!(target_endian = "little") {
        return Err(format!(
            "it is built for {}-bit {} machines, unlike this one",
            if file.is_64() { 64 } else { 32 },
            if file.is_little_endian() { "little-endian" } else { "big-endian" }
        ));
    }
    if let Some(arch) = host_architecture()
        && file.architecture() != arch
    {
        return Err(format!("it is built for {:?}, but this machine is {arch:?}", file.architecture()));
    }
    if file.kind() != ObjectKind::Dynamic {
        return Err(format!("it is not a shared library but a {:?} object", file.kind()));
    }
    let len = bytes.len() as u64;
    let beyond = |(offset, size): (u64, u64)| offset.checked_add(size).is_none_or(|end| end > len);
    for seg in file.segments() {
        if beyond(seg.file_range()) {
            let (offset, size) = seg.file_range();
            return Err(format!("a segment ends at byte {}, past the end of the file ({len} bytes): the file is truncated", offset.saturating_add(size)));
        }
    }
    for sec in file.sections() {
        if let Some(range) = sec.file_range()
            && beyond(range)
        {
            return Err(format!("section {} ends past the end of the file ({len} bytes): the file is truncated", sec.name().unwrap_or("?")));
        }
    }
    if format == BinaryFormat::Elf && file.dynamic_symbol_table().is_none() {
        return Err("it has no dynamic symbol table".into());
    }
    let mut found: Vec<String> = Vec::new();
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        let Ok(name) = sym.name() else { continue };
        // Mach-O spells C symbols with a leading underscore.
        let name = if format == BinaryFormat::MachO { name.strip_prefix('_').unwrap_or(name) } else { name };
        if let Some(crate_name) = name.strip_prefix(SYMBOL_ABI_VERSION)
            && !sym.is_undefined()
            && !crate_name.is_empty()
            && !found.iter().any(|f| f == crate_name)
        {
            found.push(crate_name.to_string());
        }
    }
    Ok(found)
}

impl PluginHost {
    /// A host with no plugins loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every plugin loaded (or registered statically) so far, in order.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Load the plugin at `path` and register its names into `registry` with the file path
    /// as their origin. Stages: file checks, interface version, compatibility record, then
    /// registration (see the crate docs). On any error nothing is registered and the host
    /// can go on; the library, if it was opened, stays loaded.
    #[allow(unsafe_code)]
    pub fn load(&mut self, path: &Path, registry: &mut Registry) -> Result<LoadedPlugin, PluginError> {
        let file = path.to_path_buf();
        if !path.is_file() {
            return Err(PluginError::Missing { file });
        }
        let bytes = std::fs::read(path).map_err(|e| PluginError::NotALibrary { file: file.clone(), reason: format!("cannot read it: {e}") })?;
        if looks_like_library(&bytes) == Some(false) {
            return Err(PluginError::NotALibrary { file, reason: "the file does not start like a shared library of this platform".into() });
        }
        // Checked before opening: the dynamic loader crashes the process on a truncated or
        // corrupted file, and a library that is not a plugin must never run its initialisers
        // in this process.
        let names = check_library(&bytes).map_err(|reason| PluginError::NotLoadable { file: file.clone(), reason })?;
        let candidates = entry_point_candidates(names, path);
        drop(bytes);
        if candidates.is_empty() {
            return Err(PluginError::NotAPlugin { file, symbol: format!("{SYMBOL_ABI_VERSION}<crate>") });
        }

        // SAFETY: opening a library runs its initialisers; only files that carry a sparsevar
        // entry point, i.e. libraries built to be loaded by us, get this far.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotALibrary { file: file.clone(), reason: e.to_string() })?;
        let mut libs = LIBRARIES.lock().unwrap_or_else(|e| e.into_inner());
        libs.push(lib);
        let lib = libs.last().expect("just pushed");

        // Stage 1: the frozen C function.
        let mut stage1 = None;
        for crate_name in &candidates {
            // SAFETY: the symbol's signature is frozen for every interface version.
            if let Ok(sym) = unsafe { lib.get::<extern "C" fn() -> u32>(format!("{SYMBOL_ABI_VERSION}{crate_name}")) } {
                stage1 = Some((crate_name.clone(), *sym));
                break;
            }
        }
        let Some((crate_name, abi)) = stage1 else {
            return Err(PluginError::NotAPlugin { file, symbol: format!("{SYMBOL_ABI_VERSION}{}", candidates[0]) });
        };
        let found = abi();
        if found != ABI_VERSION {
            return Err(PluginError::AbiMismatch { file, found, expected: ABI_VERSION });
        }

        // Stage 2: the compatibility record, in the layout of this interface version.
        let symbol = format!("{SYMBOL_COMPAT}{crate_name}");
        // SAFETY: stage 1 established that the plugin uses this version's CompatRecord.
        let compat: extern "C" fn() -> CompatRecord = *unsafe { lib.get::<extern "C" fn() -> CompatRecord>(&symbol) }
            .map_err(|_| PluginError::NotAPlugin { file: file.clone(), symbol: symbol.clone() })?;
        // SAFETY: the record comes from this (loaded, never unloaded) library.
        let plugin = unsafe { compat().info() };
        let host = CompatInfo::host();
        let mismatched = host.mismatches(&plugin);
        if !mismatched.is_empty() {
            return Err(PluginError::Incompatible { file, mismatched, host: Box::new(host), plugin: Box::new(plugin) });
        }

        // Stage 3: registration through a Rust-ABI function, now that compiler, interface
        // sources and target are known to be the host's.
        // SAFETY: same compiler and same interface sources, so `RegisterEntry` and every
        // type it passes have the same layout on both sides.
        let symbol = format!("{SYMBOL_REGISTER}{crate_name}");
        let register: RegisterEntry =
            *unsafe { lib.get::<RegisterEntry>(&symbol) }.map_err(|_| PluginError::NotAPlugin { file: file.clone(), symbol: symbol.clone() })?;
        drop(libs);
        let mut registrar = HostRegistrar::new(path);
        register(&mut registrar).map_err(|message| PluginError::RegisterPanicked { file: file.clone(), message })?;
        let (info, log) = registrar.commit(registry, path, &plugin.plugin_name, &plugin.plugin_version)?;
        self.plugins.push(info.clone());
        self.logs.push(log);
        Ok(info)
    }

    /// Load every plugin in `files` (e.g. from [`discover`]), carrying on past failures;
    /// returns the errors.
    pub fn load_all(&mut self, files: &[PathBuf], registry: &mut Registry) -> Vec<PluginError> {
        files.iter().filter_map(|f| self.load(f, registry).err()).collect()
    }

    /// Register a plugin linked into the program (its crate as an rlib) exactly as
    /// [`load`](PluginHost::load) registers a shared library, with `origin` in place of the
    /// file: same guards, same all-or-nothing registration, same faults.
    pub fn register_static(&mut self, plugin: &Plugin, origin: &str, registry: &mut Registry) -> Result<LoadedPlugin, PluginError> {
        let file = PathBuf::from(origin);
        let mut registrar = HostRegistrar::new(&file);
        Plugin::run_register(plugin.register, &mut registrar).map_err(|message| PluginError::RegisterPanicked { file: file.clone(), message })?;
        let (info, log) = registrar.commit(registry, &file, plugin.name, plugin.version)?;
        self.plugins.push(info.clone());
        self.logs.push(log);
        Ok(info)
    }

    /// Every fault the plugins' guards reported so far (at most 16 per plugin), in order.
    pub fn faults(&self) -> Vec<Fault> {
        self.logs.iter().flat_map(|l| l.faults.lock().unwrap_or_else(|e| e.into_inner()).0.clone()).collect()
    }

    /// The number of faults reported so far, all plugins together.
    pub fn fault_count(&self) -> usize {
        self.logs.iter().map(|l| l.faults.lock().unwrap_or_else(|e| e.into_inner()).1).sum()
    }

    /// `Err` with the first fault a plugin's guard reported, if any. The trainer already
    /// reads the same logs through the registry's fault probes at every evaluation, so a
    /// training front end need not call this; it serves listings and checks outside training.
    pub fn check_faults(&self) -> Result<(), PluginError> {
        match self.faults().into_iter().next() {
            Some(f) => Err(f.into()),
            None => Ok(()),
        }
    }
}

/// The directories to look for plugins in, in priority order:
///
/// 1. `explicit` (the program's `--plugins DIR`), as given;
/// 2. each entry of `$SPARSEVAR_PLUGIN_PATH` (separated like `PATH`: `:` on Unix);
/// 3. the workspace's build output next to the running program: its own directory
///    (`target/debug` for a `cargo build`; for a test binary in `target/debug/deps`, the
///    directory above), then the sibling profile (`target/release` ↔ `target/debug`), so a
///    fresh `cargo build` of the examples is found. Only directories that exist are listed
///    in this step.
///
/// Duplicates are dropped, keeping the first.
pub fn search_path(explicit: Option<&Path>) -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    search_path_from(explicit, std::env::var_os(PLUGIN_PATH_ENV), exe_dir)
}

/// [`search_path`] with the environment passed in.
fn search_path_from(explicit: Option<&Path>, env: Option<std::ffi::OsString>, exe_dir: Option<PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
    }
    if let Some(v) = env {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(mut here) = exe_dir {
        if here.file_name().is_some_and(|n| n == "deps") {
            here.pop();
        }
        let mut defaults = vec![here.clone()];
        if let (Some(profile), Some(target)) = (here.file_name().and_then(|n| n.to_str()), here.parent()) {
            for other in ["release", "debug"] {
                if profile != other && (profile == "release" || profile == "debug") {
                    defaults.push(target.join(other));
                }
            }
        }
        dirs.extend(defaults.into_iter().filter(|d| d.is_dir()));
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The plugin files in `dirs`: files named `lib*.so` (on other systems, with their
/// prefix and suffix, e.g. `*.dll`), sorted by name within a directory. Directories that do
/// not exist are skipped. A file name found in an earlier directory hides the same name in
/// later ones (so `target/debug` and `target/release` do not both offer one plugin).
pub fn discover(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix) && n.len() > prefix.len() + suffix.len())
            })
            .collect();
        found.sort();
        for p in found {
            if names.insert(p.file_name().map(|n| n.to_os_string())) {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sparsevar-plugin-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn lib(name: &str) -> String {
        format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
    }

    #[test]
    fn search_path_orders_explicit_then_env_then_build_output() {
        let root = scratch("search");
        let target = root.join("target");
        for d in ["debug/deps", "release"] {
            std::fs::create_dir_all(target.join(d)).unwrap();
        }
        let env = std::env::join_paths([root.join("a"), PathBuf::new(), root.join("b"), root.join("a")]).unwrap();
        // A test binary lives in target/debug/deps: the build output is target/debug, then
        // the sibling profile.
        let dirs = search_path_from(Some(&root.join("explicit")), Some(env), Some(target.join("debug/deps")));
        assert_eq!(dirs, [root.join("explicit"), root.join("a"), root.join("b"), target.join("debug"), target.join("release")]);
        // The program itself in target/release; target/debug absent: not listed.
        std::fs::remove_dir_all(target.join("debug")).unwrap();
        assert_eq!(search_path_from(None, None, Some(target.join("release"))), [target.join("release")]);
        // An installed program: only its own directory.
        assert_eq!(search_path_from(None, None, Some(root.clone())), std::slice::from_ref(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn discover_lists_libraries_once_by_name_first_directory_first() {
        let root = scratch("discover");
        let (a, b) = (root.join("a"), root.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
        }
        for (dir, name) in [(&a, lib("zeta")), (&a, lib("alpha")), (&a, "notes.txt".into()), (&b, lib("alpha")), (&b, lib("beta"))] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::create_dir_all(a.join(lib("dir"))).unwrap();
        std::fs::write(a.join(format!("{}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)), b"x").unwrap();
        let found = discover(&[a.clone(), root.join("missing"), b.clone()]);
        assert_eq!(found, [a.join(lib("alpha")), a.join(lib("zeta")), b.join(lib("beta"))]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn entry_point_candidates_put_the_file_name_first() {
        let names = || vec!["other_one".to_string(), "my_plugin".to_string()];
        let file = PathBuf::from(format!("/x/{}", lib("my-plugin")));
        assert_eq!(entry_point_candidates(names(), &file), ["my_plugin", "other_one"]);
        assert_eq!(entry_point_candidates(names(), Path::new("/x/renamed")), ["other_one", "my_plugin"]);
    }

    #[test]
    fn the_file_check_reads_this_test_binary_and_refuses_its_truncations() {
        // The test binary itself: an ELF file of this host, but an executable (or a PIE,
        // which the loader could map) without plugin entry points.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if let Ok(names) = check_library(&exe) {
            assert!(names.is_empty(), "{names:?}");
        }
        for len in [0, 4, 64, exe.len() / 2, exe.len() - 100] {
            assert!(check_library(&exe[..len]).is_err(), "truncated at {len} of {}", exe.len());
        }
    }

    #[test]
    fn mismatched_records_are_printed_side_by_side_with_marks() {
        let host = CompatInfo::host();
        let mut plugin = host.clone();
        assert!(host.mismatches(&plugin).is_empty());
        plugin.plugin_name = "p".into();
        plugin.plugin_version = "9.9.9".into();
        assert!(host.mismatches(&plugin).is_empty(), "name and version are not compared");
        plugin.rustc = "rustc 0.1.0".into();
        plugin.panic = "abort".into();
        assert_eq!(host.mismatches(&plugin), ["compiler", "panic strategy"]);
        let table = host.side_by_side(&plugin);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 9, "{table}");
        assert!(lines[0].trim_start().starts_with("host") && lines[0].ends_with("plugin"), "{table}");
        let compiler = lines.iter().find(|l| l.contains("compiler")).unwrap();
        assert!(compiler.starts_with("  * ") && compiler.contains(&host.rustc) && compiler.ends_with("rustc 0.1.0"), "{table}");
        let target = lines.iter().find(|l| l.contains("target")).unwrap();
        assert!(target.starts_with("    "), "{table}");
        // The columns line up: every plugin value starts at the same column.
        let col = lines[0].find("plugin").unwrap();
        assert_eq!(&compiler[col..], "rustc 0.1.0", "{table}");
    }

    #[test]
    fn a_fault_log_keeps_the_first_faults_and_counts_all() {
        let log = FaultLog::new(Path::new("libx.so"));
        for i in 0..20 {
            log.record("Task::sample of task `t`", &format!("panicked: {i}"));
        }
        let (kept, count, _) = &*log.faults.lock().unwrap();
        assert_eq!((kept.len(), *count), (KEPT_FAULTS, 20));
        let e = PluginError::from(kept[0].clone()).to_string();
        assert_eq!(e, "plugin libx.so: Task::sample of task `t` panicked: 0");
    }

    #[test]
    fn a_fault_log_is_the_probe_the_registry_reads() {
        let log = Arc::new(FaultLog::new(Path::new("libx.so")));
        let mut registry = Registry::default();
        registry.add_fault_probe("libx.so", log.clone());
        let mark = registry.fault_mark();
        assert_eq!(registry.faults_since(&mark), Ok(()));
        log.record("Task::describe of task `t`", "panicked: one");
        log.record("Backend::name of backend `b`", "panicked: two");
        // The latest fault since the mark, naming plugin, call and message.
        let e = registry.faults_since(&mark).unwrap_err();
        assert_eq!(e.to_string(), "plugin libx.so: Backend::name of backend `b` panicked: two");
        // Faults before a mark are not new.
        let later = registry.fault_mark();
        assert_eq!(registry.faults_since(&later), Ok(()));
    }
}
