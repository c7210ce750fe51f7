//! Every figure drawn from small hand-built inputs, to PNG and SVG: the files are real images
//! of the promised size, and the data behind each figure is the data it was given.

use std::path::Path;

use sparsevar_experiment::baselines::log2_binomial;
use sparsevar_experiment::fits::{Fit, ScalingFit, fit_scaling, wilson};
use sparsevar_experiment::sweep::{BaselinePoint, Cell, ModelSummary, PointSummary, RunRow, SweepSummary};
use sparsevar_experiment::train::{AttentionSummary, CurvePoint, MemberResult};
use sparsevar_plot::*;
use sparsevar_test_support::ScratchDir;

// ---------------------------------------------------------------------------------------
// Checking the files.

/// A scratch folder for one test (see `ScratchDir`).
fn tmp(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("plot-test-{name}"))
}

/// Width and height from a PNG's signature and IHDR chunk (its first 24 bytes).
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 24, "{}: {} bytes", path.display(), b.len());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}: not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR", "{}: first chunk is not IHDR", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// Width and height from an SVG's root element; the document must close it.
fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("<svg").unwrap_or_else(|| panic!("{}: no <svg", path.display()));
    assert!(text.trim_end().ends_with("</svg>"), "{}: not closed", path.display());
    let tag = &text[start..start + text[start..].find('>').unwrap()];
    let attr = |name: &str| -> u32 {
        let key = format!(" {name}=\"");
        let i = tag.find(&key).unwrap_or_else(|| panic!("{}: no {name} in {tag}", path.display())) + key.len();
        tag[i..i + tag[i..].find('"').unwrap()].parse().unwrap()
    };
    (attr("width"), attr("height"))
}

/// Draw with `f` to PNG and SVG in `dir`, check both files, return the PNG's PlotFile
/// (after checking the SVG's is the same apart from its path).
fn both(dir: &Path, stem: &str, f: impl Fn(&Path) -> Result<PlotFile, PlotError>) -> PlotFile {
    let png = f(&dir.join(format!("{stem}.png"))).unwrap();
    let svg = f(&dir.join(format!("{stem}.svg"))).unwrap();
    assert_eq!(png_size(&png.path), (WIDTH, HEIGHT));
    assert_eq!(svg_size(&svg.path), (WIDTH, HEIGHT));
    assert_eq!((png.width, png.height), (WIDTH, HEIGHT));
    assert_eq!(PlotFile { path: png.path.clone(), ..svg }, png, "PNG and SVG must draw the same data");
    png
}

fn series<'a>(f: &'a PlotFile, name: &str) -> &'a [(f64, f64)] {
    let names: Vec<&str> = f.series.iter().map(|s| s.name.as_str()).collect();
    &f.series(name).unwrap_or_else(|| panic!("no series {name}; have {names:?}")).points
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

// ---------------------------------------------------------------------------------------
// Hand-built inputs.

const GRID: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];

/// A cell of 3 seeds, `learned` of which learned; it succeeds with 2.
fn cell(m: usize, learned: usize) -> Cell {
    let (lo, hi) = wilson(learned, 3);
    Cell {
        m,
        learned,
        seeds: 3,
        rate: learned as f64 / 3.0,
        wilson_low: lo,
        wilson_high: hi,
        success: learned >= 2,
        median_step: (learned > 0).then_some(500.0),
    }
}

/// One T of a model whose threshold is `star`: 0/3 below star/2, 1/3 at star/2, 3/3 from star.
fn point(t: usize, star: Option<usize>) -> PointSummary {
    let cells: Vec<Cell> = GRID
        .iter()
        .map(|&m| match star {
            Some(s) if m >= s => cell(m, 3),
            Some(s) if 2 * m == s => cell(m, 1),
            _ => cell(m, 0),
        })
        .collect();
    let m_star = cells.iter().find(|c| c.success).map(|c| c.m);
    let m_below = m_star.and_then(|s| cells.iter().filter(|c| c.m < s).map(|c| c.m).max());
    PointSummary {
        t,
        cells,
        m_star,
        m_below,
        median_steps_to_learn: None,
        median_variable_step: None,
        budgets: vec![],
        stable: None,
        learners: vec![],
        online: None,
        choices: vec![],
        recipe_counts: vec![],
    }
}

