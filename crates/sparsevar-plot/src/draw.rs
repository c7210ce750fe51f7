//! The scene every figure fills in, and the one routine that draws it on any backend.
//!
//! A [`Scene`] is a title, panels stacked top to bottom (each an x and y axis, linear or
//! log, and layers of lines, markers, bars and cells in data coordinates), and a side column
//! with a legend and an optional colour bar. Keeping legends and colour bars out of the
//! panels means they never cover data.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::element::{DashedPathElement, DynElement, IntoDynElement};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub(crate) type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

pub(crate) const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 22.0;
const SUBTITLE_SIZE: f64 = 14.0;
const DESC_SIZE: f64 = 16.0;
const TICK_SIZE: f64 = 14.0;
const LEGEND_SIZE: f64 = 14.0;
const LEGEND_ROW: i32 = 22;
pub(crate) const GREY: RGBColor = RGBColor(100, 100, 100);
pub(crate) const LIGHT_GREY: RGBColor = RGBColor(170, 170, 170);
/// Outline of marked cells (m*, S): a red that stays visible on every viridis colour.
pub(crate) const MARK: RGBColor = RGBColor(228, 26, 28);

/// Okabe–Ito colours: distinguishable with colour-vision deficiency (its yellow is left
/// out: it vanishes on white).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

pub(crate) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Marker shapes in order, so series stay distinguishable in grey print too. Triangles are
/// left out: hollow ▲ and ▼ mean "not learned" and "m* may be lower". Three shapes against
/// seven colours repeat a pair only after 21 series.
pub(crate) fn shape(i: usize) -> Shape {
    [Shape::Circle, Shape::Square, Shape::Diamond][i % 3]
}

/// Viridis (perceptually uniform, monotone in lightness, so it survives grey print),
/// interpolated between 11 samples of matplotlib's table; `v` is clamped to [0, 1].
pub(crate) fn viridis(v: f64) -> RGBColor {
    const V: [(u8, u8, u8); 11] = [
        (68, 1, 84),
        (72, 36, 117),
        (65, 68, 135),
        (53, 95, 141),
        (42, 120, 142),
        (33, 145, 140),
        (34, 168, 132),
        (68, 191, 112),
        (122, 209, 81),
        (189, 223, 38),
        (253, 231, 37),
    ];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let x = v * 10.0;
    let i = (x.floor() as usize).min(9);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (V[i], V[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Black or white, whichever reads better on `c`.
pub(crate) fn ink_on(c: RGBColor) -> RGBColor {
    let luma = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if luma > 120.0 { BLACK } else { WHITE }
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// A count prints without a decimal point; anything else with as few digits as say it.
pub(crate) fn fmt_num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 * x.abs().max(1.0) {
        format!("{}", x.round() as i64)
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `x` to three significant digits (fit coefficients).
pub(crate) fn fmt_sig(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}").replace('-', "−")
}

/// Loss-axis text: 1e-3 style below 0.01, where decimals get long.
fn fmt_small(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 { format!("{x:.0e}") } else { fmt_num(x) }
}

/// Powers of two over [lo, hi], every k-th one so that at most `max` remain.
pub(crate) fn log2_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    powers(2.0, lo, hi, max)
}

/// Powers of ten over [lo, hi], every k-th one so that at most `max` remain.
pub(crate) fn log10_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    powers(10.0, lo, hi, max)
}

fn powers(base: f64, lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let lb = |x: f64| x.ln() / base.ln();
    let (a, b) = ((lb(lo) - 1e-9).ceil() as i32, (lb(hi) + 1e-9).floor() as i32);
    if b < a {
        return vec![];
    }
    let n = (b - a + 1) as usize;
    let step = n.div_ceil(max.max(1)).max(1) as i32;
    (a..=b).filter(|e| (e - a) % step == 0).map(|e| base.powi(e)).collect()
}

/// 1-2-5 ticks (…, 100, 200, 500, 1000, …) over [lo, hi], for log axes spanning few decades.
pub(crate) fn log125_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = vec![];
    let mut e = lo.log10().floor() as i32 - 1;
    while 10f64.powi(e) <= hi {
        for k in [1.0, 2.0, 5.0] {
            let x = k * 10f64.powi(e);
            if x >= lo * (1.0 - 1e-9) && x <= hi * (1.0 + 1e-9) {
                v.push(x);
            }
        }
        e += 1;
    }
    v
}

/// Ticks for a log axis that always read: powers of ten when at least three fall in
/// [lo, hi] (thinned to at most `max`), else 1-2-5 steps, else every 1…9 multiple, so an
/// axis spanning less than a decade (a loss between 0.3 and 0.7) still gets several labels.
pub(crate) fn readable_log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let p = log10_ticks(lo, hi, max);
    if p.len() >= 3 {
        return p;
    }
    let t = log125_ticks(lo, hi);
    if t.len() >= 3 {
        return t;
    }
    let mut v = vec![];
    let mut e = lo.log10().floor() as i32;
    while 10f64.powi(e) <= hi {
        // k / 10^-e rather than k · 10^e: exact decimals (0.3, not 0.30000000000000004).
        for k in 1..10 {
            let x = if e < 0 { k as f64 / 10f64.powi(-e) } else { k as f64 * 10f64.powi(e) };
            if x >= lo * (1.0 - 1e-9) && x <= hi * (1.0 + 1e-9) {
                v.push(x);
            }
        }
        e += 1;
    }
    v
}

