//! Checkpoints of a training run: everything [`crate::train::Trainer`] needs to go on
//! exactly where it was, in one file replaced whole.
//!
//! `checkpoint.safetensors` holds the tensors (each active member's parameters, the
//! optimizer's moment buffers, the parameters of members that already finished, all f64, so
//! every backend's values round-trip exactly) under ParamStore's own names, and in the file's
//! metadata: the trainer's state as JSON ([`TrainerState`]: step, active members, every
//! random stream's position, finished members' results), the curves so far as metrics.csv
//! text (CSV floats read back bit for bit, NaN and inf included), the resolved config it
//! was written for, and a checksum over all of it. A checkpoint is written to a temporary
//! file and renamed over the old one, so a kill at any moment leaves the previous checkpoint
//! or the new one, never a mix; a leftover temporary file is ignored.
//!
//! This file is internal to resuming (`sparsevar train --resume`); trained weights for other
//! tools are written separately.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sparsevar_core::rng::Pcg32;

use crate::results::{MemberSummary, nan_if_null};
use crate::train::CurvePoint;

/// The checkpoint's file name in a results folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Where a checkpoint is written before it is renamed to [`CHECKPOINT_FILE`].
pub const CHECKPOINT_TEMP: &str = "checkpoint.safetensors.tmp";
/// The `format` metadata entry: a file of another format or version is refused.
const FORMAT: &str = "sparsevar-checkpoint/1";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Truncated, corrupted, or not a sparsevar checkpoint.
    #[error("{}: not a usable checkpoint ({why}); remove it to start again, or train into another --out", path.display())]
    Corrupt { path: PathBuf, why: String },
}

impl CheckpointError {
    fn corrupt(path: &Path, why: impl Into<String>) -> Self {
        CheckpointError::Corrupt { path: path.to_path_buf(), why: why.into() }
    }
}

/// Where one member's minibatch stream stands: the current epoch order of its training set,
/// the position in it, and its generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    pub order: Vec<usize>,
    pub pos: usize,
    pub rng: Pcg32,
}

/// The trainer's host-side state at a step (the tensors travel beside it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps taken.
    pub step: usize,
    /// Members still training, in slot order.
    pub active: Vec<usize>,
    /// The optimizer's step counter (bias correction, schedule).
    pub optimizer_steps: usize,
    /// Every member's minibatch stream (the test sets are drawn again from the seeds).
    pub sources: Vec<SourceState>,
    /// Each member's loss on its first batch (the divergence rule's reference).
    #[serde(deserialize_with = "nan_if_null")]
    pub initial_loss: Option<Vec<f64>>,
    /// Results of the members that finished (learned or diverged), by member.
    pub done: Vec<Option<MemberSummary>>,
    /// The latest evaluation of each member still training (only its accuracy, losses and
    /// attention are used).
    pub last_eval: Vec<Option<MemberSummary>>,
    #[serde(deserialize_with = "nan_if_null")]
    pub last_train_loss: Vec<f64>,
    /// Wall-clock seconds trained so far (summed over resumes).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// The builds (git revisions, "unrecorded" where a program did not know its own) that
    /// trained the run up to this step, in order, each once; filled in by the workflow,
    /// which knows the build. Empty in the checkpoints of older programs.
    #[serde(default)]
    pub builds: Vec<String>,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The resolved config (YAML) of the run it belongs to.
    pub config: String,
    pub state: TrainerState,
    /// metrics.csv rows up to the checkpoint's step.
    pub curves: Vec<CurvePoint>,
    /// (name, shape, values) in the order written.
    pub tensors: Vec<(String, Vec<usize>, Vec<f64>)>,
}

