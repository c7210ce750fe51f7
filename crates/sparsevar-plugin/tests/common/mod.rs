//! Shared by the loader tests: building plugins as real shared libraries, and small runs.
//!
//! Plugins are built by running cargo from the test, with a target directory of their own
//! (`target/tmp/plugin-target`): the `cargo test` that runs us holds the lock of the main
//! one. The example plugins are built from the workspace; the deliberately broken ones are
//! written by the test as one small cargo workspace under `target/tmp/broken-plugins`
//! (depending on sparsevar-plugin by path), so sparsevar-core is compiled once for all of
//! them. Both builds are incremental: a second run only checks that nothing changed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sparsevar_core::model::{ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{EnsembleResult, RunSpec, Trainer};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Cargo's scratch directory for integration tests (`target/tmp`).
pub fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The target directory of the plugin builds (distinct from the one `cargo test` locks).
pub fn plugin_target() -> PathBuf {
    scratch().join("plugin-target")
}

/// `lib<name>.so` (or this system's spelling) of crate `name` in `dir`.
pub fn library(dir: &Path, crate_name: &str) -> PathBuf {
    dir.join(format!("{}{crate_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX))
}

fn cargo_build(manifest: &Path, packages: &[&str]) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build").arg("--manifest-path").arg(manifest).arg("--target-dir").arg(plugin_target());
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Do not let the outer build's settings leak into this one.
    cmd.env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR");
    let out = cmd.output().expect("run cargo");
    assert!(out.status.success(), "building {packages:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The example plugins, freshly built as shared libraries: (task, attention, backend).
pub fn example_plugins() -> &'static (PathBuf, PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        cargo_build(&workspace().join("Cargo.toml"), &["sparse-sum-task", "sharp-attention", "reference-backend"]);
        let dir = plugin_target().join("debug");
        let libs = (library(&dir, "sparse_sum_task"), library(&dir, "sharp_attention"), library(&dir, "reference_backend"));
        for l in [&libs.0, &libs.1, &libs.2] {
            assert!(l.is_file(), "{} was not built", l.display());
        }
        libs
    })
}

