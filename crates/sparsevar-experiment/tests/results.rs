//! Every results file round-trips through its one type: write -> read -> equal, with
//! non-finite floats (null in JSON) and strings that need quoting; a malformed row is an
//! error naming the file and line.

use sparsevar_experiment::fits::{Fit, ScalingFit};
use sparsevar_experiment::learners::Stopped;
use sparsevar_experiment::results::{CsvLog, MemberSummary, Provenance, ResultsDir, TrainSummary, csv_header, load_metrics, load_train_summary, write_json};
use sparsevar_experiment::sweep::{
    BaselinePoint, Cell, FaultedRun, ModelSummary, PointSummary, RunRow, SweepFile, SweepSummary, load_sweep_summary, read_runs,
};
use sparsevar_experiment::train::{AttentionSummary, CurvePoint, MemberResult};
use sparsevar_test_support::ScratchDir;

/// NaN != NaN, so compare what is written: Debug prints NaN as `NaN`.
fn same<T: std::fmt::Debug>(a: &T, b: &T) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

fn provenance() -> Provenance {
    let mut p = Provenance::new("sparsevar", Some("abc123".into()), "cpu".into(), 2, vec![0, 1]);
    p.command = vec!["sparsevar".into(), "train".into(), "say \"hi\", twice".into()];
    p
}

fn point(member: usize, step: usize, loss: f64, mass: Option<f64>) -> CurvePoint {
    CurvePoint {
        member,
        seed: member as u64 + 7,
        step,
        train_loss: loss,
        test_loss: loss * 1.5,
        test_accuracy: 0.5 + step as f64 * 1e-4,
        best_mass_on_s: mass,
        ..Default::default()
    }
}

#[test]
fn metrics_csv_round_trips_with_non_finite_values() {
    let d = ScratchDir::new("results-metrics");
    let mut dir = ResultsDir::create(&d, "seeds: [7]\n").unwrap();
    let points = vec![point(0, 100, 0.693_155_884_742_736_8, Some(0.25)), point(1, 100, f64::NAN, None), point(0, 200, f64::INFINITY, Some(1.0 / 3.0))];
    dir.append_metrics(&points[..2]).unwrap();
    dir.append_metrics(&points[2..]).unwrap();
    let text = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s,qk_spectral,qk_frobenius,v_norm,o_norm,tok_norm,pos_norm,norm_bound",
        "the header the book quotes"
    );
    assert_eq!(csv_header::<CurvePoint>(), text.lines().next().unwrap());
    same(&load_metrics(&d).unwrap(), &points);
    // Full precision: the values read back are the values written, bit for bit.
    assert_eq!(load_metrics(&d.join("metrics.csv")).unwrap()[0].train_loss.to_bits(), points[0].train_loss.to_bits());
}

#[test]
fn train_summary_round_trips_with_null_for_nan() {
    let d = ScratchDir::new("results-summary");
    let dir = ResultsDir::create(&d, "x: 1\n").unwrap();
    let attention = AttentionSummary {
        weights: vec![vec![vec![0.1, 0.6, 0.3], vec![0.2, f64::NAN, 0.4]]],
        mass_on_s: vec![vec![0.6, f64::NAN]],
        best_head: (0, 0),
        top_s_equals_s: true,
    };
    let members = [
        MemberResult {
            seed: 3,
            relevant: vec![0],
            learned: true,
            diverged: false,
            step: Some(400),
            steps_trained: 400,
            test_accuracy: 1.0,
            test_loss: 0.01,
            train_loss: 0.02,
            attention: Some(attention),
            norms: None,
            scores: None,
            stopped: None,
        },
        MemberResult {
            seed: 4,
            relevant: vec![1],
            learned: false,
            diverged: true,
            step: None,
            steps_trained: 50,
            test_accuracy: 0.5,
            test_loss: f64::NAN,
            train_loss: f64::NAN,
            attention: None,
            norms: None,
            scores: None,
            stopped: None,
        },
    ];
    let summary = TrainSummary {
        members: members.iter().map(MemberSummary::from).collect(),
        learned: 1,
        steps: 400,
        seconds: 1.25,
        interrupted: true,
        provenance: provenance(),
        builds: vec!["older".into(), "newer".into()],
    };
    let path = dir.write_summary(&summary).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The on-disk names the book and older folders use.
    let m = &json["members"][1];
    assert!(m["test_loss"].is_null() && m["train_loss"].is_null(), "{m}");
    assert_eq!(json["members"][0]["S"], serde_json::json!([0]));
    assert_eq!(json["members"][0]["attention_mass_on_S"], serde_json::json!([0.6, null]));
    assert_eq!(json["members"][0]["top_s_equals_S"], true);
    assert_eq!(json["interrupted"], true);
    assert_eq!(json["builds"], serde_json::json!(["older", "newer"]));
    let back = load_train_summary(&d).unwrap();
    same(&back, &summary);
    // JSON has one null for every non-finite value: infinity reads back as NaN too.
    let mut inf = summary.clone();
    inf.members[1].train_loss = f64::INFINITY;
    dir.write_summary(&inf).unwrap();
    assert!(load_train_summary(&d).unwrap().members[1].train_loss.is_nan());
    // And on to the trainer's types: the attention summary comes back whole.
    let results: Vec<MemberResult> = back.members.into_iter().map(MemberResult::from).collect();
    same(&results, &members.to_vec());
}

