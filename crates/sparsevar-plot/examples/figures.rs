//! Draw every figure of a finished sweep and training run.
//!
//! `cargo run -p sparsevar-plot --example figures -- SWEEP_DIR TRAIN_DIR OUT_DIR`
//!
//! Reads SWEEP_DIR/summary.json and runs.csv, TRAIN_DIR/summary.json and metrics.csv, and
//! writes PNG and SVG figures into OUT_DIR; takes a second or two. The attention heat map
//! needs weights, which summary.json does not keep: see the `attention` example.

use std::path::PathBuf;

use sparsevar_plot::{comparison, load, scaling, scaling_with_runs, success_map, training_curves};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [sweep, train, out] = args.as_slice() else {
        return Err("usage: figures SWEEP_DIR TRAIN_DIR OUT_DIR".into());
    };
    let summary = load::sweep_summary(sweep)?;
    let runs = load::runs(sweep)?;
    for ext in ["png", "svg"] {
        let f = scaling(&summary, out.join(format!("scaling.{ext}")))?;
        println!("{} ({} series)", f.path.display(), f.series.len());
        let f = scaling_with_runs(&summary, &runs, out.join(format!("scaling_seeds.{ext}")))?;
        println!("{}", f.path.display());
        for m in &summary.models {
            let f = success_map(&summary, &m.model, out.join(format!("success_{}.{ext}", m.model)))?;
            println!("{} ({} cells)", f.path.display(), f.cells.len());
        }
        let f = comparison(&[("sweep", &summary)], out.join(format!("comparison.{ext}")))?;
        println!("{}", f.path.display());
        let members = load::members(train)?;
        let curves = load::curves(train)?;
        let f = training_curves(&curves, &members, "Training curves: sparse parity, T = 16, s = 3", out.join(format!("curves.{ext}")))?;
        println!("{}", f.path.display());
    }
    Ok(())
}
