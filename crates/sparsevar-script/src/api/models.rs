//! Models: `transformer(#{..})`, `mlp(#{..})`, `attention("name")`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_core::model::{MlpConfig, ModelSpec, TransformerConfig};
use sparsevar_core::task::TaskSpec;
use sparsevar_experiment::config::{ExperimentConfig, TrainConfig};

use super::{Api, Res, code, fail, fields, overlay, to_dyn};
use crate::engine::State;

/// A model description (a `ModelSpec`).
#[derive(Clone, Debug)]
pub(crate) struct ModelHandle(pub Arc<ModelSpec>);

/// A registered attention variant, by name.
#[derive(Clone, Debug)]
pub(crate) struct AttentionHandle(pub Arc<str>);

/// Check what a model alone can be checked for (attention known, sizes, divisibility), with
/// the experiment's own validation so the messages are the config's.
pub(crate) fn validate_model(st: &State, model: &ModelSpec) -> Result<(), String> {
    let probe = ExperimentConfig {
        task: TaskSpec::new("sparse_parity", 1, 1),
        model: model.clone(),
        train: TrainConfig::default(),
        seeds: vec![0],
        backend: st.ctx.backend.clone(),
        threads: None,
    };
    probe.validate(&st.ctx.registry).map_err(|e| e.to_string())
}

/// "transformer" or "mlp".
pub(crate) fn kind_name(spec: &ModelSpec) -> String {
    match spec {
        ModelSpec::Transformer(_) => "transformer".into(),
        ModelSpec::Mlp(_) => "mlp".into(),
    }
}

fn keys<T: serde::Serialize + Default>() -> Vec<String> {
    fields(&T::default()).into_iter().map(|f| f.0).collect()
}

/// `opts` with an `attention` handle turned into its name.
fn with_attention_names(opts: &Map) -> Map {
    opts.iter()
        .map(|(k, v)| {
            let v = match v.read_lock::<AttentionHandle>() {
                Some(a) => Dynamic::from(a.0.to_string()),
                None => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn transformer(st: &State, base: &TransformerConfig, opts: &Map) -> Result<ModelHandle, String> {
    let cfg: TransformerConfig = overlay(base, "model", &with_attention_names(opts), &keys::<TransformerConfig>(), &[])?;
    let spec = ModelSpec::Transformer(cfg);
    validate_model(st, &spec)?;
    Ok(ModelHandle(Arc::new(spec)))
}

fn mlp(st: &State, base: &MlpConfig, opts: &Map) -> Result<ModelHandle, String> {
    let cfg: MlpConfig = overlay(base, "mlp model", opts, &keys::<MlpConfig>(), &[])?;
    let spec = ModelSpec::Mlp(cfg);
    validate_model(st, &spec)?;
    Ok(ModelHandle(Arc::new(spec)))
}

fn names(list: Vec<&str>) -> Array {
    list.into_iter().map(|s| Dynamic::from(s.to_string())).collect()
}

pub(super) fn register(a: &mut Api) {
    a.group("Models");
    a.ty::<ModelHandle>("Model", "a model: a transformer or an MLP with its options");
    a.ty::<AttentionHandle>("Attention", "a registered attention variant (softmax, relu, …, or a plugin's), usable as `transformer(#{attention: a})`");
    a.display::<ModelHandle>(|m| match &*m.0 {
        ModelSpec::Transformer(c) => {
            format!("transformer(layers={}, d_model={}, heads={}, mlp={}, attention={})", c.layers, c.d_model, c.heads, c.mlp, c.attention)
        }
        ModelSpec::Mlp(c) => format!("mlp(depth={}, width={})", c.depth, c.width),
    });
    a.display::<AttentionHandle>(|x| x.0.to_string());
    let st = a.st.clone();
    a.func(
        "transformer",
        "transformer() -> Model",
        "The paper's one-layer transformer (paper1l): 1 layer, d_model 64, 4 heads, softmax.",
        move |ctx: NativeCallContext| -> Res<ModelHandle> { transformer(&st, &TransformerConfig::default(), &Map::new()).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func(
        "transformer",
        "transformer(options: map) -> Model",
        "A transformer; every option is optional and defaults to paper1l (see Transformer options). Unknown keys are errors.",
        move |ctx: NativeCallContext, opts: Map| -> Res<ModelHandle> { transformer(&st, &TransformerConfig::default(), &opts).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func("mlp", "mlp() -> Model", "The fully connected baseline: 2 hidden layers of 256.", move |ctx: NativeCallContext| -> Res<ModelHandle> {
        mlp(&st, &MlpConfig::default(), &Map::new()).map_err(|e| fail(&ctx, e))
    });
    let st = a.st.clone();
    a.func(
        "mlp",
        "mlp(options: map) -> Model",
        "A fully connected network on the ±1 bits: options depth, width.",
        move |ctx: NativeCallContext, opts: Map| -> Res<ModelHandle> { mlp(&st, &MlpConfig::default(), &opts).map_err(|e| fail(&ctx, e)) },
    );
    let st = a.st.clone();
    a.func(
        "attention",
        "attention(name: string) -> Attention",
        "A registered attention variant by name; unknown names list the known ones.",
        move |ctx: NativeCallContext, name: &str| -> Res<AttentionHandle> {
            st.ctx.registry.attention(name).map_err(|e| fail(&ctx, e))?;
            Ok(AttentionHandle(name.into()))
        },
    );
    let st = a.st.clone();
    a.func(
        "with_options",
        "Model.with_options(options: map) -> Model",
        "A copy with some options changed, e.g. `m.with_options(#{attention: \"relu\"})`.",
        move |ctx: NativeCallContext, m: &mut ModelHandle, opts: Map| -> Res<ModelHandle> {
            match &*m.0 {
                ModelSpec::Transformer(c) => transformer(&st, c, &opts),
                ModelSpec::Mlp(c) => mlp(&st, c, &opts),
            }
            .map_err(|e| fail(&ctx, e))
        },
    );
    a.prop("kind", "Model.kind -> string", "\"transformer\" or \"mlp\".", |m: &mut ModelHandle| kind_name(&m.0));
    a.prop("attention", "Model.attention -> string or ()", "The attention variant (transformers only).", |m: &mut ModelHandle| match &*m.0 {
        ModelSpec::Transformer(c) => Dynamic::from(c.attention.clone()),
        ModelSpec::Mlp(_) => Dynamic::UNIT,
    });
    a.prop("options", "Model.options -> map", "Every option with its value (defaults written out).", |m: &mut ModelHandle| to_dyn(&*m.0));
    a.prop("name", "Attention.name -> string", "The variant's registered name.", |x: &mut AttentionHandle| x.0.to_string());
    let st = a.st.clone();
    a.func("list_tasks", "list_tasks() -> array", "Every registered task name (built-in and plugin).", move || names(st.ctx.registry.task_names()));
    let st = a.st.clone();
    a.func("list_attention", "list_attention() -> array", "Every registered attention variant.", move || names(st.ctx.registry.attention_names()));
    let st = a.st.clone();
    a.func("list_backends", "list_backends() -> array", "Every registered backend.", move || names(st.ctx.registry.backend_names()));
    a.keys(
        "Transformer options",
        "Keys of `transformer(#{..})` with their defaults (paper1l). `mlp` is the MLP width multiplier (0: no MLP).",
        code(fields(&TransformerConfig::default())),
    );
    a.keys("MLP options", "Keys of `mlp(#{..})` with their defaults.", code(fields(&MlpConfig::default())));
}