/// Round-number ticks over [lo, hi] (about five).
pub(crate) fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let mag = 10f64.powf((span / 5.0).log10().floor());
    let c = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|k| span / (k * mag) <= 6.0).unwrap_or(10.0);
    let step = c * mag;
    // k·c / (1/mag) instead of k·c·mag: exact for mag = 0.1, 0.01, … (0.6, not 0.6000000000000001).
    let at = |k: i64| if mag < 1.0 { k as f64 * c / (1.0 / mag).round() } else { k as f64 * step };
    ((lo / step - 1e-9).ceil() as i64..=(hi / step + 1e-9).floor() as i64).map(at).collect()
}

/// A padded range around the positive finite `values` (multiplicative padding `pad`).
pub(crate) fn log_range(values: impl IntoIterator<Item = f64>, pad: f64) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then(|| (lo / pad, hi * pad))
}

/// `n` points from `lo` to `hi`, evenly spaced in log scale (smooth fitted laws).
pub(crate) fn geom_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n < 2 || lo == hi {
        return vec![lo];
    }
    let mut v: Vec<f64> = (0..n).map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64)).collect();
    v[n - 1] = hi; // exactly the last measured T, not hi·(1 ± ε)
    v
}

// ---------------------------------------------------------------------------------------
// The scene.

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Shape {
    Circle,
    Square,
    Diamond,
    TriangleUp,
    TriangleDown,
}

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Dash {
    Solid,
    /// Long dashes (the logarithmic law).
    Dashed,
    /// Dots (the power law, train loss).
    Dotted,
}

impl Dash {
    /// (dash, gap) in pixels.
    fn pattern(self) -> Option<(u32, u32)> {
        match self {
            Dash::Solid => None,
            Dash::Dashed => Some((10, 6)),
            Dash::Dotted => Some((3, 4)),
        }
    }
}

/// An axis: its range, linear or log, where its ticks go and, optionally, their names.
#[derive(Clone, Debug)]
pub(crate) struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<f64>,
    /// Tick text by value (categorical axes); values not listed print as numbers.
    pub names: Vec<(f64, String)>,
    pub desc: String,
    /// Print tick text (false for the upper panels of a shared x axis).
    pub labelled: bool,
}

