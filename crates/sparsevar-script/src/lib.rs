//! sparsevar-script: experiments as Rhai scripts.
//!
//! A script builds tasks and models, trains ensembles, runs sample-complexity sweeps, and
//! writes tables and figures — the whole study in one readable file:
//!
//! ```rhai
//! let task = sparse_parity(16, 3);
//! let run = train(task, transformer(), #{ samples: 1000, seeds: [0, 1] });
//! print(`learned: ${run.learned}`);
//! plot_attention(run, 0, "attention.png");
//! ```
//!
//! **Only sparsevar-script knows Rhai.** The rest of the workspace sees three things:
//! [`run_script`] (and [`run_inline`] for the book's code blocks), the [`ScriptContext`] that
//! says where the script is, where its results go and which backend it trains on, and
//! [`ScriptError`], whose `Display` is `file:line:col: message` followed by the offending
//! source line and a caret.
//!
//! The design decision that shapes the crate: there is **one engine builder**
//! ([`ScriptEngine::new`]) that sets every limit (operations, call depth, expression depth,
//! string, array and map sizes), a progress callback that stops the script when the
//! [cancel flag](ScriptContext::cancel_flag) is raised or its time limit passes, and a module
//! resolver rooted at the script's folder. Every script function is registered through one
//! table that also holds its signature and a one-line doc, so [`api_reference`] is generated
//! from the registrations themselves and cannot drift from them. Registered functions never
//! panic: each returns an error carrying the script position of its call.
//!
//! Script values are cheap handles (an `Arc` inside): `Task`, `Model`, `Attention`,
//! `Experiment`, `SweepPlan`, `TrainResult`, `SweepResult`, `Progress`. Training and sweeps
//! write their results folders (config.yaml, metrics.csv / runs.csv, summary.json) under the
//! script's out folder as they go, so a later error in the script loses no finished result.

mod api;
mod engine;
mod error;
mod resolver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sparsevar_core::registry::Registry;

pub use engine::{Limits, ScriptEngine};
pub use error::{ErrorKind, ScriptError};

