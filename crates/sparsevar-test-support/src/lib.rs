//! Helpers shared by the workspace's test suites (a dev-dependency only).

use std::path::{Path, PathBuf};

pub mod projection;

/// A folder under the system temp dir, `sparsevar-{name}-{pid}`, emptied of an earlier run's
/// leftovers; removed when the test passes, kept for a look when it fails.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// The folder, not yet created (for code that must create it, or refuse an existing one).
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("sparsevar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        ScratchDir(d)
    }

    /// The folder, created empty.
    pub fn created(name: &str) -> Self {
        let d = Self::new(name);
        std::fs::create_dir_all(&d.0).expect("create a scratch folder");
        d
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