impl Axis {
    pub fn linear(lo: f64, hi: f64, ticks: Vec<f64>, desc: impl Into<String>) -> Self {
        Axis { lo, hi, log: false, ticks, names: vec![], desc: desc.into(), labelled: true }
    }
    pub fn log(lo: f64, hi: f64, ticks: Vec<f64>, desc: impl Into<String>) -> Self {
        Axis { lo, hi, log: true, ticks, names: vec![], desc: desc.into(), labelled: true }
    }
    /// The ticks drawn (those inside the range) with the text printed at each.
    pub(crate) fn drawn_ticks(&self) -> Vec<(f64, String)> {
        Scale::of(self).ticks.into_iter().map(|t| (t, self.text(t))).collect()
    }
    pub(crate) fn text(&self, v: f64) -> String {
        if !self.labelled {
            return String::new();
        }
        let tol = 1e-9 * v.abs().max(1.0);
        match self.names.iter().find(|(x, _)| (x - v).abs() <= tol) {
            Some((_, n)) => n.clone(),
            None => fmt_small(v),
        }
    }
}

type Rect = ((f64, f64), (f64, f64));

/// Things drawn in a panel, in data coordinates, in order (later on top).
#[derive(Clone, Debug)]
pub(crate) enum Layer {
    Line {
        points: Vec<(f64, f64)>,
        color: RGBColor,
        width: u32,
        dash: Dash,
    },
    /// `offset` moves every marker by whole pixels (a mark beside its point, or over an edge).
    Markers {
        points: Vec<(f64, f64)>,
        shape: Shape,
        color: RGBColor,
        filled: bool,
        r: i32,
        offset: (i32, i32),
    },
    /// Vertical intervals (x, low, high) with caps.
    Bars {
        bars: Vec<(f64, f64, f64)>,
        color: RGBColor,
    },
    Cells {
        rects: Vec<(Rect, RGBColor)>,
    },
    Outlines {
        rects: Vec<Rect>,
        color: RGBColor,
        width: u32,
    },
    Texts {
        items: Vec<((f64, f64), String, RGBColor)>,
        size: f64,
    },
}

pub(crate) fn markers(points: Vec<(f64, f64)>, shape: Shape, color: RGBColor, filled: bool) -> Layer {
    // A filled marker's white edge eats a pixel: one more keeps both the same size.
    Layer::Markers { points, shape, color, filled, r: if filled { 6 } else { 5 }, offset: (0, 0) }
}

#[derive(Clone, Debug)]
pub(crate) struct Panel {
    pub x: Axis,
    pub y: Axis,
    pub layers: Vec<Layer>,
    /// Pixels left of the plot for tick text and the y description.
    pub y_label_width: u32,
    /// Pixels under the plot for tick text and the x description.
    pub x_label_height: u32,
    /// Faint grid lines at the ticks.
    pub grid: bool,
    /// Pixels above the plot (room for marks over the top edge).
    pub margin_top: u32,
}

impl Panel {
    pub fn new(x: Axis, y: Axis) -> Self {
        Panel { x, y, layers: vec![], y_label_width: 84, x_label_height: 58, grid: true, margin_top: 8 }
    }
}

/// What a legend entry shows beside its text.
#[derive(Clone, Debug)]
pub(crate) enum Glyph {
    /// A line sample, optionally with a marker on it.
    Line {
        color: RGBColor,
        width: u32,
        dash: Dash,
        marker: Option<(Shape, bool)>,
    },
    Marker {
        color: RGBColor,
        shape: Shape,
        filled: bool,
    },
    /// An interval bar with caps.
    Bar {
        color: RGBColor,
    },
    /// An outlined cell.
    Outline {
        color: RGBColor,
    },
    /// No glyph: a heading (or a note) that starts at the glyph column.
    None,
}

#[derive(Clone, Debug)]
pub(crate) struct LegendEntry {
    pub text: String,
    pub glyph: Glyph,
}

pub(crate) fn entry(text: impl Into<String>, glyph: Glyph) -> LegendEntry {
    LegendEntry { text: text.into(), glyph }
}

