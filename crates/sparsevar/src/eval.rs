//! `sparsevar eval RUN_DIR`: reopen a run's saved members (weights/*.safetensors), print
//! their accuracy on fresh samples or given inputs, and write the logits, the inputs and
//! the attention maps of the first inputs into `RUN_DIR/eval/seed-<n>/` (or `--out`).
//! `sparsevar eval FILE.safetensors` does the same for one weights file (a sweep member's),
//! taking model, task and seed from its metadata.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use sparsevar_core::model::ModelSpec;
use sparsevar_experiment::config::ExperimentConfig;
use sparsevar_experiment::weights::{SavedModel, format_inputs, parse_inputs};

use crate::host::Host;
use crate::{BadInput, bad, in_pool};

/// What `sparsevar eval` was asked.
#[derive(Debug)]
pub struct EvalArgs {
    pub dir: PathBuf,
    pub member: Option<u64>,
    pub inputs: Option<PathBuf>,
    pub samples: Option<usize>,
    pub attention: usize,
    pub out: Option<PathBuf>,
    pub backend: Option<String>,
}

/// What `eval` evaluates, and how, from a run folder or one weights file.
struct Opened {
    models: Vec<SavedModel>,
    /// The run's backend and threads (a lone file has neither: cpu, all cores).
    backend: String,
    threads: Option<usize>,
    /// Where output goes without --out.
    default_out: PathBuf,
    /// The folder the model files are named relative to.
    base: PathBuf,
}

/// The members a training run's folder holds (all, or `--member`); output by default in
/// `RUN_DIR/eval`, numbered if taken.
fn open_run(host: &Host, args: &EvalArgs) -> Result<Opened> {
    let dir = &args.dir;
    let config = dir.join("config.yaml");
    if !config.is_file() {
        return bad(format!(
            "{} holds no config.yaml; give the folder `sparsevar train` wrote, or one weights file (a sweep's weights/<model>/….safetensors)",
            dir.display()
        ));
    }
    let cfg = ExperimentConfig::load(&config, &[], &host.registry)?;
    let seeds: Vec<u64> = match args.member {
        Some(s) => vec![s],
        None => cfg.seeds.clone(),
    };
    let models = seeds.iter().map(|&seed| SavedModel::open_run(dir, &cfg.model, &cfg.task, &cfg.seeds, seed, &host.registry)).collect::<Result<Vec<_>, _>>()?;
    Ok(Opened { models, backend: cfg.backend, threads: cfg.threads, default_out: sparsevar_experiment::results::fresh_dir(dir, "eval"), base: dir.clone() })
}

/// One weights file (a sweep's members live in `weights/<model>/`, without a config of their
/// own): the model, task (with its T) and seed come from the file's metadata. The default
/// output folder is `<file name without .safetensors>.eval` beside it.
fn open_file(host: &Host, args: &EvalArgs) -> Result<Opened> {
    let path = &args.dir;
    let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".safetensors")) else {
        return bad(format!("{} is a file, not a run folder; give a run folder or a weights file (….safetensors)", path.display()));
    };
    let model = SavedModel::open_file(path, &host.registry)?;
    if let Some(s) = args.member.filter(|&s| s != model.meta.seed) {
        return bad(format!("--member {s}: {} holds seed {}", path.display(), model.meta.seed));
    }
    let parent = path.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let default_out = sparsevar_experiment::results::fresh_dir(&parent, &format!("{stem}.eval"));
    Ok(Opened { models: vec![model], backend: "cpu".into(), threads: None, default_out, base: parent })
}

/// Fresh samples when neither --inputs nor --samples is given.
const DEFAULT_SAMPLES: usize = 1024;

