//! A sweep as numbered work units that many processes (or machines) share through one
//! results folder: plan, work, collect.
//!
//! A unit is one ensemble: (T, model, a chunk of (m, seed) members). The design decision:
//! the folder is the only channel between processes, and every file in it has one writer
//! at a time —
//! - `config.yaml` (the resolved config) and `plan.json` + `units/NNNN.json`: written by the
//!   planner, holding `plan.lock`;
//! - `results/NNNN.csv`: the RunRows of unit NNNN, written once, atomically (temporary file
//!   in the same folder + rename), by the worker holding the claim `claims/NNNN.lock` (an
//!   advisory lock, so a claim whose process died is free again; a unit whose result exists
//!   is never run again);
//! - `checkpoints/NNNN.safetensors`: unit NNNN's training state every
//!   `train.checkpoint_every` steps, written (temporary file + rename) by the claim holder,
//!   continued by the next worker to claim the unit if its process died, removed once the
//!   result is written;
//! - `runs.csv` and `summary.json`: written by `collect`, holding `sweep.lock`, which a
//!   `sweep` process holds for its whole life (a second `sweep` on the folder is refused,
//!   naming the holder).
//!
//! Refinement (bisection of m between the last failing and first successful grid point)
//! depends on earlier results, so the plan grows in rounds: round 0 is the whole grid; round
//! r + 1 is planned (by a worker or by `collect`) once every unit of rounds ≤ r has its
//! result; a round with no unit ends the plan. Each (T, model) refines from its own rows
//! only, so this plans exactly the points the one-process sweep trains.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;

use crate::checkpoint::read_checkpoint_file;
use crate::learners::LearnerKind;
use crate::results::{CsvLog, Provenance, ResultsError, UNRECORDED_BUILD, io, read_csv, read_json};
use crate::sweep::{RunRow, SweepConfig, SweepFile, SweepOutcome, summarize, summarize_point, train_cells, unit_fingerprint};
use crate::workflow::{Event, Observer, RunError};

/// One work unit: an ensemble of (m, seed) members of one model at one T.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub index: usize,
    /// 0 for the grid, r for the r-th refinement round.
    pub round: usize,
    pub model: String,
    #[serde(rename = "T")]
    pub t: usize,
    /// (m, seed) of each member.
    pub members: Vec<(usize, u64)>,
    /// A learner's restart index of each member (empty: every member is restart 0, as under
    /// `majority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<usize>,
}

/// plan.json: how far the plan has grown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct PlanState {
    /// Rounds planned so far (round 0 is the grid).
    rounds: usize,
    /// Units planned so far (numbered 0..units).
    units: usize,
    /// No further round will be planned.
    complete: bool,
}

fn unit_path(dir: &Path, i: usize) -> PathBuf {
    dir.join("units").join(format!("{i:04}.json"))
}

/// Where unit `i`'s result (its members' RunRows) lives.
pub fn result_path(dir: &Path, i: usize) -> PathBuf {
    dir.join("results").join(format!("{i:04}.csv"))
}

fn claim_path(dir: &Path, i: usize) -> PathBuf {
    dir.join("claims").join(format!("{i:04}.lock"))
}

fn read_plan(dir: &Path) -> Result<PlanState, RunError> {
    let p = dir.join("plan.json");
    if !p.exists() {
        return Err(RunError::NoPlan(dir.to_path_buf()));
    }
    Ok(read_json(&p, "a sweep plan")?)
}

/// How many units the plan of the sweep in `dir` holds so far (0 for a folder without a
/// plan). Units are numbered `0..unit_count(dir)`; a later refinement round, planned by
/// `sparsevar sweep collect` or a worker once the earlier rounds are done, adds units.
pub fn unit_count(dir: &Path) -> usize {
    read_plan(dir).map_or(0, |p| p.units)
}

/// Whether unit `i` of the sweep in `dir` has its result (`results/NNNN.csv` exists; it is
/// written atomically, so existing means complete).
pub fn unit_done(dir: &Path, i: usize) -> bool {
    result_path(dir, i).exists()
}

