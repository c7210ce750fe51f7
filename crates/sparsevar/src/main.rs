//! `sparsevar`: the command-line program.
//!
//! Ties the crates together: reads configs, picks the backend, and hands training and sweeps
//! to the workflows of sparsevar-experiment, displaying their progress and results; measures
//! throughput. Errors print as one line (with their cause chain); the exit status comes from
//! the error's kind, never its text: 2 for the user's input, 1 for a failure while running
//! (a figure that could not be written included), 130 for `train` stopped by Ctrl-C.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sparsevar_core::backend::BackendError;
use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_experiment::budget::{self, Knob};
use sparsevar_experiment::config::{ConfigError, ExperimentConfig, TrainConfig};
use sparsevar_experiment::results::{Provenance, ResultsError, fresh_dir, holds_files, resolve_path};
use sparsevar_experiment::sweep::{SweepConfig, SweepOutcome, open_sweep, run_sweep};
use sparsevar_experiment::train::{RunSpec, Trainer};
use sparsevar_experiment::units;
use sparsevar_experiment::workflow::{Event, Observer, ProgressLines, RunError, resumable, resume_train, run_train, waiting_line};
use std::sync::Arc;

mod compare;
mod eval;
mod figures;
mod host;
mod slurm;
use host::Host;

#[derive(Parser, Debug)]
#[command(name = "sparsevar", version, about = "Sparse variable creation in self-attention: train transformer ensembles on sparse Boolean tasks")]
struct Cli {
    /// Directory of plugin libraries to load (also: SPARSEVAR_PLUGIN_PATH; the build output
    /// next to this program is always searched).
    #[arg(long, global = true)]
    plugins: Option<PathBuf>,
    /// No progress output: neither the bar on a terminal nor, when output is not a terminal,
    /// the plain progress line printed every few seconds (train, sweep, run).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the ensemble a YAML config describes and write a results folder.
    Train {
        /// Experiment config (YAML), e.g. scripts/parity_t16.yaml.
        config: PathBuf,
        /// Results folder (default: runs/<config name>, numbered if taken). An existing
        /// folder that holds results is never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Compute backend: cpu, cpu-f64, wgpu, auto or a plugin's (overrides `backend:`).
        #[arg(long)]
        backend: Option<String>,
        /// Continue the run in --out from its last checkpoint (train.checkpoint_every); it
        /// ends exactly where an uninterrupted run ends. Needs the same config.
        #[arg(long, requires = "out")]
        resume: bool,
        /// Overrides, e.g. train.lr=0.003 seeds=[0,1] task.T=32.
        overrides: Vec<String>,
    },
    /// Sample-complexity sweep: m*(T) per model, fits, baselines (see scripts/sweep_quick.yaml).
    /// `sweep work DIR` and `sweep collect DIR` run and merge the units of a planned sweep.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sweep {
        #[command(subcommand)]
        action: Option<SweepAction>,
        /// Sweep config (YAML).
        #[arg(required = true)]
        config: Option<PathBuf>,
        /// Results folder (default: runs/<config name>, numbered if taken).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the sweep in --out: run the units that have no result.
        #[arg(long)]
        resume: bool,
        /// Only write the plan (config.yaml, units/NNNN.json) into --out and print how many
        /// units it holds; run them with `sweep work`, merge them with `sweep collect`.
        #[arg(long)]
        plan: bool,
        /// Who runs the units: inprocess (this process), local (--workers processes of
        /// this program on this machine, the threads split between them) or slurm (a Slurm
        /// job array; see --slurm, --max-parallel, --resubmit, --submit-only).
        #[arg(long, default_value = "inprocess")]
        executor: String,
        /// Worker processes of `--executor local` (default 2).
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        slurm: slurm::SlurmArgs,
        /// Compute backend: cpu, cpu-f64, wgpu, auto or a plugin's (overrides `backend:`).
        #[arg(long)]
        backend: Option<String>,
        /// Overrides, e.g. sweep.T=[8,16] train.max_steps=2000.
        overrides: Vec<String>,
    },
    /// Measure training throughput (model-steps per second) on synthetic sparse parity.
    Bench {
        /// paper1l (the one-layer transformer) or mlp.
        #[arg(long, default_value = "paper1l")]
        model: String,
        #[arg(long = "T", default_value_t = 64)]
        t: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Ensemble size R.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Timed steps per repeat.
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// Timed repeats; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Compute backend: cpu, cpu-f64, wgpu, auto or a plugin's.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
        /// Also time every kernel of one step (after the timed repeats) and print a table.
        #[arg(long)]
        profile: bool,
    },
    /// List the backends, every GPU adapter wgpu sees, tasks and attention variants.
    Info,
    /// Run a Rhai experiment script (see scripts/*.rhai).
    Run {
        /// The script, e.g. scripts/01_quickstart.rhai.
        script: PathBuf,
        /// Results folder (default: runs/<script name>, numbered if taken).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Compute backend: cpu, cpu-f64, wgpu, auto or a plugin's.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Tell the script to shrink its work (`quick()` returns true).
        #[arg(long)]
        quick: bool,
        /// Continue a run cut short (needs --out, with the same script and --set): each sweep
        /// resumes its folder there, only units without a result train; train calls rerun.
        #[arg(long)]
        resume: bool,
        /// Parameters for the script's `param("key", default)`, e.g. --set T_max=64.
        #[arg(long = "set")]
        set: Vec<String>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Operation limit of the script engine.
        #[arg(long)]
        max_operations: Option<u64>,
    },
    /// Reopen the saved members of a training run (RUN_DIR/weights/*.safetensors), or one
    /// weights file such as a sweep member's: print their accuracy on fresh samples of the
    /// task (or on --inputs) and write the logits, the inputs and attention maps into
    /// RUN_DIR/eval/seed-<n>/ (for a file: <file>.eval/seed-<n>/ beside it).
    Eval {
        /// A folder written by `sparsevar train`, or a weights file (e.g. a sweep's
        /// weights/<model>/T16-m64-seed-3.safetensors).
        dir: PathBuf,
        /// Only the member with this seed (default: every member).
        #[arg(long)]
        member: Option<u64>,
        /// A file of inputs: one per line, T tokens separated by spaces or commas (or T
        /// digits written together, e.g. 0110); blank lines and lines starting with # are
        /// skipped. Accuracy is against the task's noise-free labels.
        #[arg(long, conflicts_with = "samples")]
        inputs: Option<PathBuf>,
        /// Evaluate on N fresh samples of the run's task (default 1024).
        #[arg(long)]
        samples: Option<usize>,
        /// Draw the attention maps of the first K inputs.
        #[arg(long, default_value_t = 4)]
        attention: usize,
        /// Where to write (default: RUN_DIR/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Compute backend (default: the run's).
        #[arg(long)]
        backend: Option<String>,
    },
    /// Redraw the figures of a results folder (training or sweep) into DIR/figures.
    Plot {
        /// A folder written by `sparsevar train` or `sparsevar sweep`.
        dir: PathBuf,
    },
    /// Compare finished runs: a table of the config keys that differ and each run's outcome;
    /// with --out, the table (compare.csv, compare.md) and one figure overlaying the runs'
    /// curves (compare.png, compare.svg). All training folders or all sweep folders.
    Compare {
        /// Two or more results folders written by `sparsevar train` (or all by `sparsevar sweep`).
        dirs: Vec<PathBuf>,
        /// Folder for the table and the figure (created if missing; files already there
        /// under those names are never overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a generated reference in Markdown: `config` (every YAML key, its default and
    /// meaning).
    Reference {
        /// config
        what: String,
    },
    /// List every plugin file on the search path: name, version, what it registers, or why
    /// it did not load.
    Plugins,
}

