//! Figures over several runs and plain rows (run comparison, lines, bars), and the labels
//! that keep figures readable at any T: thinned position labels on the heat map, enough
//! ticks on the loss axis. Every check reads the data the figure returns.

use sparsevar_experiment::train::CurvePoint;
use sparsevar_plot::*;
use sparsevar_test_support::ScratchDir;

fn tmp(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("plot-lines-{name}"))
}

fn point(member: usize, step: usize, acc: f64, loss: f64, mass: Option<f64>) -> CurvePoint {
    CurvePoint { member, seed: member as u64, step, train_loss: loss, test_loss: loss, test_accuracy: acc, best_mass_on_s: mass, ..Default::default() }
}

#[test]
fn run_comparison_draws_every_runs_members_in_one_colour_each_and_labels_runs() {
    let dir = tmp("runs");
    let a = vec![point(0, 100, 0.5, 0.69, Some(0.2)), point(0, 200, 1.0, 0.01, Some(0.9)), point(1, 100, 0.6, 0.6, Some(0.3))];
    let b = vec![point(0, 100, 0.5, 0.7, Some(0.1)), point(0, 300, 0.55, 0.65, Some(0.15))];
    for ext in ["png", "svg"] {
        let f = run_comparison(&[("model.heads=1", &a), ("model.heads=4", &b)], "heads", dir.join(format!("c.{ext}"))).unwrap();
        assert!(f.path.exists());
        assert_eq!(f.series("run 0/member 0/test_accuracy").unwrap().points, vec![(100.0, 0.5), (200.0, 1.0)]);
        assert_eq!(f.series("run 0/member 1/mass_on_s").unwrap().points, vec![(100.0, 0.3)]);
        assert_eq!(f.series("run 1/member 0/test_loss").unwrap().points, vec![(100.0, 0.7), (300.0, 0.65)]);
        assert!(f.series("run 1/member 1/test_loss").is_none(), "run 1 has one member");
        assert_eq!(f.legend, vec!["model.heads=1", "model.heads=4"]);
        assert!(f.series("run 0/member 0/test_loss").unwrap().label.starts_with("model.heads=1"));
        // Accuracy, loss (log) and mass on S; one labelled step axis.
        assert_eq!(f.axis_labels(), vec!["test accuracy", "test loss (nats)", "training step (optimizer updates)", "mass on S (best head)"]);
        assert_eq!(f.axes.iter().filter(|a| a.log).count(), 1);
    }
    // Without attention, no mass panel.
    let mlp: Vec<CurvePoint> = a.iter().map(|c| CurvePoint { best_mass_on_s: None, ..c.clone() }).collect();
    let f = run_comparison(&[("a", &mlp), ("b", &mlp)], "mlp", dir.join("mlp.png")).unwrap();
    assert!(!f.axis_labels().iter().any(|l| l.contains("mass")), "{:?}", f.axis_labels());
    assert!(matches!(run_comparison(&[("a", &a)], "one", dir.join("one.png")), Err(PlotError::Input { .. })));
    assert!(matches!(run_comparison(&[("a", &a), ("b", &[])], "e", dir.join("e.png")), Err(PlotError::Empty { .. })));
}

