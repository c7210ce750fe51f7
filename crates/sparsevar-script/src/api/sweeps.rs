//! Sweeps: `sweep(#{task, models, T, m, seeds, …})` → m*(T) per model, intervals, fits and
//! baselines, with the sweep's folder (config.yaml, runs.csv, summary.json) written as it goes.

use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_experiment::config::TrainConfig;
use sparsevar_experiment::results::fresh_dir;
use sparsevar_experiment::sweep::{ModelSummary, RunRow, SweepConfig, SweepSection, SweepSummary, run_sweep};
use sparsevar_experiment::workflow::{Event, RunError, observe, waiting_line};

use super::training::config_keys;
use super::{Api, ModelHandle, Res, TaskHandle, code, fail, fields, overlay, stopped, string_of, to_dyn, unknown_key};
use crate::engine::State;

/// A loaded sweep config (`load_config` of a sweep YAML), runnable with `sweep(plan)`.
#[derive(Clone, Debug)]
pub(crate) struct SweepPlan {
    pub cfg: Arc<SweepConfig>,
    pub name: Arc<str>,
}

/// What one `sweep` call produced.
#[derive(Debug)]
pub(crate) struct SweepData {
    pub name: String,
    pub dir: PathBuf,
    pub cfg: SweepConfig,
    pub summary: SweepSummary,
    pub runs: Vec<RunRow>,
}

/// A finished sweep.
#[derive(Clone, Debug)]
pub(crate) struct SweepResult(pub Arc<SweepData>);

/// Keys of `sweep(#{..})` that are neither sweep-section nor train keys.
const OWN_KEYS: [&str; 5] = ["task", "models", "model", "name", "backend"];

fn default_section() -> SweepSection {
    serde_yaml::from_str("T: []").expect("the sweep section's defaults parse")
}

/// The sweep section's keys: those its defaults write, then the optional ones they leave out
/// (learner, k, validation, budgets).
fn section_keys() -> Vec<String> {
    let mut k: Vec<String> = fields(&default_section()).into_iter().map(|f| f.0).collect();
    for x in sparsevar_experiment::reference::section_keys::<SweepSection>() {
        if !k.contains(&x) {
            k.push(x);
        }
    }
    k
}

fn all_keys() -> Vec<String> {
    let mut k: Vec<String> = OWN_KEYS.map(String::from).to_vec();
    k.extend(section_keys());
    k.extend(config_keys());
    k
}

