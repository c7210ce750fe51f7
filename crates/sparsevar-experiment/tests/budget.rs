//! Sizes that cannot fit are refused at validation with one line naming the key, the
//! estimate and the limit; the estimate of the backend's memory matches what a trainer
//! really allocates.

use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, Update};
use sparsevar_core::model::{DataShape, ModelSpec, Norm, Positions, TransformerConfig};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::budget::{Plan, estimate};
use sparsevar_experiment::config::{ExperimentConfig, TrainConfig};
use sparsevar_experiment::sweep::SweepConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};

const BASE: &str = "task: { kind: sparse_parity, T: 16, s: 3 }\nmodel: { kind: transformer }\ntrain: { samples: 1000 }\nseeds: [0, 1, 2, 3]\n";

fn parse(overrides: &[&str]) -> Result<ExperimentConfig, String> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::parse(BASE, "exp.yaml", &o, &Registry::builtin()).map_err(|e| e.to_string())
}

/// One line that names `key` first, an estimate and the machine's limit.
fn assert_refused(e: &str, key: &str) {
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(e.starts_with(&format!("{key} = ")), "names {key} first: {e}");
    assert!(e.contains("is too large"), "{e}");
    assert!(e.contains("this machine has") || e.contains("more than any machine can hold"), "names the limit: {e}");
    assert!(e.contains("iB") || e.contains("values"), "names the estimate: {e}");
}

#[test]
fn a_normal_config_passes() {
    parse(&[]).unwrap();
    parse(&["task.T=128", "model.layers=2", "seeds=[0,1,2,3,4,5,6,7]"]).unwrap();
    let cfg = ExperimentConfig::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/parity_t16.yaml")), &[], &Registry::builtin());
    cfg.unwrap();
}

#[test]
fn each_size_that_cannot_fit_is_refused_naming_its_key() {
    for (ov, key) in [
        ("task.T=10000000", "task.T"),
        ("train.samples=100000000000", "train.samples"),
        ("train.test_samples=100000000000", "train.test_samples"),
        ("model.d_model=1000000", "model.d_model"),
        ("model.layers=10000000", "model.layers"),
        ("model.mlp=10000000", "model.mlp"),
        ("train.batch=1000000000", "train.batch"),
    ] {
        let e = parse(&[ov]).unwrap_err();
        eprintln!("{e}");
        assert_refused(&e, key);
    }
    // Many seeds (a million members, written out like a user's generated file would).
    let seeds: Vec<String> = (0..1_000_000).map(|i: u64| i.to_string()).collect();
    let text = BASE.replace("seeds: [0, 1, 2, 3]", &format!("seeds: [{}]", seeds.join(",")));
    let e = ExperimentConfig::parse(&text, "exp.yaml", &[], &Registry::builtin()).unwrap_err().to_string();
    assert_refused(&e, "seeds");
    // Threads: a bound, not an estimate.
    let e = parse(&["threads=1000000"]).unwrap_err();
    assert!(e.starts_with("threads = 1000000 is more worker threads") && !e.contains('\n'), "{e}");
}

#[test]
fn a_sweep_that_cannot_fit_names_its_own_keys() {
    let base = "task: { kind: sparse_parity, s: 2 }\nmodels: { tf: { kind: transformer } }\ntrain: { max_steps: 10 }\nsweep: { T: [8, 16], m: [16, 32], seeds: [0, 1] }\n";
    let sweep = |o: &[&str]| {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        SweepConfig::parse(base, "sweep.yaml", &o, &Registry::builtin()).map_err(|e| e.to_string())
    };
    sweep(&[]).unwrap();
    let e = sweep(&["sweep.T=[8,10000000]"]).unwrap_err();
    assert!(e.starts_with("T = 10000000, models.tf: "), "{e}");
    assert_refused(e.split_once("models.tf: ").unwrap().1, "sweep.T");
    let e = sweep(&["sweep.m=[16,100000000000]"]).unwrap_err();
    assert_refused(e.split_once("models.tf: ").unwrap().1, "sweep.m");
    let e = sweep(&["models.tf.d_model=1000000"]).unwrap_err();
    assert_refused(e.split_once("models.tf: ").unwrap().1, "models.tf.d_model");
    let e = sweep(&["sweep.max_ensemble=10000000", "sweep.m={from: 1, to: 1000000, factor: 1.0001}", "sweep.seeds=[0,1,2,3,4,5,6,7,8,9]"]).unwrap_err();
    assert!(e.starts_with("the sweep grid is too large: sweep.T (2) × sweep.m (") && e.contains("more than the 1000000"), "{e}");
    // A progression with a factor barely above 1 is counted, not listed (this returns at once).
    let e = sweep(&["sweep.m={from: 1, to: 1000000000000000000, factor: 1.0000000001}"]).unwrap_err();
    assert!(e.starts_with("the sweep grid is too large"), "{e}");
    let e = sweep(&["threads=1000000"]).unwrap_err();
    assert!(e.contains("threads = 1000000 is more worker threads"), "{e}");
}

/// A backend that counts the values it holds, at most and now.
struct Counting {
    inner: CpuBackend<f64>,
    sizes: std::collections::HashMap<BufferId, usize>,
    live: usize,
    peak: usize,
}

