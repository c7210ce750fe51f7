//! The one engine builder: limits, cancellation, sandboxed imports, and every API module.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rhai::{Dynamic, Engine, Scope};
use sparsevar_experiment::results::{Provenance, resolve_path};

use crate::api::{self, Api};
use crate::error::ScriptError;
use crate::resolver::{SandboxResolver, inside, write_stays_inside};
use crate::{ScriptContext, ScriptOutcome};

/// The start of the message a script stops with at its time limit (how the error kind is
/// told apart from cancellation).
pub(crate) const TIME_LIMIT_PREFIX: &str = "the script ran past its time limit";

/// The engine's limits. Generous for experiment scripts (which spend their time inside
/// training, not in script operations) but finite, so a runaway script stops with a clear
/// message instead of hanging or exhausting memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Script operations before the script is stopped (`--max-operations`).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Expression nesting at the top level and inside functions.
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array (nested arrays count their elements too).
    pub max_array_size: usize,
    /// Entries in one object map.
    pub max_map_size: usize,
    /// Modules a script may import.
    pub max_modules: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000_000,
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 4 << 20,
            max_array_size: 1_000_000,
            max_map_size: 100_000,
            max_modules: 64,
        }
    }
}

/// What every registered function shares: the context and what the script has done so far.
pub(crate) struct State {
    pub ctx: ScriptContext,
    /// The folder imports and `load_config` are rooted at.
    pub script_dir: PathBuf,
    pub started: Instant,
    files: Mutex<Vec<PathBuf>>,
    output: Mutex<Vec<String>>,
    used_params: Mutex<BTreeSet<String>>,
    operations: AtomicU64,
    /// Every progress bar, stacked on stderr (hidden when stderr is not a terminal).
    bars: MultiProgress,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these lists half-written; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// Why the script must stop now, if it must: the cancel flag, the time limit, or the
    /// host's health check.
    pub fn stop_reason(&self) -> Option<String> {
        if self.ctx.cancel_flag().load(Ordering::Relaxed) {
            return Some("cancelled".into());
        }
        if let Some(limit) = self.ctx.time_limit
            && self.started.elapsed() > limit
        {
            return Some(format!("{TIME_LIMIT_PREFIX} of {:.0} s", limit.as_secs_f64()));
        }
        if let Some(check) = &self.ctx.health_check
            && let Err(e) = check()
        {
            return Some(format!("stopped: {e}"));
        }
        None
    }

    /// Remember a file or folder the script wrote.
    pub fn record(&self, p: &Path) {
        lock(&self.files).push(p.to_path_buf());
    }

    /// A line of output: `print` (stdout) or `log` (stderr).
    pub fn say(&self, line: &str, stderr: bool) {
        if self.ctx.echo {
            // Lines go above the bars, not through them.
            self.bars.suspend(|| if stderr { eprintln!("{line}") } else { println!("{line}") });
        }
        lock(&self.output).push(line.to_string());
    }

    /// A progress line on stderr (above the bars), not kept in the outcome's output.
    pub fn progress(&self, line: &str) {
        if self.ctx.echo {
            self.bars.suspend(|| eprintln!("{line}"));
        }
    }

    /// Plain progress lines for one `train` or `sweep`, if the context asks for them.
    pub fn progress_lines(&self) -> Option<sparsevar_experiment::workflow::ProgressLines> {
        self.ctx.progress_lines.then(sparsevar_experiment::workflow::ProgressLines::from_env)
    }

    /// `--set key` was read.
    pub fn used_param(&self, key: &str) {
        lock(&self.used_params).insert(key.to_string());
    }

    /// `rel` inside the out folder (its parent folders created); absolute paths and `..`
    /// are refused so a script writes nowhere else.
    pub fn out_path(&self, rel: &str) -> Result<PathBuf, String> {
        let p = Path::new(rel);
        if rel.is_empty() || !inside(&self.ctx.out_dir, p) {
            return Err(format!(
                "output path \"{rel}\" must be a file name relative to the out folder {} (no `..`, no leading `/`)",
                self.ctx.out_dir.display()
            ));
        }
        let full = self.ctx.out_dir.join(p);
        // Checked before a folder is made (it could be made through a link), and again
        // after, in case a link appeared in between.
        write_stays_inside(&self.ctx.out_dir, &full)?;
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_stays_inside(&self.ctx.out_dir, &full)?;
        Ok(full)
    }

