//! Bad scripts: every failure names file:line:col and shows the line; limits, cancellation
//! and the import sandbox hold; results written before an error stay on disk.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sparsevar_script::{ErrorKind, ScriptError, run_inline, run_script};

/// Write `source` as `dir/name`, run it, and return the error it must fail with.
fn fail(dir: &std::path::Path, name: &str, source: &str) -> ScriptError {
    let path = common::write(dir, name, source);
    run_script(common::context(&path, dir.join("out"))).expect_err("the script should fail")
}

/// The display's first line, the quoted source line and the caret line.
fn lines(e: &ScriptError) -> Vec<String> {
    e.to_string().lines().map(str::to_string).collect()
}

/// The caret sits under `needle` in the quoted source line.
fn caret_under(e: &ScriptError, needle: &str) {
    let l = lines(e);
    let at = l[1].find(needle).unwrap_or_else(|| panic!("`{needle}` not in {:?}", l[1]));
    assert_eq!(l[2].find('^'), Some(at), "caret not under `{needle}`:\n{e}");
}

#[test]
fn syntax_error_names_file_line_col_and_shows_the_line() {
    let dir = common::fresh("err-syntax");
    let e = fail(&dir, "bad.rhai", "let a = 1;\nlet b = 2;\nlet c = (a + ;\n");
    let file = dir.join("bad.rhai").display().to_string();
    assert_eq!(e.kind, ErrorKind::Parse);
    assert_eq!(e.line, Some(3));
    let l = lines(&e);
    assert!(l[0].starts_with(&format!("{file}:3:")), "{e}");
    assert_eq!(l[1], "   3 | let c = (a + ;");
    assert!(l[2].ends_with('^'), "{e}");
}

#[test]
fn unknown_model_key_names_the_key_the_valid_ones_and_the_call() {
    let dir = common::fresh("err-model-key");
    let src = "let t = sparse_parity(8, 2);\nfn helper() { 1 }\n    let m = transformer(#{layerz: 2});\n";
    let e = fail(&dir, "model.rhai", src);
    let file = dir.join("model.rhai").display().to_string();
    assert_eq!(e.kind, ErrorKind::Runtime);
    let l = lines(&e);
    assert_eq!(
        l[0],
        format!(
            "{file}:3:13: unknown model key `layerz`; valid keys: layers, d_model, heads, mlp, attention, positions, norm, readout, init_std, ln_eps, cls_shortcut, token_table"
        )
    );
    assert_eq!(l[1], "   3 |     let m = transformer(#{layerz: 2});");
    caret_under(&e, "transformer");
}

#[test]
fn bad_values_and_unknown_keys_of_every_section_name_the_key() {
    let dir = common::fresh("err-keys");
    let ctx = || common::context(dir.join("inline.rhai"), dir.join("out"));
    let cases = [
        ("transformer(#{heads: 3})", "model.d_model = 64 is not divisible by model.heads = 3"),
        ("transformer(#{attention: \"sharp\"})", "model.attention `sharp` is unknown; known variants: linear, relu, sigmoid, softmax, uniform"),
        ("transformer(#{positions: \"rotary\"})", "model key `positions` = rotary: unknown variant `rotary`, expected one of `learned`, `sinusoidal`, `none`"),
        ("mlp(#{depth: 2, widht: 3})", "unknown mlp model key `widht`; valid keys: depth, width"),
        ("attention(\"sharp\")", "model.attention `sharp` is unknown"),
        ("sparse_parity(4, 5)", "task.s = 5 exceeds task.T = 4"),
        ("sparse_majority(8, 2)", "sparse_majority needs an odd s"),
        ("sparse_parity(-1, 2)", "T must be a non-negative integer (got -1)"),
        ("task(\"parity\", #{T: 8, s: 2})", "unknown task kind `parity`; known kinds: junta, sparse_and"),
        ("task(\"sparse_parity\", #{T: 8})", "needs `s` in its options"),
        (
            "task(\"sparse_parity\", #{T: 8, s: 2, nosie: 0.1})",
            "unknown task key `nosie`; valid keys: T, s, subset, subset_seed, bias, noise, table_seed, params",
        ),
        ("sparse_parity(8, 2).with_options(#{noise: 0.7})", "task.noise must be in [0, 0.5]"),
        ("train(sparse_parity(8, 2), mlp(), #{lrr: 0.1})", "unknown train key `lrr`; valid keys: samples, online, batch, max_steps"),
        ("train(sparse_parity(8, 2), mlp(), #{batch: \"big\"})", "train key `batch` = big: invalid type: string \"big\", expected usize"),
        ("train(sparse_parity(8, 2), mlp(), #{seeds: [1, 1]})", "seeds [1, 1] repeat a seed"),
        ("train(sparse_parity(8, 2), mlp(), #{backend: \"tpu\"})", "backend `tpu` is unknown; available backends: cpu"),
        (
            "sweep(#{task: sparse_parity(8, 2), model: mlp(), T: [8], seedz: [0]})",
            "unknown sweep key `seedz`; valid keys: task, models, model, name, backend, T, m, seeds",
        ),
        ("sweep(#{model: mlp(), T: [8]})", "sweep needs `task`"),
        ("sweep(#{task: sparse_parity(8, 2), model: mlp()})", "sweep.T is empty"),
        ("sweep(#{task: sparse_parity(8, 2), models: #{a: 3}, T: [8]})", "sweep model `a` must be a Model"),
        ("sweep(#{task: sparse_parity(8, 2), model: mlp(), T: [8], baselines: [\"svm\"]})", "unknown baseline `svm`"),
        ("save_csv([1, 2], \"x.csv\")", "save_csv: row 0 is a i64, not a map"),
        ("save_json(1, \"../x.json\")", "must be a file name relative to the out folder"),
        ("save_json(1, \"/tmp/x.json\")", "must be a file name relative to the out folder"),
        ("param(\"n\")", "this script needs --set n=VALUE"),
        ("load_config(\"missing.yaml\")", "cannot read"),
        ("load_config(\"../x.yaml\")", "is outside the script folder"),
        ("let r = #{a: 1}; r.b", "Property not found: b"),
        ("plot_comparison(3, \"x.png\")", "give an array of SweepResults or a map"),
    ];
    for (code, want) in cases {
        let src = format!("let x = 0;\n{code};\n");
        let e = run_inline(&src, ctx()).expect_err(code);
        assert!(e.message.contains(want), "{code}: expected `{want}` in\n{e}");
        assert_eq!(e.line, Some(2), "{code}: {e}");
        assert!(e.column.is_some(), "{code}: {e}");
        assert_eq!(e.source_line.as_deref(), Some(format!("{code};").as_str()), "{code}");
    }
}