impl Backend for Counting {
    fn name(&self) -> String {
        "counting".into()
    }
    fn alloc(&mut self, len: usize) -> Result<BufferId, BackendError> {
        let b = self.inner.alloc(len)?;
        self.sizes.insert(b, len);
        self.live += len;
        self.peak = self.peak.max(self.live);
        Ok(b)
    }
    fn write(&mut self, buf: BufferId, data: &[f64]) -> Result<(), BackendError> {
        self.inner.write(buf, data)
    }
    fn read(&mut self, buf: BufferId, out: &mut Vec<f64>) -> Result<(), BackendError> {
        self.inner.read(buf, out)
    }
    fn launch(&mut self, kernel: &Kernel, inputs: &[BufferId], output: BufferId) -> Result<(), BackendError> {
        self.inner.launch(kernel, inputs, output)
    }
    fn update(&mut self, update: &Update, buffers: &[BufferId]) -> Result<(), BackendError> {
        self.inner.update(update, buffers)
    }
    fn free(&mut self, buf: BufferId) -> Result<(), BackendError> {
        self.live -= self.sizes.remove(&buf).unwrap_or(0);
        self.inner.free(buf)
    }
}

/// Values the trainer allocates on the backend for this model and ensemble, measured.
fn measured(model: &ModelSpec, train: &TrainConfig, seeds: Vec<u64>, t: usize) -> usize {
    let mut be = Counting { inner: CpuBackend::<f64>::new(), sizes: Default::default(), live: 0, peak: 0 };
    let spec = RunSpec { task: TaskSpec::new("sparse_parity", t, 3), model: model.clone(), train: train.clone(), seeds, samples: None };
    let trainer = Trainer::new(&mut be, spec, &Registry::builtin()).unwrap();
    drop(trainer);
    be.peak
}

#[test]
fn the_estimate_of_backend_memory_matches_what_a_trainer_allocates() {
    let registry = Registry::builtin();
    let attention = registry.attention("softmax").unwrap();
    let train = TrainConfig { samples: 300, batch: 24, test_samples: 700, ..TrainConfig::default() };
    let cases = [
        ModelSpec::Transformer(TransformerConfig::default()),
        // Two layers: no CLS shortcut in the first, the token table only there.
        ModelSpec::Transformer(TransformerConfig { layers: 2, d_model: 24, heads: 3, mlp: 2, ..TransformerConfig::default() }),
        // Five layers: extrapolated from planning two and three.
        ModelSpec::Transformer(TransformerConfig {
            layers: 5,
            d_model: 16,
            heads: 2,
            norm: Norm::Post,
            positions: Positions::Sinusoidal,
            ..TransformerConfig::default()
        }),
        ModelSpec::Mlp(sparsevar_core::model::MlpConfig { depth: 4, width: 32 }),
    ];
    for model in cases {
        let (t, r) = (20, 3);
        let real = measured(&model, &train, (0..r as u64).collect(), t);
        let plan = Plan {
            model: model.clone(),
            train: train.clone(),
            data: DataShape { seq_len: t, alphabet: 2, classes: 2 },
            members: r,
            samples: train.samples,
            value_bytes: 8,
            attention: Some(attention.as_ref()),
        };
        let e = estimate(&plan).unwrap();
        let values = (e.model_state + e.activations) / 8.0;
        let ratio = values / real as f64;
        // Sinusoidal tables are counted as one learned embedding's gradient and moments too
        // many; everything else is planned exactly.
        assert!((1.0..1.1).contains(&ratio), "{model:?}: estimated {values} values, the trainer allocated {real}");
        assert!(e.data > (r * (train.samples + train.test_samples) * t) as f64, "{e:?}");
    }
}

/// A `key=value` override with a bad value names the key, the value and what is expected.
#[test]
fn a_bad_override_names_its_key_value_and_what_is_expected() {
    for (ov, needles) in [
        ("train.lr=abc", &["override `train.lr=abc`", "`abc` is not a valid train.lr", "expected f64"][..]),
        ("task.T=[", &["override `task.T=[`", "the value `[` for task.T is not valid YAML", "a list like"][..]),
        ("train.optimizer=adamx", &["`adamx` is not a valid train.optimizer", "expected one of", "`adamw`"][..]),
        ("seeds={from: 0}", &["`{from: 0}` is not a valid seeds", "expected a sequence"][..]),
        ("model.d_model=wide", &["`wide` is not a valid model.d_model", "expected usize"][..]),
    ] {
        // Among good overrides, the bad one is named.
        let e = parse(&["train.batch=16", ov, "model.layers=2"]).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        for n in needles {
            assert!(e.contains(n), "{ov}: `{n}` not in: {e}");
        }
    }
    let base = "task: { kind: sparse_parity, s: 2 }\nmodels: { tf: { kind: transformer } }\nsweep: { T: [8, 16], m: [16, 32] }\n";
    for (ov, needles) in [
        ("train.lr=abc", &["`abc` is not a valid train.lr", "expected f64"][..]),
        ("sweep.T=[8,x]", &["`[8,x]` is not a valid sweep.T", "expected usize"][..]),
        ("sweep.T=[", &["the value `[` for sweep.T is not valid YAML"][..]),
        ("models.tf.heads=many", &["`many` is not a valid models.tf.heads", "expected usize"][..]),
    ] {
        let o = vec!["train.batch=16".to_string(), ov.to_string()];
        let e = SweepConfig::parse(base, "sweep.yaml", &o, &Registry::builtin()).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{ov}: `{n}` not in: {e}");
        }
    }
}
