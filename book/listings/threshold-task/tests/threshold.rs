// sparse_threshold against the built-in tasks it generalises, its errors, and its
// registration through the plugin entry point.

use sparsevar_plugin::core::registry::Registry;
use sparsevar_plugin::{Pcg32, PluginHost, TaskSpec};
use threshold_task::{build, PLUGIN};

fn threshold(t: usize, s: usize, k: f64) -> TaskSpec {
    let mut spec = TaskSpec::new("sparse_threshold", t, s);
    spec.params.insert("k".into(), k);
    spec
}

/// k = 1 is sparse_or, k = s is sparse_and, k = (s+1)/2 is sparse_majority: same S, same
/// inputs, same labels, sample by sample, with noise and a bias.
#[test]
fn special_cases_are_the_builtin_tasks() {
    let builtin = Registry::builtin();
    for (k, kind) in [(1.0, "sparse_or"), (3.0, "sparse_and"), (2.0, "sparse_majority")] {
        for seed in 0..4 {
            let mut ours = threshold(12, 3, k);
            let mut theirs = TaskSpec::new(kind, 12, 3);
            for spec in [&mut ours, &mut theirs] {
                spec.noise = 0.1;
                spec.bias = 0.3;
            }
            let a = build(&ours, seed).unwrap();
            let b = builtin.task(&theirs, seed).unwrap();
            assert_eq!(a.relevant(), b.relevant(), "{kind}, seed {seed}");
            let (mut ra, mut rb) = (Pcg32::new(seed, 2), Pcg32::new(seed, 2));
            let (mut xa, mut xb) = (vec![0u8; 12], vec![0u8; 12]);
            for _ in 0..500 {
                assert_eq!(a.sample(&mut ra, &mut xa).unwrap(), b.sample(&mut rb, &mut xb).unwrap(), "{kind}, seed {seed}");
                assert_eq!(xa, xb);
            }
        }
    }
}

#[test]
fn bad_options_are_errors_naming_the_key() {
    let e = build(&threshold(12, 3, 4.0), 0).unwrap_err().to_string();
    assert!(e.contains("task.params.k must be a whole number from 1 to s = 3 (got 4)"), "{e}");
    let mut spec = threshold(12, 3, 2.0);
    spec.params.insert("kk".into(), 1.0);
    let e = build(&spec, 0).unwrap_err().to_string();
    assert!(e.contains("task.params.kk"), "{e}");
    let mut spec = threshold(12, 3, 2.0);
    spec.subset = Some(vec![0, 0, 5]);
    let e = build(&spec, 0).unwrap_err().to_string();
    assert!(e.contains("task.subset"), "{e}");
}

#[test]
fn registers_through_the_plugin_entry_point() {
    let mut registry = Registry::builtin();
    let info = PluginHost::new().register_static(&PLUGIN, "threshold-task", &mut registry).unwrap();
    assert_eq!(info.tasks, ["sparse_threshold"]);
    let task = registry.task(&threshold(16, 3, 2.0), 7).unwrap();
    assert!(task.describe().starts_with("sparse_threshold T=16 s=3 S="), "{}", task.describe());
}
