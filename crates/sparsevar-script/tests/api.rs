//! The script API against the experiment types: handles, configs, params, output files, and
//! the generated reference.

mod common;

use std::collections::BTreeSet;

use sparsevar_core::task::TaskSpec;
use sparsevar_script::{ScriptEngine, api_reference, run_inline, run_script};

#[test]
fn reference_documents_every_registered_function() {
    let ctx = common::context("x.rhai", "out");
    let engine = ScriptEngine::new(ctx);
    let documented: BTreeSet<String> = engine.documented_names().into_iter().collect();
    let registered: BTreeSet<String> = engine
        .engine()
        .gen_fn_signatures(false)
        .iter()
        .map(|s| s.split('(').next().unwrap().to_string())
        .filter(|n| n != "to_string" && n != "to_debug")
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    assert!(missing.is_empty(), "registered without a doc entry: {missing:?}");
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(stale.is_empty(), "documented but not registered: {stale:?}");

    let md = api_reference();
    for section in [
        "## Types",
        "## Tasks",
        "## Models",
        "## Training",
        "## Sweeps",
        "## Configs and output",
        "## Figures",
        "## Transformer options",
        "## Train options",
        "## Sweep options",
        "## Task options",
    ] {
        assert!(md.contains(section), "no {section} in the reference");
    }
    for line in [
        "| `sparse_parity(T: int, s: int) -> Task` |",
        "| `train(task: Task, model: Model, options: map) -> TrainResult` |",
        "| `plot_success_map(sweep: SweepResult, model: string, path: string) -> map` |",
        "| `TrainResult.members -> array` |",
        "| `d_model` | `64` |",
        "| `lr` | `0.0003` |",
        "| `max_ensemble` | `64` |",
    ] {
        assert!(md.contains(line), "no `{line}` in the reference");
    }
}

