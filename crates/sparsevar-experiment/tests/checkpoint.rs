//! Checkpoints: a trainer restored from any checkpoint of a run ends exactly where the run
//! ends (results, curves, parameters, optimizer state), across members leaving the
//! ensemble, optimizers, schedules and online data; a checkpoint of another shape is refused.

use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::optim::{OptimizerKind, Schedule};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::checkpoint::Checkpoint;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{EnsembleResult, RunSpec, TrainError, Trainer};

fn transformer() -> ModelSpec {
    ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, ..TransformerConfig::default() })
}

/// Train `spec` to the end, keeping every checkpoint taken each `every` steps.
fn full_run(spec: &RunSpec, every: usize) -> (EnsembleResult, Vec<Vec<f64>>, Vec<Checkpoint>) {
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec.clone(), &Registry::builtin()).unwrap();
    let mut cks = Vec::new();
    let r = t
        .run_checkpointed(&mut |_| true, every, &mut |ck| {
            cks.push(ck);
            Ok(())
        })
        .unwrap();
    let p = t.parameters().unwrap();
    (r, p, cks)
}

/// Restore `ck` into a fresh trainer and train to the end.
fn resumed(spec: &RunSpec, ck: &Checkpoint, every: usize) -> (EnsembleResult, Vec<Vec<f64>>, Checkpoint) {
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec.clone(), &Registry::builtin()).unwrap();
    t.restore(ck).unwrap();
    let mut last = None;
    let r = t
        .run_checkpointed(&mut |_| true, every, &mut |ck| {
            last = Some(ck);
            Ok(())
        })
        .unwrap();
    let p = t.parameters().unwrap();
    (r, p, last.expect("a final checkpoint"))
}

/// Equal bit for bit (NaN included): results and curves through their Debug text.
fn assert_same(a: &(EnsembleResult, Vec<Vec<f64>>), b: &(EnsembleResult, Vec<Vec<f64>>), what: &str) {
    assert_eq!(format!("{:?}", a.0.members), format!("{:?}", b.0.members), "{what}: members");
    assert_eq!(format!("{:?}", a.0.curves), format!("{:?}", b.0.curves), "{what}: curves");
    assert_eq!(a.0.steps, b.0.steps, "{what}: steps");
    let bits = |p: &Vec<Vec<f64>>| p.iter().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(bits(&a.1), bits(&b.1), "{what}: parameters");
}

fn check_every_resume_point(spec: RunSpec, every: usize, what: &str) -> Vec<Checkpoint> {
    let (result, params, cks) = full_run(&spec, every);
    assert!(cks.len() >= 3, "{what}: {} checkpoints", cks.len());
    let last = cks.last().unwrap().clone();
    for ck in &cks[..cks.len() - 1] {
        let (r, p, final_ck) = resumed(&spec, ck, every);
        assert_same(&(result.clone(), params.clone()), &(r, p), &format!("{what}, resumed at step {}", ck.state.step));
        // The final checkpoints agree too, optimizer moments included (only the times differ).
        assert_eq!(final_ck.tensors.len(), last.tensors.len());
        for (a, b) in final_ck.tensors.iter().zip(&last.tensors) {
            assert_eq!((&a.0, &a.1), (&b.0, &b.1));
            assert!(a.2.iter().zip(&b.2).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: tensor {}", a.0);
        }
    }
    cks
}

#[test]
fn resuming_from_any_checkpoint_ends_where_the_run_ends() {
    // Seeds that learn at different steps: checkpoints before, between and after members
    // leave the ensemble.
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: transformer(),
        train: TrainConfig { samples: 256, batch: 32, max_steps: 400, lr: 3e-3, eval_every: 25, test_samples: 128, ..TrainConfig::default() },
        seeds: vec![0, 1, 2, 5],
        samples: Some(vec![256, 200, 256, 64]),
    };
    let cks = check_every_resume_point(spec, 40, "adamw transformer");
    let active: Vec<usize> = cks.iter().map(|c| c.state.active.len()).collect();
    assert!(active[..active.len() - 1].iter().any(|&a| a > 0 && a < 4), "no resume point after a member left the ensemble: {active:?}");
    // A finished member's parameters travel with the checkpoint.
    assert!(cks.iter().any(|c| c.tensors.iter().any(|t| t.0.starts_with("finished."))));
}

#[test]
fn resuming_works_for_sgd_cosine_schedules_and_online_data() {
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 10, 2),
        model: ModelSpec::Mlp(MlpConfig { width: 32, ..MlpConfig::default() }),
        train: TrainConfig {
            online: true,
            batch: 16,
            max_steps: 120,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            weight_decay: Some(1e-3),
            schedule: Schedule::Cosine,
            warmup_steps: 20,
            eval_every: 15,
            test_samples: 64,
            ..TrainConfig::default()
        },
        seeds: vec![3, 4],
        samples: None,
    };
    check_every_resume_point(spec, 25, "sgd mlp online");
}

#[test]
fn a_checkpoint_of_another_shape_is_refused() {
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: transformer(),
        train: TrainConfig { samples: 128, batch: 16, max_steps: 60, eval_every: 20, test_samples: 64, ..TrainConfig::default() },
        seeds: vec![0, 1],
        samples: None,
    };
    let (_, _, cks) = full_run(&spec, 20);
    let ck = &cks[0];
    let refuse = |spec: RunSpec, ck: &Checkpoint| -> String {
        let mut be = CpuBackend::<f32>::new();
        let mut t = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
        match t.restore(ck) {
            Err(e @ TrainError::Setup(_)) => e.to_string(),
            other => panic!("restored: {other:?}"),
        }
    };
    let wider = RunSpec { model: ModelSpec::Transformer(TransformerConfig { d_model: 32, heads: 2, mlp: 2, ..TransformerConfig::default() }), ..spec.clone() };
    assert!(refuse(wider, ck).contains("has shape"));
    let three = RunSpec { seeds: vec![0, 1, 2], ..spec.clone() };
    assert!(refuse(three, ck).contains("members"));
    let fewer_samples = RunSpec { samples: Some(vec![100, 128]), ..spec.clone() };
    assert!(refuse(fewer_samples, ck).contains("batch order"));
    let sgd = RunSpec { train: TrainConfig { optimizer: OptimizerKind::Sgd, weight_decay: Some(0.0), ..spec.train.clone() }, ..spec.clone() };
    // SGD keeps one buffer per parameter, Adam two: the names tell them apart.
    let mut adam_ck = ck.clone();
    adam_ck.tensors.retain(|t| !t.0.ends_with(".0") || !t.0.starts_with("optim."));
    assert!(refuse(sgd, &adam_ck).contains("no tensor optim."));
}
