//! m*(T): the scaling figure (one sweep, its fits and baselines) and the comparison figure
//! (several sweeps or models on one plot).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::style::RGBColor;
use sparsevar_experiment::fits::Fit;
use sparsevar_experiment::sweep::{ModelSummary, RunRow, SweepSummary};

use crate::draw::{
    Axis, Dash, GREY, Glyph, LIGHT_GREY, Layer, LegendEntry, Panel, Scene, Shape, colour, entry, fmt_sig, geom_grid, log_range, log2_ticks, markers,
    nice_ticks, shape,
};
use crate::{PlotError, PlotFile, Series, render};

/// What a sweep measured per T: the sample count m* (fixed training sets), or the median
/// steps to learn (online training, where every cell has m = 0).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Measure {
    Samples,
    Steps,
}

fn measure(s: &SweepSummary) -> Measure {
    let mut cells = s.models.iter().flat_map(|m| &m.points).flat_map(|p| &p.cells).peekable();
    if cells.peek().is_some() && cells.all(|c| c.m == 0) { Measure::Steps } else { Measure::Samples }
}

impl Measure {
    fn y_desc(self) -> &'static str {
        match self {
            Measure::Samples => "samples to learn, m* (training examples)",
            Measure::Steps => "steps to learn (optimizer steps, median over seeds)",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Measure::Samples => "m*",
            Measure::Steps => "median steps to learn",
        }
    }
}

const X_DESC: &str = "input length T (bits)";

/// One model's measured curve, as drawn.
struct Curve {
    /// Prefix of its series names.
    key: String,
    /// Its name in the legend.
    label: String,
    /// (T, m*) or (T, median steps).
    star: Vec<(f64, f64)>,
    /// (T, largest failing m) where m* has one: the bracket (m_below, m*].
    below: Vec<(f64, f64)>,
    /// (T, m*) where m* is the smallest m tried, so the threshold is only known to be ≤ m*.
    first: Vec<(f64, f64)>,
    /// (T, largest m tried, or the step budget) where nothing succeeded.
    never: Vec<(f64, f64)>,
    /// Online: (T, median step at which a variable was created).
    variable: Vec<(f64, f64)>,
}

fn curve(key: String, label: String, model: &ModelSummary, how: Measure, max_steps: usize) -> Curve {
    let mut c = Curve { key, label, star: vec![], below: vec![], first: vec![], never: vec![], variable: vec![] };
    for p in &model.points {
        let t = p.t as f64;
        match how {
            Measure::Samples => match p.m_star {
                Some(ms) => {
                    c.star.push((t, ms as f64));
                    match p.m_below {
                        Some(mb) => c.below.push((t, mb as f64)),
                        None => c.first.push((t, ms as f64)),
                    }
                }
                None => {
                    if let Some(top) = p.cells.iter().map(|c| c.m).max() {
                        c.never.push((t, top as f64));
                    }
                }
            },
            Measure::Steps => {
                match p.median_steps_to_learn {
                    Some(s) => c.star.push((t, s)),
                    None if !p.cells.is_empty() => c.never.push((t, max_steps as f64)),
                    None => {}
                }
                if let Some(v) = p.median_variable_step {
                    c.variable.push((t, v));
                }
            }
        }
    }
    c
}

impl Curve {
    /// Bracket bars (T, m_below, m*).
    fn bars(&self) -> Vec<(f64, f64, f64)> {
        self.below.iter().filter_map(|&(t, lo)| self.star.iter().find(|p| p.0 == t).map(|&(_, hi)| (t, lo, hi))).collect()
    }

