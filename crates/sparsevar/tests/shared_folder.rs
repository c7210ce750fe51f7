//! A sweep's results folder shared by many processes (issue 12): plan + workers + collect
//! gives the one-process sweep's summary, every unit runs exactly once, a second `sweep` on
//! a live folder is refused naming the holder, collect de-duplicates or refuses unit results.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sparsevar_test_support::ScratchDir;

fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).output().expect("run sparsevar")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// 2 T × 2 models, 9 (m, seed) members each in chunks of 3: 12 grid units, and a
/// refinement round where m* has a failing grid point below it.
const SWEEP: &str = "task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
  uniform: { kind: transformer, d_model: 16, heads: 2, mlp: 2, attention: uniform }
train: { batch: 32, max_steps: 600, lr: 0.003, eval_every: 50, test_samples: 128 }
sweep:
  T: [6, 8]
  m: [8, 32, 256]
  seeds: [0, 1, 2]
  max_ensemble: 3
  refine: 2
  baselines: [gf2]
";

/// A tiny sweep (seconds) for the collect checks.
const TINY: &str = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: mlp } }\ntrain: { max_steps: 20, eval_every: 10 }\nsweep: { T: [6], m: [16, 32], seeds: [0, 1], max_ensemble: 2 }\n";

/// summary.json without its wall time and provenance (which differ between any two runs).
fn comparable_summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let summary = v.get_mut("summary").expect("summary.json has a summary");
    summary.as_object_mut().unwrap().remove("seconds");
    summary.take()
}

/// The units each process started, from starts.log ("unit pid host" lines).
fn starts(dir: &Path) -> BTreeMap<usize, Vec<String>> {
    let mut m: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("starts.log")).unwrap().lines() {
        let mut f = line.split(' ');
        let unit: usize = f.next().unwrap().parse().unwrap();
        m.entry(unit).or_default().push(f.next().unwrap().to_string());
    }
    m
}

#[test]
fn plan_two_claiming_workers_and_collect_give_the_one_process_summary_each_unit_once() {
    let d = ScratchDir::created("shared-workers");
    std::fs::write(d.join("s.yaml"), SWEEP).unwrap();
    let plan = sparsevar(&["sweep", "s.yaml", "--out", "split", "--plan"], &d);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(String::from_utf8_lossy(&plan.stdout).starts_with("12 units planned"), "{}", String::from_utf8_lossy(&plan.stdout));
    let split = d.join("split");
    assert!(split.join("units/0011.json").exists() && !split.join("units/0012.json").exists());

    // Collect before any work: no partial summary, the missing units listed, exit 1.
    let early = sparsevar(&["sweep", "collect", "split"], &d);
    assert_eq!(early.status.code(), Some(1), "{}", stderr(&early));
    assert!(stderr(&early).contains("12 unit(s) have no result yet: 0, 1, 2"), "{}", stderr(&early));
    assert!(!split.join("summary.json").exists());

    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sparsevar"))
                .args(["sweep", "work", "split", "--claim", "--threads", "1"])
                .current_dir(&*d)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<String> = workers.iter().map(|w| w.id().to_string()).collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed: {}", stderr(&out));
    }
    let count = std::fs::read_dir(split.join("units")).unwrap().count();
    assert!(count > 12, "the workers planned the refinement rounds ({count} units)");
    let log = starts(&split);
    assert_eq!(log.len(), count, "every unit started: {log:?}");
    for (unit, by) in &log {
        assert_eq!(by.len(), 1, "unit {unit} ran {} times: {by:?}", by.len());
        assert!(pids.contains(&by[0]), "unit {unit} ran by {} , not a worker {pids:?}", by[0]);
    }
    let collect = sparsevar(&["sweep", "collect", "split"], &d);
    assert!(collect.status.success(), "{}", stderr(&collect));

    let whole = sparsevar(&["sweep", "s.yaml", "--out", "whole"], &d);
    assert!(whole.status.success(), "{}", stderr(&whole));
    assert_eq!(comparable_summary(&split), comparable_summary(&d.join("whole")), "split and one-process sweeps disagree");
    let refined = comparable_summary(&split).to_string();
    assert_eq!(
        std::fs::read_to_string(split.join("runs.csv")).unwrap().lines().count(),
        std::fs::read_to_string(d.join("whole/runs.csv")).unwrap().lines().count()
    );
    assert!(refined.contains("\"m_star\""), "{refined}");

    // A worker on a finished folder runs nothing; one unit by number is a no-op too.
    let again = sparsevar(&["sweep", "work", "split", "--unit", "3"], &d);
    assert!(again.status.success() && stderr(&again).contains("already done"), "{}", stderr(&again));
    assert_eq!(starts(&split).len(), count);
}

