//! Comparing finished runs: read several results folders through the results schema and line
//! them up — the config keys whose values differ, and each run's outcome.
//!
//! A training folder (`metrics.csv`, `summary.json`, `config.yaml`) compares with training
//! folders, a sweep folder (`runs.csv`, `summary.json`, `config.yaml`) with sweep folders.
//! Configs are compared flattened (`model.heads`, `train.lr`), as their YAML reads back, so a
//! key the runs share is left out of the table and the legend.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::results::{ResultsError, TrainSummary, load_metrics, load_train_summary};
use crate::sweep::{SweepSummary, load_sweep_summary};
use crate::train::CurvePoint;

/// What kind of results folder a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    Train,
    Sweep,
}

impl RunKind {
    fn name(self) -> &'static str {
        match self {
            RunKind::Train => "a training folder (metrics.csv)",
            RunKind::Sweep => "a sweep folder (runs.csv)",
        }
    }
}

/// Why runs could not be compared. All of these are the user's input.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("compare needs at least two results folders (got {0})")]
    TooFew(usize),
    #[error("{}: not a results folder (no metrics.csv or runs.csv); give folders written by `sparsevar train` or `sparsevar sweep`", .0.display())]
    NotResults(PathBuf),
    #[error("{} is {} but {} is {}; compare training runs with training runs and sweeps with sweeps", .first.display(), .first_kind.name(), .other.display(), .other_kind.name())]
    MixedKinds { first: PathBuf, first_kind: RunKind, other: PathBuf, other_kind: RunKind },
    #[error("{}: config.yaml is not YAML: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Results(#[from] ResultsError),
}

/// The kind of results folder `dir` is, if any.
pub fn run_kind(dir: &Path) -> Option<RunKind> {
    if !dir.is_dir() {
        None
    } else if dir.join("runs.csv").is_file() {
        Some(RunKind::Sweep)
    } else if dir.join("metrics.csv").is_file() {
        Some(RunKind::Train)
    } else {
        None
    }
}

/// One training run's outcome, summarised over its members.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcomeRow {
    pub members: usize,
    pub learned: usize,
    /// Median step at which the learned members learned (None if none did).
    pub median_step: Option<f64>,
    /// Mean final test accuracy over the members.
    pub test_accuracy: f64,
    /// Mean over members of the best head's attention mass on S (None for models without
    /// attention).
    pub mass_on_s: Option<f64>,
    pub seconds: f64,
}

impl TrainOutcomeRow {
    pub fn of(s: &TrainSummary) -> Self {
        let mut steps: Vec<f64> = s.members.iter().filter(|m| m.learned).filter_map(|m| m.step.map(|x| x as f64)).collect();
        let n = s.members.len().max(1) as f64;
        let masses: Vec<f64> = s
            .members
            .iter()
            .filter_map(|m| {
                let (l, h) = m.best_head?;
                m.attention_mass_on_s_by_layer.as_ref()?.get(l)?.get(h).copied()
            })
            .collect();
        TrainOutcomeRow {
            members: s.members.len(),
            learned: s.members.iter().filter(|m| m.learned).count(),
            median_step: median(&mut steps),
            test_accuracy: s.members.iter().map(|m| m.test_accuracy).sum::<f64>() / n,
            mass_on_s: (!masses.is_empty()).then(|| masses.iter().sum::<f64>() / masses.len() as f64),
            seconds: s.seconds,
        }
    }
}

/// The median of `v` (sorted in place); None when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// What one compared folder holds.
#[derive(Clone, Debug)]
pub enum RunData {
    Train { summary: TrainSummary, curves: Vec<CurvePoint> },
    Sweep { summary: SweepSummary },
}

/// One compared folder: its path, flattened config, and results.
#[derive(Clone, Debug)]
pub struct ComparedRun {
    pub dir: PathBuf,
    /// Every config key, flattened (`model.heads` → `2`).
    pub config: BTreeMap<String, String>,
    pub data: RunData,
}

