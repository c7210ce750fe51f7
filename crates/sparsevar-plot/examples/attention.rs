//! Train an ensemble on the CPU and draw each member's attention heat map and the training
//! curves — the figures that need attention weights, which summary.json does not keep.
//!
//! `cargo run -p sparsevar-plot --example attention -- CONFIG OUT_DIR [key=value ...]`
//!
//! e.g. `scripts/parity_t16.yaml /tmp/att 'seeds=[0,1,2]' train.max_steps=2000` trains three
//! members of a (16, 3)-sparse parity in well under a minute. Each heat map should show the
//! best head's weight concentrated on the three outlined columns of S.

use std::path::PathBuf;

use sparsevar_core::registry::Registry;
use sparsevar_cpu::CpuBackend;
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::train::{RunSpec, Trainer};
use sparsevar_plot::{member_attention, training_curves};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, out, overrides @ ..] = args.as_slice() else {
        return Err("usage: attention CONFIG OUT_DIR [key=value ...]".into());
    };
    let out = PathBuf::from(out);
    let registry = Registry::builtin();
    let cfg = ExperimentConfig::load(config.as_ref(), overrides, &registry)?;
    let spec = RunSpec { task: cfg.task.clone(), model: cfg.model.clone(), train: cfg.train.clone(), seeds: cfg.seeds.clone(), samples: None };
    let mut backend = CpuBackend::<f32>::new();
    let mut trainer = Trainer::new(&mut backend, spec, &registry)?;
    let result = trainer.run(&mut |_| true)?;
    let task = format!("{}, T = {}, s = {}", cfg.task.kind.replace('_', " "), cfg.task.t, cfg.task.s);
    for ext in ["png", "svg"] {
        for m in &result.members {
            let title = format!("CLS attention, seed {} ({}): {task}", m.seed, if m.learned { "learned" } else { "not learned" });
            let f = member_attention(m, &title, out.join(format!("attention_seed{}.{ext}", m.seed)))?;
            println!("{}", f.path.display());
        }
        let f = training_curves(&result.curves, &result.members, &format!("Training curves: {task}"), out.join(format!("curves.{ext}")))?;
        println!("{}", f.path.display());
    }
    Ok(())
}
