//! Trained weights in safetensors: the format PyTorch, JAX and TransformerLens users load.
//!
//! One file per member (no ensemble axis), f32 tensors with the field's names and shapes in
//! PyTorch's order (a linear layer's weight is `[out, in]`), and in the file's
//! `__metadata__` (JSON strings) the model config, task, attention variant, data shape,
//! seed, step and sparsevar version, so a reader needs nothing else to run the model.
//!
//! The mapping between sparsevar's parameters (`core::model`: `tok_emb`, `l0.q.w` stored
//! `[in, out]`, …) and the file's tensors lives here only, in both directions:
//! [`to_tensors`] (save) and [`from_tensors`] (load) sit side by side and share
//! [`field_name`]. [`SavedModel`] reopens a member and evaluates it on any backend.
//!
//! Files in a run folder: `weights/seed-<n>.safetensors` (the member at the end of training:
//! for a member that learned, its parameters at the learning step, where it stopped) and
//! `weights/seed-<n>.learned.safetensors` (only members that learned, at that step), as
//! `train.save_weights` asks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sparsevar_core::backend::{Backend, BackendError};
use sparsevar_core::graph::{Executor, ParamStore};
use sparsevar_core::model::{DataShape, Model, ModelError, ModelGraph, ModelSpec};
use sparsevar_core::registry::Registry;
use sparsevar_core::task::{Task, TaskSpec};

use crate::train::{EnsembleResult, TrainError, Trainer};

/// The folder of a run's weight files.
pub const WEIGHTS_DIR: &str = "weights";

/// Which weights `train` writes (`train.save_weights`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaveWeights {
    /// Every member at the end of training (`weights/seed-<n>.safetensors`).
    #[default]
    Final,
    /// Members that learned, at their learning step (`weights/seed-<n>.learned.safetensors`).
    Learned,
    /// Both files.
    Both,
    /// No weights.
    None,
}

impl SaveWeights {
    pub fn final_file(self) -> bool {
        matches!(self, SaveWeights::Final | SaveWeights::Both)
    }
    pub fn learned_file(self) -> bool {
        matches!(self, SaveWeights::Learned | SaveWeights::Both)
    }
}

/// Which snapshot of a member a file holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Snapshot {
    Final,
    Learned,
}

impl Snapshot {
    pub fn name(self) -> &'static str {
        match self {
            Snapshot::Final => "final",
            Snapshot::Learned => "learned",
        }
    }
}

/// `DIR/weights/seed-<n>.safetensors` or `DIR/weights/seed-<n>.learned.safetensors`.
pub fn weights_path(dir: &Path, seed: u64, snapshot: Snapshot) -> PathBuf {
    let name = match snapshot {
        Snapshot::Final => format!("seed-{seed}.safetensors"),
        Snapshot::Learned => format!("seed-{seed}.learned.safetensors"),
    };
    dir.join(WEIGHTS_DIR).join(name)
}

