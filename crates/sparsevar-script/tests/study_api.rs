//! The script API the "Is it log T?" study needs: fits of any series, Markdown tables, the
//! learner, budget and i.i.d. keys of `sweep`, with bad input an error at the call's position.

mod common;

use sparsevar_script::run_inline;

#[test]
fn fit_scaling_recovers_an_exponent_and_leaves_out_missing_values() {
    let dir = common::fresh("study-fit");
    let src = r#"
let f = fit_scaling([8, 16, 32, 64], [3.0 * 8 ** 1.5, (), 3.0 * 32 ** 1.5, 3.0 * 64 ** 1.5]);
save_json(#{ alpha: f.power.b, c: f.power.a, r2: f.power.r2, ratio: f.ratio, none: fit_scaling([8, 16], [5, ()]) }, "fit.json");
save_markdown([#{ a: 1, b: () }, #{ a: "x|y", b: 2.5 }], "t.md", ["a", "b"]);
"#;
    run_inline(src, common::context(dir.join("fit.rhai"), dir.join("out"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/fit.json")).unwrap()).unwrap();
    assert!((v["alpha"].as_f64().unwrap() - 1.5).abs() < 1e-9 && (v["c"].as_f64().unwrap() - 3.0).abs() < 1e-9, "{v}");
    assert!((v["ratio"].as_f64().unwrap() - 8f64.powf(1.5)).abs() < 1e-6, "{v}");
    assert!(v["none"].is_null(), "one value left: no fit: {v}");
    assert_eq!(std::fs::read_to_string(dir.join("out/t.md")).unwrap(), "| a | b |\n|---|---|\n| 1 | — |\n| x\\|y | 2.5 |\n");
}

#[test]
fn bad_study_input_is_an_error_at_the_call() {
    let dir = common::fresh("study-errors");
    let ctx = || common::context(dir.join("inline.rhai"), dir.join("out"));
    let cases = [
        ("fit_scaling([8, 16], [1.0])", "fit_scaling: T has 2 entries but values has 1"),
        ("fit_scaling([8, 0], [1.0, 2.0])", "fit_scaling: T[1] = 0 must be a positive integer"),
        ("fit_scaling([8, 16], [1.0, -2.0])", "fit_scaling: values[1] = -2 must be a positive number"),
        ("fit_scaling([8, 16], [1.0, \"x\"])", "fit_scaling: values[1] = x must be a number or ()"),
        ("save_markdown([1], \"t.md\", [\"a\"])", "save_markdown: row 0 is a i64, not a map"),
        ("sweep(#{task: sparse_parity(8, 2), model: mlp(), T: [8], online: true, m: [16, 32]})", "sweep.m is set, but train.online: true"),
        ("sweep(#{task: sparse_parity(8, 2), model: transformer(), T: [8], learner: \"best_of_k\", k: 0})", "sweep.k"),
        ("sweep(#{task: sparse_parity(8, 2), model: transformer(), T: [8], max_norm: #{qk: -1.0}})", "train.max_norm.qk"),
        ("sweep(#{task: sparse_parity(8, 2), model: transformer(), T: [8], budgets: [200, 100]})", "sweep.budgets"),
    ];
    for (code, want) in cases {
        let src = format!("let x = 0;\n{code};\n");
        let e = run_inline(&src, ctx()).expect_err(code);
        assert!(e.message.contains(want), "{code}: expected `{want}` in\n{e}");
        assert!(!e.message.contains('\n'), "{code}: one line: {e}");
        assert_eq!(e.line, Some(2), "{code}: {e}");
        assert!(e.column.is_some(), "{code}: {e}");
    }
}
