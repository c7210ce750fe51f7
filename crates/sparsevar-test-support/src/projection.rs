//! `train.max_norm`'s projection, checked the same way on every backend (the CPU and wgpu
//! test suites call it).

use sparsevar_core::attention::builtin_attention;
use sparsevar_core::backend::Backend;
use sparsevar_core::graph::ParamId;
use sparsevar_core::model::{DataShape, Model, ModelSpec, TransformerConfig};
use sparsevar_core::norms::{MaxNorm, Projector};
use sparsevar_core::rng::Pcg32;

/// Project random parameters of a 3-member transformer (member 1 inside every ball, the
/// others outside) onto `bound` on `be`, and check every ball and every other tensor against
/// the values before. Returns the parameters after.
pub fn project_and_check(be: &mut dyn Backend, rel: f64) -> Vec<Vec<f64>> {
    let spec = ModelSpec::Transformer(TransformerConfig { d_model: 8, heads: 2, mlp: 2, ..TransformerConfig::default() });
    let data = DataShape { seq_len: 5, alphabet: 2, classes: 2 };
    let (model, mut params) = Model::new(&spec, data, 3, builtin_attention("softmax")).unwrap();
    let mut rngs: Vec<Pcg32> = (0..3).map(|s| Pcg32::new(s, 1)).collect();
    params.initialize(be, &mut rngs).unwrap();
    let scale = [1.0, 0.01, 0.5];
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut before = Vec::new();
    for id in params.ids() {
        let n = params.member_len(id);
        let v: Vec<f64> = (0..3 * n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * scale[i / n]) as f32 as f64
            })
            .collect();
        be.write(params.buffer(id), &v).unwrap();
        before.push(v);
    }
    let bound = MaxNorm { qk: Some(1.0), v: Some(2.0), o: None, embed: Some(1.5) };
    let balls = bound.balls(&model.norm_layout().unwrap());
    let mut projector = Projector::new(balls.clone());
    projector.project(be, &params).unwrap();
    let after: Vec<Vec<f64>> = params
        .ids()
        .map(|id| {
            let mut v = Vec::new();
            be.read(params.buffer(id), &mut v).unwrap();
            v
        })
        .collect();
    let slice = |p: &[Vec<f64>], id: ParamId, m: usize| -> Vec<f64> {
        let n = params.member_len(id);
        p[id.0][m * n..(m + 1) * n].to_vec()
    };
    let norm = |p: &[Vec<f64>], ids: &[ParamId], m: usize| ids.iter().flat_map(|&id| slice(p, id, m)).map(|v| v * v).sum::<f64>().sqrt();
    let mut bounded = std::collections::BTreeSet::new();
    for ball in &balls {
        for m in 0..3 {
            let (b0, b1) = (norm(&before, &ball.params, m), norm(&after, &ball.params, m));
            assert!(b1 <= ball.radius * (1.0 + rel), "{} member {m}: {b1} > {}", ball.group, ball.radius);
            if b0 > ball.radius {
                assert!(b1 >= ball.radius * (1.0 - rel), "{} member {m}: {b1} below the sphere {}", ball.group, ball.radius);
                // A projection onto a ball about 0 only scales.
                for &id in &ball.params {
                    for (a, b) in slice(&after, id, m).iter().zip(slice(&before, id, m)) {
                        assert!((a - b * ball.radius / b0).abs() <= 1e-6 * b.abs().max(1e-3), "{} member {m}: {a} vs {b}", ball.group);
                    }
                }
            } else {
                assert_eq!(m, 1);
                for &id in &ball.params {
                    assert_eq!(slice(&after, id, m), slice(&before, id, m), "{} member {m} was inside and moved", ball.group);
                }
            }
        }
        bounded.extend(ball.params.iter().copied());
    }
    assert_eq!(balls.len(), 4, "q, k, v and the embeddings; o is unbounded");
    for id in params.ids().filter(|id| !bounded.contains(id)) {
        assert_eq!(after[id.0], before[id.0], "{} is not bounded and must not change", params.specs[id.0].name);
    }
    after
}