/// Write the files `which` asks for of every member of a finished run, member `m`'s at
/// `path(m, snapshot)`. A member that learned left the ensemble at its learning step, so
/// its parameters now are the ones of that step.
pub fn save_members(
    trainer: &mut Trainer<'_>,
    task: &TaskSpec,
    result: &EnsembleResult,
    which: SaveWeights,
    path: &dyn Fn(usize, Snapshot) -> PathBuf,
) -> Result<(), TrainError> {
    if !which.final_file() && !which.learned_file() {
        return Ok(());
    }
    let all = trainer.parameters()?;
    let store = trainer.param_store().clone();
    let data = trainer.model.data;
    let write = |p: PathBuf, values: &[Vec<f64>], meta: &WeightsMeta| save(&p, &store, values, meta).map_err(TrainError::from);
    for (m, member) in result.members.iter().enumerate() {
        let values: Vec<Vec<f64>> = all
            .iter()
            .zip(store.ids())
            .map(|(v, id)| {
                let n = store.member_len(id);
                v[m * n..(m + 1) * n].to_vec()
            })
            .collect();
        let mut meta = WeightsMeta {
            model: trainer.spec.model.clone(),
            task: task.clone(),
            data,
            seed: member.seed,
            step: member.steps_trained,
            snapshot: Snapshot::Final.name(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if which.final_file() {
            write(path(m, Snapshot::Final), &values, &meta)?;
        }
        if let (true, Some(step)) = (which.learned_file(), member.step.filter(|_| member.learned)) {
            meta.step = step;
            meta.snapshot = Snapshot::Learned.name();
            write(path(m, Snapshot::Learned), &values, &meta)?;
        }
    }
    Ok(())
}

/// Why weights could not be written, read or used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not a whole safetensors file (truncated, or not safetensors at all).
    #[error("{}: not a readable safetensors file ({message}); was it cut short? write it again with `sparsevar train`", path.display())]
    Format { path: PathBuf, message: String },
    /// A file that does not fit the model it is loaded into.
    #[error("{}: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    /// A run folder without the weights asked for.
    #[error("{message}")]
    Missing { message: String },
    #[error("{}: building the model: {source}", path.display())]
    Model { path: PathBuf, source: ModelError },
    #[error("{}: {message}", path.display())]
    Setup { path: PathBuf, message: String },
    #[error("evaluating {}: {source}", path.display())]
    Backend { path: PathBuf, source: BackendError },
}

impl WeightsError {
    /// Whether the user's input caused it (a wrong, missing or damaged file): exit status 2.
    pub fn is_input(&self) -> bool {
        !matches!(self, WeightsError::Backend { .. })
    }
}

/// The file's `__metadata__`, each value a JSON string.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsMeta {
    pub model: ModelSpec,
    pub task: TaskSpec,
    pub data: DataShape,
    pub seed: u64,
    /// The training step the parameters are from.
    pub step: usize,
    pub snapshot: &'static str,
    pub version: String,
}

#[derive(Serialize, Deserialize)]
struct DataJson {
    #[serde(rename = "T")]
    t: usize,
    alphabet: usize,
    classes: usize,
}

impl WeightsMeta {
    fn to_map(&self) -> HashMap<String, String> {
        let attention = match &self.model {
            ModelSpec::Transformer(c) => c.attention.clone(),
            ModelSpec::Mlp(_) => "none".into(),
        };
        let data = DataJson { t: self.data.seq_len, alphabet: self.data.alphabet, classes: self.data.classes };
        HashMap::from([
            ("format".to_string(), "sparsevar".to_string()),
            ("sparsevar_version".into(), self.version.clone()),
            ("model".into(), json(&self.model)),
            ("task".into(), json(&self.task)),
            ("attention".into(), attention),
            ("data".into(), json(&data)),
            ("seed".into(), self.seed.to_string()),
            ("step".into(), self.step.to_string()),
            ("snapshot".into(), self.snapshot.to_string()),
            ("dtype".into(), "float32".into()),
        ])
    }

    fn from_map(path: &Path, m: &HashMap<String, String>) -> Result<Self, WeightsError> {
        let bad = |message: String| WeightsError::Mismatch { path: path.to_path_buf(), message };
        let get = |k: &str| m.get(k).ok_or_else(|| bad(format!("its metadata has no `{k}`; it was not written by sparsevar")));
        let parse = |k: &str| -> Result<serde_json::Value, WeightsError> {
            serde_json::from_str(get(k)?).map_err(|e| bad(format!("metadata `{k}` is not valid JSON: {e}")))
        };
        let model: ModelSpec = serde_json::from_value(parse("model")?).map_err(|e| bad(format!("metadata `model`: {e}")))?;
        let task: TaskSpec = serde_json::from_value(parse("task")?).map_err(|e| bad(format!("metadata `task`: {e}")))?;
        let data: DataJson = serde_json::from_value(parse("data")?).map_err(|e| bad(format!("metadata `data`: {e}")))?;
        let num = |k: &str| get(k)?.parse::<u64>().map_err(|e| bad(format!("metadata `{k}`: {e}")));
        let snapshot = if get("snapshot")? == "learned" { "learned" } else { "final" };
        Ok(WeightsMeta {
            model,
            task,
            data: DataShape { seq_len: data.t, alphabet: data.alphabet, classes: data.classes },
            seed: num("seed")?,
            step: num("step")? as usize,
            snapshot,
            version: get("sparsevar_version")?.clone(),
        })
    }
}

