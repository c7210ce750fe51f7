//! Training: `train(task, model, #{..})` → a `TrainResult`, with the run's folder written as
//! it goes.

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_experiment::config::{ExperimentConfig, TrainConfig};
use sparsevar_experiment::results::fresh_dir;
use sparsevar_experiment::train::{EnsembleResult, MemberResult};
use sparsevar_experiment::workflow::{Event, observe, run_train};

use super::{Api, ModelHandle, Res, TaskHandle, code, fail, fields, overlay, seeds_of, stopped, string_of, to_dyn};
use crate::engine::State;

/// A loaded experiment config (`load_config` of a train YAML), trainable with `train(exp)`.
#[derive(Clone, Debug)]
pub(crate) struct ExperimentHandle {
    pub cfg: Arc<ExperimentConfig>,
    /// The results folder name `train` uses (the file's stem).
    pub name: Arc<str>,
}

/// What one `train` call produced.
#[derive(Debug)]
pub(crate) struct TrainData {
    pub name: String,
    pub dir: PathBuf,
    pub config: ExperimentConfig,
    pub result: EnsembleResult,
}

/// A finished (or stopped) training run.
#[derive(Clone, Debug)]
pub(crate) struct TrainResult(pub Arc<TrainData>);

/// Keys of the options map of `train`, besides the `TrainConfig` keys.
const EXTRA_KEYS: [&str; 3] = ["seeds", "name", "backend"];

/// The `TrainConfig` keys (shared with `sweep`).
pub(crate) fn config_keys() -> Vec<String> {
    let mut k: Vec<String> = fields(&TrainConfig::default()).into_iter().map(|f| f.0).collect();
    // Optional keys the defaults leave out when serialised (e.g. max_norm).
    for x in sparsevar_experiment::reference::section_keys::<TrainConfig>() {
        if !k.contains(&x) {
            k.push(x);
        }
    }
    k
}

fn train_keys() -> Vec<String> {
    let mut k = config_keys();
    k.extend(EXTRA_KEYS.map(String::from));
    k
}

/// The step member `member` created its variable (see [`sparsevar_plot::variable_step`]).
pub(crate) fn variable_step(result: &EnsembleResult, member: usize) -> Option<usize> {
    sparsevar_plot::variable_step(&result.curves, member)
}

fn member_map(m: &MemberResult, variable: Option<usize>) -> Map {
    let mut map = Map::new();
    let mut put = |k: &str, v: Dynamic| {
        map.insert(k.into(), v);
    };
    put("seed", Dynamic::from(m.seed as i64));
    put("learned", Dynamic::from(m.learned));
    put("diverged", Dynamic::from(m.diverged));
    put("step", to_dyn(&m.step));
    put("steps_trained", Dynamic::from(m.steps_trained as i64));
    put("test_accuracy", Dynamic::from(m.test_accuracy));
    put("test_loss", Dynamic::from(m.test_loss));
    put("train_loss", Dynamic::from(m.train_loss));
    put("S", to_dyn(&m.relevant));
    put("variable_step", to_dyn(&variable));
    let a = m.attention.as_ref();
    put("mass_on_S", a.map_or(Dynamic::UNIT, |a| to_dyn(&a.mass_on_s.last())));
    put("mass_on_S_by_layer", a.map_or(Dynamic::UNIT, |a| to_dyn(&a.mass_on_s)));
    put("best_head", a.map_or(Dynamic::UNIT, |a| to_dyn(&[a.best_head.0, a.best_head.1])));
    put("best_mass_on_S", a.map_or(Dynamic::UNIT, |a| Dynamic::from(a.mass_on_s[a.best_head.0][a.best_head.1])));
    put("top_s_equals_S", a.map_or(Dynamic::UNIT, |a| Dynamic::from(a.top_s_equals_s)));
    map
}

impl TrainResult {
    fn members(&self) -> Array {
        let r = &self.0.result;
        r.members.iter().enumerate().map(|(i, m)| Dynamic::from_map(member_map(m, variable_step(r, i)))).collect()
    }

