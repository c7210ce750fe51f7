//! The i.i.d. regime (`train.online: true`): a sweep over T with fresh samples every step
//! reports each seed's learning step, the censored median, samples seen and the fits of
//! steps-to-learn against T, through the same units, results files and resume as any sweep.

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::results::Provenance;
use sparsevar_experiment::sweep::{SweepConfig, censored_median, load_sweep_summary, read_runs, run_sweep};
use sparsevar_experiment::workflow::observe;
use sparsevar_test_support::ScratchDir;

const IID: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { online: true, batch: 16, max_steps: 1500, lr: 0.003, eval_every: 25, test_samples: 256 }
sweep:
  T: [4, 6, 8]
  seeds: [0, 1, 2]
";

fn make() -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(CpuBackend::<f32>::new()))
}

fn provenance() -> Provenance {
    Provenance::new("test", None, "cpu".into(), 1, vec![0, 1, 2])
}

#[test]
fn the_censored_median_counts_seeds_that_did_not_learn_as_slowest() {
    assert_eq!(censored_median(vec![300.0, 100.0, 200.0], 3), Some(200.0));
    // 2 of 3 learned: the median is the slower of the two.
    assert_eq!(censored_median(vec![100.0, 500.0], 3), Some(500.0));
    // 3 of 4: the mean of the middle two, both finite.
    assert_eq!(censored_median(vec![100.0, 200.0, 400.0], 4), Some(300.0));
    // Half or fewer learned: the median lies among the seeds that did not learn.
    assert_eq!(censored_median(vec![100.0, 200.0], 4), None);
    assert_eq!(censored_median(vec![100.0], 3), None);
    assert_eq!(censored_median(vec![], 0), None);
}

#[test]
fn an_online_sweep_reports_each_seeds_step_the_median_and_the_fits_and_resumes() {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(IID, "iid.yaml", &[], &reg).unwrap();
    let d = ScratchDir::new("sweep-iid");
    let out = run_sweep(&cfg, &d, false, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap();
    let rows = read_runs(&d).unwrap();
    assert_eq!(rows.len(), 3 * 3, "one row per (T, seed)");
    let model = &out.summary.models[0];
    assert!(out.summary.success_rule.starts_with("i.i.d., 16 fresh samples a step"), "{}", out.summary.success_rule);
    for p in &model.points {
        let o = p.online.as_ref().unwrap_or_else(|| panic!("T = {}: no online point", p.t));
        assert_eq!(o.seeds, 3);
        assert_eq!(o.per_seed.iter().map(|s| s.seed).collect::<Vec<_>>(), vec![0, 1, 2]);
        for s in &o.per_seed {
            let r = rows.iter().find(|r| r.t == p.t && r.seed == s.seed).unwrap();
            assert_eq!(s.step, r.step.filter(|_| r.learned), "{r:?}");
            assert_eq!(s.samples_seen, s.step.map(|x| x * 16));
            assert_eq!(s.steps_trained, r.steps_trained);
        }
        let learned: Vec<f64> = rows.iter().filter(|r| r.t == p.t && r.learned).map(|r| r.step.unwrap() as f64).collect();
        assert_eq!(o.learned, learned.len());
        assert_eq!(p.median_steps_to_learn, censored_median(learned, 3), "T = {}", p.t);
        assert_eq!(o.median_samples_seen, p.median_steps_to_learn.map(|m| m * 16.0));
    }
    // The quick task is learned at every T, so every T has a median and the fits use them all.
    let medians: Vec<(usize, f64)> = model.points.iter().map(|p| (p.t, p.median_steps_to_learn.unwrap_or_else(|| panic!("T = {}: {rows:?}", p.t)))).collect();
    let fit = model.fit.as_ref().expect("three medians give a fit");
    assert_eq!(Some(fit), sparsevar_experiment::fits::fit_scaling_of(&medians, "steps").as_ref());
    assert!(fit.verdict.contains("steps"), "{}", fit.verdict);
    assert!(fit.power.r2.is_finite() && fit.log.r2.is_finite());
    // The summary file holds the same points.
    assert_eq!(load_sweep_summary(&d).unwrap().models[0].points, model.points);

    // A lost unit result is retrained on --resume and gives the same rows.
    std::fs::remove_file(d.join("results/0001.csv")).unwrap();
    let again = run_sweep(&cfg, &d, true, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap();
    assert_eq!(again.summary.models[0].points, model.points);
    assert_eq!(read_runs(&d).unwrap().len(), rows.len());
}

#[test]
fn training_set_keys_are_refused_in_the_iid_regime_in_one_line() {
    let reg = Registry::builtin();
    let base = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: transformer } }\ntrain: { online: true }\n";
    for (sweep, key) in [
        ("{ T: [8], m: [16, 32] }", "sweep.m"),
        ("{ T: [8], m: { from: 8, to: 64, factor: 2 } }", "sweep.m"),
        ("{ T: [8], refine: 2 }", "sweep.refine"),
        ("{ T: [8], budgets: [1000, 2000] }", "sweep.budgets"),
        ("{ T: [8], baselines: [gf2] }", "sweep.baselines"),
        ("{ T: [8], learner: best_of_k, k: 4 }", "sweep.learner"),
    ] {
        let text = format!("{base}sweep: {sweep}\n");
        let e = SweepConfig::parse(&text, "iid.yaml", &[], &reg).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("online"), "{sweep}: the error should name {key} and train.online: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // Without train.online the same m grid is fine, and an online sweep without m parses.
    SweepConfig::parse("task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: transformer } }\nsweep: { T: [8], m: [16, 32] }\n", "m.yaml", &[], &reg)
        .unwrap();
    let cfg = SweepConfig::parse(&format!("{base}sweep: {{ T: [8] }}\n"), "iid.yaml", &[], &reg).unwrap();
    // Its resolved config (what config.yaml holds) reads back: the default m is not "set".
    SweepConfig::parse(&cfg.to_yaml(), "config.yaml", &[], &reg).unwrap();
}
