//! Every script in scripts/ runs in quick mode and writes its figures; the data behind them
//! is checked against the results folders the runs wrote.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sparsevar_core::task::TaskSpec;
use sparsevar_script::{ScriptOutcome, run_script};

/// The scripts this file checks one by one.
const SCRIPTS: [&str; 7] =
    ["01_quickstart", "02_paper_scaling", "03_attention_variants", "04_mlp_vs_attention", "05_phase_transition", "06_is_it_log_t", "07_heads"];

/// Run `scripts/{name}.rhai` in quick mode into a fresh folder; check that every figure it
/// wrote is a valid PNG or SVG of the figure size and that `figures` are among them.
fn run(name: &str, figures: &[&str]) -> (ScriptOutcome, PathBuf) {
    let out = common::fresh(&format!("script-{name}")).join("out");
    let script = common::root().join(format!("scripts/{name}.rhai"));
    let outcome = run_script(common::context(&script, &out)).unwrap_or_else(|e| panic!("{e}"));
    for f in figures {
        assert!(outcome.files.contains(&out.join(f)), "{name} did not write {f}: {:?}", outcome.files);
    }
    for f in outcome.files.iter().filter(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("png" | "svg"))) {
        assert_eq!(common::figure_size(f), (sparsevar_plot::WIDTH, sparsevar_plot::HEIGHT), "{}", f.display());
    }
    assert!(outcome.unused_params.is_empty());
    (outcome, out)
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A CSV without quoted fields as maps from column to text.
fn csv(p: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().zip(l.split(',')).map(|(h, v)| (h.to_string(), v.to_string())).collect()).collect()
}

/// m* recomputed from a sweep's runs.csv: the smallest m at which a strict majority of the
/// seeds learned (the sweep's default rule), as the CSV writes it ("" for none).
fn m_star(runs: &Path, model: &str, t: usize) -> String {
    let mut by_m: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for r in csv(runs).iter().filter(|r| r["model"] == model && r["T"] == t.to_string()) {
        let e = by_m.entry(r["m"].parse().unwrap()).or_default();
        e.0 += (r["learned"] == "true") as usize;
        e.1 += 1;
    }
    assert!(!by_m.is_empty(), "no runs of {model} at T={t} in {}", runs.display());
    by_m.iter().find(|(_, (k, n))| *k > n / 2).map_or(String::new(), |(m, _)| m.to_string())
}

#[test]
fn every_script_is_checked_here() {
    let mut found: Vec<String> = std::fs::read_dir(common::root().join("scripts"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "rhai").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    assert_eq!(found, SCRIPTS, "scripts/ changed: give each script a test in this file");
}

#[test]
fn quickstart_learns_and_attends_to_s() {
    let (_, out) = run("01_quickstart", &["attention.png", "curves.png", "members.json"]);
    let members = json(&out.join("members.json"));
    let summary = json(&out.join("quickstart/summary.json"));
    let registry = common::registry();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 2);
    for (i, m) in members.iter().enumerate() {
        let seed = m["seed"].as_u64().unwrap();
        let s = registry.task(&TaskSpec::new("sparse_parity", 8, 2), seed).unwrap().relevant().to_vec();
        assert_eq!(m["S"], serde_json::json!(s), "member {i}");
        assert_eq!(m["S"], summary["members"][i]["S"]);
        assert_eq!(m["learned"], summary["members"][i]["learned"]);
        if m["learned"] == true {
            assert!(m["best_mass_on_S"].as_f64().unwrap() > 0.5, "a learned member attends to S: {m}");
            assert_eq!(m["top_s_equals_S"], true, "{m}");
        }
    }
    assert!(members.iter().any(|m| m["learned"] == true), "no member learned the quick task");
}

