//! sparsevar-plot: the figures of a sparsevar study, drawn with plotters to PNG or SVG.
//!
//! - [`scaling`] / [`scaling_with_runs`]: m*(T) on log axes with its grid bracket, both fitted
//!   laws and the non-neural baselines;
//! - [`success_map`]: the success rate over the (T, m) grid, m*(T) outlined;
//! - [`attention_heatmap`] / [`member_attention`]: where the CLS token attends, S outlined;
//! - [`training_curves`]: accuracy, loss and attention mass on S against step, per member;
//! - [`comparison`]: m*(T) of several sweeps or models on one plot;
//! - [`run_comparison`]: the training curves of several runs on one plot, a colour per run;
//! - [`lines`] / [`bars`]: general line and bar charts over rows a script tabulates;
//! - [`load`]: read a results folder back into the experiment types.
//!
//! The shaping decision: every figure first turns its input into plain numbers — the
//! [`Series`] and [`GridCell`]s it is about to draw — and returns them in its [`PlotFile`], so
//! a test checks the data behind a figure rather than its pixels. The drawing itself is one
//! small scene description (panels of lines, markers, bars and cells, a legend, a colour bar)
//! drawn by one routine that is generic over the plotters backend; the file extension
//! (`.png` or `.svg`) picks the backend.
//!
//! Text is rendered with DejaVu Sans compiled into the crate (plotters' `ab_glyph` feature,
//! no default features), so figures come out the same on a machine without system fonts or
//! font libraries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

mod attention;
mod curves;
mod draw;
mod lines;
pub mod load;
mod norm_panel;
mod scaling;
mod success;

pub use attention::{attention_heatmap, input_attention_heatmap, member_attention};
pub use curves::{training_curves, variable_step};
pub use lines::{ChartSpec, bars, lines, run_comparison};
pub use scaling::{comparison, scaling, scaling_with_runs};
pub use success::success_map;

/// Size of every figure, in pixels (SVG: user units).
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 620;

/// One drawn series: a stable `name` for code (e.g. `"transformer/log_fit"`), the `label` a
/// reader sees in the legend, and the points as drawn, in data coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One coloured cell of a grid figure (success map, attention heat map).
#[derive(Clone, Debug, PartialEq)]
pub struct GridCell {
    /// Column: T (success map) or key position, 0 = CLS and i + 1 = input bit i (heat map).
    pub x: f64,
    /// Row: m (success map) or layer·heads + head (heat map).
    pub y: f64,
    /// The coloured value: success rate or mean attention weight.
    pub value: f64,
    /// Whether the cell is outlined: m*(T) (success map) or a position in S (heat map).
    pub marked: bool,
}

/// A written figure and what was drawn in it: the data, and the words a reader sees.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotFile {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub series: Vec<Series>,
    pub cells: Vec<GridCell>,
    pub title: String,
    pub subtitle: String,
    /// Every axis, panel by panel (x then y), then the colour bar's.
    pub axes: Vec<AxisInfo>,
    /// Legend rows, top to bottom (headings included).
    pub legend: Vec<String>,
}

/// One drawn axis: its description (empty on the upper panels of a shared step axis), its
/// range and whether it is logarithmic.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisInfo {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    /// The ticks drawn, each with the text printed there (empty text on an axis whose
    /// tick labels are left off, the upper panels of a shared step axis).
    pub ticks: Vec<(f64, String)>,
}

impl PlotFile {
    /// The series named `name`, if drawn.
    pub fn series(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
    }

    /// The tick texts printed on axis `i` (see [`PlotFile::axes`]), empty ones left out.
    pub fn tick_labels(&self, i: usize) -> Vec<&str> {
        self.axes.get(i).map(|a| a.ticks.iter().map(|t| t.1.as_str()).filter(|t| !t.is_empty()).collect()).unwrap_or_default()
    }

