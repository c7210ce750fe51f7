//! Ensembles and determinism: R members trained together equal each trained alone, the same
//! seed gives bit-identical results with 1 or 2 threads, and training really learns.

use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{EnsembleResult, RunSpec, Trainer};

fn small_spec(seeds: Vec<u64>, model: ModelSpec) -> RunSpec {
    RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model,
        train: TrainConfig { samples: 200, batch: 16, max_steps: 60, eval_every: 20, test_samples: 100, ..TrainConfig::default() },
        seeds,
        samples: None,
    }
}

fn small_transformer() -> ModelSpec {
    ModelSpec::Transformer(TransformerConfig { d_model: 16, heads: 2, mlp: 2, ..TransformerConfig::default() })
}

/// Train and return the result and every parameter after training.
fn train(spec: RunSpec) -> (EnsembleResult, Vec<Vec<f64>>) {
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
    let r = t.run(&mut |_| true).unwrap();
    let p = t.parameters().unwrap();
    (r, p)
}

/// Member m's slice of a parameter stored [R, ..].
fn member(p: &[f64], r: usize, m: usize) -> &[f64] {
    let n = p.len() / r;
    &p[m * n..(m + 1) * n]
}

#[test]
fn members_trained_together_equal_members_trained_alone() {
    for model in [small_transformer(), ModelSpec::Mlp(MlpConfig { depth: 1, width: 12 })] {
        let seeds = vec![3, 11, 42];
        let (together, params) = train(small_spec(seeds.clone(), model.clone()));
        for (m, &seed) in seeds.iter().enumerate() {
            let (alone, alone_params) = train(small_spec(vec![seed], model.clone()));
            assert_eq!(together.members[m], alone.members[0], "member {m} (seed {seed}) summary");
            let curve_t: Vec<_> = together.curves.iter().filter(|c| c.member == m).map(|c| (c.step, c.train_loss.to_bits(), c.test_accuracy)).collect();
            let curve_a: Vec<_> = alone.curves.iter().map(|c| (c.step, c.train_loss.to_bits(), c.test_accuracy)).collect();
            assert_eq!(curve_t, curve_a, "member {m} curve");
            for (pt, pa) in params.iter().zip(&alone_params) {
                assert_eq!(member(pt, 3, m), &pa[..], "member {m} parameters differ bitwise");
            }
        }
    }
}

#[test]
fn same_seed_same_bits_with_one_or_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut spec = small_spec(vec![0, 1], small_transformer());
            // Big enough that the CPU kernels take their parallel paths.
            spec.train.batch = 64;
            spec.task = TaskSpec::new("sparse_parity", 40, 2);
            train(spec)
        })
    };
    let (r1, p1) = run(1);
    let (r2, p2) = run(2);
    assert_eq!(r1.members, r2.members);
    assert_eq!(p1, p2, "parameters differ between 1 and 2 threads");
    // Different seeds do give different numbers (the comparison above can fail).
    assert_ne!(member(&p1[0], 2, 0), member(&p1[0], 2, 1));
}

#[test]
fn a_small_parity_is_learned_and_attention_finds_s() {
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: small_transformer(),
        train: TrainConfig { samples: 512, batch: 32, max_steps: 3000, eval_every: 50, test_samples: 256, lr: 3e-3, ..TrainConfig::default() },
        seeds: vec![0, 1],
        samples: None,
    };
    let (r, _) = train(spec);
    for m in &r.members {
        assert!(m.learned, "seed {} did not learn: {m:?}", m.seed);
        assert!(m.test_accuracy >= 0.99);
        let a = m.attention.as_ref().unwrap();
        let best = a.mass_on_s[a.best_head.0][a.best_head.1];
        assert!(best >= 0.5, "seed {}: best head mass on S {best}", m.seed);
    }
}

