//! The book's quoted program outputs come from here, so a changed default cannot leave old
//! numbers in the book. A block written ```` ```text,output=NAME ```` is the output of the
//! command NAME below, run for real with this build of the program; the test fails when they
//! differ, ignoring only what differs from machine to machine (durations, thread counts).
//! `SPARSEVAR_BLESS=1 cargo test -p sparsevar --test book_outputs` writes the new outputs
//! into the book.

use std::path::{Path, PathBuf};
use std::process::Command;

use sparsevar_test_support::ScratchDir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// One ```` ```text,output=NAME ```` block: where its contents sit in its chapter.
struct OutputBlock {
    chapter: PathBuf,
    name: String,
    /// 0-based line range of the contents (fences excluded).
    lines: std::ops::Range<usize>,
    text: String,
}

fn output_blocks() -> Vec<OutputBlock> {
    let mut out = Vec::new();
    let src = root().join("book/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    chapters.sort();
    for chapter in chapters {
        let text = std::fs::read_to_string(&chapter).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let name = lines[i].strip_prefix("```text").and_then(|info| info.split([',', ' ']).find_map(|a| a.strip_prefix("output=")));
            if let Some(name) = name {
                let end =
                    (i + 1..lines.len()).find(|&j| lines[j].starts_with("```")).unwrap_or_else(|| panic!("{}:{}: unclosed block", chapter.display(), i + 1));
                let text = lines[i + 1..end].iter().map(|l| format!("{l}\n")).collect();
                out.push(OutputBlock { chapter: chapter.clone(), name: name.to_string(), lines: i + 1..end, text });
                i = end;
            }
            i += 1;
        }
    }
    out
}

/// Masks what legitimately differs between runs of the same build on different machines: a
/// duration (`57.7 s`) and the worker count (`(2 threads)`). Everything else must match.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let mut masked = Vec::with_capacity(words.len());
        for (k, w) in words.iter().enumerate() {
            let next = words.get(k + 1).copied().unwrap_or("");
            let number = !w.is_empty() && w.trim_start_matches('(').chars().all(|c| c.is_ascii_digit() || c == '.');
            let unit = next.starts_with('s') && next.trim_end_matches([',', ';', ')']) == "s" || next.starts_with("threads");
            masked.push(if number && unit { "#" } else { w });
        }
        out.push_str(&masked.join(" "));
        out.push('\n');
    }
    out
}

/// Runs the program in `dir` with stdout and stderr in one stream, in the order written.
fn sparsevar_in(dir: &Path, args: &str, env: &[(&str, &Path)]) -> String {
    let exe = env!("CARGO_BIN_EXE_sparsevar");
    let mut cmd = Command::new("sh");
    // The book shows what a terminal shows: no plain progress lines (those appear only
    // when output is piped, every few seconds, so their number depends on the machine).
    cmd.arg("-c").arg(format!("'{exe}' {args} 2>&1")).current_dir(dir).env("NO_COLOR", "1").env("SPARSEVAR_PROGRESS_SECS", "1e9");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sparsevar");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sparsevar {args} failed in {}:\n{text}", dir.display());
    text
}

/// `sparsevar train scripts/parity_t16.yaml`, from a folder holding the scripts.
fn quickstart_train(dir: &Path) -> String {
    std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts")).unwrap();
    sparsevar_in(dir, "train scripts/parity_t16.yaml", &[])
}

/// The comparing-runs chapter's 1/2/4-head study: three `train`s (their output is not
/// quoted), then `sparsevar compare … --out runs/heads`, whose output is.
fn heads_compare(dir: &Path) -> String {
    std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts")).unwrap();
    for h in [1, 2, 4] {
        sparsevar_in(dir, &format!("train scripts/parity_t16.yaml --out runs/heads{h} model.heads={h} 'seeds=[0,1]' train.max_steps=3000 --quiet"), &[]);
    }
    sparsevar_in(dir, "compare runs/heads1 runs/heads2 runs/heads4 --out runs/heads", &[])
}

/// `sparsevar run scripts/01_quickstart.rhai`, from a folder holding the scripts.
fn first_script(dir: &Path) -> String {
    std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts")).unwrap();
    sparsevar_in(dir, "run scripts/01_quickstart.rhai", &[])
}