    /// The plain form: name, folder, and per-member outcomes.
    pub(crate) fn summary(&self) -> Dynamic {
        let d = &self.0;
        let mut map = Map::new();
        map.insert("name".into(), Dynamic::from(d.name.clone()));
        map.insert("dir".into(), Dynamic::from(d.dir.display().to_string()));
        map.insert("task".into(), to_dyn(&d.config.task));
        map.insert("model".into(), to_dyn(&d.config.model));
        map.insert("members".into(), Dynamic::from_array(self.members()));
        map.insert("total_steps".into(), Dynamic::from(d.result.steps as i64));
        map.insert("seconds".into(), Dynamic::from(d.result.seconds));
        Dynamic::from_map(map)
    }
}

/// The experiment `train` runs: the train options set on `base`, seeds, backend.
fn experiment(st: &State, base: &ExperimentConfig, opts: &Map) -> Result<ExperimentConfig, String> {
    let train: TrainConfig = overlay(&base.train, "train", opts, &train_keys(), &EXTRA_KEYS)?;
    let seeds = match opts.get("seeds") {
        Some(v) => seeds_of(v)?,
        None => base.seeds.clone(),
    };
    let backend = match opts.get("backend") {
        Some(v) => string_of("backend", v)?,
        None => st.ctx.backend.clone(),
    };
    let cfg = ExperimentConfig { task: base.task.clone(), model: base.model.clone(), train, seeds, backend, threads: st.ctx.threads };
    cfg.validate(&st.ctx.registry).map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn name_of(opts: &Map, default: &str) -> Result<String, String> {
    let name = match opts.get("name") {
        Some(v) => string_of("name", v)?,
        None => default.to_string(),
    };
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(format!("name \"{name}\" must be a plain folder name (no `/`)"));
    }
    Ok(name)
}

/// Train `cfg` into a fresh folder `name` under the out folder.
fn run(ctx: &NativeCallContext, st: &State, cfg: ExperimentConfig, name: String) -> Res<TrainResult> {
    if let Some(why) = st.stop_reason() {
        return Err(stopped(ctx, why));
    }
    let registry = &st.ctx.registry;
    let dir = fresh_dir(&st.ctx.out_dir, &name);
    let mut backend = registry.backend(&cfg.backend).map_err(|e| fail(ctx, e))?;
    let provenance = st.provenance(backend.name(), cfg.seeds.clone());
    let pb = st.progress_bar(cfg.train.max_steps as u64, "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}");
    let mut stop = None;
    let mut lines = st.progress_lines();
    let outcome = run_train(
        &cfg,
        &dir,
        backend.as_mut(),
        registry,
        &provenance,
        &mut observe(|e| {
            if let Event::Evaluated { step, max_steps, finished, members, best_accuracy, .. } = e {
                if let Some(line) = lines.as_mut().and_then(|l| l.line(&name, step, max_steps, finished, members, best_accuracy)) {
                    st.progress(&line);
                }
                pb.set_position(step as u64);
                pb.set_message(format!("{name}: {finished}/{members} done"));
                stop = st.stop_reason();
            }
            stop.is_none()
        }),
    );
    pb.finish_and_clear();
    if dir.exists() {
        st.record(&dir);
    }
    let result = outcome.map_err(|e| fail(ctx, format!("{name}: {e}")))?.result;
    if let Some(why) = stop {
        return Err(stopped(ctx, format!("{why} at step {} of training {name}; the run so far is in {}", result.steps, dir.display())));
    }
    let learned = result.members.iter().filter(|m| m.learned).count();
    st.say(
        &format!("trained {name}: {learned}/{} members learned, {} steps, {:.1} s -> {}", result.members.len(), result.steps, result.seconds, dir.display()),
        true,
    );
    Ok(TrainResult(Arc::new(TrainData { name, dir, config: cfg, result })))
}