/// This machine's name, for claims and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// "pid P on HOST since UNIX-SECONDS": who holds a lock or ran a unit.
fn identity() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("pid {} on {} since {now}", std::process::id(), hostname())
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, then rename, so
/// a reader sees the whole file or none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn write_rows_atomic(path: &Path, rows: &[RunRow]) -> Result<(), ResultsError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    drop(CsvLog::create(&tmp, rows)?);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// An advisory lock on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Held {
    _file: Option<File>,
}

/// Try to lock `path` (created if missing) and write who holds it; Err(holder) if another
/// process holds it.
fn try_hold(path: &Path) -> Result<Result<Held, String>, ResultsError> {
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io(path))?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0).and_then(|_| f.rewind()).and_then(|_| f.write_all(identity().as_bytes())).map_err(io(path))?;
            Ok(Ok(Held { _file: Some(f) }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            f.read_to_string(&mut holder).map_err(io(path))?;
            Ok(Err(if holder.is_empty() { "another process".into() } else { holder }))
        }
        Err(TryLockError::Error(e)) => Err(ResultsError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Hold `DIR/sweep.lock`: the right to write the folder's shared files (runs.csv,
/// summary.json, the plan). Refused with [`RunError::Busy`] naming the live holder — unless
/// the holder is this process's parent on this machine (a `sweep --executor local` runs its
/// workers and may run `sweep collect` as children).
pub fn lock_folder(dir: &Path) -> Result<Held, RunError> {
    match try_hold(&dir.join("sweep.lock"))? {
        Ok(h) => Ok(h),
        Err(holder) if holder.starts_with(&format!("pid {} on {} ", std::os::unix::process::parent_id(), hostname())) => Ok(Held { _file: None }),
        Err(holder) => Err(RunError::Busy { dir: dir.to_path_buf(), holder }),
    }
}

/// Run `f` holding `DIR/plan.lock` (waiting for it: planning is quick).
fn with_plan_lock<T>(dir: &Path, f: impl FnOnce() -> Result<T, RunError>) -> Result<T, RunError> {
    let p = dir.join("plan.lock");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&p).map_err(io(&p))?;
    file.lock().map_err(io(&p))?;
    let out = f();
    drop(file);
    out
}

fn save_units(dir: &Path, units: &[Unit], state: &PlanState) -> Result<(), RunError> {
    for u in units {
        let p = unit_path(dir, u.index);
        let text = serde_json::to_string_pretty(u).map_err(|e| ResultsError::Malformed { path: p.clone(), line: 0, message: e.to_string() })?;
        write_atomic(&p, text.as_bytes())?;
    }
    let p = dir.join("plan.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| ResultsError::Malformed { path: p.clone(), line: 0, message: e.to_string() })?;
    write_atomic(&p, text.as_bytes())?;
    Ok(())
}

/// The grid's units: per T, per model, the (m, seed) members in chunks of `max_ensemble`
/// (the order the one-process sweep always trained them in).
fn grid_units(cfg: &SweepConfig) -> Vec<Unit> {
    let grid: Vec<usize> = if cfg.train.online { vec![0] } else { cfg.sweep.m.values() };
    let mut units = Vec::new();
    for &t in &cfg.sweep.t {
        for (name, _) in &cfg.models {
            let all: Vec<(usize, u64, usize)> = grid.iter().flat_map(|&m| cfg.members_at(m)).collect();
            // A learner's instance (its k restarts, or with recipes those of one recipe)
            // stays in one ensemble where max_ensemble allows, so that the trainer can stop
            // the instance as a whole.
            let k = if cfg.learner().kind == LearnerKind::Majority { 1 } else { (cfg.learner().k / recipe_count(cfg)).max(1) };
            let size = if k <= cfg.sweep.max_ensemble { cfg.sweep.max_ensemble / k * k } else { cfg.sweep.max_ensemble };
            for group in by_recipe(cfg, all) {
                for chunk in group.chunks(size) {
                    units.push(Unit {
                        index: units.len(),
                        round: 0,
                        model: name.clone(),
                        t,
                        members: chunk.iter().map(|x| (x.0, x.1)).collect(),
                        restarts: if cfg.learner().k > 1 || cfg.learner().kind != LearnerKind::Majority {
                            chunk.iter().map(|x| x.2).collect()
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
    }
    units
}

/// How many recipes the restarts are spread over (1 without `sweep.recipes`).
fn recipe_count(cfg: &SweepConfig) -> usize {
    cfg.sweep.recipes.as_ref().map_or(1, |r| r.len().max(1))
}

/// `members` (m, seed, restart) split by recipe, in recipe order, each group in the order
/// given: an ensemble trains one recipe (the optimizer's settings are the ensemble's).
/// Without recipes, one group of them all.
fn by_recipe(cfg: &SweepConfig, members: Vec<(usize, u64, usize)>) -> Vec<Vec<(usize, u64, usize)>> {
    if cfg.sweep.recipes.is_none() {
        return vec![members];
    }
    (0..recipe_count(cfg)).map(|r| members.iter().copied().filter(|x| cfg.recipe_of(Some(x.2)) == Some(r)).collect()).collect()
}

/// Write the resolved config and round 0 of the plan into `dir` (which must hold nothing
/// but its `sweep.lock`). Returns the number of units.
pub fn write_plan(cfg: &SweepConfig, dir: &Path) -> Result<usize, RunError> {
    for sub in ["units", "results", "claims"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let cfg_path = dir.join("config.yaml");
    write_atomic(&cfg_path, cfg.to_yaml().as_bytes())?;
    let units = grid_units(cfg);
    let refine = !cfg.train.online && cfg.sweep.refine > 0;
    save_units(dir, &units, &PlanState { rounds: 1, units: units.len(), complete: !refine })?;
    Ok(units.len())
}

/// The resolved config of the sweep in `dir`.
pub fn load_config(dir: &Path, registry: &Registry) -> Result<SweepConfig, RunError> {
    let p = dir.join("config.yaml");
    if !p.exists() || !dir.join("plan.json").exists() {
        return Err(RunError::NoPlan(dir.to_path_buf()));
    }
    Ok(SweepConfig::load(&p, &[], registry)?)
}

/// Plan the next refinement round if every planned unit has its result. Returns whether the
/// sweep is finished: the plan is complete (no round will follow) and every unit has its
/// result.
pub fn plan_next(cfg: &SweepConfig, dir: &Path) -> Result<bool, RunError> {
    with_plan_lock(dir, || {
        let mut state = read_plan(dir)?;
        loop {
            if (0..state.units).any(|i| !unit_done(dir, i)) {
                return Ok(false);
            }
            if state.complete {
                return Ok(true);
            }
            let rows = gather(dir, state.units)?.rows;
            let mut units = Vec::new();
            for &t in &cfg.sweep.t {
                for (name, _) in &cfg.models {
                    let p = summarize_point(cfg, &rows, name, t);
                    let (Some(hi), Some(lo)) = (p.m_star, p.m_below) else { continue };
                    let mid = ((hi as f64 * lo as f64).sqrt().round() as usize).clamp(lo + 1, hi);
                    if mid >= hi || rows.iter().any(|r| r.model == *name && r.t == t && r.m == mid) {
                        continue;
                    }
                    let learner = cfg.learner().kind != LearnerKind::Majority;
                    for all in by_recipe(cfg, cfg.members_at(mid)) {
                        units.push(Unit {
                            index: state.units + units.len(),
                            round: state.rounds,
                            model: name.clone(),
                            t,
                            members: all.iter().map(|x| (x.0, x.1)).collect(),
                            restarts: if learner { all.iter().map(|x| x.2).collect() } else { Vec::new() },
                        });
                    }
                }
            }
            state.rounds += 1;
            state.units += units.len();
            // A round with nothing to refine leaves every bracket as it is: no later round
            // would find anything either.
            state.complete = units.is_empty() || state.rounds > cfg.sweep.refine;
            save_units(dir, &units, &state)?;
        }
    })
}

/// Whether unit `i` is still to run: `None` when its result exists, else the plan's unit
/// count; a unit the plan does not hold is an error.
fn pending_unit(dir: &Path, i: usize) -> Result<Option<usize>, RunError> {
    if unit_done(dir, i) {
        return Ok(None);
    }
    let count = unit_count(dir);
    if i >= count || !unit_path(dir, i).exists() {
        return Err(RunError::UnknownUnit { dir: dir.to_path_buf(), unit: i, count });
    }
    Ok(Some(count))
}

/// The build (git revision) of this process, named on the `starts.log` line of every unit
/// it trains: builds may differ in the last bits of what they compute, so a folder whose
/// units were trained by several says so ([`builds`]).
static BUILD: OnceLock<String> = OnceLock::new();

/// Name this process's build for the units it trains (the program calls it once, first).
pub fn set_build(revision: &str) {
    if !revision.is_empty() {
        BUILD.set(revision.to_string()).ok();
    }
}

/// The builds that started units in `dir`, in order of first start: each `build=REV` of
/// `starts.log`, or [`UNRECORDED_BUILD`] for a start line without one (an older program, or a
/// process that did not name its build). Empty when no unit has started.
pub fn builds(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("starts.log")).unwrap_or_default();
    let mut found: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        // Start lines are "unit pid host [build=REV] [from-step N]"; others (requeued) are not.
        let (Some(unit), Some(pid)) = (words.next(), words.next()) else { continue };
        if unit.parse::<usize>().is_err() || pid.parse::<u32>().is_err() {
            continue;
        }
        let build = words.find_map(|w| w.strip_prefix("build=")).unwrap_or(UNRECORDED_BUILD).to_string();
        if !found.contains(&build) {
            found.push(build);
        }
    }
    found
}

/// Run unit `i` unless its result exists (then Ok(false)). Appends "unit pid host
/// build=REV" to `starts.log` as it starts, writes `results/NNNN.csv` atomically when done.
pub fn run_unit(
    cfg: &SweepConfig,
    dir: &Path,
    i: usize,
    registry: &Registry,
    make_backend: &mut dyn FnMut() -> Result<Box<dyn Backend>, String>,
    observer: &mut dyn Observer,
) -> Result<bool, RunError> {
    let Some(count) = pending_unit(dir, i)? else { return Ok(false) };
    let p = unit_path(dir, i);
    let unit: Unit = read_json(&p, "a sweep unit")?;
    let Some((_, model)) = cfg.models.iter().find(|(n, _)| *n == unit.model) else {
        return Err(ResultsError::Malformed { path: p, line: 0, message: format!("model `{}` is not in config.yaml", unit.model) }.into());
    };
    let done: usize = (0..count).filter(|&j| unit_done(dir, j)).count();
    let go = if unit.round == 0 {
        observer.event(Event::Ensemble { model: &unit.model, t: unit.t, members: unit.members.len(), done, total: count })
    } else {
        observer.event(Event::Refine { model: &unit.model, t: unit.t, m: unit.members[0].0 })
    };
    if !go {
        return Err(RunError::Interrupted);
    }
    // The unit's checkpoint: written only by the holder of its claim, like its result.
    let ck = checkpoint_path(dir, i);
    let ck_dir = dir.join("checkpoints");
    std::fs::create_dir_all(&ck_dir).map_err(io(&ck_dir))?;
    let triples: Vec<(usize, u64, Option<usize>)> = unit.members.iter().enumerate().map(|(i, &(m, s))| (m, s, unit.restarts.get(i).copied())).collect();
    let fingerprint = unit_fingerprint(cfg, &unit.model, unit.t, &triples);
    let from = read_checkpoint_file(&ck).ok().filter(|c| c.config == fingerprint).map(|c| format!(" from-step {}", c.state.step));
    let log = dir.join("starts.log");
    let mut f = OpenOptions::new().create(true).append(true).open(&log).map_err(io(&log))?;
    // One short write in append mode: lines from several processes never interleave.
    let build = BUILD.get().map(|b| format!(" build={b}")).unwrap_or_default();
    f.write_all(format!("{i} {} {}{build}{}\n", std::process::id(), hostname(), from.unwrap_or_default()).as_bytes()).map_err(io(&log))?;
    let rows = train_cells(cfg, dir, &unit.model, model, unit.t, &unit.members, &unit.restarts, registry, make_backend, observer, Some(&ck))?;
    write_rows_atomic(&result_path(dir, i), &rows)?;
    // The result is what counts now; the checkpoint would only take space.
    std::fs::remove_file(&ck).ok();
    Ok(true)
}

/// Units whose result holds a faulted member (its task failed, e.g. a plugin's error), while
/// the plan is still at its grid round: a resumed sweep runs them again, since the fault may
/// be fixed by now (a plugin rebuilt). Once a refinement round is planned the grid's rows
/// have been used to plan it, so they stay as they are.
pub fn faulted_units(dir: &Path) -> Result<Vec<usize>, RunError> {
    let state = read_plan(dir)?;
    if state.rounds > 1 {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for i in (0..state.units).filter(|&i| unit_done(dir, i)) {
        let rows: Vec<RunRow> = read_csv(&result_path(dir, i))?;
        if rows.iter().any(|r| r.faulted.is_some()) {
            found.push(i);
        }
    }
    Ok(found)
}

/// Make the [`faulted_units`] pending again: their results move to `faulted/NNNN.csv` (kept
/// for the record, out of what `gather` reads), and starts.log says so. Returns them.
pub(crate) fn requeue_faulted(dir: &Path) -> Result<Vec<usize>, RunError> {
    let units = faulted_units(dir)?;
    if units.is_empty() {
        return Ok(units);
    }
    let kept = dir.join("faulted");
    std::fs::create_dir_all(&kept).map_err(io(&kept))?;
    let log = dir.join("starts.log");
    let mut f = OpenOptions::new().create(true).append(true).open(&log).map_err(io(&log))?;
    for &i in &units {
        let to = kept.join(format!("{i:04}.csv"));
        std::fs::rename(result_path(dir, i), &to).map_err(io(&to))?;
        f.write_all(format!("{i} requeued: a member had faulted; its result is in faulted/{i:04}.csv\n").as_bytes()).map_err(io(&log))?;
    }
    Ok(units)
}

/// Where unit `i`'s checkpoint lives while it trains (see [`crate::checkpoint`]): a
/// preempted unit, run again, continues from it ("from-step N" in starts.log).
pub fn checkpoint_path(dir: &Path, i: usize) -> PathBuf {
    dir.join("checkpoints").join(format!("{i:04}.safetensors"))
}

/// What [`claim_and_run`] did with a unit.
#[derive(Clone, Debug, PartialEq)]
pub enum UnitRun {
    /// This process ran it and wrote its result.
    Ran,
    /// Its result existed already.
    AlreadyDone,
    /// Another live process holds its claim (who: "pid P on HOST since …").
    HeldBy(String),
}

/// Claim unit `i` (its advisory lock `claims/NNNN.lock`) and run it unless its result exists;
/// a unit another live process is running is left to it.
pub fn claim_and_run(
    cfg: &SweepConfig,
    dir: &Path,
    i: usize,
    registry: &Registry,
    make_backend: &mut dyn FnMut() -> Result<Box<dyn Backend>, String>,
    observer: &mut dyn Observer,
) -> Result<UnitRun, RunError> {
    if pending_unit(dir, i)?.is_none() {
        return Ok(UnitRun::AlreadyDone);
    }
    match try_hold(&claim_path(dir, i))? {
        // Checked again under the claim (in run_unit): another worker may have just finished it.
        Ok(_claim) => Ok(if run_unit(cfg, dir, i, registry, make_backend, observer)? { UnitRun::Ran } else { UnitRun::AlreadyDone }),
        Err(holder) => Ok(UnitRun::HeldBy(holder)),
    }
}

/// Claim and run units until every unit of the (complete) plan has its result; planning
/// the refinement rounds as their inputs complete. Units another live process holds are
/// waited for. `after_unit` runs after each unit this process finished. Returns how many
/// units this process ran.
pub fn work_claim(
    cfg: &SweepConfig,
    dir: &Path,
    registry: &Registry,
    make_backend: &mut dyn FnMut() -> Result<Box<dyn Backend>, String>,
    observer: &mut dyn Observer,
    after_unit: &mut dyn FnMut() -> Result<(), RunError>,
) -> Result<usize, RunError> {
    let mut ran = 0;
    // The holders last reported, so that a long wait is reported once, not every 200 ms.
    let mut reported: Vec<(usize, String)> = Vec::new();
    loop {
        let n = unit_count(dir);
        let mut held = Vec::new();
        for i in 0..n {
            if unit_done(dir, i) {
                continue;
            }
            match claim_and_run(cfg, dir, i, registry, make_backend, observer)? {
                UnitRun::Ran => {
                    ran += 1;
                    after_unit()?;
                }
                UnitRun::AlreadyDone => {}
                UnitRun::HeldBy(holder) => held.push((i, holder)),
            }
        }
        if !held.is_empty() {
            if held != reported {
                observer.event(Event::Waiting { holders: &held });
                reported = held;
            }
            std::thread::sleep(Duration::from_millis(200));
        } else if plan_next(cfg, dir)? {
            return Ok(ran);
        }
    }
}

/// The merged unit results of a folder.
#[derive(Debug)]
pub struct Gathered {
    /// Every (model, T, m, seed) once, in unit order.
    pub rows: Vec<RunRow>,
    /// Units of the plan without a result.
    pub missing: Vec<usize>,
    /// Sum over the result files of their ensemble's wall time.
    pub seconds: f64,
}

/// Read every `results/*.csv` (in name order), keep each (model, T, m, seed) once and refuse
/// two rows for one member that disagree (anything but the wall time), naming both files.
pub fn gather(dir: &Path, units: usize) -> Result<Gathered, RunError> {
    let rdir = dir.join("results");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rdir)
        .map_err(io(&rdir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    let mut seen: BTreeMap<crate::sweep::RowKey, (usize, PathBuf)> = BTreeMap::new();
    let mut rows: Vec<RunRow> = Vec::new();
    let mut seconds = 0.0;
    // Compare rows without their wall time; Debug prints NaN as NaN, so equal NaNs agree.
    let comparable = |r: &RunRow| format!("{:?}", RunRow { seconds: 0.0, ..r.clone() });
    for f in &files {
        let these: Vec<RunRow> = read_csv(f)?;
        seconds += these.first().map_or(0.0, |r| r.seconds);
        for r in these {
            match seen.get(&r.key()) {
                Some((at, first)) => {
                    if comparable(&rows[*at]) != comparable(&r) {
                        return Err(RunError::Conflict {
                            member: format!("model {} T={} m={} seed {}", r.model, r.t, r.m, r.seed),
                            first: first.clone(),
                            second: f.clone(),
                        });
                    }
                }
                None => {
                    seen.insert(r.key(), (rows.len(), f.clone()));
                    rows.push(r);
                }
            }
        }
    }
    let missing = (0..units).filter(|&i| !unit_done(dir, i)).collect();
    Ok(Gathered { rows, missing, seconds })
}

/// Rewrite runs.csv from the unit results there are (the caller holds `sweep.lock`).
pub fn write_runs(dir: &Path) -> Result<Vec<RunRow>, RunError> {
    let g = gather(dir, unit_count(dir))?;
    write_rows_atomic(&dir.join("runs.csv"), &g.rows)?;
    Ok(g.rows)
}

/// Merge the unit results into runs.csv and summary.json (the caller holds `sweep.lock`).
/// Plans the next refinement round first where its inputs are complete; refuses with
/// [`RunError::Missing`] (listing them) while units have no result. `seconds`: the wall
/// time to record (default: the sum of the units' ensemble times).
pub fn collect(cfg: &SweepConfig, dir: &Path, registry: &Registry, provenance: &Provenance, seconds: Option<f64>) -> Result<SweepOutcome, RunError> {
    plan_next(cfg, dir)?;
    let g = gather(dir, unit_count(dir))?;
    write_rows_atomic(&dir.join("runs.csv"), &g.rows)?;
    if !g.missing.is_empty() {
        return Err(RunError::Missing { dir: dir.to_path_buf(), units: g.missing });
    }
    let summary = summarize(cfg, &g.rows, seconds.unwrap_or(g.seconds), registry).map_err(RunError::Baselines)?;
    let p = dir.join("summary.json");
    // A summary there already was collected by an earlier process: keep it on record.
    let mut earlier = Vec::new();
    if let Ok(before) = read_json::<SweepFile>(&p, "a sweep summary") {
        earlier = before.earlier;
        if before.provenance != *provenance {
            earlier.push(before.provenance);
        }
    }
    let file = SweepFile { summary, provenance: provenance.clone(), earlier, unit_seconds: g.seconds, builds: builds(dir) };
    let text = serde_json::to_string_pretty(&file).map_err(|e| ResultsError::Malformed { path: p.clone(), line: 0, message: e.to_string() })?;
    write_atomic(&p, (text + "\n").as_bytes())?;
    Ok(SweepOutcome { summary: file.summary, runs: g.rows, builds: file.builds })
}
