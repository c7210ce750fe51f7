//! Configs and output: `load_config`, `save_csv/markdown/json/yaml`, `out_dir`, `log`, `param`,
//! `quick`, `progress`.

use std::sync::Arc;

use indicatif::ProgressBar;
use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_core::backend::BackendError;
use sparsevar_core::registry::Registry;
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::sweep::SweepConfig;

use super::{Api, ExperimentHandle, Res, SweepPlan, count, fail, plain, to_dyn};
use crate::engine::State;

/// A progress bar on stderr (hidden when stderr is not a terminal).
#[derive(Clone, Debug)]
pub(crate) struct ProgressHandle(Arc<ProgressBar>);

fn write(ctx: &NativeCallContext, st: &State, name: &str, text: &str) -> Res<String> {
    let path = st.out_path(name).map_err(|e| fail(ctx, e))?;
    std::fs::write(&path, text).map_err(|e| fail(ctx, format!("{}: {e}", path.display())))?;
    st.record(&path);
    Ok(path.display().to_string())
}

/// One CSV field: empty for (), JSON for arrays and maps, quoted where needed.
fn csv_field(v: &Dynamic) -> String {
    let text = if v.is_unit() {
        String::new()
    } else if v.is_array() || v.is_map() {
        serde_json::to_string(&plain(v)).unwrap_or_default()
    } else if let Ok(s) = v.clone().into_string() {
        s
    } else {
        plain(v).to_string()
    };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// The rows as maps and the columns (given, or every key in first-seen order).
fn table(what: &str, rows: &Array, columns: Option<Vec<String>>) -> Result<(Vec<String>, Vec<Map>), String> {
    let maps: Vec<Map> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.read_lock::<Map>()
                .map(|m| m.clone())
                .ok_or_else(|| format!("{what}: row {i} is a {}, not a map; give an array of maps like [#{{T: 8, m: 64}}]", r.type_name()))
        })
        .collect::<Result<_, _>>()?;
    let columns = columns.unwrap_or_else(|| {
        let mut cols: Vec<String> = Vec::new();
        for m in &maps {
            for k in m.keys() {
                if !cols.iter().any(|c| c == k.as_str()) {
                    cols.push(k.to_string());
                }
            }
        }
        cols
    });
    Ok((columns, maps))
}

