//! Figures: each sparsevar-plot figure as a script function. Relative paths go into the
//! out folder; the extension (.png or .svg) picks the format. Each returns the figure's
//! path and the data drawn in it.

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_core::model::ModelSpec;
use sparsevar_experiment::sweep::SweepSummary;
use sparsevar_plot::{PlotError, PlotFile};

use super::{Api, Res, SweepResult, TrainResult, fail};
use crate::engine::State;

/// The figure as a script map: path, width, height, series (name → [[x, y], …]) and cells
/// (maps of x, y, value, marked).
fn figure(st: &State, f: PlotFile) -> Map {
    st.record(&f.path);
    let mut series = Map::new();
    for s in &f.series {
        let pts: Array = s.points.iter().map(|&(x, y)| Dynamic::from_array(vec![Dynamic::from(x), Dynamic::from(y)])).collect();
        series.insert(s.name.as_str().into(), Dynamic::from_array(pts));
    }
    let cells: Array = f
        .cells
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("x".into(), Dynamic::from(c.x));
            m.insert("y".into(), Dynamic::from(c.y));
            m.insert("value".into(), Dynamic::from(c.value));
            m.insert("marked".into(), Dynamic::from(c.marked));
            Dynamic::from_map(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("path".into(), Dynamic::from(f.path.display().to_string()));
    m.insert("width".into(), Dynamic::from(f.width as i64));
    m.insert("height".into(), Dynamic::from(f.height as i64));
    m.insert("series".into(), Dynamic::from_map(series));
    m.insert("cells".into(), Dynamic::from_array(cells));
    m
}

fn draw(ctx: &NativeCallContext, st: &State, path: &str, f: impl FnOnce(&std::path::Path) -> Result<PlotFile, PlotError>) -> Res<Map> {
    let full = st.out_path(path).map_err(|e| fail(ctx, e))?;
    f(&full).map(|p| figure(st, p)).map_err(|e| fail(ctx, e))
}

fn title(r: &TrainResult) -> String {
    let c = &r.0.config;
    let model = match &c.model {
        ModelSpec::Transformer(t) => format!("{}-layer {} transformer", t.layers, t.attention),
        ModelSpec::Mlp(m) => format!("MLP {}×{}", m.depth, m.width),
    };
    format!("{}: {} T={} s={}, {model}", r.0.name, c.task.kind.replace('_', " "), c.task.t, c.task.s)
}

/// Sweeps to compare with their labels: an array of SweepResults (labelled by their names)
/// or a map from label to SweepResult.
fn entries(v: &Dynamic) -> Result<Vec<(String, SweepResult)>, String> {
    let one = |label: String, d: &Dynamic| {
        d.read_lock::<SweepResult>().map(|r| (label, r.clone())).ok_or_else(|| format!("plot_comparison: expected SweepResults (got {})", d.type_name()))
    };
    if let Some(a) = v.read_lock::<Array>() {
        return a.iter().map(|d| one(d.read_lock::<SweepResult>().map(|r| r.0.name.clone()).unwrap_or_default(), d)).collect();
    }
    if let Some(m) = v.read_lock::<Map>() {
        return m.iter().map(|(k, d)| one(k.to_string(), d)).collect();
    }
    Err(format!("plot_comparison: give an array of SweepResults or a map from label to SweepResult (got {})", v.type_name()))
}

pub(super) fn register(a: &mut Api) {
    a.group("Figures");
    let st = a.st.clone();
    a.func(
        "plot_scaling",
        "plot_scaling(sweep: SweepResult, path: string) -> map",
        "m*(T) per model on log axes with its grid bracket, each seed's threshold, the log and power fits, and the baselines.",
        move |ctx: NativeCallContext, r: SweepResult, path: &str| -> Res<Map> {
            draw(&ctx, &st, path, |p| sparsevar_plot::scaling_with_runs(&r.0.summary, &r.0.runs, p))
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_success_map",
        "plot_success_map(sweep: SweepResult, model: string, path: string) -> map",
        "One model's success rate over the (T, m) grid, m*(T) outlined.",
        move |ctx: NativeCallContext, r: SweepResult, model: &str, path: &str| -> Res<Map> {
            draw(&ctx, &st, path, |p| sparsevar_plot::success_map(&r.0.summary, model, p))
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_attention",
        "plot_attention(run: TrainResult, member: int, path: string) -> map",
        "Where one member's CLS token attends, per layer and head, S outlined (series `S`, `mass_on_s`, `best_head`).",
        move |ctx: NativeCallContext, r: TrainResult, i: i64, path: &str| -> Res<Map> {
            let members = &r.0.result.members;
            let m = usize::try_from(i)
                .ok()
                .and_then(|i| members.get(i))
                .ok_or_else(|| fail(&ctx, format!("member {i} is out of range: this run has members 0 to {}", members.len().saturating_sub(1))))?;
            let t = format!("{}, seed {}", title(&r), m.seed);
            draw(&ctx, &st, path, |p| sparsevar_plot::member_attention(m, &t, p))
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_curves",
        "plot_curves(run: TrainResult, path: string) -> map",
        "Test accuracy, loss and attention mass on S against step per member, with the learned step (●) and the variable-creation step (▲) marked.",
        move |ctx: NativeCallContext, r: TrainResult, path: &str| -> Res<Map> {
            draw(&ctx, &st, path, |p| sparsevar_plot::training_curves(&r.0.result.curves, &r.0.result.members, &title(&r), p))
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_comparison",
        "plot_comparison(sweeps: array or map, path: string) -> map",
        "m*(T) of several sweeps on one plot: an array of SweepResults (labelled by name) or a map from label to SweepResult.",
        move |ctx: NativeCallContext, v: Dynamic, path: &str| -> Res<Map> {
            let list = entries(&v).map_err(|e| fail(&ctx, e))?;
            let refs: Vec<(&str, &SweepSummary)> = list.iter().map(|(l, r)| (l.as_str(), &r.0.summary)).collect();
            draw(&ctx, &st, path, |p| sparsevar_plot::comparison(&refs, p))
        },
    );
}