#[derive(Clone, Debug)]
pub(crate) struct ColorBar {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    pub desc: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Scene {
    pub title: String,
    pub subtitle: String,
    pub panels: Vec<Panel>,
    /// Relative heights of the panels (equal when empty).
    pub heights: Vec<f64>,
    pub legend: Vec<LegendEntry>,
    pub colorbar: Option<ColorBar>,
    /// Width of the side column (legend, colour bar), pixels.
    pub side: u32,
}

impl Scene {
    pub fn new(title: impl Into<String>, subtitle: impl Into<String>) -> Self {
        Scene { title: title.into(), subtitle: subtitle.into(), panels: vec![], heights: vec![], legend: vec![], colorbar: None, side: 320 }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = header(root, &self.title, &self.subtitle)?;
        let (w, h) = body.dim_in_pixel();
        let has_side = !self.legend.is_empty() || self.colorbar.is_some();
        let (plots, side) = if has_side {
            let (a, b) = body.split_horizontally(w.saturating_sub(self.side));
            (a, Some(b))
        } else {
            (body, None)
        };
        // Panels stacked by relative height.
        let n = self.panels.len();
        let weights: Vec<f64> = if self.heights.len() == n { self.heights.clone() } else { vec![1.0; n] };
        let total: f64 = weights.iter().sum();
        let mut rest = plots;
        for (i, panel) in self.panels.iter().enumerate() {
            let area = if i + 1 == n {
                rest.clone()
            } else {
                let px = (h as f64 * weights[i] / total).round() as u32;
                let (a, b) = rest.split_vertically(px);
                rest = b;
                a
            };
            draw_panel(&area, panel)?;
        }
        if let Some(side) = side {
            let legend_h = if self.legend.is_empty() { 0 } else { 16 + LEGEND_ROW * self.legend.len() as i32 + 8 };
            match &self.colorbar {
                None => draw_legend(&side, &self.legend, 16)?,
                Some(cb) => {
                    let (top, bottom) = side.split_vertically(legend_h.min(h as i32 / 2).max(0));
                    draw_legend(&top, &self.legend, 16)?;
                    draw_colorbar(&bottom, cb)?;
                }
            }
        }
        Ok(())
    }
}

/// Title and (grey, smaller) subtitle across the top; returns the area below them.
fn header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let height = if subtitle.is_empty() { 44 } else { 66 };
    let (top, rest) = root.split_vertically(height);
    let w = top.dim_in_pixel().0 as i32;
    top.draw(&Text::new(title.to_string(), (w / 2, 12), font(TITLE_SIZE).pos(Pos::new(HPos::Center, VPos::Top))))?;
    if !subtitle.is_empty() {
        top.draw(&Text::new(subtitle.to_string(), (w / 2, 42), font(SUBTITLE_SIZE).color(&GREY).pos(Pos::new(HPos::Center, VPos::Top))))?;
    }
    Ok(rest)
}

/// One axis as plotters sees it: linear or natural-log mapping, ticks exactly where the
/// figure put them (plotters' own log axis picks its ticks, and its linear axis with fixed
/// ticks lacks a formatter; this type does both, and keeps every panel one type).
#[derive(Clone, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<f64>,
}

impl Scale {
    fn of(a: &Axis) -> Self {
        Scale { lo: a.lo, hi: a.hi, log: a.log, ticks: a.ticks.iter().copied().filter(|t| *t >= a.lo.min(a.hi) && *t <= a.hi.max(a.lo)).collect() }
    }
}

