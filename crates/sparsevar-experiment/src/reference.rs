//! The configuration reference, generated from the config types themselves (their serde
//! names, defaults and doc comments, through a JSON schema), so the documentation cannot
//! drift from what the parser accepts.

use schemars::schema_for;
use serde_json::{Map, Value};

use crate::config::{ExperimentConfig, TrainConfig};
use crate::sweep::SweepSection;

fn defs(root: &Value) -> Map<String, Value> {
    root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn ref_name(v: &Value) -> Option<&str> {
    v.get("$ref").and_then(Value::as_str).map(|r| r.rsplit('/').next().unwrap_or(r))
}

/// Values of a string enum definition (plain `enum` or `oneOf` of consts), if it is one.
fn enum_values(def: &Value) -> Option<Vec<String>> {
    if let Some(e) = def.get("enum").and_then(Value::as_array) {
        return Some(e.iter().filter_map(Value::as_str).map(str::to_string).collect());
    }
    let one = def.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for v in one {
        let c = v.get("const").and_then(Value::as_str).or_else(|| v.get("enum").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str))?;
        out.push(c.to_string());
    }
    Some(out)
}

fn type_of(v: &Value, defs: &Map<String, Value>) -> String {
    if let Some(name) = ref_name(v) {
        return match defs.get(name).and_then(enum_values) {
            Some(vals) => vals.join(" \\| "),
            None => name.to_string(),
        };
    }
    if let Some(any) = v.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any.iter().filter(|x| x.get("type").and_then(Value::as_str) != Some("null")).map(|x| type_of(x, defs)).collect();
        return format!("{} (optional)", parts.join(" or "));
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => format!("list of {}", v.get("items").map(|i| type_of(i, defs)).unwrap_or_else(|| "values".into())),
        Some(Value::String(t)) if t == "object" => "map".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let parts: Vec<&str> = ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            if ts.iter().any(|t| t == "null") { format!("{} (optional)", parts.join(" or ")) } else { parts.join(" or ") }
        }
        _ => "value".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

fn default_of(v: &Value) -> String {
    match v.get("default") {
        None => "—".into(),
        Some(Value::Null) => "none".into(),
        Some(d) => format!("`{}`", serde_json::to_string(d).unwrap_or_default()),
    }
}

/// A Markdown table of an object schema's properties.
fn table(obj: &Value, defs: &Map<String, Value>, defaults: Option<&Value>) -> String {
    let mut out = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    let required: Vec<&str> = obj.get("required").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (key, p) in props {
            let desc = p.get("description").and_then(Value::as_str).map(one_line).unwrap_or_default();
            let default = match defaults.and_then(|d| d.get(key)) {
                Some(Value::Object(_)) => "see below".into(),
                Some(Value::Null) => "none".into(),
                Some(d) => format!("`{}`", serde_json::to_string(d).unwrap_or_default()),
                None if required.contains(&key.as_str()) => "required".into(),
                None => default_of(p),
            };
            let default = if default.starts_with("`{") { "see below".into() } else { default };
            out.push_str(&format!("| `{key}` | {} | {default} | {desc} |\n", type_of(p, defs)));
        }
    }
    out
}

/// The whole configuration reference as Markdown.
/// Every key a config section accepts (its schema's properties), including those a default
/// value leaves out when serialised (optional keys such as `sweep.learner` or
/// `train.max_norm`): front ends that list or check keys use this.
pub fn section_keys<T: schemars::JsonSchema>() -> Vec<String> {
    let root = serde_json::to_value(schema_for!(T)).expect("schema");
    root.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

pub fn config_reference() -> String {
    let root = serde_json::to_value(schema_for!(ExperimentConfig)).expect("schema");
    let d = defs(&root);
    let train_defaults = serde_json::to_value(TrainConfig::default()).expect("json");
    let transformer_defaults = serde_json::to_value(sparsevar_core::model::TransformerConfig::default()).expect("json");
    let mlp_defaults = serde_json::to_value(sparsevar_core::model::MlpConfig::default()).expect("json");
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str("<!-- Generated by `sparsevar reference config` from the config types; do not edit by hand. -->\n\n");
    out.push_str("An experiment file (`sparsevar train CONFIG.yaml`) has these top-level keys. Every section rejects unknown keys; `key=value` arguments override any of them (`train.lr=0.003`, `seeds=[0,1]`).\n\n");
    out.push_str(&table(&root, &d, None));
    out.push_str("\n## `task:`\n\n");
    if let Some(t) = d.get("TaskSpec") {
        out.push_str(&table(t, &d, None));
    }
    out.push_str("\n## `model:` with `kind: transformer`\n\n");
    let tr = serde_json::to_value(schema_for!(sparsevar_core::model::TransformerConfig)).expect("schema");
    out.push_str(&table(&tr, &defs(&tr), Some(&transformer_defaults)));
    out.push_str("\n## `model:` with `kind: mlp`\n\n");
    let mlp = serde_json::to_value(schema_for!(sparsevar_core::model::MlpConfig)).expect("schema");
    out.push_str(&table(&mlp, &defs(&mlp), Some(&mlp_defaults)));
    out.push_str("\n## `train:`\n\n");
    if let Some(t) = d.get("TrainConfig") {
        out.push_str(&table(t, &d, Some(&train_defaults)));
    }
    let sweep = serde_json::to_value(schema_for!(SweepSection)).expect("schema");
    let sd = defs(&sweep);
    out.push_str("\n## Sweep files\n\nA sweep file (`sparsevar sweep SWEEP.yaml`) has `task:` (without `T`, which the sweep sets), `models:` (a mapping from a name you choose to a `model:` section), `train:`, `backend:`, `threads:` as above, an optional `slurm:` mapping of sbatch options for `--executor slurm` (`slurm: { partition: gpu, time: \"02:00:00\", gres: \"gpu:1\" }`; `true` for a flag), and a `sweep:` section:\n\n");
    out.push_str(&table(&sweep, &sd, None));
    out.push_str("\n`m` is either a list (`[64, 128, 256]`) or a geometric grid (`{ from: 16, to: 4096, factor: 2 }`).\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_lists_every_train_key_with_its_default_and_doc() {
        let r = config_reference();
        let train = serde_json::to_value(TrainConfig::default()).unwrap();
        for key in train.as_object().unwrap().keys() {
            assert!(r.contains(&format!("| `{key}` |")), "train key {key} missing");
        }
        assert!(r.contains("| `lr` | number | `0.0003` | Peak learning rate."), "{r}");
        assert!(r.contains("| `weight_decay` | number (optional) | none |"), "{r}");
        assert!(r.contains("softmax, relu, sigmoid, linear, uniform"), "attention doc");
        assert!(r.contains("| `T` |"), "task T");
        assert!(r.contains("learned \\| sinusoidal \\| none"), "positions enum values: {r}");
        assert!(r.contains("| `refine` |"), "sweep section");
    }
}