#[derive(Subcommand, Debug)]
enum SweepAction {
    /// Run units of the sweep planned in DIR: one (--unit I; nothing if its result exists),
    /// or claim units until none is left (--claim).
    Work {
        dir: PathBuf,
        #[arg(long, conflicts_with = "claim", required_unless_present = "claim")]
        unit: Option<usize>,
        #[arg(long)]
        claim: bool,
        /// Worker threads (default: the config's `threads`, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Merge the unit results in DIR into runs.csv, summary.json and the figures; lists the
    /// units still missing (exit status 1) instead of writing a partial summary.
    Collect { dir: PathBuf },
}

/// Who runs a sweep's units. (A cluster executor adds its variant here.)
#[derive(Clone, Copy, Debug, PartialEq)]
enum Executor {
    /// This process, one unit after another.
    InProcess,
    /// `workers` processes of this program (`sweep work DIR --claim`) on this machine.
    Local { workers: usize },
    /// A Slurm job array, one task per unit (`sweep work DIR --unit $SLURM_ARRAY_TASK_ID`).
    Slurm,
}

impl Executor {
    fn parse(name: &str, workers: Option<usize>) -> Result<Self> {
        if workers == Some(0) {
            return bad("--workers 0: a sweep needs at least 1 worker process");
        }
        match name {
            "inprocess" if workers.is_some() => bad("--workers applies to --executor local only"),
            "inprocess" => Ok(Executor::InProcess),
            "local" => Ok(Executor::Local { workers: workers.unwrap_or(2) }),
            "slurm" if workers.is_some() => bad("--workers applies to --executor local only (Slurm runs one task per unit; cap them with --max-parallel K)"),
            "slurm" => Ok(Executor::Slurm),
            other => bad(format!("--executor `{other}` is unknown; known: inprocess, local, slurm")),
        }
    }
}

/// An error caused by the user's input (exit status 2).
#[derive(Debug)]
struct BadInput(String);
impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadInput {}

fn bad<T>(msg: impl Into<String>) -> Result<T> {
    Err(BadInput(msg.into()).into())
}

/// How a command ended other than by success or an error of the libraries.
#[derive(Debug, thiserror::Error)]
enum Exit {
    /// `train` stopped by Ctrl-C, its summary written (exit status 130).
    #[error("interrupted at step {step}; the results so far are in {} (summary.json says \"interrupted\": true)", dir.display())]
    Interrupted { step: usize, dir: PathBuf },
    /// Figures that could not be written, each already reported (exit status 1).
    #[error("{count} figure(s) could not be written; the results themselves are complete in {}", dir.display())]
    Figures { count: usize, dir: PathBuf },
}

/// The exit status of a failed command, from the kinds of error in its chain.
fn exit_status(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if c.is::<BadInput>() || c.is::<ConfigError>() {
            return 2;
        }
        if let Some(e) = c.downcast_ref::<RunError>() {
            return if e.is_input() { 2 } else { 1 };
        }
        if let Some(e) = c.downcast_ref::<ResultsError>() {
            return if e.is_input() { 2 } else { 1 };
        }
        if let Some(e) = c.downcast_ref::<sparsevar_experiment::weights::WeightsError>() {
            return if e.is_input() { 2 } else { 1 };
        }
        if let Some(e) = c.downcast_ref::<sparsevar_slurm::SlurmError>() {
            return if e.is_input() { 2 } else { 1 };
        }
        if let Some(Exit::Interrupted { .. }) = c.downcast_ref::<Exit>() {
            return 130;
        }
    }
    1
}