#[test]
fn tasks_and_models_are_handles_with_properties() {
    let dir = common::fresh("api-handles");
    let src = r#"
let t = sparse_parity(16, 3);
print(`${t.kind} ${t.T} ${t.s} ${t.bias} ${t.noise} ${t.subset}`);
let u = t.with_options(#{ T: 32, subset: [1, 5, 30], noise: 0.1 });
print(`${u.T} ${u.subset} ${u.noise} ${t.T}`);
print(u.relevant(7));
print(t.relevant(7));
let j = task("junta", #{ T: 10, s: 4, table_seed: 3 });
print(j);
let m = transformer(#{ heads: 2, attention: attention("relu") });
print(`${m.kind} ${m.attention} ${m.options.heads} ${m.options.d_model}`);
print(m.with_options(#{ layers: 2 }).options.layers);
print(`${mlp().kind} ${mlp().attention} ${type_of(m)} ${type_of(attention("softmax"))}`);
print(list_attention());
print(list_backends());
print(fixed(0.98765, 2));
"#;
    let out = run_inline(src, common::context(dir.join("x.rhai"), dir.join("out"))).unwrap();
    let registry = common::registry();
    let s7 = registry.task(&TaskSpec::new("sparse_parity", 16, 3), 7).unwrap().relevant().to_vec();
    assert_eq!(
        out.output,
        vec![
            "sparse_parity 16 3 0.5 0.0 ".to_string(),
            "32 [1, 5, 30] 0.1 16".into(),
            "[1, 5, 30]".into(),
            format!("{s7:?}"),
            "junta T=10 s=4".into(),
            "transformer relu 2 64".into(),
            "2".into(),
            "mlp  Model Attention".into(),
            "[\"linear\", \"relu\", \"sigmoid\", \"softmax\", \"uniform\"]".into(),
            "[\"cpu\"]".into(),
            "0.99".into(),
        ]
    );
}

#[test]
fn train_writes_its_folder_and_the_result_matches_it() {
    let dir = common::fresh("api-train");
    let src = r#"
let r = train(sparse_parity(6, 2), transformer(#{ d_model: 16, heads: 2, mlp: 2 }), #{ samples: 256, seeds: 3, max_steps: 300, eval_every: 50, lr: 0.003, test_samples: 128, name: "tiny" });
save_json(r, "result.json");
save_json(#{ learned: r.learned, steps: r.steps(), vsteps: r.variable_steps(), all: r.all_learned(), n: r.num_learned(),
             total: r.total_steps, curves: r.curves.len(), att: r.attention[0].len(), heads: r.attention[0][0].len(),
             positions: r.attention[0][0][0].len(), lr: r.train.lr, dir: r.dir, task: r.task.T }, "facts.json");
"#;
    let out = run_inline(src, common::context(dir.join("x.rhai"), dir.join("out"))).unwrap();
    let run_dir = dir.join("out/tiny");
    assert_eq!(out.files, vec![run_dir.clone(), dir.join("out/result.json"), dir.join("out/facts.json")]);
    let read = |p: std::path::PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let facts = read(dir.join("out/facts.json"));
    let summary = read(run_dir.join("summary.json"));
    let result = read(dir.join("out/result.json"));
    for i in 0..3 {
        let (m, s) = (&result["members"][i], &summary["members"][i]);
        assert_eq!(m["seed"], i);
        assert_eq!(m["S"], s["S"]);
        assert_eq!(m["learned"], s["learned"]);
        assert_eq!(m["step"], s["step"]);
        assert_eq!(m["top_s_equals_S"], s["top_s_equals_S"]);
        assert_eq!(m["mass_on_S"], s["attention_mass_on_S"]);
        assert_eq!(facts["learned"][i], s["learned"]);
        assert_eq!(facts["steps"][i], s["step"]);
        let expect_s = common::registry().task(&TaskSpec::new("sparse_parity", 6, 2), i as u64).unwrap().relevant().to_vec();
        assert_eq!(m["S"], serde_json::json!(expect_s));
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap();
    assert_eq!(facts["curves"], metrics.lines().count() - 1);
    assert_eq!(facts["total"], summary["steps"]);
    assert_eq!((facts["att"].as_u64(), facts["heads"].as_u64(), facts["positions"].as_u64()), (Some(1), Some(2), Some(7)));
    assert_eq!(facts["lr"], 0.003);
    assert_eq!(facts["task"], 6);
    assert_eq!(facts["dir"], run_dir.display().to_string());
    assert!(std::fs::read_to_string(run_dir.join("config.yaml")).unwrap().contains("lr: 0.003"));
    assert!(out.output.iter().any(|l| l.starts_with("trained tiny: ")), "{:?}", out.output);
}

#[test]
fn load_config_gives_trainable_experiments_and_sweep_plans() {
    let dir = common::fresh("api-config");
    common::write(
        &dir,
        "tiny.yaml",
        "task: { kind: sparse_parity, T: 6, s: 2 }\nmodel: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }\ntrain: { samples: 128, max_steps: 100, eval_every: 50, test_samples: 64 }\nseeds: [4, 5]\nbackend: auto\n",
    );
    common::write(
        &dir,
        "sweep.yaml",
        "task: { kind: sparse_parity, s: 1 }\nmodels:\n  tf: { kind: transformer, d_model: 8, heads: 1, mlp: 0 }\ntrain: { max_steps: 60, eval_every: 20, test_samples: 64 }\nsweep: { T: [4], m: [8, 32], seeds: [0] }\n",
    );
    let src = r#"
let e = load_config("tiny.yaml");
print(`${type_of(e)} ${e.seeds} ${e.task.T} ${e.train.max_steps}`);
let r = train(e, #{ max_steps: 50 });
print(`${r.name} ${r.total_steps} ${r.members.len()} ${r.members[1].seed}`);
let p = load_config("sweep.yaml");
print(type_of(p));
let s = sweep(p, #{ m: [8] });
print(`${s.name} ${s.T} ${s.models} ${s.runs.len()}`);
print(load_yaml("tiny.yaml").seeds);
"#;
    let path = common::write(&dir, "cfg.rhai", src);
    let out = run_script(common::context(&path, dir.join("out"))).unwrap();
    let printed: Vec<&str> =
        out.output.iter().map(String::as_str).filter(|l| !l.starts_with("trained") && !l.starts_with(' ') && !l.starts_with("swept")).collect();
    assert_eq!(printed, vec!["Experiment [4, 5] 6 100", "tiny 50 2 5", "SweepPlan", "sweep [4] [\"tf\"] 1", "[4, 5]"]);
    assert!(dir.join("out/tiny/summary.json").exists());
    assert_eq!(std::fs::read_to_string(dir.join("out/sweep/runs.csv")).unwrap().lines().count(), 2);
}

#[test]
fn params_are_read_typed_and_unused_ones_reported() {
    let dir = common::fresh("api-params");
    let mut ctx = common::context(dir.join("x.rhai"), dir.join("out"));
    ctx.params.insert("T".into(), "32".into());
    ctx.params.insert("Ts".into(), "[8, 16]".into());
    ctx.params.insert("lr".into(), "1".into());
    ctx.params.insert("tpyo".into(), "1".into());
    let src = "print(param(\"T\", 8) * 2);\nprint(param(\"Ts\", [4]));\nprint(param(\"lr\", 0.5) / 4.0);\nprint(param(\"absent\", \"x\"));\nprint(quick());\n";
    let out = run_inline(src, ctx).unwrap();
    assert_eq!(&out.output[..5], ["64", "[8, 16]", "0.25", "x", "true"]);
    assert_eq!(out.unused_params, vec!["tpyo"]);
    assert!(out.output[5].contains("--set tpyo=… was never read by the script"), "{:?}", out.output);
}

#[test]
fn save_functions_write_into_the_out_folder() {
    let dir = common::fresh("api-save");
    let src = r#"
let rows = [#{ T: 8, m: 64 }, #{ T: 16, m: () , note: "a, b" }];
save_csv(rows, "tables/m.csv");
save_yaml(#{ task: sparse_parity(8, 2), model: mlp(#{ width: 3 }) }, "spec.yaml");
save_json(#{ a: [1, 2.5, true, ()] }, "a.json");
print(out_dir());
"#;
    let out = run_inline(src, common::context(dir.join("x.rhai"), dir.join("out"))).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("out/tables/m.csv")).unwrap(), "T,m,note\n8,64,\n16,,\"a, b\"\n");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("out/spec.yaml")).unwrap()).unwrap();
    assert_eq!(yaml["task"]["kind"], "sparse_parity");
    assert_eq!(yaml["task"]["T"], 8);
    assert_eq!(yaml["model"]["kind"], "mlp");
    assert_eq!(yaml["model"]["width"], 3);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/a.json")).unwrap()).unwrap();
    assert_eq!(json, serde_json::json!({ "a": [1, 2.5, true, null] }));
    assert_eq!(out.output, vec![dir.join("out").display().to_string()]);
    assert_eq!(out.files.len(), 3);
}

#[test]
fn figures_return_the_data_they_draw() {
    let dir = common::fresh("api-figures");
    let src = r#"
let m = transformer(#{ d_model: 16, heads: 2, mlp: 2 });
let r = train(sparse_parity(6, 2), m, #{ samples: 256, seeds: [0, 1], max_steps: 200, eval_every: 50, lr: 0.003, test_samples: 128 });
let a = plot_attention(r, 1, "att.svg");
let c = plot_curves(r, "figs/curves.png");
let s = sweep(#{ task: sparse_parity(4, 1), model: m, T: [4, 6], m: [8, 64], seeds: [0], max_steps: 100, eval_every: 50, test_samples: 64 });
let sm = plot_success_map(s, "transformer", "success.png");
let sc = plot_scaling(s, "scaling.svg");
let cmp = plot_comparison(#{ a: s, b: s }, "cmp.png");
save_json(#{ a: a, c: c.series.keys(), sm: sm.series.m_star, m_star: s.m_star.transformer, sc: sc.series.keys(), cmp: cmp.series.keys(), S: r.members[1].S }, "figs.json");
"#;
    let out = run_inline(src, common::context(dir.join("x.rhai"), dir.join("out"))).unwrap();
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/figs.json")).unwrap()).unwrap();
    // The heat map outlines S: its `S` series is (key position, bit) = (i + 1, i) for i in S,
    // and exactly those columns are marked in every head's row.
    let s: Vec<u64> = f["S"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let drawn: Vec<(f64, f64)> = f["a"]["series"]["S"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())).collect();
    assert_eq!(drawn, s.iter().map(|&i| ((i + 1) as f64, i as f64)).collect::<Vec<_>>());
    let cells = f["a"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2 * 7, "2 heads × (CLS + 6 bits)");
    for c in cells {
        let x = c["x"].as_f64().unwrap() as u64;
        assert_eq!(c["marked"], x >= 1 && s.contains(&(x - 1)), "{c}");
    }
    assert_eq!((f["a"]["width"].as_u64(), f["a"]["height"].as_u64()), (Some(1000), Some(620)));
    assert!(f["c"].as_array().unwrap().iter().any(|k| k == "member 0/test_accuracy"), "{}", f["c"]);
    // The success map's m* series is the sweep's m* (where there is one).
    let m_star: Vec<(f64, f64)> = [4.0, 6.0].iter().zip(f["m_star"].as_array().unwrap()).filter_map(|(t, m)| m.as_f64().map(|m| (*t, m))).collect();
    let drawn: Vec<(f64, f64)> = f["sm"].as_array().unwrap().iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())).collect();
    assert_eq!(drawn, m_star);
    assert!(f["sc"].as_array().unwrap().iter().any(|k| k == "transformer/seed_threshold"), "plot_scaling draws each seed: {}", f["sc"]);
    assert!(f["cmp"].as_array().unwrap().iter().any(|k| k == "a/m_star" || k == "a/median_steps" || k == "a/not_learned"), "{}", f["cmp"]);
    for name in ["att.svg", "figs/curves.png", "success.png", "scaling.svg", "cmp.png"] {
        assert_eq!(common::figure_size(&dir.join("out").join(name)), (1000, 620), "{name}");
        assert!(out.files.contains(&dir.join("out").join(name)), "{name}");
    }
}

#[test]
fn the_crate_doc_example_runs() {
    let doc: Vec<&str> = include_str!("../src/lib.rs").lines().filter_map(|l| l.strip_prefix("//!")).map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
    let start = doc.iter().position(|l| *l == "```rhai").expect("a rhai block in the crate doc") + 1;
    let end = start + doc[start..].iter().position(|l| *l == "```").unwrap();
    let dir = common::fresh("api-doc-example");
    let out = run_inline(&doc[start..end].join("\n"), common::context(dir.join("x.rhai"), dir.join("out"))).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.output.iter().any(|l| l.starts_with("learned: [")), "{:?}", out.output);
    assert_eq!(common::png_size(&dir.join("out/attention.png")), (1000, 620));
}
