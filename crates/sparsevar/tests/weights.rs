//! Saved weights end to end: `train` writes safetensors files as `train.save_weights` asks,
//! `sparsevar eval` reopens them, numpy (from the file alone, no torch) computes the same
//! logits, and every kind of bad weights input is a one-line error with exit status 2.
//!
//! The numpy test needs a Python with `safetensors` and `numpy`: `SPARSEVAR_PYTHON` names it
//! (`.ci/run` makes one in target/pyenv). Without it the test skips with the reason printed,
//! except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparsevar_test_support::ScratchDir;

fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).output().expect("run sparsevar")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line of a bad-input refusal (exit status 2), checked to be one line.
fn refused(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {err}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A short run of `model` (YAML flow mapping) on a T = 8 parity, written to `dir/out`.
fn train(dir: &Path, name: &str, model: &str, extra: &[&str]) -> PathBuf {
    let cfg = format!(
        "task: {{ kind: sparse_parity, T: 8, s: 2 }}\nmodel: {model}\ntrain: {{ samples: 128, batch: 16, max_steps: 30, lr: 0.003, eval_every: 10, test_samples: 64 }}\nseeds: [3, 5]\n"
    );
    std::fs::write(dir.join(format!("{name}.yaml")), cfg).unwrap();
    let mut args = vec!["train", &format!("{name}.yaml") as &str, "--out", name].into_iter().map(String::from).collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&sparsevar(&args, dir));
    dir.join(name)
}

