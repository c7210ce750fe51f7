//! Saved models: `load_model(dir, seed)` reopens a member from its safetensors file
//! (`experiment::weights`), `load_model(file)` one weights file (a sweep member's), with
//! `evaluate` (accuracy and logits) and `attention`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::weights::{Outputs, SavedModel, parse_inputs};

use super::{Api, Res, TrainResult, fail, to_dyn};
use crate::engine::State;

/// A member reopened from its weights file.
#[derive(Clone, Debug)]
pub(crate) struct SavedHandle(pub Arc<SavedModel>);

/// Open member `seed` of the run in `dir` (its config.yaml says model and task).
fn open(st: &State, dir: &Path, seed: i64) -> Result<SavedHandle, String> {
    let seed = u64::try_from(seed).map_err(|_| format!("seed must be a non-negative integer (got {seed})"))?;
    let config = dir.join("config.yaml");
    if !config.is_file() {
        return Err(format!("{} holds no config.yaml; give a folder written by `train`", dir.display()));
    }
    let cfg = ExperimentConfig::load(&config, &[], &st.ctx.registry).map_err(|e| e.to_string())?;
    let model = SavedModel::open_run(dir, &cfg.model, &cfg.task, &cfg.seeds, seed, &st.ctx.registry).map_err(|e| e.to_string())?;
    Ok(SavedHandle(Arc::new(model)))
}

/// Open one weights file: model, task and seed from its metadata.
fn open_file(st: &State, path: &Path) -> Result<SavedHandle, String> {
    if !path.is_file() {
        return Err(format!("{} is not a file; give a weights file (….safetensors), or a run folder and a seed", path.display()));
    }
    let model = SavedModel::open_file(path, &st.ctx.registry).map_err(|e| e.to_string())?;
    Ok(SavedHandle(Arc::new(model)))
}

/// A run folder named by a script: absolute, or relative to the script's out folder (where
/// its `train` runs are).
fn run_dir(st: &State, dir: &str) -> PathBuf {
    let p = Path::new(dir);
    if p.is_absolute() { p.to_path_buf() } else { st.ctx.out_dir.join(p) }
}

/// Inputs as tokens: each an array of T ints or a string of T digits.
fn tokens_of(m: &SavedModel, inputs: &Array) -> Result<Vec<u8>, String> {
    let d = m.data();
    let mut text = String::new();
    for (i, x) in inputs.iter().enumerate() {
        if let Some(a) = x.read_lock::<Array>() {
            let row: Result<Vec<String>, String> =
                a.iter().map(|v| v.as_int().map(|n| n.to_string()).map_err(|t| format!("input {i}: tokens must be integers (got {t})"))).collect();
            text.push_str(&row?.join(" "));
        } else if let Some(s) = x.read_lock::<rhai::ImmutableString>() {
            text.push_str(s.as_str());
        } else {
            return Err(format!("input {i} must be an array of T = {} tokens or a string of digits (got {})", d.seq_len, x.type_name()));
        }
        text.push('\n');
    }
    // Lines count from 1 in parse_inputs; scripts count inputs from 0.
    parse_inputs(&text, d.seq_len, d.alphabet).map_err(|e| match e.strip_prefix("line ").and_then(|r| r.split_once(':')) {
        Some((n, rest)) => format!("input {}:{rest}", n.parse::<usize>().map_or(0, |n| n - 1)),
        None => e,
    })
}

fn run(st: &State, m: &SavedModel, tokens: &[u8]) -> Result<Outputs, String> {
    let mut backend = st.ctx.registry.backend(&st.ctx.backend).map_err(|e| e.to_string())?;
    m.run(backend.as_mut(), tokens).map_err(|e| e.to_string())
}

/// `#{accuracy, logits, predictions, labels, inputs}` of `tokens` with `labels`.
fn evaluation(st: &State, m: &SavedModel, tokens: &[u8], labels: &[usize]) -> Result<Map, String> {
    let out = run(st, m, tokens)?;
    let predictions = out.predictions();
    let correct = predictions.iter().zip(labels).filter(|(p, y)| p == y).count();
    let t = m.data().seq_len;
    let inputs: Vec<Vec<u8>> = tokens.chunks(t).map(|r| r.to_vec()).collect();
    let mut map = Map::new();
    map.insert("accuracy".into(), Dynamic::from(correct as f64 / labels.len() as f64));
    map.insert("logits".into(), to_dyn(&out.logits));
    map.insert("predictions".into(), to_dyn(&predictions));
    map.insert("labels".into(), to_dyn(&labels));
    map.insert("inputs".into(), to_dyn(&inputs));
    Ok(map)
}