/// The broken plugins: crate name → source of its `lib.rs`. Each is a cdylib depending on
/// sparsevar-plugin only (and `not_a_plugin` on nothing).
const BROKEN: &[(&str, &str)] = &[
    (
        "abi_mismatch",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    r.task("from_abi_mismatch", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
}
sparsevar_plugin::export_plugin!(@with register, name = "abi_mismatch", version = "1.0.0",
    abi_version = 999,
    compat = sparsevar_plugin::CompatRecord::this_build("abi_mismatch", "1.0.0", true));
"#,
    ),
    (
        "compiler_mismatch",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    r.task("from_compiler_mismatch", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
}
sparsevar_plugin::export_plugin!(@with register, name = "compiler_mismatch", version = "1.0.0",
    abi_version = sparsevar_plugin::ABI_VERSION,
    compat = sparsevar_plugin::CompatRecord::this_build("compiler_mismatch", "1.0.0", true)
        .with_rustc("rustc 1.0.0 (a59de37e9 2015-05-13)"));
"#,
    ),
    (
        "crate_mismatch",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    r.task("from_crate_mismatch", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
}
sparsevar_plugin::export_plugin!(@with register, name = "crate_mismatch", version = "1.0.0",
    abi_version = sparsevar_plugin::ABI_VERSION,
    compat = sparsevar_plugin::CompatRecord::this_build("crate_mismatch", "1.0.0", true)
        .with_interface_version("0.0.1"));
"#,
    ),
    (
        "abort_strategy",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    r.task("from_abort_strategy", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
}
// As if built with panic = "abort": its guards could not catch anything.
sparsevar_plugin::export_plugin!(@with register, name = "abort_strategy", version = "1.0.0",
    abi_version = sparsevar_plugin::ABI_VERSION,
    compat = sparsevar_plugin::CompatRecord::this_build("abort_strategy", "1.0.0", false));
"#,
    ),
    (
        "register_panics",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    std::panic::set_hook(Box::new(|_| {})); // this library's own std: keep the test output quiet
    r.task("registered_before_the_panic", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
    panic!("register_panics: cannot find my configuration");
}
sparsevar_plugin::export_plugin!(register);
"#,
    ),
    (
        "clashes_with_builtin",
        r#"
pub fn register(r: &mut dyn sparsevar_plugin::Registrar) {
    r.task("fresh_name_before_the_clash", |_, _| Err(sparsevar_plugin::TaskError::invalid("never called")));
    r.attention("softmax", || Box::new(sparsevar_plugin::core::attention::Softmax));
}
sparsevar_plugin::export_plugin!(register);
"#,
    ),
    (
        "panicky",
        r#"
//! Tasks, attention variants and a backend that fail in every way a guard must survive.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use sparsevar_plugin::{Attention, AttentionError, Backend, BackendError, BufferId, Graph, Kernel, NodeId, Pcg32, Registrar, Task, TaskError, TaskSpec, Update};

/// Label = the first bit. `mode` says how it misbehaves once `sample` has been called
/// `after` times (all clones counting together): "panic" panics, "error" returns an error,
/// "label" returns a label outside the two classes, "describe" panics in `describe` only.
/// With `task.params.fail_seed`, only the member with that seed misbehaves.
#[derive(Clone, Debug)]
struct Flaky { t: usize, mode: &'static str, after: usize, active: bool, calls: Arc<AtomicUsize> }

impl Task for Flaky {
    fn name(&self) -> &str {
        match self.mode { "panic" => "sample_panics", "error" => "sample_fails", "label" => "bad_label", _ => "describe_panics" }
    }
    fn seq_len(&self) -> usize { self.t }
    fn alphabet(&self) -> usize { 2 }
    fn num_classes(&self) -> usize { 2 }
    fn relevant(&self) -> &[usize] { &[0] }
    fn clean_label(&self, tokens: &[u8]) -> u8 { tokens[0] }
    fn sample(&self, rng: &mut Pcg32, tokens: &mut [u8]) -> Result<u8, TaskError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.active && n >= self.after {
            match self.mode {
                "panic" => panic!("sample_panics: sample number {n} exploded"),
                "error" => return Err(TaskError::Failed { task: "sample_fails".into(), message: format!("the table ran out at sample {n}") }),
                _ => {}
            }
        }
        for x in tokens.iter_mut() { *x = rng.below(2) as u8; }
        Ok(if self.mode == "label" && self.active { 7 } else { tokens[0] })
    }
    fn describe(&self) -> String {
        if self.mode == "describe" { panic!("describe_panics: lost for words") }
        format!("{} T={}", self.name(), self.t)
    }
}

fn flaky(spec: &TaskSpec, seed: u64, mode: &'static str) -> Result<Box<dyn Task>, TaskError> {
    let after = spec.params.get("after").copied().unwrap_or(0.0) as usize;
    let active = spec.params.get("fail_seed").is_none_or(|&s| s as u64 == seed);
    Ok(Box::new(Flaky { t: spec.t, mode, after, active, calls: Arc::new(AtomicUsize::new(0)) }))
}

#[derive(Clone, Debug)]
struct Exploding;
impl Attention for Exploding {
    fn name(&self) -> &str { "weights_panic" }
    fn weights(&self, _g: &mut Graph, _scores: NodeId, _head_dim: usize) -> Result<NodeId, AttentionError> {
        panic!("weights_panic: no weights today")
    }
}

#[derive(Clone, Debug)]
struct Refusing;
impl Attention for Refusing {
    fn name(&self) -> &str { "weights_error" }
    fn weights(&self, _g: &mut Graph, _scores: NodeId, _head_dim: usize) -> Result<NodeId, AttentionError> {
        Err(AttentionError::Failed { variant: "weights_error".into(), message: "heads must be odd".into() })
    }
}

struct LaunchPanics;
impl Backend for LaunchPanics {
    fn name(&self) -> String { "launch_panics".into() }
    fn alloc(&mut self, _len: usize) -> Result<BufferId, BackendError> { Ok(BufferId(0)) }
    fn write(&mut self, _b: BufferId, _d: &[f64]) -> Result<(), BackendError> { Ok(()) }
    fn read(&mut self, _b: BufferId, _o: &mut Vec<f64>) -> Result<(), BackendError> { Ok(()) }
    fn launch(&mut self, k: &Kernel, _i: &[BufferId], _o: BufferId) -> Result<(), BackendError> {
        panic!("launch_panics: cannot run {}", k.name())
    }
    fn update(&mut self, _u: &Update, _b: &[BufferId]) -> Result<(), BackendError> { Ok(()) }
}

pub fn register(r: &mut dyn Registrar) {
    // This library has its own std, whose panic messages the test harness does not capture:
    // keep them quiet (the guards still catch every panic and report its message).
    std::panic::set_hook(Box::new(|_| {}));
    r.task("sample_panics", |spec, seed| flaky(spec, seed, "panic"));
    r.task("sample_fails", |spec, seed| flaky(spec, seed, "error"));
    r.task("bad_label", |spec, seed| flaky(spec, seed, "label"));
    r.task("describe_panics", |spec, seed| flaky(spec, seed, "describe"));
    r.task("factory_panics", |_, _| panic!("factory_panics: out of ideas"));
    r.attention("weights_panic", || Box::new(Exploding));
    r.attention("weights_error", || Box::new(Refusing));
    r.backend("launch_panics", || Ok(Box::new(LaunchPanics)));
}
sparsevar_plugin::export_plugin!(register);
"#,
    ),
    (
        "not_a_plugin",
        r#"
//! A perfectly good shared library that is not a sparsevar plugin.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn hello() -> u32 { 42 }
"#,
    ),
];

/// Write `path` only if its content changes, so that cargo sees nothing new on a rerun.
fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create dir");
        std::fs::write(path, text).expect("write file");
    }
}

