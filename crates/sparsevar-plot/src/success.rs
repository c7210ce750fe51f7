//! The success map: one model's success rate over the (T, m) grid of a sweep.

use std::path::Path;

use sparsevar_experiment::sweep::SweepSummary;

use crate::draw::{Axis, ColorBar, Glyph, Layer, MARK, Panel, Scene, entry, ink_on, log2_ticks, viridis};
use crate::{GridCell, PlotError, PlotFile, Series, render};

/// Cell edges around sorted positive centres: geometric midpoints between neighbours, and
/// the ends mirrored, so every cell sits centred on its value on a log axis.
fn edges(centres: &[f64]) -> Vec<f64> {
    let n = centres.len();
    if n == 1 {
        return vec![centres[0] / 2f64.sqrt(), centres[0] * 2f64.sqrt()];
    }
    let mut e = Vec::with_capacity(n + 1);
    e.push(centres[0] * (centres[0] / centres[1]).sqrt());
    for w in centres.windows(2) {
        e.push((w[0] * w[1]).sqrt());
    }
    e.push(centres[n - 1] * (centres[n - 1] / centres[n - 2]).sqrt());
    e
}

/// The success rate of `model` in every (T, m) cell its sweep trained, coloured 0..1
/// (viridis, with a colour bar), T on a base-2 log x axis, m on a base-2 log y axis; each
/// cell is labelled with seeds learned / seeds where it is large enough to read, and the
/// m*(T) cell is outlined in red. With refinement a T can have m values the others lack:
/// every column has its own cell edges.
///
/// Cells: one [`GridCell`] per (T, m) with x = T, y = m, value = rate, marked = (m = m*).
/// Series: `T={t}/rate` (m, rate) per T, and `m_star` (T, m*).
pub fn success_map(summary: &SweepSummary, model: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    let Some(ms) = summary.models.iter().find(|m| m.model == model) else {
        let known: Vec<&str> = summary.models.iter().map(|m| m.model.as_str()).collect();
        return Err(PlotError::input(path, format!("no model `{model}` in this sweep; it has: {}", known.join(", "))));
    };
    let mut points: Vec<_> = ms.points.iter().filter(|p| !p.cells.is_empty()).collect();
    if points.is_empty() {
        return Err(PlotError::empty(path, format!("model `{model}` has no trained cells")));
    }
    if points.iter().flat_map(|p| &p.cells).all(|c| c.m == 0) {
        return Err(PlotError::input(path, "an online sweep (m = 0 everywhere) has no m grid to map; plot it with `scaling`"));
    }
    points.sort_by_key(|p| p.t);
    let ts: Vec<f64> = points.iter().map(|p| p.t as f64).collect();
    let xe = edges(&ts);

    let mut cells = vec![];
    let mut rects = vec![];
    let mut outlines = vec![];
    let mut series = vec![];
    let mut star = vec![];
    let mut counts = vec![];
    let (mut y_lo, mut y_hi) = (f64::INFINITY, 0.0f64);
    let mut all_m: Vec<f64> = vec![];
    for (j, p) in points.iter().enumerate() {
        let mut cs: Vec<_> = p.cells.iter().filter(|c| c.m > 0).collect();
        cs.sort_by_key(|c| c.m);
        let ms: Vec<f64> = cs.iter().map(|c| c.m as f64).collect();
        let ye = edges(&ms);
        y_lo = y_lo.min(ye[0]);
        y_hi = y_hi.max(ye[ye.len() - 1]);
        for (i, c) in cs.iter().enumerate() {
            let marked = p.m_star == Some(c.m);
            let r = ((xe[j], ye[i]), (xe[j + 1], ye[i + 1]));
            let fill = viridis(c.rate);
            rects.push((r, fill));
            if marked {
                outlines.push(r);
            }
            let centre = ((xe[j] * xe[j + 1]).sqrt(), (ye[i] * ye[i + 1]).sqrt());
            counts.push((centre, format!("{}/{}", c.learned, c.seeds), ink_on(fill), ye[i + 1] / ye[i]));
            cells.push(GridCell { x: p.t as f64, y: c.m as f64, value: c.rate, marked });
        }
        all_m.extend(&ms);
        series.push(Series {
            name: format!("T={}/rate", p.t),
            label: format!("success rate at T = {}", p.t),
            points: cs.iter().map(|c| (c.m as f64, c.rate)).collect(),
        });
        if let Some(m) = p.m_star {
            star.push((p.t as f64, m as f64));
        }
    }
    series.push(Series { name: "m_star".into(), label: "m*(T): smallest successful m".into(), points: star });

    // Label cells only when the text fits: about 490 × 560 plot pixels share the log ranges.
    let (x_lo, x_hi) = (xe[0], xe[xe.len() - 1]);
    let px_per_ln_y = 490.0 / (y_hi / y_lo).ln();
    let min_w = xe.windows(2).map(|w| (w[1] / w[0]).ln()).fold(f64::INFINITY, f64::min) * 560.0 / (x_hi / x_lo).ln();
    let min_h = counts.iter().map(|c| c.3.ln()).fold(f64::INFINITY, f64::min) * px_per_ln_y;
    let text_size = (min_h * 0.55).clamp(10.0, 15.0);
    let show_counts = min_h >= 15.0 && min_w >= 40.0;

    all_m.sort_by(f64::total_cmp);
    all_m.dedup();
    let y_ticks = if all_m.len() <= 14 { all_m } else { log2_ticks(y_lo, y_hi, 12) };
    let mut panel = Panel::new(Axis::log(x_lo, x_hi, ts.clone(), "input length T (bits)"), Axis::log(y_lo, y_hi, y_ticks, "training-set size m (examples)"));
    panel.grid = false;
    panel.layers.push(Layer::Cells { rects });
    if show_counts {
        panel.layers.push(Layer::Texts { items: counts.into_iter().map(|(at, s, c, _)| (at, s, c)).collect(), size: text_size });
    }
    panel.layers.push(Layer::Outlines { rects: outlines, color: MARK, width: 3 });

    let mut scene = Scene::new(format!("Success over (T, m): {model}, {}, s = {}", summary.task.replace('_', " "), summary.s), summary.success_rule.clone());
    scene.panels.push(panel);
    scene.side = 250;
    scene.legend = vec![entry("m*(T)", Glyph::Outline { color: MARK })];
    if show_counts {
        scene.legend.push(entry("k/n: seeds learned / seeds", Glyph::None));
    }
    scene.colorbar = Some(ColorBar { lo: 0.0, hi: 1.0, ticks: vec![0.0, 0.25, 0.5, 0.75, 1.0], desc: "success rate (fraction of seeds)".into() });
    render(path, &scene, series, cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_geometric_midpoints() {
        let e = edges(&[8.0, 16.0, 32.0]);
        let want = [8.0 / 2f64.sqrt(), 8.0 * 2f64.sqrt(), 16.0 * 2f64.sqrt(), 32.0 * 2f64.sqrt()];
        for (a, b) in e.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{e:?}");
        }
        assert_eq!(edges(&[4.0]).len(), 2);
    }
}
