//! The book cannot rot: every `rhai` block runs, every `yaml` block parses, every `rust`
//! block is a file some crate compiles, the generated references match the code, and every
//! chapter, figure and include the book names exists. (The conventions are in
//! `common/mod.rs`.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Block, all_blocks, chapters, root, src};

/// How to regenerate the reference pages, quoted by the failure message.
const BLESS: &str = "SPARSEVAR_BLESS=1 cargo test -p sparsevar-book-tests --test book reference";

#[test]
fn every_rhai_block_runs() {
    let registry = common::registry_with(&[]);
    let blocks: Vec<Block> = all_blocks().into_iter().filter(|b| b.lang == "rhai" && !b.ignored() && b.listing().is_none()).collect();
    assert!(blocks.len() >= 5, "only {} runnable rhai blocks found: is book/src there?", blocks.len());
    let failures: Vec<String> = blocks.iter().filter_map(|b| common::run_rhai(b, registry.clone()).err()).collect();
    assert!(failures.is_empty(), "{} of {} rhai blocks failed:\n\n{}", failures.len(), blocks.len(), failures.join("\n\n"));
}

#[test]
fn every_yaml_block_parses() {
    let registry = common::registry_with(&[]);
    let blocks: Vec<Block> = all_blocks().into_iter().filter(|b| b.lang == "yaml" && !b.ignored() && b.listing().is_none()).collect();
    assert!(blocks.len() >= 5, "only {} yaml blocks found", blocks.len());
    let failures: Vec<String> = blocks.iter().filter_map(|b| common::parse_yaml(b, &registry).err()).collect();
    assert!(failures.is_empty(), "{} of {} yaml blocks failed:\n\n{}", failures.len(), blocks.len(), failures.join("\n\n"));
}

/// Rare on purpose: a block that cannot run must say so, and there should be few of them.
#[test]
fn ignored_blocks_are_rare() {
    let all = all_blocks();
    let ignored: Vec<String> = all.iter().filter(|b| matches!(b.lang.as_str(), "rhai" | "yaml") && b.ignored()).map(Block::place).collect();
    let runnable = all.iter().filter(|b| matches!(b.lang.as_str(), "rhai" | "yaml") && !b.ignored()).count();
    assert!(ignored.len() * 4 <= runnable, "{} ignored rhai/yaml blocks against {runnable} checked ones: {ignored:?}", ignored.len());
}

/// The `{{#include path[:range]}}` directives of a text: (path as written, resolved path).
fn includes(chapter: &Path, text: &str) -> Vec<(String, PathBuf)> {
    let dir = src().join(chapter).parent().unwrap().to_path_buf();
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{#include ") {
        let tail = &rest[i + "{{#include ".len()..];
        let end = tail.find("}}").expect("unclosed {{#include");
        let arg = tail[..end].trim();
        // `path:start:end` or `path:anchor`: the path is what precedes the first colon.
        let path = arg.split(':').next().unwrap().to_string();
        out.push((path.clone(), dir.join(&path)));
        rest = &tail[end..];
    }
    out
}

/// Files the workspace compiles: a crate's or plugin's `src/`, `tests/` or `examples/`, or a
/// listing under `book/listings/NAME/` that this crate's `tests/listing_NAME.rs` builds.
fn included_file_is_compiled(path: &Path) -> Result<(), String> {
    let rel = path.strip_prefix(root()).map_err(|_| format!("{} is outside the workspace", path.display()))?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
    let ok = match parts.as_slice() {
        ["crates" | "plugins", _, "src" | "tests" | "examples", ..] => path.extension().is_some_and(|e| e == "rs"),
        ["book", "listings", name, "src" | "tests", ..] => {
            let test = root().join(format!("crates/sparsevar-book-tests/tests/listing_{}.rs", name.replace('-', "_")));
            let text = std::fs::read_to_string(&test).map_err(|_| format!("{} has no test binary {}", rel.display(), test.display()))?;
            if !text.contains(&rel.strip_prefix("book/listings").unwrap().display().to_string()) {
                return Err(format!("{} does not compile {}", test.display(), rel.display()));
            }
            true
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("{} is not a Rust file that a crate compiles", rel.display())) }
}

#[test]
fn every_rust_block_is_a_compiled_file() {
    let mut checked = 0;
    for b in all_blocks().iter().filter(|b| b.lang == "rust") {
        for line in b.raw.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.trim().starts_with("{{#include ") && line.trim().ends_with("}}"),
                "{}: a rust block may only {{{{#include}}}} files that a crate compiles (put new code in book/listings/NAME and test it from tests/listing_NAME.rs); found: {line}",
                b.place()
            );
        }
        for (written, path) in includes(&b.file, &b.raw) {
            let path = path.canonicalize().unwrap_or_else(|e| panic!("{}: {written}: {e}", b.place()));
            included_file_is_compiled(&path).unwrap_or_else(|e| panic!("{}: {e}", b.place()));
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} included Rust files");
}

#[test]
fn every_include_exists() {
    for c in chapters() {
        let text = std::fs::read_to_string(src().join(&c)).unwrap();
        for (written, path) in includes(&c, &text) {
            assert!(path.is_file(), "book/src/{}: {{{{#include {written}}}}}: no such file {}", c.display(), path.display());
        }
    }
}