    fn series(&self, how: Measure) -> Vec<Series> {
        let s = |name: &str, label: String, points: &Vec<(f64, f64)>| Series { name: format!("{}/{name}", self.key), label, points: points.clone() };
        let mut v = vec![match how {
            Measure::Samples => s("m_star", format!("{}: m*", self.label), &self.star),
            Measure::Steps => s("median_steps", format!("{}: median steps to learn", self.label), &self.star),
        }];
        if !self.below.is_empty() {
            v.push(s("m_below", format!("{}: largest failing m below m*", self.label), &self.below));
        }
        if !self.first.is_empty() {
            v.push(s("m_star_first_tried", format!("{}: m* is the smallest m tried", self.label), &self.first));
        }
        if !self.never.is_empty() {
            let what = if how == Measure::Samples { "no m tried succeeded (drawn at the largest)" } else { "not learned within the step budget" };
            v.push(s("not_learned", format!("{}: {what}", self.label), &self.never));
        }
        if !self.variable.is_empty() {
            v.push(s("variable_step", format!("{}: median step a variable was created", self.label), &self.variable));
        }
        v
    }

    /// Bars, then markers: m* filled; a hollow ▼ just under an m* that was the smallest m
    /// tried; a hollow ▲ where nothing succeeded. `dodge` multiplies every drawn T, so
    /// curves sharing a T do not cover each other (the series keep the true T).
    fn layers(&self, color: RGBColor, shp: Shape, line: bool, dodge: f64) -> Vec<Layer> {
        let d = |v: &Vec<(f64, f64)>| -> Vec<(f64, f64)> { v.iter().map(|&(t, y)| (t * dodge, y)).collect() };
        let mut l = vec![];
        if line {
            l.push(Layer::Line { points: d(&self.star), color, width: 1, dash: Dash::Solid });
        }
        l.push(Layer::Bars { bars: self.bars().into_iter().map(|(t, lo, hi)| (t * dodge, lo, hi)).collect(), color });
        l.push(markers(d(&self.variable), shp, color, false));
        l.push(markers(d(&self.star), shp, color, true));
        l.push(Layer::Markers { points: d(&self.first), shape: Shape::TriangleDown, color, filled: false, r: 5, offset: (0, 13) });
        l.push(markers(d(&self.never), Shape::TriangleUp, color, false));
        l
    }

    fn ys(&self) -> impl Iterator<Item = f64> + '_ {
        [&self.star, &self.below, &self.first, &self.never, &self.variable].into_iter().flatten().map(|p| p.1)
    }
    fn ts(&self) -> impl Iterator<Item = f64> + '_ {
        [&self.star, &self.never].into_iter().flatten().map(|p| p.0)
    }
}

/// Legend rows explaining the hollow triangles and bars, only for the marks that occur.
fn mark_notes(curves: &[Curve], how: Measure) -> Vec<LegendEntry> {
    let mut v = vec![];
    if curves.iter().any(|c| !c.below.is_empty()) {
        v.push(entry("m* lies in (largest failing m, m*]", Glyph::Bar { color: GREY }));
    }
    if curves.iter().any(|c| !c.first.is_empty()) {
        v.push(entry("m* = smallest m tried; may be lower", Glyph::Marker { color: GREY, shape: Shape::TriangleDown, filled: false }));
    }
    if curves.iter().any(|c| !c.never.is_empty()) {
        let what = if how == Measure::Samples { "not learned up to the largest m" } else { "not learned within the steps" };
        v.push(entry(what, Glyph::Marker { color: GREY, shape: Shape::TriangleUp, filled: false }));
    }
    if !v.is_empty() {
        v.insert(0, entry("marks", Glyph::None));
    }
    v
}

/// Each seed's own threshold at each T: the smallest m at which it learned (online: the step
/// at which it learned). Seeds that never learned at a T are left out.
fn seed_thresholds(runs: &[RunRow], model: &str, how: Measure) -> Vec<(f64, f64)> {
    let mut best: BTreeMap<(usize, u64), f64> = BTreeMap::new();
    // A learner's sweep with budgets has a row per restart per budget: use the last budget's.
    let last = runs.iter().filter_map(|r| r.budget).max();
    for r in runs.iter().filter(|r| r.model == model && r.learned && r.budget == last) {
        let v = match how {
            Measure::Samples => r.m as f64,
            Measure::Steps => match r.step {
                Some(s) => s as f64,
                None => continue,
            },
        };
        let e = best.entry((r.t, r.seed)).or_insert(v);
        *e = e.min(v);
    }
    best.into_iter().map(|((t, _), v)| (t as f64, v)).collect()
}

