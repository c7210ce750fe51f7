//! The workflows every front end shares: train a config into a results folder
//! ([`run_train`]) and run a sweep ([`crate::sweep::run_sweep`]).
//!
//! The program and the script API only display: they pass an [`Observer`] that sees the
//! progress ([`Event`]) and may stop the run, and they get back the outcome or a typed
//! [`RunError`] whose [`RunError::is_input`] tells a mistake in the user's input from a
//! failure while running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint, CheckpointError, read_checkpoint, write_checkpoint};
use crate::config::{ConfigError, ExperimentConfig};
use crate::results::{Provenance, ResultsDir, ResultsError, TrainSummary, UNRECORDED_BUILD, holds_files, io, load_train_summary, resolve_path};
use crate::train::{CurvePoint, EnsembleResult, Progress, RunSpec, TrainError, Trainer};
use crate::weights;

/// What a workflow reports as it goes.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// Training is set up: each member's seed and task.
    Started { members: &'a [(u64, String)] },
    /// After an evaluation of the ensemble in training.
    Evaluated { step: usize, max_steps: usize, finished: usize, members: usize, best_accuracy: f64, points: &'a [CurvePoint] },
    /// A sweep ensemble (a grid unit) is about to train; `done` of `total` units planned so
    /// far have their result.
    Ensemble { model: &'a str, t: usize, members: usize, done: usize, total: usize },
    /// A sweep bisection point is about to train.
    Refine { model: &'a str, t: usize, m: usize },
    /// Every unit left to this process is held by another live process (`holders`: each
    /// unit and who holds it, "pid P on HOST since …"): it waits for them to finish, and says
    /// so again only when the holders change.
    Waiting { holders: &'a [(usize, String)] },
}

impl<'a> Event<'a> {
    pub(crate) fn evaluated(p: &Progress<'a>) -> Self {
        let Progress::Evaluated { step, max_steps, points, finished, members } = *p;
        let best_accuracy = points.iter().map(|p| p.test_accuracy).fold(0.0, f64::max);
        Event::Evaluated { step, max_steps, finished, members, best_accuracy, points }
    }
}

/// What a front end says about an [`Event::Waiting`]: the units and their holders.
pub fn waiting_line(holders: &[(usize, String)]) -> String {
    let who: Vec<String> = holders.iter().map(|(i, h)| format!("unit {i} by {h}")).collect();
    format!("waiting for units other processes are running: {}", who.join("; "))
}

/// A front end watching a workflow.
pub trait Observer {
    /// Called with each event; return false to stop (see [`run_train`], [`crate::sweep::run_sweep`]).
    fn event(&mut self, event: Event<'_>) -> bool;
    /// A flag checked after every training step (set by a signal handler): the run stops
    /// there as if `event` had returned false.
    fn stop_flag(&self) -> Option<Arc<AtomicBool>> {
        None
    }
}

/// Plain progress lines for output that is not a terminal (a pipe, a batch job's log), where
/// a progress bar draws nothing: [`ProgressLines::due`] says when the next line is due, at
/// most one per interval, and [`progress_line`] formats it. The front ends print the lines on
/// stderr, so stdout keeps only results.
#[derive(Clone, Debug)]
pub struct ProgressLines {
    every: Duration,
    started: Instant,
    last: Instant,
    /// The best test accuracy seen in this context: members that finish leave the ensemble,
    /// so the event's own best can fall.
    best: f64,
    context: String,
}

/// The environment variable that sets the interval between progress lines, in seconds
/// (fractions allowed; 0 = a line at every evaluation). Tests set it; the default is
/// [`ProgressLines::DEFAULT_EVERY`].
pub const PROGRESS_ENV: &str = "SPARSEVAR_PROGRESS_SECS";

impl ProgressLines {
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        ProgressLines { every, started: now, last: now, best: f64::NAN, context: String::new() }
    }

    /// Lines every [`PROGRESS_ENV`] seconds, else every [`Self::DEFAULT_EVERY`] (an
    /// unreadable value counts as unset).
    pub fn from_env() -> Self {
        let every = std::env::var(PROGRESS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Self::DEFAULT_EVERY, Duration::from_secs_f64);
        Self::new(every)
    }

    /// The line for this evaluation if one is due (see [`progress_line`]); `context` names
    /// what trains (a sweep's model and T), and the best accuracy is the best seen since the
    /// context last changed.
    pub fn line(&mut self, context: &str, step: usize, max_steps: usize, finished: usize, members: usize, best_accuracy: f64) -> Option<String> {
        if context != self.context {
            self.context = context.to_string();
            self.best = f64::NAN;
        }
        self.best = self.best.max(best_accuracy);
        let elapsed = self.due()?;
        Some(progress_line(context, step, max_steps, finished, members, self.best, elapsed))
    }

    /// Seconds since the start when a line is due now (and the clock restarts), else None.
    pub fn due(&mut self) -> Option<f64> {
        let now = Instant::now();
        if now.duration_since(self.last) < self.every {
            return None;
        }
        self.last = now;
        Some(now.duration_since(self.started).as_secs_f64())
    }
}

/// One progress line: `progress: [context, ]step S/MAX, F/N members done, best test accuracy
/// A, E s elapsed` — plain words and numbers, one line, so a log reader or `grep` can follow
/// it.
pub fn progress_line(context: &str, step: usize, max_steps: usize, finished: usize, members: usize, best_accuracy: f64, elapsed: f64) -> String {
    let context = if context.is_empty() { String::new() } else { format!("{context}, ") };
    format!("progress: {context}step {step}/{max_steps}, {finished}/{members} members done, best test accuracy {best_accuracy:.3}, {elapsed:.1} s elapsed")
}

/// An observer made of a closure (no stop flag): `&mut observe(|e| { …; true })`.
pub fn observe<F: FnMut(Event<'_>) -> bool>(f: F) -> impl Observer {
    struct Closure<F>(F);
    impl<F: FnMut(Event<'_>) -> bool> Observer for Closure<F> {
        fn event(&mut self, event: Event<'_>) -> bool {
            (self.0)(event)
        }
    }
    Closure(f)
}

/// Why a workflow failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{} already holds results; pass --resume to continue that sweep, or choose another --out", .0.display())]
    SweepExists(PathBuf),
    #[error("{} was made by a different config (compare its config.yaml); --resume needs the same config", .0.display())]
    OtherConfig(PathBuf),
    /// `train --resume` on a folder without a training run.
    #[error("{} holds no training run to resume (no config.yaml); give the --out folder of the run to continue", .0.display())]
    NoRun(PathBuf),
    /// `train --resume` on a run that finished.
    #[error("{}: this run has finished; there is nothing to resume (its results stay as they are)", .0.display())]
    Finished(PathBuf),
    #[error("{} holds no {CHECKPOINT_FILE} to resume from (train.checkpoint_every was 0, or the run stopped before its first checkpoint); train again into another --out", .0.display())]
    NoCheckpoint(PathBuf),
    #[error("{} was written for a different config than this one (compare the folder's config.yaml); --resume needs the same config", .0.display())]
    OtherCheckpoint(PathBuf),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("backend `{name}`: {message}")]
    Backend { name: String, message: String },
    /// Boxed: a training error carries the members' faults and would make every result large.
    #[error("{context}: {source}")]
    Train { context: String, source: Box<TrainError> },
    /// The non-neural baselines could not run (their task could not be made or sampled).
    #[error("{0}")]
    Baselines(String),
    #[error("stopped before the sweep finished; the finished ensembles are in results/ (--resume continues)")]
    Interrupted,
    /// Another live process holds the folder's sweep.lock.
    #[error("{} is in use by {holder} (its sweep.lock); wait for it to finish, or choose another --out", dir.display())]
    Busy { dir: PathBuf, holder: String },
    #[error("{} holds no sweep plan (plan.json, config.yaml); make one with `sparsevar sweep SWEEP.yaml --out DIR --plan`", .0.display())]
    NoPlan(PathBuf),
    #[error("{}: there is no unit {unit}; the plan holds units 0..{count}", dir.display())]
    UnknownUnit { dir: PathBuf, unit: usize, count: usize },
    /// Two result files disagree about one member.
    #[error("{member}: {} and {} disagree; remove the wrong file and collect again", first.display(), second.display())]
    Conflict { member: String, first: PathBuf, second: PathBuf },
    /// Units without a result: no summary is written.
    #[error("{}: {} unit(s) have no result yet: {}; run them (`sparsevar sweep work DIR --claim`), then collect again", dir.display(), units.len(), units.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "))]
    Missing { dir: PathBuf, units: Vec<usize> },
}

impl RunError {
    /// Whether the user's input caused it (a bad config, a folder that holds results): the
    /// program exits with status 2 for these, 1 for the rest.
    pub fn is_input(&self) -> bool {
        match self {
            RunError::Config(_)
            | RunError::SweepExists(_)
            | RunError::OtherConfig(_)
            | RunError::Busy { .. }
            | RunError::NoPlan(_)
            | RunError::UnknownUnit { .. }
            | RunError::Conflict { .. }
            | RunError::NoRun(_)
            | RunError::Finished(_)
            | RunError::NoCheckpoint(_)
            | RunError::OtherCheckpoint(_)
            | RunError::Checkpoint(_) => true,
            RunError::Results(e) => e.is_input(),
            RunError::Backend { .. } | RunError::Train { .. } | RunError::Baselines(_) | RunError::Interrupted | RunError::Missing { .. } => false,
        }
    }
}

impl ResultsError {
    /// Whether the user's input caused it: an `--out` that already holds results or is a file.
    pub fn is_input(&self) -> bool {
        matches!(self, ResultsError::Exists(_) | ResultsError::NotAFolder(_))
    }
}

/// A training run written to its folder.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub dir: PathBuf,
    /// Its summary.json.
    pub summary_path: PathBuf,
    pub result: EnsembleResult,
    /// Stopped by the observer (or its stop flag) before it finished: the summary says
    /// `"interrupted": true` and records each member as it was at the last step.
    pub interrupted: bool,
    /// The builds that trained the run (see [`TrainSummary::builds`]).
    pub builds: Vec<String>,
}

/// Train `cfg` on `backend` into the folder `out` (refused if it holds results): config.yaml
/// first, metrics.csv appended at every evaluation, a checkpoint every
/// `train.checkpoint_every` steps, summary.json at the end — also when the observer stops
/// the run, then marked interrupted.
pub fn run_train(
    cfg: &ExperimentConfig,
    out: &Path,
    backend: &mut dyn Backend,
    registry: &Registry,
    provenance: &Provenance,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    // Refuse a folder with results before the setup's work, and create it only after the
    // setup succeeded, so a failed setup leaves no half-made folder behind.
    if holds_files(out)? {
        return Err(ResultsError::Exists(out.to_path_buf()).into());
    }
    let trainer = set_up(cfg, backend, registry)?;
    let results = ResultsDir::create(out, &cfg.to_yaml())?;
    train_into(cfg, trainer, results, provenance, Vec::new(), observer)
}

/// Continue the run `cfg` in the folder `out` from its checkpoint (see
/// [`crate::checkpoint`]): it ends exactly where an uninterrupted run ends (summary.json
/// apart from its times and command line, metrics.csv, parameters). Refused, with nothing in
/// the folder touched, when the folder holds no run, a finished run (its summary.json not
/// marked interrupted), no checkpoint, a checkpoint that cannot be read, or a run of another
/// config (`threads` and `train.checkpoint_every` may differ: results do not depend on them).
pub fn resume_train(
    cfg: &ExperimentConfig,
    out: &Path,
    backend: &mut dyn Backend,
    registry: &Registry,
    provenance: &Provenance,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    let out = &resolve_path(out);
    let ck = resumable(cfg, out)?;
    let checkpoint_path = out.join(CHECKPOINT_FILE);
    let mut trainer = set_up(cfg, backend, registry)?;
    trainer.restore(&ck).map_err(|e| RunError::Checkpoint(CheckpointError::Corrupt { path: checkpoint_path.clone(), why: e.to_string() }))?;
    // Rows written after the checkpoint's step are written again by this run.
    let results = ResultsDir::reopen(out, &ck.curves)?;
    // A checkpoint of an older program does not say which build wrote it.
    let earlier = if ck.state.builds.is_empty() { vec![UNRECORDED_BUILD.to_string()] } else { ck.state.builds.clone() };
    train_into(cfg, trainer, results, provenance, earlier, observer)
}

/// The checkpoint `sparsevar train --resume` would continue from in `out`, or why there is
/// none to continue (see [`resume_train`]); reads the folder, writes nothing.
pub fn resumable(cfg: &ExperimentConfig, out: &Path) -> Result<Checkpoint, RunError> {
    let out = &resolve_path(out);
    let config_path = out.join("config.yaml");
    if !out.is_dir() || !config_path.is_file() {
        return Err(RunError::NoRun(out.to_path_buf()));
    }
    let summary = out.join("summary.json");
    if summary.exists() {
        match load_train_summary(&summary) {
            Ok(s) if s.interrupted => {}
            Ok(_) => return Err(RunError::Finished(summary)),
            // A summary that does not read is not one this program finished; the checks
            // below decide.
            Err(_) => {}
        }
    }
    let checkpoint_path = out.join(CHECKPOINT_FILE);
    if !checkpoint_path.exists() {
        return Err(RunError::NoCheckpoint(out.to_path_buf()));
    }
    let saved = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    if !same_run(&saved, cfg) {
        return Err(RunError::OtherConfig(out.to_path_buf()));
    }
    let ck = read_checkpoint(out)?;
    if !same_run(&ck.config, cfg) {
        return Err(RunError::OtherCheckpoint(checkpoint_path));
    }
    Ok(ck)
}

/// Whether the resolved config `saved` (YAML) describes the same run as `cfg`: equal but
/// for the keys results do not depend on.
fn same_run(saved: &str, cfg: &ExperimentConfig) -> bool {
    let normal = |c: &ExperimentConfig| {
        let mut c = c.clone();
        c.threads = None;
        c.train.checkpoint_every = 0;
        c
    };
    serde_yaml::from_str::<ExperimentConfig>(saved).is_ok_and(|s| normal(&s) == normal(cfg))
}

fn set_up<'b>(cfg: &ExperimentConfig, backend: &'b mut dyn Backend, registry: &Registry) -> Result<Trainer<'b>, RunError> {
    let spec = RunSpec { task: cfg.task.clone(), model: cfg.model.clone(), train: cfg.train.clone(), seeds: cfg.seeds.clone(), samples: None };
    Trainer::new(backend, spec, registry).map_err(|source| RunError::Train { context: "setting up training".into(), source: Box::new(source) })
}

