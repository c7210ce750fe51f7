//! Tasks: `sparse_parity(T, s)` … and `task("name", #{..})` for any registered task.

use std::sync::Arc;

use rhai::{Array, Dynamic, Map, NativeCallContext};
use sparsevar_core::task::TaskSpec;

use super::{Api, Res, code, count, fail, fields, overlay, to_dyn};
use crate::engine::State;

/// A task description (a `TaskSpec`): which function, T, s, and its options. S itself is
/// drawn per member seed unless `subset` or `subset_seed` fixes it.
#[derive(Clone, Debug)]
pub(crate) struct TaskHandle(pub Arc<TaskSpec>);

/// Keys `task(kind, #{..})` and `with` take (besides `kind` in `with`).
fn task_keys() -> Vec<String> {
    ["T", "s", "subset", "subset_seed", "bias", "noise", "table_seed", "params"].map(String::from).to_vec()
}

/// `spec` with `opts` set on it, validated by the registry (so plugin tasks check their
/// own parameters).
fn build(st: &State, base: &TaskSpec, opts: &Map, allow_kind: bool) -> Result<TaskSpec, String> {
    let mut valid = task_keys();
    if allow_kind {
        valid.insert(0, "kind".into());
    }
    let spec: TaskSpec = overlay(base, "task", opts, &valid, &[])?;
    st.ctx.registry.task(&spec, 0).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn shorthand(ctx: &NativeCallContext, st: &State, kind: &str, t: i64, s: i64) -> Res<TaskHandle> {
    let spec = (|| {
        let spec = TaskSpec::new(kind, count("T", t)?, count("s", s)?);
        st.ctx.registry.task(&spec, 0).map_err(|e| e.to_string())?;
        Ok::<_, String>(spec)
    })()
    .map_err(|e| fail(ctx, e))?;
    Ok(TaskHandle(Arc::new(spec)))
}

pub(super) fn register(a: &mut Api) {
    a.group("Tasks");
    a.ty::<TaskHandle>("Task", "a task: kind, T, s and options; S is drawn from each member's seed unless `subset` or `subset_seed` fixes it");
    a.display::<TaskHandle>(|t| {
        let s = &t.0;
        let subset = s.subset.as_ref().map(|v| format!(" S={v:?}")).unwrap_or_default();
        format!("{} T={} s={}{subset}", s.kind, s.t, s.s)
    });
    for (name, sig, doc) in [
        ("sparse_parity", "sparse_parity(T: int, s: int) -> Task", "The (T, s)-sparse parity: the XOR of the s bits in S."),
        ("sparse_majority", "sparse_majority(T: int, s: int) -> Task", "The majority of the s bits in S (s odd)."),
        ("sparse_and", "sparse_and(T: int, s: int) -> Task", "The AND of the s bits in S."),
        ("sparse_or", "sparse_or(T: int, s: int) -> Task", "The OR of the s bits in S."),
        ("junta", "junta(T: int, s: int) -> Task", "A random s-junta: a random truth table over the s bits in S (s ≤ 20)."),
    ] {
        let st = a.st.clone();
        a.func(name, sig, doc, move |ctx: NativeCallContext, t: i64, s: i64| shorthand(&ctx, &st, name, t, s));
    }
    let st = a.st.clone();
    a.func(
        "task",
        "task(kind: string, options: map) -> Task",
        "Any registered task, plugin tasks included; options: T, s, subset, subset_seed, bias, noise, table_seed, params (see Task options).",
        move |ctx: NativeCallContext, kind: &str, opts: Map| -> Res<TaskHandle> {
            if !st.ctx.registry.tasks.contains_key(kind) {
                return Err(fail(&ctx, format!("unknown task kind `{kind}`; known kinds: {}", st.ctx.registry.task_names().join(", "))));
            }
            for required in ["T", "s"] {
                if !opts.contains_key(required) {
                    return Err(fail(&ctx, format!("task(\"{kind}\", …) needs `{required}` in its options, e.g. #{{T: 16, s: 3}}")));
                }
            }
            let base = TaskSpec::new(kind, 1, 1);
            build(&st, &base, &opts, false).map(|s| TaskHandle(Arc::new(s))).map_err(|e| fail(&ctx, e))
        },
    );
    let st = a.st.clone();
    a.func(
        "with_options",
        "Task.with_options(options: map) -> Task",
        "A copy with some options changed, e.g. `t.with_options(#{T: 32, noise: 0.1})` (`with` is reserved in Rhai); `kind` may change too.",
        move |ctx: NativeCallContext, t: &mut TaskHandle, opts: Map| -> Res<TaskHandle> {
            build(&st, &t.0, &opts, true).map(|s| TaskHandle(Arc::new(s))).map_err(|e| fail(&ctx, e))
        },
    );
    let st = a.st.clone();
    a.func(
        "relevant",
        "Task.relevant(seed: int) -> array",
        "The relevant positions S (0-based) of the member with this seed.",
        move |ctx: NativeCallContext, t: &mut TaskHandle, seed: i64| -> Res<Array> {
            let seed = u64::try_from(seed).map_err(|_| fail(&ctx, format!("seed must be non-negative (got {seed})")))?;
            let task = st.ctx.registry.task(&t.0, seed).map_err(|e| fail(&ctx, e))?;
            Ok(task.relevant().iter().map(|&i| Dynamic::from(i as i64)).collect())
        },
    );
    a.prop("T", "Task.T -> int", "The input length.", |t: &mut TaskHandle| t.0.t as i64);
    a.prop("s", "Task.s -> int", "The number of relevant positions.", |t: &mut TaskHandle| t.0.s as i64);
    a.prop("kind", "Task.kind -> string", "The registered task name.", |t: &mut TaskHandle| t.0.kind.clone());
    a.prop("bias", "Task.bias -> float", "P[x_i = 1].", |t: &mut TaskHandle| t.0.bias);
    a.prop("noise", "Task.noise -> float", "The label flip probability.", |t: &mut TaskHandle| t.0.noise);
    a.prop("subset", "Task.subset -> array or ()", "S when fixed, else ().", |t: &mut TaskHandle| to_dyn(&t.0.subset));
    a.prop("params", "Task.params -> map", "A plugin task's extra options.", |t: &mut TaskHandle| to_dyn(&t.0.params));
    let mut example = TaskSpec::new("sparse_parity", 16, 3);
    example.subset = Some(vec![]);
    example.subset_seed = Some(0);
    example.table_seed = Some(0);
    a.keys(
        "Task options",
        "Keys of `task(kind, #{..})` and `Task.with_options(#{..})` (shown for `task(\"sparse_parity\", #{T: 16, s: 3})`; `subset`, `subset_seed` and `table_seed` are unset by default).",
        code(
            fields(&example)
                .into_iter()
                .filter(|(k, _)| k != "kind")
                .map(|(k, v)| if ["subset", "subset_seed", "table_seed"].contains(&k.as_str()) { (k, "()".into()) } else { (k, v) })
                .chain([("params".to_string(), "#{}".to_string())])
                .collect(),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_are_every_task_spec_field() {
        let mut spec = TaskSpec::new("x", 1, 1);
        spec.subset = Some(vec![0]);
        spec.subset_seed = Some(1);
        spec.table_seed = Some(2);
        spec.params.insert("k".into(), 1.0);
        let mut from_serde: Vec<String> = fields(&spec).into_iter().map(|f| f.0).filter(|k| k != "kind").collect();
        let mut ours = task_keys();
        from_serde.sort();
        ours.sort();
        assert_eq!(ours, from_serde);
    }
}
