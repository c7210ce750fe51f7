//! Figures drawn into `DIR/figures/` when a run finishes (and by `sparsevar plot DIR`).
//! They are drawn after every result is on disk, so a figure that fails loses nothing: it is
//! reported on one line naming the file, the others are still drawn, and the command then
//! exits with status 1.

use std::path::{Path, PathBuf};

use anyhow::Result;
use sparsevar_experiment::sweep::{RunRow, SweepSummary};
use sparsevar_experiment::train::{CurvePoint, MemberResult};
use sparsevar_plot::{PlotError, PlotFile, load, member_attention, scaling_with_runs, success_map, training_curves};

use crate::{BadInput, Exit};

/// The figures drawn, and how many could not be.
#[derive(Debug, Default)]
pub struct Drawn {
    pub files: Vec<PathBuf>,
    pub failed: usize,
}

impl Drawn {
    fn add(&mut self, path: PathBuf, r: Result<PlotFile, PlotError>) {
        match r {
            Ok(f) => self.files.push(f.path),
            Err(e) => {
                eprintln!("error: figure {} not written: {e}", path.display());
                self.failed += 1;
            }
        }
    }

    /// An error (exit status 1) when a figure failed; the results in `dir` are complete.
    pub fn check(&self, dir: &Path) -> Result<()> {
        if self.failed > 0 {
            return Err(Exit::Figures { count: self.failed, dir: dir.to_path_buf() }.into());
        }
        Ok(())
    }
}

/// Training curves and one attention heat map per member (where attention was captured).
pub fn train_figures(dir: &Path, curves: &[CurvePoint], members: &[MemberResult], title: &str) -> Drawn {
    let fig = dir.join("figures");
    let mut drawn = Drawn::default();
    let p = fig.join("curves.png");
    drawn.add(p.clone(), training_curves(curves, members, title, p));
    for m in members.iter().filter(|m| m.attention.as_ref().is_some_and(|a| !a.weights.is_empty())) {
        let t = format!("Mean CLS attention, seed {} ({}), S = {:?}", m.seed, if m.learned { "learned" } else { "not learned" }, m.relevant);
        let p = fig.join(format!("attention_seed{}.png", m.seed));
        drawn.add(p.clone(), member_attention(m, &t, p));
    }
    drawn
}

/// The scaling plot (with each seed's threshold) and a success map per model.
pub fn sweep_figures(dir: &Path, summary: &SweepSummary, runs: &[RunRow]) -> Drawn {
    let fig = dir.join("figures");
    let mut drawn = Drawn::default();
    for ext in ["png", "svg"] {
        let p = fig.join(format!("scaling.{ext}"));
        drawn.add(p.clone(), scaling_with_runs(summary, runs, p));
    }
    if runs.iter().any(|r| r.m > 0) {
        for m in &summary.models {
            let p = fig.join(format!("success_{}.png", m.model));
            drawn.add(p.clone(), success_map(summary, &m.model, p));
        }
    }
    drawn
}

/// Redraw the figures of a results folder (training or sweep) from its files. A folder that
/// is not a results folder, or whose files do not read, is the user's input (status 2).
pub fn redraw(dir: &Path) -> Result<Drawn> {
    let input = |e: PlotError| BadInput(e.to_string());
    if dir.join("runs.csv").exists() {
        let summary = load::sweep_summary(dir).map_err(input)?;
        let runs = load::runs(dir).map_err(input)?;
        return Ok(sweep_figures(dir, &summary, &runs));
    }
    if dir.join("metrics.csv").exists() {
        let members = load::members(dir).map_err(input)?;
        let curves = load::curves(dir).map_err(input)?;
        return Ok(train_figures(dir, &curves, &members, &format!("Training curves: {}", dir.display())));
    }
    Err(BadInput(format!("{} is not a results folder (no runs.csv or metrics.csv)", dir.display())).into())
}
