//! Against a real Slurm (`SLURM_CONF` set, e.g. by `eval "$(.ci/slurm-up.sh)"`): arrays of a
//! toy command that writes `done-I`, a task cancelled mid-run and resubmitted, a unit that
//! keeps failing, options sbatch rejects. Ignored by default (they need the daemons); CI runs
//! them with `cargo test -p sparsevar-slurm --test cluster -- --ignored` under its cluster.

use std::path::Path;
use std::time::Duration;

use sparsevar_slurm::{ArrayJob, Progress, SlurmError, SlurmExecutor, SlurmOptions};
use sparsevar_test_support::ScratchDir;

fn executor(options: &str, max_parallel: Option<usize>, resubmit_limit: usize) -> SlurmExecutor {
    assert!(std::env::var_os("SLURM_CONF").is_some(), "SLURM_CONF is not set: start a cluster first, eval \"$(.ci/slurm-up.sh)\"");
    let mut ex = SlurmExecutor::new(SlurmOptions::parse(options).unwrap(), max_parallel, resubmit_limit).unwrap();
    ex.poll = Duration::from_millis(200);
    ex
}

/// A job whose task I runs `sh -c SCRIPT I` in `dir/slurm` (the index is `$0`).
fn toy(dir: &Path, units: usize, script: &str) -> ArrayJob {
    ArrayJob {
        folder: dir.join("slurm"),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        units,
        name: format!("sparsevar test {}", dir.display()),
    }
}

fn done(job: &ArrayJob, i: usize) -> bool {
    job.folder.join(format!("done-{i}")).exists()
}

#[test]
#[ignore = "needs a running Slurm: eval \"$(.ci/slurm-up.sh)\", then cargo test -p sparsevar-slurm --test cluster -- --ignored"]
fn a_task_cancelled_mid_run_is_resubmitted_alone_and_the_array_completes() {
    let dir = ScratchDir::created("slurm-cancel");
    // Task 2 hangs on its first attempt (until cancelled); every other task finishes at once.
    let job = toy(&dir, 5, r#"touch started-$0; if [ "$0" = 2 ] && [ ! -e attempt-2 ]; then touch attempt-2; sleep 120; fi; touch done-$0"#);
    let ex = executor("comment=two words", Some(2), 2);
    // Some done units from an earlier run are not submitted again.
    std::fs::create_dir_all(&job.folder).unwrap();
    std::fs::write(job.folder.join("done-4"), "").unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    let mut cancelled = None;
    let subs = ex
        .run(&job, &|i| done(&job, i), &mut |p| {
            if cancelled.is_none() && job.folder.join("attempt-2").exists() {
                SlurmExecutor::cancel(&format!("{}_2", p.job_id)).unwrap();
                cancelled = Some(p.job_id.clone());
            }
            seen.push(p.clone());
        })
        .unwrap();
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(subs[0].units, [0, 1, 2, 3]);
    assert_eq!(subs[1].units, [2], "only the cancelled task's unit is resubmitted");
    assert_eq!(cancelled.as_deref(), Some(subs[0].job_id.as_str()));
    assert!((0..5).all(|i| done(&job, i)));
    // The first array ended with unit 2 failed (cancelled); the last report has all done.
    let end_of_first = seen.iter().rfind(|p| p.submission == 1).unwrap();
    assert_eq!((end_of_first.done, end_of_first.failed, end_of_first.running, end_of_first.pending), (4, 1, 0, 0), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.submission, last.done, last.total, last.failed), (2, 5, 5, 0));
    // Logs per task, and the submissions recorded in the folder.
    for i in 0..4 {
        assert!(job.logs().join(format!("{}_{i}.out", subs[0].job_id)).exists(), "log of task {i}");
    }
    let jobs = std::fs::read_to_string(job.folder.join("jobs.txt")).unwrap();
    assert_eq!(jobs, format!("{} 0-3\n{} 2\n", subs[0].job_id, subs[1].job_id));
    // A second run finds nothing to do and submits nothing.
    assert!(ex.run(&job, &|i| done(&job, i), &mut |_| {}).unwrap().is_empty());
}

#[test]
#[ignore = "needs a running Slurm: eval \"$(.ci/slurm-up.sh)\", then cargo test -p sparsevar-slurm --test cluster -- --ignored"]
fn a_unit_that_keeps_failing_stops_after_the_resubmission_limit() {
    let dir = ScratchDir::created("slurm-fail");
    let job = toy(&dir, 3, r#"echo "attempt" >> tries-$0; if [ "$0" = 1 ]; then exit 3; fi; touch done-$0"#);
    let ex = executor("", None, 1);
    let e = ex.run(&job, &|i| done(&job, i), &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SlurmError::Unfinished { submissions: 2, .. }), "{msg}");
    assert!(msg.contains("units 1 have no result") && msg.contains("1: FAILED") && msg.contains("logs"), "{msg}");
    assert!(!e.is_input());
    // Tried once plus one resubmission; the others ran once.
    assert_eq!(std::fs::read_to_string(job.folder.join("tries-1")).unwrap().lines().count(), 2);
    assert_eq!(std::fs::read_to_string(job.folder.join("tries-0")).unwrap().lines().count(), 1);
}

#[test]
#[ignore = "needs a running Slurm: eval \"$(.ci/slurm-up.sh)\", then cargo test -p sparsevar-slurm --test cluster -- --ignored"]
fn options_sbatch_rejects_show_its_message_and_submit_nothing() {
    let dir = ScratchDir::created("slurm-reject");
    let job = toy(&dir, 2, "touch done-$0");
    for (options, needle) in
        [("partition=nope", "invalid partition specified: nope"), ("time=abc", "Invalid --time specification"), ("bogus=1", "unrecognized option '--bogus=1'")]
    {
        let e = executor(options, None, 1).run(&job, &|i| done(&job, i), &mut |_| panic!("nothing may be submitted")).unwrap_err();
        let msg = e.to_string();
        assert!(e.is_input() && msg.contains(needle) && msg.contains("sbatch rejected"), "{options}: {msg}");
        assert!(!msg.contains('\n') && !msg.contains("sbatch --help"), "{msg}");
    }
    assert!(!job.folder.join("jobs.txt").exists());
    let q = std::process::Command::new("squeue").args(["-h", "-n", &job.name]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), "", "nothing queued");
}