#[test]
fn lines_sort_points_per_group_and_bars_place_groups_side_by_side() {
    let dir = tmp("general");
    let spec = ChartSpec { title: "t".into(), x_desc: "heads".into(), y_desc: "median step".into(), ..Default::default() };
    let groups = vec![("T=16".to_string(), vec![(4.0, 300.0), (1.0, 900.0), (2.0, 500.0)]), ("T=32".to_string(), vec![(1.0, 1500.0)])];
    for ext in ["png", "svg"] {
        let f = lines(&groups, &spec, dir.join(format!("l.{ext}"))).unwrap();
        assert_eq!(f.series("T=16").unwrap().points, vec![(1.0, 900.0), (2.0, 500.0), (4.0, 300.0)]);
        assert_eq!(f.series("T=32").unwrap().points, vec![(1.0, 1500.0)]);
        assert_eq!(f.legend, vec!["T=16", "T=32"]);
        assert_eq!(f.axis_labels(), vec!["heads", "median step"]);
    }
    let log = ChartSpec { log_y: true, ..spec.clone() };
    let f = lines(&groups, &log, dir.join("log.png")).unwrap();
    assert!(f.axes[1].log && f.tick_labels(1).len() >= 3, "{:?}", f.axes[1]);
    let bad = vec![("g".to_string(), vec![(1.0, 0.0)])];
    let e = lines(&bad, &log, dir.join("bad.png")).unwrap_err().to_string();
    assert!(e.contains("log axis") && e.contains("bad.png"), "{e}");

    let b = vec![
        ("1 head".to_string(), "T=16".to_string(), 0.5),
        ("2 heads".to_string(), "T=16".to_string(), 0.75),
        ("1 head".to_string(), "T=32".to_string(), 0.25),
    ];
    let f = bars(&b, &spec, dir.join("b.svg")).unwrap();
    assert_eq!(f.series("T=16").unwrap().points, vec![(0.0, 0.5), (1.0, 0.75)]);
    assert_eq!(f.series("T=32").unwrap().points, vec![(0.0, 0.25)]);
    assert_eq!(f.tick_labels(0), vec!["1 head", "2 heads"], "categories in the order first seen");
    assert_eq!(f.axes[1].lo, 0.0, "bars start at zero");
    let dup = vec![b[0].clone(), b[0].clone()];
    assert!(bars(&dup, &spec, dir.join("dup.png")).unwrap_err().to_string().contains("two bars"));
}

/// CLS attention that is uniform over `t` bits.
fn uniform(t: usize) -> Vec<Vec<Vec<f64>>> {
    vec![vec![vec![1.0 / (t + 1) as f64; t + 1]]]
}

#[test]
fn heatmap_position_labels_thin_out_at_large_t_and_keep_every_bit_of_s() {
    let dir = tmp("labels");
    // T = 16: every position labelled.
    let f = attention_heatmap(&uniform(16), &[3, 9], "T16", dir.join("t16.png")).unwrap();
    assert_eq!(f.tick_labels(0).len(), 17);
    // T = 32 and up: at most about 16 labels, CLS and all of S among them, none crowding.
    for (t, s) in [(32usize, vec![5usize, 17, 30]), (64, vec![0, 1, 63]), (256, vec![7, 100, 101, 200]), (1024, vec![3])] {
        let f = attention_heatmap(&uniform(t), &s, "T", dir.join(format!("t{t}.png"))).unwrap();
        let labels = f.tick_labels(0);
        assert!(labels.len() <= 17, "T = {t}: {} labels: {labels:?}", labels.len());
        assert!(labels.len() >= 6, "T = {t}: too few labels: {labels:?}");
        assert_eq!(labels[0], "CLS");
        for bit in &s {
            assert!(labels.contains(&bit.to_string().as_str()), "T = {t}: bit {bit} of S not labelled: {labels:?}");
        }
        // Labels are bit indices at position bit + 1, in order.
        let ticks = &f.axes[0].ticks;
        assert!(ticks.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ticks.iter().skip(1).all(|(x, l)| l == &(*x as usize - 1).to_string()), "{ticks:?}");
        // Apart from S's own neighbours, labels are at least two columns apart.
        let xs: Vec<usize> = ticks.iter().skip(1).map(|(x, _)| *x as usize - 1).filter(|b| !s.contains(b)).collect();
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= 2), "T = {t}: {xs:?}");
    }
}

#[test]
fn the_loss_axis_gets_at_least_three_readable_ticks_however_narrow_the_loss() {
    let dir = tmp("loss");
    for (lo, hi) in [(0.4, 0.7), (0.05, 0.7), (1e-5, 0.7), (0.6, 0.61)] {
        let pts = vec![point(0, 100, 0.5, hi, None), point(0, 200, 0.6, lo, None)];
        let f = training_curves(&pts, &[], "loss", dir.join("l.png")).unwrap();
        let loss = f.axes.iter().position(|a| a.label.starts_with("loss")).unwrap();
        let labels = f.tick_labels(loss);
        assert!(labels.len() >= 3 && labels.len() <= 10, "loss {lo}..{hi}: {labels:?}");
        assert!(labels.iter().all(|l| l.len() <= 5), "loss {lo}..{hi}: long labels {labels:?}");
        let ticks: Vec<f64> = f.axes[loss].ticks.iter().map(|t| t.0).collect();
        assert!(ticks.iter().all(|t| *t >= f.axes[loss].lo && *t <= f.axes[loss].hi));
    }
}
