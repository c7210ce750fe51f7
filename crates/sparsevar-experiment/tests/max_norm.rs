//! Norm-bounded training (`train.max_norm`): after every step each bounded group of each
//! member lies within its bound, unbounded groups are left alone, a bound that is never
//! reached changes nothing, and bad bounds are one-line errors naming the key.

use sparsevar_core::backend::Backend;
use sparsevar_core::graph::ParamId;
use sparsevar_core::model::{ModelSpec, TransformerConfig};
use sparsevar_core::norms::{MaxNorm, capacity_norms};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::{ExperimentConfig, TrainConfig};
use sparsevar_experiment::train::{EnsembleResult, RunSpec, Trainer};

fn spec(max_norm: MaxNorm) -> RunSpec {
    RunSpec {
        task: TaskSpec::new("sparse_parity", 6, 2),
        model: ModelSpec::Transformer(TransformerConfig { d_model: 8, heads: 2, mlp: 1, ..TransformerConfig::default() }),
        // A large learning rate, so the norms grow past small bounds within a few steps.
        train: TrainConfig { samples: 64, batch: 8, max_steps: 40, eval_every: 10, test_samples: 40, lr: 0.05, max_norm, ..TrainConfig::default() },
        seeds: vec![2, 5],
        samples: None,
    }
}

fn train(be: &mut dyn Backend, max_norm: MaxNorm) -> (EnsembleResult, Vec<Vec<f64>>, sparsevar_core::norms::NormLayout) {
    let mut t = Trainer::new(be, spec(max_norm), &Registry::builtin()).unwrap();
    let layout = t.model.norm_layout().unwrap();
    let r = t.run(&mut |_| true).unwrap();
    (r, t.parameters().unwrap(), layout)
}

fn norm_of(params: &[Vec<f64>], ids: &[ParamId], member: usize, members: usize) -> f64 {
    ids.iter()
        .flat_map(|id| {
            let p = &params[id.0];
            let n = p.len() / members;
            p[member * n..(member + 1) * n].iter()
        })
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
}

#[test]
fn bounded_groups_stay_within_their_bound_and_the_others_are_untouched() {
    let bound = MaxNorm { qk: Some(0.4), v: Some(0.5), o: None, embed: Some(0.3) };
    let (free_run, free, layout) = train(&mut CpuBackend::<f64>::new(), MaxNorm::default());
    let (run, bounded, _) = train(&mut CpuBackend::<f64>::new(), bound.clone());
    let l = &layout.layers[0];
    for m in 0..2 {
        // Without the bound these groups grow past it (so the projection is really active).
        assert!(norm_of(&free, &[l.v.0, l.v.1], m, 2) > 0.5 && norm_of(&free, &[layout.tok, layout.pos.unwrap()], m, 2) > 0.3);
        let within = |ids: &[ParamId], b: f64, what: &str| {
            let n = norm_of(&bounded, ids, m, 2);
            assert!(n <= b * (1.0 + 1e-6), "member {m} {what}: {n} > {b}");
            // Active bounds hold the group on the sphere.
            assert!(n >= b * (1.0 - 1e-6), "member {m} {what}: {n} well inside {b}, the bound was not active");
        };
        within(&[l.q.0, l.q.1], 0.4f64.sqrt(), "[W_Q; b_Q]");
        within(&[l.k.0, l.k.1], 0.4f64.sqrt(), "[W_K; b_K]");
        within(&[l.v.0, l.v.1], 0.5, "[W_V; b_V]");
        within(&[layout.tok, layout.pos.unwrap()], 0.3, "[E_tok; E_pos]");
        // The recorded metrics obey the bounds at every evaluation.
        for c in run.curves.iter().filter(|c| c.member == m) {
            assert!(c.qk_frobenius.unwrap() <= 0.4 * (1.0 + 1e-6), "{c:?}");
            assert!(c.v_norm.unwrap() <= 0.5 * (1.0 + 1e-6), "{c:?}");
            let embed = c.tok_norm.unwrap().hypot(c.pos_norm.unwrap());
            assert!(embed <= 0.3 * (1.0 + 1e-6), "{c:?}");
        }
        let value = |id: ParamId| -> &[f64] {
            let n = bounded[id.0].len() / 2;
            &bounded[id.0][m * n..(m + 1) * n]
        };
        assert!(capacity_norms(&layout, &value).qk_frobenius <= 0.4 * (1.0 + 1e-6));
    }
    let _ = free_run;
}

#[test]
fn a_bound_that_is_never_reached_changes_nothing() {
    let loose = MaxNorm { qk: Some(1e6), v: Some(1e6), o: Some(1e6), embed: Some(1e6) };
    let (a, pa, _) = train(&mut CpuBackend::<f32>::new(), MaxNorm::default());
    let (b, pb, _) = train(&mut CpuBackend::<f32>::new(), loose);
    assert_eq!(a.members, b.members);
    assert_eq!(pa, pb, "parameters differ bitwise under a bound that was never reached");
}

#[test]
fn bad_bounds_are_one_line_errors_naming_the_key() {
    let reg = Registry::builtin();
    let parse = |train: &str| ExperimentConfig::parse(&format!("task: {{kind: sparse_parity, T: 8, s: 2}}\ntrain:\n{train}\n"), "t.yaml", &[], &reg);
    let err = |train: &str| parse(train).unwrap_err().to_string();
    for (train, key) in [
        ("  max_norm: {qk: -1}", "train.max_norm.qk = -1"),
        ("  max_norm: {v: .nan}", "train.max_norm.v = NaN"),
        ("  max_norm: {embed: 0}", "train.max_norm.embed = 0"),
        ("  max_norm: {o: .inf}", "train.max_norm.o = inf"),
    ] {
        let e = err(train);
        assert!(e.contains(key) && e.contains("positive"), "{train}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = err("  max_norm: {qkv: 1}");
    assert!(e.contains("train.max_norm: unknown field `qkv`, expected one of `qk`, `v`, `o`, `embed`") && e.contains("line 3"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    // An MLP has no attention parameters to bound.
    let e = ExperimentConfig::parse("task: {kind: sparse_parity, T: 8, s: 2}\nmodel: {kind: mlp}\ntrain: {max_norm: {v: 1}}\n", "t.yaml", &[], &reg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.max_norm") && e.contains("mlp"), "{e}");
    // null is no bound; and through an override.
    let cfg = parse("  max_norm: {qk: null, v: 2}").unwrap();
    assert_eq!(cfg.train.max_norm, MaxNorm { v: Some(2.0), ..MaxNorm::default() });
    let e = ExperimentConfig::parse("task: {kind: sparse_parity, T: 8, s: 2}\n", "t.yaml", &["train.max_norm.o=-2".into()], &reg).unwrap_err().to_string();
    assert!(e.contains("train.max_norm.o = -2"), "{e}");
    // The unbounded default is not written, so older resolved configs read the same.
    assert!(!parse("  lr: 0.001").unwrap().to_yaml().contains("max_norm"));
    assert!(cfg.to_yaml().contains("max_norm"));
}
