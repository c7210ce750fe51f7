//! The user's sbatch options: `--slurm 'partition=gpu, time=01:00:00, gres=gpu:1'` or a
//! `slurm:` mapping in the sweep YAML, each becoming one `#SBATCH --key=value` line.

use crate::SlurmError;

/// Options the executor sets itself; a user value would break the array or its logs.
const RESERVED: &[&str] = &["array", "output", "error", "parsable", "test-only", "wrap", "wait", "chdir", "input"];

/// sbatch options in the order given; a later value for a key replaces an earlier one (so
/// `--slurm` overrides the YAML's `slurm:`). A key without a value is a flag (`exclusive`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmOptions(Vec<(String, Option<String>)>);

impl SlurmOptions {
    /// Parses `key=value, key=value, flag`. Commas separate options; a value that itself holds
    /// commas (`nodelist=a,b`) is written in quotes: `nodelist="a,b"`.
    pub fn parse(text: &str) -> Result<Self, SlurmError> {
        let bad = |message: String| SlurmError::Options { text: text.to_string(), message };
        let mut out = SlurmOptions::default();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (item, tail) = split_item(rest).map_err(bad)?;
            rest = tail;
            let item = item.trim();
            if item.is_empty() {
                return Err(bad("an empty option (two commas in a row)".into()));
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                    if v.is_empty() {
                        return Err(bad(format!("`{}` has no value: write {}=VALUE", k.trim(), k.trim())));
                    }
                    (k.trim(), Some(v.to_string()))
                }
                None => (item, None),
            };
            out.set(key, value).map_err(|e| match e {
                SlurmError::Options { message, .. } => bad(message),
                other => other,
            })?;
        }
        Ok(out)
    }

    /// Adds one option (a YAML `slurm:` entry), checking the key and value.
    pub fn set(&mut self, key: &str, value: Option<String>) -> Result<(), SlurmError> {
        let bad = |message: String| SlurmError::Options { text: key.to_string(), message };
        let key = key.trim().trim_start_matches("--");
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(bad(format!("`{key}` is not an sbatch option name (letters, digits and '-', e.g. partition=gpu)")));
        }
        let key = key.replace('_', "-");
        if RESERVED.contains(&key.as_str()) {
            return Err(bad(format!("`{key}` is set by sparsevar itself (array, logs); leave it out")));
        }
        if let Some(v) = &value
            && v.contains(['\n', '\r', '"'])
        {
            return Err(bad(format!("the value of `{key}` holds a line break or a double quote")));
        }
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value));
        Ok(())
    }

    /// Options of `other` replace or extend these.
    pub fn merged(mut self, other: &SlurmOptions) -> Self {
        for (k, v) in &other.0 {
            self.0.retain(|(key, _)| key != k);
            self.0.push((k.clone(), v.clone()));
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// The `#SBATCH` lines, one per option.
    pub fn sbatch_lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("#SBATCH --{k}={}", sbatch_value(v)),
                None => format!("#SBATCH --{k}"),
            })
            .collect()
    }
}

/// The text up to the next comma outside double quotes, and the text after that comma.
fn split_item(s: &str) -> Result<(&str, &str), String> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => return Ok((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    if quoted { Err("a double quote is not closed".into()) } else { Ok((s, "")) }
}

/// An `#SBATCH` value: sbatch splits these lines at blanks unless the value is in double quotes.
pub(crate) fn sbatch_value(v: &str) -> String {
    if v.contains(char::is_whitespace) { format!("\"{v}\"") } else { v.to_string() }
}
