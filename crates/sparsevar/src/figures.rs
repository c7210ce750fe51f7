//! Figures drawn into `DIR/figures/` when a run finishes (and by `sparsevar plot DIR`).
//! A figure that fails is reported and skipped: the results it would show are already on
//! disk.

use std::path::{Path, PathBuf};

use sparsevar_experiment::sweep::{RunRow, SweepSummary, read_runs};
use sparsevar_experiment::train::{CurvePoint, MemberResult};
use sparsevar_plot::{PlotError, PlotFile, load, member_attention, scaling_with_runs, success_map, training_curves};

fn report(r: Result<PlotFile, PlotError>, drawn: &mut Vec<PathBuf>) {
    match r {
        Ok(f) => drawn.push(f.path),
        Err(e) => eprintln!("warning: figure not drawn: {e}"),
    }
}

/// Training curves and one attention heat map per member (where attention was captured).
pub fn train_figures(dir: &Path, curves: &[CurvePoint], members: &[MemberResult], title: &str) -> Vec<PathBuf> {
    let fig = dir.join("figures");
    let mut drawn = Vec::new();
    report(training_curves(curves, members, title, fig.join("curves.png")), &mut drawn);
    for m in members.iter().filter(|m| m.attention.as_ref().is_some_and(|a| !a.weights.is_empty())) {
        let t = format!("Mean CLS attention, seed {} ({}), S = {:?}", m.seed, if m.learned { "learned" } else { "not learned" }, m.relevant);
        report(member_attention(m, &t, fig.join(format!("attention_seed{}.png", m.seed))), &mut drawn);
    }
    drawn
}

/// The scaling plot (with each seed's threshold) and a success map per model.
pub fn sweep_figures(dir: &Path, summary: &SweepSummary, runs: &[RunRow]) -> Vec<PathBuf> {
    let fig = dir.join("figures");
    let mut drawn = Vec::new();
    for ext in ["png", "svg"] {
        report(scaling_with_runs(summary, runs, fig.join(format!("scaling.{ext}"))), &mut drawn);
    }
    if runs.iter().any(|r| r.m > 0) {
        for m in &summary.models {
            report(success_map(summary, &m.model, fig.join(format!("success_{}.png", m.model))), &mut drawn);
        }
    }
    drawn
}

/// Redraw the figures of a results folder (training or sweep) from its files.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.join("runs.csv").exists() {
        let summary = load::sweep_summary(dir).map_err(|e| e.to_string())?;
        let runs = read_runs(dir)?;
        return Ok(sweep_figures(dir, &summary, &runs));
    }
    if dir.join("metrics.csv").exists() {
        let members = load::members(dir).map_err(|e| e.to_string())?;
        let curves = load::curves(dir).map_err(|e| e.to_string())?;
        return Ok(train_figures(dir, &curves, &members, &format!("Training curves: {}", dir.display())));
    }
    Err(format!("{} is not a results folder (no runs.csv or metrics.csv)", dir.display()))
}
