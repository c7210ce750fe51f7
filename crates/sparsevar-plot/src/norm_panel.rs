//! The norm panel of the training curves: each member's capacity-bound value against step
//! (the product of norms of `sparsevar_core::norms::CapacityNorms`, solid) and its
//! ‖W_Q W_Kᵀ‖₂ (dotted), on a log axis, with a ● where the member learned.

use std::collections::BTreeMap;

use plotters::style::BLACK;
use sparsevar_experiment::train::{CurvePoint, MemberResult};

use crate::Series;
use crate::draw::{Axis, Dash, Glyph, Layer, LegendEntry, Panel, Shape, colour, entry, log_range, readable_log_ticks};

/// The panel (with x axis `x`) and its legend entries; its series are appended to `series`:
/// `member {i}/norm_bound`, `member {i}/qk_spectral` and the mark `member {i}/learned_norm`
/// (step, bound) where the member learned.
pub(crate) fn norm_panel(
    by_member: &BTreeMap<usize, Vec<&CurvePoint>>,
    members: &[MemberResult],
    x: Axis,
    series: &mut Vec<Series>,
) -> (Panel, Vec<LegendEntry>) {
    let mut layers = vec![];
    let mut values = vec![];
    for (&i, pts) in by_member {
        let color = colour(i);
        let col = |f: &dyn Fn(&CurvePoint) -> Option<f64>| -> Vec<(f64, f64)> {
            pts.iter().filter_map(|c| f(c).filter(|v| v.is_finite() && *v > 0.0).map(|v| (c.step as f64, v))).collect()
        };
        let bound = col(&|c| c.norm_bound);
        let qk = col(&|c| c.qk_spectral);
        values.extend(bound.iter().chain(&qk).map(|p| p.1));
        let learned_step = members.get(i).filter(|m| m.learned).and_then(|m| m.step);
        let mark: Vec<(f64, f64)> = learned_step.and_then(|s| bound.iter().find(|p| p.0 == s as f64).copied()).into_iter().collect();
        layers.push(Layer::Line { points: qk.clone(), color, width: 1, dash: Dash::Dotted });
        layers.push(Layer::Line { points: bound.clone(), color, width: 2, dash: Dash::Solid });
        layers.push(Layer::Markers { points: mark.clone(), shape: Shape::Circle, color, filled: true, r: 6, offset: (0, 0) });
        let label = members.get(i).map_or(format!("member {i}"), |m| format!("seed {}", m.seed));
        let name = |what: &str| format!("member {i}/{what}");
        if !bound.is_empty() {
            series.push(Series { name: name("norm_bound"), label: format!("{label}: norm bound"), points: bound });
        }
        if !qk.is_empty() {
            series.push(Series { name: name("qk_spectral"), label: format!("{label}: ‖W_Q W_Kᵀ‖₂"), points: qk });
        }
        if !mark.is_empty() {
            series.push(Series { name: name("learned_norm"), label: format!("{label}: learned"), points: mark });
        }
    }
    let (lo, hi) = log_range(values.iter().copied(), 1.5).unwrap_or((0.1, 10.0));
    let ticks = readable_log_ticks(lo, hi, 8);
    let mut panel = Panel::new(x, Axis::log(lo, hi, ticks, "norms (log)"));
    panel.layers = layers;
    let legend = vec![
        entry("norm bound (product)", Glyph::Line { color: BLACK, width: 2, dash: Dash::Solid, marker: None }),
        entry("‖W_Q W_Kᵀ‖₂ (max head)", Glyph::Line { color: BLACK, width: 1, dash: Dash::Dotted, marker: None }),
    ];
    (panel, legend)
}
