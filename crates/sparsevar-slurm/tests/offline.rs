//! The executor's parts that need no cluster: option strings, the array script, scontrol's
//! output, index lists, a missing sbatch.

use sparsevar_slurm::state::{TaskState, format_indices, parse_indices, parse_scontrol};
use sparsevar_slurm::{ArrayJob, SlurmError, SlurmExecutor, SlurmOptions};
use sparsevar_test_support::ScratchDir;

#[test]
fn options_become_sbatch_lines_in_order_later_keys_replace_earlier() {
    let o = SlurmOptions::parse(" partition=gpu, time=01:00:00 ,gres=gpu:1, exclusive, nodelist=\"n1,n2\", mem_per_cpu=2G").unwrap();
    assert_eq!(
        o.sbatch_lines(),
        [
            "#SBATCH --partition=gpu",
            "#SBATCH --time=01:00:00",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --exclusive",
            "#SBATCH --nodelist=n1,n2",
            "#SBATCH --mem-per-cpu=2G"
        ]
    );
    // `--slurm` over the YAML's `slurm:`: a repeated key takes the later value and place.
    let yaml = SlurmOptions::parse("partition=cpu, account=lab").unwrap();
    let merged = yaml.merged(&SlurmOptions::parse("partition=gpu").unwrap());
    assert_eq!(merged.sbatch_lines(), ["#SBATCH --account=lab", "#SBATCH --partition=gpu"]);
    assert!(SlurmOptions::parse("  ").unwrap().is_empty());
}

#[test]
fn malformed_option_strings_are_one_line_input_errors() {
    for (text, needle) in [
        ("partition=gpu,,time=1", "two commas"),
        ("partition=", "has no value"),
        ("array=0-3", "set by sparsevar"),
        ("output=/tmp/x", "set by sparsevar"),
        ("1gpu=2", "not an sbatch option name"),
        ("part ition=gpu", "not an sbatch option name"),
        ("nodelist=\"a,b", "not closed"),
    ] {
        let e = SlurmOptions::parse(text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(e.is_input());
    }
}

#[test]
fn the_script_runs_the_command_with_the_task_index_appended() {
    let dir = ScratchDir::created("slurm-script");
    let job = ArrayJob {
        folder: dir.join("slurm"),
        command: vec!["printf".into(), "<%s>\\n".into(), "it's".into(), "a b".into(), "$HOME".into()],
        units: 3,
        name: "sweep test".into(),
    };
    let script = job.script(&SlurmOptions::parse("partition=gpu, comment=two words").unwrap());
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[0], "#!/bin/bash");
    assert!(lines.contains(&"#SBATCH --job-name=\"sweep test\""), "{script}");
    assert!(lines.contains(&format!("#SBATCH --output={}/slurm/logs/%A_%a.out", dir.display()).as_str()), "{script}");
    assert!(lines.contains(&"#SBATCH --partition=gpu"), "{script}");
    assert!(lines.contains(&"#SBATCH --comment=\"two words\""), "{script}");
    // Every #SBATCH line comes before the first command (sbatch stops reading them there).
    let first_cmd = lines.iter().position(|l| !l.starts_with('#')).unwrap();
    assert!(lines[first_cmd..].iter().all(|l| !l.starts_with("#SBATCH")));
    // Run it as Slurm would: the arguments arrive intact, unexpanded, the index last.
    std::fs::create_dir_all(&job.folder).unwrap();
    std::fs::write(job.script_path(), &script).unwrap();
    let out = std::process::Command::new("bash").arg(job.script_path()).env("SLURM_ARRAY_TASK_ID", "2").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<it's>\n<a b>\n<$HOME>\n<2>\n");
}

#[test]
fn scontrol_lines_give_each_tasks_state() {
    // Captured from slurmctld 22.05.8 (trimmed): a pending remainder record and two running tasks.
    let text = "JobId=2 ArrayJobId=2 ArrayTaskId=2-3%2 ArrayTaskThrottle=2 JobName=t UserId=root(0) JobState=PENDING Reason=JobArrayTaskLimit Command=/tmp/a b.sh\n\
JobId=4 ArrayJobId=2 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=t JobState=RUNNING Reason=None\n\
JobId=3 ArrayJobId=2 ArrayTaskId=0 ArrayTaskThrottle=2 JobName=t JobState=CANCELLED Reason=None\n\
JobId=5 ArrayJobId=2 ArrayTaskId=5 JobName=t JobState=COMPLETED Reason=None\n";
    let s = parse_scontrol(text).unwrap();
    let states: Vec<(usize, TaskState)> = s.iter().map(|(i, (t, _))| (*i, *t)).collect();
    assert_eq!(states, [(0, TaskState::Failed), (1, TaskState::Running), (2, TaskState::Pending), (3, TaskState::Pending), (5, TaskState::Completed)]);
    assert_eq!(s[&0].1, "CANCELLED");
    for (state, t) in [
        ("PREEMPTED", TaskState::Failed),
        ("TIMEOUT", TaskState::Failed),
        ("NODE_FAIL", TaskState::Failed),
        ("REQUEUED", TaskState::Pending),
        ("COMPLETING", TaskState::Running),
    ] {
        assert_eq!(TaskState::from_slurm(state), t, "{state}");
    }
    assert!(parse_scontrol("JobId=7 JobState=RUNNING").unwrap_err().contains("ArrayTaskId"));
}

#[test]
fn index_lists_round_trip_with_ranges() {
    assert_eq!(format_indices(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
    assert_eq!(format_indices(&[4]), "4");
    assert_eq!(parse_indices("0-3,7,9-10").unwrap(), [0, 1, 2, 3, 7, 9, 10]);
    assert!(parse_indices("3-1").is_err());
    assert!(parse_indices("a").is_err());
}

#[test]
fn a_missing_sbatch_names_what_to_install() {
    let empty = ScratchDir::created("slurm-nopath");
    let e = SlurmExecutor::with_search_path(SlurmOptions::default(), None, 1, empty.as_os_str()).unwrap_err();
    assert!(matches!(e, SlurmError::NotInstalled { command: "sbatch" }));
    let msg = e.to_string();
    assert!(msg.contains("slurm-client") && msg.contains("--executor local"), "{msg}");
    assert!(e.is_input());
}
