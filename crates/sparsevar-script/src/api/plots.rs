//! Figures: each sparsevar-plot figure as a script function. Relative paths go into the
//! out folder; the extension (.png or .svg) picks the format. Each returns the figure's
//! path and the data drawn in it.

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_core::model::ModelSpec;
use sparsevar_experiment::compare::{Comparison, RunData, TrainOutcomeRow, load_comparison};
use sparsevar_experiment::sweep::SweepSummary;
use sparsevar_plot::{ChartSpec, PlotError, PlotFile};

use super::{Api, Res, SweepResult, TrainResult, fail, string_of};
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

pub(super) fn draw(ctx: &NativeCallContext, st: &State, path: &str, f: impl FnOnce(&std::path::Path) -> Result<PlotFile, PlotError>) -> Res<Map> {
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

/// The options of `plot_lines` and `plot_bars`: which columns, and the words and scales.
struct RowSpec {
    x: String,
    y: String,
    group: Option<String>,
    chart: ChartSpec,
}

const ROW_KEYS: [&str; 9] = ["x", "y", "group", "title", "subtitle", "x_label", "y_label", "log_x", "log_y"];

fn row_spec(what: &str, opts: &Map) -> Result<RowSpec, String> {
    if let Some(k) = opts.keys().find(|k| !ROW_KEYS.contains(&k.as_str())) {
        return Err(format!("{what}: unknown option `{k}`; known: {}", ROW_KEYS.join(", ")));
    }
    let text = |k: &str| -> Result<Option<String>, String> { opts.get(k).map(|v| string_of(&format!("{what} option {k}"), v)).transpose() };
    let flag = |k: &str| -> Result<bool, String> {
        opts.get(k).map_or(Ok(false), |v| v.as_bool().map_err(|t| format!("{what} option {k}: expected true or false (got {t})")))
    };
    let x = text("x")?.ok_or_else(|| format!("{what}: option `x` (the column along the x axis) is required"))?;
    let y = text("y")?.ok_or_else(|| format!("{what}: option `y` (the column of values) is required"))?;
    let chart = ChartSpec {
        title: text("title")?.unwrap_or_else(|| format!("{y} by {x}")),
        subtitle: text("subtitle")?.unwrap_or_default(),
        x_desc: text("x_label")?.unwrap_or_else(|| x.clone()),
        y_desc: text("y_label")?.unwrap_or_else(|| y.clone()),
        log_x: flag("log_x")?,
        log_y: flag("log_y")?,
    };
    Ok(RowSpec { x, y, group: text("group")?, chart })
}

/// Row `i`'s column `key`, which every row must have.
fn column<'a>(what: &str, row: &'a Map, i: usize, key: &str) -> Result<&'a Dynamic, String> {
    row.get(key).ok_or_else(|| {
        let have: Vec<&str> = row.keys().map(|k| k.as_str()).collect();
        format!("{what}: row {i} has no column `{key}` (it has {})", have.join(", "))
    })
}

fn number(what: &str, v: &Dynamic, i: usize, key: &str) -> Result<f64, String> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|n| n as f64))
        .ok_or_else(|| format!("{what}: row {i} column `{key}` is {} ({v}), not a number", v.type_name()))
}

/// A category or group label: strings as they are, anything else as it prints.
fn label(v: &Dynamic) -> String {
    v.clone().into_string().unwrap_or_else(|_| v.to_string())
}

/// The rows as maps, with the group of each (one group named after `y` without `group`).
fn rows_of(what: &str, rows: &Array, spec: &RowSpec) -> Result<Vec<(Map, String)>, String> {
    if rows.is_empty() {
        return Err(format!("{what}: no rows"));
    }
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let m = r.clone().try_cast::<Map>().ok_or_else(|| format!("{what}: row {i} is {}, not a map", r.type_name()))?;
            let g = match &spec.group {
                Some(k) => label(column(what, &m, i, k)?),
                None => spec.y.clone(),
            };
            Ok((m, g))
        })
        .collect()
}

/// Named groups of (x, y) points, in the order first seen.
type Groups = Vec<(String, Vec<(f64, f64)>)>;

/// `plot_lines`: one line per group, (x, y) from each row.
fn line_groups(rows: &Array, spec: &RowSpec) -> Result<Groups, String> {
    let what = "plot_lines";
    let mut groups: Groups = vec![];
    for (i, (m, g)) in rows_of(what, rows, spec)?.into_iter().enumerate() {
        let x = number(what, column(what, &m, i, &spec.x)?, i, &spec.x)?;
        let y = number(what, column(what, &m, i, &spec.y)?, i, &spec.y)?;
        match groups.iter_mut().find(|(n, _)| *n == g) {
            Some((_, pts)) => pts.push((x, y)),
            None => groups.push((g, vec![(x, y)])),
        }
    }
    Ok(groups)
}

/// `plot_bars`: (category, group, value) from each row.
fn bar_rows(rows: &Array, spec: &RowSpec) -> Result<Vec<(String, String, f64)>, String> {
    let what = "plot_bars";
    let mut out = vec![];
    for (i, (m, g)) in rows_of(what, rows, spec)?.into_iter().enumerate() {
        let x = label(column(what, &m, i, &spec.x)?);
        let y = number(what, column(what, &m, i, &spec.y)?, i, &spec.y)?;
        out.push((x, g, y));
    }
    Ok(out)
}

