//! `sparsevar train --resume`: a run killed (SIGKILL) after a checkpoint and resumed ends bit
//! for bit where an uninterrupted run ends — summary.json (but for times, the command line and
//! the builds on record, which name the build of each part), metrics.csv and the final
//! parameters and optimizer state; every folder that cannot
//! be resumed is refused with one line and exit status 2, and nothing in it is touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sparsevar_experiment::checkpoint::{CHECKPOINT_FILE, CHECKPOINT_TEMP, read_checkpoint, write_checkpoint};
use sparsevar_test_support::ScratchDir;

fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).output().expect("run sparsevar")
}

/// One member learns early (it leaves the ensemble before the kill), the others run to the
/// budget; about 3 s in a debug build.
const RUN: &str = "task: { kind: sparse_parity, T: 12, s: 3 }
model: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { samples: 512, batch: 32, max_steps: 3000, lr: 0.003, eval_every: 50, test_samples: 256, checkpoint_every: 100 }
seeds: [0, 1, 2, 3]
";

/// summary.json without what differs between two processes (times, command line).
fn summary_without_times(dir: &Path) -> serde_json::Value {
    let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let o = s.as_object_mut().unwrap();
    o.remove("seconds");
    let p = o["provenance"].as_object_mut().unwrap();
    p.remove("command");
    p.remove("started_unix");
    s
}