/// A metadata value: JSON text.
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("config types serialise")
}

/// How one stored parameter appears in the file.
enum Field {
    /// One tensor named `name`; `transpose`: stored `[in, out]`, written `[out, in]`.
    Tensor { name: String, transpose: bool },
    /// `tok_emb` ([alphabet + 1, d]): rows 0..alphabet are `embed.token`, the last row is the
    /// CLS token's embedding, `cls` ([d]).
    TokenAndCls,
}

/// The file's name of sparsevar's parameter `internal` (see the book's "Saved weights").
fn field_name(internal: &str) -> Option<Field> {
    let t = |name: String, transpose| Some(Field::Tensor { name, transpose });
    match internal {
        "tok_emb" => return Some(Field::TokenAndCls),
        "pos_emb" => return t("embed.position".into(), false),
        _ => {}
    }
    let (module, leaf) = internal.rsplit_once('.')?;
    // Linear layers: `.w` [in, out] → `.weight` [out, in]; LayerNorm: `.gain` → `.weight`.
    let (leaf, transpose) = match leaf {
        "w" => ("weight", true),
        "b" => ("bias", false),
        "gain" => ("weight", false),
        "bias" => ("bias", false),
        _ => return None,
    };
    let module = match module {
        "head" => "readout".to_string(),
        "ln_f" => "final_norm".to_string(),
        _ => {
            if let Some(l) = module.strip_prefix("fc") {
                format!("layers.{}", l.parse::<usize>().ok()?)
            } else {
                let (layer, part) = module.split_once('.')?;
                let l: usize = layer.strip_prefix('l')?.parse().ok()?;
                let part = match part {
                    "q" | "k" | "v" | "o" => format!("attn.{part}"),
                    "ln1" | "ln2" => part.to_string(),
                    "mlp1" => "mlp.fc1".into(),
                    "mlp2" => "mlp.fc2".into(),
                    _ => return None,
                };
                format!("layers.{l}.{part}")
            }
        }
    };
    t(format!("{module}.{leaf}"), transpose)
}

/// A named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn transposed(values: &[f64], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = values[i * cols + j] as f32;
        }
    }
    out
}

/// Save: one member's parameters (`values[i]`: parameter i of `store`, declaration order,
/// this member only) as the file's tensors.
pub fn to_tensors(store: &ParamStore, values: &[Vec<f64>]) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for (spec, v) in store.specs.iter().zip(values) {
        match field_name(&spec.name).unwrap_or_else(|| panic!("parameter {} has no name in the weights mapping", spec.name)) {
            Field::TokenAndCls => {
                let (rows, d) = (spec.shape[0], spec.shape[1]);
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                out.insert("embed.token".into(), Tensor { shape: vec![rows - 1, d], values: f[..(rows - 1) * d].to_vec() });
                out.insert("cls".into(), Tensor { shape: vec![d], values: f[(rows - 1) * d..].to_vec() });
            }
            Field::Tensor { name, transpose: true } => {
                let (fan_in, fan_out) = (spec.shape[0], spec.shape[1]);
                out.insert(name, Tensor { shape: vec![fan_out, fan_in], values: transposed(v, fan_in, fan_out) });
            }
            Field::Tensor { name, transpose: false } => {
                out.insert(name, Tensor { shape: spec.shape.clone(), values: v.iter().map(|&x| x as f32).collect() });
            }
        }
    }
    out
}