#[allow(unsafe_code)]
fn main() -> ExitCode {
    // Before any thread or Vulkan instance exists: on a headless NVIDIA node, the packaged
    // ICD manifest names a library that cannot create an instance without X; let the loader
    // also read one naming NVIDIA's EGL library (see sparsevar_wgpu::nvidia_egl_driver_env).
    for (key, value) in sparsevar_wgpu::nvidia_egl_driver_env() {
        // SAFETY: the process is single-threaded here, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    sparsevar_experiment::units::set_build(&git_revision().unwrap_or_default());
    let host = Host::new(cli.plugins.as_deref());
    if !matches!(cli.command, Command::Plugins) {
        host.warn_load_errors();
    }
    // --backend is an override of the config's `backend:` key.
    let with_backend = |mut o: Vec<String>, b: Option<String>| {
        o.extend(b.map(|b| format!("backend={b}")));
        o
    };
    let result = match cli.command {
        Command::Train { config, out, backend, resume, overrides } => train(&host, &config, out, resume, &with_backend(overrides, backend)),
        Command::Sweep { action: Some(SweepAction::Work { dir, unit, claim: _, threads }), .. } => sweep_work(&host, &resolve_path(&dir), unit, threads),
        Command::Sweep { action: Some(SweepAction::Collect { dir }), .. } => sweep_collect(&host, &resolve_path(&dir)),
        Command::Sweep { action: None, config, out, resume, plan, executor, workers, slurm, backend, overrides } => {
            let config = config.expect("clap requires the config");
            Executor::parse(&executor, workers).and_then(|ex| sweep(&host, &config, out, resume, plan, ex, &slurm, &with_backend(overrides, backend)))
        }
        Command::Bench { model, t, batch, runs, steps, repeats, threads, backend, json, profile } => {
            bench(&host, &model, t, batch, runs, steps, repeats, threads, &backend, json, profile)
        }
        Command::Info => info(&host),
        Command::Run { script, out, backend, quick, resume, set, threads, max_operations } => {
            run_script(host, &script, out, &backend, ScriptMode { quick, resume }, &set, threads, max_operations)
        }
        Command::Eval { dir, member, inputs, samples, attention, out, backend } => {
            eval::eval(&host, eval::EvalArgs { dir: resolve_path(&dir), member, inputs, samples, attention, out: out.as_deref().map(resolve_path), backend })
        }
        Command::Plot { dir } => figures::redraw(&dir).and_then(|drawn| {
            drawn.files.iter().for_each(|f| println!("{}", f.display()));
            drawn.check(&dir)
        }),
        Command::Compare { dirs, out } => compare::run(&dirs, out.as_deref()),
        Command::Reference { what } => reference(&what),
        Command::Plugins => list_plugins(&host),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without a cause its error already spelled out ("{path}: {source}").
            let mut chain: Vec<String> = Vec::new();
            for c in e.chain().map(|c| c.to_string()) {
                if !chain.last().is_some_and(|l| l.ends_with(&c)) {
                    chain.push(c);
                }
            }
            let status = exit_status(&e);
            if status == 130 {
                eprintln!("{}", chain.join(": "));
            } else {
                eprintln!("error: {}", chain.join(": "));
            }
            ExitCode::from(status)
        }
    }
}

/// Run `f` inside a rayon pool of `threads` workers (default: one per core). Launching from
/// inside the pool costs far less per kernel than handing work in from outside.
fn in_pool<T: Send>(threads: Option<usize>, f: impl FnOnce(usize) -> Result<T> + Send) -> Result<T> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        b = b.num_threads(n);
    }
    let pool = b.build().context("setting up worker threads")?;
    let n = pool.current_num_threads();
    pool.install(|| f(n))
}

/// `--quiet`: set once in `main`, read wherever progress is shown.
static QUIET: AtomicBool = AtomicBool::new(false);

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether progress goes out as plain lines: stderr is not a terminal (a bar would draw
/// nothing there) and --quiet was not given.
fn progress_lines() -> Option<ProgressLines> {
    (!quiet() && !std::io::stderr().is_terminal()).then(ProgressLines::from_env)
}

fn progress_bar(len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() && !quiet() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    pb.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}").expect("template").progress_chars("=> "));
    pb
}

fn train(host: &Host, config: &Path, out: Option<PathBuf>, resume: bool, overrides: &[String]) -> Result<()> {
    let registry = registry_with_auto(host);
    let mut cfg = ExperimentConfig::load(config, overrides, &registry)?;
    cfg.backend = host.resolve(&cfg.backend);
    in_pool(cfg.threads, |threads| train_in_pool(host, config, out, resume, &cfg, threads))
}

/// The registry for validating configs: every backend plus the `auto` choice.
fn registry_with_auto(host: &Host) -> Registry {
    let mut r = host.registry.clone();
    r.register_backend("auto", "built-in", Arc::new(|| Err(BackendError::Device { backend: "auto".into(), message: "auto is resolved before use".into() })))
        .ok();
    r
}

/// `out`, or a fresh folder under runs/ named after the config.
/// Links and `..` in `--out` are resolved, so the "never overwrite" check and every write
/// see one folder.
fn out_dir(out: Option<PathBuf>, config: &Path, default: &str) -> PathBuf {
    out.as_deref().map(resolve_path).unwrap_or_else(|| fresh_dir(Path::new("runs"), config.file_stem().and_then(|s| s.to_str()).unwrap_or(default)))
}

fn provenance(backend: String, threads: usize, seeds: Vec<u64>) -> Provenance {
    Provenance::new("sparsevar", git_revision(), backend, threads, seeds)
}

/// The git commit this program was built from (build.rs), when known.
fn git_revision() -> Option<String> {
    option_env!("SPARSEVAR_GIT_REVISION").filter(|s| !s.is_empty()).map(str::to_string)
}

/// What the terminal shows of a workflow: a progress bar (or plain lines when stderr is not
/// a terminal); Ctrl-C sets `stop`.
struct Display {
    pb: ProgressBar,
    /// A training run (the bar's message follows the evaluations), not a sweep (it follows
    /// the ensembles).
    train: bool,
    stop: Option<Arc<AtomicBool>>,
    /// Plain lines instead of the bar (output not a terminal, not --quiet).
    lines: Option<ProgressLines>,
    /// What a sweep trains now (`softmax T=16`), for the progress lines.
    context: String,
}

