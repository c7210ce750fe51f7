//! Read results folders back, so figures can be drawn from a finished run without re-running
//! it. Thin wrappers: the files are read through the experiment crate's own results types
//! (`sparsevar_experiment::results`, `sparsevar_experiment::sweep`), the same ones that
//! wrote them.

use std::path::Path;

use sparsevar_experiment::results::{load_metrics, load_train_summary};
use sparsevar_experiment::sweep::{RunRow, SweepSummary, load_sweep_summary, read_runs};
use sparsevar_experiment::train::{CurvePoint, MemberResult};

use crate::PlotError;

/// A sweep's summary from its results folder (or its summary.json).
pub fn sweep_summary(path: impl AsRef<Path>) -> Result<SweepSummary, PlotError> {
    Ok(load_sweep_summary(path.as_ref())?)
}

/// A sweep's rows from its results folder (or its runs.csv).
pub fn runs(path: impl AsRef<Path>) -> Result<Vec<RunRow>, PlotError> {
    Ok(read_runs(path.as_ref())?)
}

/// Members of a training run from its summary.json (`path` a folder or the file). Their
/// attention summaries hold mass on S, best head, top-s and the weights (empty for folders
/// written before summary.json recorded them).
pub fn members(path: impl AsRef<Path>) -> Result<Vec<MemberResult>, PlotError> {
    Ok(load_train_summary(path.as_ref())?.members.into_iter().map(MemberResult::from).collect())
}

/// Curve points from a metrics.csv (`path` a run folder or the file).
pub fn curves(path: impl AsRef<Path>) -> Result<Vec<CurvePoint>, PlotError> {
    Ok(load_metrics(path.as_ref())?)
}
