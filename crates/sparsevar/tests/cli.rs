//! The program end to end: a real (small) training run writes its results folder, bad input
//! gets a one-line error naming the key or file with exit status 2, and finished results
//! are never overwritten.

use std::path::Path;
use std::process::{Command, Output};

use sparsevar_test_support::ScratchDir;

fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).output().expect("run sparsevar")
}

const SMALL: &str = "task: { kind: sparse_parity, T: 8, s: 2 }
model: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { samples: 256, batch: 32, max_steps: 3000, lr: 0.003, eval_every: 50, test_samples: 256 }
seeds: [0, 1]
";

#[test]
fn train_writes_config_metrics_and_summary() {
    let d = ScratchDir::created("cli-train");
    std::fs::write(d.join("small.yaml"), SMALL).unwrap();
    let out = sparsevar(&["train", "small.yaml", "--out", "res"], &d);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("res/summary.json")).unwrap()).unwrap();
    let members = summary["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(m["learned"], true, "{m}");
        assert!(m["test_accuracy"].as_f64().unwrap() >= 0.99);
        assert_eq!(m["attention_mass_on_S"].as_array().unwrap().len(), 2, "one mass per head");
        assert!(m["step"].as_u64().unwrap() % 50 == 0);
    }
    assert_eq!(summary["provenance"]["backend"], "cpu");
    assert_eq!(summary["provenance"]["seeds"], serde_json::json!([0, 1]));
    // The resolved config has every default written out and parses back.
    let resolved = std::fs::read_to_string(d.join("res/config.yaml")).unwrap();
    assert!(resolved.contains("target_accuracy: 0.99") && resolved.contains("attention: softmax"), "{resolved}");
    let metrics = std::fs::read_to_string(d.join("res/metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().collect();
    assert_eq!(
        rows[0],
        "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s,qk_spectral,qk_frobenius,v_norm,o_norm,tok_norm,pos_norm,norm_bound"
    );
    assert!(rows.len() > 2);

    // Running again into the same folder must not overwrite it.
    let again = sparsevar(&["train", "small.yaml", "--out", "res"], &d);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds results"));
    assert_eq!(std::fs::read_to_string(d.join("res/metrics.csv")).unwrap(), metrics, "results were touched");

    // Without --out, a fresh numbered folder under runs/.
    let auto1 = sparsevar(&["train", "small.yaml", "train.max_steps=50"], &d);
    let auto2 = sparsevar(&["train", "small.yaml", "train.max_steps=50"], &d);
    assert!(auto1.status.success() && auto2.status.success());
    assert!(d.join("runs/small/summary.json").exists() && d.join("runs/small-2/summary.json").exists());
}

/// Every bad input: exit status 2 and one line naming the key (or file) and the fix.
#[test]
fn bad_input_names_the_key_and_exits_2() {
    let d = ScratchDir::created("cli-bad");
    let cases: &[(&str, &str, &[&str])] = &[
        ("unknown key", "task: { kind: sparse_parity, T: 8, s: 2 }\ntrain: { lrr: 0.1 }\n", &["unknown field `lrr`", "expected one of", "`lr`"]),
        (
            "unknown model key",
            "task: { kind: sparse_parity, T: 8, s: 2 }\nmodel: { kind: transformer, layerz: 2 }\n",
            &["model: unknown field `layerz`", "`layers`"],
        ),
        ("wrong type", "task: { kind: sparse_parity, T: 8, s: 2 }\ntrain: { batch: many }\n", &["train.batch", "invalid type"]),
        ("s > T", "task: { kind: sparse_parity, T: 4, s: 5 }\n", &["task.s = 5 exceeds task.T = 4"]),
        ("T = 0", "task: { kind: sparse_parity, T: 0, s: 1 }\n", &["task.T"]),
        (
            "unknown attention",
            "task: { kind: sparse_parity, T: 8, s: 2 }\nmodel: { kind: transformer, attention: hard }\n",
            &["model.attention `hard`", "softmax"],
        ),
        ("unknown task", "task: { kind: parity, T: 8, s: 2 }\n", &["unknown task kind `parity`", "sparse_parity"]),
        ("bad yaml", "task: [unclosed\n", &["bad_yaml.yaml"]),
    ];
    for (name, text, needles) in cases {
        let file = format!("{}.yaml", name.replace([' ', '>', '='], "_"));
        let file = file.replace("__", "_");
        std::fs::write(d.join(&file), text).unwrap();
        let out = sparsevar(&["train", &file, "--out", "never"], &d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line, got {err}");
        for n in *needles {
            assert!(err.contains(n), "{name}: `{n}` not in: {err}");
        }
        assert!(!d.join("never").exists(), "{name}: a results folder was created");
    }
    let out = sparsevar(&["train", "missing.yaml"], &d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.yaml"));
    std::fs::write(d.join("ok.yaml"), "task: { kind: sparse_parity, T: 8, s: 2 }\n").unwrap();
    let out = sparsevar(&["train", "ok.yaml", "trainlr"], &d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected key=value"));
    let out = sparsevar(&["train", "ok.yaml", "train.lr=-1"], &d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.lr = -1"));
    // A script run can only be continued from a folder it names.
    std::fs::write(d.join("s.rhai"), "print(1);\n").unwrap();
    let out = sparsevar(&["run", "s.rhai", "--resume"], &d);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume needs --out DIR"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bench_prints_one_json_line_with_the_figures() {
    let d = ScratchDir::created("cli-bench");
    let out = sparsevar(&["bench", "--T", "16", "--runs", "2", "--steps", "5", "--repeats", "3", "--json"], &d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for key in ["model_steps_per_s", "ms_per_step", "gflops_per_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} in {v}");
    }
    let ms = v["ms_per_step"].as_f64().unwrap();
    assert!((v["model_steps_per_s"].as_f64().unwrap() - 2.0 * 1000.0 / ms).abs() < 1e-6);
    // Queueing a repeat's steps never takes longer than running them (each repeat's pair).
    let host = v["host_ms_per_step"].as_f64().unwrap();
    assert!(host > 0.0 && host <= ms, "host {host} ms against {ms} ms per step");
    let mlp = sparsevar(&["bench", "--model", "mlp", "--steps", "3", "--repeats", "1", "--json"], &d);
    assert!(mlp.status.success());
    let bad = sparsevar(&["bench", "--model", "gpt"], &d);
    assert_eq!(bad.status.code(), Some(2));
}

/// Four T values, four ensembles; members that never learn keep each one busy for a while.
const KILL_SWEEP: &str = "task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 32, max_steps: 4000, lr: 0.003, eval_every: 50, test_samples: 256 }
sweep:
  T: [6, 10, 14, 18]
  m: [8, 64, 256]
  seeds: [0, 1, 2]
";

/// summary.json without its wall time and provenance (which differ between any two runs).
fn comparable_summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let summary = v.get_mut("summary").expect("summary.json has a summary");
    summary.as_object_mut().unwrap().remove("seconds");
    summary.take()
}

fn data_rows(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs.csv")).map_or(0, |t| t.lines().skip(1).filter(|l| !l.is_empty()).count())
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_to_the_same_summary() {
    let d = ScratchDir::created("cli-sweep-kill");
    std::fs::write(d.join("sweep.yaml"), KILL_SWEEP).unwrap();
    // Killed for real (Child::kill is SIGKILL on Unix) once the first ensemble is on disk.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["sweep", "sweep.yaml", "--out", "killed"])
        .current_dir(&*d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killed = d.join("killed");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the sweep ended ({status}) before it could be killed: make KILL_SWEEP longer");
        }
        if data_rows(&killed) >= 9 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = data_rows(&killed);
    assert!((9..36).contains(&kept), "{kept} rows survived the kill");
    assert!(!killed.join("summary.json").exists(), "a killed sweep has no summary yet");

    let out = sparsevar(&["sweep", "sweep.yaml", "--out", "killed", "--resume"], &d);
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(data_rows(&killed), 36, "every (T, m, seed) once");
    let out = sparsevar(&["sweep", "sweep.yaml", "--out", "whole"], &d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(comparable_summary(&killed), comparable_summary(&d.join("whole")), "resumed and uninterrupted sweeps disagree");
}

/// The exit status comes from the kind of error: 2 for the user's input, 1 for a failure
/// while running; each with a one-line message.
#[test]
fn exit_status_follows_the_kind_of_error() {
    let d = ScratchDir::created("cli-exit");
    std::fs::write(d.join("ok.yaml"), "task: { kind: sparse_parity, T: 6, s: 2 }\nmodel: { kind: mlp }\ntrain: { max_steps: 20, eval_every: 10 }\n").unwrap();
    std::fs::write(
        d.join("sweep.yaml"),
        "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: mlp } }\ntrain: { max_steps: 20, eval_every: 10 }\nsweep: { T: [6], m: [16], seeds: [0] }\n",
    )
    .unwrap();
    std::fs::write(d.join("a_file"), "not a folder").unwrap();
    let run = |args: &[&str]| {
        let out = sparsevar(args, &d);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        (out.status.code(), err)
    };
    let sweep = run(&["sweep", "sweep.yaml", "--out", "sw"]);
    assert_eq!(sweep.0, Some(0), "{}", sweep.1);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["train", "ok.yaml", "--backend", "abacus"], 2, "backend `abacus` is unknown"),
        (&["train", "ok.yaml", "train.lr=fast"], 2, "invalid type"),
        (&["sweep", "sweep.yaml", "--out", "sw"], 2, "already holds results; pass --resume"),
        (&["sweep", "sweep.yaml", "--out", "sw", "--resume", "train.lr=0.5"], 2, "different config"),
        (&["sweep", "sweep.yaml", "--resume"], 2, "--resume needs --out"),
        (&["plot", "a_file"], 2, "not a results folder"),
        (&["train", "ok.yaml", "--out", "a_file"], 2, "a_file is a file, not a folder"),
        // The results folder cannot be created: not the input's fault, a failure (1).
        (&["train", "ok.yaml", "--out", "a_file/run"], 1, "a_file/run"),
        (&["sweep", "sweep.yaml", "--out", "a_file/run"], 1, "a_file/run"),
    ];
    for (args, code, needle) in cases {
        let (status, err) = run(args);
        assert_eq!(status, Some(*code), "{args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line, got {err}");
        assert!(errors[0].contains(needle) && !err.contains("panicked"), "{args:?}: `{needle}` not in {err}");
        let causes: Vec<&str> = errors[0].split(": ").collect();
        assert!(causes.windows(2).all(|w| w[0] != w[1]), "{args:?}: a cause repeated: {err}");
    }
}

/// `sparsevar train` of a small transformer on a sparse parity (`task`, `budget`, `seeds`)
/// into `d/res`, running in the background.
fn train_in_background(d: &Path, task: &str, budget: &str, seeds: &str) -> std::process::Child {
    let config = format!(
        "task: {{ kind: sparse_parity, {task} }}\nmodel: {{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }}\n\
         train: {{ samples: 256, batch: 32, {budget}, eval_every: 20, test_samples: 128 }}\nseeds: {seeds}\n"
    );
    std::fs::write(d.join("bg.yaml"), config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sparsevar"))
        .args(["train", "bg.yaml", "--out", "res"])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Ctrl-C during `train`: the current step finishes, the summary is written with
/// `"interrupted": true` and each member's state, nothing written before is lost, the
/// folder can be plotted, and the status is 130.
#[test]
fn ctrl_c_during_train_writes_an_interrupted_summary() {
    let d = ScratchDir::created("cli-sigint");
    let child = train_in_background(&d, "T: 40, s: 5", "max_steps: 1000000", "[0, 1]");
    let metrics = d.join("res/metrics.csv");
    let rows = |t: &str| t.lines().skip(1).count();
    let started = std::time::Instant::now();
    let before = loop {
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        if rows(&text) >= 4 {
            break text;
        }
        assert!(started.elapsed().as_secs() < 120, "no metrics rows after two minutes");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {err}");
    assert!(err.trim().lines().last().unwrap().contains("interrupted at step") && err.contains("res"), "{err}");
    let summary = sparsevar_experiment::results::load_train_summary(&d.join("res")).expect("summary.json parses");
    assert!(summary.interrupted);
    assert_eq!(summary.members.len(), 2);
    assert!(summary.steps < 1_000_000 && summary.steps > 0);
    for m in &summary.members {
        assert_eq!(m.steps_trained, summary.steps, "each member's state at the stop step");
        assert!(!m.learned && m.test_accuracy > 0.0);
    }
    // Nothing lost: every row written before the signal is still there, and the stop step
    // was evaluated.
    let after = std::fs::read_to_string(&metrics).unwrap();
    assert!(after.starts_with(&before), "metrics.csv lost rows");
    let curves = sparsevar_experiment::results::load_metrics(&d.join("res")).expect("metrics.csv parses");
    assert!(curves.iter().filter(|c| c.step == summary.steps).count() == 2, "both members evaluated at step {}", summary.steps);
    // The folder is a whole results folder: its figures redraw.
    let plot = sparsevar(&["plot", "res"], &d);
    assert!(plot.status.success(), "{}", String::from_utf8_lossy(&plot.stderr));
}

/// A figure that cannot be written is reported on one line naming the file and fails the
/// command (status 1), after every result is on disk.
#[test]
fn a_figure_that_cannot_be_written_fails_after_the_results() {
    let d = ScratchDir::created("cli-figures");
    // Long enough to put a file where the figures folder goes while it trains.
    let child = train_in_background(&d, "T: 24, s: 4", "max_steps: 600", "[0]");
    let started = std::time::Instant::now();
    while !d.join("res/metrics.csv").exists() {
        assert!(started.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::write(d.join("res/figures"), "in the way").expect("training finished before the figures folder could be blocked");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().filter(|l| l.contains("figure res/figures/curves.png not written")).count(), 1, "{err}");
    let summary = sparsevar_experiment::results::load_train_summary(&d.join("res")).expect("the results are written");
    assert!(!summary.interrupted && (summary.steps == 600 || summary.learned == 1), "{summary:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("results in"));
    // `plot` reports the same way.
    let plot = sparsevar(&["plot", "res"], &d);
    let err = String::from_utf8_lossy(&plot.stderr);
    assert_eq!(plot.status.code(), Some(1), "{err}");
    assert!(err.contains("curves.png not written") && err.trim().lines().last().unwrap().contains("could not be written"), "{err}");
}
