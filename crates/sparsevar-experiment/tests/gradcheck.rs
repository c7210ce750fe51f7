//! Gradients are checked, not trusted: every graph operation's backward and a whole model's
//! loss gradient (every attention variant, both readouts, MLP on/off, each LayerNorm mode)
//! against central differences in f64 on the CPU backend.

use sparsevar_core::attention::{BUILTIN_ATTENTION, builtin_attention};
use sparsevar_core::backend::Backend;
use sparsevar_core::graph::{Executor, Graph, Init, NodeId, ParamStore};
use sparsevar_core::model::{DataShape, MlpConfig, Model, ModelSpec, Norm, Positions, Readout, TransformerConfig};
use sparsevar_core::rng::Pcg32;
use sparsevar_cpu::CpuBackend;

/// Sum of y ⊙ w per member → [R]: a loss whose gradient reaches every element of y.
fn weighted_sum(g: &mut Graph, y: NodeId) -> (NodeId, NodeId) {
    let s = g.shape(y).to_vec();
    let w = g.input("w", &s);
    let p = g.mul(y, w);
    let r = s[0];
    let rest: usize = s[1..].iter().product();
    let p2 = g.reshape(p, &[r, rest]);
    let s2 = g.sum_to(p2, &[r, 1]);
    (g.reshape(s2, &[r]), w)
}

struct Case {
    graph: Graph,
    params: ParamStore,
    loss: NodeId,
    grads: Vec<Option<NodeId>>,
    fixed: Vec<(NodeId, Vec<f64>)>,
}

/// Compare analytic gradients with central differences on every parameter entry.
fn check_case(name: &str, case: Case, rng: &mut Pcg32) {
    check_case_after(name, case, rng, &mut |_, _| {});
}