pub(super) fn register(a: &mut Api) {
    a.group("Saved models");
    a.ty::<SavedHandle>("SavedModel", "a trained member reopened from its weights file (`weights/seed-<n>.safetensors`), see `load_model`");
    a.display::<SavedHandle>(|m| format!("SavedModel(seed {}, step {}, {})", m.0.meta.seed, m.0.meta.step, m.0.path.display()));
    let st = a.st.clone();
    a.func(
        "load_model",
        "load_model(dir: string, seed: int) -> SavedModel",
        "Reopen member `seed` of the training run in `dir` (absolute, or relative to the out folder) from its weights; a file that does not fit the run's config.yaml is an error.",
        move |ctx: NativeCallContext, dir: &str, seed: i64| -> Res<SavedHandle> { open(&st, &run_dir(&st, dir), seed).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func(
        "load_model",
        "load_model(run: TrainResult, seed: int) -> SavedModel",
        "Reopen member `seed` of a run this script trained.",
        move |ctx: NativeCallContext, r: TrainResult, seed: i64| -> Res<SavedHandle> { open(&st, &r.0.dir, seed).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func(
        "load_model",
        "load_model(file: string) -> SavedModel",
        "Reopen one weights file (absolute, or relative to the out folder), e.g. a sweep member's `weights/<model>/T<T>-m<m>-seed-<n>.safetensors`: model, task (with its T) and seed come from the file's metadata.",
        move |ctx: NativeCallContext, file: &str| -> Res<SavedHandle> { open_file(&st, &run_dir(&st, file)).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func(
        "evaluate",
        "SavedModel.evaluate(n: int) -> map",
        "Evaluate on n fresh samples of the run's task: #{accuracy, logits ([input][class]), predictions, labels, inputs}.",
        move |ctx: NativeCallContext, m: &mut SavedHandle, n: i64| -> Res<Map> {
            let n = usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| fail(&ctx, format!("evaluate: n must be at least 1 (got {n})")))?;
            let (tokens, labels) = m.0.fresh_samples(n).map_err(|e| fail(&ctx, e))?;
            evaluation(&st, &m.0, &tokens, &labels).map_err(|e| fail(&ctx, e))
        },
    );
    let st = a.st.clone();
    a.func(
        "evaluate",
        "SavedModel.evaluate(inputs: array) -> map",
        "Evaluate on given inputs (each an array of T tokens or a string of T digits), labelled by the task's noise-free rule; same map as evaluate(n).",
        move |ctx: NativeCallContext, m: &mut SavedHandle, inputs: Array| -> Res<Map> {
            let tokens = tokens_of(&m.0, &inputs).map_err(|e| fail(&ctx, format!("evaluate: {e}")))?;
            let labels = m.0.labels(&tokens);
            evaluation(&st, &m.0, &tokens, &labels).map_err(|e| fail(&ctx, e))
        },
    );
    let st = a.st.clone();
    a.func(
        "attention",
        "SavedModel.attention(input) -> array",
        "The CLS token's attention on one input (array of T tokens or string of digits): [layer][head][position], position 0 is CLS, bit i at i + 1 (draw it with plot_attention(model, input, path)). Empty for an MLP.",
        move |ctx: NativeCallContext, m: &mut SavedHandle, input: Dynamic| -> Res<Array> {
            let tokens = tokens_of(&m.0, &vec![input]).map_err(|e| fail(&ctx, format!("attention: {e}")))?;
            let out = run(&st, &m.0, &tokens).map_err(|e| fail(&ctx, e))?;
            Ok(to_dyn(&out.attention[0]).into_array().unwrap_or_default())
        },
    );
    let st = a.st.clone();
    a.func(
        "plot_attention",
        "plot_attention(model: SavedModel, input, path: string) -> map",
        "The attention heat map of one input (array of T tokens or string of digits), S outlined; same data as plot_attention of a run.",
        move |ctx: NativeCallContext, m: SavedHandle, input: Dynamic, path: &str| -> Res<Map> {
            let tokens = tokens_of(&m.0, &vec![input]).map_err(|e| fail(&ctx, format!("plot_attention: {e}")))?;
            let out = run(&st, &m.0, &tokens).map_err(|e| fail(&ctx, e))?;
            let bits: String = tokens.iter().map(|x| x.to_string()).collect();
            let title = format!("seed {}, step {}: input {bits}, predicted {}", m.0.meta.seed, m.0.meta.step, out.predictions()[0]);
            super::plots::draw(&ctx, &st, path, |p| sparsevar_plot::input_attention_heatmap(&out.attention[0], m.0.task.relevant(), &title, p))
        },
    );
    a.prop("seed", "SavedModel.seed -> int", "The member's seed.", |m: &mut SavedHandle| m.0.meta.seed as i64);
    a.prop("step", "SavedModel.step -> int", "The training step its weights are from.", |m: &mut SavedHandle| m.0.meta.step as i64);
    a.prop("relevant", "SavedModel.relevant -> array", "The relevant positions S of its task.", |m: &mut SavedHandle| to_dyn(&m.0.task.relevant()));
    a.prop("path", "SavedModel.path -> string", "Its weights file.", |m: &mut SavedHandle| m.0.path.display().to_string());
}
