//! Training curves of an ensemble: accuracy, loss and attention mass on S against step.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::style::BLACK;
use sparsevar_experiment::train::{CurvePoint, MemberResult};

use crate::draw::{Axis, Dash, Glyph, LIGHT_GREY, Layer, Panel, Scene, Shape, colour, entry, log_range, log125_ticks, markers, nice_ticks, readable_log_ticks};
use crate::{PlotError, PlotFile, Series, render};

/// The step at which member `member` created its variable: its first evaluation whose best
/// head put more than half its CLS attention on S (the rule the sweep's `variable_step`
/// uses).
pub fn variable_step(curves: &[CurvePoint], member: usize) -> Option<usize> {
    let mut pts: Vec<&CurvePoint> = curves.iter().filter(|c| c.member == member).collect();
    pts.sort_by_key(|c| c.step);
    pts.into_iter().find(|c| c.best_mass_on_s.is_some_and(|m| m > 0.5)).map(|c| c.step)
}

/// Training curves of each member against step, in stacked panels sharing the step axis:
/// test accuracy; loss (cross-entropy, log axis; test solid, train dotted); when the
/// curves carry it, the best head's attention mass on S with the 0.5 line that defines
/// variable creation; and when they carry norms, the capacity-bound value against step
/// (see `norm_panel`). A ● marks the step a member learned (`MemberResult::step`), a ▲ the
/// step it created its variable ([`variable_step`]), on every panel.
///
/// `members[i]` describes the member whose curve points have `member == i` (its seed and S
/// label the legend); curves of members without an entry are drawn unlabelled.
///
/// Series per member i: `member {i}/test_accuracy`, `member {i}/test_loss`,
/// `member {i}/train_loss`, `member {i}/mass_on_s`, and the marks `member {i}/learned`
/// (step, test accuracy) and `member {i}/variable` (step, mass on S) — those that exist.
pub fn training_curves(curves: &[CurvePoint], members: &[MemberResult], title: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    let mut by_member: BTreeMap<usize, Vec<&CurvePoint>> = BTreeMap::new();
    for c in curves {
        by_member.entry(c.member).or_default().push(c);
    }
    if by_member.is_empty() {
        return Err(PlotError::empty(path, "no curve points"));
    }
    let has_mass = curves.iter().any(|c| c.best_mass_on_s.is_some());
    let has_norms = curves.iter().any(|c| c.norm_bound.is_some_and(|b| b.is_finite() && b > 0.0));

    let mut series = vec![];
    let (mut acc_layers, mut loss_layers, mut mass_layers) = (vec![], vec![], vec![]);
    let mut marks_acc = vec![];
    let mut legend = vec![];
    let (mut max_step, mut min_acc) = (0usize, 1.0f64);
    let mut losses = vec![];
    for (&i, pts) in by_member.iter_mut() {
        pts.sort_by_key(|c| c.step);
        let color = colour(i);
        let col = |f: &dyn Fn(&CurvePoint) -> Option<f64>| -> Vec<(f64, f64)> { pts.iter().filter_map(|c| f(c).map(|v| (c.step as f64, v))).collect() };
        let acc = col(&|c| Some(c.test_accuracy).filter(|v| v.is_finite()));
        // Loss on a log axis: a zero or non-finite loss has no place there.
        let test = col(&|c| Some(c.test_loss).filter(|v| v.is_finite() && *v > 0.0));
        let train = col(&|c| Some(c.train_loss).filter(|v| v.is_finite() && *v > 0.0));
        let mass = col(&|c| c.best_mass_on_s);
        max_step = max_step.max(pts.iter().map(|c| c.step).max().unwrap_or(0));
        min_acc = acc.iter().map(|p| p.1).fold(min_acc, f64::min);
        losses.extend(test.iter().chain(&train).map(|p| p.1));

        let member = members.get(i);
        let at = |pts: &[(f64, f64)], step: Option<usize>| -> Vec<(f64, f64)> {
            step.and_then(|s| pts.iter().find(|p| p.0 == s as f64).copied()).into_iter().collect()
        };
        let learned_step = member.filter(|m| m.learned).and_then(|m| m.step);
        let var_step = variable_step(curves, i);

        acc_layers.push(Layer::Line { points: acc.clone(), color, width: 2, dash: Dash::Solid });
        loss_layers.push(Layer::Line { points: train.clone(), color, width: 1, dash: Dash::Dotted });
        loss_layers.push(Layer::Line { points: test.clone(), color, width: 2, dash: Dash::Solid });
        mass_layers.push(Layer::Line { points: mass.clone(), color, width: 2, dash: Dash::Solid });
        for (layers, pts) in [(&mut marks_acc, &acc), (&mut loss_layers, &test), (&mut mass_layers, &mass)] {
            layers.push(Layer::Markers { points: at(pts, learned_step), shape: Shape::Circle, color, filled: true, r: 6, offset: (0, 0) });
            layers.push(markers(at(pts, var_step), Shape::TriangleUp, color, true));
        }

        let name = |what: &str| format!("member {i}/{what}");
        let label = match member {
            Some(m) => format!("seed {}: S = {{{}}}", m.seed, m.relevant.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
            None => format!("member {i}"),
        };
        legend.push(entry(label.clone(), Glyph::Line { color, width: 2, dash: Dash::Solid, marker: None }));
        series.push(Series { name: name("test_accuracy"), label: format!("{label}: test accuracy"), points: acc.clone() });
        series.push(Series { name: name("test_loss"), label: format!("{label}: test loss"), points: test });
        series.push(Series { name: name("train_loss"), label: format!("{label}: train loss"), points: train });
        if !mass.is_empty() {
            series.push(Series { name: name("mass_on_s"), label: format!("{label}: best head's attention mass on S"), points: mass.clone() });
        }
        let learned = at(&acc, learned_step);
        if !learned.is_empty() {
            series.push(Series { name: name("learned"), label: format!("{label}: learned"), points: learned });
        }
        let variable = at(&mass, var_step);
        if !variable.is_empty() {
            series.push(Series { name: name("variable"), label: format!("{label}: variable created"), points: variable });
        }
    }
    acc_layers.extend(marks_acc);

    legend.push(entry("marks", Glyph::None));
    // Only the marks that occur are explained.
    if series.iter().any(|s| s.name.ends_with("/learned")) {
        legend.push(entry("learned (reached the target)", Glyph::Marker { color: BLACK, shape: Shape::Circle, filled: true }));
    }
    if series.iter().any(|s| s.name.ends_with("/variable")) {
        legend.push(entry("variable: mass on S > 0.5", Glyph::Marker { color: BLACK, shape: Shape::TriangleUp, filled: true }));
    }
    legend.push(entry("test loss", Glyph::Line { color: BLACK, width: 2, dash: Dash::Solid, marker: None }));
    legend.push(entry("train loss", Glyph::Line { color: BLACK, width: 1, dash: Dash::Dotted, marker: None }));

    // When members finish at very different steps (one learns at 200, another at 11000), a
    // linear axis squeezes the fast ones into a sliver: switch to a log step axis then.
    let ends: Vec<f64> = by_member.values().filter_map(|p| p.last()).map(|c| c.step.max(1) as f64).collect();
    let first = by_member.values().flat_map(|p| p.iter()).map(|c| c.step).filter(|&s| s > 0).min().unwrap_or(1) as f64;
    let spread = ends.iter().copied().fold(0.0, f64::max) / ends.iter().copied().fold(f64::INFINITY, f64::min);
    let log_x = spread >= 10.0;
    let x_hi = (max_step.max(1) as f64) * if log_x { 1.15 } else { 1.03 };
    let x_lo = if log_x { first / 1.15 } else { 0.0 };
    let x_of = |labelled: bool| {
        let desc = match (labelled, log_x) {
            (false, _) => "",
            (true, false) => "training step (optimizer updates)",
            (true, true) => "training step (optimizer updates, log scale)",
        };
        let mut a = if log_x { Axis::log(x_lo, x_hi, log125_ticks(x_lo, x_hi), desc) } else { Axis::linear(0.0, x_hi, nice_ticks(0.0, x_hi), desc) };
        a.labelled = labelled;
        a
    };
    let acc_lo = ((min_acc - 0.02) * 10.0).floor() / 10.0;
    let acc_lo = acc_lo.clamp(0.0, 0.9);
    let mut panels = vec![];
    let mut acc_panel = Panel::new(x_of(false), Axis::linear(acc_lo, 1.02, nice_ticks(acc_lo, 1.0), "test accuracy"));
    acc_panel.layers = acc_layers;
    panels.push(acc_panel);
    let (l_lo, l_hi) = log_range(losses.iter().copied(), 1.5).unwrap_or((1e-3, 1.0));
    // Enough readable ticks however few decades the loss spans.
    let l_ticks = readable_log_ticks(l_lo, l_hi, 8);
    let mut loss_panel = Panel::new(x_of(!has_mass && !has_norms), Axis::log(l_lo, l_hi, l_ticks, "loss (nats)"));
    loss_panel.layers = loss_layers;
    panels.push(loss_panel);
    if has_mass {
        let mut mass_panel = Panel::new(x_of(!has_norms), Axis::linear(0.0, 1.02, vec![0.0, 0.25, 0.5, 0.75, 1.0], "mass on S (best head)"));
        mass_panel.layers.push(Layer::Line { points: vec![(x_lo, 0.5), (x_hi, 0.5)], color: LIGHT_GREY, width: 1, dash: Dash::Dashed });
        mass_panel.layers.extend(mass_layers);
        panels.push(mass_panel);
    }
    if has_norms {
        let (panel, entries) = crate::norm_panel::norm_panel(&by_member, members, x_of(true), &mut series);
        panels.push(panel);
        legend.extend(entries);
    }
    let n = panels.len();
    for (k, p) in panels.iter_mut().enumerate() {
        if k + 1 < n {
            p.x_label_height = 6;
        }
    }

    let subtitle = if members.is_empty() {
        format!("{} members", by_member.len())
    } else {
        format!("{} members, {} learned", by_member.len(), members.iter().filter(|m| m.learned).count())
    };
    let mut scene = Scene::new(title, subtitle);
    // The bottom panel also holds the step axis: give it that much more height.
    scene.heights = (0..n).map(|k| if k + 1 == n { 1.3 } else { 1.0 }).collect();
    scene.panels = panels;
    scene.legend = legend;
    render(path, &scene, series, vec![])
}