/// Every file in `dir` (not its figures) and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_end() {
    let d = ScratchDir::created("resume-kill");
    std::fs::write(d.join("run.yaml"), RUN).unwrap();

    let whole = sparsevar(&["train", "run.yaml", "--out", "whole"], &d);
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));

    // The same run, killed once a checkpoint after the first member learned exists.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["train", "run.yaml", "--out", "cut"])
        .current_dir(&*d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cut = d.join("cut");
    let start = Instant::now();
    let killed_at = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after step 700 appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        if let Ok(ck) = read_checkpoint(&cut)
            && ck.state.step >= 700
        {
            child.kill().unwrap(); // SIGKILL: no handler runs, nothing is flushed.
            child.wait().unwrap();
            break ck.state.step;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!cut.join("summary.json").exists(), "killed at step {killed_at}, but the run had finished");
    let ck = read_checkpoint(&cut).unwrap();
    assert!(ck.state.step < 3000 && ck.state.active.len() < 4, "the checkpoint should be mid-run, after a member left: step {}", ck.state.step);
    // A kill between writing a checkpoint and renaming it leaves half a file under the
    // temporary name: resuming ignores it.
    // The checkpoint names the build that wrote it; say another build did.
    let mut older = read_checkpoint(&cut).unwrap();
    let this_build = older.state.builds.clone();
    assert_eq!(this_build.len(), 1, "{this_build:?}");
    older.state.builds = vec!["older".into()];
    write_checkpoint(&cut, &older).unwrap();
    let bytes = std::fs::read(cut.join(CHECKPOINT_FILE)).unwrap();
    std::fs::write(cut.join(CHECKPOINT_TEMP), &bytes[..bytes.len() / 3]).unwrap();

    let resumed = sparsevar(&["train", "run.yaml", "--out", "cut", "--resume"], &d);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming 4 members"));
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(said.contains(&format!("note: this run was trained by 2 builds (older, {})", this_build[0])), "{said}");

    // Both builds are on record; apart from them the resumed run ends where the whole one does.
    let whole = d.join("whole");
    let (mut cut_summary, mut whole_summary) = (summary_without_times(&cut), summary_without_times(&whole));
    assert_eq!(cut_summary["builds"], serde_json::json!(["older", this_build[0]]));
    assert_eq!(whole_summary["builds"], serde_json::json!(this_build));
    assert!(!String::from_utf8_lossy(&sparsevar(&["train", "run.yaml", "--out", "again"], &d).stdout).contains("note: this run"));
    cut_summary.as_object_mut().unwrap().remove("builds");
    whole_summary.as_object_mut().unwrap().remove("builds");
    assert_eq!(cut_summary, whole_summary);
    assert_eq!(std::fs::read_to_string(cut.join("metrics.csv")).unwrap(), std::fs::read_to_string(whole.join("metrics.csv")).unwrap());
    // The final checkpoints: every member's parameters (finished members' as they were when
    // they finished) and the optimizer's moments, bit for bit.
    let (a, b) = (read_checkpoint(&cut).unwrap(), read_checkpoint(&whole).unwrap());
    assert_eq!(a.state.step, 3000);
    assert!(a.tensors.iter().any(|t| t.0.starts_with("finished.")) && a.tensors.iter().any(|t| t.0.starts_with("optim.")));
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!((&x.0, &x.1), (&y.0, &y.1));
        assert!(x.2.iter().zip(&y.2).all(|(u, v)| u.to_bits() == v.to_bits()), "tensor {} differs", x.0);
    }
    let (mut sa, mut sb) = (a.state.clone(), b.state.clone());
    assert_eq!(sa.builds, ["older", &this_build[0]]);
    (sa.seconds, sa.builds) = (0.0, Vec::new());
    (sb.seconds, sb.builds) = (0.0, Vec::new());
    assert_eq!(format!("{sa:?}"), format!("{sb:?}"));
    // The saved weights, byte for byte (their headers are written in sorted order).
    let weights = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.join("weights"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let (wa, wb) = (weights(&cut), weights(&whole));
    assert_eq!(wa.len(), 4, "one final weights file per member");
    assert!(wa == wb, "the weights files differ between the resumed and the uninterrupted run");
    assert!(!cut.join(CHECKPOINT_TEMP).exists(), "the next checkpoint replaced the leftover");

    // Now finished: a second resume is refused and changes nothing.
    let before = files(&cut);
    let again = sparsevar(&["train", "run.yaml", "--out", "cut", "--resume"], &d);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("summary.json: this run has finished; there is nothing to resume"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(files(&cut), before);
}

/// Run `args` in `d`, expecting exit status 2, one line containing `needle`, and the folder
/// `out` unchanged.
fn assert_refused(d: &Path, args: &[&str], out: &str, needle: &str) {
    let before = files(&d.join(out));
    let o = sparsevar(args, d);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert_eq!(files(&d.join(out)), before, "{args:?} touched {out}");
}

#[test]
fn folders_that_cannot_be_resumed_are_refused() {
    let d = ScratchDir::created("resume-refused");
    let short = RUN.replace("max_steps: 3000", "max_steps: 300");
    std::fs::write(d.join("run.yaml"), &short).unwrap();
    for (out, extra) in [("a", "train.checkpoint_every=100"), ("b", "train.lr=0.01"), ("none", "train.checkpoint_every=0")] {
        let o = sparsevar(&["train", "run.yaml", "--out", out, extra], &d);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // As if each had been cut short after its last checkpoint.
        std::fs::remove_file(d.join(out).join("summary.json")).unwrap();
    }

    // Never overwritten without --resume; the message points at --resume.
    assert_refused(&d, &["train", "run.yaml", "--out", "a"], "a", "already holds results; choose another --out or remove it first; or pass --resume");
    // No checkpoint (checkpoints off).
    assert_refused(
        &d,
        &["train", "run.yaml", "--out", "none", "train.checkpoint_every=0", "--resume"],
        "none",
        "holds no checkpoint.safetensors to resume from",
    );
    // Another config than the folder's.
    assert_refused(&d, &["train", "run.yaml", "--out", "a", "train.lr=0.01", "--resume"], "a", "was made by a different config");
    // The folder's config, but a checkpoint of another run copied in.
    std::fs::copy(d.join("b").join(CHECKPOINT_FILE), d.join("a").join(CHECKPOINT_FILE)).unwrap();
    assert_refused(&d, &["train", "run.yaml", "--out", "a", "--resume"], "a", "a/checkpoint.safetensors was written for a different config");
    // Truncated, then damaged in one byte.
    let good = std::fs::read(d.join("b").join(CHECKPOINT_FILE)).unwrap();
    std::fs::write(d.join("b").join(CHECKPOINT_FILE), &good[..good.len() - 100]).unwrap();
    assert_refused(&d, &["train", "run.yaml", "--out", "b", "train.lr=0.01", "--resume"], "b", "b/checkpoint.safetensors: not a usable checkpoint (truncated");
    let mut damaged = good.clone();
    let at = damaged.len() - 50;
    damaged[at] ^= 0x10;
    std::fs::write(d.join("b").join(CHECKPOINT_FILE), &damaged).unwrap();
    assert_refused(&d, &["train", "run.yaml", "--out", "b", "train.lr=0.01", "--resume"], "b", "its checksum does not match");
    // The checkpoint restored: it resumes (threads may differ) and finishes.
    std::fs::write(d.join("b").join(CHECKPOINT_FILE), &good).unwrap();
    let o = sparsevar(&["train", "run.yaml", "--out", "b", "train.lr=0.01", "threads=1", "--resume"], &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.join("b/summary.json").exists());
    // A run stopped by Ctrl-C (its summary marked interrupted) resumes from its checkpoint.
    let summary = std::fs::read_to_string(d.join("b/summary.json")).unwrap();
    std::fs::write(d.join("b/summary.json"), summary.replace("\"interrupted\": false", "\"interrupted\": true")).unwrap();
    let o = sparsevar(&["train", "run.yaml", "--out", "b", "train.lr=0.01", "--resume"], &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(d.join("b/summary.json")).unwrap().contains("\"interrupted\": false"));

    // A folder that holds no run, and --resume without --out.
    std::fs::create_dir(d.join("empty")).unwrap();
    assert_refused(&d, &["train", "run.yaml", "--out", "empty", "--resume"], "empty", "holds no training run to resume");
    let o = sparsevar(&["train", "run.yaml", "--resume"], &d);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

/// One sweep unit of four hard members (about 3 s in a debug build).
const SWEEP: &str = "task: { kind: sparse_parity, s: 3 }
models: { attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 } }
train: { batch: 32, max_steps: 3000, lr: 0.003, eval_every: 50, test_samples: 256, checkpoint_every: 100 }
sweep: { T: [12], m: [512], seeds: [0, 1, 2, 3], max_ensemble: 4 }
";

/// A unit's result rows without their wall time.
fn rows_without_seconds(path: &Path) -> Vec<Vec<String>> {
    // No field of these rows holds a comma or a quote.
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<String>> = text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect();
    let col = rows[0].iter().position(|h| h == "seconds").expect("a seconds column");
    rows.into_iter()
        .map(|mut row| {
            row.remove(col);
            row
        })
        .collect()
}

#[test]
fn a_preempted_sweep_unit_continues_from_its_checkpoint() {
    let d = ScratchDir::created("resume-unit");
    std::fs::write(d.join("s.yaml"), SWEEP).unwrap();
    for out in ["whole", "cut"] {
        let o = sparsevar(&["sweep", "s.yaml", "--out", out, "--plan"], &d);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = sparsevar(&["sweep", "work", "whole", "--unit", "0"], &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.join("whole/checkpoints/0000.safetensors").exists(), "a finished unit's checkpoint is removed");

    // The same unit, preempted (SIGKILL) after a checkpoint at step 700 or later.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["sweep", "work", "cut", "--unit", "0"])
        .current_dir(&*d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ck = d.join("cut/checkpoints/0000.safetensors");
    let start = Instant::now();
    let step = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after step 700 appeared");
        assert!(child.try_wait().unwrap().is_none(), "the unit ended before it could be killed");
        if let Ok(c) = sparsevar_experiment::checkpoint::read_checkpoint_file(&ck)
            && c.state.step >= 700
        {
            child.kill().unwrap();
            child.wait().unwrap();
            break c.state.step;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(!d.join("cut/results/0000.csv").exists(), "killed at step {step}, but the unit had finished");
    let step = sparsevar_experiment::checkpoint::read_checkpoint_file(&ck).unwrap().state.step;

    let o = sparsevar(&["sweep", "work", "cut", "--unit", "0"], &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let starts = std::fs::read_to_string(d.join("cut/starts.log")).unwrap();
    let lines: Vec<&str> = starts.lines().collect();
    assert_eq!(lines.len(), 2, "{starts}");
    assert!(lines[1].ends_with(&format!(" from-step {step}")), "the second start should continue from step {step}: {starts}");
    assert_eq!(rows_without_seconds(&d.join("cut/results/0000.csv")), rows_without_seconds(&d.join("whole/results/0000.csv")));
    assert!(!ck.exists());
}

/// Every unit's start line names the build that trained it, and a folder whose units two
/// builds trained says so: in summary.json (`builds`) and in a note above the summary.
#[test]
fn a_sweep_records_the_builds_that_trained_its_units() {
    let d = ScratchDir::created("resume-builds");
    std::fs::write(d.join("s.yaml"), SWEEP).unwrap();
    let args = ["sweep", "s.yaml", "--out", "b", "train.max_steps=100", "train.checkpoint_every=0"];
    let o = sparsevar(&args, &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("note: its units were trained by"));
    let builds = |d: &Path| -> Vec<String> {
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("b/summary.json")).unwrap()).unwrap();
        s["builds"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_string()).collect()
    };
    let one = builds(&d);
    assert_eq!(one.len(), 1, "{one:?}");
    let log = std::fs::read_to_string(d.join("b/starts.log")).unwrap();
    // (A program built outside git knows no revision: its start lines name none.)
    assert_eq!(log.contains(" build="), one[0] != "unrecorded", "{log}");

    // As if an older build had started the unit: the resumed (finished) sweep collects again.
    let first = log.lines().next().unwrap().split(" build=").next().unwrap().to_string();
    std::fs::write(d.join("b/starts.log"), format!("{first} build=older\n")).unwrap();
    let o = sparsevar(&[&args[..], &["--resume"]].concat(), &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(builds(&d), vec!["older".to_string()]);
    // Two builds (a line that is not a start names none).
    let log = std::fs::read_to_string(d.join("b/starts.log")).unwrap();
    let more = "0 requeued: a member had faulted; its result is in faulted/0000.csv\n0 1 elsewhere build=newer from-step 300\n";
    std::fs::write(d.join("b/starts.log"), format!("{log}{more}")).unwrap();
    let o = sparsevar(&[&args[..], &["--resume"]].concat(), &d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(builds(&d), vec!["older".to_string(), "newer".to_string()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("note: its units were trained by 2 builds (older, newer)"), "{out}");
}
