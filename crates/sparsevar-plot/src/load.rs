//! Read results folders back into the experiment types, so figures can be drawn from a
//! finished run without re-running it.
//!
//! The experiment types are `Serialize` only, so this module mirrors the JSON they write
//! (private `Deserialize` types, converted field by field). A field the writer sets to null
//! (a non-finite float) comes back as NaN. `summary.json` of a training run stores each
//! member's mean CLS attention weights (`attention_weights`), so heat maps can be drawn from a
//! finished run; folders from before that field load with empty weights.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sparsevar_experiment::fits::{Fit, ScalingFit};
use sparsevar_experiment::sweep::{BaselinePoint, Cell, FaultedRun, ModelSummary, PointSummary, SweepSummary};
use sparsevar_experiment::train::{AttentionSummary, CurvePoint, MemberResult};

use crate::PlotError;

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Deserialize)]
struct FitJ {
    law: String,
    #[serde(deserialize_with = "nan_if_null")]
    a: f64,
    #[serde(deserialize_with = "nan_if_null")]
    b: f64,
    #[serde(deserialize_with = "nan_if_null")]
    r2: f64,
}

#[derive(Deserialize)]
struct ScalingFitJ {
    log: FitJ,
    power: FitJ,
    #[serde(deserialize_with = "nan_if_null")]
    ratio: f64,
    verdict: String,
}

#[derive(Deserialize)]
struct CellJ {
    m: usize,
    learned: usize,
    seeds: usize,
    #[serde(deserialize_with = "nan_if_null")]
    rate: f64,
    #[serde(deserialize_with = "nan_if_null")]
    wilson_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    wilson_high: f64,
    success: bool,
    median_step: Option<f64>,
}

#[derive(Deserialize)]
struct PointJ {
    t: usize,
    cells: Vec<CellJ>,
    m_star: Option<usize>,
    m_below: Option<usize>,
    #[serde(default)]
    median_steps_to_learn: Option<f64>,
    #[serde(default)]
    median_variable_step: Option<f64>,
}

#[derive(Deserialize)]
struct ModelJ {
    model: String,
    points: Vec<PointJ>,
    fit: Option<ScalingFitJ>,
}

#[derive(Deserialize)]
struct BaselineJ {
    t: usize,
    #[serde(deserialize_with = "nan_if_null")]
    info_floor: f64,
    gf2_m_star: Option<usize>,
    subset_search_m_star: Option<usize>,
    #[serde(default)]
    subset_search_skipped: bool,
}

#[derive(Deserialize)]
struct SweepJ {
    s: usize,
    task: String,
    success_rule: String,
    max_steps: usize,
    models: Vec<ModelJ>,
    #[serde(default)]
    baselines: Vec<BaselineJ>,
    #[serde(default)]
    faulted: Vec<FaultedJ>,
    #[serde(default)]
    seconds: f64,
}

#[derive(Deserialize)]
struct FaultedJ {
    model: String,
    #[serde(rename = "T")]
    t: usize,
    m: usize,
    seed: u64,
    fault: String,
}

/// summary.json of a sweep: `{"summary": …, "provenance": …}`, or the bare summary.
#[derive(Deserialize)]
#[serde(untagged)]
enum SweepFile {
    Wrapped { summary: SweepJ },
    Bare(SweepJ),
}

fn fit(f: FitJ) -> Fit {
    Fit { law: f.law, a: f.a, b: f.b, r2: f.r2 }
}

impl From<SweepJ> for SweepSummary {
    fn from(s: SweepJ) -> Self {
        SweepSummary {
            s: s.s,
            task: s.task,
            success_rule: s.success_rule,
            max_steps: s.max_steps,
            faulted: s.faulted.into_iter().map(|f| FaultedRun { model: f.model, t: f.t, m: f.m, seed: f.seed, fault: f.fault }).collect(),
            models: s
                .models
                .into_iter()
                .map(|m| ModelSummary {
                    model: m.model,
                    points: m
                        .points
                        .into_iter()
                        .map(|p| PointSummary {
                            t: p.t,
                            cells: p
                                .cells
                                .into_iter()
                                .map(|c| Cell {
                                    m: c.m,
                                    learned: c.learned,
                                    seeds: c.seeds,
                                    rate: c.rate,
                                    wilson_low: c.wilson_low,
                                    wilson_high: c.wilson_high,
                                    success: c.success,
                                    median_step: c.median_step,
                                })
                                .collect(),
                            m_star: p.m_star,
                            m_below: p.m_below,
                            median_steps_to_learn: p.median_steps_to_learn,
                            median_variable_step: p.median_variable_step,
                        })
                        .collect(),
                    fit: m.fit.map(|f| ScalingFit { log: fit(f.log), power: fit(f.power), ratio: f.ratio, verdict: f.verdict }),
                })
                .collect(),
            baselines: s
                .baselines
                .into_iter()
                .map(|b| BaselinePoint {
                    t: b.t,
                    info_floor: b.info_floor,
                    gf2_m_star: b.gf2_m_star,
                    subset_search_m_star: b.subset_search_m_star,
                    subset_search_skipped: b.subset_search_skipped,
                })
                .collect(),
            seconds: s.seconds,
        }
    }
}

