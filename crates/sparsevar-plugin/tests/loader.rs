//! The real loader on freshly built shared libraries: the example plugins load, register
//! under their file, and train to exactly the numbers of the same plugins linked statically.

mod common;

use common::{example_plugins, fingerprint, small_run, sparse_sum, train};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_plugin::{LoadedPlugin, PluginHost, discover};

/// The three example plugins loaded from their shared libraries.
fn loaded() -> (PluginHost, Registry, Vec<LoadedPlugin>) {
    let (task, attention, backend) = example_plugins();
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    let infos = [task, attention, backend].iter().map(|p| host.load(p, &mut registry).unwrap_or_else(|e| panic!("{e}"))).collect();
    (host, registry, infos)
}

/// The same three plugins linked into this test binary.
fn linked() -> (PluginHost, Registry) {
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    host.register_static(&sparse_sum_task::PLUGIN, "sparse-sum-task (static)", &mut registry).unwrap();
    host.register_static(&sharp_attention::PLUGIN, "sharp-attention (static)", &mut registry).unwrap();
    host.register_static(&reference_backend::PLUGIN, "reference-backend (static)", &mut registry).unwrap();
    (host, registry)
}

#[test]
fn loading_registers_every_name_under_the_plugin_file() {
    let (task, attention, backend) = example_plugins();
    let (host, registry, infos) = loaded();
    assert_eq!(infos[0].name, "sparse-sum-task");
    assert_eq!(infos[0].version, env!("CARGO_PKG_VERSION"));
    assert_eq!(infos[0].tasks, ["sparse_sum"]);
    assert!(infos[0].attention.is_empty() && infos[0].backends.is_empty());
    assert_eq!(infos[1].attention, ["relu2", "ssmax"]);
    assert_eq!(infos[2].backends, ["reference"]);
    assert_eq!(host.plugins(), &infos[..]);
    assert_eq!(registry.tasks["sparse_sum"].origin, task.display().to_string());
    assert_eq!(registry.attention["ssmax"].origin, attention.display().to_string());
    assert_eq!(registry.backends["reference"].origin, backend.display().to_string());
    assert_eq!(registry.tasks["sparse_parity"].origin, "built-in");
    let listing = infos[1].describe();
    assert!(listing.starts_with("sharp-attention 0.1.0  ("), "{listing}");
    assert!(listing.contains(&attention.display().to_string()) && listing.contains("\n  attention: relu2, ssmax"), "{listing}");
    // The plugin's objects work through the registry like built-in ones.
    let t = registry.task(&sparse_sum(10, 3, 5), 7).unwrap();
    assert_eq!((t.seq_len(), t.alphabet(), t.num_classes(), t.relevant().len()), (10, 5, 5, 3));
    assert!(t.describe().starts_with("sparse_sum T=10 s=3 S=["), "{}", t.describe());
    assert_eq!(registry.backend("reference").unwrap().name(), "reference");
    assert_eq!(registry.attention("relu2").unwrap().name(), "relu2");
    // A config error from the plugin reaches the caller as the plugin wrote it.
    let mut bad = sparse_sum(10, 3, 5);
    bad.params.insert("alphabets".into(), 3.0);
    let e = registry.task(&bad, 0).unwrap_err().to_string();
    assert!(e.contains("task.params.alphabets: task kind `sparse_sum` takes no option `alphabets`"), "{e}");
    host.check_faults().unwrap();
}

#[test]
fn loaded_and_linked_plugins_train_to_identical_numbers() {
    let (dyn_host, dyn_registry, _) = loaded();
    let (static_host, static_registry) = linked();
    for attention in ["ssmax", "relu2"] {
        let spec = small_run(sparse_sum(6, 2, 3), attention, vec![0, 1]);
        let (rd, pd) = train(&mut CpuBackend::<f32>::new(), spec.clone(), &dyn_registry);
        let (rs, ps) = train(&mut CpuBackend::<f32>::new(), spec.clone(), &static_registry);
        assert_eq!(fingerprint(&rd), fingerprint(&rs), "{attention}: loaded and linked runs differ");
        assert_eq!(pd, ps, "{attention}: parameters differ");
        assert!(rd.curves.iter().all(|c| c.train_loss.is_finite()), "{attention}: {:?}", rd.curves);
        // The comparison can fail: another attention variant gives other numbers.
        let mut softmax = spec.clone();
        softmax.model = small_run(sparse_sum(6, 2, 3), "softmax", vec![0, 1]).model;
        let (rsm, _) = train(&mut CpuBackend::<f32>::new(), softmax, &dyn_registry);
        assert_ne!(fingerprint(&rsm), fingerprint(&rd), "{attention} trains exactly like softmax");
    }
    dyn_host.check_faults().unwrap();
    static_host.check_faults().unwrap();
}

#[test]
fn the_loaded_reference_backend_trains_like_the_linked_one_and_like_cpu_f64() {
    let (dyn_host, dyn_registry, _) = loaded();
    let (_, static_registry) = linked();
    let mut spec = small_run(sparse_sum(5, 2, 3), "ssmax", vec![3, 4]);
    spec.train.max_steps = 20;
    spec.train.eval_every = 10;
    spec.train.test_samples = 32;
    let mut be = dyn_registry.backend("reference").unwrap();
    let (rd, pd) = train(&mut *be, spec.clone(), &dyn_registry);
    let mut be = static_registry.backend("reference").unwrap();
    let (rs, ps) = train(&mut *be, spec.clone(), &static_registry);
    assert_eq!(fingerprint(&rd), fingerprint(&rs));
    assert_eq!(pd, ps);
    // The oracle agrees with the CPU backend in f64 up to summation order.
    let (rc, pc) = train(&mut CpuBackend::<f64>::new(), spec, &dyn_registry);
    for (a, b) in rd.curves.iter().zip(&rc.curves) {
        assert!((a.train_loss - b.train_loss).abs() <= 1e-9 * b.train_loss.abs().max(1.0), "{a:?} vs {b:?}");
    }
    for (p, q) in pd.iter().flatten().zip(pc.iter().flatten()) {
        assert!((p - q).abs() <= 1e-8 * q.abs().max(1.0), "parameter {p} vs {q}");
    }
    dyn_host.check_faults().unwrap();
}

#[test]
fn sparse_sum_with_two_letters_is_sparse_parity_through_the_loader() {
    let (_, registry, _) = loaded();
    for seed in [0, 5, 9] {
        let sum = registry.task(&sparse_sum(12, 3, 2), seed).unwrap();
        let parity = registry.task(&TaskSpec::new("sparse_parity", 12, 3), seed).unwrap();
        assert_eq!(sum.relevant(), parity.relevant(), "seed {seed}: same S");
        for m in 0u32..4096 {
            let x: Vec<u8> = (0..12).map(|i| ((m >> i) & 1) as u8).collect();
            assert_eq!(sum.clean_label(&x), parity.clean_label(&x), "seed {seed}, input {x:?}");
        }
    }
}

#[test]
fn discover_finds_the_built_plugins() {
    let (task, attention, backend) = example_plugins();
    let dir = task.parent().unwrap().to_path_buf();
    let found = discover(&[dir.clone(), dir.join("no-such-dir")]);
    for l in [task, attention, backend] {
        assert!(found.contains(l), "{} not in {found:?}", l.display());
    }
    assert!(found.iter().all(|p| p.file_name().unwrap().to_str().unwrap().starts_with("lib")));
}
