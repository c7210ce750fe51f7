//! Plugin faults end to end: the program loads a freshly built faulty plugin through the
//! real loader (`--plugins DIR`), and `train`, `sweep` and `run` (a Rhai script) either stop
//! with one line naming the plugin file, the member and the call, or mark the members
//! faulted — never a normal result built on substitute values.

#[path = "../../sparsevar-plugin/tests/common/mod.rs"]
mod plugin_builds;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparsevar_test_support::ScratchDir;

/// A scratch folder with `plugins/` holding only the faulty plugin `panicky` (built by the
/// plugin tests' helpers), and the path of that library.
fn with_panicky(name: &str) -> (ScratchDir, PathBuf) {
    let built = plugin_builds::library(plugin_builds::broken_plugins(), "panicky");
    let d = ScratchDir::created(name);
    std::fs::create_dir_all(d.join("plugins")).unwrap();
    let lib = d.join("plugins").join(built.file_name().unwrap());
    std::fs::copy(&built, &lib).unwrap();
    (d, lib.canonicalize().unwrap())
}

fn sparsevar(args: &[&str], dir: &Path) -> Output {
    let plugins = dir.join("plugins");
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).arg("--plugins").arg(&plugins).current_dir(dir).output().expect("run sparsevar")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one `error:` line of stderr, checked to be the only one and backtrace-free.
fn error_line(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(!stderr.contains("panicked at") && !stderr.contains("backtrace"), "{stderr}");
    errors[0].to_string()
}

const MODEL: &str = "{ kind: transformer, d_model: 16, heads: 2, mlp: 2 }";