/// `train(task, model, opts)`.
fn from_parts(ctx: &NativeCallContext, st: &State, task: &TaskHandle, model: &ModelHandle, opts: &Map) -> Res<TrainResult> {
    let base = ExperimentConfig {
        task: (*task.0).clone(),
        model: (*model.0).clone(),
        train: TrainConfig::default(),
        seeds: vec![0],
        backend: String::new(),
        threads: None,
    };
    let name = format!("train-{}-T{}", task.0.kind, task.0.t);
    from_config(ctx, st, &ExperimentHandle { cfg: Arc::new(base), name: name.into() }, opts)
}

/// `train(experiment, opts)`: the options set on the experiment, trained into a folder named
/// `opts.name` or the experiment's name.
fn from_config(ctx: &NativeCallContext, st: &State, exp: &ExperimentHandle, opts: &Map) -> Res<TrainResult> {
    let (cfg, name) = experiment(st, &exp.cfg, opts).and_then(|c| Ok((c, name_of(opts, &exp.name)?))).map_err(|e| fail(ctx, e))?;
    run(ctx, st, cfg, name)
}

pub(super) fn register(a: &mut Api) {
    a.group("Training");
    a.ty::<TrainResult>("TrainResult", "a finished training run: per-member outcomes, curves, attention, and its results folder");
    a.ty::<ExperimentHandle>("Experiment", "an experiment config loaded from YAML with `load_config`, trainable with `train(exp)`");
    a.display::<TrainResult>(|r| {
        let n = r.0.result.members.len();
        let k = r.0.result.members.iter().filter(|m| m.learned).count();
        format!("TrainResult({}: {k}/{n} learned, {})", r.0.name, r.0.dir.display())
    });
    a.display::<ExperimentHandle>(|e| {
        format!("Experiment({}: {} T={} s={}, {} seeds)", e.name, e.cfg.task.kind, e.cfg.task.t, e.cfg.task.s, e.cfg.seeds.len())
    });
    let st = a.st.clone();
    a.func(
        "train",
        "train(task: Task, model: Model, options: map) -> TrainResult",
        "Train an ensemble (one member per seed) and write its folder (config.yaml, metrics.csv, summary.json) under the out folder; options: any train key, `seeds` (array or count), `name` (folder), `backend`.",
        move |ctx: NativeCallContext, task: TaskHandle, model: ModelHandle, opts: Map| from_parts(&ctx, &st, &task, &model, &opts),
    );
    let st = a.st.clone();
    a.func(
        "train",
        "train(task: Task, model: Model) -> TrainResult",
        "`train(task, model, #{})`: one seed (0), every train default.",
        move |ctx: NativeCallContext, task: TaskHandle, model: ModelHandle| from_parts(&ctx, &st, &task, &model, &Map::new()),
    );
    let st = a.st.clone();
    a.func(
        "train",
        "train(experiment: Experiment, options: map) -> TrainResult",
        "Train a loaded config with some train keys, `seeds`, `name` or `backend` overridden.",
        move |ctx: NativeCallContext, exp: ExperimentHandle, opts: Map| from_config(&ctx, &st, &exp, &opts),
    );
    let st = a.st.clone();
    a.func(
        "train",
        "train(experiment: Experiment) -> TrainResult",
        "Train a loaded config as it is (on the script's backend).",
        move |ctx: NativeCallContext, exp: ExperimentHandle| from_config(&ctx, &st, &exp, &Map::new()),
    );
    a.prop("learned", "TrainResult.learned -> array", "Per member: whether it reached the target accuracy.", |r: &mut TrainResult| -> Array {
        r.0.result.members.iter().map(|m| Dynamic::from(m.learned)).collect()
    });
    a.prop(
        "members",
        "TrainResult.members -> array",
        "Per member a map: seed, learned, diverged, step, steps_trained, test_accuracy, test_loss, train_loss, S, mass_on_S (per head, last layer), mass_on_S_by_layer, best_head, best_mass_on_S, top_s_equals_S, variable_step.",
        |r: &mut TrainResult| r.members(),
    );
    a.prop(
        "curves",
        "TrainResult.curves -> array",
        "Every evaluation of every member: maps of member, seed, step, train_loss, test_loss, test_accuracy, best_mass_on_s.",
        |r: &mut TrainResult| to_dyn(&r.0.result.curves),
    );
    a.prop(
        "attention",
        "TrainResult.attention -> array",
        "Per member the CLS attention averaged over its test set, [layer][head][position] (position 0 is CLS, bit i is i + 1), or () for an MLP.",
        |r: &mut TrainResult| -> Array { r.0.result.members.iter().map(|m| m.attention.as_ref().map_or(Dynamic::UNIT, |a| to_dyn(&a.weights))).collect() },
    );
    a.prop("dir", "TrainResult.dir -> string", "The run's results folder.", |r: &mut TrainResult| r.0.dir.display().to_string());
    a.prop("name", "TrainResult.name -> string", "The run's name (its folder's name before numbering).", |r: &mut TrainResult| r.0.name.clone());
    a.prop("seconds", "TrainResult.seconds -> float", "Wall time of the training.", |r: &mut TrainResult| r.0.result.seconds);
    a.prop(
        "total_steps",
        "TrainResult.total_steps -> int",
        "Steps the ensemble trained (until every member finished or the budget ran out).",
        |r: &mut TrainResult| r.0.result.steps as i64,
    );
    a.prop("task", "TrainResult.task -> Task", "The task it trained on.", |r: &mut TrainResult| TaskHandle(Arc::new(r.0.config.task.clone())));
    a.prop("model", "TrainResult.model -> Model", "The model it trained.", |r: &mut TrainResult| ModelHandle(Arc::new(r.0.config.model.clone())));
    a.prop("train", "TrainResult.train -> map", "The train settings, every default written out.", |r: &mut TrainResult| to_dyn(&r.0.config.train));
    a.func("all_learned", "TrainResult.all_learned() -> bool", "Whether every member learned.", |r: &mut TrainResult| {
        r.0.result.members.iter().all(|m| m.learned)
    });
    a.func("num_learned", "TrainResult.num_learned() -> int", "How many members learned.", |r: &mut TrainResult| {
        r.0.result.members.iter().filter(|m| m.learned).count() as i64
    });
    a.func("steps", "TrainResult.steps() -> array", "Per member the step at which it learned, or ().", |r: &mut TrainResult| -> Array {
        r.0.result.members.iter().map(|m| to_dyn(&m.step)).collect()
    });
    a.func(
        "variable_steps",
        "TrainResult.variable_steps() -> array",
        "Per member the first evaluation step at which its best head put more than half its attention on S (the variable is created), or ().",
        |r: &mut TrainResult| -> Array { (0..r.0.result.members.len()).map(|i| to_dyn(&variable_step(&r.0.result, i))).collect() },
    );
    a.prop("task", "Experiment.task -> Task", "The config's task.", |e: &mut ExperimentHandle| TaskHandle(Arc::new(e.cfg.task.clone())));
    a.prop("model", "Experiment.model -> Model", "The config's model.", |e: &mut ExperimentHandle| ModelHandle(Arc::new(e.cfg.model.clone())));
    a.prop("train", "Experiment.train -> map", "The config's train section, defaults written out.", |e: &mut ExperimentHandle| to_dyn(&e.cfg.train));
    a.prop("seeds", "Experiment.seeds -> array", "The config's seeds.", |e: &mut ExperimentHandle| to_dyn(&e.cfg.seeds));
    let mut keys = code(fields(&TrainConfig::default()));
    keys.push(("seeds".into(), "`[0]`; an array of seeds, or a count n for `[0, …, n-1]`".into()));
    keys.push(("name".into(), "`\"train-<kind>-T<T>\"` (the results folder, numbered if taken)".into()));
    keys.push(("backend".into(), "the script's backend".into()));
    a.keys("Train options", "Keys of the options map of `train` (and the training keys of `sweep`), with their defaults.", keys);
}
