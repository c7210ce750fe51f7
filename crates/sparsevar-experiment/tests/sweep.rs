//! A small sweep end to end: rows for every (T, m, seed), m* where the data says, the
//! baselines where theory puts them, and --resume retraining only what is missing.

use sparsevar_core::backend::Backend;
use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::results::Provenance;
use sparsevar_experiment::sweep::{SweepConfig, read_runs, run_sweep};
use sparsevar_experiment::workflow::{Event, RunError, observe};
use sparsevar_test_support::ScratchDir;

const SMALL: &str = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
  uniform: { kind: transformer, d_model: 16, heads: 2, mlp: 2, attention: uniform }
train: { batch: 32, max_steps: 1500, lr: 0.003, eval_every: 50, test_samples: 256 }
sweep:
  T: [6, 10]
  m: [16, 64, 256]
  seeds: [0, 1, 2]
  baselines: [gf2, subset_search]
";

fn provenance() -> Provenance {
    Provenance::new("test", None, "cpu".into(), 1, vec![0, 1, 2])
}

fn make() -> Result<Box<dyn Backend>, String> {
    Ok(Box::new(CpuBackend::<f32>::new()))
}

#[test]
fn sweep_finds_m_star_and_resume_retrains_only_what_is_missing() {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(SMALL, "small.yaml", &[], &reg).unwrap();
    assert_eq!(cfg.needed(), 2, "majority of 3");
    let d = ScratchDir::new("sweep-resume");
    let summary = run_sweep(&cfg, &d, false, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap();
    let rows = read_runs(&d).unwrap();
    assert_eq!(summary.runs, rows, "the rows returned are the rows written");
    let summary = summary.summary;
    assert_eq!(rows.len(), 2 * 2 * 3 * 3, "model × T × m × seed");
    // Attention learns a 2-parity of 6 bits from at most 256 samples, and m* is the
    // smallest m whose cell succeeded.
    let attn = &summary.models[0];
    assert_eq!(attn.model, "attn");
    assert_eq!(summary.models[1].model, "uniform");
    for p in &attn.points {
        let first = p.cells.iter().find(|c| c.success).map(|c| c.m);
        assert_eq!(p.m_star, first);
    }
    assert!(attn.points[0].m_star.is_some(), "{:?}", attn.points[0]);
    // Every cell is a proper count with its interval.
    for c in &attn.points[0].cells {
        assert_eq!(c.seeds, 3);
        assert!(c.wilson_low <= c.rate && c.rate <= c.wilson_high);
        assert_eq!(c.success, c.learned >= 2);
    }
    // GF(2) needs about T samples, subset search about log2 C(T, 2).
    for b in &summary.baselines {
        assert_eq!(b.gf2_m_star, Some(16), "T = {}", b.t);
        assert_eq!(b.subset_search_m_star, Some(16), "T = {}", b.t);
        assert!((b.info_floor - ((b.t * (b.t - 1) / 2) as f64).log2()).abs() < 1e-9);
    }

    // Lose one unit's result (a task that died before writing it), then resume: only that
    // unit trains again. A partial write never shows: results are renamed into place whole.
    assert_eq!(sparsevar_experiment::units::unit_count(&d), 4, "one unit per (T, model): 9 members each");
    std::fs::remove_file(sparsevar_experiment::units::result_path(&d, 1)).unwrap();
    let mut ensembles = 0;
    let again = run_sweep(
        &cfg,
        &d,
        true,
        &reg,
        &mut make,
        &provenance(),
        &mut observe(|e| {
            if let Event::Ensemble { members, .. } = e {
                ensembles += members;
            }
            true
        }),
    )
    .unwrap()
    .summary;
    assert_eq!(ensembles, 9, "only the missing unit retrains");
    let rows2 = read_runs(&d).unwrap();
    assert_eq!(rows2.len(), 36);
    let key = |r: &sparsevar_experiment::sweep::RunRow| (r.model.clone(), r.t, r.m, r.seed, r.learned, r.step);
    let mut a: Vec<_> = rows.iter().map(key).collect();
    let mut b: Vec<_> = rows2.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "resumed results equal the uninterrupted ones");
    assert_eq!(again.models[0].points[0].m_star, summary.models[0].points[0].m_star);

    // Without --resume an existing folder is refused; with another config, too.
    let err = run_sweep(&cfg, &d, false, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap_err();
    assert!(matches!(err, RunError::SweepExists(_)) && err.is_input(), "{err}");
    assert!(err.to_string().contains("already holds results"), "{err}");
    let other = SweepConfig::parse(SMALL, "small.yaml", &["train.lr=0.01".into()], &reg).unwrap();
    let err = run_sweep(&other, &d, true, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap_err();
    assert!(matches!(err, RunError::OtherConfig(_)) && err.is_input(), "{err}");
    assert!(err.to_string().contains("different config"), "{err}");
}

#[test]
fn sweep_config_errors_name_the_key() {
    let reg = Registry::builtin();
    let bad = |text: &str| SweepConfig::parse(text, "s.yaml", &[], &reg).unwrap_err().to_string();
    let base = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: transformer } }\n";
    assert!(bad(&format!("{base}sweep: {{ T: [] }}\n")).contains("sweep.T is empty"));
    assert!(bad(&format!("{base}sweep: {{ T: [8], seeds: [0], bogus: 1 }}\n")).contains("unknown field `bogus`"));
    assert!(bad(&format!("{base}sweep: {{ T: [1] }}\n")).contains("T = 1"));
    assert!(bad(&format!("{base}sweep: {{ T: [8], baselines: [magic] }}\n")).contains("unknown baseline `magic`"));
    let e = bad("task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: transformer, depth: 3 } }\nsweep: { T: [8] }\n");
    assert!(e.contains("models.a") && e.contains("unknown field `depth`"), "{e}");
    let e = bad("task: { kind: sparse_and, s: 2 }\nmodels: { a: { kind: mlp } }\nsweep: { T: [8], baselines: [gf2] }\n");
    assert!(e.contains("sparse parities only"), "{e}");
    // The list: empty grids, θ outside (0, 1], k = 0 seeds, an unknown model.
    for (text, key) in [
        (format!("{base}sweep: {{ T: [8], m: [] }}\n"), "sweep.m"),
        (format!("{base}sweep: {{ T: [8], m: {{ from: 64, to: 32, factor: 2 }} }}\n"), "sweep.m"),
        (format!("{base}sweep: {{ T: [8], m: {{ from: 8, to: 64, factor: 1 }} }}\n"), "sweep.m"),
        (format!("{base}sweep: {{ T: [8], seeds: [] }}\n"), "sweep.seeds"),
        (format!("{base}train: {{ target_accuracy: 1.5 }}\nsweep: {{ T: [8] }}\n"), "train.target_accuracy"),
        (format!("{base}train: {{ target_accuracy: 0 }}\nsweep: {{ T: [8] }}\n"), "train.target_accuracy"),
        (format!("{base}sweep: {{ T: [8], success_fraction: 0 }}\n"), "sweep.success_fraction"),
        (format!("{base}sweep: {{ T: [8], success_fraction: 1.2 }}\n"), "sweep.success_fraction"),
        ("task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: lstm } }\nsweep: { T: [8] }\n".to_string(), "models.a"),
        ("task: { kind: sparse_parity, s: 2 }\nmodels: {}\nsweep: { T: [8] }\n".to_string(), "models"),
    ] {
        let e = bad(&text);
        assert!(e.contains(key), "{text}: the error should name {key}: {e}");
    }
}