/// The sweep `opts` describes, on top of `base` (a loaded plan) when given.
fn sweep_config(st: &State, base: Option<&SweepConfig>, opts: &Map) -> Result<SweepConfig, String> {
    let valid = all_keys();
    if let Some(k) = opts.keys().find(|k| !valid.iter().any(|v| v == k.as_str())) {
        return Err(unknown_key("sweep", k, &valid));
    }
    let task = match opts.get("task") {
        Some(v) => v
            .read_lock::<TaskHandle>()
            .map(|t| (*t.0).clone())
            .ok_or_else(|| format!("sweep key `task` must be a Task, e.g. sparse_parity(8, 2) (got {})", v.type_name()))?,
        None => base.map(|b| b.task.clone()).ok_or("sweep needs `task`, e.g. task: sparse_parity(8, 2) (its T comes from the sweep's `T`)")?,
    };
    let model_of = |name: &str, v: &Dynamic| {
        v.read_lock::<ModelHandle>()
            .map(|m| (*m.0).clone())
            .ok_or_else(|| format!("sweep model `{name}` must be a Model, e.g. transformer() (got {})", v.type_name()))
    };
    let models = match (opts.get("models"), opts.get("model")) {
        (Some(_), Some(_)) => return Err("give sweep either `models` (a map of name to model) or `model`, not both".into()),
        (Some(v), None) => {
            let map = v.read_lock::<Map>().ok_or("sweep key `models` must be a map from a name to a model, e.g. #{attention: transformer(), mlp: mlp()}")?;
            if map.is_empty() {
                return Err("sweep key `models` is empty: name at least one model".into());
            }
            map.iter().map(|(k, v)| Ok((k.to_string(), model_of(k, v)?))).collect::<Result<Vec<_>, String>>()?
        }
        (None, Some(v)) => {
            let m = model_of("model", v)?;
            vec![(super::models::kind_name(&m), m)]
        }
        (None, None) => base.map(|b| b.models.clone()).ok_or("sweep needs `models` (a map of name to model) or `model`")?,
    };
    let pick = |keys: &[String]| -> Map { opts.iter().filter(|(k, _)| keys.iter().any(|x| x == k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect() };
    let section_base = base.map_or_else(default_section, |b| b.sweep.clone());
    let sk = section_keys();
    let sweep: SweepSection = overlay(&section_base, "sweep", &pick(&sk), &sk, &[])?;
    let tk = config_keys();
    let train: TrainConfig = overlay(base.map_or(&TrainConfig::default(), |b| &b.train), "train", &pick(&tk), &tk, &[])?;
    let backend = match opts.get("backend") {
        Some(v) => string_of("backend", v)?,
        None => st.ctx.backend.clone(),
    };
    let cfg = SweepConfig { task, models, train, sweep, backend, threads: st.ctx.threads, slurm: Vec::new() };
    cfg.validate(&st.ctx.registry).map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn run(ctx: &NativeCallContext, st: &State, cfg: SweepConfig, name: String) -> Res<SweepResult> {
    if let Some(why) = st.stop_reason() {
        return Err(stopped(ctx, why));
    }
    let registry = &st.ctx.registry;
    // Under --resume a sweep continues the folder of its name; otherwise a fresh one.
    let resume = st.ctx.resume;
    let dir = if resume { st.ctx.out_dir.join(&name) } else { fresh_dir(&st.ctx.out_dir, &name) };
    let backend_name = registry.backend(&cfg.backend).map_err(|e| fail(ctx, e))?.name();
    let provenance = st.provenance(backend_name, cfg.sweep.seeds.clone());
    let pb = st.progress_bar(cfg.train.max_steps as u64, "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}");
    let mut stop = None;
    let mut make = || registry.backend(&cfg.backend).map_err(|e| e.to_string());
    let mut lines = st.progress_lines();
    let mut context = name.clone();
    let mut observer = observe(|e| {
        match e {
            Event::Ensemble { model, t, members, done, total } => {
                context = format!("{name}: {model} T={t} ({done}/{total} units done)");
                pb.set_position(0);
                pb.set_message(format!("{name}: {model} T={t}, {members} members ({done}/{total} units done)"));
                if pb.is_hidden() {
                    st.say(&format!("  {name}: {model} T={t}: training {members} members ({done}/{total} units done)"), true);
                }
            }
            Event::Evaluated { step, max_steps, finished, members, best_accuracy, .. } => {
                if let Some(line) = lines.as_mut().and_then(|l| l.line(&context, step, max_steps, finished, members, best_accuracy)) {
                    st.progress(&line);
                }
                pb.set_position(step as u64)
            }
            Event::Refine { model, t, m } => st.say(&format!("  {name}: {model} T={t}: refining at m={m}"), true),
            Event::Waiting { holders } => st.say(&format!("  {name}: {}", waiting_line(holders)), true),
            Event::Started { .. } => {}
        }
        // A stop request takes effect before the next ensemble.
        if matches!(e, Event::Ensemble { .. } | Event::Refine { .. }) {
            stop = st.stop_reason();
        }
        stop.is_none()
    });
    let outcome = run_sweep(&cfg, &dir, resume, registry, &mut make, &provenance, &mut observer);
    drop(observer);
    pb.finish_and_clear();
    if dir.exists() {
        st.record(&dir);
    }
    let (summary, runs) = match outcome {
        Ok(o) => (o.summary, o.runs),
        // A folder refused before training holds nothing of this run to point at.
        Err(e @ (RunError::SweepExists(_) | RunError::OtherConfig(_) | RunError::NoPlan(_))) => return Err(fail(ctx, format!("sweep {name}: {e}"))),
        Err(e) => {
            let kept = format!("the finished ensembles are in {}; `sparsevar run … --resume` continues from there", dir.join("runs.csv").display());
            return Err(match stop {
                Some(why) => stopped(ctx, format!("{why} during sweep {name}; {kept}")),
                None => fail(ctx, format!("sweep {name}: {e}; {kept}")),
            });
        }
    };
    for m in &summary.models {
        if cfg.train.online {
            let steps: Vec<String> = m
                .points
                .iter()
                .map(|p| {
                    let (k, n) = p.online.as_ref().map_or((0, 0), |o| (o.learned, o.seeds));
                    format!("T={}: {} ({k}/{n} learned)", p.t, p.median_steps_to_learn.map_or("none".into(), |x| format!("{x:.0}")))
                })
                .collect();
            st.say(&format!("swept {name}/{}: median steps to learn {}", m.model, steps.join(", ")), true);
        } else {
            let stars: Vec<String> = m.points.iter().map(|p| format!("T={}: {}", p.t, p.m_star.map_or("none".into(), |x| x.to_string()))).collect();
            st.say(&format!("swept {name}/{}: m* {}", m.model, stars.join(", ")), true);
        }
    }
    for f in &summary.faulted {
        st.say(&format!("warning: sweep {name}: {} T={} m={} seed {} faulted and is left out of m*: {}", f.model, f.t, f.m, f.seed, f.fault), true);
    }
    Ok(SweepResult(Arc::new(SweepData { name, dir, cfg, summary, runs })))
}

/// The (T, value) pairs of `fit_scaling`: T positive integers, values positive numbers or ()
/// (left out), the two arrays of one length.
fn fit_points(ts: &Array, values: &Array) -> Result<Vec<(usize, f64)>, String> {
    if ts.len() != values.len() {
        return Err(format!("fit_scaling: T has {} entries but values has {}; give one value per T (() where there is none)", ts.len(), values.len()));
    }
    let mut out = Vec::new();
    for (i, (t, v)) in ts.iter().zip(values).enumerate() {
        let t = t.as_int().ok().filter(|t| *t >= 1).ok_or_else(|| format!("fit_scaling: T[{i}] = {t} must be a positive integer"))?;
        if v.is_unit() {
            continue;
        }
        let x = v.as_float().or_else(|_| v.as_int().map(|x| x as f64)).map_err(|_| format!("fit_scaling: values[{i}] = {v} must be a number or ()"))?;
        if !(x > 0.0 && x.is_finite()) {
            return Err(format!("fit_scaling: values[{i}] = {x} must be a positive number (the power law is fitted in log space)"));
        }
        out.push((t as usize, x));
    }
    Ok(out)
}

/// A per-model map of one value per T.
fn per_model(r: &SweepResult, f: impl Fn(&ModelSummary) -> Dynamic) -> Map {
    r.0.summary.models.iter().map(|m| (m.model.as_str().into(), f(m))).collect()
}

pub(super) fn register(a: &mut Api) {
    a.group("Sweeps");
    a.ty::<SweepResult>("SweepResult", "a finished sample-complexity sweep: m*(T) per model with intervals, fits, baselines, and its results folder");
    a.ty::<SweepPlan>("SweepPlan", "a sweep config loaded from YAML with `load_config`, runnable with `sweep(plan)`");
    a.display::<SweepResult>(|r| {
        format!(
            "SweepResult({}: models {:?}, T {:?}, {})",
            r.0.name,
            r.0.summary.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>(),
            r.0.cfg.sweep.t,
            r.0.dir.display()
        )
    });
    a.display::<SweepPlan>(|p| format!("SweepPlan({}: T {:?})", p.name, p.cfg.sweep.t));
    let st = a.st.clone();
    a.func(
        "sweep",
        "sweep(options: map) -> SweepResult",
        "Find m*(T), the smallest training-set size that learns, per model and T; keys: task, models (or model), T, m (array or #{from, to, factor}), seeds, baselines, name, any sweep or train key (see Sweep options).",
        move |ctx: NativeCallContext, opts: Map| -> Res<SweepResult> {
            let cfg = sweep_config(&st, None, &opts).map_err(|e| fail(&ctx, e))?;
            let name = opts.get("name").map_or(Ok("sweep".to_string()), |v| string_of("name", v)).map_err(|e| fail(&ctx, e))?;
            run(&ctx, &st, cfg, name)
        },
    );
    let st = a.st.clone();
    a.func(
        "sweep",
        "sweep(plan: SweepPlan) -> SweepResult",
        "Run a loaded sweep config as it is (on the script's backend).",
        move |ctx: NativeCallContext, plan: SweepPlan| -> Res<SweepResult> {
            let cfg = sweep_config(&st, Some(&plan.cfg), &Map::new()).map_err(|e| fail(&ctx, e))?;
            run(&ctx, &st, cfg, plan.name.to_string())
        },
    );
    let st = a.st.clone();
    a.func(
        "sweep",
        "sweep(plan: SweepPlan, options: map) -> SweepResult",
        "Run a loaded sweep config with some keys overridden, e.g. `sweep(plan, #{T: [8, 16], max_steps: 2000})`.",
        move |ctx: NativeCallContext, plan: SweepPlan, opts: Map| -> Res<SweepResult> {
            let cfg = sweep_config(&st, Some(&plan.cfg), &opts).map_err(|e| fail(&ctx, e))?;
            let name = opts.get("name").map_or(Ok(plan.name.to_string()), |v| string_of("name", v)).map_err(|e| fail(&ctx, e))?;
            run(&ctx, &st, cfg, name)
        },
    );
    a.prop("T", "SweepResult.T -> array", "The input lengths, in the order swept.", |r: &mut SweepResult| to_dyn(&r.0.cfg.sweep.t));
    a.prop("models", "SweepResult.models -> array", "The model names, in the order given.", |r: &mut SweepResult| -> Array {
        r.0.summary.models.iter().map(|m| Dynamic::from(m.model.clone())).collect()
    });
    a.prop("m_star", "SweepResult.m_star -> map", "Per model, m* for each T (aligned with `T`), () where no m in the grid learned.", |r: &mut SweepResult| {
        per_model(r, |m| Dynamic::from_array(m.points.iter().map(|p| to_dyn(&p.m_star)).collect()))
    });
    a.prop("m_below", "SweepResult.m_below -> map", "Per model, the largest failing m below m* for each T (the bracket), or ().", |r: &mut SweepResult| {
        per_model(r, |m| Dynamic::from_array(m.points.iter().map(|p| to_dyn(&p.m_below)).collect()))
    });
    a.prop(
        "intervals",
        "SweepResult.intervals -> map",
        "Per model, for each T the cells over m: maps of m, learned, seeds, rate, wilson_low, wilson_high (95% Wilson interval), success, median_step.",
        |r: &mut SweepResult| per_model(r, |m| Dynamic::from_array(m.points.iter().map(|p| to_dyn(&p.cells)).collect())),
    );
    a.prop(
        "median_steps",
        "SweepResult.median_steps -> map",
        "Online sweeps: per model, for each T the median steps to learn, or ().",
        |r: &mut SweepResult| per_model(r, |m| Dynamic::from_array(m.points.iter().map(|p| to_dyn(&p.median_steps_to_learn)).collect())),
    );
    a.prop(
        "learners",
        "SweepResult.learners -> map",
        "A learner's sweep (learner: best_of_k or min_norm): per model, a map from each learner its restarts allow (majority, best_of_k, min_norm) to m* for each T (aligned with `T`, () where none), all from the same restarts; an empty map per model otherwise.",
        |r: &mut SweepResult| {
            per_model(r, |m| {
                let mut by: Map = Map::new();
                for (i, p) in m.points.iter().enumerate() {
                    for l in &p.learners {
                        let key = to_dyn(&l.learner).into_string().unwrap_or_default();
                        let column = by.entry(key.into()).or_insert_with(|| Dynamic::from_array(vec![Dynamic::UNIT; m.points.len()]));
                        if let Some(mut a) = column.write_lock::<Array>() {
                            a[i] = to_dyn(&l.m_star);
                        }
                    }
                }
                Dynamic::from_map(by)
            })
        },
    );
    a.prop(
        "budgets",
        "SweepResult.budgets -> map",
        "With sweep.budgets: per model, for each T a map of budgets (an array of #{budget, m_star}) and stable (whether the last doubling left m* where it was; () with one budget).",
        |r: &mut SweepResult| {
            per_model(r, |m| {
                Dynamic::from_array(
                    m.points
                        .iter()
                        .map(|p| {
                            let mut x = Map::new();
                            x.insert("budgets".into(), to_dyn(&p.budgets));
                            x.insert("stable".into(), to_dyn(&p.stable));
                            Dynamic::from_map(x)
                        })
                        .collect(),
                )
            })
        },
    );
    a.prop(
        "iid",
        "SweepResult.iid -> map",
        "Online sweeps (the i.i.d. regime): per model, for each T #{learned, seeds, median_samples_seen, per_seed: [#{seed, step, samples_seen, steps_trained}]} (step () where the seed did not learn), or () in a fixed-m sweep.",
        |r: &mut SweepResult| per_model(r, |m| Dynamic::from_array(m.points.iter().map(|p| to_dyn(&p.online)).collect())),
    );
    a.prop(
        "fits",
        "SweepResult.fits -> map",
        "Per model the fits of m*(T): #{log: #{a, b, r2}, power: #{a, b, r2}, ratio, verdict, points}, or () with fewer than two m*; with two points the r2 are NaN and the verdict gives the two-point exponent only.",
        |r: &mut SweepResult| per_model(r, |m| to_dyn(&m.fit)),
    );
    a.prop(
        "baselines",
        "SweepResult.baselines -> array",
        "Per T: info_floor (log2 C(T, s)), gf2_m_star, subset_search_m_star, subset_search_skipped.",
        |r: &mut SweepResult| to_dyn(&r.0.summary.baselines),
    );
    a.prop(
        "runs",
        "SweepResult.runs -> array",
        "Every member trained: maps of model, variant, t, m, seed, learned, step, test_accuracy, mass_on_s, variable_step, ….",
        |r: &mut SweepResult| to_dyn(&r.0.runs),
    );
    a.prop(
        "faulted",
        "SweepResult.faulted -> array",
        "Members whose (plugin) task faulted, left out of m*: maps of model, T, m, seed, fault (plugin file, call, message).",
        |r: &mut SweepResult| to_dyn(&r.0.summary.faulted),
    );
    a.prop("summary", "SweepResult.summary -> map", "The whole summary (as in summary.json).", |r: &mut SweepResult| to_dyn(&r.0.summary));
    a.prop("success_rule", "SweepResult.success_rule -> string", "When a (T, m) cell counts as learned.", |r: &mut SweepResult| {
        r.0.summary.success_rule.clone()
    });
    a.prop("dir", "SweepResult.dir -> string", "The sweep's results folder.", |r: &mut SweepResult| r.0.dir.display().to_string());
    a.prop("name", "SweepResult.name -> string", "The sweep's name.", |r: &mut SweepResult| r.0.name.clone());
    a.prop("seconds", "SweepResult.seconds -> float", "Wall time of the sweep.", |r: &mut SweepResult| r.0.summary.seconds);
    a.func(
        "m_star_at",
        "SweepResult.m_star_at(model: string, T: int) -> int or ()",
        "m* of one model at one T.",
        |ctx: NativeCallContext, r: &mut SweepResult, model: &str, t: i64| -> Res<Dynamic> {
            let m = r.0.summary.models.iter().find(|m| m.model == model).ok_or_else(|| {
                fail(
                    &ctx,
                    format!("no model `{model}` in this sweep; it has: {}", r.0.summary.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>().join(", ")),
                )
            })?;
            let p = m.points.iter().find(|p| p.t as i64 == t).ok_or_else(|| fail(&ctx, format!("T = {t} was not swept; T: {:?}", r.0.cfg.sweep.t)))?;
            Ok(to_dyn(&p.m_star))
        },
    );
    a.func(
        "fit_scaling",
        "fit_scaling(T: array, values: array) -> map or ()",
        "Fit values(T) two ways, as sweeps fit m*: #{log: #{a, b, r2} (a + b·ln T), power: #{a, b, r2} (a·T^b), ratio (value at the largest T over the smallest), verdict, points (how many were fitted)}; pairs whose value is () are left out; () with fewer than two left; with two, both laws pass exactly: the r2 are NaN and the verdict gives the two-point exponent only.",
        |ctx: NativeCallContext, ts: Array, values: Array| -> Res<Dynamic> {
            let points = fit_points(&ts, &values).map_err(|e| fail(&ctx, e))?;
            Ok(to_dyn(&sparsevar_experiment::fits::fit_scaling_of(&points, "value")))
        },
    );
    let mut keys = vec![("task".to_string(), "required: a Task (its T is replaced by each swept T)".to_string())];
    keys.push(("models".into(), "required (or `model`): a map from name to Model".into()));
    keys.push(("model".into(), "one Model, named after its kind (`transformer` or `mlp`)".into()));
    keys.push(("name".into(), "`\"sweep\"` (the results folder, numbered if taken)".into()));
    keys.push(("backend".into(), "the script's backend".into()));
    let defaults = code(fields(&default_section()));
    keys.extend(defaults.iter().cloned().map(|(k, v)| if k == "T" { (k, "required, e.g. `[8, 16, 32]`".into()) } else { (k, v) }));
    keys.extend(section_keys().into_iter().filter(|k| !defaults.iter().any(|d| d.0 == *k)).map(|k| {
        let d = if k == "learner" { "`\"majority\"`" } else { "none (optional; see the configuration reference)" };
        (k, d.to_string())
    }));
    a.keys(
        "Sweep options",
        "Keys of `sweep(#{..})` besides the train keys (any key of Train options is accepted too; `samples` is replaced by the m grid).",
        keys,
    );
}
