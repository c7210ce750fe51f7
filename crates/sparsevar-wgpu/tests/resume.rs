//! Checkpoints on wgpu: a trainer restored from a checkpoint taken on the GPU ends exactly
//! where the uninterrupted GPU run ends (results, curves, parameters), across members
//! leaving the ensemble. The checkpoint goes through the backend's ordinary reads and
//! writes (f32 values round-trip through f64 exactly).

#[macro_use]
mod common;

use common::wgpu_or_skip;
use sparsevar_core::model::{ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_experiment::checkpoint::Checkpoint;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};

fn resuming_on_wgpu_ends_where_the_run_ends() {
    let Some(mut gpu) = wgpu_or_skip("resuming_on_wgpu_ends_where_the_run_ends") else { return };
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, ..TransformerConfig::default() }),
        train: TrainConfig { samples: 256, batch: 32, max_steps: 300, lr: 3e-3, eval_every: 25, test_samples: 128, ..TrainConfig::default() },
        seeds: vec![0, 1, 2, 5],
        samples: Some(vec![256, 200, 256, 64]),
    };
    let bits = |p: Vec<Vec<f64>>| p.into_iter().map(|v| v.into_iter().map(f64::to_bits).collect::<Vec<_>>()).collect::<Vec<_>>();
    let mut cks: Vec<Checkpoint> = Vec::new();
    let (whole, whole_params) = {
        let mut t = Trainer::new(&mut gpu, spec.clone(), &Registry::builtin()).unwrap();
        let r = t
            .run_checkpointed(&mut |_| true, 50, &mut |ck| {
                cks.push(ck);
                Ok(())
            })
            .unwrap();
        (r, bits(t.parameters().unwrap()))
    };
    // Resume from the middle checkpoints, one of them after a member left if any did.
    let mid = &cks[..cks.len() - 1];
    assert!(mid.len() >= 2, "{} checkpoints", cks.len());
    for ck in mid {
        let mut t = Trainer::new(&mut gpu, spec.clone(), &Registry::builtin()).unwrap();
        t.restore(ck).unwrap();
        let r = t.run(&mut |_| true).unwrap();
        let at = ck.state.step;
        assert_eq!(format!("{:?}", r.members), format!("{:?}", whole.members), "members, resumed at step {at}");
        assert_eq!(format!("{:?}", r.curves), format!("{:?}", whole.curves), "curves, resumed at step {at}");
        assert_eq!(bits(t.parameters().unwrap()), whole_params, "parameters, resumed at step {at}");
    }
}

fn main() -> std::process::ExitCode {
    common::harness(tests![resuming_on_wgpu_ends_where_the_run_ends], &[], &[])
}