#[test]
fn paper_scaling_writes_m_star_matching_its_runs() {
    let (_, out) = run("02_paper_scaling", &["scaling.png", "success_transformer.svg", "success_mlp.svg", "comparison.png", "m_star.csv"]);
    let rows = csv(&out.join("m_star.csv"));
    let summary = json(&out.join("paper_scaling/summary.json"));
    assert_eq!(rows.len(), 3 * 2, "T = 4, 8, 16 × two models");
    for r in &rows {
        let t: usize = r["T"].parse().unwrap();
        assert_eq!(r["m_star"], m_star(&out.join("paper_scaling/runs.csv"), &r["model"], t), "{r:?}");
        let b = summary["summary"]["baselines"].as_array().unwrap().iter().find(|b| b["t"] == t).unwrap();
        assert_eq!(r["gf2_m_star"], b["gf2_m_star"].as_u64().map_or(String::new(), |m| m.to_string()));
        let floor: f64 = r["info_floor"].parse().unwrap();
        assert!((floor - ((t * (t - 1) / 2) as f64).log2()).abs() < 1e-9, "log2 C({t}, 2) = {floor}");
    }
    // The transformer learns the quick task at every T.
    assert!(rows.iter().filter(|r| r["model"] == "transformer").all(|r| !r["m_star"].is_empty()), "{rows:?}");
}

/// The folders a part swept at T: its window (`{part}_T{T}`) and each widening (`_m{m}`).
fn part_folders(out: &Path, part: &str, t: &str) -> Vec<PathBuf> {
    let window = format!("{part}_T{t}");
    let mut found: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name == window || name.strip_prefix(&format!("{window}_m")).is_some_and(|m| m.parse::<usize>().is_ok())
        })
        .collect();
    found.sort();
    found
}

