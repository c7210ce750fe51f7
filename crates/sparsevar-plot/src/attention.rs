//! The attention heat map: where the CLS token looks, per layer and head, with S marked.

use std::path::Path;

use sparsevar_experiment::train::MemberResult;

use plotters::style::WHITE;

use crate::draw::{Axis, ColorBar, Dash, Glyph, Layer, MARK, Panel, Scene, Shape, entry, nice_ticks, viridis};
use crate::{GridCell, PlotError, PlotFile, Series, render};

/// Mean CLS attention as a heat map: one row per (layer, head), one column per key position
/// — CLS first, then input bit i at position i + 1, labelled i, the numbering S uses. The
/// columns of S (`relevant`, input bit indices) are outlined in red with a ▼ above them;
/// each row label gives that head's total weight on S, and ★ marks the head with the most.
/// Colour runs from 0 to the largest weight (the colour bar shows the scale).
///
/// `weights` is `[layer][head][position]`, as in `AttentionSummary::weights`.
///
/// Cells: one [`GridCell`] per (row, position) with x = position, y = row = the head's
/// index counted over layers, value = weight, marked = the position holds a bit of S.
/// Series: `S` (position, bit index) per relevant bit, `mass_on_s` (row, mass) and
/// `best_head` (layer, head).
pub fn attention_heatmap(weights: &[Vec<Vec<f64>>], relevant: &[usize], title: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    heatmap(weights, relevant, title, "mean CLS attention weight", path.as_ref())
}

/// [`attention_heatmap`] of the weights for one input (`sparsevar eval`, a saved model's
/// `plot_attention`), not a mean over inputs: only the colour bar's description differs.
pub fn input_attention_heatmap(weights: &[Vec<Vec<f64>>], relevant: &[usize], title: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    heatmap(weights, relevant, title, "CLS attention weight on this input", path.as_ref())
}

fn heatmap(weights: &[Vec<Vec<f64>>], relevant: &[usize], title: &str, scale: &str, path: &Path) -> Result<PlotFile, PlotError> {
    let rows: Vec<(usize, usize, &Vec<f64>)> =
        weights.iter().enumerate().flat_map(|(l, heads)| heads.iter().enumerate().map(move |(h, w)| (l, h, w))).collect();
    let Some(&(_, _, first)) = rows.first() else {
        return Err(PlotError::empty(path, "no attention weights (no layers or no heads)"));
    };
    let positions = first.len();
    if positions < 2 {
        return Err(PlotError::input(path, format!("{positions} key positions; expected CLS and at least one input bit")));
    }
    if let Some((l, h, w)) = rows.iter().find(|r| r.2.len() != positions) {
        return Err(PlotError::input(path, format!("layer {l} head {h} has {} positions, layer 0 head 0 has {positions}", w.len())));
    }
    if let Some((l, h, _)) = rows.iter().find(|r| r.2.iter().any(|v| !v.is_finite())) {
        return Err(PlotError::input(path, format!("layer {l} head {h} has a non-finite weight")));
    }
    let t = positions - 1;
    if let Some(&bad) = relevant.iter().find(|&&i| i >= t) {
        return Err(PlotError::input(path, format!("relevant bit {bad} is out of range for T = {t} input bits")));
    }
    let in_s = |pos: usize| pos >= 1 && relevant.contains(&(pos - 1));

    let n = rows.len();
    // Row r is drawn at y = n − 1 − r, so the first head of the first layer is on top.
    let y_of = |r: usize| (n - 1 - r) as f64;
    let vmax = rows.iter().flat_map(|r| r.2.iter()).copied().fold(0.0, f64::max).max(1e-12);
    let mass: Vec<f64> = rows.iter().map(|(_, _, w)| (0..positions).filter(|&p| in_s(p)).map(|p| w[p]).sum()).collect();
    let best = (0..n).max_by(|&a, &b| mass[a].total_cmp(&mass[b])).unwrap_or(0);

    let mut cells = vec![];
    let mut rects = vec![];
    for (r, (_, _, w)) in rows.iter().enumerate() {
        for (p, &v) in w.iter().enumerate() {
            let (x, y) = (p as f64, y_of(r));
            rects.push((((x - 0.5, y - 0.5), (x + 0.5, y + 0.5)), viridis(v / vmax)));
            cells.push(GridCell { x, y: r as f64, value: v, marked: in_s(p) });
        }
    }
    let mut s_sorted: Vec<usize> = relevant.to_vec();
    s_sorted.sort();
    s_sorted.dedup();
    let top = n as f64 - 0.5;
    let outlines = s_sorted.iter().map(|&i| (((i + 1) as f64 - 0.5, -0.5), ((i + 1) as f64 + 0.5, top))).collect();
    let arrows: Vec<(f64, f64)> = s_sorted.iter().map(|&i| ((i + 1) as f64, top)).collect();

    let x_ticks = position_ticks(t, &s_sorted);
    let mut x = Axis::linear(-0.5, t as f64 + 0.5, x_ticks, "key position: CLS, then input bit i (S outlined)");
    x.names = std::iter::once((0.0, "CLS".to_string())).chain((0..t).map(|i| ((i + 1) as f64, i.to_string()))).collect();
    let mut y = Axis::linear(-0.5, n as f64 - 0.5, (0..n).map(y_of).collect(), "layer, head (mass on S)");
    y.names = rows.iter().enumerate().map(|(r, (l, h, _))| (y_of(r), format!("{}L{l} H{h} ({:.2})", if r == best { "★ " } else { "" }, mass[r]))).collect();
    // White rules between layers, so rows group by layer.
    let mut rules = vec![];
    let mut r = 0;
    for heads in weights.iter().take(weights.len().saturating_sub(1)) {
        r += heads.len();
        let y = n as f64 - r as f64 - 0.5;
        rules.push(Layer::Line { points: vec![(-0.5, y), (t as f64 + 0.5, y)], color: WHITE, width: 3, dash: Dash::Solid });
    }
    let mut panel = Panel::new(x, y);
    panel.grid = false;
    panel.margin_top = 22;
    panel.y_label_width = 150;
    panel.layers = vec![Layer::Cells { rects }];
    panel.layers.extend(rules);
    panel.layers.extend([
        // A 3-pixel outline would bury a narrow column's colour: thinner as columns narrow
        // (the plot is about 580 pixels wide).
        Layer::Outlines {
            rects: outlines,
            color: MARK,
            width: match 580 / positions {
                0..=7 => 1,
                8..=13 => 2,
                _ => 3,
            },
        },
        Layer::Markers { points: arrows, shape: Shape::TriangleDown, color: MARK, filled: true, r: 6, offset: (0, -11) },
    ]);

    let s_text = s_sorted.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let (bl, bh, _) = rows[best];
    let subtitle = format!("S = {{{s_text}}} (input bits from 0) · head L{bl} H{bh} puts {:.2} of its CLS attention on S", mass[best]);
    let mut scene = Scene::new(title, subtitle);
    scene.panels.push(panel);
    scene.side = 250;
    scene.legend = vec![entry("S: the relevant bits", Glyph::Outline { color: MARK })];
    scene.colorbar = Some(ColorBar { lo: 0.0, hi: vmax, ticks: nice_ticks(0.0, vmax), desc: scale.into() });

    let series = vec![
        Series {
            name: "S".into(),
            label: "relevant bits: (key position, bit index)".into(),
            points: s_sorted.iter().map(|&i| ((i + 1) as f64, i as f64)).collect(),
        },
        Series {
            name: "mass_on_s".into(),
            label: "attention mass on S per head: (row, mass)".into(),
            points: mass.iter().enumerate().map(|(r, &m)| (r as f64, m)).collect(),
        },
        Series { name: "best_head".into(), label: "head with the most mass on S: (layer, head)".into(), points: vec![(bl as f64, bh as f64)] },
    ];
    render(path, &scene, series, cells)
}