/// Seed dots are spread sideways (multiplicatively: the x axis is logarithmic) so equal
/// values do not hide each other; only the drawing moves, the series keeps the true T.
fn jitter(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    points
        .iter()
        .map(|&(t, v)| {
            let k = seen.entry((t.to_bits(), v.to_bits())).or_insert(0);
            let i = *k;
            *k += 1;
            // +1, −1, +2, −2, … steps of 4% in T: never at 0, where the m* marker sits.
            let side = if i.is_multiple_of(2) { 1.0 } else { -1.0 };
            let step = (i / 2 + 1) as f64;
            (t * 1.04f64.powf(side * step), v)
        })
        .collect()
}

/// Horizontal offset factor of curve `k` of `n`: 5% steps in T, centred on the true T.
fn dodge(k: usize, n: usize) -> f64 {
    1.05f64.powf(k as f64 - (n as f64 - 1.0) / 2.0)
}

/// The fitted law over the measured T range where it lies within [y_lo, y_hi]: 160 points
/// evenly spaced in log T, plus the exact T where it crosses y_lo or y_hi, so a law that
/// heads for zero (a + b·ln T with a < 0) ends on the plot's edge instead of short of it.
/// Every point is (T, fit.predict(T)).
fn fit_points(fit: &Fit, t_lo: f64, t_hi: f64, y_lo: f64, y_hi: f64) -> Vec<(f64, f64)> {
    let inside = |t: f64| {
        let y = fit.predict(t);
        y.is_finite() && y >= y_lo && y <= y_hi
    };
    let crossing = |mut a: f64, mut b: f64| {
        // Bisection between a T inside and a T outside; ends on the inside.
        let a_in = inside(a);
        for _ in 0..60 {
            let m = (a * b).sqrt();
            if inside(m) == a_in { a = m } else { b = m }
        }
        if a_in { a } else { b }
    };
    let grid = geom_grid(t_lo, t_hi, 160);
    let mut out = vec![];
    for (i, &t) in grid.iter().enumerate() {
        if i > 0 && inside(t) != inside(grid[i - 1]) {
            let c = crossing(grid[i - 1], t);
            out.push((c, fit.predict(c)));
        }
        if inside(t) {
            out.push((t, fit.predict(t)));
        }
    }
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn x_axis(ts: &[f64]) -> Option<Axis> {
    let (lo, hi) = log_range(ts.iter().copied(), 1.25)?;
    let mut distinct: Vec<f64> = ts.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let ticks = if distinct.len() <= 12 { distinct } else { log2_ticks(lo, hi, 10) };
    Some(Axis::log(lo, hi, ticks, X_DESC))
}

fn y_axis(ys: &[f64], desc: &str) -> Option<Axis> {
    let (lo, hi) = log_range(ys.iter().copied(), 1.5)?;
    let mut ticks = log2_ticks(lo, hi, 10);
    if ticks.len() < 2 {
        // A narrow range holds at most one power of two: use round numbers instead.
        ticks = nice_ticks(lo, hi).into_iter().filter(|v| *v > 0.0).collect();
    }
    Some(Axis::log(lo, hi, ticks, desc))
}

fn pretty_task(task: &str) -> String {
    task.replace('_', " ")
}

/// m*(T) of every model of a sweep against T, on log–log axes (T in base 2).
///
/// Drawn per model: m* (filled marker) with a bar over (largest failing m, m*] — the
/// resolution the m grid allows; a hollow ▼ where m* was the smallest m tried and a hollow ▲
/// (at the largest m) where no m succeeded; the fitted laws over the measured T range,
/// a + b·ln T dashed and c·T^α dotted, with their R² (cut where they leave the plot: the
/// axes follow the measurements, not the laws). Baselines, when the sweep ran them:
/// GF(2) elimination m*, exhaustive subset-search m* and the information floor log₂ C(T, s).
/// An online sweep (every m = 0, the i.i.d. regime) plots the median steps to learn instead,
/// joined by a thin line, and the median step at which a variable was created as hollow
/// markers; the power fit's legend entry carries its exponent α.
///
/// Series: `{model}/m_star` (online: `{model}/median_steps`), `{model}/m_below`,
/// `{model}/m_star_first_tried`, `{model}/not_learned`, `{model}/variable_step`,
/// `{model}/log_fit`, `{model}/power_fit`, `baseline/gf2`, `baseline/subset_search`,
/// `baseline/info_floor` — those that have points.
pub fn scaling(summary: &SweepSummary, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    scaling_impl(summary, None, path.as_ref())
}

/// [`scaling`] with each seed's own threshold added (from the sweep's runs.csv, see
/// `sparsevar_experiment::sweep::read_runs`): the smallest m at which that seed learned,
/// drawn as small hollow circles spread sideways — the spread of the seeds around m*.
/// Extra series: `{model}/seed_threshold` (true T, not the drawn offset).
pub fn scaling_with_runs(summary: &SweepSummary, runs: &[RunRow], path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    scaling_impl(summary, Some(runs), path.as_ref())
}

fn scaling_impl(summary: &SweepSummary, runs: Option<&[RunRow]>, path: &Path) -> Result<PlotFile, PlotError> {
    let how = measure(summary);
    let mut series = vec![];
    // Drawn bottom to top: baselines, fitted laws, then each model's bars and markers.
    let (mut base_layers, mut fit_layers, mut model_layers) = (vec![], vec![], vec![]);
    let mut legend = vec![];
    let mut curves = vec![];
    // Fits are drawn once the axes are known: (series name, label, colour, dash, law, T range).
    let mut fits = vec![];
    let (mut xs, mut ys) = (vec![], vec![]);
    for (i, model) in summary.models.iter().enumerate() {
        let c = curve(model.model.clone(), model.model.clone(), model, how, summary.max_steps);
        let (color, shp) = (colour(i), shape(i));
        series.extend(c.series(how));
        xs.extend(c.ts());
        ys.extend(c.ys());
        legend.push(entry(model.model.clone(), Glyph::None));
        // Online: the medians are joined by a thin line, so the trend reads against the seeds.
        let joined = how == Measure::Steps;
        let glyph = if joined {
            Glyph::Line { color, width: 1, dash: Dash::Solid, marker: Some((shp, true)) }
        } else {
            Glyph::Marker { color, shape: shp, filled: true }
        };
        legend.push(entry(format!("{} (measured)", how.what()), glyph));
        if let Some(fit) = &model.fit {
            let fitted: Vec<f64> = c.star.iter().map(|p| p.0).collect();
            let (lo, hi) = (fitted.iter().copied().fold(f64::INFINITY, f64::min), fitted.iter().copied().fold(0.0, f64::max));
            let laws = if fit.compares_laws() {
                vec![
                    ("log_fit", &fit.log, Dash::Dashed, format!("{} + {}·ln T  (R² {:.2})", fmt_sig(fit.log.a), fmt_sig(fit.log.b), fit.log.r2)),
                    ("power_fit", &fit.power, Dash::Dotted, format!("{}·Tᵅ, α = {:.2}  (R² {:.2})", fmt_sig(fit.power.a), fit.power.b, fit.power.r2)),
                ]
            } else {
                // Through two points both laws pass exactly: only the line's exponent says anything.
                vec![("power_fit", &fit.power, Dash::Dotted, format!("{}·Tᵅ, α = {:.2}  (from two points)", fmt_sig(fit.power.a), fit.power.b))]
            };
            for (law, f, dash, label) in laws {
                let label = label.replace("+ −", "− ");
                legend.push(entry(label.clone(), Glyph::Line { color, width: 2, dash, marker: None }));
                fits.push((format!("{}/{law}", model.model), format!("{}: {label}", model.model), color, dash, f, (lo, hi)));
            }
        }
        if let Some(runs) = runs {
            let seeds = seed_thresholds(runs, &model.model, how);
            ys.extend(seeds.iter().map(|p| p.1));
            model_layers.push(Layer::Markers { points: jitter(&seeds), shape: Shape::Circle, color, filled: false, r: 3, offset: (0, 0) });
            let what = if how == Measure::Samples { "each seed's smallest m learned" } else { "each seed's step learned" };
            legend.push(entry(what, Glyph::Marker { color, shape: Shape::Circle, filled: false }));
            series.push(Series { name: format!("{}/seed_threshold", model.model), label: format!("{}: {what}", model.model), points: seeds });
        }
        if !c.variable.is_empty() {
            legend.push(entry("median step a variable appeared", Glyph::Marker { color, shape: shp, filled: false }));
        }
        model_layers.extend(c.layers(color, shp, joined, dodge(i, summary.models.len())));
        curves.push(c);
    }
    // Baselines measure samples; an online sweep has no m to compare them with.
    if how == Measure::Samples && !summary.baselines.is_empty() {
        let b = &summary.baselines;
        let pts = |f: &dyn Fn(&sparsevar_experiment::sweep::BaselinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
            b.iter().filter_map(|p| f(p).map(|v| (p.t as f64, v))).collect()
        };
        let gf2 = pts(&|p| p.gf2_m_star.map(|m| m as f64));
        let subset = pts(&|p| p.subset_search_m_star.map(|m| m as f64));
        let floor = pts(&|p| Some(p.info_floor).filter(|v| v.is_finite() && *v > 0.0));
        legend.push(entry("baselines", Glyph::None));
        let dark = RGBColor(60, 60, 60);
        for (name, label, points, glyph_marker, color) in [
            ("info_floor", "information floor log₂ C(T, s)", floor, None, LIGHT_GREY),
            ("gf2", "GF(2) elimination m*", gf2, Some((Shape::Square, true)), dark),
            ("subset_search", "subset search m* (exhaustive)", subset, Some((Shape::Diamond, false)), dark),
        ] {
            if points.is_empty() {
                continue;
            }
            xs.extend(points.iter().map(|p| p.0));
            ys.extend(points.iter().map(|p| p.1));
            let width = if glyph_marker.is_some() { 1 } else { 3 };
            base_layers.push(Layer::Line { points: points.clone(), color, width, dash: Dash::Solid });
            if let Some((shp, filled)) = glyph_marker {
                base_layers.push(markers(points.clone(), shp, color, filled));
            }
            legend.push(entry(label, Glyph::Line { color, width, dash: Dash::Solid, marker: glyph_marker }));
            series.push(Series { name: format!("baseline/{name}"), label: label.to_string(), points });
        }
    }
    legend.extend(mark_notes(&curves, how));
    // The axes come from the measurements alone; a fitted law that heads for zero (a + b·ln T
    // with a < 0) must not stretch them, so it is cut where it leaves the plot.
    let (Some(x), Some(y)) = (x_axis(&xs), y_axis(&ys, how.y_desc())) else {
        return Err(PlotError::empty(path, "no model reached m* at any T and the sweep has no baselines"));
    };
    for (name, label, color, dash, law, (t_lo, t_hi)) in fits {
        let pts = if t_lo < t_hi { fit_points(law, t_lo, t_hi, y.lo, y.hi) } else { vec![] };
        fit_layers.push(Layer::Line { points: pts.clone(), color, width: 2, dash });
        series.push(Series { name, label, points: pts });
    }
    let layers: Vec<Layer> = base_layers.into_iter().chain(fit_layers).chain(model_layers).collect();
    let title = match how {
        Measure::Samples => format!("Samples to learn, m*(T): {}, s = {}", pretty_task(&summary.task), summary.s),
        Measure::Steps => format!("Steps to learn, online (fresh samples every step): {}, s = {}", pretty_task(&summary.task), summary.s),
    };
    let mut scene = Scene::new(title, summary.success_rule.clone());
    let mut panel = Panel::new(x, y);
    panel.layers = layers;
    scene.panels.push(panel);
    scene.legend = legend;
    render(path, &scene, series, vec![])
}

/// m*(T) of several sweeps — or several models of one sweep — on one plot: each (label,
/// model) one colour and marker shape, joined by a thin line, with its bracket bar.
/// Every summary must measure the same thing (all fixed-m or all online).
///
/// Series per curve (`key` = `label/model`, or `model` when the label is empty, or `label`
/// when that summary has one model): `{key}/m_star` (online `{key}/median_steps`),
/// `{key}/m_below`, `{key}/m_star_first_tried`, `{key}/not_learned`.
pub fn comparison(entries: &[(&str, &SweepSummary)], path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    let Some((_, first)) = entries.first() else {
        return Err(PlotError::empty(path, "no sweeps to compare"));
    };
    let how = measure(first);
    if let Some((label, _)) = entries.iter().find(|(_, s)| measure(s) != how) {
        return Err(PlotError::input(
            path,
            format!(
                "sweep `{label}` is {} but the first is not; compare fixed-m sweeps with fixed-m sweeps",
                if how == Measure::Samples { "online" } else { "fixed-m" }
            ),
        ));
    }
    let mut curves = vec![];
    for (label, s) in entries {
        for m in &s.models {
            let (key, shown) = if label.is_empty() {
                (m.model.clone(), m.model.clone())
            } else if s.models.len() == 1 {
                (label.to_string(), label.to_string())
            } else {
                (format!("{label}/{}", m.model), format!("{label}: {}", m.model))
            };
            curves.push(curve(key, shown, m, how, s.max_steps));
        }
    }
    let mut series = vec![];
    let mut layers = vec![];
    let mut legend = vec![];
    for (i, c) in curves.iter().enumerate() {
        let (color, shp) = (colour(i), shape(i));
        series.extend(c.series(how));
        layers.extend(c.layers(color, shp, true, dodge(i, curves.len())));
        legend.push(entry(c.label.clone(), Glyph::Line { color, width: 1, dash: Dash::Solid, marker: Some((shp, true)) }));
    }
    legend.extend(mark_notes(&curves, how));
    let xs: Vec<f64> = curves.iter().flat_map(|c| c.ts()).collect();
    let ys: Vec<f64> = curves.iter().flat_map(|c| c.ys()).collect();
    let (Some(x), Some(y)) = (x_axis(&xs), y_axis(&ys, how.y_desc())) else {
        return Err(PlotError::empty(path, "no curve reached m* at any T"));
    };
    let same = |f: &dyn Fn(&SweepSummary) -> String| entries.iter().all(|(_, s)| f(s) == f(first));
    let what = if how == Measure::Samples { "Samples to learn, m*(T), compared" } else { "Steps to learn (online), compared" };
    let title = if same(&|s| format!("{} {}", s.task, s.s)) { format!("{what}: {}, s = {}", pretty_task(&first.task), first.s) } else { what.to_string() };
    let subtitle =
        if same(&|s| s.success_rule.clone()) { first.success_rule.clone() } else { "success rules differ between the sweeps: see each summary.json".into() };
    let mut scene = Scene::new(title, subtitle);
    let mut panel = Panel::new(x, y);
    panel.layers = layers;
    scene.panels.push(panel);
    scene.legend = legend;
    render(path, &scene, series, vec![])
}