#[test]
fn train_summary_from_older_folders_loads_with_defaults() {
    let d = ScratchDir::created("results-old");
    let p = serde_json::to_value(provenance()).unwrap();
    let doc = serde_json::json!({"members": [{"S": [4, 5], "learned": true, "seed": 7, "step": 700, "steps_trained": 700,
        "test_accuracy": 1.0, "test_loss": null, "train_loss": 0.001, "attention_mass_on_S": [0.8], "attention_mass_on_S_by_layer": [[0.8]],
        "best_head": [0, 0], "top_s_equals_S": true}], "learned": 1, "steps": 700, "seconds": 1.0, "provenance": p});
    std::fs::write(d.join("summary.json"), doc.to_string()).unwrap();
    let s = load_train_summary(&d).unwrap();
    assert!(!s.interrupted && !s.members[0].diverged && s.members[0].test_loss.is_nan());
    let m = MemberResult::from(s.members[0].clone());
    assert_eq!(m.attention.unwrap().weights.len(), 0, "no weights recorded: empty, not an error");
}

fn row(model: &str, t: usize, m: usize, seed: u64, acc: f64, mass: Option<f64>) -> RunRow {
    RunRow {
        model: model.into(),
        variant: "softmax".into(),
        t,
        m,
        seed,
        learned: acc > 0.9,
        diverged: false,
        step: (acc > 0.9).then_some(300),
        steps_trained: 300,
        test_accuracy: acc,
        mass_on_s: mass,
        variable_step: None,
        seconds: 0.123_456_789,
        faulted: None,
        norm_bound: None,
        restart: None,
        train_accuracy: None,
        validation_accuracy: None,
        train_set_loss: None,
        stopped: None,
        budget: None,
        recipe: None,
    }
}

#[test]
fn runs_csv_round_trips_with_quoting() {
    let d = ScratchDir::created("results-runs");
    let mut rows = vec![row("attn", 8, 16, 0, 1.0, Some(0.9)), row("wide, \"deep\"", 16, 32, 1, f64::NAN, None), row("mlp", 8, 64, 2, 0.5, None)];
    rows[2].faulted = Some("plugin libx.so: Task::sample, \"panicked\":\nboom".into());
    rows[0].stopped = Some(Stopped::Validation);
    let path = d.join("runs.csv");
    let mut log = CsvLog::create(&path, &rows[..1]).unwrap();
    log.append(&rows[1..]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "model,variant,T,m,seed,learned,diverged,step,steps_trained,test_accuracy,mass_on_S,variable_step,seconds,faulted,norm_bound,restart,train_accuracy,validation_accuracy,train_set_loss,stopped,budget,recipe"
    );
    assert!(text.contains("\"wide, \"\"deep\"\"\""), "quoted: {text}");
    same(&read_runs(&d).unwrap(), &rows);
    // Folders written before the `faulted` column existed still read.
    let old = "model,variant,T,m,seed,learned,diverged,step,steps_trained,test_accuracy,mass_on_S,variable_step,seconds\nattn,softmax,8,16,0,true,false,300,300,1.0,0.9,,0.5\n";
    std::fs::write(&path, old).unwrap();
    assert_eq!(read_runs(&d).unwrap()[0].faulted, None);
}

