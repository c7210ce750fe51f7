//! Figures over several runs and over plain rows: the training curves of several runs on
//! one figure ([`run_comparison`]), and general line and bar charts ([`lines`], [`bars`]) for
//! whatever a script tabulates.

use std::collections::BTreeMap;
use std::path::Path;

use sparsevar_experiment::train::CurvePoint;

use crate::draw::{Axis, Dash, Glyph, LIGHT_GREY, Layer, Panel, Scene, colour, entry, log_range, markers, nice_ticks, readable_log_ticks, shape};
use crate::{PlotError, PlotFile, Series, render};

/// One curve panel of [`run_comparison`]: which number of a [`CurvePoint`] it draws. A new
/// metric (a norm, say) is one more entry in [`RUN_PANELS`].
struct Metric {
    /// Series name suffix (`run {k}/member {i}/{key}`).
    key: &'static str,
    desc: &'static str,
    log: bool,
    value: fn(&CurvePoint) -> Option<f64>,
    /// A dashed reference line at this value (the 0.5 of variable creation).
    reference: Option<f64>,
}

const RUN_PANELS: [Metric; 3] = [
    Metric { key: "test_accuracy", desc: "test accuracy", log: false, value: |c| Some(c.test_accuracy), reference: None },
    Metric { key: "test_loss", desc: "test loss (nats)", log: true, value: |c| Some(c.test_loss), reference: None },
    Metric { key: "mass_on_s", desc: "mass on S (best head)", log: false, value: |c| c.best_mass_on_s, reference: Some(0.5) },
];

/// The curves of several training runs on one figure, one colour per run: test accuracy,
/// test loss (log axis) and, where any run recorded it, the best head's attention mass on S,
/// against step. Every member of a run is drawn in the run's colour; the legend names each
/// run by `label` (the config keys that differ between the runs).
///
/// Series: `run {k}/member {i}/test_accuracy`, `…/test_loss`, `…/mass_on_s` (k counts runs
/// from 0, i is the member index in that run's metrics.csv); labels start with the run's.
pub fn run_comparison(runs: &[(&str, &[CurvePoint])], title: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    if runs.len() < 2 {
        return Err(PlotError::input(path, format!("{} runs; a comparison needs at least two", runs.len())));
    }
    if let Some((label, _)) = runs.iter().find(|(_, c)| c.is_empty()) {
        return Err(PlotError::empty(path, format!("run {label} has no curve points")));
    }
    let panels_used: Vec<&Metric> = RUN_PANELS.iter().filter(|m| runs.iter().any(|(_, c)| c.iter().any(|p| (m.value)(p).is_some()))).collect();
    let mut series = vec![];
    let mut layers: Vec<Vec<Layer>> = panels_used.iter().map(|_| vec![]).collect();
    let mut legend = vec![];
    let mut max_step = 0usize;
    for (k, (label, curves)) in runs.iter().enumerate() {
        let color = colour(k);
        let mut by_member: BTreeMap<usize, Vec<&CurvePoint>> = BTreeMap::new();
        for c in curves.iter() {
            by_member.entry(c.member).or_default().push(c);
        }
        for (i, pts) in by_member.iter_mut() {
            pts.sort_by_key(|c| c.step);
            max_step = max_step.max(pts.last().map_or(0, |c| c.step));
            for (p, m) in panels_used.iter().enumerate() {
                // A log axis has no place for zero or a non-finite value.
                let line: Vec<(f64, f64)> =
                    pts.iter().filter_map(|c| (m.value)(c).filter(|v| v.is_finite() && (!m.log || *v > 0.0)).map(|v| (c.step as f64, v))).collect();
                if line.is_empty() {
                    continue;
                }
                layers[p].push(Layer::Line { points: line.clone(), color, width: 2, dash: Dash::Solid });
                series.push(Series { name: format!("run {k}/member {i}/{}", m.key), label: format!("{label}: member {i}: {}", m.desc), points: line });
            }
        }
        legend.push(entry(label.to_string(), Glyph::Line { color, width: 2, dash: Dash::Solid, marker: None }));
    }
    let x_hi = max_step.max(1) as f64 * 1.03;
    let n = panels_used.len();
    let mut panels = vec![];
    for (p, (m, layers)) in panels_used.iter().zip(layers).enumerate() {
        let last = p + 1 == n;
        let mut x = Axis::linear(0.0, x_hi, nice_ticks(0.0, x_hi), if last { "training step (optimizer updates)" } else { "" });
        x.labelled = last;
        let y = if m.log {
            let values = series.iter().filter(|s| s.name.ends_with(&format!("/{}", m.key))).flat_map(|s| s.points.iter().map(|p| p.1));
            let (lo, hi) = log_range(values, 1.5).unwrap_or((1e-3, 1.0));
            Axis::log(lo, hi, readable_log_ticks(lo, hi, 8), m.desc)
        } else {
            // Fractions: accuracy and attention mass share the 0–1 scale.
            Axis::linear(0.0, 1.02, nice_ticks(0.0, 1.0), m.desc)
        };
        let mut panel = Panel::new(x, y);
        if let Some(r) = m.reference {
            panel.layers.push(Layer::Line { points: vec![(0.0, r), (x_hi, r)], color: LIGHT_GREY, width: 1, dash: Dash::Dashed });
        }
        panel.layers.extend(layers);
        if !last {
            panel.x_label_height = 6;
        }
        panels.push(panel);
    }
    let mut scene = Scene::new(title, format!("{} runs, each colour one run (every member drawn)", runs.len()));
    scene.heights = (0..n).map(|k| if k + 1 == n { 1.3 } else { 1.0 }).collect();
    scene.panels = panels;
    scene.legend = legend;
    render(path, &scene, series, vec![])
}