#[test]
fn collect_de_duplicates_equal_unit_results_and_refuses_disagreeing_ones() {
    let d = ScratchDir::created("shared-collect");
    std::fs::write(d.join("t.yaml"), TINY).unwrap();
    let out = sparsevar(&["sweep", "t.yaml", "--out", "res"], &d);
    assert!(out.status.success(), "{}", stderr(&out));
    let res = d.join("res");
    let before = comparable_summary(&res);
    let runs = std::fs::read_to_string(res.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + 4);

    // A copy of unit 0's result (as a re-run or a copied folder leaves): counted once.
    let first = std::fs::read_to_string(res.join("results/0000.csv")).unwrap();
    std::fs::write(res.join("results/0000-copy.csv"), &first).unwrap();
    let out = sparsevar(&["sweep", "collect", "res"], &d);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(res.join("runs.csv")).unwrap(), runs, "duplicates are dropped");
    assert_eq!(comparable_summary(&res), before);

    // The copy says one member learned where the original says it did not (or back): refused.
    let mut lines: Vec<String> = first.lines().map(str::to_string).collect();
    lines[1] = if lines[1].contains(",false,") { lines[1].replacen(",false,", ",true,", 1) } else { lines[1].replacen(",true,", ",false,", 1) };
    std::fs::write(res.join("results/0000-copy.csv"), lines.join("\n") + "\n").unwrap();
    let out = sparsevar(&["sweep", "collect", "res"], &d);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("results/0000.csv") && err.contains("results/0000-copy.csv") && err.contains("disagree"), "{err}");
    assert_eq!(comparable_summary(&res), before, "a refused collect writes no summary");
}

/// One unit that trains for minutes (eight samples are never learned).
const ONE_LONG_UNIT: &str = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: mlp } }\ntrain: { max_steps: 1000000, eval_every: 1000 }\nsweep: { T: [12], m: [8], seeds: [0], max_ensemble: 1 }\n";

#[test]
fn a_worker_says_which_units_it_waits_for() {
    let d = ScratchDir::created("shared-wait");
    std::fs::write(d.join("s.yaml"), ONE_LONG_UNIT).unwrap();
    let quiet =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(&*d).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut first = quiet(&["sweep", "s.yaml", "--out", "live"]);
    while !std::fs::read_to_string(d.join("live/starts.log")).is_ok_and(|t| t.starts_with("0 ")) {
        assert!(first.try_wait().unwrap().is_none(), "the sweep ended too soon");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["sweep", "work", "live", "--claim"])
        .current_dir(&*d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line, read on a thread so that a worker saying nothing fails the test.
    let err = worker.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(err), &mut line).ok();
        tx.send(line).ok();
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(60));
    worker.kill().unwrap();
    worker.wait().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let line = line.expect("the waiting worker said nothing for 60 s");
    let want = format!("waiting for units other processes are running: unit 0 by pid {} on ", first.id());
    assert!(line.starts_with(&want), "{line}");
}

