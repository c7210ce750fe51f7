//! Bad input that used to get through (issue 11, point 5), each tried the way a hostile
//! user would: the program answers with exit status 2 and one line on stderr, never a panic
//! or a backtrace, writes nothing outside its output folder and never loses results.

use std::path::Path;
use std::process::{Command, Output};

use sparsevar_test_support::ScratchDir;

/// Run the program in `dir` with backtraces on, so that a panic would show one.
fn sparsevar(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparsevar")).args(args).current_dir(dir).env("RUST_BACKTRACE", "1").output().expect("run sparsevar")
}

/// Exit status 2, one line on stderr containing every needle, no panic, no backtrace.
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "exit status 2: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "no panic: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    err
}

/// A script error: exit status 2, one line of message containing every needle, then only
/// the script's source excerpt (`  3 | code` and the caret line under it, and for an error
/// inside a module, where it was imported), no panic.
fn assert_script_refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "exit status 2: {err}");
    let mut lines = err.trim_end().lines();
    let first = lines.next().unwrap_or_default();
    for n in needles {
        assert!(first.contains(n), "`{n}` not in the first line: {err}");
    }
    let excerpt = |l: &str| l.trim_start().split_once('|').is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
    assert!(lines.all(|l| excerpt(l) || l.trim_start().starts_with("note: in module")), "only the excerpt follows: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "no panic: {err}");
    err
}

const SMALL: &str = "task: { kind: sparse_parity, T: 8, s: 2 }
model: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { samples: 256, batch: 32, max_steps: 100, eval_every: 50, test_samples: 256 }
seeds: [0, 1]
";

const SWEEP: &str = "task: { kind: sparse_parity, s: 2 }
models: { tf: { kind: transformer, d_model: 16, heads: 2, mlp: 2 } }
train: { max_steps: 50, eval_every: 25, test_samples: 128 }
sweep: { T: [8], m: [32, 64], seeds: [0, 1] }
";

#[test]
fn sizes_that_cannot_fit_are_refused_naming_the_key_before_anything_is_written() {
    let d = ScratchDir::created("hostile-sizes");
    std::fs::write(d.join("small.yaml"), SMALL).unwrap();
    std::fs::write(d.join("sweep.yaml"), SWEEP).unwrap();
    for (ov, key) in [
        ("task.T=10000000", "task.T = 10000000"),
        ("train.samples=100000000000", "train.samples = 100000000000"),
        ("model.d_model=1000000", "model.d_model = 1000000"),
        ("model.layers=100000000", "model.layers = 100000000"),
        ("seeds={from: 0}", "seeds"),
        ("threads=1000000", "threads = 1000000"),
    ] {
        let out = sparsevar(&["train", "small.yaml", "--out", "never", ov], &d);
        if ov.starts_with("seeds") {
            // Not a list: named as a type error (the size check is in the next test).
            assert_refused(&out, &["seeds"]);
            continue;
        }
        assert_refused(&out, &[key]);
        assert!(!d.join("never").exists(), "{ov}: a results folder was created");
    }
    // A million seeds, from a generated file.
    let seeds: Vec<String> = (0..1_000_000).map(|i: u32| i.to_string()).collect();
    std::fs::write(d.join("many.yaml"), SMALL.replace("seeds: [0, 1]", &format!("seeds: [{}]", seeds.join(",")))).unwrap();
    assert_refused(&sparsevar(&["train", "many.yaml", "--out", "never"], &d), &["seeds = 1000000 seeds", "is too large", "this machine has"]);
    for (ov, key) in [
        ("sweep.T=[8,10000000]", "sweep.T = 10000000"),
        ("sweep.m=[32,100000000000]", "sweep.m = 100000000000"),
        ("sweep.m={from: 1, to: 1000000000000000000, factor: 1.0000000001}", "the sweep grid is too large"),
        ("threads=1000000", "threads = 1000000"),
    ] {
        assert_refused(&sparsevar(&["sweep", "sweep.yaml", "--out", "never", ov], &d), &[key]);
        assert!(!d.join("never").exists(), "{ov}: a results folder was created");
    }
    assert_refused(&sparsevar(&["bench", "--T", "10000000", "--steps", "1", "--repeats", "1"], &d), &["--T = 10000000 is too large"]);
    assert_refused(&sparsevar(&["bench", "--runs", "100000000", "--steps", "1", "--repeats", "1"], &d), &["--runs = 100000000 is too large"]);
    assert_refused(&sparsevar(&["bench", "--threads", "1000000"], &d), &["--threads = 1000000 is more worker threads"]);
    // Scripts: the flag, and train() inside the script (which validates like a config).
    std::fs::write(d.join("t.rhai"), "train(sparse_parity(10000000, 3), transformer());\n").unwrap();
    assert_refused(&sparsevar(&["run", "t.rhai", "--out", "out", "--threads", "1000000"], &d), &["--threads = 1000000"]);
    assert_script_refused(&sparsevar(&["run", "t.rhai", "--out", "out-t"], &d), &["t.rhai:1:1: task.T = 10000000 is too large"]);
    // A seed count in a script: ten million members.
    std::fs::write(d.join("r.rhai"), "train(sparse_parity(16, 3), transformer(), #{ seeds: 10000000 });\n").unwrap();
    assert_script_refused(&sparsevar(&["run", "r.rhai", "--out", "out-r"], &d), &["r.rhai:1:1: seeds = 10000000 seeds", "is too large"]);
    // sweep() in a script validates like a sweep config.
    std::fs::write(d.join("w.rhai"), "sweep(#{ task: sparse_parity(8, 2), model: transformer(), T: [8, 10000000], m: [16, 32], seeds: [0, 1] });\n").unwrap();
    assert_script_refused(
        &sparsevar(&["run", "w.rhai", "--out", "out-w"], &d),
        &["w.rhai:1:1: T = 10000000, models.transformer: sweep.T = 10000000 is too large"],
    );
}