/// `path`, or `path/summary.json` when `path` is a folder.
fn summary_file(path: &Path) -> PathBuf {
    if path.is_dir() { path.join("summary.json") } else { path.to_path_buf() }
}

fn read(path: &Path) -> Result<String, PlotError> {
    std::fs::read_to_string(path).map_err(|source| PlotError::Io { path: path.to_path_buf(), source })
}

fn load_err(path: &Path, message: impl Into<String>) -> PlotError {
    PlotError::Load { path: path.to_path_buf(), message: message.into() }
}

/// A sweep's summary from its results folder (or its summary.json).
pub fn sweep_summary(path: impl AsRef<Path>) -> Result<SweepSummary, PlotError> {
    let p = summary_file(path.as_ref());
    let text = read(&p)?;
    let file: SweepFile = serde_json::from_str(&text).map_err(|e| load_err(&p, format!("not a sweep summary: {e}")))?;
    Ok(match file {
        SweepFile::Wrapped { summary } | SweepFile::Bare(summary) => summary.into(),
    })
}

#[derive(Deserialize)]
struct MemberJ {
    seed: u64,
    #[serde(rename = "S")]
    relevant: Vec<usize>,
    learned: bool,
    #[serde(default)]
    diverged: bool,
    step: Option<usize>,
    steps_trained: usize,
    #[serde(deserialize_with = "nan_if_null")]
    test_accuracy: f64,
    #[serde(deserialize_with = "nan_if_null")]
    test_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    train_loss: f64,
    #[serde(default, rename = "attention_mass_on_S_by_layer")]
    by_layer: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    best_head: Option<(usize, usize)>,
    #[serde(default, rename = "top_s_equals_S")]
    top_s_equals_s: Option<bool>,
    /// [layer][head][position]; absent in folders written before it was recorded.
    #[serde(default)]
    attention_weights: Option<Vec<Vec<Vec<f64>>>>,
}

#[derive(Deserialize)]
struct TrainJ {
    members: Vec<MemberJ>,
}

/// Members of a training run from its summary.json (`path` a folder or the file). Their
/// attention summaries hold mass on S, best head, top-s and the weights (empty for folders
/// written before summary.json recorded them).
pub fn members(path: impl AsRef<Path>) -> Result<Vec<MemberResult>, PlotError> {
    let p = summary_file(path.as_ref());
    let text = read(&p)?;
    let t: TrainJ = serde_json::from_str(&text).map_err(|e| load_err(&p, format!("not a training summary: {e}")))?;
    Ok(t.members
        .into_iter()
        .map(|m| {
            let attention = match (m.by_layer, m.best_head) {
                (Some(mass_on_s), Some(best_head)) => Some(AttentionSummary {
                    weights: m.attention_weights.clone().unwrap_or_default(),
                    mass_on_s,
                    best_head,
                    top_s_equals_s: m.top_s_equals_s.unwrap_or(false),
                }),
                _ => None,
            };
            MemberResult {
                seed: m.seed,
                relevant: m.relevant,
                learned: m.learned,
                diverged: m.diverged,
                step: m.step,
                steps_trained: m.steps_trained,
                test_accuracy: m.test_accuracy,
                test_loss: m.test_loss,
                train_loss: m.train_loss,
                attention,
            }
        })
        .collect())
}