/// Build every broken plugin (one cargo workspace, one build) and return the directory
/// holding the libraries; `library(dir, name)` finds each.
pub fn broken_plugins() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = scratch().join("broken-plugins");
        let interface = workspace().join("crates/sparsevar-plugin");
        let members: Vec<String> = BROKEN.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        write_if_changed(
            &root.join("Cargo.toml"),
            &format!(
                "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n[profile.dev]\ndebug = false\n",
                members.join(", ")
            ),
        );
        // The workspace's lock file: the same dependency versions, no registry lookups.
        let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).expect("read Cargo.lock");
        if !root.join("Cargo.lock").exists() {
            write_if_changed(&root.join("Cargo.lock"), &lock);
        }
        for (name, source) in BROKEN {
            let deps = if *name == "not_a_plugin" {
                String::new()
            } else {
                format!("sparsevar-plugin = {{ path = {:?} }}\n", interface.display().to_string())
            };
            write_if_changed(
                &root.join(name).join("Cargo.toml"),
                &format!(
                    "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\nedition = \"2024\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{deps}"
                ),
            );
            write_if_changed(&root.join(name).join("src/lib.rs"), source);
        }
        let names: Vec<&str> = BROKEN.iter().map(|(n, _)| *n).collect();
        cargo_build(&root.join("Cargo.toml"), &names);
        plugin_target().join("debug")
    })
}

/// A small ensemble run of `task` with a transformer using `attention`.
pub fn small_run(task: TaskSpec, attention: &str, seeds: Vec<u64>) -> RunSpec {
    RunSpec {
        task,
        model: ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, attention: attention.into(), ..TransformerConfig::default() }),
        train: TrainConfig { samples: 200, batch: 16, max_steps: 40, eval_every: 20, test_samples: 64, ..TrainConfig::default() },
        seeds,
        samples: None,
    }
}

/// The `sparse_sum` task with `alphabet` letters.
pub fn sparse_sum(t: usize, s: usize, alphabet: usize) -> TaskSpec {
    let mut spec = TaskSpec::new("sparse_sum", t, s);
    spec.params.insert("alphabet".into(), alphabet as f64);
    spec
}

/// Train `spec` on `backend` with `registry`; the result and every parameter afterwards.
pub fn train(backend: &mut dyn sparsevar_core::backend::Backend, spec: RunSpec, registry: &Registry) -> (EnsembleResult, Vec<Vec<f64>>) {
    let mut t = Trainer::new(backend, spec, registry).expect("trainer");
    let r = t.run(&mut |_| true).expect("run");
    let p = t.parameters().expect("parameters");
    (r, p)
}

/// Everything of a result that must repeat bit for bit (wall time excluded).
pub fn fingerprint(r: &EnsembleResult) -> String {
    let curves: Vec<_> = r.curves.iter().map(|c| (c.member, c.step, c.train_loss.to_bits(), c.test_loss.to_bits(), c.test_accuracy.to_bits())).collect();
    format!("{:?}\n{curves:?}\n{}", r.members, r.steps)
}

/// Copies of a freshly built plugin, truncated at several lengths or with header bytes
/// overwritten, in a folder of their own; (path, what was done) each.
pub fn corrupted_copies(dir: &Path) -> Vec<(PathBuf, String)> {
    let good = std::fs::read(&example_plugins().0).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut out = Vec::new();
    let mut write = |name: &str, bytes: &[u8], what: String| {
        let p = library(dir, name);
        std::fs::write(&p, bytes).unwrap();
        out.push((p, what));
    };
    // Where the loadable segments end (ELF64 little-endian program headers): cutting inside
    // them made dlopen crash with SIGBUS; cuts past them kept headers the loader trusted.
    let u64_at = |at: usize| u64::from_le_bytes(good[at..at + 8].try_into().unwrap()) as usize;
    let u16_at = |at: usize| u16::from_le_bytes(good[at..at + 2].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    let loaded_end = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&h| u32::from_le_bytes(good[h..h + 4].try_into().unwrap()) == 1)
        .map(|h| u64_at(h + 8) + u64_at(h + 32))
        .max()
        .expect("a PT_LOAD segment");
    for (name, len) in [("cut_64", 64), ("cut_4k", 4096), ("cut_in_segments", loaded_end / 2), ("cut_half", good.len() / 2), ("cut_end", good.len() - 100)] {
        write(name, &good[..len], format!("truncated to {len} of {} bytes", good.len()));
    }
    // ELF header fields (64-bit little-endian layout): class, machine, program and section
    // header offsets.
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    write("bad_class", &patch(4, &[1]), "EI_CLASS set to 32-bit".into());
    write("bad_machine", &patch(18, &40u16.to_le_bytes()), "e_machine set to ARM".into());
    write("bad_phoff", &patch(32, &(u64::MAX / 2).to_le_bytes()), "e_phoff past the end".into());
    write("bad_shoff", &patch(40, &(good.len() as u64 - 8).to_le_bytes()), "e_shoff near the end".into());
    out
}