fn model(name: &str, stars: &[(usize, Option<usize>)]) -> ModelSummary {
    let points: Vec<PointSummary> = stars.iter().map(|&(t, s)| point(t, s)).collect();
    let pts: Vec<(usize, f64)> = points.iter().filter_map(|p| p.m_star.map(|m| (p.t, m as f64))).collect();
    ModelSummary { model: name.into(), fit: fit_scaling(&pts), points }
}

/// Two models over T = 8..64: "softmax" learns everywhere (at T = 8 from the smallest m,
/// 16), "mlp" never at T = 64; GF(2) needs 2T samples, subset search 16.
fn sweep() -> SweepSummary {
    let ts = [8usize, 16, 32, 64];
    SweepSummary {
        s: 3,
        task: "sparse_parity".into(),
        success_rule: "a cell (T, m) succeeds when at least 2 of 3 seeds reach test accuracy 0.99 within 1000 steps".into(),
        max_steps: 1000,
        models: vec![
            model("softmax", &[(8, Some(16)), (16, Some(64)), (32, Some(64)), (64, Some(128))]),
            model("mlp", &[(8, Some(64)), (16, Some(256)), (32, Some(1024)), (64, None)]),
        ],
        baselines: ts
            .iter()
            .map(|&t| BaselinePoint {
                t,
                info_floor: log2_binomial(t, 3),
                gf2_m_star: Some(2 * t),
                subset_search_m_star: Some(16),
                subset_search_skipped: false,
            })
            .collect(),
        faulted: Vec::new(),
        seconds: 1.0,
    }
}

/// An online sweep: every cell has m = 0; the measure is the median steps to learn.
fn online_sweep() -> SweepSummary {
    let point = |t: usize, steps: Option<f64>, var: Option<f64>| PointSummary {
        t,
        cells: vec![Cell { m: 0, ..cell(0, if steps.is_some() { 3 } else { 0 }) }],
        m_star: steps.map(|_| 0),
        m_below: None,
        median_steps_to_learn: steps,
        median_variable_step: var,
        budgets: vec![],
        stable: None,
        learners: vec![],
        online: None,
        choices: vec![],
        recipe_counts: vec![],
    };
    let points = vec![point(8, Some(300.0), Some(200.0)), point(16, Some(450.0), Some(300.0)), point(32, None, None)];
    SweepSummary {
        s: 2,
        task: "sparse_parity".into(),
        success_rule: "online".into(),
        max_steps: 3000,
        models: vec![ModelSummary { model: "attn".into(), fit: fit_scaling(&[(8, 300.0), (16, 450.0)]), points }],
        baselines: vec![BaselinePoint { t: 8, info_floor: 4.0, gf2_m_star: Some(16), subset_search_m_star: Some(8), subset_search_skipped: false }],
        faulted: Vec::new(),
        seconds: 1.0,
    }
}

fn run_row(model: &str, t: usize, m: usize, seed: u64, learned: bool) -> RunRow {
    RunRow {
        model: model.into(),
        variant: "softmax".into(),
        t,
        m,
        seed,
        learned,
        diverged: false,
        step: learned.then_some(400),
        steps_trained: 1000,
        test_accuracy: if learned { 1.0 } else { 0.5 },
        mass_on_s: None,
        variable_step: None,
        seconds: 1.0,
        faulted: None,
        norm_bound: None,
        restart: None,
        train_accuracy: None,
        validation_accuracy: None,
        train_set_loss: None,
        stopped: None,
        budget: None,
        recipe: None,
    }
}