/// The folders `compare` reads: results handles, or paths inside the out folder.
fn compare_dirs(st: &State, runs: &Array) -> Result<Vec<std::path::PathBuf>, String> {
    runs.iter()
        .enumerate()
        .map(|(i, d)| {
            if let Some(r) = d.read_lock::<TrainResult>() {
                return Ok(r.0.dir.clone());
            }
            if let Some(r) = d.read_lock::<SweepResult>() {
                return Ok(r.0.dir.clone());
            }
            let rel = d.clone().into_string().map_err(|t| format!("compare: item {i} is {t}; give TrainResults, SweepResults or folder names"))?;
            let p = std::path::Path::new(&rel);
            if rel.is_empty() || !p.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
                return Err(format!("compare: \"{rel}\" must be a folder inside the out folder {} (no `..`, no leading `/`)", st.ctx.out_dir.display()));
            }
            Ok(st.ctx.out_dir.join(p))
        })
        .collect()
}

fn opt_num(v: Option<f64>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from)
}

/// `compare`'s answer: the differing keys and one row per run (training) or per run, model
/// and T (sweeps), ready for `plot_lines` / `plot_bars`.
fn comparison_map(c: &Comparison) -> Map {
    let mut rows = Array::new();
    for (i, r) in c.runs.iter().enumerate() {
        let mut base = Map::new();
        base.insert("run".into(), Dynamic::from(i as i64));
        base.insert("dir".into(), Dynamic::from(r.dir.display().to_string()));
        base.insert("label".into(), Dynamic::from(r.label(&c.differing)));
        for k in &c.differing {
            let v = r.config.get(k).cloned().unwrap_or_default();
            // Numbers stay numbers, so a differing key can be an x axis.
            let d = v.parse::<i64>().map(Dynamic::from).or_else(|_| v.parse::<f64>().map(Dynamic::from)).unwrap_or_else(|_| Dynamic::from(v));
            base.insert(k.as_str().into(), d);
        }
        match &r.data {
            RunData::Train { summary, .. } => {
                let o = TrainOutcomeRow::of(summary);
                let mut m = base;
                m.insert("members".into(), Dynamic::from(o.members as i64));
                m.insert("learned".into(), Dynamic::from(o.learned as i64));
                m.insert("median_step".into(), opt_num(o.median_step));
                m.insert("test_accuracy".into(), Dynamic::from(o.test_accuracy));
                m.insert("mass_on_s".into(), opt_num(o.mass_on_s));
                m.insert("seconds".into(), Dynamic::from(o.seconds));
                rows.push(Dynamic::from_map(m));
            }
            RunData::Sweep { summary } => {
                for model in &summary.models {
                    for p in &model.points {
                        let mut m = base.clone();
                        m.insert("model".into(), Dynamic::from(model.model.clone()));
                        m.insert("T".into(), Dynamic::from(p.t as i64));
                        m.insert("m_star".into(), opt_num(p.m_star.map(|x| x as f64)));
                        rows.push(Dynamic::from_map(m));
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    out.insert("keys".into(), Dynamic::from_array(c.differing.iter().map(|k| Dynamic::from(k.clone())).collect()));
    out.insert("rows".into(), Dynamic::from_array(rows));
    out
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
    let st = a.st.clone();
    a.func(
        "plot_lines",
        "plot_lines(rows: array, options: map, path: string) -> map",
        "A line chart over an array of maps: options `x` and `y` name the columns (numbers), `group` the column that splits rows into lines (one colour each); also `title`, `subtitle`, `x_label`, `y_label`, `log_x`, `log_y`. Series: one per group, points sorted by x.",
        move |ctx: NativeCallContext, rows: Array, opts: Map, path: &str| -> Res<Map> {
            let spec = row_spec("plot_lines", &opts).map_err(|e| fail(&ctx, e))?;
            let groups = line_groups(&rows, &spec).map_err(|e| fail(&ctx, e))?;
            draw(&ctx, &st, path, |p| sparsevar_plot::lines(&groups, &spec.chart, p))
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_bars",
        "plot_bars(rows: array, options: map, path: string) -> map",
        "A bar chart over an array of maps: option `x` names the category column (any value), `y` the values (numbers), `group` the column whose values become bars side by side in each category; also `title`, `subtitle`, `x_label`, `y_label`, `log_y`. Series: one per group, points (category index, value).",
        move |ctx: NativeCallContext, rows: Array, opts: Map, path: &str| -> Res<Map> {
            let spec = row_spec("plot_bars", &opts).map_err(|e| fail(&ctx, e))?;
            let bars = bar_rows(&rows, &spec).map_err(|e| fail(&ctx, e))?;
            draw(&ctx, &st, path, |p| sparsevar_plot::bars(&bars, &spec.chart, p))
        },
    );
    let st = a.st.clone();
    a.func(
        "compare",
        "compare(runs: array) -> map",
        "Read finished runs (TrainResults, SweepResults or folder names inside the out folder; all training runs or all sweeps) like `sparsevar compare`: `keys` are the config keys whose values differ, `rows` one map per run (`run`, `dir`, `label`, each differing key, `members`, `learned`, `median_step`, `test_accuracy`, `mass_on_s`, `seconds`) or, for sweeps, per run, model and T (`model`, `T`, `m_star`).",
        move |ctx: NativeCallContext, runs: Array| -> Res<Map> {
            let dirs = compare_dirs(&st, &runs).map_err(|e| fail(&ctx, e))?;
            let c = load_comparison(&dirs).map_err(|e| fail(&ctx, e))?;
            Ok(comparison_map(&c))
        },
    );
}