/// A check the host runs while a script trains (e.g. "has a plugin panicked?"); an `Err`
/// stops the script with that message.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Everything a script run needs from its host: where the script is, where results go, what
/// to train on, and the knobs the command line sets.
#[derive(Clone)]
pub struct ScriptContext {
    /// The script file. Errors name it as given; `import` and `load_config` resolve relative
    /// to its folder and refuse anything outside that folder. For [`run_inline`] it only
    /// names the source and roots imports (it need not exist).
    pub script_path: PathBuf,
    /// Where the script's results go (created if missing). Each `train` and `sweep` writes a
    /// fresh subfolder; `save_*` and `plot_*` take paths relative to it. Give every run its
    /// own folder: files a script saves under the same name are overwritten.
    pub out_dir: PathBuf,
    /// The registered backend `train` and `sweep` use unless their options name another
    /// (`auto` must be resolved by the host first).
    pub backend: String,
    /// Every task, attention variant and backend the host knows, plugins included.
    pub registry: Arc<Registry>,
    /// Quick mode (`quick()` in scripts): scripts shrink their work to a few seconds.
    pub quick: bool,
    /// Continue a script run cut short: each `sweep` resumes the folder of its name under
    /// `out_dir` (only its units without a result train; a finished sweep is read back
    /// without training) instead of taking a fresh, numbered one. A folder planned from
    /// another config is refused. `train` calls train afresh either way.
    pub resume: bool,
    /// `--set key=value` pairs, read by `param("key", default)`.
    pub params: BTreeMap<String, String>,
    /// Worker threads of the pool the script runs in (default: one per core). Results do not
    /// depend on it.
    pub threads: Option<usize>,
    /// The engine's limits.
    pub limits: Limits,
    /// Stop the script (at its next operation or training evaluation) after this long.
    pub time_limit: Option<Duration>,
    /// Echo `print` to stdout and `log` to stderr (on by default; the outcome keeps both
    /// either way).
    pub echo: bool,
    /// The git revision to record in each results folder's provenance.
    pub git_revision: Option<String>,
    /// Print a plain progress line on stderr every few seconds while `train` and `sweep` run
    /// (for output that is not a terminal, where the bars draw nothing; the interval is
    /// `workflow::ProgressLines::from_env`'s). Off by default.
    pub progress_lines: bool,
    /// Run at every training evaluation and now and then between operations.
    pub health_check: Option<HealthCheck>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for ScriptContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptContext")
            .field("script_path", &self.script_path)
            .field("out_dir", &self.out_dir)
            .field("backend", &self.backend)
            .field("quick", &self.quick)
            .field("params", &self.params)
            .field("threads", &self.threads)
            .field("limits", &self.limits)
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

impl ScriptContext {
    /// A context with the defaults: backend `cpu`, full mode, no params, every core, the
    /// default [`Limits`], no time limit, echo on.
    pub fn new(script_path: impl Into<PathBuf>, out_dir: impl Into<PathBuf>, registry: Arc<Registry>) -> Self {
        ScriptContext {
            script_path: script_path.into(),
            out_dir: out_dir.into(),
            backend: "cpu".into(),
            registry,
            quick: false,
            resume: false,
            params: BTreeMap::new(),
            threads: None,
            limits: Limits::default(),
            time_limit: None,
            echo: true,
            git_revision: None,
            progress_lines: false,
            health_check: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag that stops the script: store `true` (e.g. from a Ctrl-C handler) and the
    /// script stops at its next operation, training evaluation or sweep ensemble, with
    /// [`ErrorKind::Cancelled`]. Results written so far stay on disk.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// The folder imports and `load_config` paths are relative to.
    pub fn script_dir(&self) -> PathBuf {
        match self.script_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// What a finished script did.
#[derive(Clone, Debug, Default)]
pub struct ScriptOutcome {
    /// The out folder.
    pub out_dir: PathBuf,
    /// Every file and results folder the script's API calls wrote, in order.
    pub files: Vec<PathBuf>,
    /// Every line of `print` and `log`, and the notes the API adds (`trained …`, `swept …`,
    /// warnings), in order.
    pub output: Vec<String>,
    /// `--set` keys the script never read with `param` (probably misspelt).
    pub unused_params: Vec<String>,
    /// Operations the engine counted.
    pub operations: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Run the script file `ctx.script_path` inside a worker pool of `ctx.threads` threads.
///
/// Errors: [`ErrorKind::Setup`] when the file cannot be read, the out folder cannot be
/// made or the backend is unknown; otherwise the script's own parse or runtime error, the
/// operation limit, cancellation or the time limit — always with the file, line and column.
pub fn run_script(ctx: ScriptContext) -> Result<ScriptOutcome, ScriptError> {
    let path = ctx.script_path.clone();
    let source = std::fs::read_to_string(&path).map_err(|e| ScriptError::setup(&path.display().to_string(), format!("cannot read the script: {e}")))?;
    in_pool(ctx.threads, &path, move || ScriptEngine::new(ctx).run(&source))
}

/// Run `source` as if it were the file `ctx.script_path` (which need not exist): for the
/// book's code blocks and for tests. Line numbers in errors count from the first line of
/// `source`.
pub fn run_inline(source: &str, ctx: ScriptContext) -> Result<ScriptOutcome, ScriptError> {
    let path = ctx.script_path.clone();
    in_pool(ctx.threads, &path, move || ScriptEngine::new(ctx).run(source))
}

/// Markdown reference of every script function, property and option key, generated from
/// the registrations (for the book's reference chapter).
pub fn api_reference() -> String {
    let ctx = ScriptContext::new("script.rhai", "out", Arc::new(Registry::builtin()));
    ScriptEngine::new(ctx).reference()
}

/// Run `f` in a rayon pool of `threads` workers: launching kernels from inside the pool
/// costs far less than handing work in from outside.
fn in_pool<T: Send>(threads: Option<usize>, path: &Path, f: impl FnOnce() -> Result<T, ScriptError> + Send) -> Result<T, ScriptError> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        b = b.num_threads(n);
    }
    let pool = b.build().map_err(|e| ScriptError::setup(&path.display().to_string(), format!("cannot start worker threads: {e}")))?;
    pool.install(f)
}
