//! Script errors: where (file, line, column), what, and the source line with a caret.

use std::path::Path;

use rhai::{EvalAltResult, ParseError, Position};

/// What kind of failure stopped a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The script could not start: unreadable file, unusable out folder, unknown backend.
    Setup,
    /// A syntax error.
    Parse,
    /// An error raised while the script ran (a bad argument, an unknown key, a failed run).
    Runtime,
    /// The script ran more operations than [`crate::Limits::max_operations`].
    OperationLimit,
    /// The cancel flag was raised (or the host's health check failed).
    Cancelled,
    /// The script ran past [`crate::ScriptContext::time_limit`].
    TimeLimit,
}

/// A failed script, displayed as
///
/// ```text
/// scripts/02_paper_scaling.rhai:14:13: unknown model key `layerz`; valid keys: layers, d_model, …
///    14 |     let m = transformer(#{layerz: 2});
///       |             ^
/// ```
///
/// followed by one `note:` line per function call or import the error came through.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ScriptError {
    pub kind: ErrorKind,
    /// The file the error is in: the script, or a module it imported.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
    pub message: String,
    /// The text of `line`, when it could be read.
    pub source_line: Option<String>,
    /// The calls and imports the error passed through, outermost first.
    pub notes: Vec<String>,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let (Some(l), Some(text)) = (self.line, &self.source_line) {
            let gutter = l.to_string().len().max(4);
            write!(f, "\n{l:>gutter$} | {}", text.trim_end())?;
            if let Some(c) = self.column {
                // Tabs keep their width so the caret lines up under the character.
                let pad: String = text.chars().take(c.saturating_sub(1) as usize).map(|ch| if ch == '\t' { '\t' } else { ' ' }).collect();
                write!(f, "\n{:>gutter$} | {pad}^", "")?;
            }
        }
        for n in &self.notes {
            write!(f, "\n  note: {n}")?;
        }
        Ok(())
    }
}

fn line_of(source: &str, line: Option<usize>) -> Option<String> {
    source.lines().nth(line?.checked_sub(1)?).map(str::to_string)
}

fn at(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_string(),
    }
}

impl ScriptError {
    /// An error before the script could run.
    pub(crate) fn setup(file: &str, message: impl Into<String>) -> Self {
        ScriptError { kind: ErrorKind::Setup, file: file.into(), line: None, column: None, message: message.into(), source_line: None, notes: vec![] }
    }

    fn at(kind: ErrorKind, file: &str, source: Option<&str>, pos: Position, message: String, notes: Vec<String>) -> Self {
        let (line, column) = (pos.line(), pos.position());
        let narrow = |x: Option<usize>| x.and_then(|v| u32::try_from(v).ok());
        ScriptError {
            kind,
            file: file.to_string(),
            line: narrow(line),
            column: narrow(column),
            message,
            source_line: source.and_then(|s| line_of(s, line)),
            notes,
        }
    }

    /// A syntax error in the script `file` whose text is `source`.
    pub(crate) fn parse(file: &str, source: &str, e: &ParseError) -> Self {
        Self::at(ErrorKind::Parse, file, Some(source), e.position(), e.err_type().to_string(), vec![])
    }

    /// A runtime error, followed through script-function calls and imported modules to the
    /// place it was raised. `script_dir` finds imported modules' files; `max_operations` is
    /// quoted in the operation-limit message.
    pub(crate) fn runtime(file: &str, source: &str, script_dir: &Path, err: &EvalAltResult, max_operations: u64) -> Self {
        let mut notes = Vec::new();
        let mut file = file.to_string();
        let mut text: Option<String> = Some(source.to_string());
        let mut err = err;
        loop {
            match err {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                    notes.push(format!("in function `{name}`, called at {}", at(&file, *pos)));
                    if !src.is_empty() && src != &file {
                        (file, text) = module_file(script_dir, src);
                    }
                    err = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, pos) => {
                    notes.push(format!("in module \"{path}\", imported at {}", at(&file, *pos)));
                    (file, text) = module_file(script_dir, path);
                    err = inner;
                }
                _ => break,
            }
        }
        let (kind, message) = match err {
            EvalAltResult::ErrorTooManyOperations(_) => {
                (ErrorKind::OperationLimit, format!("the script ran more than {max_operations} operations; raise --max-operations or look for an endless loop"))
            }
            EvalAltResult::ErrorTerminated(token, _) => {
                let kind = if token.clone().into_string().is_ok_and(|s| s.starts_with(crate::engine::TIME_LIMIT_PREFIX)) {
                    ErrorKind::TimeLimit
                } else {
                    ErrorKind::Cancelled
                };
                (kind, token.to_string())
            }
            EvalAltResult::ErrorParsing(t, _) => (ErrorKind::Parse, t.to_string()),
            EvalAltResult::ErrorRuntime(value, _) => (ErrorKind::Runtime, value.to_string()),
            other => {
                // Display appends " (line L, position C)"; the location is printed our way.
                let text = other.to_string();
                let suffix = format!(" ({})", other.position());
                (ErrorKind::Runtime, text.strip_suffix(&suffix).unwrap_or(&text).to_string())
            }
        };
        // Notes read outermost first; the innermost call is the last one passed through.
        Self::at(kind, &file, text.as_deref(), err.position(), message, notes)
    }
}

/// The file of the module imported as `path` (relative to the script folder) and its text.
fn module_file(script_dir: &Path, path: &str) -> (String, Option<String>) {
    let mut p = script_dir.join(path);
    p.set_extension("rhai");
    let text = std::fs::read_to_string(&p).ok();
    (p.display().to_string(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_location_line_and_caret() {
        let e = ScriptError {
            kind: ErrorKind::Runtime,
            file: "scripts/x.rhai".into(),
            line: Some(14),
            column: Some(13),
            message: "unknown model key `layerz`".into(),
            source_line: Some("    let m = transformer(#{layerz: 2});".into()),
            notes: vec!["in function `f`, called at scripts/x.rhai:20:1".into()],
        };
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "scripts/x.rhai:14:13: unknown model key `layerz`");
        assert_eq!(lines[1], "  14 |     let m = transformer(#{layerz: 2});");
        assert_eq!(lines[2], "     |             ^");
        // The caret sits under column 13: `t` of `transformer`.
        assert_eq!(lines[1].find("transformer"), lines[2].find('^'));
        assert_eq!(lines[3], "  note: in function `f`, called at scripts/x.rhai:20:1");
    }

    #[test]
    fn display_without_position_is_one_line() {
        let e = ScriptError::setup("a.rhai", "cannot read the script: gone");
        assert_eq!(e.to_string(), "a.rhai: cannot read the script: gone");
    }
}
