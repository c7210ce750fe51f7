//! The sweep file's optional `slurm:` section (sbatch options for `--executor slurm`).

use sparsevar_core::registry::Registry;
use sparsevar_experiment::sweep::SweepConfig;

const BASE: &str = "task: { kind: sparse_parity, s: 2 }\nmodels: { a: { kind: transformer } }\nsweep: { T: [8] }\n";

#[test]
fn slurm_section_keeps_file_order_flags_and_numbers() {
    let reg = Registry::builtin();
    let cfg = SweepConfig::parse(BASE, "s.yaml", &[], &reg).unwrap();
    assert!(cfg.slurm.is_empty());
    let text = format!("{BASE}slurm: {{ partition: gpu, time: \"01:00:00\", cpus-per-task: 4, exclusive: true, requeue: false }}\n");
    let cfg = SweepConfig::parse(&text, "s.yaml", &[], &reg).unwrap();
    let want: Vec<(String, Option<String>)> = vec![
        ("partition".into(), Some("gpu".into())),
        ("time".into(), Some("01:00:00".into())),
        ("cpus-per-task".into(), Some("4".into())),
        ("exclusive".into(), None),
    ];
    assert_eq!(cfg.slurm, want);
}

#[test]
fn slurm_section_errors_name_the_key() {
    let reg = Registry::builtin();
    let bad = |s: &str| SweepConfig::parse(&format!("{BASE}{s}\n"), "s.yaml", &[], &reg).unwrap_err().to_string();
    assert!(bad("slurm: gpu").contains("slurm must be a mapping"), "{}", bad("slurm: gpu"));
    let e = bad("slurm: { gres: [gpu, 1] }");
    assert!(e.contains("slurm.gres must be a string"), "{e}");
}