impl ComparedRun {
    /// `key=value` for each of `keys` (the keys that differ): the run's label in a legend.
    pub fn label(&self, keys: &[String]) -> String {
        if keys.is_empty() {
            return self.dir.display().to_string();
        }
        keys.iter().map(|k| format!("{k}={}", self.config.get(k).map_or("—", String::as_str))).collect::<Vec<_>>().join(", ")
    }
}

/// Several runs of one kind, and the config keys whose values differ between them.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub kind: RunKind,
    pub runs: Vec<ComparedRun>,
    pub differing: Vec<String>,
}

/// Read `dirs` (at least two results folders of one kind) for comparison.
pub fn load_comparison(dirs: &[PathBuf]) -> Result<Comparison, CompareError> {
    if dirs.len() < 2 {
        return Err(CompareError::TooFew(dirs.len()));
    }
    // Kinds first, so a mixed list is refused before any file is parsed.
    let mut kinds = vec![];
    for d in dirs {
        kinds.push(run_kind(d).ok_or_else(|| CompareError::NotResults(d.clone()))?);
    }
    if let Some(i) = kinds.iter().position(|k| *k != kinds[0]) {
        return Err(CompareError::MixedKinds { first: dirs[0].clone(), first_kind: kinds[0], other: dirs[i].clone(), other_kind: kinds[i] });
    }
    let mut runs = vec![];
    for d in dirs {
        let data = match kinds[0] {
            RunKind::Train => RunData::Train { summary: load_train_summary(d)?, curves: load_metrics(d)? },
            RunKind::Sweep => RunData::Sweep { summary: load_sweep_summary(d)? },
        };
        runs.push(ComparedRun { dir: d.clone(), config: flat_config(&d.join("config.yaml"))?, data });
    }
    let differing = differing_keys(&runs.iter().map(|r| &r.config).collect::<Vec<_>>());
    Ok(Comparison { kind: kinds[0], runs, differing })
}

/// The resolved config of a results folder, flattened; empty when the folder has none.
fn flat_config(path: &Path) -> Result<BTreeMap<String, String>, CompareError> {
    let mut out = BTreeMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let text = std::fs::read_to_string(path).map_err(crate::results::io(path))?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| CompareError::Config { path: path.to_path_buf(), message: e.to_string() })?;
    flatten("", &v, &mut out);
    Ok(out)
}