/// The chapters SUMMARY.md links, in order.
fn summary_links() -> Vec<String> {
    let text = std::fs::read_to_string(src().join("SUMMARY.md")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(i) = line.find("](") {
            let rest = &line[i + 2..];
            out.push(rest[..rest.find(')').expect("link closed")].to_string());
        }
    }
    out
}

#[test]
fn summary_lists_every_chapter_and_only_existing_ones() {
    let linked: BTreeSet<String> = summary_links().into_iter().collect();
    for l in &linked {
        assert!(src().join(l).is_file(), "SUMMARY.md links {l}, which does not exist");
    }
    for c in chapters() {
        let c = c.display().to_string();
        assert!(c == "SUMMARY.md" || linked.contains(&c), "book/src/{c} is not in SUMMARY.md");
    }
}

/// Relative link targets (`](x)` not starting with a scheme or `#`) of a chapter.
fn local_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let Some(end) = tail.find(')') else { break };
        let target = tail[..end].split('#').next().unwrap().trim().to_string();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target);
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_link_and_figure_exists_and_every_figure_is_used() {
    let mut used = BTreeSet::new();
    for c in chapters() {
        let text = std::fs::read_to_string(src().join(&c)).unwrap();
        let dir = src().join(&c).parent().unwrap().to_path_buf();
        for l in local_links(&text) {
            let p = dir.join(&l);
            assert!(p.exists(), "book/src/{}: link to {l}: no such file {}", c.display(), p.display());
            if let Ok(p) = p.canonicalize() {
                used.insert(p);
            }
        }
    }
    for e in std::fs::read_dir(src().join("figures")).unwrap() {
        let p = e.unwrap().path().canonicalize().unwrap();
        assert!(used.contains(&p), "{} is not shown by any chapter: remove it", p.display());
    }
}

/// Compare a generated reference page with the committed one (or rewrite it under
/// `SPARSEVAR_BLESS=1`).
fn check_generated(rel: &str, generated: &str) {
    let path = src().join(rel);
    if std::env::var_os("SPARSEVAR_BLESS").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b).unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "book/src/{rel} is out of date with the code (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\nregenerate it with:\n  {BLESS}",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn reference_config_matches_the_config_types() {
    check_generated("reference/config.md", &sparsevar_experiment::reference::config_reference());
}

#[test]
fn reference_script_api_matches_the_registrations() {
    check_generated("reference/script-api.md", &sparsevar_script::api_reference());
}

/// Fragments of messages that come from serde, serde_yaml or the OS rather than from
/// sparsevar's sources; the troubleshooting chapter may quote them.
const EXTERNAL_MESSAGES: &[&str] = &[
    "unknown field `",
    "expected one of",
    "unknown variant `",
    ", expected `transformer` or `mlp`",
    "missing field `kind`",
    "did not find expected key at line",
    "invalid type:",
];

/// The text of every Rust source file of the workspace's crates and plugins, with string
/// escapes undone (`\"` → `"`, `{{` → `{`) so quoted messages can be found in it.
fn all_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
                out.push('\n');
            }
        }
    }
    let mut text = String::new();
    for top in ["crates", "plugins"] {
        for e in std::fs::read_dir(root().join(top)).unwrap() {
            let krate = e.unwrap().path();
            if !krate.ends_with("sparsevar-book-tests") {
                walk(&krate.join("src"), &mut text);
            }
        }
    }
    text.replace("\\\"", "\"").replace("{{", "{").replace("}}", "}")
}

/// Every message the troubleshooting chapter quotes (a `> ` line; `…` marks the parts that
/// depend on the input) must still be one the code can print: each literal fragment of
/// 12 characters or more (punctuation at its ends aside) occurs in a source file, so a reworded or removed message makes the
/// chapter fail here instead of misleading its reader.
#[test]
fn troubleshooting_quotes_messages_the_code_prints() {
    let text = std::fs::read_to_string(src().join("troubleshooting.md")).unwrap();
    let sources = all_sources();
    let mut checked = 0;
    let mut missing = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("> ")) {
        let msg = line.trim_start_matches("error: ").trim_start_matches("warning: ");
        for fragment in msg.split('…').map(str::trim).filter(|f| f.chars().count() >= 12) {
            // A fragment may span an external part: check each piece that is ours.
            let ours = EXTERNAL_MESSAGES.iter().fold(fragment.to_string(), |f, ext| f.replace(ext, "…"));
            // Punctuation at a piece's ends may belong to a neighbouring format argument.
            let trim = |f: &str| f.trim_matches(|c: char| c.is_whitespace() || "`():;,=".contains(c)).to_string();
            for piece in ours.split('…').map(trim).filter(|f| f.chars().count() >= 12) {
                checked += 1;
                if !sources.contains(piece.as_str()) {
                    missing.push(format!("{piece:?}  (from: {line})"));
                }
            }
        }
    }
    assert!(checked >= 50, "only {checked} message fragments checked");
    assert!(
        missing.is_empty(),
        "book/src/troubleshooting.md quotes messages no source file contains (reword the chapter or the code):\n{}",
        missing.join("\n")
    );
}