// ---------------------------------------------------------------------------------------
// (a) scaling

#[test]
fn scaling_draws_m_star_its_bracket_both_fits_and_the_baselines() {
    let dir = tmp("scaling");
    let s = sweep();
    let f = both(&dir, "scaling", |p| scaling(&s, p));

    // m* and its bracket, exactly as summarised.
    let soft = &s.models[0];
    let want: Vec<(f64, f64)> = soft.points.iter().map(|p| (p.t as f64, p.m_star.unwrap() as f64)).collect();
    assert_eq!(series(&f, "softmax/m_star"), want.as_slice());
    assert_eq!(series(&f, "softmax/m_below"), &[(16.0, 32.0), (32.0, 32.0), (64.0, 64.0)]);
    assert_eq!(series(&f, "softmax/m_star_first_tried"), &[(8.0, 16.0)], "m* = 16 is the smallest m tried at T = 8");
    assert_eq!(series(&f, "mlp/not_learned"), &[(64.0, 1024.0)], "nothing succeeded at T = 64: drawn at the largest m");
    assert!(f.series("softmax/not_learned").is_none());

    // Both laws, evaluated by Fit::predict over the measured T range.
    for (name, law) in [("softmax/log_fit", &soft.fit.as_ref().unwrap().log), ("softmax/power_fit", &soft.fit.as_ref().unwrap().power)] {
        let pts = series(&f, name);
        assert!(pts.len() > 10, "{name}: a smooth line, not {} points", pts.len());
        assert_eq!((pts[0].0, pts[pts.len() - 1].0), (8.0, 64.0), "{name}: spans the measured T");
        for &(t, y) in pts {
            assert!(close(y, law.predict(t)), "{name} at T = {t}: {y} vs {}", law.predict(t));
        }
    }
    // mlp's fits cover only the T where it has an m* (its log law is ≤ 0 near T = 8 and is
    // drawn only where a log axis can show it).
    let mlp_pow = series(&f, "mlp/power_fit");
    assert_eq!((mlp_pow[0].0, mlp_pow[mlp_pow.len() - 1].0), (8.0, 32.0));
    let mlp_log = series(&f, "mlp/log_fit");
    assert!(mlp_log[0].0 > 8.0 && mlp_log[mlp_log.len() - 1].0 == 32.0 && mlp_log.iter().all(|p| p.1 > 0.0));

    // Baselines.
    assert_eq!(series(&f, "baseline/gf2"), &[(8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 128.0)]);
    assert_eq!(series(&f, "baseline/subset_search").len(), 4);
    for &(t, y) in series(&f, "baseline/info_floor") {
        assert!(close(y, log2_binomial(t as usize, 3)));
    }

    // The words: units on the axes, task and s in the title, the bar explained.
    assert_eq!(f.axis_labels(), ["input length T (bits)", "samples to learn, m* (training examples)"]);
    assert!(f.axes.iter().all(|a| a.log), "log T and log m*");
    assert!(f.title.contains("sparse parity") && f.title.contains("s = 3"), "{}", f.title);
    assert_eq!(f.subtitle, s.success_rule);
    for want in
        ["softmax", "mlp", "GF(2) elimination m*", "information floor log₂ C(T, s)", "m* lies in (largest failing m, m*]", "not learned up to the largest m"]
    {
        assert!(f.legend.iter().any(|l| l == want), "legend lacks `{want}`: {:?}", f.legend);
    }
    assert!(f.legend.iter().any(|l| l.contains("·ln T") && l.contains("R²")), "{:?}", f.legend);
    assert!(f.legend.iter().any(|l| l.contains("Tᵅ") && l.contains("α =")), "{:?}", f.legend);
}