    /// `rel` inside the script folder (for reading configs), refusing paths that leave it.
    pub fn script_file(&self, rel: &str) -> Result<PathBuf, String> {
        if !inside(&self.script_dir, Path::new(rel)) {
            return Err(format!(
                "\"{rel}\" is outside the script folder {}: give a path relative to it, without `..` or a leading `/`",
                self.script_dir.display()
            ));
        }
        Ok(self.script_dir.join(rel))
    }

    /// The provenance a results folder records.
    pub fn provenance(&self, backend: String, seeds: Vec<u64>) -> Provenance {
        let program = format!("sparsevar script {}", self.ctx.script_path.display());
        Provenance::new(program, self.ctx.git_revision.clone(), backend, rayon::current_num_threads(), seeds)
    }

    /// A progress bar on stderr below the others, hidden when stderr is not a terminal.
    pub fn progress_bar(&self, len: u64, template: &str) -> ProgressBar {
        let pb = self.bars.add(ProgressBar::new(len));
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    }
}

/// The script engine: limits, cancellation, sandboxed imports and the sparsevar API.
pub struct ScriptEngine {
    engine: Engine,
    state: Arc<State>,
    docs: api::Docs,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine").field("ctx", &self.state.ctx).finish_non_exhaustive()
    }
}

