//! Stamps the compatibility record of this build of the plugin interface: the compiler
//! (`rustc --version`), the target, and a fingerprint of the interface sources
//! (sparsevar-core's and this crate's), so that a plugin built from other sources, even
//! with the same version number, is refused instead of misread.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=SPARSEVAR_PLUGIN_RUSTC={version}");
    println!("cargo:rustc-env=SPARSEVAR_PLUGIN_TARGET={}", std::env::var("TARGET").unwrap_or_default());

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let roots = [manifest.join("../sparsevar-core/src"), manifest.join("src")];
    let mut files = Vec::new();
    for (label, root) in ["core", "plugin"].into_iter().zip(&roots) {
        println!("cargo:rerun-if-changed={}", root.display());
        collect(label, root, root, &mut files);
    }
    files.sort();
    // FNV-1a over (relative path, contents) of every source file: stable across runs and
    // machines, unlike std's DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (rel, path) in &files {
        eat(rel.as_bytes());
        eat(&[0]);
        eat(&std::fs::read(path).unwrap_or_default());
        eat(&[0]);
    }
    let fingerprint = if files.is_empty() { "unknown".to_string() } else { format!("{h:016x}") };
    println!("cargo:rustc-env=SPARSEVAR_PLUGIN_FINGERPRINT={fingerprint}");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Every `.rs` file under `dir`, as (`label`/path relative to `root`, path).
fn collect(label: &str, root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(label, root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            out.push((format!("{label}/{rel}"), p));
        }
    }
}