/// [`check_case`] with `before` run on the initialised parameters first.
fn check_case_after(name: &str, case: Case, rng: &mut Pcg32, before: &mut dyn FnMut(&mut CpuBackend<f64>, &ParamStore)) {
    let mut be = CpuBackend::<f64>::new();
    let mut params = case.params;
    let mut rngs: Vec<Pcg32> = (0..params.members).map(|i| Pcg32::new(77 + i as u64, 1)).collect();
    params.initialize(&mut be, &mut rngs).unwrap();
    before(&mut be, &params);
    let mut outputs = vec![case.loss];
    outputs.extend(case.grads.iter().flatten());
    let exec = Executor::new(&mut be, case.graph, &outputs, &params).unwrap();
    for (n, v) in &case.fixed {
        exec.write(&mut be, *n, v).unwrap();
    }
    let _ = rng;
    let total = |be: &mut CpuBackend<f64>| -> f64 {
        exec.run(be).unwrap();
        let mut l = Vec::new();
        exec.read(be, case.loss, &mut l).unwrap();
        l.iter().sum()
    };
    total(&mut be);
    let mut checked = 0;
    for (pi, gnode) in params.ids().zip(&case.grads) {
        let buf = params.buffer(pi);
        let mut values = Vec::new();
        be.read(buf, &mut values).unwrap();
        let mut analytic = vec![0.0; values.len()];
        if let Some(gn) = gnode {
            total(&mut be);
            exec.read(&mut be, *gn, &mut analytic).unwrap();
        }
        for i in 0..values.len() {
            let h = 1e-6;
            let orig = values[i];
            values[i] = orig + h;
            be.write(buf, &values).unwrap();
            let up = total(&mut be);
            values[i] = orig - h;
            be.write(buf, &values).unwrap();
            let down = total(&mut be);
            values[i] = orig;
            be.write(buf, &values).unwrap();
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= 1e-6 + 1e-5 * numeric.abs().max(analytic[i].abs()),
                "{name}: param {} [{i}]: analytic {} vs numeric {numeric} (err {err:e})",
                params.specs[pi.0].name,
                analytic[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: nothing checked");
}

fn random(rng: &mut Pcg32, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal()).collect()
}

/// Build a case from parameters with the given per-member shapes and an op on them.
fn op_case(shapes: &[&[usize]], build: impl FnOnce(&mut Graph, &ParamStore, &[NodeId], &mut Vec<(NodeId, Vec<f64>)>) -> NodeId, rng: &mut Pcg32) -> Case {
    let r = 2;
    let mut params = ParamStore::new(r);
    let ids: Vec<_> = shapes.iter().enumerate().map(|(i, s)| params.declare(&format!("p{i}"), s, Init::Normal(1.0))).collect();
    let mut g = Graph::new();
    let nodes: Vec<NodeId> = ids.iter().map(|&i| g.param(&params, i)).collect();
    let mut fixed = Vec::new();
    let y = build(&mut g, &params, &nodes, &mut fixed);
    let (loss, w) = weighted_sum(&mut g, y);
    let n: usize = g.shape(w).iter().product();
    fixed.push((w, random(rng, n)));
    let grads = g.backward(loss, &nodes);
    Case { graph: g, params, loss, grads, fixed }
}

#[test]
fn every_graph_operation_has_a_correct_gradient() {
    let mut rng = Pcg32::new(2024, 9);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa: &[usize] = if ta { &[3, 4, 5] } else { &[3, 5, 4] };
        let sb: &[usize] = if tb { &[3, 6, 4] } else { &[3, 4, 6] };
        let c = op_case(&[sa, sb], |g, _, p, _| g.matmul(p[0], p[1], ta, tb), &mut rng);
        check_case(&format!("matmul ta={ta} tb={tb}"), c, &mut rng);
    }
    for (name, sa, sb) in [("same", &[3usize, 4][..], &[3usize, 4][..]), ("bias", &[3, 4], &[1, 4]), ("both", &[3, 1], &[1, 4])] {
        for op in 0..3 {
            let c = op_case(
                &[sa, sb],
                |g, _, p, _| match op {
                    0 => g.add(p[0], p[1]),
                    1 => g.sub(p[0], p[1]),
                    _ => g.mul(p[0], p[1]),
                },
                &mut rng,
            );
            check_case(&format!("binary {op} {name}"), c, &mut rng);
        }
    }
    let c = op_case(&[&[3, 4]], |g, _, p, _| g.sum_to(p[0], &[2, 1, 4]), &mut rng);
    check_case("sum_to", c, &mut rng);
    let c = op_case(&[&[1, 4]], |g, _, p, _| g.expand(p[0], &[2, 3, 4]), &mut rng);
    check_case("expand", c, &mut rng);
    let c = op_case(&[&[7]], |g, _, p, _| g.affine(p[0], -1.7, 0.3), &mut rng);
    check_case("affine", c, &mut rng);
    for op in ["relu", "gelu", "sigmoid"] {
        let c = op_case(
            &[&[3, 5]],
            |g, _, p, _| match op {
                "relu" => g.relu(p[0]),
                "gelu" => g.gelu(p[0]),
                _ => g.sigmoid(p[0]),
            },
            &mut rng,
        );
        check_case(op, c, &mut rng);
    }
    let c = op_case(&[&[3, 7]], |g, _, p, _| g.softmax(p[0]), &mut rng);
    check_case("softmax", c, &mut rng);
    let c = op_case(&[&[3, 7]], |g, _, p, _| g.layer_norm(p[0], 1e-5), &mut rng);
    check_case("layer_norm", c, &mut rng);
    let c = op_case(
        &[&[5, 3]],
        |g, _, p, fixed| {
            let idx = g.input("idx", &[2, 6]);
            fixed.push((idx, vec![0.0, 4.0, 4.0, 2.0, 1.0, 0.0, 3.0, 3.0, 3.0, 0.0, 2.0, 4.0]));
            g.gather(p[0], idx)
        },
        &mut rng,
    );
    check_case("gather", c, &mut rng);
    let c = op_case(&[&[2, 3, 4]], |g, _, p, _| g.permute(p[0], &[0, 3, 1, 2]), &mut rng);
    check_case("permute", c, &mut rng);
    let c = op_case(&[&[3, 5, 2]], |g, _, p, _| g.narrow(p[0], 2, 1, 3), &mut rng);
    check_case("narrow", c, &mut rng);
    let c = op_case(
        &[&[4, 3]],
        |g, _, p, fixed| {
            let labels = g.input("labels", &[2, 4]);
            fixed.push((labels, vec![0.0, 2.0, 1.0, 1.0, 2.0, 2.0, 0.0, 1.0]));
            let ce = g.cross_entropy(p[0], labels);
            g.reshape(ce, &[2, 1])
        },
        &mut rng,
    );
    check_case("cross_entropy", c, &mut rng);
}

fn model_case(spec: ModelSpec, data: DataShape, batch: usize, rng: &mut Pcg32) -> Case {
    let attention = match &spec {
        ModelSpec::Transformer(c) => builtin_attention(&c.attention),
        ModelSpec::Mlp(_) => None,
    };
    let (model, params) = Model::new(&spec, data, 2, attention).unwrap();
    let mg = model.build(&params, batch, true).unwrap();
    let mut fixed = Vec::new();
    let mut enc = Vec::new();
    for _ in 0..2 {
        let toks: Vec<u8> = (0..batch * data.seq_len).map(|_| rng.below(data.alphabet as u64) as u8).collect();
        model.encode(batch, &toks, &mut enc);
    }
    fixed.push((mg.inputs, enc));
    fixed.push((mg.labels, (0..2 * batch).map(|_| rng.below(data.classes as u64) as f64).collect()));
    fixed.extend(mg.constants.iter().cloned());
    let mut grads = vec![None; params.specs.len()];
    for (p, gnode) in &mg.grads {
        grads[p.0] = Some(*gnode);
    }
    // Parameters the loss does not reach (e.g. Q and K under uniform attention) must really
    // have zero numeric gradient: check_case compares them against 0.
    Case { graph: mg.graph, params, loss: mg.loss, grads, fixed }
}

fn small_transformer() -> TransformerConfig {
    TransformerConfig { layers: 1, d_model: 8, heads: 2, mlp: 2, init_std: 0.5, ..TransformerConfig::default() }
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    let mut rng = Pcg32::new(7, 3);
    let data = DataShape { seq_len: 5, alphabet: 2, classes: 2 };
    for att in BUILTIN_ATTENTION {
        let cfg = TransformerConfig { attention: att.to_string(), ..small_transformer() };
        let c = model_case(ModelSpec::Transformer(cfg), data, 4, &mut rng);
        check_case(&format!("transformer attention={att}"), c, &mut rng);
    }
    for readout in [Readout::Cls, Readout::Mean] {
        for norm in [Norm::Pre, Norm::Post, Norm::None] {
            for mlp in [0, 2] {
                let cfg = TransformerConfig { readout, norm, mlp, layers: 2, ..small_transformer() };
                let c = model_case(ModelSpec::Transformer(cfg), data, 4, &mut rng);
                check_case(&format!("transformer {readout:?} {norm:?} mlp={mlp} 2 layers"), c, &mut rng);
            }
        }
    }
    for positions in [Positions::Sinusoidal, Positions::None] {
        for batch in [2, 5] {
            let cfg = TransformerConfig { positions, ..small_transformer() };
            let c = model_case(ModelSpec::Transformer(cfg), data, batch, &mut rng);
            check_case(&format!("transformer positions={positions:?} batch={batch}"), c, &mut rng);
        }
    }
    let c = model_case(ModelSpec::Mlp(MlpConfig { depth: 2, width: 6 }), data, 4, &mut rng);
    check_case("mlp", c, &mut rng);
}

#[test]
fn gradients_match_finite_differences_under_a_norm_bound_that_is_not_active() {
    use sparsevar_core::norms::{MaxNorm, Projector};
    let mut rng = Pcg32::new(9, 3);
    let data = DataShape { seq_len: 5, alphabet: 2, classes: 2 };
    let spec = ModelSpec::Transformer(small_transformer());
    let (model, _) = Model::new(&spec, data, 2, builtin_attention("softmax")).unwrap();
    let bound = MaxNorm { qk: Some(1e3), v: Some(1e3), o: Some(1e3), embed: Some(1e3) };
    let mut projector = Projector::new(bound.balls(&model.norm_layout().unwrap()));
    assert_eq!(projector.balls().len(), 5, "q, k, v, o and the embeddings");
    let c = model_case(spec, data, 4, &mut rng);
    check_case_after("transformer under max_norm 1e3", c, &mut rng, &mut |be, params| {
        let read = |be: &mut CpuBackend<f64>| -> Vec<Vec<f64>> {
            params
                .ids()
                .map(|id| {
                    let mut v = Vec::new();
                    be.read(params.buffer(id), &mut v).unwrap();
                    v
                })
                .collect()
        };
        let before = read(be);
        projector.project(be, params).unwrap();
        assert_eq!(read(be), before, "a bound that is not active changes nothing, bit for bit");
    });
}

/// Read loss and every gradient of a model graph built with the given options.
fn loss_and_grads(cfg: TransformerConfig, batch: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let data = DataShape { seq_len: 6, alphabet: 2, classes: 2 };
    let (model, mut params) = Model::new(&ModelSpec::Transformer(cfg.clone()), data, 3, builtin_attention(&cfg.attention)).unwrap();
    let mut be = CpuBackend::<f64>::new();
    let mut rngs: Vec<Pcg32> = (0..3).map(|i| Pcg32::new(i, 1)).collect();
    params.initialize(&mut be, &mut rngs).unwrap();
    let mg = model.build(&params, batch, true).unwrap();
    let mut outputs = vec![mg.loss];
    outputs.extend(mg.grads.iter().map(|g| g.1));
    let exec = Executor::new(&mut be, mg.graph.clone(), &outputs, &params).unwrap();
    let mut rng = Pcg32::new(5, 5);
    let mut enc = Vec::new();
    for _ in 0..3 {
        let toks: Vec<u8> = (0..batch * 6).map(|_| rng.below(2) as u8).collect();
        model.encode(batch, &toks, &mut enc);
    }
    exec.write(&mut be, mg.inputs, &enc).unwrap();
    exec.write(&mut be, mg.labels, &(0..3 * batch).map(|i| (i % 2) as f64).collect::<Vec<_>>()).unwrap();
    for (n, v) in &mg.constants {
        exec.write(&mut be, *n, v).unwrap();
    }
    exec.run(&mut be).unwrap();
    let mut loss = Vec::new();
    exec.read(&mut be, mg.loss, &mut loss).unwrap();
    let mut grads = vec![Vec::new(); params.specs.len()];
    for (p, gn) in &mg.grads {
        exec.read(&mut be, *gn, &mut grads[p.0]).unwrap();
    }
    (loss, grads)
}

#[test]
fn cls_shortcut_and_token_table_change_nothing_but_the_work() {
    for layers in [1, 2] {
        let base = TransformerConfig { layers, cls_shortcut: false, token_table: false, ..small_transformer() };
        let (l0, g0) = loss_and_grads(base.clone(), 8);
        for (shortcut, table) in [(true, false), (false, true), (true, true)] {
            let cfg = TransformerConfig { cls_shortcut: shortcut, token_table: table, ..base.clone() };
            let (l1, g1) = loss_and_grads(cfg, 8);
            for (a, b) in l0.iter().zip(&l1) {
                assert!((a - b).abs() < 1e-12, "layers {layers} shortcut {shortcut} table {table}: loss {a} vs {b}");
            }
            assert_eq!(g0.len(), g1.len());
            for (i, (a, b)) in g0.iter().zip(&g1).enumerate() {
                assert_eq!(a.len(), b.len(), "grad {i} length");
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-12 * (1.0 + x.abs()), "layers {layers} shortcut {shortcut} table {table}: grad {i}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn the_shortcut_really_does_less_work() {
    let data = DataShape { seq_len: 32, alphabet: 2, classes: 2 };
    let flops = |cfg: TransformerConfig| {
        let (model, mut params) = Model::new(&ModelSpec::Transformer(cfg.clone()), data, 1, builtin_attention("softmax")).unwrap();
        let mut be = CpuBackend::<f32>::new();
        params.initialize(&mut be, &mut [Pcg32::new(0, 1)]).unwrap();
        let mg = model.build(&params, 32, true).unwrap();
        let mut outputs = vec![mg.loss];
        outputs.extend(mg.grads.iter().map(|g| g.1));
        Executor::new(&mut be, mg.graph, &outputs, &params).unwrap().flops()
    };
    let full = flops(TransformerConfig { cls_shortcut: false, token_table: false, ..TransformerConfig::default() });
    let fast = flops(TransformerConfig::default());
    assert!(fast * 4 < full, "shortcut + table: {fast} flops vs full {full}");
}
