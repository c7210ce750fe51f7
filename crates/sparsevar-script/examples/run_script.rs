//! Run a script without the `sparsevar` program (CPU backend, built-in tasks only):
//!
//!     cargo run --release -p sparsevar-script --example run_script -- scripts/01_quickstart.rhai [--quick] [--out DIR] [--set key=value]...
//!
//! The program's `sparsevar run` is the real entry point (it also loads plugins and offers
//! every backend); this example is for working on the script crate alone.

use std::sync::Arc;

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_script::{ScriptContext, run_script};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(script) = args.next() else {
        eprintln!("usage: run_script SCRIPT.rhai [--quick] [--out DIR] [--set key=value]...");
        return std::process::ExitCode::from(2);
    };
    let mut registry = Registry::builtin();
    registry.register_backend("cpu", "built-in", Arc::new(|| Ok(Box::new(CpuBackend::<f32>::new()) as Box<dyn Backend>))).expect("one cpu backend");
    let stem = std::path::Path::new(&script).file_stem().and_then(|s| s.to_str()).unwrap_or("script").to_string();
    let mut ctx = ScriptContext::new(&script, sparsevar_experiment::results::fresh_dir(std::path::Path::new("runs"), &stem), Arc::new(registry));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => ctx.quick = true,
            "--out" => ctx.out_dir = args.next().unwrap_or_default().into(),
            "--set" => {
                let kv = args.next().unwrap_or_default();
                let Some((k, v)) = kv.split_once('=') else {
                    eprintln!("--set {kv}: expected key=value");
                    return std::process::ExitCode::from(2);
                };
                ctx.params.insert(k.to_string(), v.to_string());
            }
            other => {
                eprintln!("unknown argument {other}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    match run_script(ctx) {
        Ok(o) => {
            eprintln!("done in {:.1} s; {} files in {}", o.seconds, o.files.len(), o.out_dir.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
