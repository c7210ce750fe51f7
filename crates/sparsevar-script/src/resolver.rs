//! `import` rooted at the script's folder: `import "lib/helpers" as h;` loads
//! `<script dir>/lib/helpers.rhai`, and nothing outside that folder loads at all.

use std::path::{Component, Path, PathBuf};

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

/// A [`FileModuleResolver`] based at the script folder that refuses paths leaving it.
pub(crate) struct SandboxResolver {
    root: PathBuf,
    inner: FileModuleResolver,
}

impl SandboxResolver {
    pub(crate) fn new(root: PathBuf) -> Self {
        let inner = FileModuleResolver::new_with_path(&root);
        SandboxResolver { root, inner }
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
        self.inner.resolve(engine, source, path, pos)
    }
}
