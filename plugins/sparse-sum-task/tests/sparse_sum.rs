//! `sparse_sum`: its labels, its distribution, the parity property it keeps, its config
//! errors, and that a transformer learns it (linked statically; the loader's tests load it
//! as a shared library).

use sparse_sum_task::{KIND, SparseSum, build};
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};
use sparsevar_plugin::core::model::{ModelSpec, TransformerConfig};
use sparsevar_plugin::core::registry::Registry;
use sparsevar_plugin::core::task::{Dataset, build_task};
use sparsevar_plugin::{Pcg32, PluginHost, Task, TaskSpec, streams};

fn spec(t: usize, s: usize, q: usize) -> TaskSpec {
    let mut sp = TaskSpec::new(KIND, t, s);
    sp.params.insert("alphabet".into(), q as f64);
    sp
}

fn err(sp: &TaskSpec) -> String {
    build(sp, 0).unwrap_err().to_string()
}

#[test]
fn the_label_is_the_sum_at_s_mod_q() {
    let task = SparseSum::new(8, 5, vec![6, 1, 3], 0.0).unwrap();
    assert_eq!(task.relevant(), &[1, 3, 6]);
    assert_eq!(task.clean_label(&[0, 4, 0, 3, 0, 0, 2, 0]), (4 + 3 + 2) % 5);
    assert_eq!(task.clean_label(&[4, 0, 4, 0, 4, 4, 0, 4]), 0, "tokens outside S do not count");
    let data = Dataset::draw(&task, 2000, &mut Pcg32::new(1, streams::TRAIN_DATA)).unwrap();
    for i in 0..data.len() {
        let x = data.row(i);
        let sum: usize = [1, 3, 6].iter().map(|&j| x[j] as usize).sum();
        assert_eq!(data.labels[i] as usize, sum % 5);
        assert!(x.iter().all(|&v| v < 5));
    }
}

#[test]
fn tokens_and_labels_are_uniform() {
    let task = build(&spec(10, 3, 4), 2).unwrap();
    let n = 40_000;
    let data = Dataset::draw(task.as_ref(), n, &mut Pcg32::new(2, streams::TRAIN_DATA)).unwrap();
    let mut tokens = [0usize; 4];
    let mut labels = [0usize; 4];
    data.tokens.iter().for_each(|&v| tokens[v as usize] += 1);
    data.labels.iter().for_each(|&v| labels[v as usize] += 1);
    for c in 0..4 {
        let ft = tokens[c] as f64 / data.tokens.len() as f64;
        let fl = labels[c] as f64 / n as f64;
        assert!((ft - 0.25).abs() < 0.01, "token {c}: {ft}");
        assert!((fl - 0.25).abs() < 0.015, "label {c}: {fl}");
    }
}

#[test]
fn no_proper_subset_of_s_says_anything_about_the_label() {
    // The parity property, exactly: fix the tokens at all but one relevant position; as the
    // last one runs over the alphabet, the label takes every class exactly once.
    let (t, q) = (5, 3);
    let task = SparseSum::new(t, q, vec![0, 2, 4], 0.0).unwrap();
    for fixed in 0..q * q {
        let mut seen = vec![0; q];
        for last in 0..q {
            let x = [(fixed % q) as u8, 1, (fixed / q) as u8, 2, last as u8];
            seen[task.clean_label(&x) as usize] += 1;
        }
        assert_eq!(seen, vec![1; q], "fixed tokens {fixed}");
    }
}

#[test]
fn two_letters_make_it_sparse_parity() {
    for seed in [0, 3, 8] {
        let sum = build(&spec(9, 3, 2), seed).unwrap();
        let parity = build_task(&TaskSpec::new("sparse_parity", 9, 3), seed).unwrap();
        assert_eq!(sum.relevant(), parity.relevant(), "same S from the same member seed");
        for m in 0u32..512 {
            let x: Vec<u8> = (0..9).map(|i| ((m >> i) & 1) as u8).collect();
            assert_eq!(sum.clean_label(&x), parity.clean_label(&x));
        }
    }
}

#[test]
fn noise_replaces_that_fraction_of_labels_by_another_class() {
    let mut sp = spec(6, 2, 3);
    sp.noise = 0.2;
    let task = build(&sp, 4).unwrap();
    let data = Dataset::draw(task.as_ref(), 20_000, &mut Pcg32::new(4, streams::TRAIN_DATA)).unwrap();
    let changed = (0..data.len()).filter(|&i| data.labels[i] != task.clean_label(data.row(i))).count();
    let rate = changed as f64 / data.len() as f64;
    assert!((rate - 0.2).abs() < 0.015, "replacement rate {rate}");
    assert!(task.describe().ends_with("q=3 noise=0.2"), "{}", task.describe());
}