fn csv(rows: &Array, columns: Option<Vec<String>>) -> Result<String, String> {
    let (columns, maps) = table("save_csv", rows, columns)?;
    let mut out = columns.iter().map(|c| csv_field(&Dynamic::from(c.clone()))).collect::<Vec<_>>().join(",");
    out.push('\n');
    for m in &maps {
        let line: Vec<String> = columns.iter().map(|c| m.get(c.as_str()).map(csv_field).unwrap_or_default()).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// The rows as a Markdown table: () as an em dash, arrays and maps as JSON, `|` escaped.
fn markdown(rows: &Array, columns: Option<Vec<String>>) -> Result<String, String> {
    let (columns, maps) = table("save_markdown", rows, columns)?;
    let cell = |v: Option<&Dynamic>| -> String {
        let text = match v {
            None => String::new(),
            Some(v) if v.is_unit() => "—".into(),
            Some(v) if v.is_array() || v.is_map() => serde_json::to_string(&plain(v)).unwrap_or_default(),
            Some(v) => v.clone().into_string().unwrap_or_else(|_| plain(v).to_string()),
        };
        text.replace('|', "\\|").replace(['\n', '\r'], " ")
    };
    let mut out = format!("| {} |\n|{}\n", columns.join(" | "), "---|".repeat(columns.len()));
    for m in &maps {
        let line: Vec<String> = columns.iter().map(|c| cell(m.get(c.as_str()))).collect();
        out.push_str(&format!("| {} |\n", line.join(" | ")));
    }
    Ok(out)
}

/// `--set key=value` parsed like YAML and checked against the default's type.
fn param(key: &str, raw: &str, default: &Dynamic) -> Result<Dynamic, String> {
    if default.is_string() {
        return Ok(raw.into());
    }
    let v: serde_yaml::Value = serde_yaml::from_str(raw).map_err(|e| format!("--set {key}={raw}: not a value: {e}"))?;
    let d = to_dyn(&v);
    let bad = || format!("--set {key}={raw}: expected a {} like the default {default}", default.type_name());
    Ok(if default.is_unit() || default.type_id() == d.type_id() {
        d
    } else if default.is_float() && d.is_int() {
        Dynamic::from(d.as_int().map_err(|_| bad())? as f64)
    } else {
        return Err(bad());
    })
}

/// A registry that also accepts `backend: auto` in loaded files (the script's backend
/// replaces it anyway).
fn with_auto(r: &Registry) -> Registry {
    let mut r = r.clone();
    r.register_backend("auto", "built-in", Arc::new(|| Err(BackendError::Device { backend: "auto".into(), message: "auto is resolved by the host".into() })))
        .ok();
    r
}

fn load_config(st: &State, rel: &str) -> Result<Dynamic, String> {
    let path = st.script_file(rel)?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let origin = path.display().to_string();
    let name: Arc<str> = path.file_stem().and_then(|s| s.to_str()).unwrap_or("run").into();
    let registry = with_auto(&st.ctx.registry);
    let is_sweep = matches!(serde_yaml::from_str::<serde_yaml::Value>(&text), Ok(serde_yaml::Value::Mapping(m)) if m.contains_key("sweep"));
    Ok(if is_sweep {
        let cfg = SweepConfig::parse(&text, &origin, &[], &registry).map_err(|e| e.to_string())?;
        Dynamic::from(SweepPlan { cfg: Arc::new(cfg), name })
    } else {
        let cfg = ExperimentConfig::parse(&text, &origin, &[], &registry).map_err(|e| e.to_string())?;
        Dynamic::from(ExperimentHandle { cfg: Arc::new(cfg), name })
    })
}

pub(super) fn register(a: &mut Api) {
    a.group("Configs and output");
    a.ty::<ProgressHandle>("Progress", "a progress bar on stderr (hidden when stderr is not a terminal)");
    let st = a.st.clone();
    a.func(
        "load_config",
        "load_config(path: string) -> Experiment or SweepPlan",
        "Read a YAML config (path relative to the script's folder): a train config gives an Experiment for `train`, one with a `sweep:` section a SweepPlan for `sweep`.",
        move |ctx: NativeCallContext, rel: &str| load_config(&st, rel).map_err(|e| fail(&ctx, e)),
    );
    let st = a.st.clone();
    a.func(
        "load_yaml",
        "load_yaml(path: string) -> map",
        "Read any YAML file (relative to the script's folder) as plain data.",
        move |ctx: NativeCallContext, rel: &str| -> Res<Dynamic> {
            let path = st.script_file(rel).map_err(|e| fail(&ctx, e))?;
            let text = std::fs::read_to_string(&path).map_err(|e| fail(&ctx, format!("cannot read {}: {e}", path.display())))?;
            let v: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| fail(&ctx, format!("{}: {e}", path.display())))?;
            Ok(to_dyn(&v))
        },
    );
    let st = a.st.clone();
    a.func(
        "save_yaml",
        "save_yaml(value, path: string) -> string",
        "Write any value (handles as their plain form) as YAML into the out folder; returns the file's path.",
        move |ctx: NativeCallContext, v: Dynamic, name: &str| -> Res<String> {
            let text = serde_yaml::to_string(&plain(&v)).map_err(|e| fail(&ctx, format!("save_yaml: {e}")))?;
            write(&ctx, &st, name, &text)
        },
    );
    let st = a.st.clone();
    a.func(
        "save_json",
        "save_json(value, path: string) -> string",
        "Write any value as pretty JSON into the out folder; returns the file's path.",
        move |ctx: NativeCallContext, v: Dynamic, name: &str| -> Res<String> {
            let text = serde_json::to_string_pretty(&plain(&v)).map_err(|e| fail(&ctx, format!("save_json: {e}")))?;
            write(&ctx, &st, name, &(text + "\n"))
        },
    );
    let st = a.st.clone();
    a.func(
        "save_csv",
        "save_csv(rows: array, path: string) -> string",
        "Write an array of maps as CSV (columns: the keys, in first-seen order) into the out folder.",
        move |ctx: NativeCallContext, rows: Array, name: &str| -> Res<String> {
            let text = csv(&rows, None).map_err(|e| fail(&ctx, e))?;
            write(&ctx, &st, name, &text)
        },
    );
    let st = a.st.clone();
    a.func(
        "save_csv",
        "save_csv(rows: array, path: string, columns: array) -> string",
        "Write an array of maps as CSV with these columns, in this order.",
        move |ctx: NativeCallContext, rows: Array, name: &str, cols: Array| -> Res<String> {
            let cols: Vec<String> = cols
                .into_iter()
                .map(|c| c.into_string().map_err(|t| fail(&ctx, format!("save_csv: column names must be strings (got {t})"))))
                .collect::<Res<_>>()?;
            let text = csv(&rows, Some(cols)).map_err(|e| fail(&ctx, e))?;
            write(&ctx, &st, name, &text)
        },
    );
    let st = a.st.clone();
    a.func(
        "save_markdown",
        "save_markdown(rows: array, path: string, columns: array) -> string",
        "Write an array of maps as a Markdown table with these columns, in this order (() as —), into the out folder.",
        move |ctx: NativeCallContext, rows: Array, name: &str, cols: Array| -> Res<String> {
            let cols: Vec<String> = cols
                .into_iter()
                .map(|c| c.into_string().map_err(|t| fail(&ctx, format!("save_markdown: column names must be strings (got {t})"))))
                .collect::<Res<_>>()?;
            let text = markdown(&rows, Some(cols)).map_err(|e| fail(&ctx, e))?;
            write(&ctx, &st, name, &text)
        },
    );
    let st = a.st.clone();
    a.func("out_dir", "out_dir() -> string", "The script's out folder.", move || st.ctx.out_dir.display().to_string());
    let st = a.st.clone();
    a.func("log", "log(value)", "Print a line to stderr (kept in the run's output).", move |v: Dynamic| st.say(&v.to_string(), true));
    a.func(
        "fixed",
        "fixed(x: float, digits: int) -> string",
        "x with this many digits after the point, e.g. fixed(0.98765, 2) is \"0.99\".",
        |x: f64, digits: i64| format!("{x:.*}", digits.clamp(0, 17) as usize),
    );
    a.func("fixed", "fixed(x: int, digits: int) -> string", "An int written as a float with this many digits.", |x: i64, digits: i64| {
        format!("{:.*}", digits.clamp(0, 17) as usize, x as f64)
    });
    let st = a.st.clone();
    a.func("quick", "quick() -> bool", "Whether the script runs in quick mode (`--quick`): shrink the work to seconds.", move || st.ctx.quick);
    let st = a.st.clone();
    a.func("elapsed", "elapsed() -> float", "Seconds since the script started.", move || st.started.elapsed().as_secs_f64());
    let st = a.st.clone();
    a.func(
        "param",
        "param(key: string, default) -> value",
        "The value of `--set key=value`, parsed like YAML to the default's type, or the default when not set.",
        move |ctx: NativeCallContext, key: &str, default: Dynamic| -> Res<Dynamic> {
            st.used_param(key);
            match st.ctx.params.get(key) {
                Some(raw) => param(key, raw, &default).map_err(|e| fail(&ctx, e)),
                None => Ok(default),
            }
        },
    );
    let st = a.st.clone();
    a.func(
        "param",
        "param(key: string) -> value",
        "The value of `--set key=value` (required: an error names the key when it is missing).",
        move |ctx: NativeCallContext, key: &str| -> Res<Dynamic> {
            st.used_param(key);
            match st.ctx.params.get(key) {
                Some(raw) => param(key, raw, &Dynamic::UNIT).map_err(|e| fail(&ctx, e)),
                None => Err(fail(&ctx, format!("this script needs --set {key}=VALUE"))),
            }
        },
    );
    let st = a.st.clone();
    a.func(
        "progress",
        "progress(total: int) -> Progress",
        "A progress bar of `total` steps on stderr.",
        move |ctx: NativeCallContext, total: i64| -> Res<ProgressHandle> {
            let n = count("progress total", total).map_err(|e| fail(&ctx, e))?;
            Ok(ProgressHandle(Arc::new(st.progress_bar(n as u64, "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"))))
        },
    );
    a.func("inc", "Progress.inc()", "Advance the bar by one.", |p: &mut ProgressHandle| p.0.inc(1));
    a.func("inc", "Progress.inc(n: int)", "Advance the bar by n.", |p: &mut ProgressHandle, n: i64| p.0.inc(n.max(0) as u64));
    a.func("set_message", "Progress.set_message(text: string)", "Show text beside the bar.", |p: &mut ProgressHandle, m: &str| p.0.set_message(m.to_string()));
    a.func("finish", "Progress.finish()", "Finish and clear the bar.", |p: &mut ProgressHandle| p.0.finish_and_clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_orders_columns() {
        let mut a = Map::new();
        a.insert("T".into(), Dynamic::from(8_i64));
        a.insert("note".into(), Dynamic::from("a, \"b\"".to_string()));
        let mut b = Map::new();
        b.insert("T".into(), Dynamic::from(16_i64));
        b.insert("m".into(), Dynamic::UNIT);
        b.insert("S".into(), Dynamic::from_array(vec![Dynamic::from(1_i64), Dynamic::from(2_i64)]));
        let rows: Array = vec![Dynamic::from_map(a), Dynamic::from_map(b)];
        let text = csv(&rows, None).unwrap();
        assert_eq!(text, "T,note,S,m\n8,\"a, \"\"b\"\"\",,\n16,,\"[1,2]\",\n");
        let text = csv(&rows, Some(vec!["m".into(), "T".into()])).unwrap();
        assert_eq!(text, "m,T\n,8\n,16\n");
        let e = csv(&vec![Dynamic::from(1_i64)], None).unwrap_err();
        assert!(e.contains("row 0 is a i64, not a map"), "{e}");
    }

    #[test]
    fn params_parse_to_the_default_type() {
        assert_eq!(param("n", "5", &Dynamic::from(1_i64)).unwrap().as_int().unwrap(), 5);
        assert_eq!(param("x", "5", &Dynamic::from(1.5_f64)).unwrap().as_float().unwrap(), 5.0);
        assert_eq!(param("s", "5", &Dynamic::from("a".to_string())).unwrap().into_string().unwrap(), "5");
        assert!(param("q", "true", &Dynamic::from(false)).unwrap().as_bool().unwrap());
        let a = param("T", "[8, 16]", &Dynamic::from_array(vec![])).unwrap();
        assert_eq!(a.into_array().unwrap().len(), 2);
        let e = param("n", "abc", &Dynamic::from(1_i64)).unwrap_err();
        assert!(e.contains("--set n=abc: expected a i64 like the default 1"), "{e}");
    }
}