#[test]
fn is_it_log_t_composes_the_study_and_its_table_matches_the_sweeps() {
    let (_, out) = run("06_is_it_log_t", &["m_star_s2.png", "m_star_s3.png", "iid_s2.png", "iid_s3.png", "fits.csv", "fits.md", "m_star.csv", "budgets.csv"]);
    for d in ["learners_s2_T4", "learners_s2_T8", "bounded_s2_T8", "learners_s3_T4", "learners_s3_T6", "iid_s2", "iid_s3"] {
        assert!(out.join(d).join("summary.json").exists(), "{d} was not swept");
    }
    // Each row's m* is the smallest m* of the part's folders at that T (the window and its
    // widenings); m_swept lists every m they trained; and below every m* the grid step under
    // it was swept (and failed, or it would be m*), unless m* is the grid's lowest, 16.
    let rows = csv(&out.join("m_star.csv"));
    let learners = ["majority", "best_of_k", "min_norm"];
    let mut checked = 0;
    for r in rows.iter().filter(|r| learners.contains(&r["learner"].as_str())) {
        let part = match (r["part"].as_str(), r["s"].as_str()) {
            ("learners", s) => format!("learners_s{s}"),
            (p, "2") if p.starts_with("max_norm") => "bounded_s2".to_string(),
            other => panic!("unexpected part {other:?}"),
        };
        let folders = part_folders(&out, &part, &r["T"]);
        assert!(!folders.is_empty(), "{r:?}");
        let mut swept: Vec<usize> = Vec::new();
        let mut best: Option<usize> = None;
        for f in &folders {
            let point = &json(&f.join("summary.json"))["summary"]["models"][0]["points"][0];
            let m = if part == "bounded_s2" {
                m_star(&f.join("runs.csv"), "transformer", r["T"].parse().unwrap()).parse().ok()
            } else {
                point["learners"].as_array().unwrap().iter().find(|l| l["learner"] == r["learner"].as_str()).unwrap()["m_star"].as_u64().map(|m| m as usize)
            };
            best = match (best, m) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            swept.extend(csv(&f.join("runs.csv")).iter().map(|row| row["m"].parse::<usize>().unwrap()));
        }
        swept.sort();
        swept.dedup();
        assert_eq!(r["m_star"], best.map_or(String::new(), |m| m.to_string()), "{r:?}");
        assert_eq!(r["m_swept"], swept.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(" "), "{r:?}");
        if let Some(m) = best {
            assert!(m == 16 || swept.iter().any(|&x| x < m), "no failing m below m* = {m}: {r:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, 3 * 2 + 2 + 3 * 2, "three learners at two T for s = 2 and 3, the bounded run at two T");
    // The bounded run trained inside its bound (B = 1 by default).
    let config = std::fs::read_to_string(out.join("bounded_s2_T8/config.yaml")).unwrap();
    assert!(config.contains("max_norm") && config.contains("qk: 1.0"), "{config}");
    // Budget doubling at the m just below each learner's m*: per budget whether the learner
    // learned there, as its sweep's summary has it; majority recomputed from runs.csv
    // (restart 0's rows at that budget: a strict majority learned); stable on the last budget.
    let budgets = csv(&out.join("budgets.csv"));
    assert!(!budgets.is_empty());
    for b in &budgets {
        assert_eq!(b["m_star"].parse::<usize>().unwrap(), 4 * b["m"].parse::<usize>().unwrap(), "one quick grid step below m*: {b:?}");
        let dir = out.join(format!("budgets_T{}_m{}", b["T"], b["m"]));
        let summary = json(&dir.join("summary.json"));
        let per_budget = summary["summary"]["models"][0]["points"][0]["budgets"].as_array().unwrap();
        assert_eq!(per_budget.len(), 3);
        let learned_at = |budget: &serde_json::Value| {
            let l = budget["learners"].as_array().unwrap().iter().find(|l| l["learner"] == b["learner"].as_str()).unwrap();
            (l["m_star"].as_u64().map(|m| m.to_string()) == Some(b["m"].clone())).to_string()
        };
        let i = per_budget.iter().position(|x| x["budget"].as_u64().unwrap().to_string() == b["budget"]).unwrap();
        assert_eq!(b["learned"], learned_at(&per_budget[i]), "{b:?}");
        let stable = if i == 2 { (learned_at(&per_budget[1]) == learned_at(&per_budget[2])).to_string() } else { String::new() };
        assert_eq!(b["stable"], stable, "{b:?}");
        if b["learner"] == "majority" {
            let runs = csv(&dir.join("runs.csv"));
            let zero: Vec<_> = runs.iter().filter(|r| r["budget"] == b["budget"] && r["restart"] == "0").collect();
            let learned = zero.iter().filter(|r| r["learned"] == "true").count();
            assert_eq!(b["learned"], (learned > zero.len() / 2).to_string(), "{b:?}");
        }
    }
    // The fits table: three learners at s = 2 and 3, the bounded run, two i.i.d. rows whose
    // exponent is the one of the i.i.d. sweep's own fit.
    let fits = csv(&out.join("fits.csv"));
    assert_eq!(fits.len(), 3 + 1 + 3 + 2, "{fits:?}");
    for s in ["2", "3"] {
        let iid = fits.iter().find(|r| r["part"] == "i.i.d. steps" && r["s"] == s).unwrap();
        let summary = json(&out.join(format!("iid_s{s}/summary.json")));
        match summary["summary"]["models"][0]["fit"]["power"]["b"].as_f64() {
            Some(alpha) => assert_eq!(iid["power_alpha"], format!("{alpha:.2}"), "{iid:?}"),
            None => assert!(iid["power_alpha"].is_empty(), "{iid:?}"),
        }
    }
    // The i.i.d. quick task is learned at both T, so s = 2 has its exponent: from two points
    // only, so no R² and no log law (both laws pass through two points exactly).
    let iid2 = fits.iter().find(|r| r["part"] == "i.i.d. steps" && r["s"] == "2").unwrap();
    assert!(!iid2["power_alpha"].is_empty(), "{fits:?}");
    assert_eq!((iid2["points"].as_str(), iid2["log_r2"].as_str(), iid2["power_r2"].as_str(), iid2["log_b"].as_str()), ("2", "", "", ""), "{iid2:?}");
    let md = std::fs::read_to_string(out.join("fits.md")).unwrap();
    assert!(md.starts_with("| part | s | learner | T | log_a |") && md.lines().count() == fits.len() + 2, "{md}");
}

#[test]
fn attention_variants_compare_five_sweeps() {
    let (outcome, out) = run("03_attention_variants", &["comparison.png", "variants.csv"]);
    let rows = csv(&out.join("variants.csv"));
    let variants = ["softmax", "relu", "sigmoid", "linear", "uniform"];
    assert_eq!(rows.len(), variants.len() * 2);
    for v in variants {
        let dir = out.join(format!("variant_{v}"));
        assert!(outcome.files.contains(&dir));
        let config = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        assert!(config.contains(&format!("attention: {v}")), "{v}: {config}");
        for r in rows.iter().filter(|r| r["variant"] == v) {
            assert_eq!(r["m_star"], m_star(&dir.join("runs.csv"), "transformer", r["T"].parse().unwrap()), "{r:?}");
        }
    }
}

#[test]
fn mlp_vs_attention_reports_the_gap() {
    let (_, out) = run("04_mlp_vs_attention", &["comparison.png", "gap.csv", "fits.json"]);
    for r in csv(&out.join("gap.csv")) {
        let t: usize = r["T"].parse().unwrap();
        assert_eq!(r["transformer"], m_star(&out.join("attention/runs.csv"), "transformer", t));
        assert_eq!(r["mlp"], m_star(&out.join("mlp/runs.csv"), "mlp", t));
        if !r["ratio"].is_empty() {
            let (a, b): (f64, f64) = (r["transformer"].parse().unwrap(), r["mlp"].parse().unwrap());
            assert!((r["ratio"].parse::<f64>().unwrap() - b / a).abs() < 1e-12, "{r:?}");
        }
    }
    let fits = json(&out.join("fits.json"));
    assert!(fits.get("transformer").is_some() && fits.get("mlp").is_some(), "{fits}");
}

#[test]
fn phase_transition_replays_match_the_online_run() {
    let (_, out) = run("05_phase_transition", &["curves.png", "attention_before.png", "attention_at.png", "attention_end.png", "transition.csv"]);
    let config = std::fs::read_to_string(out.join("phase/config.yaml")).unwrap();
    assert!(config.contains("online: true"), "{config}");
    let curve = csv(&out.join("transition.csv"));
    let steps: Vec<usize> = curve.iter().map(|r| r["step"].parse().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]) && steps.iter().all(|s| s % 20 == 0), "{steps:?}");
    // The replay of a member to the variable's step ends exactly where the online run was at
    // that step (same seed, same stream), and its mass on S has crossed 0.5 there.
    let metrics = csv(&out.join("phase/metrics.csv"));
    let at = csv(&out.join("phase_at/metrics.csv"));
    let last = at.last().unwrap();
    let same = metrics.iter().find(|r| r["seed"] == last["seed"] && r["step"] == last["step"]).expect("the online run evaluated at the variable's step");
    for k in ["train_loss", "test_loss", "test_accuracy", "best_mass_on_s"] {
        assert_eq!(same[k], last[k], "{k} differs between the run and its replay");
    }
    assert!(last["best_mass_on_s"].parse::<f64>().unwrap() > 0.5, "{last:?}");
    let before = csv(&out.join("phase_before/metrics.csv"));
    assert!(before.last().unwrap()["best_mass_on_s"].parse::<f64>().unwrap() <= 0.5, "{before:?}");
}

#[test]
fn heads_study_compares_three_runs_and_plots_rows() {
    let (outcome, out) = run("07_heads", &["mass_by_heads.png", "steps_by_heads.png"]);
    let members = csv(&out.join("members.csv"));
    assert_eq!(members.len(), 6, "three runs of two members");
    // The comparison reads the runs back: one row per run, the differing key, outcomes that
    // match each run's own summary.
    let rows = csv(&out.join("compare.csv"));
    assert_eq!(rows.iter().map(|r| r["model.heads"].as_str()).collect::<Vec<_>>(), ["1", "2", "4"]);
    for r in &rows {
        let s = json(&Path::new(&r["dir"]).join("summary.json"));
        assert_eq!(r["learned"], s["learned"].to_string());
        let from_members = members.iter().filter(|m| m["heads"] == r["model.heads"] && m["learned"] == "true").count();
        assert_eq!(r["learned"], from_members.to_string());
    }
    assert!(outcome.output.iter().any(|l| l == "the runs differ in: [\"model.heads\"]"), "{:?}", outcome.output);
}
