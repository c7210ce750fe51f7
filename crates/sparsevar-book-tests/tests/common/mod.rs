//! Shared by the book's tests: the book's files, its fenced code blocks, the registry its
//! blocks run against, and the runners for `rhai` and `yaml` blocks.
//!
//! Code-block info strings the tests read:
//!
//! * `rhai` — runs through `sparsevar_script::run_inline` in quick mode, in a fresh out
//!   folder, as if the script were a file in `scripts/` (so `load_config("parity_t16.yaml")`
//!   finds the project's configs);
//! * `yaml` — parses with `ExperimentConfig::parse`, or `SweepConfig::parse` when it has a
//!   top-level `sweep:` key;
//! * `rust` — must consist of `{{#include …}}` lines only, each naming a file that a crate of
//!   the workspace compiles (see `included_file_is_compiled`);
//! * `…,ignore` — not run (partial snippets, output, things that need a GPU);
//! * `…,listing=NAME` — run by the test binary of the tutorial listing `book/listings/NAME`,
//!   whose registry also holds that plugin.
//!
//! Everything else (`sh`, `text`, `toml`, `json`, …) is documentation only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sparsevar_core::backend::{Backend, BackendError};
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::sweep::SweepConfig;
use sparsevar_plugin::PluginHost;
use sparsevar_script::{ScriptContext, run_inline};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// `book/`.
pub fn book() -> PathBuf {
    root().join("book")
}

/// `book/src/`.
pub fn src() -> PathBuf {
    book().join("src")
}

/// Every Markdown file under `book/src`, sorted, as paths relative to it.
pub fn chapters() -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &src(), &mut out);
    out.sort();
    out
}

/// A fenced code block of the book.
#[derive(Clone, Debug)]
pub struct Block {
    /// The chapter, relative to `book/src`.
    pub file: PathBuf,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The language: the info string up to the first `,` or space.
    pub lang: String,
    /// The rest of the info string, split at `,` and spaces (`ignore`, `listing=NAME`, …).
    pub attrs: Vec<String>,
    /// The contents as written, with the fence's indentation removed.
    pub raw: String,
    /// The contents with every `{{#include …}}` line replaced by what it includes, as mdbook
    /// shows it: what the tests run.
    pub code: String,
}

impl Block {
    /// `file:line`, for messages.
    pub fn place(&self) -> String {
        format!("book/src/{}:{}", self.file.display(), self.line)
    }
    pub fn ignored(&self) -> bool {
        self.attrs.iter().any(|a| a == "ignore")
    }
    /// The listing this block belongs to (`listing=NAME`), if any.
    pub fn listing(&self) -> Option<&str> {
        self.attrs.iter().find_map(|a| a.strip_prefix("listing="))
    }
}

/// The fenced code blocks of one chapter (backtick fences, any indentation).
pub fn blocks_of(chapter: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(src().join(chapter)).unwrap();
    /// A fence being read: where it opened, its indentation and backtick count, its info
    /// string, and the lines so far.
    struct Open {
        line: usize,
        indent: usize,
        ticks: usize,
        lang: String,
        attrs: Vec<String>,
        lines: Vec<String>,
    }
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let ticks = 3 + info.chars().take_while(|&c| c == '`').count();
                    let info = info.trim_start_matches('`').trim();
                    let mut parts = info.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_string);
                    let lang = parts.next().unwrap_or_default();
                    open = Some(Open { line: i + 1, indent, ticks, lang, attrs: parts.collect(), lines: Vec::new() });
                }
            }
            Some(o) => {
                if trimmed.starts_with(&"`".repeat(o.ticks)) && trimmed.trim_end().chars().all(|c| c == '`') {
                    let raw = o.lines.join("\n") + "\n";
                    let code = expand_includes(chapter, &raw);
                    out.push(Block { file: chapter.to_path_buf(), line: o.line, lang: o.lang.clone(), attrs: o.attrs.clone(), raw, code });
                    open = None;
                } else {
                    let cut = line.char_indices().take_while(|&(j, c)| j < o.indent && c == ' ').count();
                    o.lines.push(line[cut..].to_string());
                }
            }
        }
    }
    assert!(open.is_none(), "book/src/{}: a code fence is never closed", chapter.display());
    out
}