/// Words and scales of a [`lines`] or [`bars`] figure.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartSpec {
    pub title: String,
    pub subtitle: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub log_y: bool,
}

/// An axis over `values` (padded), log or linear.
fn value_axis(path: &Path, values: &[f64], log: bool, desc: &str, include_zero: bool) -> Result<Axis, PlotError> {
    if log {
        if let Some(v) = values.iter().find(|v| **v <= 0.0) {
            return Err(PlotError::input(path, format!("{desc}: value {v} on a log axis (every value must be positive)")));
        }
        let (lo, hi) = log_range(values.iter().copied(), 1.15).unwrap_or((0.1, 1.0));
        return Ok(Axis::log(lo, hi, readable_log_ticks(lo, hi, 8), desc));
    }
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if include_zero {
        (lo, hi) = (lo.min(0.0), hi.max(0.0));
    }
    if lo == hi {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.04;
    let (lo, hi) = (if include_zero && lo == 0.0 { 0.0 } else { lo - pad }, hi + pad);
    Ok(Axis::linear(lo, hi, nice_ticks(lo, hi), desc))
}

/// A line chart: one line with markers per group, points sorted by x, one colour and marker
/// shape per group in the order given. Series: one per group, named by the group, with the
/// points as drawn.
pub fn lines(groups: &[(String, Vec<(f64, f64)>)], spec: &ChartSpec, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    if groups.iter().all(|(_, p)| p.is_empty()) {
        return Err(PlotError::empty(path, "no points"));
    }
    if let Some((g, _)) = groups.iter().find(|(_, p)| p.iter().any(|(x, y)| !x.is_finite() || !y.is_finite())) {
        return Err(PlotError::input(path, format!("group {g} has a non-finite x or y")));
    }
    let xs: Vec<f64> = groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
    let ys: Vec<f64> = groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).collect();
    let x = value_axis(path, &xs, spec.log_x, &spec.x_desc, false)?;
    let y = value_axis(path, &ys, spec.log_y, &spec.y_desc, false)?;
    let mut panel = Panel::new(x, y);
    let (mut series, mut legend) = (vec![], vec![]);
    for (k, (g, pts)) in groups.iter().enumerate() {
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (color, sh) = (colour(k), shape(k));
        panel.layers.push(Layer::Line { points: pts.clone(), color, width: 2, dash: Dash::Solid });
        panel.layers.push(markers(pts.clone(), sh, color, true));
        legend.push(entry(g.clone(), Glyph::Line { color, width: 2, dash: Dash::Solid, marker: Some((sh, true)) }));
        series.push(Series { name: g.clone(), label: g.clone(), points: pts });
    }
    let mut scene = Scene::new(spec.title.clone(), spec.subtitle.clone());
    scene.panels.push(panel);
    // One group needs no legend: the axis descriptions say it all.
    if groups.len() > 1 {
        scene.legend = legend;
    }
    render(path, &scene, series, vec![])
}

/// A bar chart: one category per position on the x axis (in the order first seen), one bar
/// per group side by side within it, each group one colour. `bars` holds (category, group,
/// value); a (category, group) pair may occur once. Series: one per group, named by the
/// group, with points (category index, value).
pub fn bars(bars: &[(String, String, f64)], spec: &ChartSpec, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    if bars.is_empty() {
        return Err(PlotError::empty(path, "no bars"));
    }
    let mut cats: Vec<&str> = vec![];
    let mut groups: Vec<&str> = vec![];
    for (c, g, v) in bars {
        if !v.is_finite() {
            return Err(PlotError::input(path, format!("bar {c}, {g}: value {v} is not finite")));
        }
        if !cats.contains(&c.as_str()) {
            cats.push(c);
        }
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
    }
    for (i, (c, g, _)) in bars.iter().enumerate() {
        if bars[..i].iter().any(|(c2, g2, _)| c2 == c && g2 == g) {
            return Err(PlotError::input(path, format!("two bars for category {c}, group {g}; give one value per pair")));
        }
    }
    let values: Vec<f64> = bars.iter().map(|b| b.2).collect();
    let y = if spec.log_y { value_axis(path, &values, true, &spec.y_desc, false)? } else { value_axis(path, &values, false, &spec.y_desc, true)? };
    let base = if spec.log_y { y.lo } else { 0.0 };
    let mut x = Axis::linear(-0.5, cats.len() as f64 - 0.5, (0..cats.len()).map(|i| i as f64).collect(), spec.x_desc.clone());
    x.names = cats.iter().enumerate().map(|(i, c)| (i as f64, c.to_string())).collect();
    let width = 0.8 / groups.len() as f64;
    let mut rects = vec![];
    let (mut series, mut legend) = (vec![], vec![]);
    for (j, g) in groups.iter().enumerate() {
        let color = colour(j);
        let mut pts = vec![];
        for (c, _, v) in bars.iter().filter(|b| b.1 == *g) {
            let i = cats.iter().position(|x| x == c).unwrap_or(0);
            let left = i as f64 - 0.4 + j as f64 * width;
            rects.push((((left, base), (left + width * 0.92, *v)), color));
            pts.push((i as f64, *v));
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        legend.push(entry(g.to_string(), Glyph::Line { color, width: 8, dash: Dash::Solid, marker: None }));
        series.push(Series { name: g.to_string(), label: g.to_string(), points: pts });
    }
    let mut panel = Panel::new(x, y);
    panel.layers.push(Layer::Cells { rects });
    let mut scene = Scene::new(spec.title.clone(), spec.subtitle.clone());
    scene.panels.push(panel);
    if groups.len() > 1 {
        scene.legend = legend;
    }
    render(path, &scene, series, vec![])
}