/// Load: the tensors of a file back into `store`'s parameters (declaration order, one
/// member). Every tensor the model needs must be there with its shape, and nothing else.
pub fn from_tensors(store: &ParamStore, tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<Vec<Vec<f64>>, WeightsError> {
    let mismatch = |message: String| WeightsError::Mismatch { path: path.to_path_buf(), message };
    let mut used = Vec::new();
    let mut take = |name: &str, shape: &[usize]| -> Result<&Tensor, WeightsError> {
        let t = tensors
            .get(name)
            .ok_or_else(|| mismatch(format!("no tensor `{name}` (shape {shape:?}); the weights come from another model than the run's config.yaml")))?;
        if t.shape != shape {
            return Err(mismatch(format!(
                "tensor `{name}` has shape {:?}, the run's config.yaml makes {shape:?}; the weights come from another model",
                t.shape
            )));
        }
        used.push(name.to_string());
        Ok(t)
    };
    let mut out = Vec::new();
    for spec in &store.specs {
        let field = field_name(&spec.name).unwrap_or_else(|| panic!("parameter {} has no name in the weights mapping", spec.name));
        out.push(match field {
            Field::TokenAndCls => {
                let (rows, d) = (spec.shape[0], spec.shape[1]);
                let mut v: Vec<f64> = take("embed.token", &[rows - 1, d])?.values.iter().map(|&x| x as f64).collect();
                v.extend(take("cls", &[d])?.values.iter().map(|&x| x as f64));
                v
            }
            Field::Tensor { name, transpose: true } => {
                let (fan_in, fan_out) = (spec.shape[0], spec.shape[1]);
                let t = take(&name, &[fan_out, fan_in])?;
                let back: Vec<f64> = t.values.iter().map(|&x| x as f64).collect();
                // [out, in] → [in, out]
                transposed(&back, fan_out, fan_in).into_iter().map(f64::from).collect()
            }
            Field::Tensor { name, transpose: false } => take(&name, &spec.shape)?.values.iter().map(|&x| x as f64).collect(),
        });
    }
    if let Some(extra) = tensors.keys().find(|k| !used.contains(k)) {
        return Err(mismatch(format!("tensor `{extra}` is not part of the run's model; the weights come from another model than its config.yaml")));
    }
    Ok(out)
}

/// The same safetensors file with its JSON header's keys in sorted order. `safetensors::serialize`
/// takes the metadata as a `HashMap`, so its order (and the file's bytes) change from process to
/// process; sorted, the same parameters always give the same bytes, and files can be compared
/// with `cmp`. Offsets are relative to the data, so only the header moves.
pub(crate) fn sorted_header(file: Vec<u8>) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: std::collections::BTreeMap<String, serde_json::Value> = m.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            other => other,
        }
    }
    let Some(n) = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return file };
    let Some(header) = file.get(8..8 + n).and_then(|h| serde_json::from_slice::<serde_json::Value>(h).ok()) else { return file };
    let mut text = serde_json::to_vec(&sort(header)).expect("a JSON value serializes");
    // The data starts 8-byte aligned, as safetensors writes it: pad the header with spaces.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + file.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&file[8 + n..]);
    out
}

/// Write one member's file (atomically: a temporary file, then a rename).
pub fn save(path: &Path, store: &ParamStore, values: &[Vec<f64>], meta: &WeightsMeta) -> Result<(), WeightsError> {
    let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
    let tensors = to_tensors(store, values);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.into_iter().map(|(name, t)| (name, t.values.iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape)).collect();
    let views = bytes
        .iter()
        .map(|(name, b, shape)| Ok((name.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| WeightsError::Format { path: path.to_path_buf(), message: e.to_string() })?;
    let data = safetensors::serialize(views, Some(meta.to_map())).map_err(|e| WeightsError::Format { path: path.to_path_buf(), message: e.to_string() })?;
    let data = sorted_header(data);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Read a file: its metadata and tensors (f32 only).
pub fn read(path: &Path) -> Result<(WeightsMeta, BTreeMap<String, Tensor>), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), source })?;
    let format = |message: String| WeightsError::Format { path: path.to_path_buf(), message };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let meta = WeightsMeta::from_map(path, header.metadata().as_ref().unwrap_or(&HashMap::new()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(WeightsError::Mismatch { path: path.to_path_buf(), message: format!("tensor `{name}` is {:?}; sparsevar reads F32", view.dtype()) });
        }
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.insert(name, Tensor { shape: view.shape().to_vec(), values });
    }
    Ok((meta, tensors))
}