impl ScriptEngine {
    /// Build the engine for `ctx`: every limit of [`crate::Limits`], a progress callback that
    /// stops the script when the cancel flag is raised, the time limit passes or the health
    /// check fails, imports rooted at the script folder, `eval` disabled, undeclared
    /// variables and missing map properties as errors, and every API module. Touches no file.
    pub fn new(ctx: ScriptContext) -> Self {
        let script_dir = ctx.script_dir();
        let l = ctx.limits.clone();
        let ctx_echo_tty = ctx.echo && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let state = Arc::new(State {
            ctx,
            script_dir: script_dir.clone(),
            started: Instant::now(),
            files: Mutex::default(),
            output: Mutex::default(),
            used_params: Mutex::default(),
            operations: AtomicU64::new(0),
            bars: MultiProgress::with_draw_target(if ctx_echo_tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() }),
        });
        let mut engine = Engine::new();
        engine
            .set_max_operations(l.max_operations)
            .set_max_call_levels(l.max_call_levels)
            .set_max_expr_depths(l.max_expr_depth, l.max_function_expr_depth)
            .set_max_string_size(l.max_string_size)
            .set_max_array_size(l.max_array_size)
            .set_max_map_size(l.max_map_size)
            .set_max_modules(l.max_modules)
            .set_strict_variables(true)
            .set_fail_on_invalid_map_property(true)
            .set_module_resolver(SandboxResolver::new(script_dir, &state.ctx.script_path));
        // Code from strings would run outside the reviewed script text.
        engine.disable_symbol("eval");
        let st = state.clone();
        engine.on_print(move |s| st.say(s, false));
        let st = state.clone();
        engine.on_debug(move |s, _, pos| st.say(&format!("[debug {pos}] {s}"), true));
        let st = state.clone();
        engine.on_progress(move |ops| {
            st.operations.store(ops, Ordering::Relaxed);
            // The flag is one atomic load; the clock and the health check are dearer.
            if st.ctx.cancel_flag().load(Ordering::Relaxed) || ops % 4096 == 0 {
                return st.stop_reason().map(Dynamic::from);
            }
            None
        });
        let mut a = Api::new(&mut engine, state.clone());
        api::register_all(&mut a);
        let docs = a.finish();
        ScriptEngine { engine, state, docs }
    }

    /// The configured Rhai engine (for hosts that compile or inspect scripts themselves).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Run `source` as the script `ctx.script_path`: make the out folder, check the backend,
    /// compile, run.
    pub fn run(&self, source: &str) -> Result<ScriptOutcome, ScriptError> {
        let st = &self.state;
        let file = st.ctx.script_path.display().to_string();
        // Like a results folder, an out folder that holds files is never written into (links
        // and `..` resolved first, so `DONE/x/..` is `DONE`), unless the run continues it.
        let out = resolve_path(&st.ctx.out_dir);
        if !st.ctx.resume && std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
            return Err(ScriptError::setup(
                &file,
                format!(
                    "{} already holds results; choose another --out or remove it first (or pass --resume to continue a run cut short)",
                    st.ctx.out_dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(&st.ctx.out_dir)
            .map_err(|e| ScriptError::setup(&file, format!("cannot create the out folder {}: {e}", st.ctx.out_dir.display())))?;
        let reg = &st.ctx.registry;
        if !reg.backends.contains_key(&st.ctx.backend) {
            return Err(ScriptError::setup(&file, format!("backend `{}` is unknown; available backends: {}", st.ctx.backend, reg.backend_names().join(", "))));
        }
        let ast = self.engine.compile(source).map_err(|e| ScriptError::parse(&file, source, &e))?;
        let mut scope = Scope::new();
        self.engine.run_ast_with_scope(&mut scope, &ast).map_err(|e| ScriptError::runtime(&file, source, &st.script_dir, &e, st.ctx.limits.max_operations))?;
        let used = lock(&st.used_params).clone();
        let unused_params: Vec<String> = st.ctx.params.keys().filter(|k| !used.contains(*k)).cloned().collect();
        for k in &unused_params {
            st.say(&format!("warning: --set {k}=… was never read by the script (it reads keys with param(\"key\", default)); check the spelling"), true);
        }
        Ok(ScriptOutcome {
            out_dir: st.ctx.out_dir.clone(),
            files: lock(&st.files).clone(),
            output: lock(&st.output).clone(),
            unused_params,
            operations: st.operations.load(Ordering::Relaxed),
            seconds: st.started.elapsed().as_secs_f64(),
        })
    }

    /// The Markdown API reference of this engine's registrations.
    pub fn reference(&self) -> String {
        self.docs.markdown()
    }

    /// Every documented function name (for the test that nothing is registered undocumented).
    #[doc(hidden)]
    pub fn documented_names(&self) -> Vec<String> {
        self.docs.names()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use sparsevar_core::registry::Registry;

    /// The out folder holds links (made after the script started, or by another process):
    /// a write that would leave the folder through one is refused, others go ahead.
    #[test]
    fn output_paths_do_not_leave_the_out_folder_through_links() {
        let root = std::env::temp_dir().join(format!("sparsevar-out-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (out, elsewhere) = (root.join("out"), root.join("elsewhere"));
        for d in [&out, &elsewhere, &out.join("inner")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&elsewhere, out.join("link")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("f.csv"), out.join("file.csv")).unwrap();
        std::os::unix::fs::symlink(out.join("inner"), out.join("inward")).unwrap();
        std::os::unix::fs::symlink(root.join("missing"), out.join("dangling.csv")).unwrap();
        let engine = ScriptEngine::new(ScriptContext::new(root.join("s.rhai"), &out, Arc::new(Registry::builtin())));
        let st = &engine.state;
        for bad in ["link/x.csv", "link/deep/er/x.csv", "file.csv", "dangling.csv"] {
            let e = st.out_path(bad).unwrap_err();
            assert!(e.contains("outside the out folder") || e.contains("symbolic link to nowhere"), "{bad}: {e}");
        }
        assert!(!elsewhere.join("deep").exists(), "no folder made through the link");
        assert_eq!(st.out_path("inward/x.csv").unwrap(), out.join("inward/x.csv"));
        assert_eq!(st.out_path("new/sub/x.csv").unwrap(), out.join("new/sub/x.csv"));
        assert!(out.join("new/sub").is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