/// FNV-1a (64-bit) over the parts, each followed by its length, so moving bytes between
/// parts changes the sum too.
fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain((p.len() as u64).to_le_bytes().iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn curves_csv(curves: &[CurvePoint]) -> Result<String, String> {
    let mut w = csv::WriterBuilder::new().has_headers(true).from_writer(Vec::new());
    for c in curves {
        w.serialize(c).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

impl Checkpoint {
    /// The file's bytes: safetensors with the state, curves, config and checksum as metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let state = serde_json::to_string(&self.state).map_err(|e| format!("state: {e}"))?;
        let curves = curves_csv(&self.curves)?;
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
            self.tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        // safetensors orders the data by dtype and name; the checksum covers it in that order.
        let mut sorted: Vec<&(String, Vec<usize>, Vec<u8>)> = raw.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parts: Vec<&[u8]> = vec![FORMAT.as_bytes(), state.as_bytes(), curves.as_bytes(), self.config.as_bytes()];
        for t in &sorted {
            parts.push(t.0.as_bytes());
            parts.push(&t.2);
        }
        let sum = checksum(&parts);
        let views = raw
            .iter()
            .map(|(n, s, b)| {
                Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b).map_err(|e| format!("tensor {n}: {e}"))?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("state".to_string(), state),
            ("curves".to_string(), curves),
            ("config".to_string(), self.config.clone()),
            ("checksum".to_string(), format!("{sum:016x}")),
        ]);
        safetensors::serialize(views, Some(meta)).map(crate::weights::sorted_header).map_err(|e| e.to_string())
    }

    /// Parse a checkpoint file's bytes (`path` names it in errors): the format, the checksum
    /// and every part are checked.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |why: String| CheckpointError::corrupt(path, why);
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("truncated or damaged: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no `{k}` entry in its metadata")));
        let format = get("format")?;
        if format != FORMAT {
            return Err(bad(format!("format `{format}`, this program reads `{FORMAT}`")));
        }
        let (state_text, curves_text, config) = (get("state")?, get("curves")?, get("config")?);
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut tensors = Vec::new();
        let mut parts: Vec<Vec<u8>> = vec![FORMAT.into(), state_text.clone().into(), curves_text.clone().into(), config.clone().into()];
        for n in names {
            let view = st.tensor(&n).map_err(|e| bad(e.to_string()))?;
            if view.dtype() != safetensors::Dtype::F64 {
                return Err(bad(format!("tensor {n} is {:?}, expected F64", view.dtype())));
            }
            let values: Vec<f64> = view.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
            parts.push(n.clone().into());
            parts.push(view.data().to_vec());
            tensors.push((n, view.shape().to_vec(), values));
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let sum = format!("{:016x}", checksum(&refs));
        if get("checksum")? != &sum {
            return Err(bad("its checksum does not match its contents (damaged)".into()));
        }
        let state: TrainerState = serde_json::from_str(state_text).map_err(|e| bad(format!("state: {e}")))?;
        let curves = crate::results::parse_csv(path, curves_text).map_err(|e| bad(format!("curves: {e}")))?;
        Ok(Checkpoint { config: config.clone(), state, curves, tensors })
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&(String, Vec<usize>, Vec<f64>)> {
        self.tensors.iter().find(|t| t.0 == name)
    }
}

/// Write `ck` into the folder `dir` atomically: to [`CHECKPOINT_TEMP`], flushed to disk,
/// then renamed over [`CHECKPOINT_FILE`].
pub fn write_checkpoint(dir: &Path, ck: &Checkpoint) -> Result<PathBuf, CheckpointError> {
    let path = dir.join(CHECKPOINT_FILE);
    write_checkpoint_file(&path, ck)?;
    Ok(path)
}

/// Write `ck` to `path` atomically: to `path` + `.tmp`, flushed to disk, then renamed.
pub fn write_checkpoint_file(path: &Path, ck: &Checkpoint) -> Result<(), CheckpointError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = ck.to_bytes().map_err(|why| CheckpointError::corrupt(path, format!("cannot encode: {why}")))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CheckpointError::Io { path: p, source }
    };
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself reaches the disk with the folder's entry.
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        d.sync_all().ok();
    }
    Ok(())
}