    /// The axis descriptions a reader sees, in drawing order.
    pub fn axis_labels(&self) -> Vec<&str> {
        self.axes.iter().map(|a| a.label.as_str()).filter(|l| !l.is_empty()).collect()
    }
}

/// Why a figure could not be written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{}: unknown figure format; the file name must end in .png or .svg", .path.display())]
    Format { path: PathBuf },
    #[error("{}: nothing to draw: {why}", .path.display())]
    Empty { path: PathBuf, why: String },
    #[error("{}: bad input: {why}", .path.display())]
    Input { path: PathBuf, why: String },
    #[error("{}: drawing failed: {message}", .path.display())]
    Draw { path: PathBuf, message: String },
    /// A results file that could not be read (it names the file and line).
    #[error(transparent)]
    Load(#[from] sparsevar_experiment::results::ResultsError),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl PlotError {
    pub(crate) fn empty(path: &Path, why: impl Into<String>) -> Self {
        PlotError::Empty { path: path.to_path_buf(), why: why.into() }
    }
    pub(crate) fn input(path: &Path, why: impl Into<String>) -> Self {
        PlotError::Input { path: path.to_path_buf(), why: why.into() }
    }
}

/// The embedded font. DejaVu Sans has the Greek letters, sub- and superscripts and symbols
/// the labels use (α, ², ₂, ≤, ·).
static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Register the embedded font under every family name plotters may ask for, once.
fn fonts() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            plotters::style::register_font(family, FontStyle::Normal, DEJAVU_SANS).map_err(|_| "the embedded DejaVu Sans font did not parse".to_string())?;
        }
        Ok(())
    })
    .clone()
}

/// Draw `scene` into `path` (PNG or SVG by extension) and return it with its data.
pub(crate) fn render(path: &Path, scene: &draw::Scene, series: Vec<Series>, cells: Vec<GridCell>) -> Result<PlotFile, PlotError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let png = match ext.as_deref() {
        Some("png") => true,
        Some("svg") => false,
        _ => return Err(PlotError::Format { path: path.to_path_buf() }),
    };
    fonts().map_err(|message| PlotError::Draw { path: path.to_path_buf(), message })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Io { path: dir.to_path_buf(), source })?;
    }
    let draw_err = |e: &dyn std::fmt::Display| PlotError::Draw { path: path.to_path_buf(), message: e.to_string() };
    let size = (WIDTH, HEIGHT);
    // Both backends write the file in `present`, so its errors (a full disk, a missing
    // permission) come back here rather than being lost in a drop.
    if png {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        scene.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    } else {
        let root = SVGBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        scene.draw(&root).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    let info = |a: &draw::Axis| AxisInfo { label: a.desc.clone(), lo: a.lo, hi: a.hi, log: a.log, ticks: a.drawn_ticks() };
    let mut axes: Vec<AxisInfo> = scene.panels.iter().flat_map(|p| [info(&p.x), info(&p.y)]).collect();
    axes.extend(scene.colorbar.iter().map(|c| AxisInfo {
        label: c.desc.clone(),
        lo: c.lo,
        hi: c.hi,
        log: false,
        ticks: c.ticks.iter().map(|&t| (t, draw::fmt_num(t))).collect(),
    }));
    Ok(PlotFile {
        path: path.to_path_buf(),
        width: WIDTH,
        height: HEIGHT,
        series,
        cells,
        title: scene.title.clone(),
        subtitle: scene.subtitle.clone(),
        axes,
        legend: scene.legend.iter().map(|e| e.text.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_extension_is_an_error_naming_the_file() {
        let scene = draw::Scene::new("t", "");
        for p in ["/tmp/figure.jpg", "/tmp/figure"] {
            let e = render(Path::new(p), &scene, vec![], vec![]).unwrap_err();
            assert!(matches!(e, PlotError::Format { .. }));
            assert!(e.to_string().contains(p) && e.to_string().contains(".png"), "{e}");
        }
    }

    #[test]
    fn embedded_font_registers() {
        assert_eq!(fonts(), Ok(()));
    }
}