#[test]
fn geometric_grids() {
    use sparsevar_experiment::sweep::MGrid;
    assert_eq!(MGrid::Geometric { from: 16, to: 256, factor: 2.0 }.values(), vec![16, 32, 64, 128, 256]);
    assert_eq!(MGrid::Geometric { from: 10, to: 40, factor: 1.5 }.values(), vec![10, 15, 23, 34]);
    assert_eq!(MGrid::List(vec![64, 8, 8]).values(), vec![8, 64]);
}

#[test]
fn online_sweep_reports_steps_to_learn_and_the_variable_creation_step() {
    let reg = Registry::builtin();
    let text = "
task: { kind: sparse_parity, s: 2 }
models:
  attn: { kind: transformer, d_model: 16, heads: 2, mlp: 2 }
train: { online: true, batch: 32, max_steps: 3000, lr: 0.003, eval_every: 25, test_samples: 256 }
sweep:
  T: [6, 12]
  seeds: [0, 1, 2]
";
    let cfg = SweepConfig::parse(text, "online.yaml", &[], &reg).unwrap();
    let d = ScratchDir::new("sweep-online");
    let summary = run_sweep(&cfg, &d, false, &reg, &mut make, &provenance(), &mut observe(|_| true)).unwrap();
    let rows = read_runs(&d).unwrap();
    assert_eq!(summary.runs, rows, "the rows returned are the rows written");
    let summary = summary.summary;
    assert_eq!(rows.len(), 2 * 3);
    assert!(rows.iter().all(|r| r.m == 0), "online rows carry m = 0");
    for p in &summary.models[0].points {
        let steps = p.median_steps_to_learn.unwrap_or_else(|| panic!("T = {} learned by none: {rows:?}", p.t));
        assert!(steps >= 25.0, "{steps}");
        // A variable is created (attention mass on S above 1/2) no later than the
        // accuracy jump, in every member that learned.
        for r in rows.iter().filter(|r| r.t == p.t && r.learned) {
            let v = r.variable_step.expect("learned members created the variable");
            assert!(v <= r.step.unwrap(), "{r:?}");
        }
    }
}