#[test]
fn a_log_fit_that_goes_negative_is_drawn_only_where_positive() {
    let dir = tmp("negative-fit");
    let mut s = sweep();
    s.models.truncate(1);
    // m = −200 + 100 ln T is negative below T = e² ≈ 7.4 and positive above.
    let log = Fit { law: "log".into(), a: -200.0, b: 100.0, r2: 0.5 };
    let power = Fit { law: "power".into(), a: 1.0, b: 1.0, r2: 0.5 };
    s.models[0].fit = Some(ScalingFit { log, power, ratio: 8.0, verdict: String::new(), points: 4 });
    s.models[0].points[0].t = 4; // the T range now starts at 4
    let f = scaling(&s, dir.join("neg.png")).unwrap();
    let y = &f.axes[1];
    // The axis comes from the measurements (m* 16..128, baselines ≥ 5), not from the law.
    assert!(y.lo > 1.0 && y.hi < 1024.0, "{y:?}");
    let pts = series(&f, "softmax/log_fit");
    assert!(pts.iter().all(|p| p.1 >= y.lo && p.1 <= y.hi));
    assert!(close(pts[0].1, y.lo), "ends on the bottom edge of the plot: {:?} vs {}", pts[0], y.lo);
    assert!(pts[0].0 > 2f64.exp(), "starts after the law turns positive: {:?}", pts[0]);
}

#[test]
fn scaling_with_runs_adds_each_seeds_smallest_learned_m() {
    let dir = tmp("seeds");
    let s = sweep();
    let mut runs = vec![];
    // Seed 0 learns from 32 on, seed 1 from 64 (and once, by luck, at 16), seed 2 never.
    for &m in &GRID {
        runs.push(run_row("softmax", 16, m, 0, m >= 32));
        runs.push(run_row("softmax", 16, m, 1, m >= 64 || m == 16));
        runs.push(run_row("softmax", 16, m, 2, false));
        runs.push(run_row("other", 16, m, 3, true));
    }
    let f = both(&dir, "seeds", |p| scaling_with_runs(&s, &runs, p));
    assert_eq!(series(&f, "softmax/seed_threshold"), &[(16.0, 32.0), (16.0, 16.0)]);
    assert!(f.series("mlp/seed_threshold").unwrap().points.is_empty());
    assert!(f.legend.iter().any(|l| l == "each seed's smallest m learned"));
    // Same m*, fits and baselines as without runs.
    let plain = scaling(&s, dir.join("plain.png")).unwrap();
    for p in &plain.series {
        assert_eq!(f.series(&p.name), Some(p), "{}", p.name);
    }
}

#[test]
fn an_online_sweep_plots_steps_to_learn_and_no_sample_baselines() {
    let dir = tmp("online");
    let s = online_sweep();
    let f = both(&dir, "online", |p| scaling(&s, p));
    assert_eq!(series(&f, "attn/median_steps"), &[(8.0, 300.0), (16.0, 450.0)]);
    assert_eq!(series(&f, "attn/variable_step"), &[(8.0, 200.0), (16.0, 300.0)]);
    assert_eq!(series(&f, "attn/not_learned"), &[(32.0, 3000.0)], "drawn at the step budget");
    assert!(f.series("attn/m_star").is_none() && f.series("baseline/gf2").is_none(), "samples do not compare with steps");
    assert!(f.axis_labels()[1].contains("steps"), "{:?}", f.axis_labels());
    assert!(f.title.contains("online"), "{}", f.title);
    // Two T with a median: the two-point exponent only, no log law and no R² to compare.
    assert!(f.series("attn/log_fit").is_none(), "{:?}", f.legend);
    assert!(f.series("attn/power_fit").is_some());
    assert!(f.legend.iter().any(|l| l.contains("α = 0.58") && l.contains("from two points")), "{:?}", f.legend);
    assert!(!f.legend.iter().any(|l| l.contains("R²")), "{:?}", f.legend);
}