#[test]
fn a_second_sweep_on_a_live_folder_is_refused_naming_the_process() {
    let d = ScratchDir::created("shared-busy");
    std::fs::write(d.join("s.yaml"), SWEEP.replace("max_steps: 600", "max_steps: 20000").replace("T: [6, 8]", "T: [12, 16]")).unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["sweep", "s.yaml", "--out", "live"])
        .current_dir(&*d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = d.join("live/sweep.lock");
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with("pid ")) {
        assert!(first.try_wait().unwrap().is_none(), "the first sweep ended too soon");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = format!("pid {} on ", first.id());
    for args in [&["sweep", "s.yaml", "--out", "live", "--resume"][..], &["sweep", "s.yaml", "--out", "live"], &["sweep", "collect", "live"]] {
        let out = sparsevar(args, &d);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&pid) && err.contains("is in use by") && err.lines().count() == 1, "{args:?}: {err}");
    }
    // Its unit 0 is claimed: a worker asked for that unit leaves it to the live holder.
    while !std::fs::read_to_string(d.join("live/starts.log")).is_ok_and(|t| t.starts_with("0 ")) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = sparsevar(&["sweep", "work", "live", "--unit", "0"], &d);
    assert!(out.status.success() && stderr(&out).contains(&format!("unit 0: being run by {pid}")), "{}", stderr(&out));
    first.kill().unwrap();
    first.wait().unwrap();
    // Killed (SIGKILL): its claim died with it, so the unit can be taken over.
    let claim = std::fs::OpenOptions::new().write(true).open(d.join("live/claims/0000.lock")).unwrap();
    claim.try_lock().expect("a dead process's claim is free");
    drop(claim);
    assert!(!d.join("live/results/0000.csv").exists(), "the killed unit left no result");
    // The lock died with its process: collect now runs, and lists what is missing.
    let out = sparsevar(&["sweep", "collect", "live"], &d);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("have no result yet"), "{}", stderr(&out));
}

#[test]
fn out_through_a_missing_folder_and_bad_executors_are_refused() {
    let d = ScratchDir::created("shared-out");
    std::fs::write(d.join("t.yaml"), TINY).unwrap();
    let out = sparsevar(&["sweep", "t.yaml", "--out", "done"], &d);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs = std::fs::read_to_string(d.join("done/runs.csv")).unwrap();
    let summary = std::fs::read_to_string(d.join("done/summary.json")).unwrap();
    for args in [&["sweep", "t.yaml", "--out", "done/nothere/.."][..], &["sweep", "t.yaml", "--out", "done/nothere/..", "--executor", "local"]] {
        let out = sparsevar(args, &d);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("already holds results"), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string(d.join("done/runs.csv")).unwrap(), runs);
    assert_eq!(std::fs::read_to_string(d.join("done/summary.json")).unwrap(), summary);

    let cases: &[(&[&str], &str)] = &[
        (&["sweep", "t.yaml", "--executor", "cloud"], "--executor `cloud` is unknown; known: inprocess, local"),
        (&["sweep", "t.yaml", "--executor", "local", "--workers", "0"], "--workers 0: a sweep needs at least 1 worker process"),
        (&["sweep", "work", "nowhere", "--claim"], "nowhere holds no sweep plan"),
        (&["sweep", "work", "done", "--unit", "99"], "there is no unit 99; the plan holds units 0..2"),
    ];
    for (args, needle) in cases {
        let out = sparsevar(args, &d);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!d.join("runs").exists(), "a refused sweep makes no default folder");
}

#[test]
fn local_workers_give_the_in_process_summary() {
    let d = ScratchDir::created("shared-local");
    std::fs::write(d.join("t.yaml"), TINY.replace("T: [6]", "T: [6, 8]")).unwrap();
    let local = sparsevar(&["sweep", "t.yaml", "--out", "local", "--executor", "local", "--workers", "2"], &d);
    assert!(local.status.success(), "{}", stderr(&local));
    assert!(stderr(&local).contains("units: 4/4 done, 0 running, 0 failed"), "{}", stderr(&local));
    let one = sparsevar(&["sweep", "t.yaml", "--out", "one"], &d);
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(comparable_summary(&d.join("local")), comparable_summary(&d.join("one")));
    assert_eq!(starts(&d.join("local")).values().map(Vec::len).sum::<usize>(), 4, "each unit once");
}