impl Ranged for Scale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let (a, b, x) = if self.log { (self.lo.ln(), self.hi.ln(), v.ln()) } else { (self.lo, self.hi, *v) };
        let f = if b != a { (x - a) / (b - a) } else { 0.5 };
        let px = limit.0 as f64 + f * (limit.1 - limit.0) as f64;
        // Far-off or non-finite values (a log of 0) clamp instead of wrapping around.
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() { vec![] } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(p.margin_top)
        .margin_right(16)
        .margin_left(6)
        .x_label_area_size(p.x_label_height)
        .y_label_area_size(p.y_label_width)
        .build_cartesian_2d(Scale::of(&p.x), Scale::of(&p.y))?;
    let xf = |v: &f64| p.x.text(*v);
    let yf = |v: &f64| p.y.text(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(font(TICK_SIZE))
        .axis_desc_style(font(DESC_SIZE))
        .bold_line_style(BLACK.mix(if p.grid { 0.10 } else { 0.0 }))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK.stroke_width(1));
    if !p.x.desc.is_empty() {
        mesh.x_desc(p.x.desc.clone());
    }
    if !p.y.desc.is_empty() {
        mesh.y_desc(p.y.desc.clone());
    }
    mesh.draw()?;
    for layer in &p.layers {
        draw_layer(&mut chart, layer)?;
    }
    // The frame: the top and right edges too, so a panel reads as a box.
    let (xr, yr) = (p.x.lo..p.x.hi, p.y.lo..p.y.hi);
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(xr.start, yr.start), (xr.start, yr.end), (xr.end, yr.end), (xr.end, yr.start), (xr.start, yr.start)],
        BLACK.stroke_width(1),
    )))?;
    Ok(())
}

fn draw_layer<DB, X, Y>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>, layer: &Layer) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    match layer {
        Layer::Line { points, color, width, dash } => {
            // A line through a non-finite point breaks there instead of jumping.
            for run in points.split(|(x, y)| !(x.is_finite() && y.is_finite())).filter(|r| r.len() >= 2) {
                let style = color.stroke_width(*width);
                match dash.pattern() {
                    None => chart.draw_series(std::iter::once(PathElement::new(run.to_vec(), style)))?,
                    Some((on, off)) => chart.draw_series(std::iter::once(DashedPathElement::new(run.iter().copied(), on, off, style)))?,
                };
            }
        }
        Layer::Markers { points, shape, color, filled, r, offset } => {
            let pts = points.iter().filter(|(x, y)| x.is_finite() && y.is_finite());
            // One at a time through the plotting area: `draw_series` would need the boxed
            // marker to outlive every borrow ('static), which a backend with a lifetime is not.
            let area = chart.plotting_area();
            for &p in pts {
                area.draw(&marker::<DB, (f64, f64)>(p, *shape, *r, *color, *filled, *offset))?;
            }
        }
        Layer::Bars { bars, color } => {
            let s = color.stroke_width(2);
            for &(x, lo, hi) in bars {
                chart.draw_series(std::iter::once(PathElement::new(vec![(x, lo), (x, hi)], s)))?;
                for end in [lo, hi] {
                    chart.draw_series(std::iter::once(EmptyElement::at((x, end)) + PathElement::new(vec![(-5, 0), (5, 0)], s)))?;
                }
            }
        }
        Layer::Cells { rects } => {
            chart.draw_series(rects.iter().map(|&((a, b), c)| Rectangle::new([a, b], c.filled())))?;
        }
        Layer::Outlines { rects, color, width } => {
            // Closed paths, not stroked rectangles: plotters' SVG backend drops a rectangle's
            // stroke width.
            let style = color.stroke_width(*width);
            chart.draw_series(rects.iter().map(|&((x0, y0), (x1, y1))| PathElement::new(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], style)))?;
        }
        Layer::Texts { items, size } => {
            let style = (FONT, *size).into_font();
            chart.draw_series(items.iter().map(|(at, s, c)| Text::new(s.clone(), *at, style.clone().color(c).pos(Pos::new(HPos::Center, VPos::Center)))))?;
        }
    }
    Ok(())
}