/// Train a set-up (maybe restored) trainer into its results folder; `earlier`: the builds
/// that trained it before (a resumed run's checkpoint says which).
fn train_into(
    cfg: &ExperimentConfig,
    mut trainer: Trainer<'_>,
    mut results: ResultsDir,
    provenance: &Provenance,
    earlier: Vec<String>,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome, RunError> {
    let out = results.path.clone();
    let mut builds = earlier;
    if !builds.contains(&provenance.build()) {
        builds.push(provenance.build());
    }
    let flag = observer.stop_flag();
    if let Some(f) = &flag {
        trainer.stop_on(f.clone());
    }
    let members: Vec<(u64, String)> = cfg.seeds.iter().zip(&trainer.tasks).map(|(&s, t)| (s, t.describe())).collect();
    // A stop asked for here takes effect after the first step (the flag) or evaluation.
    observer.event(Event::Started { members: &members });
    let mut go = true;
    let mut write_error = None;
    let config = cfg.to_yaml();
    let result = trainer.run_checkpointed(
        &mut |p| {
            let Progress::Evaluated { points, .. } = &p;
            if let Err(e) = results.append_metrics(points) {
                write_error = Some(e);
                return false;
            }
            go = observer.event(Event::evaluated(&p));
            go
        },
        cfg.train.checkpoint_every,
        &mut |mut ck| {
            ck.config = config.clone();
            ck.state.builds = builds.clone();
            write_checkpoint(&out, &ck)?;
            Ok(())
        },
    );
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let result = result
        .map_err(|source| RunError::Train { context: format!("training stopped; the curves so far are in {}", out.display()), source: Box::new(source) })?;
    save_weights(&mut trainer, cfg, &out, &result)?;
    let unfinished = result.members.iter().any(|m| !m.learned && !m.diverged) && result.steps < cfg.train.max_steps;
    let interrupted = unfinished && (!go || flag.is_some_and(|f| f.load(Ordering::Relaxed)));
    let summary_path = results.write_summary(&TrainSummary::new(&result, provenance, builds.clone(), interrupted))?;
    Ok(TrainOutcome { dir: out, summary_path, result, interrupted, builds })
}

/// Write the members' weights files into `out/weights/` as `train.save_weights` asks.
fn save_weights(trainer: &mut Trainer<'_>, cfg: &ExperimentConfig, out: &Path, result: &EnsembleResult) -> Result<(), RunError> {
    let path = |m: usize, snapshot| weights::weights_path(out, result.members[m].seed, snapshot);
    weights::save_members(trainer, &cfg.task, result, cfg.train.save_weights, &path)
        .map_err(|source| RunError::Train { context: format!("saving the weights into {}", out.display()), source: Box::new(source) })
}
