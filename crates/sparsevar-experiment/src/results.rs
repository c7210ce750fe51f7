//! Results folders: what a run did and what it found.
//!
//! `config.yaml` (the resolved config), `metrics.csv` (one row per evaluation per member,
//! appended and flushed as training goes, so an interrupted run keeps its curves) and
//! `summary.json` (per-member outcome and provenance). A folder that already holds results
//! is never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::train::{CurvePoint, EnsembleResult};

/// Where this run came from: enough to reproduce it.
#[derive(Clone, Debug, Serialize)]
pub struct Provenance {
    pub program: String,
    pub version: String,
    /// The git commit the program was built from, when known.
    pub git_revision: Option<String>,
    pub backend: String,
    pub threads: usize,
    pub seeds: Vec<u64>,
    pub command: Vec<String>,
    pub started_unix: u64,
}

/// A results folder being written.
#[derive(Debug)]
pub struct ResultsDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{0} already holds results; choose another --out or remove it first")]
    Exists(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io { path: path.display().to_string(), source }
}

/// A fresh folder name under `parent`: `stem`, or `stem-2`, `stem-3`, … if taken.
pub fn fresh_dir(parent: &Path, stem: &str) -> PathBuf {
    let first = parent.join(stem);
    if !first.exists() {
        return first;
    }
    (2..).map(|i| parent.join(format!("{stem}-{i}"))).find(|p| !p.exists()).expect("some name is free")
}

impl ResultsDir {
    /// Create `path` (refusing one that exists and is not empty) and write the config.
    pub fn create(path: &Path, config_yaml: &str) -> Result<Self, ResultsError> {
        if path.exists() && fs::read_dir(path).map_err(io(path))?.next().is_some() {
            return Err(ResultsError::Exists(path.display().to_string()));
        }
        fs::create_dir_all(path).map_err(io(path))?;
        let cfg = path.join("config.yaml");
        fs::write(&cfg, config_yaml).map_err(io(&cfg))?;
        let m = path.join("metrics.csv");
        let mut metrics = BufWriter::new(OpenOptions::new().create(true).append(true).open(&m).map_err(io(&m))?);
        writeln!(metrics, "member,seed,step,train_loss,test_loss,test_accuracy,best_mass_on_s").map_err(io(&m))?;
        metrics.flush().map_err(io(&m))?;
        Ok(Self { path: path.to_path_buf(), metrics })
    }

    /// Append curve points and flush them to disk.
    pub fn append_metrics(&mut self, points: &[CurvePoint]) -> Result<(), ResultsError> {
        let m = self.path.join("metrics.csv");
        for p in points {
            let mass = p.best_mass_on_s.map(|x| format!("{x:.6}")).unwrap_or_default();
            writeln!(self.metrics, "{},{},{},{:.6},{:.6},{:.6},{}", p.member, p.seed, p.step, p.train_loss, p.test_loss, p.test_accuracy, mass)
                .map_err(io(&m))?;
        }
        self.metrics.flush().map_err(io(&m))
    }

    /// Write `summary.json`.
    pub fn write_summary(&self, result: &EnsembleResult, provenance: &Provenance) -> Result<PathBuf, ResultsError> {
        let members: Vec<_> = result
            .members
            .iter()
            .map(|m| {
                let (mass, by_layer, top, best, weights) = match &m.attention {
                    Some(a) => (
                        json!(a.mass_on_s.last().cloned().unwrap_or_default()),
                        json!(a.mass_on_s),
                        json!(a.top_s_equals_s),
                        json!([a.best_head.0, a.best_head.1]),
                        json!(a.weights),
                    ),
                    None => (json!(null), json!(null), json!(null), json!(null), json!(null)),
                };
                json!({
                    "seed": m.seed,
                    "learned": m.learned,
                    "diverged": m.diverged,
                    "step": m.step,
                    "steps_trained": m.steps_trained,
                    "test_accuracy": m.test_accuracy,
                    "test_loss": finite_or_null(m.test_loss),
                    "train_loss": finite_or_null(m.train_loss),
                    "S": m.relevant,
                    "attention_mass_on_S": mass,
                    "attention_mass_on_S_by_layer": by_layer,
                    "best_head": best,
                    "top_s_equals_S": top,
                    // [layer][head][position]: mean CLS attention over the test set
                    // (position 0 is CLS, input bit i is position i + 1).
                    "attention_weights": weights,
                })
            })
            .collect();
        let learned = result.members.iter().filter(|m| m.learned).count();
        let doc = json!({
            "members": members,
            "learned": learned,
            "steps": result.steps,
            "seconds": result.seconds,
            "provenance": provenance,
        });
        let p = self.path.join("summary.json");
        fs::write(&p, serde_json::to_string_pretty(&doc).expect("json") + "\n").map_err(io(&p))?;
        Ok(p)
    }
}

fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() { json!(x) } else { serde_json::Value::Null }
}