/// A marker centred on `at` (data or pixel coordinates), about `r` pixels in radius, moved
/// by `offset` pixels. Hollow markers have a white fill so lines under them do not show.
pub(crate) fn marker<'b, DB: DrawingBackend + 'b, C: Clone + 'b>(
    at: C,
    shape: Shape,
    r: i32,
    color: RGBColor,
    filled: bool,
    offset: (i32, i32),
) -> DynElement<'b, DB, C> {
    let (ox, oy) = offset;
    // Filled markers get a thin white edge, so one drawn over another stays readable.
    let stroke = if filled { WHITE.stroke_width(1) } else { color.stroke_width(2) };
    let poly = |pts: Vec<(i32, i32)>| -> DynElement<'b, DB, C> {
        let pts: Vec<(i32, i32)> = pts.into_iter().map(|(x, y)| (x + ox, y + oy)).collect();
        let mut closed = pts.clone();
        closed.push(pts[0]);
        let fill = if filled { color.filled() } else { WHITE.filled() };
        (EmptyElement::at(at.clone()) + Polygon::new(pts, fill) + PathElement::new(closed, stroke)).into_dyn()
    };
    match shape {
        Shape::Circle => {
            let fill = if filled { color.filled() } else { WHITE.filled() };
            (EmptyElement::at(at) + Circle::new((ox, oy), r, fill) + Circle::new((ox, oy), r, stroke)).into_dyn()
        }
        Shape::Square => {
            let q = r - 1;
            poly(vec![(-q, -q), (q, -q), (q, q), (-q, q)])
        }
        Shape::Diamond => {
            let d = r + 1;
            poly(vec![(0, -d), (d, 0), (0, d), (-d, 0)])
        }
        Shape::TriangleUp => poly(vec![(0, -r - 1), (r + 1, r), (-r - 1, r)]),
        Shape::TriangleDown => poly(vec![(0, r + 1), (r + 1, -r), (-r - 1, -r)]),
    }
}

/// A legend in its own area: one row per entry, the glyph in a 40-pixel column, its text
/// beside it. Rows that do not fit are dropped with a note saying how many.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry], top: i32) -> DrawResult<DB> {
    let h = area.dim_in_pixel().1 as i32;
    let max_rows = ((h - top - 4) / LEGEND_ROW).max(1) as usize;
    let shown = if entries.len() > max_rows { max_rows - 1 } else { entries.len() };
    let (gx, tx) = (8, 50);
    for (i, e) in entries.iter().take(shown).enumerate() {
        let y = top + i as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        match &e.glyph {
            Glyph::Line { color, width, dash, marker: mk } => {
                let style = color.stroke_width(*width);
                let (x0, x1) = (gx, gx + 36);
                match dash.pattern() {
                    None => area.draw(&PathElement::new(vec![(x0, y), (x1, y)], style))?,
                    Some((on, off)) => {
                        let mut x = x0;
                        while x < x1 {
                            let e = (x + on as i32).min(x1);
                            area.draw(&PathElement::new(vec![(x, y), (e, y)], style))?;
                            x = e + off as i32;
                        }
                    }
                }
                if let Some((shape, filled)) = mk {
                    area.draw(&marker::<DB, (i32, i32)>(((x0 + x1) / 2, y), *shape, 5, *color, *filled, (0, 0)))?;
                }
            }
            Glyph::Marker { color, shape, filled } => {
                area.draw(&marker::<DB, (i32, i32)>((gx + 18, y), *shape, if *filled { 6 } else { 5 }, *color, *filled, (0, 0)))?
            }
            Glyph::Bar { color } => {
                let (x, s) = (gx + 18, color.stroke_width(2));
                area.draw(&PathElement::new(vec![(x, y - 8), (x, y + 8)], s))?;
                for yy in [y - 8, y + 8] {
                    area.draw(&PathElement::new(vec![(x - 5, yy), (x + 5, yy)], s))?;
                }
            }
            Glyph::Outline { color } => {
                let (x0, x1, y0, y1) = (gx + 8, gx + 28, y - 8, y + 8);
                area.draw(&PathElement::new(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], color.stroke_width(3)))?;
            }
            Glyph::None => {}
        }
        let x = if matches!(e.glyph, Glyph::None) { gx } else { tx };
        area.draw(&Text::new(e.text.clone(), (x, y), font(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center))))?;
    }
    if shown < entries.len() {
        let y = top + shown as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        let note = format!("… and {} more", entries.len() - shown);
        area.draw(&Text::new(note, (gx, y), font(LEGEND_SIZE).color(&GREY).pos(Pos::new(HPos::Left, VPos::Center))))?;
    }
    Ok(())
}

