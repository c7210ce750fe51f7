//! Member-by-member execution (`Backend::run_members`, taken by the CPU when an ensemble has
//! at least one member per thread) gives the bits of whole-ensemble launches and of each
//! member trained alone.

use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};

fn spec(seeds: Vec<u64>, model: ModelSpec) -> RunSpec {
    RunSpec {
        task: TaskSpec::new("sparse_parity", 12, 2),
        model,
        train: TrainConfig { samples: 200, batch: 16, max_steps: 40, eval_every: 20, test_samples: 100, ..TrainConfig::default() },
        seeds,
        samples: None,
    }
}

/// Every parameter's bits, and every curve point as (member, step, train loss bits, test
/// accuracy bits).
type Outcome = (Vec<Vec<u64>>, Vec<(usize, usize, u64, u64)>);

/// Train in a pool of `threads` threads.
fn run(threads: usize, spec: RunSpec) -> Outcome {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut be = CpuBackend::<f32>::new();
        let mut t = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
        let r = t.run(&mut |_| true).unwrap();
        let params = t.parameters().unwrap().iter().map(|p| p.iter().map(|v| v.to_bits()).collect()).collect();
        let curves = r.curves.iter().map(|c| (c.member, c.step, c.train_loss.to_bits(), c.test_accuracy.to_bits())).collect();
        (params, curves)
    })
}

#[test]
fn member_by_member_equals_whole_ensemble_launches_and_members_alone() {
    let transformer = ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, ..TransformerConfig::default() });
    for model in [transformer, ModelSpec::Mlp(MlpConfig { depth: 2, width: 24 })] {
        let seeds = vec![5, 6, 7, 8, 9];
        // 5 members: member by member with up to 5 threads, whole launches with 6 or more.
        let (by_member, curves) = run(1, spec(seeds.clone(), model.clone()));
        let want = (by_member.clone(), curves.clone());
        assert!(run(2, spec(seeds.clone(), model.clone())) == want, "member by member: 1 and 2 threads differ");
        assert!(run(6, spec(seeds.clone(), model.clone())) == want, "member by member and whole-ensemble launches differ");
        // Member 2 alone.
        let (alone, alone_curves) = run(1, spec(vec![seeds[2]], model.clone()));
        for (pt, pa) in by_member.iter().zip(&alone) {
            let n = pa.len();
            assert!(pt[2 * n..3 * n] == pa[..], "member 2's parameters differ from member 2 alone");
        }
        let mine: Vec<_> = curves.iter().filter(|c| c.0 == 2).map(|c| (c.1, c.2, c.3)).collect();
        assert_eq!(mine, alone_curves.iter().map(|c| (c.1, c.2, c.3)).collect::<Vec<_>>(), "member 2's curve");
        // Members differ (the comparisons above can fail).
        assert_ne!(&by_member[0][..by_member[0].len() / 5], &by_member[0][by_member[0].len() / 5..2 * by_member[0].len() / 5]);
    }
}