/// `SPARSEVAR_PYTHON` if it imports safetensors and numpy; otherwise the reason.
fn python() -> Result<PathBuf, String> {
    let py = std::env::var_os("SPARSEVAR_PYTHON").ok_or("SPARSEVAR_PYTHON is not set (.ci/run makes target/pyenv with safetensors and numpy)")?;
    let out = Command::new(&py).args(["-c", "import safetensors, numpy"]).output().map_err(|e| format!("cannot run {}: {e}", py.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("{} cannot import safetensors and numpy: {}", py.to_string_lossy(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(PathBuf::from(py))
}

fn read_csv(path: &Path, skip_header: bool, skip_cols: usize) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().skip(skip_header as usize).map(|l| l.split(',').skip(skip_cols).map(|v| v.parse().unwrap()).collect()).collect()
}

/// numpy's logits of 256 inputs from the file alone equal `sparsevar eval`'s to 1e-5.
fn numpy_matches(model: &str, name: &str) {
    let py = match python() {
        Ok(p) => p,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI=true requires the Python environment: {why}"),
        Err(why) => {
            eprintln!("skipped {name}: {why}");
            return;
        }
    };
    let d = ScratchDir::created(&format!("weights-numpy-{name}"));
    let run = train(&d, name, model, &[]);
    ok(&sparsevar(&["eval", name, "--member", "5", "--samples", "256"], &d));
    let eval = run.join("eval/seed-5");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/numpy_forward.py");
    let np_out = d.join("numpy_logits.csv");
    let out = Command::new(&py).arg(&script).arg(run.join("weights/seed-5.safetensors")).arg(eval.join("inputs.txt")).arg(&np_out).output().unwrap();
    assert!(out.status.success(), "numpy: {}", String::from_utf8_lossy(&out.stderr));
    let ours = read_csv(&eval.join("logits.csv"), true, 3);
    let theirs = read_csv(&np_out, false, 0);
    assert_eq!(ours.len(), 256);
    assert_eq!(theirs.len(), 256);
    let mut worst = 0f64;
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("{name}: largest |sparsevar - numpy| logit difference {worst:.2e} over 256 inputs");
    assert!(worst <= 1e-5, "{name}: logits differ by {worst}");
    // Not a vacuous match: the logits vary across inputs.
    let spread = ours.iter().map(|r| r[0]).fold(f64::NEG_INFINITY, f64::max) - ours.iter().map(|r| r[0]).fold(f64::INFINITY, f64::min);
    assert!(spread > 1e-3, "{name}: logits barely vary ({spread})");
}

#[test]
fn numpy_forward_matches_default_transformer() {
    // The default transformer: softmax attention, learned positions, pre-norm, CLS readout.
    numpy_matches("{ kind: transformer }", "default");
}

#[test]
fn numpy_forward_matches_post_norm_sinusoidal_two_layers() {
    numpy_matches("{ kind: transformer, layers: 2, d_model: 16, heads: 2, mlp: 2, norm: post, positions: sinusoidal, readout: mean }", "post");
}

#[test]
fn numpy_forward_matches_mlp() {
    numpy_matches("{ kind: mlp, depth: 2, width: 32 }", "mlp");
}

#[test]
fn file_holds_named_tensors_in_pytorch_order_and_config_metadata() {
    let d = ScratchDir::created("weights-names");
    let run = train(&d, "run", "{ kind: transformer, d_model: 16, heads: 2, mlp: 3 }", &[]);
    let bytes = std::fs::read(run.join("weights/seed-3.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let shape =
        |k: &str| header[k]["shape"].as_array().unwrap_or_else(|| panic!("no tensor {k}: {header}")).iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>();
    // T = 8 bits + CLS = 9 positions; alphabet 2; d = 16; MLP 3·16 = 48; 2 classes.
    assert_eq!(shape("embed.token"), [2, 16]);
    assert_eq!(shape("cls"), [16]);
    assert_eq!(shape("embed.position"), [9, 16]);
    assert_eq!(shape("layers.0.attn.q.weight"), [16, 16]);
    assert_eq!(shape("layers.0.mlp.fc1.weight"), [48, 16], "nn.Linear order: [out, in]");
    assert_eq!(shape("layers.0.mlp.fc2.weight"), [16, 48]);
    assert_eq!(shape("readout.weight"), [2, 16]);
    assert_eq!(shape("final_norm.weight"), [16]);
    assert_eq!(header["layers.0.ln1.weight"]["dtype"], "F32");
    let tensors = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").count();
    // embed ×2, cls, ln1 ×2, q/k/v/o ×2 each, ln2 ×2, fc1/fc2 ×2 each, final norm ×2, readout ×2.
    assert_eq!(tensors, 3 + 2 + 8 + 2 + 4 + 2 + 2);
    let meta = &header["__metadata__"];
    let model: serde_json::Value = serde_json::from_str(meta["model"].as_str().unwrap()).unwrap();
    assert_eq!(model["d_model"], 16);
    assert_eq!(model["mlp"], 3);
    assert_eq!(meta["attention"], "softmax");
    assert_eq!(meta["seed"], "3");
    assert_eq!(meta["sparsevar_version"], env!("CARGO_PKG_VERSION"));
    let task: serde_json::Value = serde_json::from_str(meta["task"].as_str().unwrap()).unwrap();
    assert_eq!(task["T"], 8);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let steps = summary["members"][0]["steps_trained"].as_u64().unwrap();
    assert_eq!(meta["step"], steps.to_string());
}

#[test]
fn save_weights_picks_the_files() {
    let d = ScratchDir::created("weights-which");
    // lr high enough that both members learn T = 8 within the budget.
    let model = "{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }";
    let files = |run: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(run.join("weights")).map(|r| r.map(|e| e.unwrap().file_name().into_string().unwrap()).collect()).unwrap_or_default();
        v.sort();
        v
    };
    let none = train(&d, "none", model, &["train.save_weights=none"]);
    assert!(!none.join("weights").exists());
    let both = train(&d, "both", model, &["train.save_weights=both", "train.max_steps=600", "train.lr=0.01"]);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(both.join("summary.json")).unwrap()).unwrap();
    let learned: Vec<u64> = summary["members"].as_array().unwrap().iter().filter(|m| m["learned"] == true).map(|m| m["seed"].as_u64().unwrap()).collect();
    assert!(!learned.is_empty(), "{summary}");
    let mut want = vec!["seed-3.safetensors".to_string(), "seed-5.safetensors".to_string()];
    want.extend(learned.iter().map(|s| format!("seed-{s}.learned.safetensors")));
    want.sort();
    assert_eq!(files(&both), want);
    // The learned file records the learning step.
    let s = learned[0];
    let bytes = std::fs::read(both.join(format!("weights/seed-{s}.learned.safetensors"))).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let member = summary["members"].as_array().unwrap().iter().find(|m| m["seed"] == s).unwrap();
    assert_eq!(header["__metadata__"]["step"], member["step"].as_u64().unwrap().to_string());
    assert_eq!(header["__metadata__"]["snapshot"], "learned");
    let bad = refused(&sparsevar(&["train", "none.yaml", "--out", "x", "train.save_weights=sometimes"], &d));
    assert!(bad.contains("train.save_weights") && bad.contains("final"), "{bad}");
}

#[test]
fn eval_reports_accuracy_on_given_inputs_and_draws_attention() {
    let d = ScratchDir::created("weights-eval-inputs");
    let run = train(&d, "run", "{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }", &["train.max_steps=600", "train.lr=0.01"]);
    std::fs::write(d.join("in.txt"), "# two inputs\n0 1 1 0 0 0 0 1\n10101010\n\n").unwrap();
    let out = ok(&sparsevar(&["eval", "run", "--member", "3", "--inputs", "in.txt", "--attention", "1"], &d));
    assert!(out.contains("seed 3: accuracy") && out.contains("(step "), "{out}");
    let e = run.join("eval/seed-3");
    assert_eq!(std::fs::read_to_string(e.join("inputs.txt")).unwrap(), "0 1 1 0 0 0 0 1\n1 0 1 0 1 0 1 0\n");
    let logits = read_csv(&e.join("logits.csv"), true, 0);
    assert_eq!(logits.len(), 2);
    assert!(e.join("attention_input0.png").is_file() && e.join("attention_input0.svg").is_file());
    assert!(!e.join("attention_input1.png").exists(), "--attention 1 draws one input");
    // Softmax weights: each head's CLS row sums to 1 over the 9 keys.
    let maps: Vec<Vec<Vec<Vec<f64>>>> = serde_json::from_str(&std::fs::read_to_string(e.join("attention.json")).unwrap()).unwrap();
    assert_eq!((maps.len(), maps[0].len(), maps[0][0].len(), maps[0][0][0].len()), (1, 1, 2, 9));
    for h in &maps[0][0] {
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
    // A second evaluation goes to a fresh folder; the first one's files are kept.
    let first = std::fs::read_to_string(e.join("logits.csv")).unwrap();
    let again = ok(&sparsevar(&["eval", "run", "--member", "3", "--samples", "8", "--attention", "0"], &d));
    assert!(again.contains("eval-2/seed-3"), "{again}");
    assert_eq!(std::fs::read_to_string(e.join("logits.csv")).unwrap(), first);
    // A given --out that already holds the member's files is refused, untouched.
    let err = refused(&sparsevar(&["eval", "run", "--member", "3", "--out", "run/eval"], &d));
    assert!(err.contains("seed-3 exists") && err.contains("--out"), "{err}");
    assert_eq!(std::fs::read_to_string(e.join("logits.csv")).unwrap(), first);
    // A bad inputs file names its line.
    std::fs::write(d.join("bad.txt"), "0 1 1 0 0 0 0 1\n0 1 2\n").unwrap();
    let err = refused(&sparsevar(&["eval", "run", "--inputs", "bad.txt"], &d));
    assert!(err.contains("bad.txt") && err.contains("line 2"), "{err}");
}

#[test]
fn eval_of_trained_members_is_accurate_on_fresh_samples() {
    let d = ScratchDir::created("weights-eval-fresh");
    train(&d, "run", "{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }", &["train.max_steps=600", "train.lr=0.01"]);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("run/summary.json")).unwrap()).unwrap();
    let out = ok(&sparsevar(&["eval", "run", "--samples", "500"], &d));
    for m in summary["members"].as_array().unwrap() {
        let seed = m["seed"].as_u64().unwrap();
        let line = out.lines().find(|l| l.starts_with(&format!("seed {seed}:"))).unwrap_or_else(|| panic!("{out}"));
        let acc: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
        let trained = m["test_accuracy"].as_f64().unwrap();
        // Fresh samples of the same task: the reopened model is as good as it was in training.
        assert!((acc - trained).abs() < 0.1, "{line} vs test accuracy {trained}");
        if m["learned"] == true {
            assert!(acc >= 0.95, "{line}");
        }
    }
}

#[test]
fn bad_weights_are_one_line_errors() {
    let d = ScratchDir::created("weights-bad");
    let run = train(&d, "run", "{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }", &[]);
    let other = train(&d, "other", "{ kind: transformer, d_model: 32, heads: 2, mlp: 2 }", &[]);

    let err = refused(&sparsevar(&["eval", "run", "--member", "9"], &d));
    assert!(err.contains("no member with seed 9") && err.contains("3, 5"), "{err}");

    // Another model's weights in this run's folder.
    std::fs::copy(other.join("weights/seed-3.safetensors"), run.join("weights/seed-3.safetensors")).unwrap();
    let err = refused(&sparsevar(&["eval", "run", "--member", "3"], &d));
    assert!(err.contains("seed-3.safetensors") && err.contains("another model") && err.contains("[2, 32]"), "{err}");

    // A truncated file.
    let bytes = std::fs::read(run.join("weights/seed-5.safetensors")).unwrap();
    std::fs::write(run.join("weights/seed-5.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = refused(&sparsevar(&["eval", "run", "--member", "5"], &d));
    assert!(err.contains("seed-5.safetensors") && err.contains("safetensors"), "{err}");

    // No weights folder.
    std::fs::remove_dir_all(run.join("weights")).unwrap();
    let err = refused(&sparsevar(&["eval", "run"], &d));
    assert!(err.contains("no weights/ folder") && err.contains("save_weights"), "{err}");

    // Not a run folder.
    let err = refused(&sparsevar(&["eval", "nowhere"], &d));
    assert!(err.contains("config.yaml"), "{err}");
}

#[test]
fn sweep_writes_weights_only_when_asked() {
    let d = ScratchDir::created("weights-sweep");
    let cfg = "task: { kind: sparse_parity, s: 2 }
models:
  small: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 16, max_steps: 20, eval_every: 10, test_samples: 32 }
sweep: { T: [6], m: [16, 32], seeds: [0, 1] }
";
    std::fs::write(d.join("s.yaml"), cfg).unwrap();
    ok(&sparsevar(&["sweep", "s.yaml", "--out", "off"], &d));
    assert!(!d.join("off/weights").exists(), "no weights unless sweep.weights asks");
    ok(&sparsevar(&["sweep", "s.yaml", "--out", "on", "sweep.weights=final"], &d));
    let mut files: Vec<String> = std::fs::read_dir(d.join("on/weights/small")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["T6-m16-seed-0.safetensors", "T6-m16-seed-1.safetensors", "T6-m32-seed-0.safetensors", "T6-m32-seed-1.safetensors"]);
    let bytes = std::fs::read(d.join("on/weights/small/T6-m32-seed-1.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["embed.position"]["shape"], serde_json::json!([7, 16]), "T = 6 from the sweep, plus CLS");
    assert_eq!(header["__metadata__"]["seed"], "1");
}

#[test]
fn eval_opens_a_sweep_members_weights_file() {
    let d = ScratchDir::created("weights-eval-sweep");
    let cfg = "task: { kind: sparse_parity, s: 2 }
models:
  small: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { batch: 32, max_steps: 1500, eval_every: 50, test_samples: 256, lr: 0.01 }
sweep: { T: [6], m: [256], seeds: [4], weights: final, baselines: [] }
";
    std::fs::write(d.join("s.yaml"), cfg).unwrap();
    ok(&sparsevar(&["sweep", "s.yaml", "--out", "sw"], &d));
    let file = "sw/weights/small/T6-m256-seed-4.safetensors";
    // Model, task (T = 6) and seed come from the file: the reopened member is as accurate on
    // fresh samples of its task as the sweep measured on its test set.
    let out = ok(&sparsevar(&["eval", file, "--samples", "500", "--attention", "1"], &d));
    let line = out.lines().find(|l| l.starts_with("seed 4:")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("T6-m256-seed-4.safetensors") && line.contains("T6-m256-seed-4.eval/seed-4"), "{line}");
    let acc: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let e = d.join("sw/weights/small/T6-m256-seed-4.eval/seed-4");
    assert!(e.join("logits.csv").is_file() && e.join("attention_input0.png").is_file());
    let runs = std::fs::read_to_string(d.join("sw/runs.csv")).unwrap();
    let column = |row: &str, name: &str| {
        let i = runs.lines().next().unwrap().split(',').position(|c| c == name).unwrap_or_else(|| panic!("no {name} in {runs}"));
        row.split(',').nth(i).unwrap().to_string()
    };
    let row = runs.lines().nth(1).unwrap();
    assert_eq!(column(row, "learned"), "true", "this member learns: {runs}");
    assert!(acc >= 0.95, "{line}\n{runs}");
    // Another seed, or a file that is not weights, is refused.
    let err = refused(&sparsevar(&["eval", file, "--member", "5"], &d));
    assert!(err.contains("--member 5") && err.contains("seed 4"), "{err}");
    let err = refused(&sparsevar(&["eval", "s.yaml"], &d));
    assert!(err.contains("s.yaml") && err.contains(".safetensors"), "{err}");
}
