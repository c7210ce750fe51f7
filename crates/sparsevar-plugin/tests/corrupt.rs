//! Truncated and corrupted plugin files are refused before the dynamic loader sees them
//! (it would crash the process with SIGBUS or SIGSEGV), each as "not a loadable plugin"
//! naming the file, and a good plugin beside them still loads.

mod common;

use common::{corrupted_copies, example_plugins, library, scratch};
use sparsevar_core::registry::Registry;
use sparsevar_plugin::{PluginError, PluginHost};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn truncated_or_corrupted_plugin_files_are_not_loadable_and_a_good_one_still_loads() {
    let dir = scratch().join("corrupt-plugins");
    let copies = corrupted_copies(&dir);
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    for (path, what) in &copies {
        let e = host.load(path, &mut registry).expect_err(what);
        assert!(matches!(e, PluginError::NotLoadable { .. }), "{what}: {e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("plugin {}: not a loadable plugin: ", path.display())), "{what}: {msg}");
        assert!(!msg.contains('\n'), "{what}: one line: {msg}");
    }
    assert_eq!(registry.task_names(), Registry::builtin().task_names(), "nothing registered");
    // A good copy in the same folder loads.
    let good = library(&dir, "sparse_sum_task");
    std::fs::copy(&example_plugins().0, &good).unwrap();
    let errors = host.load_all(&sparsevar_plugin::discover(std::slice::from_ref(&dir)), &mut registry);
    assert_eq!(errors.len(), copies.len(), "{errors:?}");
    assert!(registry.task_names().contains(&"sparse_sum"), "{:?}", registry.task_names());
}