#[test]
fn subsets_are_drawn_like_the_builtin_tasks_or_given() {
    let a = build(&spec(30, 4, 3), 11).unwrap();
    assert_eq!(a.relevant(), Pcg32::new(11, streams::SUBSET).subset(30, 4).as_slice());
    let mut sp = spec(30, 4, 3);
    sp.subset_seed = Some(5);
    assert_eq!(build(&sp, 1).unwrap().relevant(), build(&sp, 2).unwrap().relevant());
    sp.subset = Some(vec![20, 2, 9, 14]);
    let given = build(&sp, 0).unwrap();
    assert_eq!(given.relevant(), &[2, 9, 14, 20]);
    assert_eq!(given.describe(), "sparse_sum T=30 s=4 S=[2, 9, 14, 20] q=3 noise=0");
    // The default alphabet.
    assert_eq!(build(&TaskSpec::new(KIND, 5, 2), 0).unwrap().alphabet(), sparse_sum_task::DEFAULT_ALPHABET);
}

#[test]
fn bad_configs_name_the_key() {
    let mut sp = spec(8, 2, 3);
    sp.params.insert("modulus".into(), 3.0);
    assert_eq!(err(&sp), "task.params.modulus: task kind `sparse_sum` takes no option `modulus`; it takes: alphabet");
    for q in [1.0, 257.0, 2.5, f64::NAN] {
        let mut sp = spec(8, 2, 3);
        sp.params.insert("alphabet".into(), q);
        assert!(err(&sp).starts_with("task.params.alphabet must be a whole number from 2 to 256"), "{}", err(&sp));
    }
    assert!(err(&spec(3, 4, 3)).contains("task.s = 4 exceeds task.T = 3"));
    assert!(err(&spec(3, 0, 3)).contains("task.s must be at least 1"));
    assert!(err(&spec(0, 0, 3)).contains("task.T must be at least 1"));
    let mut sp = spec(8, 2, 3);
    sp.bias = 0.7;
    assert!(err(&sp).contains("task.bias = 0.7 is not supported by `sparse_sum`"), "{}", err(&sp));
    let mut sp = spec(8, 2, 3);
    sp.noise = 0.6;
    assert!(err(&sp).contains("task.noise must be in [0, 0.5]"));
    sp.noise = 0.0;
    sp.subset = Some(vec![1]);
    assert!(err(&sp).contains("task.subset has 1 positions but task.s = 2"));
    sp.subset = Some(vec![1, 8]);
    assert!(err(&sp).contains("task.subset position 8 is out of range for task.T = 8"));
    sp.subset = Some(vec![3, 3]);
    assert!(err(&sp).contains("task.subset lists position 3 more than once"));
}

#[test]
fn registered_statically_it_is_found_by_name() {
    let mut registry = Registry::builtin();
    let info = PluginHost::new().register_static(&sparse_sum_task::PLUGIN, "static", &mut registry).unwrap();
    assert_eq!((info.name.as_str(), info.tasks.as_slice()), ("sparse-sum-task", &["sparse_sum".to_string()][..]));
    let t = registry.task(&spec(7, 2, 6), 1).unwrap();
    assert_eq!((t.name(), t.alphabet(), t.num_classes()), ("sparse_sum", 6, 6));
}

#[test]
fn a_transformer_learns_a_small_sparse_sum() {
    let mut registry = Registry::builtin();
    PluginHost::new().register_static(&sparse_sum_task::PLUGIN, "static", &mut registry).unwrap();
    let run = RunSpec {
        task: spec(12, 3, 3),
        model: ModelSpec::Transformer(TransformerConfig { d_model: 32, heads: 2, mlp: 2, ..TransformerConfig::default() }),
        train: TrainConfig { samples: 1024, batch: 32, max_steps: 3000, eval_every: 100, test_samples: 512, lr: 3e-3, ..TrainConfig::default() },
        seeds: vec![0],
        samples: None,
    };
    let mut be = CpuBackend::<f32>::new();
    let r = Trainer::new(&mut be, run, &registry).unwrap().run(&mut |_| true).unwrap();
    let m = &r.members[0];
    assert!(m.learned, "not learned: {m:?}");
    let a = m.attention.as_ref().unwrap();
    assert!(a.mass_on_s[a.best_head.0][a.best_head.1] > 0.5, "attention does not find S: {a:?}");
}