#[test]
fn a_diverging_member_is_marked_and_the_others_go_on() {
    // An absurd learning rate blows up SGD; the run must report divergence, not crash.
    let mut spec = small_spec(vec![0, 1], ModelSpec::Mlp(MlpConfig { depth: 2, width: 32 }));
    spec.train.optimizer = sparsevar_core::optim::OptimizerKind::Sgd;
    spec.train.lr = 1e6;
    spec.train.clip = None;
    let (r, _) = train(spec);
    assert!(r.members.iter().all(|m| m.diverged && !m.learned), "{:?}", r.members);
    assert!(r.members.iter().all(|m| m.steps_trained == 20), "stopped at the first evaluation");
}

#[test]
fn a_member_that_turns_nan_is_marked_diverged_and_the_others_learn() {
    let spec = RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: small_transformer(),
        train: TrainConfig { samples: 512, batch: 32, max_steps: 3000, eval_every: 50, test_samples: 256, lr: 3e-3, ..TrainConfig::default() },
        seeds: vec![0, 1],
        samples: None,
    };
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
    for _ in 0..10 {
        t.step().unwrap();
    }
    // Poison member 0's token embedding.
    let mut p = t.parameters().unwrap();
    let half = p[0].len() / 2;
    p[0][..half].iter_mut().for_each(|x| *x = f64::NAN);
    t.write_parameter(0, &p[0]).unwrap();
    let r = t.run(&mut |_| true).unwrap();
    assert!(r.members[0].diverged && !r.members[0].learned, "{:?}", r.members[0]);
    assert_eq!(r.members[0].steps_trained, 50, "found at the first evaluation");
    assert!(r.members[1].learned && !r.members[1].diverged, "{:?}", r.members[1]);
}

#[test]
fn members_that_finish_leave_the_ensemble_and_the_rest_go_on_unchanged() {
    // Member 1 has too few samples to learn in the budget; members 0 and 2 learn at
    // different steps, so the ensemble shrinks twice while member 1 trains on.
    let spec = |seeds: Vec<u64>, samples: Vec<usize>| RunSpec {
        task: TaskSpec::new("sparse_parity", 8, 2),
        model: small_transformer(),
        train: TrainConfig { batch: 32, max_steps: 1500, eval_every: 50, test_samples: 256, lr: 3e-3, ..TrainConfig::default() },
        seeds,
        samples: Some(samples),
    };
    let seeds = vec![0, 1, 2];
    let samples = vec![512, 6, 384];
    let mut be = CpuBackend::<f32>::new();
    let mut t = Trainer::new(&mut be, spec(seeds.clone(), samples.clone()), &Registry::builtin()).unwrap();
    let mut active_sizes = Vec::new();
    let together = t.run(&mut |p| {
        let sparsevar_experiment::train::Progress::Evaluated { points, .. } = p;
        active_sizes.push(points.len());
        true
    });
    let together = together.unwrap();
    let params = t.parameters().unwrap();
    let m = &together.members;
    assert!(m[0].learned && m[2].learned && !m[1].learned, "{m:?}");
    assert_eq!(m[1].steps_trained, 1500);
    assert_ne!(m[0].step, m[2].step, "the two learners should leave at different evaluations");
    assert!(active_sizes.contains(&1), "the ensemble never shrank to the one unfinished member: {active_sizes:?}");
    assert_eq!(t.active_members(), &[1usize][..]);
    for (i, &seed) in seeds.iter().enumerate() {
        let mut be = CpuBackend::<f32>::new();
        let mut alone = Trainer::new(&mut be, spec(vec![seed], vec![samples[i]]), &Registry::builtin()).unwrap();
        let a = alone.run(&mut |_| true).unwrap();
        let alone_params = alone.parameters().unwrap();
        assert_eq!(together.members[i], a.members[0], "member {i}");
        let curve_t: Vec<_> = together.curves.iter().filter(|c| c.member == i).map(|c| (c.step, c.train_loss.to_bits(), c.test_accuracy)).collect();
        let curve_a: Vec<_> = a.curves.iter().map(|c| (c.step, c.train_loss.to_bits(), c.test_accuracy)).collect();
        assert_eq!(curve_t, curve_a, "member {i} curve");
        for (pt, pa) in params.iter().zip(&alone_params) {
            assert_eq!(member(pt, 3, i), &pa[..], "member {i}: parameters at its finish differ bitwise from training it alone");
        }
    }
}