/// `text` with each line `{{#include path}}` replaced by the file, or by lines of it as
/// mdbook reads them (1-based, inclusive): `path:N` line N, `path:A:B` lines A to B,
/// `path:A:` from A, `path::B` up to B. `path` is relative to the chapter.
pub fn expand_includes(chapter: &Path, text: &str) -> String {
    let dir = src().join(chapter).parent().unwrap().to_path_buf();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        let Some(arg) = t.strip_prefix("{{#include ").and_then(|r| r.strip_suffix("}}")) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let mut parts = arg.trim().split(':');
        let path = dir.join(parts.next().unwrap());
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("book/src/{}: {{{{#include {arg}}}}}: {}: {e}", chapter.display(), path.display()));
        let lines: Vec<&str> = body.lines().collect();
        let num = |p: Option<&str>| {
            p.filter(|s| !s.is_empty()).map(|s| {
                s.parse::<usize>()
                    .unwrap_or_else(|_| panic!("book/src/{}: {{{{#include {arg}}}}}: only line ranges are supported, not anchors", chapter.display()))
            })
        };
        // `path:N` is line N alone; `path:A:B` lines A to B, either end open when empty.
        let (a, b) = (parts.next(), parts.next());
        let from = num(a).unwrap_or(1).max(1);
        let to = match (a, b) {
            (Some(_), None) => from,
            _ => num(b).unwrap_or(lines.len()),
        }
        .min(lines.len());
        for l in lines.get(from - 1..to).unwrap_or(&[]) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Every code block of the book.
pub fn all_blocks() -> Vec<Block> {
    chapters().iter().flat_map(|c| blocks_of(c)).collect()
}

/// The registry the book's blocks run against: the built-in tasks and attention variants,
/// the `cpu` and `cpu-f64` backends, `wgpu` and `auto` by name only (a block that trains on
/// them must be marked `ignore`), and the three example plugins linked statically, as
/// `sparsevar` has them after `cargo build --release --workspace`.
pub fn registry_with(extra: &[(&sparsevar_plugin::Plugin, &str)]) -> Arc<Registry> {
    let mut r = Registry::builtin();
    r.register_backend("cpu", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f32>::new()) as Box<dyn Backend>))).unwrap();
    r.register_backend("cpu-f64", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f64>::new()) as Box<dyn Backend>))).unwrap();
    for name in ["wgpu", "auto"] {
        r.register_backend(
            name,
            "built-in",
            Arc::new(move || {
                Err(BackendError::Device { backend: name.into(), message: "the book's tests do not start this backend: mark the block `ignore`".into() })
            }),
        )
        .unwrap();
    }
    let mut host = PluginHost::new();
    let plugins =
        [(&sparse_sum_task::PLUGIN, "sparse-sum-task"), (&sharp_attention::PLUGIN, "sharp-attention"), (&reference_backend::PLUGIN, "reference-backend")];
    for (plugin, name) in plugins.iter().copied().chain(extra.iter().copied()) {
        host.register_static(plugin, name, &mut r).unwrap_or_else(|e| panic!("{e}"));
    }
    Arc::new(r)
}

/// A fresh, empty folder for one block.
pub fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sparsevar-book").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A name for a block's out folder.
fn slug(b: &Block) -> String {
    format!("{}-{}", b.file.display(), b.line).replace(['/', '.'], "_")
}

/// Run a `rhai` block in quick mode; the error is the script's, with the block's place.
pub fn run_rhai(b: &Block, registry: Arc<Registry>) -> Result<(), String> {
    let out = fresh(&slug(b)).join("out");
    // As if the block were a script in scripts/: load_config and import resolve there.
    let script = root().join("scripts").join(format!("book_{}.rhai", slug(b)));
    let mut ctx = ScriptContext::new(script, &out, registry);
    ctx.quick = true;
    ctx.echo = false;
    ctx.threads = Some(1);
    ctx.time_limit = Some(Duration::from_secs(600));
    run_inline(&b.code, ctx).map(|_| ()).map_err(|e| format!("{} (rhai block; line numbers count from the block's first line):\n{e}", b.place()))
}

/// Parse a `yaml` block as an experiment or (with a `sweep:` key) a sweep config.
pub fn parse_yaml(b: &Block, registry: &Registry) -> Result<(), String> {
    let value: serde_yaml::Value = serde_yaml::from_str(&b.code).map_err(|e| format!("{}: not YAML: {e}", b.place()))?;
    let origin = b.place();
    let r = if value.get("sweep").is_some() {
        SweepConfig::parse(&b.code, &origin, &[], registry).map(|_| ())
    } else {
        ExperimentConfig::parse(&b.code, &origin, &[], registry).map(|_| ())
    };
    r.map_err(|e| format!("{} (yaml block; mark partial snippets ```yaml,ignore): {e}", b.place()))
}

/// Run every `rhai` and `yaml` block of listing `name` against `registry`; fails unless
/// there is at least one, so a listing's blocks cannot silently stop being checked.
pub fn check_listing_blocks(name: &str, registry: Arc<Registry>) {
    let blocks: Vec<Block> = all_blocks().into_iter().filter(|b| b.listing() == Some(name) && !b.ignored()).collect();
    assert!(!blocks.is_empty(), "no block of the book is marked listing={name}");
    let mut failures = Vec::new();
    for b in &blocks {
        let r = match b.lang.as_str() {
            "rhai" => run_rhai(b, registry.clone()),
            "yaml" => parse_yaml(b, &registry),
            other => Err(format!("{}: listing={name} on a `{other}` block: only rhai and yaml blocks are run", b.place())),
        };
        if let Err(e) = r {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of {} blocks failed:\n\n{}", failures.len(), blocks.len(), failures.join("\n\n"));
}