impl Display {
    fn new(max_steps: usize, train: bool, stop: Option<Arc<AtomicBool>>) -> Self {
        Display { pb: progress_bar(max_steps as u64), train, stop, lines: progress_lines(), context: String::new() }
    }
}

impl Observer for Display {
    fn event(&mut self, event: Event<'_>) -> bool {
        match event {
            Event::Started { members } => members.iter().for_each(|(seed, task)| eprintln!("  seed {seed}: {task}")),
            Event::Evaluated { step, max_steps, finished, members, best_accuracy, .. } => {
                if let Some(line) = self.lines.as_mut().and_then(|l| l.line(&self.context, step, max_steps, finished, members, best_accuracy)) {
                    eprintln!("{line}");
                }
                self.pb.set_position(step as u64);
                if self.train {
                    self.pb.set_message(format!("{finished}/{members} done, best test acc {best_accuracy:.3}"));
                }
            }
            Event::Ensemble { model, t, members, done, total } => {
                self.context = format!("{model} T={t} ({done}/{total} units done)");
                self.pb.set_position(0);
                self.pb.set_message(format!("{model} T={t}: {members} members ({done}/{total} units done)"));
                if self.pb.is_hidden() {
                    eprintln!("  {model} T={t}: training {members} members ({done}/{total} units done)");
                }
            }
            Event::Refine { model, t, m } => eprintln!("  {model} T={t}: refining at m={m}"),
            Event::Waiting { holders } => eprintln!("  {}", waiting_line(holders)),
        }
        true
    }

    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        self.stop.clone()
    }
}

/// A flag Ctrl-C sets (a second Ctrl-C ends the program at once, with status 130).
fn ctrl_c_flag() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::SIGINT;
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone()).context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(SIGINT, flag.clone()).context("installing the Ctrl-C handler")?;
    Ok(flag)
}

fn train_in_pool(host: &Host, config: &Path, out: Option<PathBuf>, resume: bool, cfg: &ExperimentConfig, threads: usize) -> Result<()> {
    let out = out_dir(out, config, "run");
    // Refused before the banner, so the refusal is the only line.
    if !resume && holds_files(&out).map_err(|e| BadInput(e.to_string()))? {
        return Err(BadInput(format!("{}; or pass --resume to continue a run cut short", ResultsError::Exists(out))).into());
    }
    if resume {
        resumable(cfg, &out)?;
    }
    let mut backend = host.backend(&cfg.backend)?;
    let provenance = provenance(backend.name(), threads, cfg.seeds.clone());
    let verb = if resume { "resuming" } else { "training" };
    eprintln!("{verb} {} members on {} ({} threads) -> {}", cfg.seeds.len(), provenance.backend, threads, out.display());
    let mut display = Display::new(cfg.train.max_steps, true, Some(ctrl_c_flag()?));
    let outcome = if resume {
        resume_train(cfg, &out, backend.as_mut(), &host.registry, &provenance, &mut display)
    } else {
        run_train(cfg, &out, backend.as_mut(), &host.registry, &provenance, &mut display)
    };
    display.pb.finish_and_clear();
    // A plugin fault is an error of the trainer itself (RunError::Train), naming the plugin,
    // the member and the call; what was written so far stays.
    let outcome = outcome?;
    let result = &outcome.result;
    note_builds("this run was", &outcome.builds, "learning");
    for m in &result.members {
        let attn = m.attention.as_ref().map(|a| {
            let best = a.mass_on_s[a.best_head.0][a.best_head.1];
            format!(", best head L{}H{} mass on S {best:.2}, top-s = S: {}", a.best_head.0, a.best_head.1, a.top_s_equals_s)
        });
        let outcome = match (m.learned, m.diverged, m.step) {
            (true, _, Some(s)) => format!("learned at step {s}"),
            (_, true, _) => format!(
                "diverged by step {} (loss became NaN or infinite, or rose above 100 times its initial value: lower train.lr or set train.clip)",
                m.steps_trained
            ),
            _ => format!("not learned in {} steps", m.steps_trained),
        };
        println!("seed {}: {outcome}, test accuracy {:.4}{}", m.seed, m.test_accuracy, attn.unwrap_or_default());
    }
    if outcome.interrupted {
        return Err(Exit::Interrupted { step: result.steps, dir: out }.into());
    }
    println!(
        "{} of {} members learned in {:.1} s; results in {}",
        result.members.iter().filter(|m| m.learned).count(),
        result.members.len(),
        result.seconds,
        outcome.summary_path.display()
    );
    let title = format!("{} T={} s={}, {} members", cfg.task.kind, cfg.task.t, cfg.task.s, cfg.seeds.len());
    let drawn = figures::train_figures(&out, &result.curves, &result.members, &title);
    if !drawn.files.is_empty() {
        println!("figures: {}", out.join("figures").display());
    }
    drawn.check(&out)
}

fn sweep(
    host: &Host,
    config: &Path,
    out: Option<PathBuf>,
    resume: bool,
    plan: bool,
    executor: Executor,
    slurm_args: &slurm::SlurmArgs,
    overrides: &[String],
) -> Result<()> {
    if executor != Executor::Slurm
        && let Some(flag) = slurm_args.stray_flag()
    {
        return bad(format!("{flag} applies to --executor slurm only"));
    }
    let registry = registry_with_auto(host);
    let mut cfg = SweepConfig::load(config, overrides, &registry)?;
    cfg.backend = host.resolve(&cfg.backend);
    // Slurm's options and commands are checked before the results folder is touched.
    let slurm = if executor == Executor::Slurm && !plan { Some((slurm_args.executor(&cfg.slurm)?, slurm_args.submit_only)) } else { None };
    in_pool(cfg.threads, |threads| sweep_in_pool(host, config, out, resume, plan, executor, slurm.as_ref(), &cfg, threads))
}