/// A member reopened from its weights file, ready to evaluate.
#[derive(Debug)]
pub struct SavedModel {
    pub path: PathBuf,
    pub meta: WeightsMeta,
    pub task: Box<dyn Task>,
    model: Model,
    store: ParamStore,
    values: Vec<Vec<f64>>,
}

/// What [`SavedModel::run`] computes for a batch of inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// [input][class].
    pub logits: Vec<Vec<f64>>,
    /// [input][layer][head][key position] (position 0 is CLS, bit i at i + 1); empty for
    /// the MLP.
    pub attention: Vec<Vec<Vec<Vec<f64>>>>,
}

impl Outputs {
    /// The class each input is given (the first of equal logits).
    pub fn predictions(&self) -> Vec<usize> {
        self.logits.iter().map(|row| row.iter().enumerate().fold((0, f64::NEG_INFINITY), |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc }).0).collect()
    }
}

/// Inputs per launch when evaluating a saved model.
const CHUNK: usize = 256;

impl SavedModel {
    /// Open `path` for the model `model` of a run whose task is `task` (its config.yaml) and
    /// member `seed`: the file's tensors must be exactly the ones that model has.
    pub fn open(path: &Path, model: &ModelSpec, task: &TaskSpec, seed: u64, registry: &Registry) -> Result<SavedModel, WeightsError> {
        let (meta, tensors) = read(path)?;
        Self::build(path, meta, &tensors, model, task, seed, registry)
    }

    /// Open one weights file on its own (a sweep member's, which has no config.yaml beside
    /// it): model, task (with its T) and seed are the file's metadata.
    pub fn open_file(path: &Path, registry: &Registry) -> Result<SavedModel, WeightsError> {
        let (meta, tensors) = read(path)?;
        let (model, task, seed) = (meta.model.clone(), meta.task.clone(), meta.seed);
        Self::build(path, meta, &tensors, &model, &task, seed, registry)
    }

