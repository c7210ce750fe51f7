//! A plugin's backend keeps its member-by-member path behind the guard: `run_members`
//! reaches the plugin's own implementation, and a panic in it is an error naming the call and
//! the backend, after which the backend refuses work like after any other panic.

use sparsevar_core::backend::{Backend, BackendError, BufferId, Kernel, MemberLaunch, MemberUpdate, Update};
use sparsevar_core::registry::Registry;
use sparsevar_plugin::{Plugin, PluginHost, Registrar};

/// A backend that only runs members: it says it did (Ok(true)) for any count but zero,
/// where it panics.
struct MemberWise;

fn refused() -> BackendError {
    BackendError::Device { backend: "memberwise".into(), message: "this test backend has no buffers".into() }
}

impl Backend for MemberWise {
    fn name(&self) -> String {
        "memberwise".into()
    }
    fn alloc(&mut self, _len: usize) -> Result<BufferId, BackendError> {
        Err(refused())
    }
    fn write(&mut self, _buf: BufferId, _data: &[f64]) -> Result<(), BackendError> {
        Err(refused())
    }
    fn read(&mut self, _buf: BufferId, _out: &mut Vec<f64>) -> Result<(), BackendError> {
        Err(refused())
    }
    fn launch(&mut self, _kernel: &Kernel, _inputs: &[BufferId], _output: BufferId) -> Result<(), BackendError> {
        Err(refused())
    }
    fn update(&mut self, _update: &Update, _buffers: &[BufferId]) -> Result<(), BackendError> {
        Err(refused())
    }
    fn run_members(&mut self, members: usize, _launches: &[MemberLaunch], _updates: &[MemberUpdate]) -> Result<bool, BackendError> {
        assert!(members > 0, "run_members called with no members");
        Ok(true)
    }
}

fn register(r: &mut dyn Registrar) {
    r.backend("memberwise", || Ok(Box::new(MemberWise) as Box<dyn Backend>));
}

fn guarded() -> Box<dyn Backend> {
    let mut registry = Registry::builtin();
    let mut host = PluginHost::new();
    let plugin = Plugin { name: "memberwise", version: "0.0.0", register };
    host.register_static(&plugin, "memberwise (static)", &mut registry).unwrap_or_else(|e| panic!("{e}"));
    registry.backend("memberwise").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn run_members_reaches_the_plugin_backend() {
    let mut be = guarded();
    // The trait's default answers Ok(false): only a pass-through gives the plugin's Ok(true).
    assert!(be.run_members(3, &[], &[]).unwrap());
}

#[test]
fn a_panic_in_run_members_is_an_error_and_poisons_the_backend() {
    let mut be = guarded();
    let msg = be.run_members(0, &[], &[]).unwrap_err().to_string();
    assert!(msg.contains("Backend::run_members of backend `memberwise` panicked") && msg.contains("no members"), "{msg}");
    let again = be.run_members(3, &[], &[]).unwrap_err().to_string();
    assert!(again.contains("unusable after an earlier panic"), "{again}");
}
