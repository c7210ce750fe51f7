//! What Slurm says about an array: `scontrol -o show job ID` (one line per task record; there
//! may be no accounting daemon, so no sacct) and the index lists of `--array`.

use std::collections::BTreeMap;

/// Where one array task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
    /// Ended with exit status 0 (its unit's result may still be missing).
    Completed,
    /// Failed, cancelled, timed out, preempted, out of memory, its node failed…
    Failed,
}

impl TaskState {
    /// From scontrol's `JobState=` (squeue's `%T`).
    pub fn from_slurm(state: &str) -> TaskState {
        match state {
            "COMPLETED" => TaskState::Completed,
            "RUNNING" | "COMPLETING" | "CONFIGURING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" | "SUSPENDED" | "STOPPED" => TaskState::Running,
            "PENDING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => TaskState::Pending,
            // CANCELLED, FAILED, TIMEOUT, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, OUT_OF_MEMORY, REVOKED
            _ => TaskState::Failed,
        }
    }

    pub fn ended(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Failed)
    }
}

/// Each task index's state, with Slurm's own name for it (`CANCELLED`).
pub type TaskStates = BTreeMap<usize, (TaskState, String)>;

/// The state of each task index `scontrol -o show job ARRAY_ID` printed. A record whose
/// `ArrayTaskId` is a list (`2-7%2`, the tasks not yet started) covers each index in it.
pub fn parse_scontrol(text: &str) -> Result<TaskStates, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let field = |key: &str| line.split_whitespace().find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')));
        let Some(state) = field("JobState") else {
            return Err(format!("no JobState in scontrol's line `{}`", line.chars().take(120).collect::<String>()));
        };
        let Some(tasks) = field("ArrayTaskId") else {
            return Err(format!("no ArrayTaskId in scontrol's line `{}` (not an array job?)", line.chars().take(120).collect::<String>()));
        };
        let tasks = tasks.split('%').next().unwrap_or_default();
        for i in parse_indices(tasks)? {
            out.insert(i, (TaskState::from_slurm(state), state.to_string()));
        }
    }
    Ok(out)
}

/// `0-3,7,9-10` into its indices.
pub fn parse_indices(text: &str) -> Result<Vec<usize>, String> {
    let num = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{s}` is not an array index (in `{text}`)"));
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!("range `{part}` runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// Indices (sorted, distinct) as sbatch's `--array` list, runs written as ranges: `0-3,7,9-10`.
pub fn format_indices(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if j == i { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    parts.join(",")
}