#[test]
fn endless_loop_stops_at_the_operation_limit() {
    let dir = common::fresh("err-loop");
    let path = common::write(&dir, "loop.rhai", "let i = 0;\nloop {\n    i += 1;\n}\n");
    let mut ctx = common::context(&path, dir.join("out"));
    ctx.limits.max_operations = 200_000;
    let e = run_script(ctx).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OperationLimit);
    assert!(e.message.starts_with("the script ran more than 200000 operations; raise --max-operations or look for an endless loop"), "{e}");
    assert!(matches!(e.line, Some(2..=3)), "{e}");
    assert!(e.to_string().starts_with(&format!("{}:", path.display())), "{e}");
}

#[test]
fn results_written_before_an_error_stay_on_disk() {
    let dir = common::fresh("err-keep");
    let src = r#"
save_json(#{ early: true }, "early.json");
let run = train(sparse_parity(4, 1), transformer(#{ d_model: 8, heads: 1, mlp: 0 }), #{ samples: 64, max_steps: 20, eval_every: 10, test_samples: 64, name: "kept" });
let m = transformer(#{ layerz: 2 });
"#;
    let e = fail(&dir, "keep.rhai", src);
    assert_eq!(e.line, Some(4), "{e}");
    let out = dir.join("out");
    assert_eq!(std::fs::read_to_string(out.join("early.json")).unwrap().trim(), "{\n  \"early\": true\n}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("kept/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["members"][0]["steps_trained"], 20);
    let metrics = std::fs::read_to_string(out.join("kept/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "header + evaluations at steps 10 and 20:\n{metrics}");
    assert!(out.join("kept/config.yaml").exists());
}

#[test]
fn imports_resolve_inside_the_script_folder_and_nowhere_else() {
    let dir = common::fresh("err-import");
    let scripts = dir.join("scripts");
    common::write(&scripts, "lib/helpers.rhai", "fn double(x) { x * 2 }\nfn broken() { transformer(#{layerz: 1}) }\n");
    common::write(&dir, "outside.rhai", "fn secret() { 42 }\n");
    let run = |name: &str, src: &str| run_script(common::context(common::write(&scripts, name, src), dir.join("out")));

    let ok = run("ok.rhai", "import \"lib/helpers\" as h;\nprint(h::double(21));\n").unwrap();
    assert_eq!(ok.output, vec!["42"]);

    for path in ["../outside", "lib/../../outside", &dir.join("outside").display().to_string()] {
        let e = run("escape.rhai", &format!("import \"{path}\" as o;\nprint(o::secret());\n")).unwrap_err();
        assert!(e.message.contains("is outside the script folder"), "{path}: {e}");
        assert_eq!((e.line, e.column), (Some(1), Some(8)), "{path}: {e}");
    }

    // An error inside an imported module names the module's file and line.
    let e = run("deep.rhai", "import \"lib/helpers\" as h;\nh::broken();\n").unwrap_err();
    let helpers = scripts.join("lib/helpers.rhai").display().to_string();
    assert!(e.to_string().starts_with(&format!("{helpers}:2:")), "{e}");
    assert!(e.message.contains("unknown model key `layerz`"), "{e}");
    assert!(e.notes.iter().any(|n| n.contains("in function `broken`")), "{e}");
}

#[test]
fn errors_inside_script_functions_point_at_the_body_and_note_the_call() {
    let dir = common::fresh("err-fn");
    let e = fail(&dir, "f.rhai", "fn make(h) {\n    transformer(#{heads: h})\n}\nlet a = make(4);\nlet b = make(3);\n");
    assert_eq!((e.line, e.column), (Some(2), Some(5)), "{e}");
    assert!(e.message.contains("not divisible by model.heads = 3"), "{e}");
    let file = dir.join("f.rhai").display().to_string();
    assert_eq!(e.notes, vec![format!("in function `make`, called at {file}:5:9")]);
}

#[test]
fn cancel_flag_stops_a_running_script() {
    let dir = common::fresh("err-cancel");
    let mut ctx = common::context(common::write(&dir, "spin.rhai", "let n = 0;\nloop { n += 1; }\n"), dir.join("out"));
    ctx.limits.max_operations = u64::MAX;
    let flag = ctx.cancel_flag();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(true, Ordering::Relaxed);
    });
    let e = run_script(ctx).unwrap_err();
    stopper.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert_eq!(e.message, "cancelled");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn cancel_flag_stops_training_and_keeps_the_curves() {
    let dir = common::fresh("err-cancel-train");
    let src = "train(sparse_parity(16, 3), transformer(#{ d_model: 8, heads: 1, mlp: 0 }), #{ online: true, max_steps: 100000000, eval_every: 5, test_samples: 32, target_accuracy: 1.0, name: \"long\" });\n";
    let mut ctx = common::context(common::write(&dir, "long.rhai", src), dir.join("out"));
    let flag = ctx.cancel_flag();
    ctx.health_check = None;
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        flag.store(true, Ordering::Relaxed);
    });
    let e = run_script(ctx).unwrap_err();
    stopper.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert!(e.message.starts_with("cancelled at step "), "{e}");
    assert!(e.message.contains("the run so far is in"), "{e}");
    let metrics = std::fs::read_to_string(dir.join("out/long/metrics.csv")).unwrap();
    assert!(metrics.lines().count() >= 2, "{metrics}");
    assert!(dir.join("out/long/summary.json").exists());
}

#[test]
fn time_limit_and_health_check_stop_the_script() {
    let dir = common::fresh("err-time");
    let path = common::write(&dir, "spin.rhai", "loop { }\n");
    let mut ctx = common::context(&path, dir.join("out"));
    ctx.limits.max_operations = u64::MAX;
    ctx.time_limit = Some(Duration::from_millis(100));
    let e = run_script(ctx).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TimeLimit, "{e}");
    assert!(e.message.starts_with("the script ran past its time limit"), "{e}");

    let mut ctx = common::context(&path, dir.join("out"));
    ctx.limits.max_operations = u64::MAX;
    ctx.health_check = Some(std::sync::Arc::new(|| Err("plugin libx.so panicked".to_string())));
    let e = run_script(ctx).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert_eq!(e.message, "stopped: plugin libx.so panicked");
}

#[test]
fn setup_errors_name_the_file() {
    let dir = common::fresh("err-setup");
    let e = run_script(common::context(dir.join("missing.rhai"), dir.join("out"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Setup);
    assert!(e.to_string().starts_with(&format!("{}: cannot read the script", dir.join("missing.rhai").display())), "{e}");

    let mut ctx = common::context(dir.join("x.rhai"), dir.join("out"));
    ctx.backend = "tpu".into();
    let e = run_inline("1", ctx).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Setup);
    assert!(e.message.contains("backend `tpu` is unknown; available backends: cpu"), "{e}");
}

#[test]
fn eval_is_disabled_and_undeclared_variables_fail_at_parse_time() {
    let dir = common::fresh("err-sandbox");
    let ctx = || common::context(dir.join("x.rhai"), dir.join("out"));
    let e = run_inline("let a = 1;\nprint(tset);\n", ctx()).unwrap_err();
    assert_eq!((e.kind, e.line), (ErrorKind::Parse, Some(2)), "{e}");
    let e = run_inline("eval(\"1 + 1\")", ctx()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Parse, "{e}");
}

#[test]
fn a_stop_request_ends_a_sweep_between_ensembles_and_keeps_its_rows() {
    let dir = common::fresh("err-cancel-sweep");
    let src = "sweep(#{ task: sparse_parity(4, 1), model: transformer(#{ d_model: 8, heads: 1, mlp: 0 }), T: [4, 6, 8], m: [16], seeds: [0, 1], max_steps: 20, eval_every: 10, test_samples: 32, name: \"cut\" });\n";
    let mut ctx = common::context(common::write(&dir, "cut.rhai", src), dir.join("out"));
    // Calls: the sweep's start, then one per ensemble (T = 4, 6, 8): stop before the second.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    ctx.health_check = Some(std::sync::Arc::new(move || if c.fetch_add(1, Ordering::Relaxed) >= 2 { Err("enough".into()) } else { Ok(()) }));
    let e = run_script(ctx).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e}");
    assert!(e.message.starts_with("stopped: enough during sweep cut; the finished ensembles are in "), "{e}");
    let runs = std::fs::read_to_string(dir.join("out/cut/runs.csv")).unwrap();
    let ts: Vec<&str> = runs.lines().skip(1).map(|l| l.split(',').nth(2).unwrap()).collect();
    assert_eq!(ts, ["4", "4"], "{runs}");
}
