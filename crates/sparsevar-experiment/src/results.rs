//! Results folders: what a run did and what it found, written and read through one schema.
//!
//! `config.yaml` (the resolved config), `metrics.csv` (one [`CurvePoint`] per evaluation per
//! member, appended and flushed as training goes, so an interrupted run keeps its curves) and
//! `summary.json` (a [`TrainSummary`]: per-member outcome and provenance). A folder that
//! already holds results is never overwritten.
//!
//! Every results file has one type here (or in `sweep`) that derives both `Serialize` and
//! `Deserialize`: the writer and every reader (the plot crate, scripts, `--resume`) go
//! through it. JSON writes a non-finite float as `null`, which reads back as NaN; CSV goes
//! through the `csv` crate, its header derived from the row type. A malformed row is an error
//! naming the file and line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use sparsevar_core::norms::CapacityNorms;

use crate::learners::Stopped;
use crate::train::{AttentionSummary, CurvePoint, EnsembleResult, MemberResult, Scores};

/// Where this run came from: enough to reproduce it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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

/// The build recorded for a program that did not know its own, or for results whose files
/// (older programs') do not say.
pub const UNRECORDED_BUILD: &str = "unrecorded";

impl Provenance {
    /// The build, as recorded beside results: the git revision, or [`UNRECORDED_BUILD`].
    pub fn build(&self) -> String {
        self.git_revision.clone().unwrap_or_else(|| UNRECORDED_BUILD.into())
    }

    /// The one constructor: `program` names the front end (`sparsevar`, `sparsevar script
    /// FILE`); the command line, version and start time are this process's.
    pub fn new(program: impl Into<String>, git_revision: Option<String>, backend: String, threads: usize, seeds: Vec<u64>) -> Self {
        let program = program.into();
        let mut command: Vec<String> = std::env::args().collect();
        if command.is_empty() {
            command.push(program.clone());
        }
        Provenance {
            program,
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision: git_revision.filter(|s| !s.is_empty()),
            backend,
            threads,
            seeds,
            command,
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        }
    }
}

/// Why a results folder could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{} already holds results; choose another --out or remove it first", .0.display())]
    Exists(PathBuf),
    #[error("{} is a file, not a folder; choose another --out", .0.display())]
    NotAFolder(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A row or document that does not match its schema (`line` is 1-based; 0 = unknown).
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(" line {line}") } else { String::new() })]
    Malformed { path: PathBuf, line: u64, message: String },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io { path: path.to_path_buf(), source }
}

/// A fresh folder name under `parent`: `stem`, or `stem-2`, `stem-3`, … if taken.
pub fn fresh_dir(parent: &Path, stem: &str) -> PathBuf {
    let first = parent.join(stem);
    if !first.exists() {
        return first;
    }
    (2..).map(|i| parent.join(format!("{stem}-{i}"))).find(|p| !p.exists()).expect("some name is free")
}

/// `path` as the system will resolve it: symbolic links and `..` resolved where it exists,
/// `.` and `..` resolved lexically in the part that does not exist yet (which holds no
/// links); relative to the current folder where it lies inside it, else absolute. So
/// `--out DONE/nothere/..` is recognised as `DONE` before the "never overwrite" check, not
/// after the folder `nothere` was made.
pub fn resolve_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok()).unwrap_or_default();
    let absolute = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
    let mut resolved = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => resolved.push(c.as_os_str()),
            Component::CurDir => {}
            // `resolved` holds no links (they were resolved below), so going up is lexical.
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                resolved.push(name);
                if let Ok(real) = resolved.canonicalize() {
                    resolved = real;
                }
            }
        }
    }
    match resolved.strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() && !cwd.as_os_str().is_empty() => rel.to_path_buf(),
        _ => resolved,
    }
}