/// Curve points from a metrics.csv (`path` a run folder or the file). The header must be
/// the one `ResultsDir` writes; an empty mass field means no attention (MLPs).
pub fn curves(path: impl AsRef<Path>) -> Result<Vec<CurvePoint>, PlotError> {
    let path = path.as_ref();
    let p = if path.is_dir() { path.join("metrics.csv") } else { path.to_path_buf() };
    let text = read(&p)?;
    let mut lines = text.lines();
    const HEADER: &str = "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s";
    match lines.next() {
        Some(h) if h.trim() == HEADER => {}
        other => return Err(load_err(&p, format!("expected the header `{HEADER}`, found `{}`", other.unwrap_or("")))),
    }
    let mut out = vec![];
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = i + 2;
        let f: Vec<&str> = line.split(',').collect();
        // A run cut off mid-write can leave a partial last line: stop there, keep the rest.
        if f.len() != 7 {
            break;
        }
        let num =
            |k: usize| -> Result<f64, PlotError> { f[k].trim().parse::<f64>().map_err(|_| load_err(&p, format!("line {row}: `{}` is not a number", f[k]))) };
        let int = |k: usize| -> Result<u64, PlotError> {
            f[k].trim().parse::<u64>().map_err(|_| load_err(&p, format!("line {row}: `{}` is not a whole number", f[k])))
        };
        out.push(CurvePoint {
            member: int(0)? as usize,
            seed: int(1)?,
            step: int(2)? as usize,
            train_loss: num(3)?,
            test_loss: num(4)?,
            test_accuracy: num(5)?,
            best_mass_on_s: if f[6].trim().is_empty() { None } else { Some(num(6)?) },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sparsevar-plot-load-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sweep_summary_round_trips_through_json() {
        let cell = |m: usize, learned: usize| Cell {
            m,
            learned,
            seeds: 3,
            rate: learned as f64 / 3.0,
            wilson_low: 0.1,
            wilson_high: 0.9,
            success: learned >= 2,
            median_step: (learned > 0).then_some(300.0),
        };
        let point = |t: usize| PointSummary {
            t,
            cells: vec![cell(16, 0), cell(32, 2)],
            m_star: Some(32),
            m_below: Some(16),
            median_steps_to_learn: None,
            median_variable_step: None,
        };
        let f = |law: &str| Fit { law: law.into(), a: 1.5, b: 2.0, r2: 0.9 };
        let s = SweepSummary {
            s: 2,
            task: "sparse_parity".into(),
            success_rule: "rule".into(),
            max_steps: 1000,
            models: vec![ModelSummary {
                model: "attn".into(),
                points: vec![point(8), point(16)],
                fit: Some(ScalingFit { log: f("log"), power: f("power"), ratio: 1.0, verdict: "v".into() }),
            }],
            baselines: vec![BaselinePoint { t: 8, info_floor: 4.8, gf2_m_star: Some(16), subset_search_m_star: None, subset_search_skipped: true }],
            faulted: vec![FaultedRun { model: "a".into(), t: 8, m: 64, seed: 3, fault: "plugin libx.so: Task::sample of task `t` panicked: boom".into() }],
            seconds: 1.0,
        };
        let doc = serde_json::json!({ "summary": s, "provenance": { "program": "test" } });
        let d = tmp("sweep");
        std::fs::write(d.join("summary.json"), serde_json::to_string(&doc).unwrap()).unwrap();
        let back = sweep_summary(&d).unwrap();
        assert_eq!(back.models, s.models);
        assert_eq!(back.baselines, s.baselines);
        assert_eq!(back.faulted, s.faulted);
        assert_eq!((back.s, &back.task, &back.success_rule, back.max_steps), (s.s, &s.task, &s.success_rule, s.max_steps));
        // The bare form loads too.
        std::fs::write(d.join("bare.json"), serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(sweep_summary(d.join("bare.json")).unwrap().models, s.models);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn training_members_and_curves_load() {
        let d = tmp("train");
        std::fs::write(
            d.join("summary.json"),
            r#"{"members":[{"S":[4,5,14],"attention_mass_on_S":[0.8,0.1],"attention_mass_on_S_by_layer":[[0.8,0.1]],"best_head":[0,0],
                "diverged":false,"learned":true,"seed":7,"step":700,"steps_trained":700,"test_accuracy":1.0,"test_loss":null,
                "top_s_equals_S":true,"train_loss":0.001}],"learned":1,"steps":700,"seconds":1.0}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("metrics.csv"),
            "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s\n0,7,100,0.69,0.70,0.5,0.2\n0,7,200,0.1,0.2,0.9,\n0,7,3",
        )
        .unwrap();
        let m = members(&d).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].seed, &m[0].relevant, m[0].step), (7, &vec![4, 5, 14], Some(700)));
        assert!(m[0].test_loss.is_nan());
        let a = m[0].attention.as_ref().unwrap();
        assert_eq!((a.best_head, &a.mass_on_s, a.top_s_equals_s, a.weights.len()), ((0, 0), &vec![vec![0.8, 0.1]], true, 0));
        let c = curves(&d).unwrap();
        assert_eq!(c.len(), 2, "the cut last line is dropped");
        assert_eq!((c[0].step, c[0].best_mass_on_s, c[1].best_mass_on_s), (100, Some(0.2), None));
        std::fs::write(d.join("metrics.csv"), "step,loss\n1,2\n").unwrap();
        let e = curves(&d).unwrap_err().to_string();
        assert!(e.contains("metrics.csv") && e.contains("header"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
