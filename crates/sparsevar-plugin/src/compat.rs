//! The compatibility record: how a plugin was built, compared field by field with the host
//! before anything with a Rust ABI is called (stage 2 of loading).

use std::fmt::Write as _;

/// A `&'static str` in C layout: pointer and length. It points into the plugin's read-only
/// data, which stays valid because libraries are never unloaded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RecordStr {
    ptr: *const u8,
    len: usize,
}

impl RecordStr {
    /// Wrap a string constant.
    pub const fn new(s: &'static str) -> Self {
        RecordStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// Copy the text out (invalid UTF-8 is replaced, never trusted).
    ///
    /// # Safety
    /// `self` must have been made by [`RecordStr::new`] in a library that is still loaded.
    #[allow(unsafe_code)]
    unsafe fn read(&self) -> String {
        if self.ptr.is_null() {
            return String::new();
        }
        // SAFETY: by the contract above, `ptr..ptr+len` is a live `&'static str`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// What `sparsevar_plugin_compat` returns: the plugin's build, in a layout frozen for one
/// [`ABI_VERSION`](crate::ABI_VERSION). Built by [`CompatRecord::this_build`] inside
/// [`export_plugin!`](crate::export_plugin), so every field describes the plugin's build.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CompatRecord {
    /// [`ABI_VERSION`](crate::ABI_VERSION) again (stage 1 already checked it).
    pub abi_version: u32,
    /// 1 if the plugin was built with `panic = "unwind"`, 0 for `panic = "abort"`.
    pub panic_unwind: u32,
    /// `rustc --version` of the compiler that built the plugin.
    pub rustc: RecordStr,
    /// The version of sparsevar-plugin the plugin was built against.
    pub interface_version: RecordStr,
    /// [`INTERFACE_FINGERPRINT`](crate::INTERFACE_FINGERPRINT) of that build.
    pub fingerprint: RecordStr,
    /// The target triple.
    pub target: RecordStr,
    /// The plugin's name (its package name unless `export_plugin!` says otherwise).
    pub plugin_name: RecordStr,
    /// The plugin's own version.
    pub plugin_version: RecordStr,
}

impl CompatRecord {
    /// The record of the calling build: this crate's constants as compiled into the plugin,
    /// plus the plugin's name, version and panic strategy (`cfg!(panic = "unwind")` evaluated
    /// in the plugin crate).
    pub const fn this_build(plugin_name: &'static str, plugin_version: &'static str, panic_unwind: bool) -> Self {
        CompatRecord {
            abi_version: crate::ABI_VERSION,
            panic_unwind: panic_unwind as u32,
            rustc: RecordStr::new(crate::RUSTC_VERSION),
            interface_version: RecordStr::new(crate::INTERFACE_VERSION),
            fingerprint: RecordStr::new(crate::INTERFACE_FINGERPRINT),
            target: RecordStr::new(crate::TARGET),
            plugin_name: RecordStr::new(plugin_name),
            plugin_version: RecordStr::new(plugin_version),
        }
    }

    /// The same record claiming another compiler (for the host's tests of the check).
    pub const fn with_rustc(mut self, rustc: &'static str) -> Self {
        self.rustc = RecordStr::new(rustc);
        self
    }

    /// The same record claiming another sparsevar-plugin version (for the host's tests).
    pub const fn with_interface_version(mut self, version: &'static str) -> Self {
        self.interface_version = RecordStr::new(version);
        self
    }

    /// Copy the record into owned strings.
    ///
    /// # Safety
    /// The record must come from `sparsevar_plugin_compat` of a library that is still loaded
    /// and passed stage 1 (so its layout is this one).
    #[allow(unsafe_code)]
    pub(crate) unsafe fn info(&self) -> CompatInfo {
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            CompatInfo {
                abi_version: self.abi_version,
                rustc: self.rustc.read(),
                interface_version: self.interface_version.read(),
                fingerprint: self.fingerprint.read(),
                target: self.target.read(),
                panic: if self.panic_unwind != 0 { "unwind" } else { "abort" }.to_string(),
                plugin_name: self.plugin_name.read(),
                plugin_version: self.plugin_version.read(),
            }
        }
    }
}

/// A build description in owned strings: a plugin's (read from its [`CompatRecord`]) or the
/// host's ([`CompatInfo::host`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatInfo {
    /// Plugin interface version.
    pub abi_version: u32,
    /// `rustc --version`.
    pub rustc: String,
    /// sparsevar-plugin's version.
    pub interface_version: String,
    /// Fingerprint of the interface sources.
    pub fingerprint: String,
    /// Target triple.
    pub target: String,
    /// Panic strategy: "unwind" or "abort".
    pub panic: String,
    /// The plugin's name ("-" for the host).
    pub plugin_name: String,
    /// The plugin's version ("-" for the host).
    pub plugin_version: String,
}

impl CompatInfo {
    /// What this host requires of a plugin: its own compiler, interface version, fingerprint
    /// and target, and `panic = "unwind"` (so the plugin's guards can catch its panics).
    pub fn host() -> Self {
        CompatInfo {
            abi_version: crate::ABI_VERSION,
            rustc: crate::RUSTC_VERSION.to_string(),
            interface_version: crate::INTERFACE_VERSION.to_string(),
            fingerprint: crate::INTERFACE_FINGERPRINT.to_string(),
            target: crate::TARGET.to_string(),
            panic: "unwind".to_string(),
            plugin_name: "-".to_string(),
            plugin_version: "-".to_string(),
        }
    }

    /// The rows of the comparison: (field, host value, plugin value, must match).
    fn rows<'a>(&'a self, plugin: &'a CompatInfo) -> [(&'static str, String, String, bool); 8] {
        [
            ("interface (ABI) version", self.abi_version.to_string(), plugin.abi_version.to_string(), true),
            ("compiler", self.rustc.clone(), plugin.rustc.clone(), true),
            ("sparsevar-plugin version", self.interface_version.clone(), plugin.interface_version.clone(), true),
            ("interface fingerprint", self.fingerprint.clone(), plugin.fingerprint.clone(), true),
            ("target", self.target.clone(), plugin.target.clone(), true),
            ("panic strategy", self.panic.clone(), plugin.panic.clone(), true),
            ("plugin name", self.plugin_name.clone(), plugin.plugin_name.clone(), false),
            ("plugin version", self.plugin_version.clone(), plugin.plugin_version.clone(), false),
        ]
    }

    /// The fields that must match and do not (empty when the plugin may be registered).
    pub fn mismatches(&self, plugin: &CompatInfo) -> Vec<&'static str> {
        self.rows(plugin).into_iter().filter(|r| r.3 && r.1 != r.2).map(|r| r.0).collect()
    }

    /// Both records side by side, one field a line, `*` marking each mismatch.
    pub fn side_by_side(&self, plugin: &CompatInfo) -> String {
        let rows = self.rows(plugin);
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(4);
        let mut out = String::new();
        let _ = write!(out, "    {:w0$}  {:w1$}  plugin", "", "host");
        for (field, host, plug, must) in &rows {
            let mark = if *must && host != plug { '*' } else { ' ' };
            let _ = write!(out, "\n  {mark} {field:w0$}  {host:w1$}  {plug}");
        }
        out
    }
}
