// plain_sigmoid's weights against the built-in sigmoid's at zero scores, and its
// registration through the plugin entry point.

use plain_sigmoid::{PlainSigmoid, PLUGIN};
use sparsevar_cpu::CpuBackend;
use sparsevar_plugin::core::graph::{Executor, ParamStore};
use sparsevar_plugin::core::registry::Registry;
use sparsevar_plugin::{Attention, Graph, PluginHost};

/// The weights a variant gives N keys whose scores are all 0 (one member, one query).
fn weights_at_zero(variant: &dyn Attention, n: usize) -> Vec<f64> {
    let mut backend = CpuBackend::<f64>::new();
    let mut g = Graph::new();
    let scores = g.input("scores", &[1, 1, n]);
    let w = variant.weights(&mut g, scores, 16).unwrap();
    let exec = Executor::new(&mut backend, g, &[w], &ParamStore::new(1)).unwrap();
    exec.write(&mut backend, scores, &vec![0.0; n]).unwrap();
    exec.run(&mut backend).unwrap();
    let mut out = Vec::new();
    exec.read(&mut backend, w, &mut out).unwrap();
    out
}

#[test]
fn without_the_bias_the_total_weight_grows_with_the_length() {
    let builtin = Registry::builtin().attention("sigmoid").unwrap();
    for n in [9, 33, 129] {
        let ours = weights_at_zero(&PlainSigmoid, n);
        assert!(ours.iter().all(|&w| (w - 0.5).abs() < 1e-12), "{ours:?}");
        // The built-in sigmoid(0 − ln T) = 1 / (1 + T) per key (T = n keys here).
        let theirs: f64 = weights_at_zero(builtin.as_ref(), n).iter().sum();
        assert!((theirs - n as f64 / (1.0 + n as f64)).abs() < 1e-12, "{theirs}");
    }
}

#[test]
fn registers_through_the_plugin_entry_point() {
    let mut registry = Registry::builtin();
    let info = PluginHost::new().register_static(&PLUGIN, "plain-sigmoid", &mut registry).unwrap();
    assert_eq!(info.attention, ["plain_sigmoid"]);
    assert_eq!(registry.attention("plain_sigmoid").unwrap().name(), "plain_sigmoid");
}
