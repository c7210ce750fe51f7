//! Runs a sweep's work units as a Slurm job array, through Slurm's own commands — `sbatch
//! --parsable`, `scontrol -o show job`, `scancel` — never libslurm, whose ABI changes with every
//! release. One array task runs one unit (`sparsevar sweep work DIR --unit $SLURM_ARRAY_TASK_ID`);
//! a unit is done when its result file exists, so the executor needs no accounting daemon:
//! when an array has ended it resubmits, as a new array, exactly the units that have no result
//! (their task failed, was cancelled or preempted), up to a limit.

mod options;
pub mod state;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use options::SlurmOptions;
use options::sbatch_value;
pub use state::{TaskState, TaskStates};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{command}` is not on PATH: the Slurm executor needs Slurm's client commands (Debian/Ubuntu: apt-get install slurm-client; on a cluster, run on a login node), or use --executor local"
    )]
    NotInstalled { command: &'static str },
    #[error("Slurm options `{text}`: {message}")]
    Options { text: String, message: String },
    #[error("sbatch rejected the job (options {options}): {message}")]
    Rejected { options: String, message: String },
    #[error("{command} failed ({status}): {message}")]
    Command { command: String, status: String, message: String },
    #[error("cannot read what `{command}` printed: {message}")]
    Output { command: String, message: String },
    #[error("{operation} {path}: {source}")]
    Io { operation: &'static str, path: String, source: std::io::Error },
    #[error("units {units} have no result after {submissions} submissions (last task states: {states}); their logs are in {logs}")]
    Unfinished { units: String, submissions: usize, states: String, logs: String },
}

impl SlurmError {
    /// The user's input is at fault (exit status 2); nothing was submitted.
    pub fn is_input(&self) -> bool {
        matches!(self, SlurmError::NotInstalled { .. } | SlurmError::Options { .. } | SlurmError::Rejected { .. })
    }
}

/// One array: the folder for its script and logs, and the command each task runs with its
/// index appended.
#[derive(Debug, Clone)]
pub struct ArrayJob {
    /// `DIR/slurm`, absolute (tasks may start in another directory on another machine).
    pub folder: PathBuf,
    /// Program and arguments; the task's index is the last argument.
    pub command: Vec<String>,
    /// Units 0..units.
    pub units: usize,
    /// Slurm's job name (squeue shows it).
    pub name: String,
}

impl ArrayJob {
    pub fn script_path(&self) -> PathBuf {
        self.folder.join("array.sh")
    }

    pub fn logs(&self) -> PathBuf {
        self.folder.join("logs")
    }

    /// The batch script: our options, the user's, then the command.
    pub fn script(&self, options: &SlurmOptions) -> String {
        let mut s = String::from("#!/bin/bash\n# Written by sparsevar: array task I runs work unit I.\n");
        s += &format!("#SBATCH --job-name={}\n", sbatch_value(&self.name));
        s += &format!("#SBATCH --output={}\n", sbatch_value(&self.logs().join("%A_%a.out").display().to_string()));
        s += &format!("#SBATCH --chdir={}\n", sbatch_value(&self.folder.display().to_string()));
        for line in options.sbatch_lines() {
            s += &line;
            s.push('\n');
        }
        let argv: Vec<String> = self.command.iter().map(|a| shell_quote(a)).collect();
        s += &format!("exec {} \"$SLURM_ARRAY_TASK_ID\"\n", argv.join(" "));
        s
    }
}

/// One shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Units done, running, waiting and failed (ended without a result), reported at each poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The array being waited for.
    pub job_id: String,
    /// 1 for the first array, 2 for the first resubmission…
    pub submission: usize,
    pub total: usize,
    pub done: usize,
    pub running: usize,
    pub pending: usize,
    pub failed: usize,
}

/// What the executor submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub job_id: String,
    pub units: Vec<usize>,
}

/// Submits arrays and waits for them; see the crate doc.
#[derive(Debug, Clone)]
pub struct SlurmExecutor {
    pub options: SlurmOptions,
    /// K in `--array=…%K`: at most K tasks run at once (None: as many as Slurm allows).
    pub max_parallel: Option<usize>,
    /// How many times units without a result are submitted again.
    pub resubmit_limit: usize,
    /// Time between two looks at the queue.
    pub poll: Duration,
    sbatch: PathBuf,
    scontrol: PathBuf,
}

/// `name` in a PATH folder, as an executable file.
fn find_on_path(name: &'static str, path: &std::ffi::OsStr) -> Result<PathBuf, SlurmError> {
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| p.is_file()).ok_or(SlurmError::NotInstalled { command: name })
}

impl SlurmExecutor {
    /// Finds `sbatch` and `scontrol` on PATH (a one-line error naming what to install if not).
    pub fn new(options: SlurmOptions, max_parallel: Option<usize>, resubmit_limit: usize) -> Result<Self, SlurmError> {
        Self::with_search_path(options, max_parallel, resubmit_limit, &std::env::var_os("PATH").unwrap_or_default())
    }

    /// As `new`, looking for the commands in `path` (a PATH value) instead.
    pub fn with_search_path(options: SlurmOptions, max_parallel: Option<usize>, resubmit_limit: usize, path: &std::ffi::OsStr) -> Result<Self, SlurmError> {
        if max_parallel == Some(0) {
            return Err(SlurmError::Options { text: "max parallel 0".into(), message: "at least one task must be allowed to run".into() });
        }
        Ok(SlurmExecutor {
            options,
            max_parallel,
            resubmit_limit,
            poll: Duration::from_secs(5),
            sbatch: find_on_path("sbatch", path)?,
            scontrol: find_on_path("scontrol", path)?,
        })
    }

    fn array_arg(&self, units: &[usize]) -> String {
        let list = state::format_indices(units);
        match self.max_parallel {
            Some(k) => format!("--array={list}%{k}"),
            None => format!("--array={list}"),
        }
    }

    /// Asks sbatch whether it would accept the user's options (`sbatch --test-only`, which
    /// queues nothing), before anything is written or planned. A rejection carries sbatch's own
    /// message.
    pub fn validate(&self) -> Result<(), SlurmError> {
        let mut cmd = Command::new(&self.sbatch);
        cmd.args(["--test-only", "--job-name=sparsevar-check"]);
        for (k, v) in self.options.iter() {
            cmd.arg(match v {
                Some(v) => format!("--{k}={v}"),
                None => format!("--{k}"),
            });
        }
        self.test_only(cmd.arg("--wrap=true"))
    }

    fn test_only(&self, cmd: &mut Command) -> Result<(), SlurmError> {
        let (ok, _, err) = run(cmd, "sbatch --test-only")?;
        if ok {
            return Ok(());
        }
        let message = err.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("Try \"sbatch --help\"")).collect::<Vec<_>>().join("; ");
        let options = if self.options.is_empty() { "none".to_string() } else { format!("`{}`", self.options.sbatch_lines().join(" ").replace("#SBATCH ", "")) };
        Err(SlurmError::Rejected { options, message })
    }

    /// Writes `folder/array.sh` and the logs folder.
    pub fn write_script(&self, job: &ArrayJob) -> Result<PathBuf, SlurmError> {
        fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError {
            let path = path.display().to_string();
            move |source| SlurmError::Io { operation, path, source }
        }
        std::fs::create_dir_all(job.logs()).map_err(io("create", &job.logs()))?;
        let path = job.script_path();
        let tmp = job.folder.join(".array.sh.tmp");
        std::fs::write(&tmp, job.script(&self.options)).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("write", &path))?;
        Ok(path)
    }

    /// Writes the script, checks it with `sbatch --test-only` (nothing is queued; a rejected
    /// option gives sbatch's own message), then submits the units as one array. Returns the
    /// job id and appends it to `folder/jobs.txt`.
    pub fn submit(&self, job: &ArrayJob, units: &[usize]) -> Result<String, SlurmError> {
        let script = self.write_script(job)?;
        let array = self.array_arg(units);
        self.test_only(Command::new(&self.sbatch).arg("--test-only").arg(&array).arg(&script))?;
        let (ok, out, err) = run(Command::new(&self.sbatch).arg("--parsable").arg(&array).arg(&script), "sbatch --parsable")?;
        if !ok {
            return Err(SlurmError::Command { command: format!("sbatch {array} {}", script.display()), status: "exit".into(), message: one_line(&err) });
        }
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(SlurmError::Output { command: "sbatch --parsable".into(), message: format!("expected a job id, got `{}`", out.trim()) });
        }
        let jobs = job.folder.join("jobs.txt");
        let line = format!("{id} {}\n", state::format_indices(units));
        std::fs::OpenOptions::new().create(true).append(true).open(&jobs).and_then(|mut f| f.write_all(line.as_bytes())).map_err(|source| SlurmError::Io {
            operation: "append to",
            path: jobs.display().to_string(),
            source,
        })?;
        Ok(id)
    }

    /// Each task's state, or None once Slurm has forgotten the job (it keeps ended jobs
    /// MinJobAge seconds, 300 by default).
    pub fn status(&self, job_id: &str) -> Result<Option<TaskStates>, SlurmError> {
        let (ok, out, err) = run(Command::new(&self.scontrol).args(["-o", "show", "job", job_id]), "scontrol")?;
        if !ok {
            if err.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(SlurmError::Command { command: format!("scontrol -o show job {job_id}"), status: "exit".into(), message: one_line(&err) });
        }
        state::parse_scontrol(&out).map(Some).map_err(|message| SlurmError::Output { command: format!("scontrol -o show job {job_id}"), message })
    }

    /// Runs every unit that `is_done` says has no result: submits them as one array, reports
    /// progress at every poll until the array has ended, then resubmits the units still
    /// without a result, at most `resubmit_limit` times. Returns the submissions made.
    pub fn run(&self, job: &ArrayJob, is_done: &dyn Fn(usize) -> bool, progress: &mut dyn FnMut(&Progress)) -> Result<Vec<Submission>, SlurmError> {
        let mut submissions = Vec::new();
        let mut todo: Vec<usize> = (0..job.units).filter(|&i| !is_done(i)).collect();
        let mut last_states = BTreeMap::new();
        while !todo.is_empty() {
            if submissions.len() > self.resubmit_limit {
                let states: Vec<String> =
                    todo.iter().map(|i| format!("{i}: {}", last_states.get(i).map_or("unknown", |(_, s): &(TaskState, String)| s))).collect();
                return Err(SlurmError::Unfinished {
                    units: state::format_indices(&todo),
                    submissions: submissions.len(),
                    states: states.join(", "),
                    logs: job.logs().display().to_string(),
                });
            }
            let job_id = self.submit(job, &todo)?;
            submissions.push(Submission { job_id: job_id.clone(), units: todo.clone() });
            last_states = self.wait(job, &job_id, &todo, submissions.len(), is_done, progress)?;
            todo.retain(|&i| !is_done(i));
        }
        Ok(submissions)
    }

    /// Polls until every task of the array has ended (or Slurm no longer knows the job).
    fn wait(
        &self,
        job: &ArrayJob,
        job_id: &str,
        units: &[usize],
        submission: usize,
        is_done: &dyn Fn(usize) -> bool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<TaskStates, SlurmError> {
        let mut errors = 0;
        let mut last = BTreeMap::new();
        loop {
            let states = match self.status(job_id) {
                Ok(s) => s,
                // slurmctld may be restarting; give up only when it stays away.
                Err(_) if errors < 10 => {
                    errors += 1;
                    std::thread::sleep(self.poll);
                    continue;
                }
                Err(e) => return Err(e),
            };
            errors = 0;
            let ended = match &states {
                None => true,
                Some(s) => units.iter().all(|i| s.get(i).is_none_or(|(t, _)| t.ended())),
            };
            if let Some(s) = states {
                last = s;
            }
            let mut p = Progress {
                job_id: job_id.to_string(),
                submission,
                total: job.units,
                done: (0..job.units).filter(|&i| is_done(i)).count(),
                running: 0,
                pending: 0,
                failed: 0,
            };
            for i in units.iter().filter(|&&i| !is_done(i)) {
                match last.get(i).map(|(t, _)| *t) {
                    Some(TaskState::Running) => p.running += 1,
                    Some(TaskState::Pending) => p.pending += 1,
                    Some(TaskState::Completed | TaskState::Failed) => p.failed += 1,
                    None if ended => p.failed += 1,
                    None => p.pending += 1,
                }
            }
            progress(&p);
            if ended {
                return Ok(last);
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Cancels a job (all its tasks) or one task (`ID_INDEX`).
    pub fn cancel(job_id: &str) -> Result<(), SlurmError> {
        let scancel = find_on_path("scancel", &std::env::var_os("PATH").unwrap_or_default())?;
        let (ok, _, err) = run(Command::new(scancel).arg(job_id), "scancel")?;
        if ok { Ok(()) } else { Err(SlurmError::Command { command: format!("scancel {job_id}"), status: "exit".into(), message: one_line(&err) }) }
    }
}

/// Runs a command: (success, stdout, stderr).
fn run(cmd: &mut Command, name: &str) -> Result<(bool, String, String), SlurmError> {
    let out = cmd.output().map_err(|source| SlurmError::Io { operation: "run", path: name.to_string(), source })?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}
