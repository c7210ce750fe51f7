//! NVIDIA's Vulkan driver on a machine without a display.
//!
//! NVIDIA ships its Vulkan driver inside two libraries: `libGLX_nvidia.so.0`, which the
//! packaged ICD manifest (`nvidia_icd.json`) names, and `libEGL_nvidia.so.0`. In a container
//! without an X server (the usual GPU cloud or cluster node), the loader cannot create an
//! instance through the GLX library — "Could not get 'vkCreateInstance' via
//! 'vk_icdGetInstanceProcAddr' for ICD libGLX_nvidia.so.0" — and wgpu sees no adapter, while
//! the EGL library works. Measured on an H200 node (driver 580.159): no adapter with the
//! packaged manifest; the H200 with a manifest naming libEGL_nvidia.so.0.
//!
//! [`wants_egl_manifest`] decides from files and the environment alone (nothing is loaded)
//! whether to add such a manifest; [`nvidia_egl_driver_env`] writes it and says which loader
//! variables to set, which the program does before anything else runs. Adapters that two manifests both reach are
//! listed once (see `device::enumerate`).

use std::path::{Path, PathBuf};

/// Where Vulkan loaders look for ICD manifests on Linux, besides what the environment names.
const MANIFEST_DIRS: [&str; 4] = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/usr/local/nvidia/share/vulkan/icd.d"];

/// Where NVIDIA's libraries are found when the dynamic linker's cache does not list them
/// (containers mount them under /usr/local/nvidia).
const LIBRARY_DIRS: [&str; 5] = ["/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];

const EGL: &str = "libEGL_nvidia.so.0";
const GLX: &str = "libGLX_nvidia.so.0";

/// The environment and files the decision reads; a trait so tests can describe a machine.
pub(crate) trait Machine {
    fn var(&self, key: &str) -> Option<String>;
    /// The manifests the loader would read, with their contents.
    fn manifests(&self, explicit: Option<&str>) -> Vec<(PathBuf, String)>;
    fn has_library(&self, name: &str) -> bool;
}

/// This machine.
struct Host;

impl Machine for Host {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    fn manifests(&self, explicit: Option<&str>) -> Vec<(PathBuf, String)> {
        let files: Vec<PathBuf> = match explicit {
            Some(list) => list.split(':').map(PathBuf::from).collect(),
            None => MANIFEST_DIRS
                .iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect(),
        };
        files.into_iter().filter_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text))).collect()
    }

    fn has_library(&self, name: &str) -> bool {
        let from_env = self.var("LD_LIBRARY_PATH").unwrap_or_default();
        if from_env.split(':').chain(LIBRARY_DIRS).any(|d| !d.is_empty() && Path::new(d).join(name).exists()) {
            return true;
        }
        // The linker's cache holds library names as plain strings.
        std::fs::read("/etc/ld.so.cache").is_ok_and(|cache| cache.windows(name.len()).any(|w| w == name.as_bytes()))
    }
}

/// Whether to add a manifest naming `libEGL_nvidia.so.0`: on Linux, with no display, when the
/// manifests the loader will read name NVIDIA's GLX library and none names the EGL one, the
/// EGL library is installed, and the user has not added drivers or opted out
/// (`SPARSEVAR_NVIDIA_EGL=0`).
pub(crate) fn wants_egl_manifest(m: &dyn Machine) -> bool {
    if !cfg!(target_os = "linux") || m.var("SPARSEVAR_NVIDIA_EGL").is_some_and(|v| v == "0") {
        return false;
    }
    if m.var("DISPLAY").is_some() || m.var("WAYLAND_DISPLAY").is_some() || m.var("VK_ADD_DRIVER_FILES").is_some() {
        return false;
    }
    let explicit = m.var("VK_DRIVER_FILES").or_else(|| m.var("VK_ICD_FILENAMES"));
    let manifests = m.manifests(explicit.as_deref());
    let names = |lib: &str| manifests.iter().any(|(_, text)| text.contains(lib));
    names(GLX) && !names(EGL) && m.has_library(EGL)
}

/// The environment to set, before any Vulkan instance exists, so that the loader also reads a
/// manifest naming NVIDIA's EGL library — empty where `wants_egl_manifest` says this machine
/// does not need one. The manifest is written once per user into the temporary folder. The
/// loader ignores `VK_ADD_DRIVER_FILES` when the user lists drivers (`VK_DRIVER_FILES`, or its
/// old name `VK_ICD_FILENAMES`), so then the manifest is appended to that list instead.
pub fn nvidia_egl_driver_env() -> Vec<(&'static str, String)> {
    if !wants_egl_manifest(&Host) {
        return Vec::new();
    }
    let Some(manifest) = write_egl_manifest() else { return Vec::new() };
    env_for(&Host, &manifest.display().to_string())
}