#[test]
fn train_with_a_faulty_task_stops_with_one_line_naming_plugin_member_and_call() {
    let (d, lib) = with_panicky("faults-train-task");
    // The member with seed 1 fails while its training set is drawn.
    let cfg = format!(
        "task: {{ kind: sample_fails, T: 6, s: 1, params: {{ after: 50, fail_seed: 1 }} }}\nmodel: {MODEL}\ntrain: {{ samples: 64, max_steps: 100, eval_every: 50 }}\nseeds: [0, 1]\n"
    );
    std::fs::write(d.join("c.yaml"), cfg).unwrap();
    let out = sparsevar(&["train", "c.yaml", "--out", "res"], &d);
    assert_eq!(out.status.code(), Some(1), "a plugin fault is a runtime failure");
    let line = error_line(&out);
    assert!(
        line.contains(&format!(
            "member 1 (seed 1) at step 0: plugin {}: Task::sample of task `sample_fails` returned an error: task `sample_fails` failed: the table ran out at sample 50",
            lib.display()
        )),
        "{line}"
    );
    assert!(text(&out.stdout).is_empty(), "no normal summary: {}", text(&out.stdout));
    assert!(!d.join("res/summary.json").exists());

    // A panic in the middle of online training: the run stops at that step.
    let cfg = format!(
        "task: {{ kind: sample_panics, T: 6, s: 1, params: {{ after: 200, fail_seed: 0 }} }}\nmodel: {MODEL}\ntrain: {{ online: true, batch: 16, test_samples: 64, max_steps: 400, eval_every: 5 }}\nseeds: [0, 1]\n"
    );
    std::fs::write(d.join("online.yaml"), cfg).unwrap();
    let out = sparsevar(&["train", "online.yaml", "--out", "online"], &d);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    // 64 test samples, then 16 per step: sample 200 is drawn for step 9 (8 steps done).
    assert!(line.contains("training stopped; the curves so far are in online: member 0 (seed 0) at step 8: plugin "), "{line}");
    assert!(line.contains(&format!("{}: Task::sample of task `sample_panics` panicked: sample_panics: sample number 200 exploded", lib.display())), "{line}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    assert!(!d.join("online/summary.json").exists());
    assert!(d.join("online/metrics.csv").exists(), "the curves so far are kept");
}

#[test]
fn train_with_a_faulty_attention_variant_stops_with_one_line() {
    let (d, lib) = with_panicky("faults-train-attention");
    for (variant, call) in [
        ("weights_panic", "Attention::weights of `weights_panic` panicked: weights_panic: no weights today"),
        ("weights_error", "Attention::weights of `weights_error` returned an error: attention variant `weights_error` failed: heads must be odd"),
    ] {
        let cfg = format!(
            "task: {{ kind: sparse_parity, T: 6, s: 2 }}\nmodel: {{ kind: transformer, d_model: 16, heads: 2, mlp: 2, attention: {variant} }}\ntrain: {{ samples: 64, max_steps: 100 }}\nseeds: [3, 4]\n"
        );
        std::fs::write(d.join("c.yaml"), cfg).unwrap();
        let out = sparsevar(&["train", "c.yaml", "--out", variant], &d);
        assert_eq!(out.status.code(), Some(1));
        let line = error_line(&out);
        assert!(line.contains(&format!("the model of the members with seeds [3, 4]: plugin {}: {call}", lib.display())), "{line}");
        assert!(text(&out.stdout).is_empty());
        assert!(!d.join(variant).join("summary.json").exists());
    }
}

fn sweep_config(task: &str, seeds: &str) -> String {
    format!(
        "task: {task}\nmodels:\n  attn: {MODEL}\ntrain: {{ batch: 16, max_steps: 300, lr: 0.003, eval_every: 50, test_samples: 64 }}\nsweep: {{ T: [6], m: [16, 128], seeds: {seeds} }}\n"
    )
}

fn summary(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    v["summary"].clone()
}

#[test]
fn a_sweep_marks_faulted_members_lists_them_and_leaves_them_out_of_m_star() {
    let (d, lib) = with_panicky("faults-sweep");
    // Seed 1's task fails at its first sample; seeds 0 and 2 are fine.
    let faulty = "{ kind: sample_fails, s: 1, params: { after: 0, fail_seed: 1 } }";
    std::fs::write(d.join("faulty.yaml"), sweep_config(faulty, "[0, 1, 2]")).unwrap();
    let out = sparsevar(&["sweep", "faulty.yaml", "--out", "faulty"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("2 members faulted and are left out of m*"), "{stdout}");

    // runs.csv: a `faulted` column, filled for seed 1 only.
    let runs = std::fs::read_to_string(d.join("faulty/runs.csv")).unwrap();
    let mut lines = runs.lines();
    assert!(lines.next().unwrap().contains(",seconds,faulted,norm_bound"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "{runs}");
    for r in &rows {
        let (seed, faulted) = (r[4], r[13]);
        if seed == "1" {
            assert!(faulted.contains(&lib.display().to_string()) && faulted.contains("Task::sample of task `sample_fails` returned an error"), "{r:?}");
            assert_eq!(r[5], "false", "a faulted member did not learn: {r:?}");
        } else {
            assert!(faulted.is_empty(), "{r:?}");
        }
    }

    // summary.json lists them.
    let s = summary(&d.join("faulty"));
    let listed: Vec<(u64, u64)> = s["faulted"].as_array().unwrap().iter().map(|f| (f["seed"].as_u64().unwrap(), f["m"].as_u64().unwrap())).collect();
    assert_eq!(listed, [(1, 16), (1, 128)]);
    assert!(s["faulted"][0]["fault"].as_str().unwrap().contains("the table ran out at sample 0"));

    // Excluded from m*, and not counted as failures: the cells are those of a sweep with
    // seeds 0 and 2 only (whose tasks never fail).
    let healthy = "{ kind: sample_fails, s: 1, params: { after: 0, fail_seed: 99 } }";
    std::fs::write(d.join("healthy.yaml"), sweep_config(healthy, "[0, 2]")).unwrap();
    let out = sparsevar(&["sweep", "healthy.yaml", "--out", "healthy"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h = summary(&d.join("healthy"));
    assert_eq!(s["models"], h["models"], "the faulted seed changed m* or its cells");
    assert!(s["models"][0]["points"][0]["m_star"].is_u64(), "the seeds that remain learn: {}", s["models"]);
    for cell in s["models"][0]["points"][0]["cells"].as_array().unwrap() {
        assert_eq!(cell["seeds"], 2, "{cell}");
    }
    assert_eq!(h["faulted"], serde_json::json!([]));

    // Resumed with the plugin still faulty: the units with seed 1 train again (and fault
    // again, the same way), the old results are kept in faulted/, the summary is unchanged.
    let out = sparsevar(&["sweep", "faulty.yaml", "--out", "faulty", "--resume"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("units with faulted members train again"), "{}", text(&out.stderr));
    assert!(std::fs::read_dir(d.join("faulty/faulted")).unwrap().count() > 0);
    let again = summary(&d.join("faulty"));
    assert_eq!((&again["models"], &again["faulted"]), (&s["models"], &s["faulted"]));
    // The file keeps who made it before the resume, and the training time over both.
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("faulty/summary.json")).unwrap()).unwrap();
    let earlier = file["earlier"].as_array().unwrap();
    assert_eq!(earlier.len(), 1, "{file}");
    assert!(!earlier[0]["command"].to_string().contains("--resume") && file["provenance"]["command"].to_string().contains("--resume"), "{file}");
    assert!(file["unit_seconds"].as_f64().unwrap() > 0.0, "{file}");
}

#[test]
fn a_sweep_stops_on_a_fault_no_member_owns() {
    let (d, lib) = with_panicky("faults-sweep-attention");
    let cfg = "task: { kind: sparse_parity, s: 2 }\nmodels:\n  a: { kind: transformer, d_model: 16, heads: 2, mlp: 2, attention: weights_error }\ntrain: { batch: 16, max_steps: 100 }\nsweep: { T: [6], m: [16], seeds: [0, 1] }\n";
    std::fs::write(d.join("s.yaml"), cfg).unwrap();
    let out = sparsevar(&["sweep", "s.yaml", "--out", "res"], &d);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains(&format!("T = 6, model a: building the model of the members with seeds [0, 1]: plugin {}", lib.display())), "{line}");
    assert!(line.contains("Attention::weights of `weights_error`"), "{line}");
    assert!(!d.join("res/summary.json").exists());
}

#[test]
fn a_script_stops_at_the_call_with_the_fault_never_a_normal_result() {
    let (d, lib) = with_panicky("faults-script");
    let train = r#"let t = task("sample_fails", #{T: 6, s: 1, params: #{after: 20, fail_seed: 1}});
let m = transformer(#{d_model: 16, heads: 2, mlp: 2});
let r = train(t, m, #{seeds: [0, 1], samples: 64, max_steps: 100});
print("a normal result");
"#;
    std::fs::write(d.join("train.rhai"), train).unwrap();
    let out = sparsevar(&["run", "train.rhai", "--out", "train-out"], &d);
    assert_ne!(out.status.code(), Some(0));
    let line = error_line(&out);
    assert!(line.starts_with("error: train.rhai:3:9: "), "the script position of the call: {line}");
    assert!(line.contains(&format!("member 1 (seed 1) at step 0: plugin {}: Task::sample of task `sample_fails`", lib.display())), "{line}");
    assert!(!text(&out.stdout).contains("a normal result"));

    // A sweep whose attention variant fails stops the script too.
    let sweep = r#"let m = transformer(#{d_model: 16, heads: 2, mlp: 2, attention: "weights_panic"});
let r = sweep(#{task: sparse_parity(6, 2), model: m, T: [6], m: [16], seeds: [0], max_steps: 50});
print("a normal result");
"#;
    std::fs::write(d.join("sweep.rhai"), sweep).unwrap();
    let out = sparsevar(&["run", "sweep.rhai", "--out", "sweep-out"], &d);
    assert_ne!(out.status.code(), Some(0));
    let line = error_line(&out);
    assert!(line.starts_with("error: sweep.rhai:2:") && line.contains("Attention::weights of `weights_panic` panicked"), "{line}");
    assert!(!text(&out.stdout).contains("a normal result"));

    // A sweep whose task faults for one seed: that member is marked, and the script sees it.
    let marked = r#"let t = task("sample_fails", #{T: 6, s: 1, params: #{after: 0, fail_seed: 1}});
let r = sweep(#{task: t, model: transformer(#{d_model: 16, heads: 2, mlp: 2}), T: [6], m: [16], seeds: [0, 1, 2], max_steps: 50});
print(`faulted: ${r.faulted.len()} seed ${r.faulted[0].seed}`);
"#;
    std::fs::write(d.join("marked.rhai"), marked).unwrap();
    let out = sparsevar(&["run", "marked.rhai", "--out", "marked-out"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("faulted: 1 seed 1"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("seed 1 faulted and is left out of m*"), "{}", text(&out.stderr));
}