/// Read the checkpoint of the folder `dir` (a leftover temporary file is not looked at).
pub fn read_checkpoint(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    read_checkpoint_file(&dir.join(CHECKPOINT_FILE))
}

/// Read the checkpoint file `path`.
pub fn read_checkpoint_file(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    Checkpoint::from_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let rng = Pcg32::new(7, 3);
        Checkpoint {
            config: "task: {}\n".into(),
            state: TrainerState {
                step: 40,
                active: vec![1],
                optimizer_steps: 40,
                sources: vec![SourceState { order: vec![2, 0, 1], pos: 1, rng }],
                initial_loss: Some(vec![0.1 + 0.2, f64::NAN]),
                done: vec![Some(MemberSummary { seed: 3, test_accuracy: 1.0 / 3.0, ..Default::default() }), None],
                last_eval: vec![None, None],
                last_train_loss: vec![f64::NAN, std::f64::consts::PI],
                seconds: 1.5,
                builds: vec!["older".into(), "newer".into()],
            },
            curves: vec![CurvePoint { member: 0, step: 20, train_loss: f64::INFINITY, test_loss: 1e-300, test_accuracy: 0.7, ..Default::default() }],
            tensors: vec![("param.a".into(), vec![1, 2], vec![1.0 / 7.0, -0.0]), ("optim.a.0".into(), vec![1, 2], vec![f64::MIN_POSITIVE, 5e-324])],
        }
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let ck = sample();
        let bytes = ck.to_bytes().unwrap();
        let back = Checkpoint::from_bytes(Path::new("c"), &bytes).unwrap();
        assert_eq!(back.state.initial_loss.as_ref().unwrap()[0].to_bits(), (0.1f64 + 0.2).to_bits());
        assert!(back.state.initial_loss.as_ref().unwrap()[1].is_nan());
        assert_eq!(back.state.done[0].as_ref().unwrap().test_accuracy.to_bits(), (1.0f64 / 3.0).to_bits());
        assert_eq!(back.curves[0].train_loss, f64::INFINITY);
        assert_eq!(back.state.builds, ["older", "newer"]);
        assert_eq!(back.curves[0].test_loss.to_bits(), 1e-300f64.to_bits());
        assert_eq!(back.tensor("param.a").unwrap().2[1].to_bits(), (-0.0f64).to_bits());
        assert_eq!(back.tensor("optim.a.0").unwrap().2, vec![f64::MIN_POSITIVE, 5e-324]);
        assert_eq!(back.state.sources, ck.state.sources);
        assert_eq!(back.config, ck.config);
    }

    #[test]
    fn damaged_or_truncated_files_are_refused() {
        let bytes = sample().to_bytes().unwrap();
        let path = Path::new("run/checkpoint.safetensors");
        let cut = Checkpoint::from_bytes(path, &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(cut.to_string().starts_with("run/checkpoint.safetensors: not a usable checkpoint (truncated"), "{cut}");
        // One flipped bit in a tensor's data: only the checksum can tell.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = Checkpoint::from_bytes(path, &flipped).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(Checkpoint::from_bytes(path, b"not a checkpoint").is_err());
    }

    #[test]
    fn a_leftover_temporary_file_leaves_the_checkpoint_valid() {
        let dir = sparsevar_test_support::ScratchDir::created("checkpoint-atomic");
        let mut first = sample();
        write_checkpoint(&dir, &first).unwrap();
        // A kill between writing the next one and renaming it: half a file under the
        // temporary name.
        first.state.step = 80;
        let next = first.to_bytes().unwrap();
        fs::write(dir.join(CHECKPOINT_TEMP), &next[..next.len() / 2]).unwrap();
        assert_eq!(read_checkpoint(&dir).unwrap().state.step, 40);
        // The next write replaces both.
        write_checkpoint(&dir, &first).unwrap();
        assert_eq!(read_checkpoint(&dir).unwrap().state.step, 80);
        assert!(!dir.join(CHECKPOINT_TEMP).exists());
    }
}
