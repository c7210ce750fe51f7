//! `sparsevar sweep --executor slurm`: the sweep's units as a Slurm job array whose task I runs
//! `sparsevar sweep work DIR --unit I` (this very binary, by absolute path), then the program
//! collects. The executor itself lives in sparsevar-slurm; this module holds the flags and
//! what the user sees.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use sparsevar_slurm::{ArrayJob, Progress, SlurmExecutor, SlurmOptions};

/// The flags of `--executor slurm`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SlurmArgs {
    /// sbatch options for --executor slurm, e.g. --slurm 'partition=gpu, time=01:00:00,
    /// gres=gpu:1' (each becomes `#SBATCH --key=value`; they override the YAML's `slurm:`).
    #[arg(long, value_name = "OPTIONS")]
    pub slurm: Option<String>,
    /// --executor slurm: at most K array tasks run at once (`--array=0-(N-1)%K`).
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<usize>,
    /// --executor slurm: how many times units left without a result (their task failed, was
    /// cancelled or preempted) are submitted again.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub resubmit: usize,
    /// --executor slurm: submit the array, print its job id and exit (for login nodes);
    /// `sparsevar sweep collect DIR` finishes the sweep once the array has ended.
    #[arg(long)]
    pub submit_only: bool,
}

impl SlurmArgs {
    /// A Slurm flag given with another executor: said, not silently ignored.
    pub fn stray_flag(&self) -> Option<&'static str> {
        if self.slurm.is_some() {
            Some("--slurm")
        } else if self.max_parallel.is_some() {
            Some("--max-parallel")
        } else if self.submit_only {
            Some("--submit-only")
        } else {
            None
        }
    }

    /// The executor, checked before the results folder is touched: the option string parses
    /// (YAML `slurm:` first, `--slurm` over it), sbatch is on PATH and accepts the options.
    pub fn executor(&self, yaml: &[(String, Option<String>)]) -> Result<SlurmExecutor, sparsevar_slurm::SlurmError> {
        let mut options = SlurmOptions::default();
        for (k, v) in yaml {
            options.set(k, v.clone())?;
        }
        if let Some(text) = &self.slurm {
            options = options.merged(&SlurmOptions::parse(text)?);
        }
        let mut ex = SlurmExecutor::new(options, self.max_parallel, self.resubmit)?;
        ex.validate()?;
        // Short enough to feel live, long enough not to load slurmctld; tests shorten it.
        ex.poll = std::env::var("SPARSEVAR_SLURM_POLL_MS").ok().and_then(|v| v.parse().ok()).map_or(Duration::from_secs(5), Duration::from_millis);
        Ok(ex)
    }
}

/// The array for the sweep in `dir` (absolute): script and logs in `dir/slurm`.
fn array_job(dir: &Path, units: usize) -> Result<ArrayJob> {
    let exe = std::env::current_exe().and_then(|p| p.canonicalize()).context("find the path of this sparsevar program (array tasks run it)")?;
    let name = dir.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    Ok(ArrayJob {
        folder: dir.join("slurm"),
        command: vec![exe.display().to_string(), "sweep".into(), "work".into(), dir.display().to_string(), "--unit".into()],
        units,
        name: format!("sparsevar-{name}"),
    })
}

/// Runs every planned unit of the sweep in `dir` without a result on Slurm and waits, then
/// asks `plan_next` whether the sweep is finished (it plans the next refinement round once a
/// round is done) and runs that round too. With `submit_only`, submits the units planned now
/// and returns the job id.
pub fn run(
    ex: &SlurmExecutor,
    dir: &Path,
    submit_only: bool,
    unit_count: &dyn Fn() -> usize,
    unit_done: &dyn Fn(usize) -> bool,
    plan_next: &dyn Fn() -> Result<bool>,
) -> Result<Option<String>> {
    let dir = dir.canonicalize().with_context(|| format!("resolve {}", dir.display()))?;
    let mut last: Option<Progress> = None;
    loop {
        let n = unit_count();
        let job = array_job(&dir, n)?;
        if submit_only {
            let todo: Vec<usize> = (0..n).filter(|&i| !unit_done(i)).collect();
            if todo.is_empty() {
                return Ok(None);
            }
            let id = ex.submit(&job, &todo)?;
            eprintln!("submitted {} units as Slurm job {id}; logs in {}", todo.len(), job.logs().display());
            return Ok(Some(id));
        }
        let subs = ex.run(&job, unit_done, &mut |p| {
            if last.as_ref() != Some(p) {
                eprintln!(
                    "slurm job {} (submission {}): {}/{} units done, {} running, {} pending, {} failed",
                    p.job_id, p.submission, p.done, p.total, p.running, p.pending, p.failed
                );
                last = Some(p.clone());
            }
        })?;
        for s in subs.iter().skip(1) {
            eprintln!("resubmitted units {} as job {}", sparsevar_slurm::state::format_indices(&s.units), s.job_id);
        }
        if plan_next()? {
            return Ok(None);
        }
        if unit_count() == n {
            // Nothing new planned and not finished: a unit is still missing (the executor
            // would have said which), so stop rather than loop.
            anyhow::bail!("the sweep in {} is not finished but no units are left to run", dir.display());
        }
    }
}