pub fn eval(host: &Host, args: EvalArgs) -> Result<()> {
    let dir = &args.dir;
    if args.samples == Some(0) {
        return bad("--samples 0: evaluate on at least 1 sample");
    }
    // Every member is opened (and checked) before anything is computed or written.
    let Opened { models, backend, threads, default_out, base } = if dir.is_file() { open_file(host, &args)? } else { open_run(host, &args)? };
    let seeds: Vec<u64> = models.iter().map(|m| m.meta.seed).collect();
    let backend_name = host.resolve(args.backend.as_deref().unwrap_or(&backend));
    let inputs_text = match &args.inputs {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| BadInput(format!("cannot read --inputs {}: {e}", p.display())))?),
        None => None,
    };
    // A second evaluation never overwrites the first: the default folder is numbered if
    // taken (eval, eval-2, …), and a given --out must not hold these members' files yet.
    let out_root = match &args.out {
        Some(out) => {
            if let Some(taken) = seeds.iter().map(|s| out.join(format!("seed-{s}"))).find(|f| f.exists()) {
                return bad(format!("{} exists: give another --out (or leave it out for a fresh eval folder in the run)", taken.display()));
            }
            out.clone()
        }
        None => default_out,
    };
    in_pool(threads, |_| {
        let mut backend = host.backend(&backend_name)?;
        for model in &models {
            let d = model.data();
            let seed = model.meta.seed;
            let (tokens, labels, source) = match (&inputs_text, &args.inputs) {
                (Some(text), Some(p)) => {
                    let tokens = parse_inputs(text, d.seq_len, d.alphabet).map_err(|e| BadInput(format!("--inputs {}: {e}", p.display())))?;
                    let labels = model.labels(&tokens);
                    let source = format!("the {} inputs of {} (noise-free labels)", labels.len(), p.display());
                    (tokens, labels, source)
                }
                _ => {
                    let n = args.samples.unwrap_or(DEFAULT_SAMPLES);
                    let (tokens, labels) = model.fresh_samples(n)?;
                    (tokens, labels, format!("{n} fresh samples"))
                }
            };
            let out = model.run(backend.as_mut(), &tokens)?;
            let predictions = out.predictions();
            let correct = predictions.iter().zip(&labels).filter(|(p, y)| p == y).count();
            let accuracy = correct as f64 / labels.len() as f64;
            let folder = out_root.join(format!("seed-{seed}"));
            std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
            let file = |name: &str| folder.join(name);
            std::fs::write(file("inputs.txt"), format_inputs(&tokens, d.seq_len)).with_context(|| format!("writing {}", file("inputs.txt").display()))?;
            let mut csv = String::from("input,label,prediction");
            for c in 0..d.classes {
                let _ = write!(csv, ",logit_{c}");
            }
            csv.push('\n');
            for (i, row) in out.logits.iter().enumerate() {
                let _ = write!(csv, "{i},{},{}", labels[i], predictions[i]);
                for v in row {
                    // Shortest text that reads back as the same f64.
                    let _ = write!(csv, ",{v:?}");
                }
                csv.push('\n');
            }
            std::fs::write(file("logits.csv"), csv).with_context(|| format!("writing {}", file("logits.csv").display()))?;
            let shown = args.attention.min(tokens.len() / d.seq_len);
            let mut figures = 0;
            if matches!(model.meta.model, ModelSpec::Transformer(_)) && shown > 0 {
                let maps: Vec<_> = out.attention.iter().take(shown).collect();
                let json = serde_json::to_string(&maps).expect("numbers serialise");
                std::fs::write(file("attention.json"), json).with_context(|| format!("writing {}", file("attention.json").display()))?;
                for (i, w) in maps.iter().enumerate() {
                    let row = &tokens[i * d.seq_len..(i + 1) * d.seq_len];
                    let bits: String = if d.alphabet <= 10 { row.iter().map(|x| char::from(b'0' + x)).collect() } else { format!("{row:?}") };
                    let title = format!("seed {seed}, input {i} = {bits}: label {}, predicted {}", labels[i], predictions[i]);
                    for ext in ["png", "svg"] {
                        let p = file(&format!("attention_input{i}.{ext}"));
                        sparsevar_plot::input_attention_heatmap(w, model.task.relevant(), &title, &p).with_context(|| format!("drawing {}", p.display()))?;
                        figures += 1;
                    }
                }
            }
            println!(
                "seed {seed}: accuracy {accuracy:.4} ({correct}/{}) on {source}; {} (step {}); logits{} in {}",
                labels.len(),
                model.path.strip_prefix(&base).unwrap_or(&model.path).display(),
                model.meta.step,
                if figures > 0 { format!(", {shown} attention map(s)") } else { String::new() },
                folder.display()
            );
        }
        Ok(())
    })
}