    /// The model `model` for member `seed` of `task`, with the file's tensors, checked
    /// against the file's metadata.
    fn build(
        path: &Path,
        meta: WeightsMeta,
        tensors: &BTreeMap<String, Tensor>,
        model: &ModelSpec,
        task: &TaskSpec,
        seed: u64,
        registry: &Registry,
    ) -> Result<SavedModel, WeightsError> {
        let setup = |message: String| WeightsError::Setup { path: path.to_path_buf(), message };
        let member_task = registry.task(task, seed).map_err(|e| setup(format!("the run's task for seed {seed}: {e}")))?;
        let data = DataShape { seq_len: member_task.seq_len(), alphabet: member_task.alphabet(), classes: member_task.num_classes() };
        let attention = match model {
            ModelSpec::Transformer(c) => Some(registry.attention(&c.attention).map_err(|e| setup(e.to_string()))?),
            ModelSpec::Mlp(_) => None,
        };
        let (m, store) = Model::new(model, data, 1, attention).map_err(|source| WeightsError::Model { path: path.to_path_buf(), source })?;
        let values = from_tensors(&store, tensors, path)?;
        // Same shapes but another config (an attention variant, a norm's epsilon): the file
        // would be evaluated as a model it is not.
        if meta.model != *model || meta.data != data {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                message: "its metadata's model or data shape differs from the run's config.yaml; the weights come from another run".into(),
            });
        }
        if meta.seed != seed {
            return Err(WeightsError::Mismatch { path: path.to_path_buf(), message: format!("it holds seed {}, not seed {seed}", meta.seed) });
        }
        Ok(SavedModel { path: path.to_path_buf(), meta, task: member_task, model: m, store, values })
    }

    /// Open member `seed` of the run in `dir`, whose model and task are `model` and `task`.
    pub fn open_run(dir: &Path, model: &ModelSpec, task: &TaskSpec, seeds: &[u64], seed: u64, registry: &Registry) -> Result<SavedModel, WeightsError> {
        if !seeds.contains(&seed) {
            let list = seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
            return Err(WeightsError::Missing { message: format!("{}: the run has no member with seed {seed}; its seeds are {list}", dir.display()) });
        }
        let folder = dir.join(WEIGHTS_DIR);
        if !folder.is_dir() {
            return Err(WeightsError::Missing {
                message: format!("{} has no weights/ folder; train with train.save_weights: final (the default) to write them", dir.display()),
            });
        }
        let path = weights_path(dir, seed, Snapshot::Final);
        let path = if path.is_file() { path } else { weights_path(dir, seed, Snapshot::Learned) };
        if !path.is_file() {
            return Err(WeightsError::Missing {
                message: format!("{} holds no weights of seed {seed} (seed-{seed}.safetensors or seed-{seed}.learned.safetensors)", folder.display()),
            });
        }
        Self::open(&path, model, task, seed, registry)
    }

    /// The model's data shape (T, alphabet, classes).
    pub fn data(&self) -> DataShape {
        self.model.data
    }

    /// Logits and attention of every input (`tokens`: n × T, row-major) on `backend`.
    pub fn run(&self, backend: &mut dyn Backend, tokens: &[u8]) -> Result<Outputs, WeightsError> {
        let t = self.model.data.seq_len;
        let n = tokens.len() / t;
        let be = |source| WeightsError::Backend { path: self.path.clone(), source };
        let mut store = self.store.clone();
        store.buffers.clear();
        for v in &self.values {
            let b = backend.alloc(v.len()).map_err(be)?;
            backend.write(b, v).map_err(be)?;
            store.buffers.push(b);
        }
        let chunk = CHUNK.min(n.max(1));
        let graph: ModelGraph = self.model.build(&store, chunk, false).map_err(|source| WeightsError::Model { path: self.path.clone(), source })?;
        let outputs: Vec<_> = std::iter::once(graph.logits).chain(graph.attention.iter().copied()).collect();
        let result = (|| -> Result<Outputs, BackendError> {
            let exec = Executor::new(backend, graph.graph.clone(), &outputs, &store)?;
            for (node, values) in &graph.constants {
                exec.write(backend, *node, values)?;
            }
            let classes = self.model.data.classes;
            let mut out = Outputs { logits: Vec::with_capacity(n), attention: Vec::new() };
            let (mut encoded, mut scratch, mut padded) = (Vec::new(), Vec::new(), Vec::new());
            let mut start = 0;
            while start < n {
                let valid = chunk.min(n - start);
                padded.clear();
                for i in 0..chunk {
                    // Pad the last chunk by repeating its last input; padded rows are dropped.
                    let row = start + i.min(valid - 1);
                    padded.extend_from_slice(&tokens[row * t..(row + 1) * t]);
                }
                encoded.clear();
                self.model.encode(chunk, &padded, &mut encoded);
                exec.write(backend, graph.inputs, &encoded)?;
                exec.write(backend, graph.labels, &vec![0.0; chunk])?;
                exec.run(backend)?;
                exec.read(backend, graph.logits, &mut scratch)?;
                out.logits.extend(scratch.chunks(classes).take(valid).map(|c| c.to_vec()));
                let first = out.attention.len();
                out.attention.extend((0..valid).map(|_| Vec::new()));
                for &node in &graph.attention {
                    exec.read(backend, node, &mut scratch)?;
                    // [B, H, N] per layer.
                    let per_sample = scratch.len() / chunk;
                    for i in 0..valid {
                        let w = &scratch[i * per_sample..(i + 1) * per_sample];
                        out.attention[first + i].push(w.chunks(t + 1).map(|h| h.to_vec()).collect());
                    }
                }
                start += valid;
            }
            exec.free(backend)?;
            Ok(out)
        })();
        for b in store.buffers.drain(..) {
            backend.free(b).map_err(be)?;
        }
        result.map_err(be)
    }

    /// The task's noise-free label of each input (n × T tokens).
    pub fn labels(&self, tokens: &[u8]) -> Vec<usize> {
        tokens.chunks(self.model.data.seq_len).map(|row| self.task.clean_label(row) as usize).collect()
    }

    /// `n` fresh samples of the member's task (a stream of their own, not the training or
    /// test set): tokens n × T and labels.
    pub fn fresh_samples(&self, n: usize) -> Result<(Vec<u8>, Vec<usize>), WeightsError> {
        let mut rng = sparsevar_core::rng::Pcg32::new(self.meta.seed, sparsevar_core::rng::streams::EVAL);
        let ds = sparsevar_core::task::Dataset::draw(self.task.as_ref(), n, &mut rng)
            .map_err(|e| WeightsError::Setup { path: self.path.clone(), message: format!("sampling the task: {e}") })?;
        Ok((ds.tokens, ds.labels.iter().map(|&y| y as usize).collect()))
    }

    /// Check input tokens: a multiple of T, each below the alphabet.
    pub fn check_tokens(&self, tokens: &[u8]) -> Result<(), String> {
        let d = self.model.data;
        if tokens.is_empty() || !tokens.len().is_multiple_of(d.seq_len) {
            return Err(format!("{} tokens are not a whole number of inputs of T = {}", tokens.len(), d.seq_len));
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= d.alphabet) {
            return Err(format!("token {bad} is outside the task's alphabet 0..{}", d.alphabet - 1));
        }
        Ok(())
    }
}

