//! `sparsevar compare` on real runs of a 1/2/4-head study, its refusals (one line, exit
//! status 2), and the plain progress lines `train`, `sweep` and `run` print when their output
//! is not a terminal (off with --quiet).

use std::path::Path;
use std::process::{Command, Output};

use sparsevar_test_support::ScratchDir;

/// The program in `dir`, stdout and stderr piped (not a terminal), progress lines due at
/// every evaluation.
fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).env("SPARSEVAR_PROGRESS_SECS", "0").output().expect("run sparsevar")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SMALL: &str = "task: { kind: sparse_parity, T: 8, s: 2 }
model: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { samples: 256, batch: 32, max_steps: 400, lr: 0.003, eval_every: 50, test_samples: 256 }
seeds: [0, 1]
";

/// A parsed progress line: (context, step, max_steps, finished, members, best accuracy, elapsed).
type Line = (String, usize, usize, usize, usize, f64, f64);

/// Parse `progress: [context, ]step S/M, F/N members done, best test accuracy A, E s elapsed`.
fn parse(line: &str) -> Option<Line> {
    let rest = line.strip_prefix("progress: ")?;
    let at = rest.find("step ")?;
    let context = rest[..at].trim_end_matches(", ").to_string();
    let parts: Vec<&str> = rest[at..].split(", ").collect();
    let [step, members, best, elapsed] = parts.as_slice() else { return None };
    let (s, m) = step.strip_prefix("step ")?.split_once('/')?;
    let (f, n) = members.strip_suffix(" members done")?.split_once('/')?;
    let a = best.strip_prefix("best test accuracy ")?.parse().ok()?;
    let e = elapsed.strip_suffix(" s elapsed")?.parse().ok()?;
    Some((context, s.parse().ok()?, m.parse().ok()?, f.parse().ok()?, n.parse().ok()?, a, e))
}

fn progress_lines(stderr: &str) -> Vec<Line> {
    stderr.lines().filter(|l| l.starts_with("progress:")).map(|l| parse(l).unwrap_or_else(|| panic!("unparsable progress line: {l}"))).collect()
}