/// Whether `path` exists and holds anything.
pub fn holds_files(path: &Path) -> Result<bool, ResultsError> {
    // Links and `..` resolved first, so the "never overwrite" check sees the real folder.
    let path = &resolve_path(path);
    if path.exists() && !path.is_dir() {
        return Err(ResultsError::NotAFolder(path.to_path_buf()));
    }
    Ok(path.exists() && fs::read_dir(path).map_err(io(path))?.next().is_some())
}

// ---------------------------------------------------------------------------------------
// Non-finite floats: JSON has no NaN, so serde_json writes `null`; these read it back.

/// A value whose floats may have been written as `null`.
pub trait Nullable: Sized {
    type Raw: DeserializeOwned;
    fn from_raw(raw: Self::Raw) -> Self;
}
impl Nullable for f64 {
    type Raw = Option<f64>;
    fn from_raw(raw: Option<f64>) -> f64 {
        raw.unwrap_or(f64::NAN)
    }
}
impl<T: Nullable> Nullable for Vec<T> {
    type Raw = Vec<T::Raw>;
    fn from_raw(raw: Self::Raw) -> Self {
        raw.into_iter().map(T::from_raw).collect()
    }
}
impl<T: Nullable> Nullable for Option<T> {
    type Raw = Option<T::Raw>;
    fn from_raw(raw: Self::Raw) -> Self {
        raw.map(T::from_raw)
    }
}

/// `#[serde(deserialize_with = "nan_if_null")]`: `null` → NaN, also inside vectors.
pub fn nan_if_null<'de, D: Deserializer<'de>, T: Nullable>(d: D) -> Result<T, D::Error> {
    T::Raw::deserialize(d).map(T::from_raw)
}

// ---------------------------------------------------------------------------------------
// CSV: one header per row type, derived from the type.

/// The header line of row type `T` (its field names, as serde names them).
pub fn csv_header<T: Serialize + Default>() -> String {
    let mut w = csv::WriterBuilder::new().has_headers(true).from_writer(Vec::new());
    w.serialize(T::default()).expect("a default row serializes");
    let bytes = w.into_inner().expect("writing to memory");
    String::from_utf8_lossy(&bytes).lines().next().unwrap_or_default().to_string()
}

/// An append-only CSV file of rows `T`, flushed after every batch of rows.
#[derive(Debug)]
pub struct CsvLog<T> {
    path: PathBuf,
    writer: csv::Writer<File>,
    rows: PhantomData<T>,
}

impl<T: Serialize + Default> CsvLog<T> {
    /// Create (or truncate) `path` with the header and `rows`.
    pub fn create(path: &Path, rows: &[T]) -> Result<Self, ResultsError> {
        let mut f = File::create(path).map_err(io(path))?;
        writeln!(f, "{}", csv_header::<T>()).map_err(io(path))?;
        let mut log = Self::append_to(path)?;
        log.append(rows)?;
        Ok(log)
    }

    /// Append to an existing file whose header is written.
    pub fn append_to(path: &Path) -> Result<Self, ResultsError> {
        let f = OpenOptions::new().append(true).open(path).map_err(io(path))?;
        Ok(Self { path: path.to_path_buf(), writer: csv::WriterBuilder::new().has_headers(false).from_writer(f), rows: PhantomData })
    }

    /// Append rows and flush them to disk.
    pub fn append(&mut self, rows: &[T]) -> Result<(), ResultsError> {
        for r in rows {
            self.writer.serialize(r).map_err(|e| csv_error(&self.path, e))?;
        }
        self.writer.flush().map_err(io(&self.path))
    }
}

fn csv_error(path: &Path, e: csv::Error) -> ResultsError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => ResultsError::Io { path: path.to_path_buf(), source },
        csv::ErrorKind::Deserialize { err, .. } => {
            let field = err.field().map(|f| format!("field {}: ", f + 1)).unwrap_or_default();
            ResultsError::Malformed { path: path.to_path_buf(), line, message: format!("{field}{}", err.kind()) }
        }
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => ResultsError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("{len} fields where the header has {expected_len} (a row cut short or with an extra comma)"),
        },
        other => ResultsError::Malformed { path: path.to_path_buf(), line, message: format!("{other:?}") },
    }
}