/// Parse an inputs file (`sparsevar eval --inputs`): one input per line, T tokens as integers
/// separated by spaces or commas (or, for alphabets of at most 10, T digits written
/// together, e.g. `0110`). Blank lines and lines starting with `#` are skipped. Errors name
/// the line.
pub fn parse_inputs(text: &str, t: usize, alphabet: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lineno = i + 1;
        let row: Vec<&str> = if !line.contains([' ', ',', '\t']) && alphabet <= 10 && line.len() == t {
            line.split("").filter(|s| !s.is_empty()).collect()
        } else {
            line.split([' ', ',', '\t']).filter(|s| !s.is_empty()).collect()
        };
        if row.len() != t {
            return Err(format!("line {lineno}: {} tokens, the run's task has T = {t}", row.len()));
        }
        for tok in row {
            match tok.parse::<usize>() {
                Ok(x) if x < alphabet => out.push(x as u8),
                _ => return Err(format!("line {lineno}: `{tok}` is not a token of the alphabet 0..{}", alphabet - 1)),
            }
        }
    }
    if out.is_empty() {
        return Err("no inputs (one line of T tokens per input)".into());
    }
    Ok(out)
}

/// Write inputs in the format [`parse_inputs`] reads (tokens separated by spaces).
pub fn format_inputs(tokens: &[u8], t: usize) -> String {
    tokens.chunks(t).map(|row| row.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ") + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_internal_name_has_a_field_name() {
        for (internal, want) in [
            ("pos_emb", "embed.position"),
            ("l0.q.w", "layers.0.attn.q.weight"),
            ("l3.o.b", "layers.3.attn.o.bias"),
            ("l1.ln2.gain", "layers.1.ln2.weight"),
            ("l0.mlp2.w", "layers.0.mlp.fc2.weight"),
            ("ln_f.bias", "final_norm.bias"),
            ("head.w", "readout.weight"),
            ("fc2.b", "layers.2.bias"),
        ] {
            match field_name(internal) {
                Some(Field::Tensor { name, .. }) => assert_eq!(name, want),
                _ => panic!("{internal} unmapped"),
            }
        }
        assert!(field_name("l0.attn.w").is_none());
    }

    #[test]
    fn inputs_parse_both_spellings_and_name_the_line() {
        assert_eq!(parse_inputs("# x\n0 1 1\n\n1,0,0\n011\n", 3, 2).unwrap(), vec![0, 1, 1, 1, 0, 0, 0, 1, 1]);
        assert_eq!(parse_inputs("0 1\n", 3, 2).unwrap_err(), "line 1: 2 tokens, the run's task has T = 3");
        assert!(parse_inputs("0 1 2\n", 3, 2).unwrap_err().starts_with("line 1: `2`"));
    }
}