#[test]
fn a_sweep_with_nothing_to_draw_is_an_error_naming_the_file() {
    let mut s = sweep();
    s.baselines.clear();
    s.models.truncate(1);
    s.models[0].points = vec![point(8, None)];
    s.models[0].points[0].cells.clear();
    s.models[0].fit = None;
    let dir = tmp("empty");
    let p = dir.join("empty.png");
    let e = scaling(&s, &p).unwrap_err();
    assert!(matches!(e, PlotError::Empty { .. }), "{e}");
    assert!(e.to_string().contains("empty.png"), "{e}");
}

// ---------------------------------------------------------------------------------------
// (b) success map

#[test]
fn success_map_has_one_cell_per_t_and_m_with_its_rate_and_m_star_marked() {
    let dir = tmp("success");
    let s = sweep();
    let f = both(&dir, "success", |p| success_map(&s, "mlp", p));
    let mlp = &s.models[1];
    assert_eq!(f.cells.len(), mlp.points.iter().map(|p| p.cells.len()).sum::<usize>());
    for p in &mlp.points {
        for c in &p.cells {
            let drawn: Vec<&GridCell> = f.cells.iter().filter(|g| g.x == p.t as f64 && g.y == c.m as f64).collect();
            assert_eq!(drawn.len(), 1, "T = {} m = {}", p.t, c.m);
            assert_eq!(drawn[0].value, c.rate);
            assert_eq!(drawn[0].marked, p.m_star == Some(c.m), "T = {} m = {}", p.t, c.m);
        }
    }
    assert_eq!(f.cells.iter().filter(|c| c.marked).count(), 3, "T = 64 has no m*");
    assert_eq!(series(&f, "m_star"), &[(8.0, 64.0), (16.0, 256.0), (32.0, 1024.0)]);
    assert_eq!(series(&f, "T=16/rate")[3], (128.0, 1.0 / 3.0));
    assert!(f.axis_labels().iter().any(|l| l.starts_with("success rate")), "colour bar: {:?}", f.axis_labels());
    assert!(f.axis_labels().contains(&"training-set size m (examples)"));
    assert!(f.axes[0].log && f.axes[1].log, "log T and log m");
    assert!(f.title.contains("mlp"));
}

#[test]
fn success_map_refuses_an_unknown_model_and_an_online_sweep() {
    let dir = tmp("success-bad");
    let e = success_map(&sweep(), "lstm", dir.join("x.png")).unwrap_err().to_string();
    assert!(e.contains("lstm") && e.contains("softmax, mlp") && e.contains("x.png"), "{e}");
    let e = success_map(&online_sweep(), "attn", dir.join("y.svg")).unwrap_err();
    assert!(matches!(e, PlotError::Input { .. }) && e.to_string().contains("online"), "{e}");
}

#[test]
fn refined_columns_keep_their_own_m_values() {
    // Refinement adds m = 45 at T = 16 only: that column has one more cell.
    let dir = tmp("refined");
    let mut s = sweep();
    s.models[0].points[1].cells.insert(1, cell(45, 1));
    let f = success_map(&s, "softmax", dir.join("r.png")).unwrap();
    assert_eq!(f.cells.iter().filter(|c| c.x == 16.0).count(), GRID.len() + 1);
    assert_eq!(f.cells.iter().filter(|c| c.x == 8.0).count(), GRID.len());
    assert!(f.cells.iter().any(|c| c.x == 16.0 && c.y == 45.0 && close(c.value, 1.0 / 3.0)));
}

// ---------------------------------------------------------------------------------------
// (c) attention heat map

/// 2 layers × 2 heads over T = 8 bits; head (1, 0) attends to S = {1, 6} (positions 2, 7).
fn weights() -> Vec<Vec<Vec<f64>>> {
    let uniform = vec![1.0 / 9.0; 9];
    let mut focused = vec![0.02; 9];
    focused[2] = 0.45;
    focused[7] = 0.41;
    vec![vec![uniform.clone(), uniform.clone()], vec![focused, uniform]]
}