#[test]
fn sweep_summary_round_trips_wrapped_and_bare() {
    let cell = |m: usize, learned: usize| Cell {
        m,
        learned,
        seeds: 3,
        rate: learned as f64 / 3.0,
        wilson_low: 0.1,
        wilson_high: 0.9,
        success: learned >= 2,
        median_step: (learned > 0).then_some(300.0),
    };
    let point = |t: usize| PointSummary {
        t,
        cells: vec![cell(16, 0), cell(32, 2)],
        m_star: Some(32),
        m_below: Some(16),
        median_steps_to_learn: None,
        median_variable_step: Some(120.0),
        budgets: vec![],
        stable: None,
        learners: vec![],
        online: None,
        choices: vec![],
        recipe_counts: vec![],
    };
    let f = |law: &str, r2: f64| Fit { law: law.into(), a: 1.5, b: 2.0, r2 };
    let summary = SweepSummary {
        s: 2,
        task: "sparse_parity".into(),
        success_rule: "a cell \"succeeds\", when…".into(),
        max_steps: 1000,
        models: vec![ModelSummary {
            model: "attn".into(),
            points: vec![point(8), point(16)],
            fit: Some(ScalingFit { log: f("log", 0.9), power: f("power", f64::NAN), ratio: f64::NAN, verdict: "v".into(), points: 3 }),
        }],
        baselines: vec![BaselinePoint { t: 8, info_floor: 4.8, gf2_m_star: Some(16), subset_search_m_star: None, subset_search_skipped: true }],
        faulted: vec![FaultedRun { model: "attn".into(), t: 8, m: 16, seed: 2, fault: "plugin libx.so: Task::sample: \"boom\"".into() }],
        seconds: 1.0,
    };
    let d = ScratchDir::created("results-sweep");
    write_json(
        &d.join("summary.json"),
        &SweepFile { summary: summary.clone(), provenance: provenance(), earlier: Vec::new(), builds: Vec::new(), unit_seconds: 1.5 },
    )
    .unwrap();
    let text = std::fs::read_to_string(d.join("summary.json")).unwrap();
    assert!(text.contains("\"r2\": null") && text.contains("\"ratio\": null"), "{text}");
    same(&load_sweep_summary(&d).unwrap(), &summary);
    write_json(&d.join("bare.json"), &summary).unwrap();
    same(&load_sweep_summary(&d.join("bare.json")).unwrap(), &summary);
}

/// A cut last line or a non-number is an error that names the file and the line: reading
/// never stops silently at a bad row.
#[test]
fn malformed_rows_name_the_file_and_line() {
    let d = ScratchDir::created("results-malformed");
    let header = "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s";
    let cases = [
        (format!("{header}\n0,7,100,0.69,0.70,0.5,0.2\n0,7,200,0.1,0.2,0.9,\n0,7,3"), "line 4", "fields"),
        (format!("{header}\n0,7,100,0.69,0.70,0.5,0.2\n0,7,2x0,0.1,0.2,0.9,\n"), "line 3", "field 3"),
        (format!("{header}\n0,7,100,zero,0.70,0.5,0.2\n"), "line 2", "field 4"),
        ("step,loss\n1,2\n".to_string(), "line", "missing field"),
    ];
    for (text, line, what) in cases {
        std::fs::write(d.join("metrics.csv"), &text).unwrap();
        let e = load_metrics(&d).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains(line) && e.contains(what), "{e}\nfor\n{text}");
    }
    let rows = [row("attn", 8, 16, 0, 1.0, Some(0.9))];
    CsvLog::create(&d.join("runs.csv"), &rows).unwrap();
    let text = std::fs::read_to_string(d.join("runs.csv")).unwrap();
    std::fs::write(d.join("runs.csv"), text.replace(",true,", ",yes,")).unwrap();
    let e = read_runs(&d).unwrap_err().to_string();
    assert!(e.contains("runs.csv line 2") && e.contains("field 6"), "{e}");
    std::fs::write(d.join("summary.json"), "{\"members\": [").unwrap();
    let e = load_train_summary(&d).unwrap_err().to_string();
    assert!(e.contains("summary.json line 1") && e.contains("not a training summary"), "{e}");
}