#[allow(clippy::too_many_arguments)]
fn sweep_in_pool(
    host: &Host,
    config: &Path,
    out: Option<PathBuf>,
    resume: bool,
    plan: bool,
    executor: Executor,
    slurm: Option<&(sparsevar_slurm::SlurmExecutor, bool)>,
    cfg: &SweepConfig,
    threads: usize,
) -> Result<()> {
    let registry = &host.registry;
    if resume && out.is_none() {
        return bad("--resume needs --out DIR: the folder of the sweep to continue");
    }
    let out = out_dir(out, config, "sweep");
    let backend_name = host.backend(&cfg.backend)?.name();
    let prov = provenance(backend_name.clone(), threads, cfg.sweep.seeds.clone());
    if plan {
        let _lock = open_sweep(cfg, &out, resume)?;
        println!("{} units planned in {}", units::unit_count(&out), out.display());
        println!("run them with `sparsevar sweep work {} --claim` (any number of processes), then `sparsevar sweep collect {}`", out.display(), out.display());
        return Ok(());
    }
    // A folder another live sweep writes is refused before anything is printed.
    if out.is_dir() {
        drop(units::lock_folder(&out)?);
    }
    if resume && out.join("plan.json").exists() {
        let again = units::faulted_units(&out).unwrap_or_default();
        if !again.is_empty() {
            eprintln!("resuming: {} units with faulted members train again (units {again:?}; their old results go to faulted/)", again.len());
        }
    }
    eprintln!(
        "sweep over T = {:?}, {} models, {} seeds on {backend_name} ({threads} threads) -> {}",
        cfg.sweep.t,
        cfg.models.len(),
        cfg.sweep.seeds.len(),
        out.display()
    );
    let outcome = match executor {
        Executor::InProcess => {
            let mut display = Display::new(cfg.train.max_steps, false, None);
            let mut make = || registry.backend(&cfg.backend).map_err(|e| e.to_string());
            let outcome = run_sweep(cfg, &out, resume, registry, &mut make, &prov, &mut display);
            display.pb.finish_and_clear();
            outcome?
        }
        Executor::Local { workers } => {
            let started = Instant::now();
            let _lock = open_sweep(cfg, &out, resume)?;
            run_local_workers(&out, workers, threads)?;
            units::collect(cfg, &out, registry, &prov, Some(started.elapsed().as_secs_f64()))?
        }
        Executor::Slurm => {
            let (ex, submit_only) = slurm.expect("the Slurm executor is built before the pool");
            let started = Instant::now();
            let _lock = open_sweep(cfg, &out, resume)?;
            let job = slurm::run(ex, &out, *submit_only, &|| units::unit_count(&out), &|i| units::unit_done(&out, i), &|| Ok(units::plan_next(cfg, &out)?))?;
            if let Some(id) = job {
                println!("{id}");
                eprintln!("when the array has ended: sparsevar sweep collect {}", out.display());
                if cfg.sweep.refine > 0 {
                    eprintln!("(sweep.refine plans more units once these are done: run this command again with --resume to submit them)");
                }
                return Ok(());
            }
            units::collect(cfg, &out, registry, &prov, Some(started.elapsed().as_secs_f64()))?
        }
    };
    report(cfg, &out, &outcome)
}