#[test]
fn heatmap_marks_exactly_the_s_positions_and_reports_mass_on_s() {
    let dir = tmp("heat");
    let w = weights();
    let s = [6usize, 1];
    let f = both(&dir, "heat", |p| attention_heatmap(&w, &s, "test", p));
    assert_eq!(f.cells.len(), 4 * 9);
    // The colour bar says what the cells are: a mean over inputs, or one input's weights.
    assert_eq!(f.axes.last().unwrap().label, "mean CLS attention weight");
    let one = both(&dir, "heat-one", |p| sparsevar_plot::input_attention_heatmap(&w, &s, "test", p));
    assert_eq!(one.axes.last().unwrap().label, "CLS attention weight on this input");
    assert_eq!(one.cells, f.cells);
    let mut marked: Vec<f64> = f.cells.iter().filter(|c| c.marked).map(|c| c.x).collect();
    marked.sort_by(f64::total_cmp);
    marked.dedup();
    assert_eq!(marked, vec![2.0, 7.0], "S = {{1, 6}} are key positions 2 and 7 (CLS is 0)");
    assert_eq!(f.cells.iter().filter(|c| c.marked).count(), 2 * 4, "one marked cell per row and S bit");
    // Every weight lands in its (row, position) cell.
    for (l, heads) in w.iter().enumerate() {
        for (h, ws) in heads.iter().enumerate() {
            for (p, &v) in ws.iter().enumerate() {
                let row = (l * 2 + h) as f64;
                assert!(f.cells.iter().any(|c| c.x == p as f64 && c.y == row && c.value == v), "L{l} H{h} pos {p}");
            }
        }
    }
    assert_eq!(series(&f, "S"), &[(2.0, 1.0), (7.0, 6.0)]);
    let mass = series(&f, "mass_on_s");
    assert!(close(mass[2].1, 0.86) && close(mass[0].1, 2.0 / 9.0), "{mass:?}");
    assert_eq!(series(&f, "best_head"), &[(1.0, 0.0)]);
    assert!(f.subtitle.contains("S = {1, 6}"), "{}", f.subtitle);
    assert!(f.axis_labels().contains(&"mean CLS attention weight"));
}

#[test]
fn heatmap_rejects_bad_weights_and_s() {
    let dir = tmp("heat-bad");
    let w = weights();
    let e = attention_heatmap(&w, &[8], "t", dir.join("a.png")).unwrap_err().to_string();
    assert!(e.contains("relevant bit 8") && e.contains("T = 8"), "{e}");
    let mut ragged = weights();
    ragged[1][1].pop();
    let e = attention_heatmap(&ragged, &[1], "t", dir.join("b.png")).unwrap_err().to_string();
    assert!(e.contains("layer 1 head 1 has 8 positions"), "{e}");
    assert!(matches!(attention_heatmap(&[], &[1], "t", dir.join("c.png")), Err(PlotError::Empty { .. })));
}

fn member(seed: u64, relevant: Vec<usize>, step: Option<usize>, attention: Option<AttentionSummary>) -> MemberResult {
    MemberResult {
        seed,
        relevant,
        learned: step.is_some(),
        diverged: false,
        step,
        steps_trained: step.unwrap_or(1000),
        test_accuracy: if step.is_some() { 1.0 } else { 0.6 },
        test_loss: 0.01,
        train_loss: 0.01,
        attention,
        norms: None,
        scores: None,
        stopped: None,
    }
}