#[test]
fn piped_train_sweep_and_run_print_progress_lines_and_quiet_prints_none() {
    let d = ScratchDir::created("cli-progress");
    std::fs::write(d.join("small.yaml"), SMALL).unwrap();
    let out = sparsevar(&["train", "small.yaml", "--out", "a"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = progress_lines(&text(&out.stderr));
    // Every evaluation (every 50 steps) gives a line until the members finish.
    assert!(lines.len() >= 2, "{}", text(&out.stderr));
    for (ctx, step, max, finished, members, best, _) in &lines {
        assert!(ctx.is_empty() && *max == 400 && *members <= 2 && finished <= members && (0.0..=1.0).contains(best) && step % 50 == 0, "{lines:?}");
    }
    assert!(lines.windows(2).all(|w| w[0].1 < w[1].1 && w[0].6 <= w[1].6 && w[0].5 <= w[1].5), "steps, time and best accuracy only grow: {lines:?}");
    assert!(!text(&out.stdout).contains("progress:"), "progress goes to stderr; stdout keeps the results");

    let quiet = sparsevar(&["train", "small.yaml", "--out", "b", "--quiet"], &d);
    assert!(quiet.status.success());
    assert!(!text(&quiet.stderr).contains("progress"), "{}", text(&quiet.stderr));
    assert_eq!(
        std::fs::read_to_string(d.join("a/metrics.csv")).unwrap(),
        std::fs::read_to_string(d.join("b/metrics.csv")).unwrap(),
        "--quiet changes nothing else"
    );

    // A sweep's lines name the model and T.
    let sweep = "task: { kind: sparse_parity, s: 2 }
models: { tiny: { kind: transformer, d_model: 16, heads: 2, mlp: 2 } }
train: { batch: 32, max_steps: 200, lr: 0.003, eval_every: 50, test_samples: 128 }
sweep: { T: [8], m: [128], seeds: [0], baselines: [] }
";
    std::fs::write(d.join("sweep.yaml"), sweep).unwrap();
    let out = sparsevar(&["sweep", "sweep.yaml", "--out", "s"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = progress_lines(&text(&out.stderr));
    assert!(!lines.is_empty() && lines.iter().all(|l| l.0.starts_with("tiny T=8")), "{}", text(&out.stderr));

    // A script's training too, named after the run.
    std::fs::write(d.join("t.rhai"), "let r = train(load_config(\"small.yaml\"), #{ name: \"heads\" });\nprint(r.num_learned());\n").unwrap();
    let out = sparsevar(&["run", "t.rhai", "--out", "r"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = progress_lines(&text(&out.stderr));
    assert!(!lines.is_empty() && lines.iter().all(|l| l.0 == "heads"), "{}", text(&out.stderr));
    let out = sparsevar(&["run", "t.rhai", "--out", "r2", "--quiet"], &d);
    assert!(out.status.success() && !text(&out.stderr).contains("progress:"), "{}", text(&out.stderr));
}

#[test]
fn compare_tabulates_a_heads_study_and_draws_its_figure() {
    let d = ScratchDir::created("cli-compare");
    std::fs::write(d.join("small.yaml"), SMALL).unwrap();
    for h in ["1", "2", "4"] {
        let out = sparsevar(&["train", "small.yaml", "--out", &format!("h{h}"), &format!("model.heads={h}"), "--quiet"], &d);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = sparsevar(&["compare", "h1", "h2", "h4", "--out", "cmp"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout.lines().take(4).map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(rows[0], ["run", "model.heads", "learned", "median learning step", "test accuracy", "mass on S (best head)", "wall time"], "{stdout}");
    assert_eq!(rows.iter().skip(1).map(|r| r[1]).collect::<Vec<_>>(), ["1", "2", "4"], "only the differing key: {stdout}");
    // The outcomes are the runs' own summaries.
    for (row, h) in rows.iter().skip(1).zip(["h1", "h2", "h4"]) {
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join(h).join("summary.json")).unwrap()).unwrap();
        assert_eq!(row[2], format!("{}/2", s["learned"]), "{h}: {stdout}");
        let acc: f64 = s["members"].as_array().unwrap().iter().map(|m| m["test_accuracy"].as_f64().unwrap()).sum::<f64>() / 2.0;
        assert_eq!(row[4], format!("{acc:.4}"), "{h}");
    }
    for f in ["compare.csv", "compare.md", "compare.png", "compare.svg"] {
        assert!(d.join("cmp").join(f).metadata().unwrap().len() > 100, "{f}");
    }
    let csv = std::fs::read_to_string(d.join("cmp/compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("run,model.heads,learned,"), "{csv}");
    let svg = std::fs::read_to_string(d.join("cmp/compare.svg")).unwrap();
    assert!(svg.contains("model.heads=4") && svg.contains("test accuracy"), "the legend names runs by the differing key");

    // Finished comparisons are never overwritten.
    let again = sparsevar(&["compare", "h1", "h2", "--out", "cmp"], &d);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(d.join("cmp/compare.csv")).unwrap(), csv);
}

#[test]
fn compare_refuses_mixed_kinds_non_results_and_a_single_folder() {
    let d = ScratchDir::created("cli-compare-bad");
    for (dir, file) in [("train1", "metrics.csv"), ("train2", "metrics.csv"), ("sweep1", "runs.csv")] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
        std::fs::write(d.join(dir).join(file), "x\n").unwrap();
    }
    std::fs::create_dir_all(d.join("empty")).unwrap();
    std::fs::write(d.join("train2/summary.json"), "{ not json").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["compare", "train1", "sweep1"], "compare training runs with training runs"),
        (&["compare", "train1", "empty"], "empty: not a results folder"),
        (&["compare", "train1", "missing"], "missing: not a results folder"),
        (&["compare", "train1"], "at least two results folders (got 1)"),
        (&["compare", "train1", "train2"], "summary.json"),
    ];
    for (args, want) in cases {
        let out = sparsevar(args, &d);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("error: ") && err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing printed before the refusal");
    }
}

#[test]
fn compare_of_two_sweeps_lists_m_star_per_t_and_overlays_them() {
    let d = ScratchDir::created("cli-compare-sweeps");
    let sweep = "task: { kind: sparse_parity, s: 2 }
models: { tiny: { kind: transformer, d_model: 16, heads: 2, mlp: 2 } }
train: { batch: 32, max_steps: 300, lr: 0.003, eval_every: 50, test_samples: 128 }
sweep: { T: [6, 8], m: [64, 256], seeds: [0], baselines: [] }
";
    std::fs::write(d.join("sweep.yaml"), sweep).unwrap();
    for (out, lr) in [("a", "0.003"), ("b", "0.01")] {
        let o = sparsevar(&["sweep", "sweep.yaml", "--out", out, &format!("train.lr={lr}"), "--quiet"], &d);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let out = sparsevar(&["compare", "a", "b", "--out", "cmp"], &d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let header: Vec<&str> = stdout.lines().next().unwrap().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["run", "train.lr", "model", "m* T=6", "m* T=8", "wall time"], "{stdout}");
    // m* as each sweep's own summary has it ("> 256" when no m in the grid succeeded).
    let rows: Vec<Vec<String>> =
        std::fs::read_to_string(d.join("cmp/compare.csv")).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    for (row, dir) in rows.iter().zip(["a", "b"]) {
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join(dir).join("summary.json")).unwrap()).unwrap();
        let points = s["summary"]["models"][0]["points"].as_array().unwrap();
        for (k, p) in points.iter().enumerate() {
            let want = p["m_star"].as_u64().map_or("> 256".to_string(), |m| m.to_string());
            assert_eq!(row[3 + k], want, "{dir}: {row:?}");
        }
    }
    assert!(std::fs::read_to_string(d.join("cmp/compare.svg")).unwrap().contains("train.lr=0.01"), "runs named by the differing key");
}