/// Parse CSV `text` (from `path`) into rows; the header must name `T`'s fields.
pub fn parse_csv<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Vec<T>, ResultsError> {
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    r.deserialize().map(|row| row.map_err(|e| csv_error(path, e))).collect()
}

/// Read a whole CSV file of rows `T`.
pub fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, ResultsError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse_csv(path, &text)
}

/// Write `doc` as pretty JSON (non-finite floats become `null`).
pub fn write_json<T: Serialize>(path: &Path, doc: &T) -> Result<(), ResultsError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| ResultsError::Malformed { path: path.to_path_buf(), line: 0, message: e.to_string() })?;
    fs::write(path, text + "\n").map_err(io(path))
}

/// Read a JSON document of type `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, ResultsError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| ResultsError::Malformed { path: path.to_path_buf(), line: e.line() as u64, message: format!("not {what}: {e}") })
}

/// `path`, or `path/name` when `path` is a folder.
pub fn file_in(path: &Path, name: &str) -> PathBuf {
    if path.is_dir() { path.join(name) } else { path.to_path_buf() }
}

// ---------------------------------------------------------------------------------------
// A training run's summary.json.

/// One member in summary.json (flat, with the attention summary spelled out).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MemberSummary {
    pub seed: u64,
    pub learned: bool,
    #[serde(default)]
    pub diverged: bool,
    pub step: Option<usize>,
    pub steps_trained: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_accuracy: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// The relevant positions.
    #[serde(rename = "S")]
    pub relevant: Vec<usize>,
    /// Mass on S per head of the last layer.
    #[serde(rename = "attention_mass_on_S", default, deserialize_with = "nan_if_null")]
    pub attention_mass_on_s: Option<Vec<f64>>,
    #[serde(rename = "attention_mass_on_S_by_layer", default, deserialize_with = "nan_if_null")]
    pub attention_mass_on_s_by_layer: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub best_head: Option<(usize, usize)>,
    #[serde(rename = "top_s_equals_S", default)]
    pub top_s_equals_s: Option<bool>,
    /// [layer][head][position]: mean CLS attention over the test set (position 0 is CLS,
    /// input bit i is position i + 1); absent in folders written before it was recorded.
    #[serde(default, deserialize_with = "nan_if_null")]
    pub attention_weights: Option<Vec<Vec<Vec<f64>>>>,
    /// The capacity-bound norms when the member finished (transformers only; absent in
    /// folders written before they were recorded).
    #[serde(default)]
    pub norms: Option<CapacityNorms>,
    /// Training and validation scores (restarts of a learner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// Why it left training (restarts of a learner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<Stopped>,
}

impl From<&MemberResult> for MemberSummary {
    fn from(m: &MemberResult) -> Self {
        let a = m.attention.as_ref();
        MemberSummary {
            seed: m.seed,
            learned: m.learned,
            diverged: m.diverged,
            step: m.step,
            steps_trained: m.steps_trained,
            test_accuracy: m.test_accuracy,
            test_loss: m.test_loss,
            train_loss: m.train_loss,
            relevant: m.relevant.clone(),
            attention_mass_on_s: a.map(|a| a.mass_on_s.last().cloned().unwrap_or_default()),
            attention_mass_on_s_by_layer: a.map(|a| a.mass_on_s.clone()),
            best_head: a.map(|a| a.best_head),
            top_s_equals_s: a.map(|a| a.top_s_equals_s),
            attention_weights: a.map(|a| a.weights.clone()),
            norms: m.norms.clone(),
            scores: m.scores.clone(),
            stopped: m.stopped,
        }
    }
}

