//! Draw the figures of sweeps alone, and compare them.
//!
//! `cargo run -p sparsevar-plot --example sweep_only -- OUT_DIR SWEEP_DIR...`
//!
//! Writes scaling.png (per sweep, numbered) and comparison.png; online sweeps (every m = 0)
//! plot median steps to learn. Takes a second.

use std::path::PathBuf;

use sparsevar_plot::{comparison, load, scaling};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [out, sweeps @ ..] = args.as_slice() else {
        return Err("usage: sweep_only OUT_DIR SWEEP_DIR...".into());
    };
    let summaries = sweeps.iter().map(load::sweep_summary).collect::<Result<Vec<_>, _>>()?;
    for (i, s) in summaries.iter().enumerate() {
        println!("{}", scaling(s, out.join(format!("scaling{i}.png")))?.path.display());
    }
    let labels: Vec<String> = sweeps.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    let entries: Vec<(&str, &_)> = labels.iter().map(String::as_str).zip(summaries.iter()).collect();
    println!("{}", comparison(&entries, out.join("comparison.png"))?.path.display());
    Ok(())
}
