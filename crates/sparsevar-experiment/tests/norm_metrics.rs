//! The capacity-bound norms in metrics.csv, summaries and runs.csv are those of each
//! member's own parameters, and older files without the columns still load.

use sparsevar_core::graph::ParamId;
use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::norms::capacity_norms;
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::results::{MemberSummary, parse_csv};
use sparsevar_experiment::train::{CurvePoint, MemberResult, RunSpec, Trainer};
use std::path::Path;

fn spec(model: ModelSpec) -> RunSpec {
    RunSpec {
        task: TaskSpec::new("sparse_parity", 6, 2),
        model,
        train: TrainConfig { samples: 64, batch: 8, max_steps: 30, eval_every: 10, test_samples: 40, ..TrainConfig::default() },
        seeds: vec![4, 9],
        samples: None,
    }
}

#[test]
fn each_evaluation_records_the_norms_of_that_members_parameters() {
    let model = ModelSpec::Transformer(TransformerConfig { d_model: 8, heads: 2, mlp: 1, ..TransformerConfig::default() });
    let mut be = CpuBackend::<f64>::new();
    let mut t = Trainer::new(&mut be, spec(model), &Registry::builtin()).unwrap();
    let layout = t.model.norm_layout().expect("a transformer has attention norms");
    let result = t.run(&mut |_| true).unwrap();
    let params = t.parameters().unwrap();
    for m in 0..2 {
        let value = |id: ParamId| -> &[f64] {
            let n = params[id.0].len() / 2;
            &params[id.0][m * n..(m + 1) * n]
        };
        let direct = capacity_norms(&layout, &value);
        let last = result.curves.iter().filter(|c| c.member == m).max_by_key(|c| c.step).unwrap();
        let close = |a: Option<f64>, b: f64, what: &str| {
            let a = a.unwrap_or_else(|| panic!("{what} missing"));
            assert!((a - b).abs() <= 1e-12 * b.abs(), "member {m} {what}: {a} vs {b}");
        };
        close(last.qk_spectral, direct.qk_spectral, "qk_spectral");
        close(last.qk_frobenius, direct.qk_frobenius, "qk_frobenius");
        close(last.v_norm, direct.v, "v_norm");
        close(last.o_norm, direct.o, "o_norm");
        close(last.tok_norm, direct.tok, "tok_norm");
        close(last.pos_norm, direct.pos, "pos_norm");
        close(last.norm_bound, direct.bound, "norm_bound");
        assert_eq!(result.members[m].norms.as_ref(), Some(&direct), "member {m}: summary norms are the final ones");
        // Training moves the parameters: the first evaluation's norms differ from the last.
        let first = result.curves.iter().filter(|c| c.member == m).min_by_key(|c| c.step).unwrap();
        assert_ne!(first.norm_bound, last.norm_bound);
    }
    // The two members have their own norms.
    assert_ne!(result.members[0].norms, result.members[1].norms);
    // Through summary.json and back.
    let s = MemberSummary::from(&result.members[0]);
    let back: MemberSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    let (a, b) = (MemberResult::from(back).norms.unwrap(), result.members[0].norms.clone().unwrap());
    // JSON keeps 17 significant digits, not always the last bit.
    assert!((a.bound - b.bound).abs() <= 1e-15 * b.bound && (a.qk_spectral - b.qk_spectral).abs() <= 1e-15 * b.qk_spectral, "{a:?} vs {b:?}");
}

#[test]
fn a_model_without_attention_has_no_norm_columns() {
    let mut be = CpuBackend::<f64>::new();
    let mut t = Trainer::new(&mut be, spec(ModelSpec::Mlp(MlpConfig { depth: 1, width: 8 })), &Registry::builtin()).unwrap();
    let result = t.run(&mut |_| true).unwrap();
    assert!(result.curves.iter().all(|c| c.norm_bound.is_none() && c.qk_spectral.is_none()));
    assert!(result.members.iter().all(|m| m.norms.is_none()));
}

#[test]
fn metrics_csv_without_norm_columns_still_loads() {
    let old = "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s\n0,4,10,0.5,0.6,0.75,0.3\n";
    let rows: Vec<CurvePoint> = parse_csv(Path::new("metrics.csv"), old).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].best_mass_on_s, Some(0.3));
    assert_eq!(rows[0].norm_bound, None);
    // And a new row round-trips its norm columns.
    let new = CurvePoint { norm_bound: Some(2.5), qk_spectral: Some(0.25), ..rows[0].clone() };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(&new).unwrap();
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    let back: Vec<CurvePoint> = parse_csv(Path::new("metrics.csv"), &text).unwrap();
    assert_eq!(back[0], new);
}