#[test]
fn a_module_that_imports_itself_is_an_error_naming_the_chain() {
    let d = ScratchDir::created("hostile-imports");
    std::fs::create_dir_all(d.join("scripts")).unwrap();
    std::fs::write(d.join("scripts/self.rhai"), "import \"self\" as me;\nprint(1);\n").unwrap();
    std::fs::write(d.join("scripts/a.rhai"), "// a imports b\nimport \"b\" as b;\n").unwrap();
    std::fs::write(d.join("scripts/b.rhai"), "import \"a\" as a;\nfn f() { 1 }\n").unwrap();
    std::fs::write(d.join("scripts/ok.rhai"), "import \"b2\" as b;\nprint(b::f());\n").unwrap();
    std::fs::write(d.join("scripts/b2.rhai"), "fn f() { 41 + 1 }\n").unwrap();
    let out = sparsevar(&["run", "scripts/self.rhai", "--out", "o1"], &d);
    assert_script_refused(&out, &["scripts/self.rhai:1:", "import cycle: scripts/self.rhai imports self.rhai"]);
    let out = sparsevar(&["run", "scripts/a.rhai", "--out", "o2"], &d);
    let err = assert_script_refused(&out, &["scripts/b.rhai:1:8: import cycle: scripts/a.rhai imports b.rhai imports a.rhai"]);
    assert!(err.contains("imported at scripts/a.rhai:2:8"), "{err}");
    // A module imported without a cycle still works.
    let out = sparsevar(&["run", "scripts/ok.rhai", "--out", "o3"], &d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

/// Every file under `dir` with its contents, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(snapshot(&p));
        } else if p.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_folder_that_holds_results_is_never_written_into_however_it_is_spelled() {
    let d = ScratchDir::created("hostile-out");
    std::fs::write(d.join("small.yaml"), SMALL.replace("max_steps: 100", "max_steps: 20")).unwrap();
    std::fs::write(d.join("s.rhai"), "save_csv([#{a: 1}], \"results.csv\");\n").unwrap();
    // A finished run and a script's output.
    assert!(sparsevar(&["train", "small.yaml", "--out", "done"], &d).status.success());
    std::fs::create_dir_all(d.join("scripted")).unwrap();
    std::fs::write(d.join("scripted/results.csv"), "a\n7\n").unwrap();
    let before = (snapshot(&d.join("done")), snapshot(&d.join("scripted")));
    for args in [
        &["run", "s.rhai", "--out", "scripted"][..],
        &["run", "s.rhai", "--out", "scripted/nothere/.."],
        &["run", "s.rhai", "--out", "done/./figures/../"],
        &["train", "small.yaml", "--out", "done/nothere/.."],
        &["train", "small.yaml", "--out", "scripted/nothere/.."],
    ] {
        let out = sparsevar(args, &d);
        assert_refused(&out, &["already holds results; choose another --out or remove it first"]);
    }
    assert_eq!((snapshot(&d.join("done")), snapshot(&d.join("scripted"))), before, "nothing written, nothing lost");
    assert!(!d.join("done/nothere").exists() && !d.join("scripted/nothere").exists(), "no folder made on the way");
    // A folder reached through a link is the folder itself.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(d.join("scripted"), d.join("alias")).unwrap();
        assert_refused(&sparsevar(&["run", "s.rhai", "--out", "alias"], &d), &["already holds results"]);
        assert_refused(&sparsevar(&["train", "small.yaml", "--out", "alias/"], &d), &["already holds results"]);
        assert_eq!(snapshot(&d.join("scripted")), before.1);
    }
    // An empty folder is fine, and the script writes there.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    let out = sparsevar(&["run", "s.rhai", "--out", "empty/sub/.."], &d);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(d.join("empty/results.csv")).unwrap(), "a\n1\n");
    assert!(!d.join("empty/sub").exists());
}

