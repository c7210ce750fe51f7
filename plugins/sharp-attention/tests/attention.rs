//! `ssmax` and `relu2`: forward values against their formulas, gradients against central
//! differences (f64, CPU backend), and the property each exists for.

use sharp_attention::{ScalableSoftmax, SquaredRelu};
use sparsevar_cpu::CpuBackend;
use sparsevar_plugin::core::graph::{Executor, Init, ParamStore};
use sparsevar_plugin::core::registry::Registry;
use sparsevar_plugin::{Attention, Backend, Graph, NodeId, Pcg32, PluginHost};

/// scores [R, Q, N] as a parameter, the variant's weights, and loss = Σ weights ⊙ c per
/// member (c a fixed random input), with its gradient with respect to the scores.
struct Case {
    be: CpuBackend<f64>,
    exec: Executor,
    params: ParamStore,
    weights: NodeId,
    loss: NodeId,
    grad: NodeId,
}

fn case(variant: &dyn Attention, shape: [usize; 3], head_dim: usize, seed: u64) -> Case {
    let mut be = CpuBackend::<f64>::new();
    let mut params = ParamStore::new(shape[0]);
    let sid = params.declare("scores", &shape[1..], Init::Normal(2.0));
    let mut rngs: Vec<Pcg32> = (0..shape[0]).map(|r| Pcg32::new(seed + r as u64, 1)).collect();
    params.initialize(&mut be, &mut rngs).unwrap();
    let mut g = Graph::new();
    let s = g.param(&params, sid);
    let weights = variant.weights(&mut g, s, head_dim).unwrap();
    assert_eq!(g.shape(weights), &shape, "weights keep the shape of the scores");
    let c = g.input("c", &shape);
    let p = g.mul(weights, c);
    let flat = g.reshape(p, &[shape[0], shape[1] * shape[2]]);
    let sum = g.sum_to(flat, &[shape[0], 1]);
    let loss = g.reshape(sum, &[shape[0]]);
    let grad = g.backward(loss, &[s])[0].expect("the loss depends on the scores");
    let exec = Executor::new(&mut be, g, &[loss, grad, weights], &params).unwrap();
    let mut rng = Pcg32::new(seed, 9);
    let cv: Vec<f64> = (0..shape.iter().product::<usize>()).map(|_| rng.normal()).collect();
    exec.write(&mut be, c, &cv).unwrap();
    exec.run(&mut be).unwrap();
    Case { be, exec, params, weights, loss, grad }
}

impl Case {
    fn read(&mut self, node: NodeId) -> Vec<f64> {
        let mut v = Vec::new();
        self.exec.read(&mut self.be, node, &mut v).unwrap();
        v
    }
    fn scores(&mut self) -> Vec<f64> {
        let mut v = Vec::new();
        self.be.read(self.params.buffers[0], &mut v).unwrap();
        v
    }
    fn total_loss_at(&mut self, scores: &[f64]) -> f64 {
        self.be.write(self.params.buffers[0], scores).unwrap();
        self.exec.run(&mut self.be).unwrap();
        self.read(self.loss).iter().sum()
    }
}

/// The variant's weights computed directly from one row of raw scores.
type Formula = fn(&[f64], usize) -> Vec<f64>;

fn ssmax_formula(row: &[f64], head_dim: usize) -> Vec<f64> {
    let k = (row.len() as f64).ln() / (head_dim as f64).sqrt();
    let e: Vec<f64> = row.iter().map(|s| (k * s).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

fn relu2_formula(row: &[f64], head_dim: usize) -> Vec<f64> {
    row.iter().map(|s| (s / (head_dim as f64).sqrt()).max(0.0).powi(2) / row.len() as f64).collect()
}

fn variants() -> [(Box<dyn Attention>, Formula); 2] {
    [(Box::new(ScalableSoftmax), ssmax_formula), (Box::new(SquaredRelu), relu2_formula)]
}

#[test]
fn weights_match_their_formulas() {
    for (variant, formula) in variants() {
        for (shape, head_dim) in [([2, 3, 5], 4), ([1, 1, 17], 8), ([3, 2, 2], 1)] {
            let mut c = case(variant.as_ref(), shape, head_dim, 1);
            let (scores, weights) = (c.scores(), c.read(c.weights));
            for (row, got) in scores.chunks(shape[2]).zip(weights.chunks(shape[2])) {
                for (a, b) in formula(row, head_dim).iter().zip(got) {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()), "{}: {a} vs {b} (row {row:?})", variant.name());
                }
            }
        }
    }
}