/// `sparsevar train threshold.yaml` with the task-plugin chapter's plugin built as a reader
/// builds it (a cdylib from the listing's sources) and its config from the chapter.
fn threshold_train(dir: &Path) -> String {
    let plugins = build_threshold_plugin();
    let chapter = std::fs::read_to_string(root().join("book/src/task-plugin.md")).unwrap();
    let yaml = chapter
        .split("```yaml,listing=threshold-task\n")
        .find_map(|rest| rest.starts_with("# threshold.yaml").then(|| rest.split("```").next().unwrap()))
        .expect("the chapter's threshold.yaml block");
    std::fs::write(dir.join("threshold.yaml"), yaml).unwrap();
    sparsevar_in(dir, "train threshold.yaml", &[("SPARSEVAR_PLUGIN_PATH", &plugins)])
}

/// Builds book/listings/threshold-task as a cdylib in a scratch workspace (its own target
/// folder: the `cargo test` running us holds the lock of the main one) and returns the folder
/// holding the library. The workspace's Cargo.lock pins the same dependency versions.
fn build_threshold_plugin() -> PathBuf {
    let ws = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("book-threshold-task");
    std::fs::create_dir_all(&ws).unwrap();
    let r = root();
    let manifest = format!(
        "[package]\nname = \"threshold-task\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\npath = \"{}\"\n\n[dependencies]\nsparsevar-plugin = {{ path = \"{}\" }}\n\n[workspace]\n",
        r.join("book/listings/threshold-task/src/lib.rs").display(),
        r.join("crates/sparsevar-plugin").display()
    );
    std::fs::write(ws.join("Cargo.toml"), manifest).unwrap();
    if !ws.join("Cargo.lock").exists() {
        std::fs::copy(r.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    }
    let target = ws.join("target");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(ws.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "building the threshold-task listing failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let lib = target.join("debug").join(format!("{}threshold_task{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    assert!(lib.is_file(), "{} was not built", lib.display());
    // Only this plugin on the path: the chapter's output lists no other.
    let dir = ws.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    dir
}

#[test]
fn the_books_quoted_outputs_are_what_the_program_prints() {
    let blocks = output_blocks();
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    for expected in ["quickstart-train", "first-script", "threshold-train", "heads-compare"] {
        assert!(names.contains(&expected), "no ```text,output={expected} block in book/src (found {names:?})");
    }
    let bless = std::env::var_os("SPARSEVAR_BLESS").is_some();
    let mut stale = Vec::new();
    for b in blocks.iter().rev() {
        let dir = ScratchDir::created(&format!("book-output-{}", b.name));
        let actual = match b.name.as_str() {
            "quickstart-train" => quickstart_train(&dir),
            "first-script" => first_script(&dir),
            "threshold-train" => threshold_train(&dir),
            "heads-compare" => heads_compare(&dir),
            other => panic!("{}: unknown output={other}; known: quickstart-train, first-script, threshold-train, heads-compare", b.chapter.display()),
        };
        if normalize(&actual) == normalize(&b.text) {
            continue;
        }
        if bless {
            // Blocks are visited from the last, so earlier line numbers stay valid.
            let text = std::fs::read_to_string(&b.chapter).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            // A line that differs only in a masked duration keeps the book's (measured on a
            // release build), not this test build's.
            let old: Vec<&str> = b.text.lines().collect();
            let new = actual.lines().enumerate().map(|(k, l)| match old.get(k) {
                Some(o) if normalize(o) == normalize(l) => o.to_string(),
                _ => l.to_string(),
            });
            lines.splice(b.lines.clone(), new);
            std::fs::write(&b.chapter, lines.join("\n") + "\n").unwrap();
        } else {
            stale.push(format!("{} (output={}):\n--- the book\n{}--- the program\n{}", b.chapter.display(), b.name, b.text, actual));
        }
    }
    assert!(stale.is_empty(), "the book quotes outputs the program no longer prints; rerun with SPARSEVAR_BLESS=1 to update them:\n\n{}", stale.join("\n"));
}

#[test]
fn normalize_masks_durations_and_thread_counts_only() {
    assert_eq!(normalize("4 of 4 members learned in 57.7 s; results in x\n"), "4 of 4 members learned in # s; results in x\n");
    assert_eq!(normalize("training 4 members on cpu (2 threads) -> runs/x\n"), "training 4 members on cpu # threads) -> runs/x\n");
    assert_eq!(normalize("learned at step 700, 1.2 s -> runs\n"), "learned at step 700, # s -> runs\n");
    assert_ne!(normalize("learned at step 700\n"), normalize("learned at step 1000\n"));
    assert_ne!(normalize("mass on S 0.89\n"), normalize("mass on S 0.95\n"));
}
