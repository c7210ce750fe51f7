//! `load_model`: a script reopens a member it trained from its weights file and gets the
//! same accuracy, logits and attention the trainer saw; bad arguments are errors at the call.

mod common;

use sparsevar_script::run_inline;

#[test]
fn load_model_evaluates_and_attends_like_the_trained_member() {
    let dir = common::fresh("saved-load");
    let src = r#"
let r = train(sparse_parity(8, 2), transformer(#{d_model: 16, heads: 2, mlp: 2}),
              #{samples: 256, batch: 32, max_steps: 600, lr: 0.01, eval_every: 50, test_samples: 256, seeds: [4], name: "tiny"});
let m = load_model(r, 4);
let e = m.evaluate(300);
let same = load_model("tiny", 4).evaluate(300);
let w = m.attention("01100110");
let given = m.evaluate([[0, 1, 1, 0, 0, 1, 1, 0], "10101010"]);
let fig = plot_attention(m, [0, 1, 1, 0, 0, 1, 1, 0], "attn.png");
print(`${r.members[0].learned} ${r.members[0].test_accuracy} ${e.accuracy}`);
print(`${e.logits.len()} ${e.logits[0].len()} ${e.logits == same.logits}`);
print(`${w.len()} ${w[0].len()} ${w[0][0].len()}`);
print(`${w[0][0].reduce(|s, x| s + x, 0.0)}`);
print(`${given.logits.len()} ${given.inputs[1]} ${m.seed} ${m.step == r.members[0].step} ${m.relevant == r.members[0].S}`);
print(`${fig.cells.len()}`);
let file = load_model("tiny/weights/seed-4.safetensors");
print(`${file.seed} ${file.evaluate(300).logits == e.logits}`);
"#;
    let run = run_inline(src, common::context(dir.join("x.rhai"), dir.join("out"))).unwrap();
    // The script's prints, without the line `train` says.
    let out: Vec<&String> = run.output.iter().filter(|l| !l.starts_with("trained ")).collect();
    let f: Vec<&str> = out[0].split(' ').collect();
    assert_eq!(f[0], "true", "{out:?}");
    let (trained, reopened): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    assert!(reopened >= 0.95 && (trained - reopened).abs() < 0.05, "{out:?}");
    assert_eq!(out[1], "300 2 true", "fresh samples are the same for the same seed; two classes");
    assert_eq!(out[2], "1 2 9", "one layer, two heads, CLS + 8 positions");
    let total: f64 = out[3].parse().unwrap();
    assert!((total - 1.0).abs() < 1e-5, "softmax weights sum to 1: {total}");
    assert_eq!(out[4], "2 [1, 0, 1, 0, 1, 0, 1, 0] 4 true true");
    assert_eq!(out[5], "18", "2 heads × 9 positions");
    assert_eq!(out[6], "4 true", "one weights file, from its own metadata: the same model");
    assert!(dir.join("out/attn.png").is_file());
}

#[test]
fn load_model_errors_name_the_problem() {
    let dir = common::fresh("saved-errors");
    let train = r#"let r = train(sparse_parity(8, 2), transformer(#{d_model: 16, heads: 2, mlp: 2}),
              #{samples: 64, batch: 16, max_steps: 20, eval_every: 10, test_samples: 32, seeds: [1], name: "tiny"});
"#;
    for (call, want) in [
        ("load_model(r, 7)", "no member with seed 7"),
        ("load_model(\"nowhere\", 1)", "holds no config.yaml"),
        ("load_model(r, 1).attention([0, 1])", "2 tokens, the run's task has T = 8"),
        ("load_model(r, 1).evaluate([[0, 1, 2, 0, 0, 0, 0, 0]])", "input 0: `2` is not a token"),
        ("load_model(r, 1).evaluate(0)", "n must be at least 1"),
        ("load_model(\"tiny/weights/none.safetensors\")", "is not a file"),
    ] {
        let err = run_inline(&format!("{train}{call};"), common::context(dir.join("x.rhai"), dir.join(format!("out-{}", call.len())))).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("x.rhai:3:"), "{call}: {err}");
    }
}