/// `workers` processes of this program claiming units from `dir` (each with `threads /
/// workers` threads, at least 1); shows units done / running / failed until all have exited.
fn run_local_workers(dir: &Path, workers: usize, threads: usize) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program to start the workers")?;
    let per = (threads / workers).max(1);
    eprintln!("{workers} worker processes, {per} threads each");
    let mut children = Vec::new();
    for _ in 0..workers {
        let child = std::process::Command::new(&exe)
            .args(["sweep", "work"])
            .arg(dir)
            .args(["--claim", "--threads", &per.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting a worker ({})", exe.display()))?;
        children.push(Some(child));
    }
    let mut failed = Vec::new();
    let mut last = String::new();
    while children.iter().any(Option::is_some) {
        for slot in children.iter_mut() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().context("waiting for a worker")? {
                if !status.success() {
                    let mut err = String::new();
                    use std::io::Read;
                    child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                    failed.push(format!("worker pid {} ({status}): {}", child.id(), err.trim().lines().last().unwrap_or("")));
                }
                *slot = None;
            }
        }
        let count = units::unit_count(dir);
        let done = (0..count).filter(|&i| units::unit_done(dir, i)).count();
        let running = children.iter().filter(|c| c.is_some()).count().min(count - done);
        let line = format!("units: {done}/{count} done, {running} running, {} failed", failed.len());
        if line != last {
            eprintln!("  {line}");
            last = line;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for f in &failed {
        eprintln!("  {f}");
    }
    Ok(())
}

/// The note above a result trained by more than one build (`what`: "this run was", …;
/// `edge`: what a member on the edge could fall either side of).
fn note_builds(what: &str, builds: &[String], edge: &str) {
    if builds.len() > 1 {
        println!(
            "note: {what} trained by {} builds ({}); builds can differ in the last bits, and a member on the edge of {edge} with them (summary.json: builds)",
            builds.len(),
            builds.join(", ")
        );
    }
}

/// Print what a sweep found and draw its figures.
fn report(cfg: &SweepConfig, out: &Path, outcome: &SweepOutcome) -> Result<()> {
    let summary = &outcome.summary;
    note_builds("its units were", &outcome.builds, "the success rule");
    println!("{}", summary.success_rule);
    for m in &summary.models {
        let stars: Vec<String> = m.points.iter().map(|p| format!("T={}: {}", p.t, p.m_star.map_or("none".into(), |x| x.to_string()))).collect();
        if cfg.train.online {
            println!("{}: steps to learn (i.i.d., {} fresh samples a step):", m.model, cfg.train.batch);
            let opt = |x: Option<f64>| x.map_or("none".to_string(), |v| format!("{v:.0}"));
            for p in &m.points {
                let Some(o) = &p.online else { continue };
                let seeds: Vec<String> = o.per_seed.iter().map(|s| format!("{}: {}", s.seed, s.step.map_or("not learned".into(), |x| x.to_string()))).collect();
                println!(
                    "  T={}: {} of {} learned, median {} steps ({} samples), variable at {}; per seed {}",
                    p.t,
                    o.learned,
                    o.seeds,
                    opt(p.median_steps_to_learn),
                    opt(o.median_samples_seen),
                    opt(p.median_variable_step),
                    seeds.join(", ")
                );
            }
        } else {
            println!("{}: m* {}", m.model, stars.join(", "));
            for p in m.points.iter().filter(|p| !p.budgets.is_empty()) {
                let per: Vec<String> = p.budgets.iter().map(|b| format!("{} steps: {}", b.budget, b.m_star.map_or("none".into(), |x| x.to_string()))).collect();
                let stable = match p.stable {
                    Some(true) => " (stable: the last doubling did not move it)",
                    Some(false) => " (not stable: the last budget moved it)",
                    None => "",
                };
                println!("  T={}: m* within {}{stable}", p.t, per.join(", "));
            }
            for p in m.points.iter().filter(|p| !p.learners.is_empty()) {
                let per: Vec<String> = p
                    .learners
                    .iter()
                    .map(|l| {
                        let stable = match l.stable {
                            Some(true) => " (stable)",
                            Some(false) => " (not stable)",
                            None => "",
                        };
                        let within: Vec<String> = p
                            .budgets
                            .iter()
                            .filter_map(|b| {
                                b.learners
                                    .iter()
                                    .find(|x| x.learner == l.learner)
                                    .map(|x| format!("{}: {}", b.budget, x.m_star.map_or("none".into(), |m| m.to_string())))
                            })
                            .collect();
                        let within = if within.is_empty() { String::new() } else { format!(" [{}]", within.join(", ")) };
                        format!("{} {}{within}{stable}", l.learner.name(), l.m_star.map_or("none".into(), |x| x.to_string()))
                    })
                    .collect();
                println!("  T={}: m* per learner: {}", p.t, per.join(", "));
            }
            if let Some(recipes) = &cfg.sweep.recipes {
                for (i, r) in recipes.iter().enumerate() {
                    println!("  recipe {i}: {}", r.label());
                }
            }
            for p in m.points.iter().filter(|p| !p.recipe_counts.is_empty()) {
                let mut learners: Vec<_> = p.recipe_counts.iter().map(|c| c.learner).collect();
                learners.dedup();
                for l in learners {
                    let counts: Vec<String> = p
                        .recipe_counts
                        .iter()
                        .filter(|c| c.learner == l)
                        .map(|c| format!("recipe {} chosen {}× ({} learned)", c.recipe, c.chosen, c.learned))
                        .collect();
                    // Per cell, each instance's choice: "seed:recipe", "-" where it output none.
                    let mut cells: std::collections::BTreeMap<usize, Vec<String>> = std::collections::BTreeMap::new();
                    for c in p.choices.iter().filter(|c| c.learner == l) {
                        cells.entry(c.m).or_default().push(format!("{}:{}", c.seed, c.recipe.map_or("-".into(), |r| r.to_string())));
                    }
                    let cells: Vec<String> = cells.iter().map(|(m, v)| format!("m={m} [{}]", v.join(" "))).collect();
                    println!("  T={} {}: {}; per instance (seed:recipe) {}", p.t, l.name(), counts.join(", "), cells.join(", "));
                }
            }
        }
        if let Some(f) = &m.fit {
            println!("  {}", f.verdict);
        }
    }
    if !summary.faulted.is_empty() {
        println!("{} members faulted and are left out of m* (the `faulted` column of runs.csv):", summary.faulted.len());
        for f in &summary.faulted {
            println!("  {} T={} m={} seed {}: {}", f.model, f.t, f.m, f.seed, f.fault);
        }
    }
    for b in &summary.baselines {
        println!(
            "baselines T={}: log2 C(T,s) = {:.1}, GF(2) m* = {:?}, subset search m* = {:?}{}",
            b.t,
            b.info_floor,
            b.gf2_m_star,
            b.subset_search_m_star,
            if b.subset_search_skipped { " (skipped: C(T,s) over the cap)" } else { "" }
        );
    }
    println!("{:.1} s; results in {}", summary.seconds, out.display());
    let drawn = figures::sweep_figures(out, summary, &outcome.runs);
    if !drawn.files.is_empty() {
        println!("figures: {}", out.join("figures").display());
    }
    drawn.check(out)
}

/// `sweep work DIR`: run one unit, or claim units until none is left.
fn sweep_work(host: &Host, dir: &Path, unit: Option<usize>, threads: Option<usize>) -> Result<()> {
    let registry = &host.registry;
    let cfg = units::load_config(dir, &registry_with_auto(host))?;
    in_pool(threads.or(cfg.threads), |_| {
        let mut make = || registry.backend(&host.resolve(&cfg.backend)).map_err(|e| e.to_string());
        // A worker's log says only what it did, and what it waits for.
        let mut quiet = sparsevar_experiment::workflow::observe(|e| {
            if let Event::Waiting { holders } = e {
                eprintln!("{}", waiting_line(holders));
            }
            true
        });
        match unit {
            Some(i) => match units::claim_and_run(&cfg, dir, i, registry, &mut make, &mut quiet)? {
                units::UnitRun::Ran => eprintln!("unit {i}: done"),
                units::UnitRun::AlreadyDone => eprintln!("unit {i}: already done"),
                units::UnitRun::HeldBy(who) => eprintln!("unit {i}: being run by {who}; not run here"),
            },
            None => {
                let ran = units::work_claim(&cfg, dir, registry, &mut make, &mut quiet, &mut || Ok(()))?;
                eprintln!("{ran} units run by this worker; every unit of {} has its result", dir.display());
            }
        }
        Ok(())
    })
}

/// `sweep collect DIR`: merge the unit results (refused while another sweep holds DIR).
fn sweep_collect(host: &Host, dir: &Path) -> Result<()> {
    // A sweep that has taken the folder may not have written its plan yet: ask the lock
    // first, so the answer names that process rather than a missing plan.
    let early = if dir.join("sweep.lock").exists() { Some(units::lock_folder(dir)?) } else { None };
    let cfg = units::load_config(dir, &registry_with_auto(host))?;
    let _lock = match early {
        Some(held) => held,
        None => units::lock_folder(dir)?,
    };
    let backend = host.resolve(&cfg.backend);
    let prov = provenance(backend, cfg.threads.unwrap_or_else(rayon::current_num_threads), cfg.sweep.seeds.clone());
    let outcome = units::collect(&cfg, dir, &host.registry, &prov, None)?;
    report(&cfg, dir, &outcome)
}

#[allow(clippy::too_many_arguments)]
fn bench(
    host: &Host,
    model: &str,
    t: usize,
    batch: usize,
    runs: usize,
    steps: usize,
    repeats: usize,
    threads: Option<usize>,
    backend: &str,
    json: bool,
    profile: bool,
) -> Result<()> {
    // Sizes and threads are checked like a config's, named by their flags.
    if let Some(n) = threads {
        budget::check_threads("--threads", n).map_err(BadInput)?;
    }
    if let (Some(spec), true) = (bench_spec(model, t, batch, runs), t >= 3 && batch > 0 && runs > 0) {
        let cfg = ExperimentConfig { task: spec.task, model: spec.model, train: spec.train, seeds: spec.seeds, backend: backend.into(), threads };
        let flag = |k: Knob| match k {
            Knob::T => ("--T".to_string(), t.to_string()),
            Knob::Batch => ("--batch".into(), batch.to_string()),
            Knob::Members => ("--runs".into(), runs.to_string()),
            other => (format!("the {model} model's {other:?}"), "fixed".into()),
        };
        cfg.validate_as(&registry_with_auto(host), &flag).map_err(|e| BadInput(e.to_string()))?;
    }
    in_pool(threads, |threads| bench_in_pool(host, model, t, batch, runs, steps, repeats, threads, backend, json, profile))
}

/// The training run `bench` times (None for an unknown model).
fn bench_spec(model: &str, t: usize, batch: usize, runs: usize) -> Option<RunSpec> {
    let model = match model {
        "paper1l" => ModelSpec::Transformer(TransformerConfig::default()),
        "mlp" => ModelSpec::Mlp(MlpConfig::default()),
        _ => return None,
    };
    Some(RunSpec {
        task: TaskSpec::new("sparse_parity", t, 3),
        model,
        train: TrainConfig { samples: 4096, batch, max_steps: usize::MAX, ..TrainConfig::default() },
        seeds: (0..runs as u64).collect(),
        samples: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn bench_in_pool(
    host: &Host,
    model: &str,
    t: usize,
    batch: usize,
    runs: usize,
    steps: usize,
    repeats: usize,
    threads: usize,
    backend: &str,
    json: bool,
    profile: bool,
) -> Result<()> {
    let Some(spec) = bench_spec(model, t, batch, runs) else { return bad(format!("--model `{model}` is unknown; use paper1l or mlp")) };
    if t < 3 || batch == 0 || runs == 0 || steps == 0 || repeats == 0 {
        return bad("--T must be at least 3 and --batch, --runs, --steps, --repeats at least 1");
    }
    let mut backend = host.backend(backend)?;
    let backend_name = backend.name();
    let mut trainer = Trainer::new(backend.as_mut(), spec, &host.registry).context("setting up the benchmark")?;
    for _ in 0..steps.min(20) {
        trainer.step()?; // warm-up: caches, page faults, thread pool
    }
    trainer.sync()?;
    // Each repeat ends when the device has run its steps, not when they are queued; the time
    // to queue them (`host`) tells a host-bound GPU step from a device-bound one.
    let (mut ms, mut host_ms) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        for _ in 0..steps {
            trainer.step()?;
        }
        host_ms.push(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
        trainer.sync()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3 / steps as f64);
    }
    let median_of = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let median = median_of(&ms);
    let flops = trainer.step_flops() as f64;
    let steps_per_s = 1e3 / median;
    let model_steps_per_s = steps_per_s * runs as f64;
    let gflops = flops / (median * 1e-3) / 1e9;
    if json {
        let line = serde_json::json!({
            "model": model, "T": t, "batch": batch, "runs": runs, "backend": backend_name, "device": device_name(&backend_name), "threads": threads,
            "steps": steps, "repeats": repeats, "ms_per_step": median, "ms_per_step_repeats": ms, "host_ms_per_step": median_of(&host_ms),
            "steps_per_s": steps_per_s, "model_steps_per_s": model_steps_per_s, "gflops_per_s": gflops,
            "flops_per_step": flops, "launches_per_step": trainer.step_launches(),
        });
        println!("{line}");
    } else {
        println!(
            "{model} T={t} B={batch} R={runs} on {backend_name} [{}] ({threads} threads), median of {repeats} x {steps} steps:",
            device_name(&backend_name)
        );
        println!(
            "  {median:.3} ms/step, {steps_per_s:.1} steps/s, {model_steps_per_s:.1} model-steps/s, {gflops:.2} GFLOP/s ({} launches/step)",
            trainer.step_launches()
        );
    }
    if profile {
        let mut table = std::collections::BTreeMap::new();
        let mut on_device = false;
        for _ in 0..steps {
            on_device = trainer.step_profiled(&mut table)?;
        }
        let total: f64 = table.values().map(|v| v.1).sum();
        let mut rows: Vec<_> = table.into_iter().collect();
        rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        if on_device {
            eprintln!(
                "per-step kernel profile over {steps} steps (device time between GPU timestamps around each launch, not synchronised, {:.3} ms/step in total):",
                total * 1e3 / steps as f64
            );
        } else {
            // The profile times each kernel on its own, so it launches the whole ensemble kernel
            // by kernel; the timed steps above may have run member by member (CPU, >= 2 members
            // per thread), whose cache reuse the per-kernel times cannot show.
            eprintln!(
                "per-step kernel profile over {steps} steps (whole-ensemble launches, synchronised after each, {:.3} ms/step in total; the timed steps above may run member by member and take less):",
                total * 1e3 / steps as f64
            );
        }
        for (name, (calls, secs)) in rows {
            eprintln!("  {:>8.1} us {:>5.1}%  x{:<3} {name}", secs * 1e6 / steps as f64, 100.0 * secs / total, calls / steps as u64);
        }
    }
    Ok(())
}

/// What a backend runs on, for benchmark reports.
fn device_name(backend: &str) -> String {
    if backend == "wgpu" {
        let a = sparsevar_wgpu::adapters();
        let best = a.iter().min_by_key(|a| match a.device_type.as_str() {
            "discrete" => 0,
            "integrated" => 1,
            "virtual" => 2,
            "cpu" => 3,
            _ => 4,
        });
        return best.map_or("no adapter".into(), |a| format!("{} ({}, driver {} {})", a.name, a.backend, a.driver, a.driver_info));
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "cpu".into())
}

fn info(host: &Host) -> Result<()> {
    println!("sparsevar {}", env!("CARGO_PKG_VERSION"));
    println!("backends:");
    for (name, e) in &host.registry.backends {
        println!("  {name:<10} {}", e.origin);
    }
    println!("  {:<10} wgpu on a discrete or integrated GPU, else cpu (here: {})", "auto", host.resolve("auto"));
    let adapters = sparsevar_wgpu::adapters();
    if let Some((key, value)) = ["VK_ADD_DRIVER_FILES", "VK_DRIVER_FILES", "VK_ICD_FILENAMES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| v.contains("sparsevar-nvidia-egl-icd")).map(|v| (k, v)))
    {
        println!("vulkan: no display, so NVIDIA's EGL driver library was added ({key}={value}; SPARSEVAR_NVIDIA_EGL=0 turns this off)");
    }
    if adapters.is_empty() {
        println!(
            "wgpu adapters: none. Install a Vulkan driver; on a machine without a GPU, Mesa's software driver: apt-get install mesa-vulkan-drivers libvulkan1"
        );
    } else {
        println!("wgpu adapters:");
        for a in &adapters {
            println!("  [{}] {} — {} {}, driver {} {}", a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info);
            println!(
                "      max storage buffer binding {} MiB, max workgroups/dim {}, max invocations/workgroup {}",
                a.max_storage_buffer_binding_size >> 20,
                a.max_compute_workgroups_per_dimension,
                a.max_compute_invocations_per_workgroup
            );
        }
    }
    println!("tasks: {}", host.registry.task_names().join(", "));
    println!("attention variants: {}", host.registry.attention_names().join(", "));
    println!("threads: {}", rayon::current_num_threads());
    Ok(())
}

fn list_plugins(host: &Host) -> Result<()> {
    println!("plugin search path:");
    for d in &host.search_path {
        println!("  {}", d.display());
    }
    if host.plugins.plugins().is_empty() && host.load_errors.is_empty() {
        println!("no plugin files found (build them with `cargo build --release --workspace`, or pass --plugins DIR)");
    }
    for p in host.plugins.plugins() {
        println!("{}", p.describe());
    }
    for e in &host.load_errors {
        println!("not loaded: {e}");
    }
    Ok(())
}

fn reference(what: &str) -> Result<()> {
    match what {
        "config" => print!("{}", sparsevar_experiment::reference::config_reference()),
        other => return bad(format!("no reference `{other}`; available: config")),
    }
    Ok(())
}

/// How `run` treats its script: quick mode, and whether it continues a run cut short.
#[derive(Clone, Copy)]
struct ScriptMode {
    quick: bool,
    resume: bool,
}

#[allow(clippy::too_many_arguments)]
fn run_script(
    host: Host,
    script: &Path,
    out: Option<PathBuf>,
    backend: &str,
    mode: ScriptMode,
    set: &[String],
    threads: Option<usize>,
    max_operations: Option<u64>,
) -> Result<()> {
    if mode.resume && out.is_none() {
        return bad("--resume needs --out DIR: the folder of the script run to continue");
    }
    if let Some(n) = threads {
        budget::check_threads("--threads", n).map_err(BadInput)?;
    }
    let backend = host.resolve(backend);
    if !host.registry.backends.contains_key(&backend) {
        return bad(host.registry.backend(&backend).err().map(|e| e.to_string()).unwrap_or_default());
    }
    let out = out.as_deref().map(resolve_path).unwrap_or_else(|| fresh_dir(Path::new("runs"), script.file_stem().and_then(|s| s.to_str()).unwrap_or("script")));
    let mut ctx = sparsevar_script::ScriptContext::new(script, &out, Arc::new(host.registry.clone()));
    ctx.backend = backend;
    ctx.quick = mode.quick;
    ctx.resume = mode.resume;
    ctx.threads = threads;
    ctx.git_revision = git_revision();
    ctx.progress_lines = progress_lines().is_some();
    if let Some(n) = max_operations {
        ctx.limits.max_operations = n;
    }
    for kv in set {
        let Some((k, v)) = kv.split_once('=') else { return bad(format!("--set `{kv}`: expected key=value")) };
        ctx.params.insert(k.trim().to_string(), v.trim().to_string());
    }
    match sparsevar_script::run_script(ctx) {
        Ok(o) => {
            eprintln!("{} finished in {:.1} s; results in {}", script.display(), o.seconds, out.display());
            Ok(())
        }
        Err(e) => bad(e.to_string()),
    }
}