#[test]
fn gradients_match_central_differences() {
    for (variant, _) in variants() {
        let mut c = case(variant.as_ref(), [2, 3, 6], 4, 7);
        let analytic = c.read(c.grad);
        let scores = c.scores();
        let mut checked = 0;
        for i in 0..scores.len() {
            // relu2 has a kink at 0: skip scores too close to it for a central difference.
            if variant.name() == "relu2" && scores[i].abs() < 1e-3 {
                continue;
            }
            let h = 1e-6;
            let mut s = scores.clone();
            s[i] = scores[i] + h;
            let up = c.total_loss_at(&s);
            s[i] = scores[i] - h;
            let down = c.total_loss_at(&s);
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - analytic[i]).abs();
            assert!(err <= 1e-7 + 1e-5 * numeric.abs(), "{}: score {i}: analytic {} vs numeric {numeric}", variant.name(), analytic[i]);
            checked += 1;
        }
        assert!(checked >= 30, "{}: only {checked} entries checked", variant.name());
        assert!(analytic.iter().any(|g| g.abs() > 1e-3), "{}: the gradient is not trivially zero", variant.name());
    }
}

/// The largest weight when one key scores `gap` (after the 1/sqrt(d) scaling) above `n − 1`
/// others at zero.
fn peak(variant: &dyn Attention, n: usize, gap: f64) -> f64 {
    let mut be = CpuBackend::<f64>::new();
    let mut g = Graph::new();
    let s = g.input("s", &[1, 1, n]);
    let w = variant.weights(&mut g, s, 1).unwrap();
    let exec = Executor::new(&mut be, g, &[w], &ParamStore::new(1)).unwrap();
    let mut row = vec![0.0; n];
    row[0] = gap;
    exec.write(&mut be, s, &row).unwrap();
    exec.run(&mut be).unwrap();
    let mut out = Vec::new();
    exec.read(&mut be, w, &mut out).unwrap();
    out[0]
}

#[test]
fn ssmax_keeps_a_standout_key_in_focus_as_the_sequence_grows_and_softmax_does_not() {
    let softmax = sparsevar_plugin::core::attention::Softmax;
    let (mut last_ss, mut last_sm) = (0.0, 1.0);
    for n in [8, 64, 512, 4096] {
        let (ss, sm) = (peak(&ScalableSoftmax, n, 2.0), peak(&softmax, n, 2.0));
        assert!(ss > last_ss && sm < last_sm, "n = {n}: ssmax {ss}, softmax {sm}");
        (last_ss, last_sm) = (ss, sm);
    }
    // With a gap of 2, ssmax's peak tends to 1 while softmax's fades like e²/n.
    assert!(last_ss > 0.99 && last_sm < 0.002, "ssmax {last_ss}, softmax {last_sm}");
}

#[test]
fn relu2_gives_negative_scores_exactly_zero_weight() {
    let mut c = case(&SquaredRelu, [2, 4, 9], 4, 3);
    let (scores, weights) = (c.scores(), c.read(c.weights));
    assert!(scores.iter().any(|&s| s < 0.0) && scores.iter().any(|&s| s > 0.0));
    for (s, w) in scores.iter().zip(&weights) {
        assert_eq!(*w == 0.0, *s <= 0.0, "score {s} weight {w}");
    }
}

#[test]
fn both_variants_are_registered_and_select() {
    let mut registry = Registry::builtin();
    let info = PluginHost::new().register_static(&sharp_attention::PLUGIN, "static", &mut registry).unwrap();
    assert_eq!(info.attention, ["relu2", "ssmax"]);
    for name in ["ssmax", "relu2"] {
        let a = registry.attention(name).unwrap();
        assert_eq!(a.name(), name);
        assert!(a.selects());
    }
}
