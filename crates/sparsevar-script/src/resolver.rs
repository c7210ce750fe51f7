//! `import` rooted at the script's folder: `import "lib/helpers" as h;` loads
//! `<script dir>/lib/helpers.rhai`, and nothing outside that folder loads at all.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rhai::module_resolvers::FileModuleResolver;
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Shared};

/// Whether `rel` (a path relative to `root`) stays inside `root`: no absolute path, no `..`,
/// and — where the file exists — no symbolic link leading out.
pub(crate) fn inside(root: &Path, rel: &Path) -> bool {
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return false;
    }
    match (root.canonicalize(), root.join(rel).canonicalize()) {
        (Ok(r), Ok(p)) => p.starts_with(r),
        _ => true, // Not there (yet): the lexical check above is all there is to check.
    }
}

/// Modules may import modules this deep (the script itself is level 0). Each level
/// evaluates a module on the native stack, so a chain without end would overflow it.
pub(crate) const MAX_IMPORT_DEPTH: usize = 32;

/// Refuse writing `full` (a path inside `root`) where a symbolic link would take the write
/// out of `root`: the deepest folder on the way that exists must resolve inside `root`,
/// and so must `full` itself where it is a link (a dangling link is refused).
pub(crate) fn write_stays_inside(root: &Path, full: &Path) -> Result<(), String> {
    let root_real = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    let leaves = |p: &Path| format!("{} leads to {} outside the out folder {} (through a symbolic link)", full.display(), p.display(), root.display());
    let mut dir = full.parent();
    while let Some(d) = dir {
        if d.exists() {
            let real = d.canonicalize().map_err(|e| format!("{}: {e}", d.display()))?;
            if !real.starts_with(&root_real) {
                return Err(leaves(&real));
            }
            break;
        }
        dir = d.parent();
    }
    if full.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        match full.canonicalize() {
            Ok(real) if real.starts_with(&root_real) => {}
            Ok(real) => return Err(leaves(&real)),
            Err(_) => return Err(format!("{} is a symbolic link to nowhere; remove it or write another file", full.display())),
        }
    }
    Ok(())
}

/// A [`FileModuleResolver`] based at the script folder that refuses paths leaving it and
/// import cycles.
pub(crate) struct SandboxResolver {
    root: PathBuf,
    inner: FileModuleResolver,
    /// The files being imported right now, outermost first, the script itself at the
    /// bottom: (canonical path, how to name it in a message).
    chain: Mutex<Vec<(PathBuf, String)>>,
}

impl SandboxResolver {
    /// Imports rooted at `root`, for the script `script` (named as given in messages).
    pub(crate) fn new(root: PathBuf, script: &Path) -> Self {
        let inner = FileModuleResolver::new_with_path(&root);
        let bottom = (script.canonicalize().unwrap_or_else(|_| script.to_path_buf()), script.display().to_string());
        SandboxResolver { root, inner, chain: Mutex::new(vec![bottom]) }
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, String)>> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enter the import of `path`: refused when it is already being imported (a cycle,
    /// named link by link) or nests too deep.
    fn enter(&self, path: &str, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let file = self.inner.get_file_path(path, None);
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        let shown = file.strip_prefix(&self.root).unwrap_or(&file).display().to_string();
        let mut chain = self.chain();
        let refuse = |why: String| Err(EvalAltResult::ErrorRuntime(why.into(), pos).into());
        if chain.iter().any(|(c, _)| *c == canonical) {
            let links: Vec<&str> = chain.iter().map(|(_, n)| n.as_str()).chain([shown.as_str()]).collect();
            return refuse(format!("import cycle: {}; a module cannot import itself, even through others", links.join(" imports ")));
        }
        if chain.len() > MAX_IMPORT_DEPTH {
            return refuse(format!("imports nest deeper than {MAX_IMPORT_DEPTH} modules (at {shown})"));
        }
        chain.push((canonical, shown));
        Ok(())
    }

    fn check(&self, path: &str, pos: Position) -> Result<(), Box<EvalAltResult>> {
        let mut file = PathBuf::from(path);
        file.set_extension("rhai");
        if inside(&self.root, &file) {
            return Ok(());
        }
        Err(EvalAltResult::ErrorRuntime(
            format!("import \"{path}\" is outside the script folder {}: imports are paths relative to it, without `..` or a leading `/`", self.root.display())
                .into(),
            pos,
        )
        .into())
    }
}

impl ModuleResolver for SandboxResolver {
    fn resolve(&self, engine: &Engine, source: Option<&str>, path: &str, pos: Position) -> Result<Shared<Module>, Box<EvalAltResult>> {
        self.check(path, pos)?;
        self.enter(path, pos)?;
        let module = self.inner.resolve(engine, source, path, pos);
        self.chain().pop();
        module
    }
}