#[test]
fn member_attention_uses_the_members_s_and_refuses_missing_weights() {
    let dir = tmp("member-heat");
    let att = AttentionSummary { weights: weights(), mass_on_s: vec![vec![0.2, 0.2], vec![0.86, 0.2]], best_head: (1, 0), top_s_equals_s: true };
    let m = member(5, vec![1, 6], Some(300), Some(att));
    let f = member_attention(&m, "seed 5", dir.join("m.svg")).unwrap();
    assert_eq!(series(&f, "S"), &[(2.0, 1.0), (7.0, 6.0)]);
    let none = member(6, vec![1, 6], None, None);
    let e = member_attention(&none, "seed 6", dir.join("n.png")).unwrap_err().to_string();
    assert!(e.contains("seed 6") && e.contains("no attention weights") && e.contains("n.png"), "{e}");
}

// ---------------------------------------------------------------------------------------
// (d) training curves

fn curve(member: usize, seed: u64, step: usize, acc: f64, mass: Option<f64>) -> CurvePoint {
    CurvePoint {
        member,
        seed,
        step,
        train_loss: 1.0 - acc + 0.001,
        test_loss: 1.0 - acc + 0.002,
        test_accuracy: acc,
        best_mass_on_s: mass,
        ..Default::default()
    }
}

#[test]
fn training_curves_mark_learning_and_variable_creation() {
    let dir = tmp("curves");
    // Member 0 creates its variable at 200 (mass 0.6) and learns at 300; member 1 never
    // crosses 0.5 and never learns.
    let curves = vec![
        curve(0, 10, 100, 0.5, Some(0.3)),
        curve(1, 11, 100, 0.5, Some(0.2)),
        curve(0, 10, 200, 0.7, Some(0.6)),
        curve(1, 11, 200, 0.5, Some(0.5)),
        curve(0, 10, 300, 1.0, Some(0.9)),
        curve(1, 11, 300, 0.55, Some(0.4)),
        curve(1, 11, 400, 0.6, Some(0.45)),
    ];
    let members = vec![member(10, vec![0, 3], Some(300), None), member(11, vec![2, 5], None, None)];
    let f = both(&dir, "curves", |p| training_curves(&curves, &members, "curves", p));
    assert_eq!(variable_step(&curves, 0), Some(200));
    assert_eq!(variable_step(&curves, 1), None, "0.5 itself is not more than half");
    assert_eq!(series(&f, "member 0/test_accuracy"), &[(100.0, 0.5), (200.0, 0.7), (300.0, 1.0)]);
    assert_eq!(series(&f, "member 1/test_accuracy").len(), 4);
    assert_eq!(series(&f, "member 0/learned"), &[(300.0, 1.0)]);
    assert_eq!(series(&f, "member 0/variable"), &[(200.0, 0.6)]);
    assert!(f.series("member 1/learned").is_none() && f.series("member 1/variable").is_none());
    assert!(close(series(&f, "member 0/test_loss")[0].1, 0.502));
    assert_eq!(series(&f, "member 1/mass_on_s")[3], (400.0, 0.45));
    assert!(f.legend.iter().any(|l| l == "seed 10: S = {0, 3}"), "{:?}", f.legend);
    assert!(f.legend.iter().any(|l| l.starts_with("variable")), "{:?}", f.legend);
    assert_eq!(f.axis_labels().iter().filter(|l| l.starts_with("training step")).count(), 1, "one shared step axis: {:?}", f.axis_labels());
    assert_eq!(f.axis_labels().len(), 4, "three panels' y labels and one x label: {:?}", f.axis_labels());
    let step_axis = f.axes.iter().find(|a| a.label.starts_with("training step")).unwrap();
    assert!(!step_axis.log, "steps within 10× of each other stay linear");
    assert_eq!(f.axes.iter().filter(|a| a.log).count(), 1, "only the loss axis is logarithmic");
}

