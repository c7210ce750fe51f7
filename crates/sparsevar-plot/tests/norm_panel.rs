//! The training curves' norm panel: each member's bound against step, the learning step
//! marked on it, and no panel when the curves carry no norms.

use sparsevar_experiment::train::{CurvePoint, MemberResult};
use sparsevar_plot::training_curves;
use sparsevar_test_support::ScratchDir;

fn point(member: usize, step: usize, acc: f64, bound: Option<f64>) -> CurvePoint {
    CurvePoint {
        member,
        seed: member as u64,
        step,
        train_loss: 0.5,
        test_loss: 0.6,
        test_accuracy: acc,
        best_mass_on_s: Some(0.3),
        norm_bound: bound,
        qk_spectral: bound.map(|b| b / 10.0),
        ..Default::default()
    }
}

fn member(seed: u64, step: Option<usize>) -> MemberResult {
    MemberResult {
        seed,
        relevant: vec![0, 1],
        learned: step.is_some(),
        diverged: false,
        step,
        steps_trained: 300,
        test_accuracy: 1.0,
        test_loss: 0.0,
        train_loss: 0.0,
        attention: None,
        norms: None,
        scores: None,
        stopped: None,
    }
}

#[test]
fn the_norm_panel_draws_each_members_bound_and_marks_where_it_learned() {
    let dir = ScratchDir::new("plot-test-norm-panel");
    let curves = vec![point(0, 100, 0.6, Some(2.0)), point(0, 200, 1.0, Some(5.0)), point(1, 100, 0.5, Some(3.0)), point(1, 200, 0.55, Some(4.0))];
    let members = [member(0, Some(200)), member(1, None)];
    let f = training_curves(&curves, &members, "norms", dir.join("c.png")).unwrap();
    assert_eq!(f.series("member 0/norm_bound").unwrap().points, vec![(100.0, 2.0), (200.0, 5.0)]);
    assert_eq!(f.series("member 1/qk_spectral").unwrap().points, vec![(100.0, 0.3), (200.0, 0.4)]);
    assert_eq!(f.series("member 0/learned_norm").unwrap().points, vec![(200.0, 5.0)]);
    assert!(f.series("member 1/learned_norm").is_none(), "member 1 did not learn");
    // The norm panel is the bottom one, on a log axis, holding the step axis' description.
    let y = &f.axes[f.axes.len() - 1];
    assert!(y.log && y.lo < 2.0 && y.hi > 5.0, "{y:?}");
    assert_eq!(y.label, "norms (log)");
    assert!(f.axes[f.axes.len() - 2].label.starts_with("training step"), "{:?}", f.axes);
    assert!(f.legend.iter().any(|l| l.contains("norm bound")), "{:?}", f.legend);

    // Older curves without norms: no panel, and the mass panel carries the step axis again.
    let old: Vec<CurvePoint> = curves.iter().map(|c| CurvePoint { norm_bound: None, qk_spectral: None, ..c.clone() }).collect();
    let f = training_curves(&old, &members, "old", dir.join("o.png")).unwrap();
    assert!(f.series("member 0/norm_bound").is_none());
    assert!(!f.axis_labels().contains(&"norms (log)"));
    assert!(f.axes[f.axes.len() - 2].label.starts_with("training step"), "{:?}", f.axes);
}
