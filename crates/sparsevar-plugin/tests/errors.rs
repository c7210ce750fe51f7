//! Every way loading or running a plugin can fail gives an error naming the file, registers
//! nothing, and leaves the host running (each test goes on to use the host afterwards).

mod common;

use std::path::{Path, PathBuf};

use common::{broken_plugins, example_plugins, library, scratch, small_run, train};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::TaskSpec;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::train::{TrainError, Trainer};
use sparsevar_plugin::{PluginError, PluginHost};

fn broken(name: &str) -> PathBuf {
    library(broken_plugins(), name)
}

/// Load `path` into a fresh builtin registry; the error, and the registry (to check that
/// nothing was registered).
fn load_err(path: &Path) -> (PluginError, Registry, PluginHost) {
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    let e = host.load(path, &mut registry).expect_err("loading must fail");
    assert!(e.to_string().contains(&path.display().to_string()), "message does not name the file: {e}");
    (e, registry, host)
}

/// The host still works after an error: a good plugin loads into the same registry.
fn still_works(host: &mut PluginHost, registry: &mut Registry) {
    let before = registry.task_names().len();
    host.load(&example_plugins().0, registry).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(registry.task_names().len(), before + 1);
}

fn assert_untouched(registry: &Registry) {
    let builtin = Registry::builtin();
    assert_eq!(registry.task_names(), builtin.task_names());
    assert_eq!(registry.attention_names(), builtin.attention_names());
    assert_eq!(registry.backend_names(), builtin.backend_names());
}

#[test]
fn a_missing_file_is_named() {
    let path = scratch().join("no-such-dir/libnothing.so");
    let (e, mut registry, mut host) = load_err(&path);
    assert!(matches!(e, PluginError::Missing { .. }), "{e:?}");
    assert!(e.to_string().ends_with("no such file"), "{e}");
    still_works(&mut host, &mut registry);
}