/// A vertical viridis bar over [lo, hi], ticks and description on its right.
fn draw_colorbar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, cb: &ColorBar) -> DrawResult<DB> {
    let (lo, hi) = (cb.lo, if cb.hi > cb.lo { cb.hi } else { cb.lo + 1.0 });
    // A 26-pixel bar, then 100 pixels of tick text and description; the rest is margin.
    let w = area.dim_in_pixel().0;
    let (left, bar, labels) = (24, 26, 100);
    let mut chart = ChartBuilder::on(area)
        .margin_top(12)
        .margin_bottom(64)
        .margin_left(left)
        .margin_right(w.saturating_sub(left + bar + labels))
        .right_y_label_area_size(labels)
        .build_cartesian_2d(0.0..1.0f64, Scale { lo, hi, log: false, ticks: cb.ticks.clone() })?;
    let steps = 160;
    chart.draw_series((0..steps).map(|i| {
        let a = lo + (hi - lo) * i as f64 / steps as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
        Rectangle::new([(0.0, a), (1.0, b)], viridis((i as f64 + 0.5) / steps as f64).filled())
    }))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(cb.desc.clone())
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(font(TICK_SIZE))
        .axis_desc_style(font(DESC_SIZE))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new([(0.0, lo), (1.0, hi)], BLACK.stroke_width(1))))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_clamps_and_gets_lighter() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
        let luma = |c: RGBColor| 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
        for i in 0..20 {
            assert!(luma(viridis(i as f64 / 20.0)) < luma(viridis((i + 1) as f64 / 20.0)), "{i}");
        }
    }

    #[test]
    fn log_ticks_are_thinned_powers() {
        assert_eq!(log2_ticks(5.0, 40.0, 10), vec![8.0, 16.0, 32.0]);
        let t = log2_ticks(1.0, 65536.0, 6);
        assert!(t.len() <= 6 && t[0] == 1.0, "{t:?}");
        assert!(t.windows(2).all(|w| w[1] / w[0] == t[1] / t[0]), "{t:?}");
        assert!(log2_ticks(5.0, 7.0, 4).is_empty());
        assert_eq!(log10_ticks(3e-5, 0.9, 10), vec![1e-4, 1e-3, 1e-2, 1e-1]);
        // An end that is a power itself counts, despite ln rounding.
        assert_eq!(log10_ticks(1e-3, 1.0, 10), vec![1e-3, 1e-2, 1e-1, 1.0]);
        assert_eq!(log125_ticks(80.0, 12000.0), vec![100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]);
        // A loss axis: decades when they are enough, finer steps when they are not.
        assert_eq!(readable_log_ticks(1e-4, 2.0, 8), vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0]);
        assert_eq!(readable_log_ticks(0.02, 1.1, 8), vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(readable_log_ticks(0.28, 1.05, 8), vec![0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]);
        assert!(readable_log_ticks(0.0, 1.0, 8).is_empty());
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_num(16384.0), "16384");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_small(0.001), "1e-3");
        assert_eq!((fmt_sig(5.0397), fmt_sig(-96.0), fmt_sig(0.012345)), ("5.04".into(), "−96.0".into(), "0.0123".into()));
        assert_eq!(nice_ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(0.0, 11000.0), vec![0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0]);
    }

    #[test]
    fn geometric_grid_ends_on_both_ends() {
        let g = geom_grid(8.0, 128.0, 5);
        assert_eq!(g, vec![8.0, 16.0, 32.0, 64.0, 128.0]);
    }
}
