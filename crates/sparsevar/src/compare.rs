//! `sparsevar compare DIR... [--out DIR]`: the table of several runs (config keys that
//! differ, outcomes) on stdout, and with --out the table as CSV and Markdown plus one figure
//! overlaying the runs' curves (training runs) or their m*(T) (sweeps).

use std::path::{Path, PathBuf};

use anyhow::Result;
use sparsevar_experiment::compare::{Comparison, RunData, RunKind, csv_text, load_comparison, markdown, plain, table};
use sparsevar_experiment::results::resolve_path;
use sparsevar_plot::{PlotError, PlotFile, comparison, run_comparison};

use crate::BadInput;

/// The files `--out` receives.
const OUTPUTS: [&str; 4] = ["compare.csv", "compare.md", "compare.png", "compare.svg"];

pub fn run(dirs: &[PathBuf], out: Option<&Path>) -> Result<()> {
    // Every problem with the folders is the user's input (exit status 2), one line.
    let c = load_comparison(dirs).map_err(|e| BadInput(e.to_string()))?;
    let out = out.map(resolve_path);
    if let Some(out) = &out {
        if out.exists() && !out.is_dir() {
            return Err(BadInput(format!("--out {} is a file, not a folder", out.display())).into());
        }
        if let Some(f) = OUTPUTS.iter().map(|f| out.join(f)).find(|f| f.exists()) {
            return Err(BadInput(format!("{} already exists; choose another --out or remove it first", f.display())).into());
        }
    }
    let (header, rows) = table(&c);
    print!("{}", plain(&header, &rows));
    let Some(out) = out else { return Ok(()) };
    std::fs::create_dir_all(&out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    for (name, text) in [("compare.csv", csv_text(&header, &rows)), ("compare.md", markdown(&header, &rows))] {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        println!("{}", p.display());
    }
    for ext in ["png", "svg"] {
        let f = figure(&c, &out.join(format!("compare.{ext}"))).map_err(|e| match e {
            // Runs whose data cannot share a figure (sweeps of different measures).
            PlotError::Input { .. } | PlotError::Empty { .. } => anyhow::Error::new(BadInput(e.to_string())),
            other => other.into(),
        })?;
        println!("{}", f.path.display());
    }
    Ok(())
}

/// Training runs: their curves overlaid; sweeps: their m*(T). Each run labelled by the keys
/// that differ.
fn figure(c: &Comparison, path: &Path) -> Result<PlotFile, PlotError> {
    let labels: Vec<String> = c.runs.iter().map(|r| r.label(&c.differing)).collect();
    let title = if c.differing.is_empty() { format!("{} runs compared", c.runs.len()) } else { format!("{} runs: {}", c.runs.len(), c.differing.join(", ")) };
    match c.kind {
        RunKind::Train => {
            let runs: Vec<(&str, &[_])> = c
                .runs
                .iter()
                .zip(&labels)
                .filter_map(|(r, l)| match &r.data {
                    RunData::Train { curves, .. } => Some((l.as_str(), curves.as_slice())),
                    RunData::Sweep { .. } => None,
                })
                .collect();
            run_comparison(&runs, &title, path)
        }
        RunKind::Sweep => {
            let entries: Vec<(&str, &_)> = c
                .runs
                .iter()
                .zip(&labels)
                .filter_map(|(r, l)| match &r.data {
                    RunData::Sweep { summary } => Some((l.as_str(), summary)),
                    RunData::Train { .. } => None,
                })
                .collect();
            comparison(&entries, path)
        }
    }
}