#[test]
fn a_text_file_named_like_a_library_is_not_a_library() {
    let path = scratch().join("errors-text").join(format!("{}x{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "this is not a shared library\n").unwrap();
    let (e, mut registry, mut host) = load_err(&path);
    assert!(matches!(e, PluginError::NotALibrary { .. }), "{e:?}");
    assert!(e.to_string().contains("not a shared library"), "{e}");
    assert_untouched(&registry);
    still_works(&mut host, &mut registry);
}

#[test]
fn a_library_without_the_entry_points_is_not_a_plugin() {
    let (e, mut registry, mut host) = load_err(&broken("not_a_plugin"));
    match &e {
        PluginError::NotAPlugin { symbol, .. } => assert_eq!(symbol, "sparsevar_plugin_abi_version__<crate>"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("not a sparsevar plugin"), "{e}");
    assert_untouched(&registry);
    still_works(&mut host, &mut registry);
}

#[test]
fn another_interface_version_is_refused_before_anything_else_is_called() {
    let (e, mut registry, mut host) = load_err(&broken("abi_mismatch"));
    match &e {
        PluginError::AbiMismatch { found, expected, .. } => assert_eq!((*found, *expected), (999, sparsevar_plugin::ABI_VERSION)),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("interface version 999"), "{e}");
    assert_untouched(&registry);
    still_works(&mut host, &mut registry);
}

/// The compatibility record mismatch of `plugin`: the fields, and the message.
fn incompatible(plugin: &str) -> (Vec<&'static str>, String) {
    let (e, mut registry, mut host) = load_err(&broken(plugin));
    assert_untouched(&registry);
    still_works(&mut host, &mut registry);
    let msg = e.to_string();
    match e {
        PluginError::Incompatible { mismatched, host, plugin, .. } => {
            // Both records are printed, side by side.
            assert!(msg.contains(&host.rustc) && msg.contains(&plugin.rustc), "{msg}");
            assert!(msg.contains(&plugin.plugin_name), "{msg}");
            (mismatched, msg)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn another_compiler_is_refused_with_both_records_side_by_side() {
    let (fields, msg) = incompatible("compiler_mismatch");
    assert_eq!(fields, ["compiler"]);
    let line = msg.lines().find(|l| l.contains("compiler") && l.trim_start().starts_with('*')).unwrap_or_else(|| panic!("{msg}"));
    assert!(line.contains(sparsevar_plugin::RUSTC_VERSION) && line.ends_with("rustc 1.0.0 (a59de37e9 2015-05-13)"), "{line}");
    // Matching fields are printed too, unmarked.
    let target = msg.lines().find(|l| l.contains("target")).unwrap();
    assert!(!target.trim_start().starts_with('*'), "{target}");
}

#[test]
fn another_interface_crate_version_is_refused() {
    let (fields, msg) = incompatible("crate_mismatch");
    assert_eq!(fields, ["sparsevar-plugin version"]);
    assert!(msg.lines().any(|l| l.trim_start().starts_with('*') && l.ends_with("0.0.1")), "{msg}");
}

#[test]
fn a_plugin_built_with_panic_abort_is_refused() {
    let (fields, msg) = incompatible("abort_strategy");
    assert_eq!(fields, ["panic strategy"]);
    assert!(msg.lines().any(|l| l.trim_start().starts_with('*') && l.ends_with("abort")), "{msg}");
}

#[test]
fn loading_a_plugin_twice_is_a_duplicate_name() {
    let path = &example_plugins().0;
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    host.load(path, &mut registry).unwrap();
    let e = host.load(path, &mut registry).expect_err("second load");
    match &e {
        PluginError::Duplicate { duplicate, .. } => {
            assert_eq!((duplicate.what, duplicate.name.as_str()), ("task", "sparse_sum"));
            assert_eq!(duplicate.old_origin, path.display().to_string());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("task `sparse_sum`") && e.to_string().contains("already registered"), "{e}");
    assert_eq!(host.plugins().len(), 1);
    // The first registration still works.
    assert!(registry.task(&common::sparse_sum(6, 2, 3), 0).is_ok());
}

#[test]
fn a_name_clash_with_a_builtin_registers_nothing_of_the_plugin() {
    let path = broken("clashes_with_builtin");
    let (e, mut registry, mut host) = load_err(&path);
    match &e {
        PluginError::Duplicate { duplicate, .. } => {
            assert_eq!((duplicate.what, duplicate.name.as_str(), duplicate.old_origin.as_str()), ("attention variant", "softmax", "built-in"));
        }
        other => panic!("{other:?}"),
    }
    // All or nothing: the task it registered before the clash is not there either.
    assert_untouched(&registry);
    assert!(host.plugins().is_empty());
    still_works(&mut host, &mut registry);
}

#[test]
fn a_panic_while_registering_is_an_error_and_registers_nothing() {
    let (e, mut registry, mut host) = load_err(&broken("register_panics"));
    match &e {
        PluginError::RegisterPanicked { message, .. } => assert_eq!(message, "register_panics: cannot find my configuration"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("panicked while registering"), "{e}");
    assert_untouched(&registry);
    still_works(&mut host, &mut registry);
}

/// The panicky plugin loaded into a builtin registry.
fn panicky() -> (PluginHost, Registry, PathBuf) {
    let path = broken("panicky");
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    host.load(&path, &mut registry).unwrap_or_else(|e| panic!("{e}"));
    (host, registry, path)
}

fn task(kind: &str, after: Option<usize>) -> TaskSpec {
    let mut t = TaskSpec::new(kind, 6, 1);
    if let Some(n) = after {
        t.params.insert("after".into(), n as f64);
    }
    t
}

#[test]
fn a_task_that_panics_in_sample_stops_training_with_an_error_naming_file_member_and_call() {
    let (host, registry, path) = panicky();
    // Online training: 32 test samples per member at setup, then 16 per step; each member's
    // task panics at its 100th sample, i.e. while drawing the batch of step 5.
    let mut spec = small_run(task("sample_panics", Some(100)), "softmax", vec![3, 4]);
    spec.train.online = true;
    spec.train.test_samples = 32;
    spec.train.max_steps = 1000;
    spec.train.eval_every = 10;
    let mut be = CpuBackend::<f32>::new();
    let mut trainer = Trainer::new(&mut be, spec, &registry).unwrap();
    let e = trainer.run(&mut |_| true).map(|_| ()).expect_err("a panicking task stops training");
    assert_eq!(trainer.steps_taken(), 4, "no step ran on a made-up batch");
    let TrainError::MemberFaults { step: 4, faults } = &e else { panic!("{e:?}") };
    // Both members' tasks fail at the same sample: one error names them all.
    assert_eq!(faults.iter().map(|f| (f.member, f.seed)).collect::<Vec<_>>(), [(0, 3), (1, 4)]);
    let msg = e.to_string();
    assert!(msg.starts_with("member 0 (seed 3) at step 4: plugin "), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("Task::sample of task `sample_panics` panicked: sample_panics: sample number 100 exploded"), "{msg}");
    assert!(msg.ends_with("(and 1 more members)") && !msg.contains('\n'), "{msg}");
    // The host's fault log has it too.
    assert!(matches!(host.check_faults(), Err(PluginError::Fault { file, .. }) if file == path));
    // The host is fine: a good plugin task still trains in this process.
    let mut registry = registry;
    let mut host = host;
    still_works(&mut host, &mut registry);
    let (r, _) = train(&mut CpuBackend::<f32>::new(), small_run(common::sparse_sum(5, 2, 3), "softmax", vec![0]), &registry);
    assert!(r.curves.iter().all(|c| c.train_loss.is_finite()));
}

#[test]
fn a_task_whose_sample_returns_an_error_names_only_the_members_it_failed_for() {
    let (_host, registry, path) = panicky();
    let mut spec = task("sample_fails", Some(50));
    spec.params.insert("fail_seed".into(), 8.0);
    // 200 training samples are drawn at setup: the member with seed 8 fails there.
    let e = Trainer::new(&mut CpuBackend::<f32>::new(), small_run(spec, "softmax", vec![7, 8, 9]), &registry).map(|_| ()).expect_err("fails");
    let TrainError::MemberFaults { step: 0, faults } = &e else { panic!("{e:?}") };
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].member, faults[0].seed), (1, 8));
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "member 1 (seed 8) at step 0: plugin {}: Task::sample of task `sample_fails` returned an error: task `sample_fails` failed: the table ran out at sample 50",
            path.display()
        )),
        "{msg}"
    );
}

#[test]
fn a_label_outside_the_classes_is_a_fault_no_label_is_made_up() {
    let (_host, registry, path) = panicky();
    let spec = small_run(task("bad_label", None), "softmax", vec![0]);
    let mut be = CpuBackend::<f32>::new();
    let e = Trainer::new(&mut be, spec, &registry).map(|_| ()).expect_err("no substitute label");
    assert!(matches!(e, TrainError::MemberFaults { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("Task::sample of task `bad_label` returned label 7, outside 0..2"), "{msg}");
}

#[test]
fn a_task_factory_that_panics_fails_the_setup_with_the_file() {
    let (_host, registry, path) = panicky();
    let spec = small_run(task("factory_panics", None), "softmax", vec![0]);
    let mut be = CpuBackend::<f32>::new();
    let e = Trainer::new(&mut be, spec, &registry).map(|_| ()).expect_err("fails");
    assert!(matches!(&e, TrainError::Registry(r) if !r.is_user_input()), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("the factory of task `factory_panics` panicked: factory_panics: out of ideas"), "{msg}");
}

#[test]
fn an_attention_variant_that_fails_stops_the_setup_no_uniform_stand_in() {
    let (_host, registry, path) = panicky();
    for (variant, says) in [
        ("weights_panic", "Attention::weights of `weights_panic` panicked: weights_panic: no weights today"),
        ("weights_error", "Attention::weights of `weights_error` returned an error: attention variant `weights_error` failed: heads must be odd"),
    ] {
        let spec = small_run(TaskSpec::new("sparse_parity", 6, 2), variant, vec![0]);
        let mut be = CpuBackend::<f32>::new();
        let e = Trainer::new(&mut be, spec, &registry).map(|_| ()).expect_err("no model is built without its attention");
        assert!(matches!(&e, TrainError::Model { seeds, .. } if seeds == &[0]), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains(says), "{msg}");
    }
}

#[test]
fn a_fault_without_an_error_channel_stops_the_run_at_the_next_evaluation() {
    let (_host, registry, path) = panicky();
    // A fault from before the trainer existed is not this run's.
    let early = registry.task(&task("describe_panics", None), 0).unwrap();
    assert!(early.describe().contains("describe panicked"));
    let mut spec = small_run(task("describe_panics", None), "softmax", vec![0]);
    spec.train.max_steps = 60;
    let mut be = CpuBackend::<f32>::new();
    let mut trainer = Trainer::new(&mut be, spec, &registry).expect("describe is not called while setting up");
    // As `sparsevar train` does after setting up: describe each member's task.
    let _ = trainer.tasks[0].describe();
    let mut evaluations = 0;
    let e = trainer
        .run(&mut |_| {
            evaluations += 1;
            true
        })
        .map(|_| ())
        .expect_err("the trainer reads the fault log itself");
    assert_eq!(evaluations, 0, "stopped at the first evaluation, before reporting it");
    let TrainError::Fault { step: 20, fault } = &e else { panic!("{e:?}") };
    assert_eq!(fault.plugin, path.display().to_string());
    assert_eq!(fault.call, "Task::describe of task `describe_panics`");
    assert!(e.to_string().contains("panicked: describe_panics: lost for words (found at step 20, all members stopped)"), "{e}");
}

#[test]
fn a_backend_that_panics_returns_errors_naming_the_file() {
    let (host, registry, path) = panicky();
    let mut be = registry.backend("launch_panics").unwrap();
    let spec = small_run(TaskSpec::new("sparse_parity", 6, 2), "softmax", vec![0]);
    // Planning runs the constant kernels, so setting up already fails.
    let e = Trainer::new(&mut *be, spec, &registry).map(|_| ()).expect_err("launch panics");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("Backend::launch of backend `launch_panics` panicked"), "{msg}");
    // After a panic the backend refuses further work instead of running on broken state.
    let again = be.alloc(3).expect_err("poisoned").to_string();
    assert!(again.contains("unusable after an earlier panic"), "{again}");
    assert!(host.check_faults().is_err());
    // Through the registry, a fault probe sees it too.
    assert!(registry.faults_since(&Default::default()).is_err());
}
