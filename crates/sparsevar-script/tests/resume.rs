//! `sparsevar run --resume` (`ScriptContext::resume`): a script run cut short continues where
//! it stopped. Each sweep resumes the folder of its name (only units without a result train;
//! a finished sweep is read back as it is), and a folder planned from another config is
//! refused without touching it.

mod common;

use std::path::Path;

use sparsevar_script::run_inline;

/// Two sweeps, so that a resumed run has one finished and one cut short; `m` is the second's grid.
fn script(m: &str) -> String {
    format!(
        r#"
let small = #{{ task: sparse_parity(6, 2), models: #{{ t: transformer(#{{ d_model: 8, heads: 2, mlp: 1 }}) }}, seeds: [0, 1],
               max_steps: 60, eval_every: 20, test_samples: 64, baselines: [] }};
let a = sweep(small + #{{ name: "first", T: [6], m: [16, 32] }});
let b = sweep(small + #{{ name: "second", T: [6, 8], m: {m} }});
save_csv([#{{ a: a.m_star["t"][0], b: b.m_star["t"][1] }}], "stars.csv", ["a", "b"]);
"#
    )
}

fn run(dir: &Path, source: &str, resume: bool) -> Result<(), String> {
    let mut ctx = common::context(dir.join("x.rhai"), dir.join("out"));
    ctx.resume = resume;
    run_inline(source, ctx).map(|_| ()).map_err(|e| e.to_string())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// runs.csv without the wall-time column (`seconds`), which a rerun unit changes.
fn rows(p: &Path) -> Vec<String> {
    let text = read(p);
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == "seconds").unwrap();
    text.lines().map(|l| l.split(',').enumerate().filter(|(i, _)| *i != at).map(|(_, v)| v).collect::<Vec<_>>().join(",")).collect()
}

#[test]
fn a_resumed_script_reads_finished_sweeps_back_and_trains_only_what_is_missing() {
    let dir = common::fresh("resume");
    let out = dir.join("out");
    let src = script("[16, 32]");
    run(&dir, &src, false).unwrap();
    let first = read(&out.join("first/runs.csv"));
    let first_summary = read(&out.join("first/summary.json"));
    let second = rows(&out.join("second/runs.csv"));
    let stars = read(&out.join("stars.csv"));

    // Without --resume the folder is refused, and the message says how to continue.
    let e = run(&dir, &src, false).unwrap_err();
    assert!(e.contains("already holds results") && e.contains("--resume"), "{e}");

    // A finished run resumed: nothing trains (every byte of runs.csv, wall times included,
    // stays) and no numbered second folder appears.
    run(&dir, &src, true).unwrap();
    assert_eq!(read(&out.join("first/runs.csv")), first);
    // Its summary too: who made it and how long it took stay as they were.
    assert_eq!(read(&out.join("first/summary.json")), first_summary);
    assert!(!out.join("first-2").exists() && !out.join("second-2").exists());
    assert_eq!(read(&out.join("stars.csv")), stars);

    // Cut short: the second sweep lost one unit's result. Resuming trains that unit again,
    // to the same rows, and leaves the first sweep's file as it was.
    let results: Vec<_> = std::fs::read_dir(out.join("second/results")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(results.len() >= 2, "one unit per T: {results:?}");
    std::fs::remove_file(&results[results.len() - 1]).unwrap();
    std::fs::remove_file(out.join("stars.csv")).unwrap();
    run(&dir, &src, true).unwrap();
    assert_eq!(read(&out.join("first/runs.csv")), first);
    assert_eq!(rows(&out.join("second/runs.csv")), second);
    assert_eq!(read(&out.join("stars.csv")), stars);

    // Another grid under the same name is refused, naming the folder; the folder is untouched.
    let before = read(&out.join("second/runs.csv"));
    let e = run(&dir, &script("[16, 48]"), true).unwrap_err();
    assert!(e.contains("second") && e.contains("different config") && e.contains("same config"), "{e}");
    assert!(!e.contains("continues from there"), "nothing of this run to continue: {e}");
    assert_eq!(read(&out.join("second/runs.csv")), before);
}