/// A link inside the out folder that leads elsewhere: the folder holds something, so the
/// script does not even start, and nothing reaches where the link points.
#[cfg(unix)]
#[test]
fn a_script_cannot_write_through_a_link_in_its_out_folder() {
    let d = ScratchDir::created("hostile-link");
    let elsewhere = ScratchDir::created("hostile-link-elsewhere");
    std::fs::create_dir_all(d.join("out")).unwrap();
    std::os::unix::fs::symlink(&*elsewhere, d.join("out/link")).unwrap();
    std::fs::write(d.join("s.rhai"), "save_csv([#{a: 1}], \"link/x.csv\");\n").unwrap();
    assert_refused(&sparsevar(&["run", "s.rhai", "--out", "out"], &d), &["already holds results"]);
    assert!(std::fs::read_dir(&*elsewhere).unwrap().next().is_none(), "nothing written through the link");
}

/// The plugin tests' helpers: building the example plugins, corrupting copies of one.
#[path = "../../sparsevar-plugin/tests/common/mod.rs"]
mod plugin_common;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn truncated_or_corrupted_plugins_are_listed_as_not_loadable_and_crash_nothing() {
    let d = ScratchDir::created("hostile-plugins");
    let dir = d.join("plugins");
    let copies = plugin_common::corrupted_copies(&dir);
    std::fs::copy(&plugin_common::example_plugins().0, plugin_common::library(&dir, "sparse_sum_task")).unwrap();
    let dir_s = dir.display().to_string();
    let out = sparsevar(&["plugins", "--plugins", &dir_s], &d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for (path, what) in &copies {
        let line = format!("not loaded: plugin {}: not a loadable plugin: ", path.display());
        assert!(stdout.lines().any(|l| l.starts_with(&line)), "{what}: no `{line}` in:\n{stdout}");
    }
    assert!(stdout.contains("sparse-sum-task") && stdout.contains("tasks: sparse_sum"), "the good plugin loads:\n{stdout}");
    // Every other command warns and goes on.
    let out = sparsevar(&["info", "--plugins", &dir_s], &d);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.matches("not a loadable plugin").count(), copies.len(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sparse_sum"), "the good plugin's task is listed");
}

#[test]
fn a_bad_override_value_names_the_key_the_value_and_what_is_expected() {
    let d = ScratchDir::created("hostile-override");
    std::fs::write(d.join("small.yaml"), SMALL).unwrap();
    std::fs::write(d.join("sweep.yaml"), SWEEP).unwrap();
    assert_refused(
        &sparsevar(&["train", "small.yaml", "--out", "never", "train.lr=abc"], &d),
        &["override `train.lr=abc`: `abc` is not a valid train.lr", "expected f64"],
    );
    assert_refused(
        &sparsevar(&["train", "small.yaml", "--out", "never", "task.T=["], &d),
        &["override `task.T=[`: the value `[` for task.T is not valid YAML"],
    );
    assert_refused(&sparsevar(&["sweep", "sweep.yaml", "--out", "never", "sweep.seeds=[0,x]"], &d), &["`[0,x]` is not a valid sweep.seeds", "expected u64"]);
    assert!(!d.join("never").exists());
}
