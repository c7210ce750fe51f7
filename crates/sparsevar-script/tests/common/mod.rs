//! Shared by the script tests: a registry with the CPU backend, fresh folders, and readers
//! of the figure files' sizes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_script::ScriptContext;

/// The built-in tasks and attention variants, and the `cpu` backend.
pub fn registry() -> Arc<Registry> {
    let mut r = Registry::builtin();
    r.register_backend("cpu", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f32>::new()) as Box<dyn Backend>))).unwrap();
    Arc::new(r)
}

/// An empty folder of its own for one test.
pub fn fresh(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sparsevar-script").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A quick-mode context that prints nothing and trains on one thread.
pub fn context(script: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ScriptContext {
    let mut c = ScriptContext::new(script, out, registry());
    c.quick = true;
    c.echo = false;
    c.threads = Some(1);
    c
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// Width and height from a PNG's signature and IHDR chunk (panics if it is not a PNG).
pub fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() > 33, "{}: too short for a PNG", path.display());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}: no PNG signature", path.display());
    assert_eq!(&b[12..16], b"IHDR", "{}: first chunk is not IHDR", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// Width and height of an SVG's root element (panics if it is not an SVG).
pub fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text.find("<svg").unwrap_or_else(|| panic!("{}: no <svg> element", path.display()));
    let tag = &text[start..start + text[start..].find('>').unwrap()];
    let attr = |name: &str| -> u32 {
        let i = tag.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("{}: <svg> has no {name}", path.display())) + name.len() + 3;
        tag[i..i + tag[i..].find('"').unwrap()].trim_end_matches("px").parse().unwrap()
    };
    assert!(text.trim_end().ends_with("</svg>"), "{}: SVG not closed", path.display());
    (attr("width"), attr("height"))
}

/// The size of a PNG or SVG figure, by extension.
pub fn figure_size(path: &Path) -> (u32, u32) {
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => png_size(path),
        Some("svg") => svg_size(path),
        _ => panic!("{}: not a figure", path.display()),
    }
}