/// The variables that make the loader read `manifest` as well as what it reads now.
pub(crate) fn env_for(m: &dyn Machine, manifest: &str) -> Vec<(&'static str, String)> {
    let listed: Vec<(&'static str, String)> =
        ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"].into_iter().filter_map(|k| m.var(k).map(|v| (k, format!("{v}:{manifest}")))).collect();
    if listed.is_empty() { vec![("VK_ADD_DRIVER_FILES", manifest.to_string())] } else { listed }
}

fn write_egl_manifest() -> Option<PathBuf> {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).map(|u| format!("-{u}")).unwrap_or_default();
    let path = std::env::temp_dir().join(format!("sparsevar-nvidia-egl-icd{user}.json"));
    let text = format!("{{\"file_format_version\": \"1.0.0\", \"ICD\": {{\"library_path\": \"{EGL}\", \"api_version\": \"1.3.0\"}}}}\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        // Written beside and renamed, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&tmp, &text).ok()?;
        std::fs::rename(&tmp, &path).ok()?;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        vars: HashMap<&'static str, &'static str>,
        manifests: Vec<(&'static str, &'static str)>,
        egl: bool,
    }

    impl Machine for Fake {
        fn var(&self, key: &str) -> Option<String> {
            self.vars.get(key).map(|v| v.to_string())
        }
        fn manifests(&self, explicit: Option<&str>) -> Vec<(PathBuf, String)> {
            let wanted: Option<Vec<&str>> = explicit.map(|l| l.split(':').collect());
            self.manifests.iter().filter(|(p, _)| wanted.as_ref().is_none_or(|w| w.contains(p))).map(|(p, t)| (PathBuf::from(p), t.to_string())).collect()
        }
        fn has_library(&self, name: &str) -> bool {
            name == EGL && self.egl
        }
    }

    const NV_GLX: (&str, &str) = ("/usr/share/vulkan/icd.d/nvidia_icd.json", r#"{"ICD": {"library_path": "libGLX_nvidia.so.0"}}"#);
    const LVP: (&str, &str) = ("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json", r#"{"ICD": {"library_path": "/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"}}"#);

    /// One way a machine differs from a headless NVIDIA node.
    type Change = Box<dyn Fn(&mut Fake)>;

    fn node() -> Fake {
        Fake { vars: HashMap::new(), manifests: vec![NV_GLX, LVP], egl: true }
    }

    #[test]
    fn a_headless_nvidia_node_gets_the_egl_manifest() {
        assert!(wants_egl_manifest(&node()));
        // The GPU check kit names the packaged manifest explicitly: still headless GLX.
        let mut n = node();
        n.vars.insert("VK_ICD_FILENAMES", NV_GLX.0);
        assert!(wants_egl_manifest(&n));
    }

    #[test]
    fn a_driver_list_the_user_set_is_extended_not_bypassed() {
        let mut n = node();
        assert_eq!(env_for(&n, "/tmp/egl.json"), vec![("VK_ADD_DRIVER_FILES", "/tmp/egl.json".to_string())]);
        n.vars.insert("VK_ICD_FILENAMES", NV_GLX.0);
        assert_eq!(env_for(&n, "/tmp/egl.json"), vec![("VK_ICD_FILENAMES", format!("{}:/tmp/egl.json", NV_GLX.0))]);
        n.vars.insert("VK_DRIVER_FILES", NV_GLX.0);
        assert_eq!(env_for(&n, "/tmp/egl.json").len(), 2, "both names extended");
    }

    #[test]
    fn nothing_is_added_where_it_is_not_needed_or_not_wanted() {
        let cases: Vec<(&str, Change)> = vec![
            (
                "a display",
                Box::new(|n| {
                    n.vars.insert("DISPLAY", ":0");
                }),
            ),
            (
                "a Wayland display",
                Box::new(|n| {
                    n.vars.insert("WAYLAND_DISPLAY", "wayland-0");
                }),
            ),
            (
                "the user adds drivers",
                Box::new(|n| {
                    n.vars.insert("VK_ADD_DRIVER_FILES", "/x.json");
                }),
            ),
            (
                "the user opts out",
                Box::new(|n| {
                    n.vars.insert("SPARSEVAR_NVIDIA_EGL", "0");
                }),
            ),
            ("no EGL library", Box::new(|n| n.egl = false)),
            ("no NVIDIA manifest", Box::new(|n| n.manifests = vec![LVP])),
            (
                "an EGL manifest already",
                Box::new(|n| n.manifests.push(("/etc/vulkan/icd.d/nv_egl.json", r#"{"ICD": {"library_path": "libEGL_nvidia.so.0"}}"#))),
            ),
            (
                "the user names only lavapipe",
                Box::new(|n| {
                    n.vars.insert("VK_DRIVER_FILES", LVP.0);
                }),
            ),
        ];
        for (what, change) in cases {
            let mut n = node();
            change(&mut n);
            assert!(!wants_egl_manifest(&n), "added the EGL manifest despite {what}");
        }
    }
}