#[test]
fn training_curves_of_very_different_lengths_use_a_log_step_axis_and_mlps_get_two_panels() {
    let dir = tmp("curves-log");
    let mut curves: Vec<CurvePoint> = (1..=2).map(|k| curve(0, 0, 100 * k, 0.5 + 0.25 * k as f64, None)).collect();
    curves.extend((1..=50).map(|k| curve(1, 1, 200 * k, 0.5 + 0.01 * k as f64, None)));
    let f = training_curves(&curves, &[], "mlp", dir.join("log.png")).unwrap();
    assert!(f.axis_labels().iter().any(|l| l.contains("log scale")), "{:?}", f.axis_labels());
    assert!(f.axes.iter().filter(|a| a.label.starts_with("training step")).all(|a| a.log));
    assert_eq!(f.axis_labels().len(), 3, "no attention: accuracy and loss only: {:?}", f.axis_labels());
    assert!(f.series("member 0/mass_on_s").is_none());
    assert!(f.legend.iter().any(|l| l == "member 1"), "unlabelled members are numbered: {:?}", f.legend);
    assert!(!f.legend.iter().any(|l| l.starts_with("learned") || l.starts_with("variable")), "no marks, no notes: {:?}", f.legend);
    assert_eq!(f.subtitle, "2 members", "nothing is known about learning without members");
    assert!(matches!(training_curves(&[], &[], "x", dir.join("e.png")), Err(PlotError::Empty { .. })));
}

// ---------------------------------------------------------------------------------------
// (e) comparison

#[test]
fn comparison_draws_every_sweep_and_model_and_refuses_mixed_measures() {
    let dir = tmp("compare");
    let a = sweep();
    let mut b = sweep();
    b.models.truncate(1);
    b.models[0].points[3] = point(64, Some(512));
    let f = both(&dir, "compare", |p| comparison(&[("wide", &a), ("sharp", &b)], p));
    assert_eq!(series(&f, "wide/softmax/m_star").len(), 4);
    assert_eq!(series(&f, "wide/mlp/m_star").len(), 3);
    assert_eq!(series(&f, "wide/mlp/not_learned"), &[(64.0, 1024.0)]);
    assert_eq!(series(&f, "sharp/m_star")[3], (64.0, 512.0), "a one-model sweep is named by its label");
    assert_eq!(f.legend[..3], ["wide: softmax".to_string(), "wide: mlp".into(), "sharp".into()]);
    assert!(f.title.contains("s = 3"));
    // An empty label names curves by model.
    let g = comparison(&[("", &a)], dir.join("plain.png")).unwrap();
    assert!(g.series("softmax/m_star").is_some());

    let e = comparison(&[("fixed", &a), ("online", &online_sweep())], dir.join("mixed.png")).unwrap_err().to_string();
    assert!(e.contains("`online`") && e.contains("mixed.png"), "{e}");
    assert!(matches!(comparison(&[], dir.join("none.png")), Err(PlotError::Empty { .. })));
}

// ---------------------------------------------------------------------------------------
// Files

#[test]
fn format_follows_the_extension_and_folders_are_created() {
    let dir = tmp("format");
    let s = sweep();
    let e = scaling(&s, dir.join("fig.pdf")).unwrap_err();
    assert!(matches!(e, PlotError::Format { .. }) && e.to_string().contains("fig.pdf"), "{e}");
    let f = scaling(&s, dir.join("a/b/fig.PNG")).unwrap();
    assert_eq!(png_size(&f.path), (WIDTH, HEIGHT));
}

#[test]
fn different_data_draws_a_different_picture() {
    // Guards against a figure that ignores its input (e.g. an early return before drawing).
    let dir = tmp("differs");
    let a = sweep();
    let mut b = sweep();
    b.models[0].points[2] = point(32, Some(256));
    let fa = scaling(&a, dir.join("a.png")).unwrap();
    let fb = scaling(&b, dir.join("b.png")).unwrap();
    assert_ne!(std::fs::read(&fa.path).unwrap(), std::fs::read(&fb.path).unwrap());
    // And a PNG with data in it is far from a blank canvas's size.
    let blank_ish = 20_000;
    assert!(std::fs::metadata(&fa.path).unwrap().len() > blank_ish);
}