/// Labels the most a position axis shows: beyond this they run together (the plot is about
/// 580 pixels wide and a label like "31" about 20).
pub(crate) const MAX_POSITION_LABELS: usize = 16;

/// Which key positions get a label: all of them when CLS and the T bits fit in
/// [`MAX_POSITION_LABELS`] + 1; otherwise CLS, every bit of S (sorted, deduplicated) and
/// every k-th bit from k on (bit 0 would print on top of CLS), k a round number chosen so
/// that at most about [`MAX_POSITION_LABELS`] labels show, leaving out the k-th bits that
/// would crowd a bit of S. Positions, not bit indices: bit i is position i + 1.
pub(crate) fn position_ticks(t: usize, s_sorted: &[usize]) -> Vec<f64> {
    if t < MAX_POSITION_LABELS + 1 {
        return (0..=t).map(|p| p as f64).collect();
    }
    let budget = MAX_POSITION_LABELS.saturating_sub(1 + s_sorted.len()).max(2);
    let k = [2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 256, 512, 1024, 2048, 4096].into_iter().find(|k| (t - 1) / k <= budget).unwrap_or(t);
    // A regular label closer than k/2 columns to a bit of S would collide with it.
    let crowds = |i: usize| s_sorted.iter().any(|&s| 2 * i.abs_diff(s) < k);
    let mut bits: Vec<usize> = (1..t).filter(|i| i % k == 0 && !crowds(*i)).collect();
    bits.extend(s_sorted.iter().copied().filter(|&s| s < t));
    bits.sort();
    bits.dedup();
    std::iter::once(0.0).chain(bits.into_iter().map(|i| (i + 1) as f64)).collect()
}

/// [`attention_heatmap`] of one trained member (its attention summary and its S).
pub fn member_attention(member: &MemberResult, title: &str, path: impl AsRef<Path>) -> Result<PlotFile, PlotError> {
    let path = path.as_ref();
    match &member.attention {
        Some(a) if !a.weights.is_empty() => attention_heatmap(&a.weights, &member.relevant, title, path),
        _ => Err(PlotError::input(
            path,
            format!("member with seed {} has no attention weights (an MLP, or a result read from summary.json, which does not store them)", member.seed),
        )),
    }
}
