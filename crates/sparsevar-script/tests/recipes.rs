//! `sweep(#{..})` takes `recipes` and `patience` like the YAML sweep section: its checks
//! reach the script as an error at the call.

mod common;

use sparsevar_script::run_inline;

#[test]
fn sweep_takes_recipes_and_patience_from_the_sweep_section() {
    let dir = common::fresh("script-recipes");
    let ctx = || common::context(dir.join("inline.rhai"), dir.join("out"));
    let learner = "task: sparse_parity(8, 2), model: transformer(), T: [8], m: [16], learner: \"best_of_k\", validation: 0.25";
    let cases = [
        (format!("sweep(#{{{learner}, k: 4, recipes: [#{{lr: 0.001}}, #{{lr: -1.0}}]}})"), "sweep.recipes[1].lr = -1 must be a positive number"),
        (format!("sweep(#{{{learner}, k: 3, recipes: [#{{lr: 0.001}}, #{{weight_decay: 1.0}}]}})"), "sweep.k = 3 is not a multiple of the 2 sweep.recipes"),
        (format!("sweep(#{{{learner}, k: 2, stop: \"budget\", patience: 3}})"), "sweep.patience applies to a learner's stop: validation or fit"),
    ];
    for (code, want) in cases {
        let src = format!("let x = 0;\n{code};\n");
        let e = run_inline(&src, ctx()).expect_err(&code);
        assert!(e.message.contains(want), "{code}: expected `{want}` in\n{e}");
        assert_eq!(e.line, Some(2), "{code}: {e}");
    }
}