/// Nested maps become dotted keys; anything else (numbers, strings, lists) one value.
fn flatten(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = scalar(k);
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

/// A value on one line: scalars as YAML writes them, lists as `[a, b]`.
fn scalar(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(s) => format!("[{}]", s.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Mapping(m) => {
            format!("{{{}}}", m.iter().map(|(k, v)| format!("{}: {}", scalar(k), scalar(v))).collect::<Vec<_>>().join(", "))
        }
        Value::Tagged(t) => scalar(&t.value),
    }
}

/// Keys whose value is not the same in every config (a key missing from one counts).
pub fn differing_keys(configs: &[&BTreeMap<String, String>]) -> Vec<String> {
    let all: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    all.into_iter().filter(|k| configs.iter().any(|c| c.get(*k) != configs[0].get(*k))).cloned().collect()
}

/// The comparison as a table: a header and one row per run (per run and model for sweeps),
/// every cell already formatted. Train: the differing keys, then members learned, median
/// learning step, mean final test accuracy, mean best-head mass on S, wall time (`6.5 s`). Sweep:
/// the differing keys, the model, then m* at each T any sweep measured.
pub fn table(c: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header: Vec<String> = vec!["run".into()];
    header.extend(c.differing.iter().cloned());
    let mut rows = vec![];
    match c.kind {
        RunKind::Train => {
            header.extend(["learned", "median learning step", "test accuracy", "mass on S (best head)", "wall time"].map(String::from));
            for (i, r) in c.runs.iter().enumerate() {
                let RunData::Train { summary, .. } = &r.data else { continue };
                let o = TrainOutcomeRow::of(summary);
                let mut row = vec![(i + 1).to_string()];
                row.extend(c.differing.iter().map(|k| r.config.get(k).cloned().unwrap_or_else(|| "—".into())));
                row.push(format!("{}/{}", o.learned, o.members));
                row.push(o.median_step.map_or("—".into(), |s| format!("{s:.0}")));
                row.push(format!("{:.4}", o.test_accuracy));
                row.push(o.mass_on_s.map_or("—".into(), |m| format!("{m:.3}")));
                row.push(format!("{:.1} s", o.seconds));
                rows.push(row);
            }
        }
        RunKind::Sweep => {
            let ts: BTreeSet<usize> = c
                .runs
                .iter()
                .filter_map(|r| match &r.data {
                    RunData::Sweep { summary } => Some(summary.models.iter().flat_map(|m| m.points.iter().map(|p| p.t)).collect::<Vec<_>>()),
                    _ => None,
                })
                .flatten()
                .collect();
            header.push("model".into());
            header.extend(ts.iter().map(|t| format!("m* T={t}")));
            header.push("wall time".into());
            for (i, r) in c.runs.iter().enumerate() {
                let RunData::Sweep { summary } = &r.data else { continue };
                for m in &summary.models {
                    let mut row = vec![(i + 1).to_string()];
                    row.extend(c.differing.iter().map(|k| r.config.get(k).cloned().unwrap_or_else(|| "—".into())));
                    row.push(m.model.clone());
                    for t in &ts {
                        let p = m.points.iter().find(|p| p.t == *t);
                        row.push(match p {
                            None => "—".into(),
                            Some(p) => p.m_star.map_or_else(|| format!("> {}", p.cells.iter().map(|c| c.m).max().unwrap_or(0)), |m| m.to_string()),
                        });
                    }
                    row.push(format!("{:.1} s", summary.seconds));
                    rows.push(row);
                }
            }
        }
    }
    (header, rows)
}

/// The table as Markdown (a pipe table).
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
    let mut s = line(header);
    s += &format!("|{}\n", header.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        s += &line(r);
    }
    s
}

/// The table as CSV.
pub fn csv_text(header: &[String], rows: &[Vec<String>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail.
    w.write_record(header).ok();
    for r in rows {
        w.write_record(r).ok();
    }
    String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).into_owned()
}

/// The table as aligned plain text (for a terminal).
pub fn plain(header: &[String], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let width: Vec<usize> = (0..n)
        .map(|i| std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())).map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
        s.join("  ").trim_end().to_string() + "\n"
    };
    let mut s = line(header);
    for r in rows {
        s += &line(r);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_differing_keys() {
        let parse = |y: &str| {
            let mut m = BTreeMap::new();
            flatten("", &serde_yaml::from_str(y).unwrap(), &mut m);
            m
        };
        let a = parse("model: {heads: 1, layers: 1}\nseeds: [0, 1]\ntrain: {lr: 0.001}\n");
        let b = parse("model: {heads: 2, layers: 1}\nseeds: [0, 1]\ntrain: {lr: 0.001}\nextra: x\n");
        assert_eq!(a["model.heads"], "1");
        assert_eq!(a["seeds"], "[0, 1]");
        assert_eq!(differing_keys(&[&a, &b]), vec!["extra".to_string(), "model.heads".to_string()]);
        assert_eq!(differing_keys(&[&a, &a]), Vec::<String>::new());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn markdown_and_plain_tables() {
        let h = vec!["run".to_string(), "model.heads".to_string()];
        let rows = vec![vec!["1".to_string(), "1".to_string()], vec!["2".to_string(), "4".to_string()]];
        assert_eq!(markdown(&h, &rows), "| run | model.heads |\n|---|---|\n| 1 | 1 |\n| 2 | 4 |\n");
        assert_eq!(plain(&h, &rows), "run  model.heads\n1    1\n2    4\n");
        assert_eq!(csv_text(&h, &rows), "run,model.heads\n1,1\n2,4\n");
    }
}