impl From<MemberSummary> for MemberResult {
    fn from(m: MemberSummary) -> Self {
        let attention = match (m.attention_mass_on_s_by_layer, m.best_head) {
            (Some(mass_on_s), Some(best_head)) => Some(AttentionSummary {
                weights: m.attention_weights.unwrap_or_default(),
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
            norms: m.norms,
            scores: m.scores,
            stopped: m.stopped,
        }
    }
}

/// A training run's summary.json.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainSummary {
    pub members: Vec<MemberSummary>,
    /// How many members learned.
    pub learned: usize,
    pub steps: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// Stopped before every member finished or the budget ran out (Ctrl-C): the members are
    /// recorded as they were at that step.
    #[serde(default)]
    pub interrupted: bool,
    pub provenance: Provenance,
    /// The builds that trained the run, in order: one, unless it was resumed by another
    /// build (`provenance` names only the last); builds can differ in the last bits of
    /// what they compute. Absent in the summaries of older programs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<String>,
}

impl TrainSummary {
    /// The summary of a run whose last part `provenance` trained, `builds` all its parts.
    pub fn new(result: &EnsembleResult, provenance: &Provenance, builds: Vec<String>, interrupted: bool) -> Self {
        TrainSummary {
            members: result.members.iter().map(MemberSummary::from).collect(),
            learned: result.members.iter().filter(|m| m.learned).count(),
            steps: result.steps,
            seconds: result.seconds,
            interrupted,
            provenance: provenance.clone(),
            builds,
        }
    }
}

/// A training run's summary (`path` its folder or the file).
pub fn load_train_summary(path: &Path) -> Result<TrainSummary, ResultsError> {
    read_json(&file_in(path, "summary.json"), "a training summary")
}

/// A training run's curves (`path` its folder or its metrics.csv).
pub fn load_metrics(path: &Path) -> Result<Vec<CurvePoint>, ResultsError> {
    read_csv(&file_in(path, "metrics.csv"))
}

/// A results folder being written.
#[derive(Debug)]
pub struct ResultsDir {
    pub path: PathBuf,
    metrics: CsvLog<CurvePoint>,
}

impl ResultsDir {
    /// Create `path` (refusing one that exists and is not empty) and write the config.
    pub fn create(path: &Path, config_yaml: &str) -> Result<Self, ResultsError> {
        let path = &resolve_path(path);
        if holds_files(path)? {
            return Err(ResultsError::Exists(path.to_path_buf()));
        }
        fs::create_dir_all(path).map_err(io(path))?;
        let cfg = path.join("config.yaml");
        fs::write(&cfg, config_yaml).map_err(io(&cfg))?;
        let metrics = CsvLog::create(&path.join("metrics.csv"), &[])?;
        Ok(Self { path: path.to_path_buf(), metrics })
    }

    /// Open the existing run folder `path` to go on writing it (a resumed run): its
    /// metrics.csv is replaced, atomically, by the header and `curves` (the rows up to the
    /// checkpoint), and new rows are appended after them.
    pub fn reopen(path: &Path, curves: &[CurvePoint]) -> Result<Self, ResultsError> {
        let path = &resolve_path(path);
        let file = path.join("metrics.csv");
        let tmp = path.join("metrics.csv.tmp");
        CsvLog::create(&tmp, curves)?;
        fs::rename(&tmp, &file).map_err(io(&file))?;
        let metrics = CsvLog::append_to(&file)?;
        Ok(Self { path: path.to_path_buf(), metrics })
    }

    /// Append curve points and flush them to disk.
    pub fn append_metrics(&mut self, points: &[CurvePoint]) -> Result<(), ResultsError> {
        self.metrics.append(points)
    }

    /// Write `summary.json`.
    pub fn write_summary(&self, summary: &TrainSummary) -> Result<PathBuf, ResultsError> {
        let p = self.path.join("summary.json");
        write_json(&p, summary)?;
        Ok(p)
    }
}
