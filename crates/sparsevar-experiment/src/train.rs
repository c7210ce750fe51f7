//! Training an ensemble: R members, one graph, one kernel launch serving all of them.
//!
//! Each member has its own task instance (its own S unless fixed), init stream, training
//! set, minibatch stream and test set, all drawn from its seed. Members that finish (learned
//! or diverged) are recorded at that step and leave the ensemble: parameters and optimizer
//! state of the rest are copied into a smaller one, so the remaining steps cost only what the
//! unfinished members need, and each member's numbers equal those of training it alone with
//! the same seed.
//!
//! Faults of plugin code stop training; nothing is substituted. A member whose task fails to
//! sample is named in [`TrainError::MemberFaults`] (a sweep trains the others again without
//! it); a fault that belongs to no one member (an attention variant, a backend, a call
//! without an error channel, seen through the registry's fault probes at every evaluation)
//! is [`TrainError::Fault`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sparsevar_core::backend::{Backend, BackendError, BufferId, run_updates};
use sparsevar_core::fault::PluginFault;
use sparsevar_core::graph::{Executor, NodeId, ParamId, ParamStore};
use sparsevar_core::model::{DataShape, Model, ModelError, ModelGraph, ModelSpec};
use sparsevar_core::norms::{CapacityNorms, Projector, capacity_norms};
use sparsevar_core::optim::Optimizer;
use sparsevar_core::registry::{FaultMark, Registry, RegistryError};
use sparsevar_core::rng::{Pcg32, streams};
use sparsevar_core::task::{Dataset, Task, TaskError, TaskSpec};

use crate::checkpoint::{Checkpoint, CheckpointError, SourceState, TrainerState};
use crate::config::TrainConfig;
use crate::learners::{StopRule, Stopped};
use crate::results::MemberSummary;

/// Everything one ensemble run needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub task: TaskSpec,
    pub model: ModelSpec,
    pub train: TrainConfig,
    pub seeds: Vec<u64>,
    /// Per-member training-set sizes (a sweep trains many m in one ensemble); `None` gives
    /// every member `train.samples`.
    pub samples: Option<Vec<usize>>,
}

impl RunSpec {
    /// Training-set size of member `m`.
    pub fn samples_of(&self, m: usize) -> usize {
        self.samples.as_ref().map_or(self.train.samples, |s| s[m])
    }
}

/// The restarts of a learner: members that share an instance's data (their seed in
/// [`RunSpec::seeds`]) but not their initialisation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restarts {
    /// Per member: the seed of its initialisation and minibatch streams.
    pub init_seeds: Vec<u64>,
    /// Per member: how many of its m samples are held out for validation (the last ones;
    /// 0 = none). It trains on the rest.
    pub validation: Vec<usize>,
    /// When a member leaves: on what it may see (`Some`), or on its test set as any member
    /// does (`None`).
    pub stop: Option<StopRule>,
    /// Per member: its instance (members with the same value are restarts of one instance),
    /// or empty. Under [`StopRule::Validation`], once one restart of an instance stops on
    /// validation the instance is decided (best_of_k outputs the first restart to
    /// validate), and its other restarts leave at that evaluation as they are
    /// ([`Stopped::Decided`]).
    pub instances: Vec<usize>,
    /// A member stops by `stop` only once the rule has held at this many consecutive
    /// evaluations (0 or 1: at the first); an instance is decided where its restart stops.
    pub patience: usize,
}

/// A learner's view of a member: its accuracy and loss on its own samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    #[serde(deserialize_with = "crate::results::nan_if_null")]
    pub train_accuracy: f64,
    #[serde(deserialize_with = "crate::results::nan_if_null")]
    pub train_loss: f64,
    /// On the held-out split (`None` without one).
    pub validation_accuracy: Option<f64>,
}

/// Where the CLS attention of one member went, averaged over its test set.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AttentionSummary {
    /// [layer][head][key position] (position 0 is CLS, input bit i is position i + 1).
    pub weights: Vec<Vec<Vec<f64>>>,
    /// [layer][head]: total weight on the relevant positions S.
    pub mass_on_s: Vec<Vec<f64>>,
    /// (layer, head) with the largest mass on S.
    pub best_head: (usize, usize),
    /// Whether that head's s largest weights over input positions are exactly S.
    pub top_s_equals_s: bool,
}

/// The outcome of one member.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemberResult {
    pub seed: u64,
    /// The relevant positions S of this member's task.
    pub relevant: Vec<usize>,
    pub learned: bool,
    pub diverged: bool,
    /// Step at which the member learned (first evaluation at or above the target).
    pub step: Option<usize>,
    /// Steps trained until the member finished (or the budget ran out).
    pub steps_trained: usize,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub train_loss: f64,
    pub attention: Option<AttentionSummary>,
    /// The capacity-bound norms at the last evaluation (transformers only).
    pub norms: Option<CapacityNorms>,
    /// Training and validation scores at the last evaluation (restarts of a learner only).
    pub scores: Option<Scores>,
    /// Why it left training (restarts of a learner only; `None` for other members).
    pub stopped: Option<Stopped>,
}

/// One evaluation of one member: a row of metrics.csv.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub member: usize,
    pub seed: u64,
    pub step: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Largest attention mass on S over heads (transformers only).
    pub best_mass_on_s: Option<f64>,
    /// The capacity-bound norms of `sparsevar_core::norms::CapacityNorms` (transformers only;
    /// absent in files written before they were recorded): max over heads of
    /// ‖A_Q^h (A_K^h)ᵀ‖₂ and ‖·‖_F, ‖[W_V; b_V]‖_F, ‖[W_O; b_O]‖_F (products over layers),
    /// ‖E_tok‖_F, ‖E_pos‖_F, and their product `norm_bound`.
    #[serde(default)]
    pub qk_spectral: Option<f64>,
    #[serde(default)]
    pub qk_frobenius: Option<f64>,
    #[serde(default)]
    pub v_norm: Option<f64>,
    #[serde(default)]
    pub o_norm: Option<f64>,
    #[serde(default)]
    pub tok_norm: Option<f64>,
    #[serde(default)]
    pub pos_norm: Option<f64>,
    #[serde(default)]
    pub norm_bound: Option<f64>,
    /// A learner's restart: accuracy and mean loss on its training samples, accuracy on its
    /// validation split (absent for other members, so their metrics.csv is as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_set_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
}

impl CurvePoint {
    /// This point with the learner's score columns set from `scores`.
    pub fn with_scores(self, scores: Option<&Scores>) -> Self {
        let Some(s) = scores else { return self };
        CurvePoint { train_accuracy: Some(s.train_accuracy), train_set_loss: Some(s.train_loss), validation_accuracy: s.validation_accuracy, ..self }
    }

    /// This point with the norm columns set from `norms`.
    pub fn with_norms(self, norms: Option<&CapacityNorms>) -> Self {
        let Some(n) = norms else { return self };
        CurvePoint {
            qk_spectral: Some(n.qk_spectral),
            qk_frobenius: Some(n.qk_frobenius),
            v_norm: Some(n.v),
            o_norm: Some(n.o),
            tok_norm: Some(n.tok),
            pos_norm: Some(n.pos),
            norm_bound: Some(n.bound),
            ..self
        }
    }
}

/// The outcome of an ensemble run.
#[derive(Clone, Debug, Serialize)]
pub struct EnsembleResult {
    pub members: Vec<MemberResult>,
    pub curves: Vec<CurvePoint>,
    pub steps: usize,
    pub seconds: f64,
}

/// A member whose task failed: which member, its seed, and the error (for a plugin task it
/// names the plugin file and the call).
#[derive(Clone, Debug, PartialEq)]
pub struct MemberFault {
    /// The member (position of its seed in the run's seeds).
    pub member: usize,
    pub seed: u64,
    pub error: TaskError,
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The model could not be built (e.g. its attention variant failed); it is shared by
    /// every member, so all of them are named.
    #[error("building the model of the members with seeds {seeds:?}: {error}")]
    Model { seeds: Vec<u64>, error: ModelError },
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A member's weights file could not be written.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    #[error("interrupted at step {step}")]
    Interrupted { step: usize },
    /// The tasks of these members failed (at least one); training stopped.
    #[error("member {} (seed {}) at step {step}: {}{}", .faults[0].member, .faults[0].seed, .faults[0].error, more_members(.faults.len()))]
    MemberFaults { step: usize, faults: Vec<MemberFault> },
    /// A plugin faulted in a way no one member owns; training stopped.
    #[error("{fault} (found at step {step}, all members stopped)")]
    Fault { step: usize, fault: PluginFault },
}

fn more_members(n: usize) -> String {
    if n > 1 { format!(" (and {} more members)", n - 1) } else { String::new() }
}

/// A member has diverged when its training loss rises above this multiple of its initial
/// loss (and above [`DIVERGENCE_FLOOR`]), or any loss stops being finite.
///
/// Why 100×: the initial loss of a K-class task is about ln K (0.69 for a balanced Boolean
/// task). Training on a fixed set only lowers the train loss; a minibatch whose loss is 100
/// times the starting value has an average log-loss around 70 nats, i.e. logits tens of
/// units wrong on typical samples — an optimizer that is blowing up, not one that is slow
/// or briefly unstable (loss spikes of healthy runs stay within a few times the initial
/// loss). Test loss is not used: an overfitting model can be confidently wrong on held-out
/// samples without diverging.
pub const DIVERGENCE_FACTOR: f64 = 100.0;
/// The absolute floor of the divergence rule, in nats per sample: a task whose initial loss
/// is tiny (very unbalanced labels) is not called diverged for ordinary fluctuations.
pub const DIVERGENCE_FLOOR: f64 = 10.0;

/// Whether a member with training loss `train_loss` and test loss `test_loss`, whose first
/// training batch had loss `initial`, has diverged (see [`DIVERGENCE_FACTOR`]).
pub fn has_diverged(train_loss: f64, test_loss: f64, initial: f64) -> bool {
    !train_loss.is_finite() || !test_loss.is_finite() || (initial.is_finite() && train_loss > DIVERGENCE_FACTOR * initial && train_loss > DIVERGENCE_FLOOR)
}

/// A member's latest evaluation: test accuracy, test loss, attention, norms.
type LastEval = (f64, f64, Option<AttentionSummary>, Option<CapacityNorms>, Option<Scores>);

/// What the trainer tells its caller as it goes.
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    /// After an evaluation: the step, the budget, and the points just recorded.
    Evaluated { step: usize, max_steps: usize, points: &'a [CurvePoint], finished: usize, members: usize },
}

/// Per-member minibatch source: a fixed set walked in reshuffled epochs, or fresh samples.
struct BatchSource {
    train: Option<Dataset>,
    order: Vec<usize>,
    pos: usize,
    rng: Pcg32,
}

impl BatchSource {
    fn next(&mut self, task: &dyn Task, batch: usize, tokens: &mut Vec<u8>, labels: &mut Vec<f64>) -> Result<(), TaskError> {
        let t = task.seq_len();
        match &self.train {
            Some(ds) => {
                for _ in 0..batch {
                    if self.pos == self.order.len() {
                        self.rng.shuffle(&mut self.order);
                        self.pos = 0;
                    }
                    let i = self.order[self.pos];
                    self.pos += 1;
                    tokens.extend_from_slice(ds.row(i));
                    labels.push(ds.labels[i] as f64);
                }
            }
            None => {
                let start = tokens.len();
                tokens.resize(start + batch * t, 0);
                for b in 0..batch {
                    let y = task.sample(&mut self.rng, &mut tokens[start + b * t..start + (b + 1) * t])?;
                    labels.push(y as f64);
                }
            }
        }
        Ok(())
    }
}

/// Build the task of each member (validated).
pub fn member_tasks(registry: &Registry, spec: &TaskSpec, seeds: &[u64]) -> Result<Vec<Box<dyn Task>>, TrainError> {
    seeds.iter().map(|&s| Ok(registry.task(spec, s)?)).collect()
}

/// An ensemble set up on a backend: model, parameters, planned graphs, optimizer and data.
///
/// `tasks`, data and results are indexed by member (the position of its seed in
/// `spec.seeds`); the backend holds only the active members, slot `i` being member
/// `active[i]`.
pub struct Trainer<'b> {
    backend: &'b mut dyn Backend,
    pub spec: RunSpec,
    pub tasks: Vec<Box<dyn Task>>,
    pub model: Model,
    params: ParamStore,
    graphs: Graphs,
    optimizer: Optimizer,
    /// `train.max_norm`: the balls every member's bounded groups return to after each step.
    projector: Projector,
    sources: Vec<BatchSource>,
    tests: Vec<Dataset>,
    /// Per member: a learner's held-out validation samples.
    validation: Vec<Option<Dataset>>,
    /// Score every member on its training and validation samples at each evaluation.
    scored: bool,
    /// A learner's stop rule for its restarts (`None`: the test-set rule).
    stop_rule: Option<StopRule>,
    /// Per member: its instance, when decided instances stop as a whole (else empty).
    instances: Vec<usize>,
    /// Consecutive evaluations at which the stop rule must hold (see [`Restarts::patience`]).
    patience: usize,
    /// Per member: consecutive evaluations, up to the latest, at which its stop rule held.
    held: Vec<usize>,
    step: usize,
    /// Members still training, in slot order.
    active: Vec<usize>,
    /// Checked after every step: when set, `run` evaluates at once and stops (Ctrl-C).
    stop: Option<Arc<AtomicBool>>,
    /// Parameters of members that left the ensemble, as they were when they finished.
    finished_params: Vec<Option<Vec<Vec<f64>>>>,
    /// Each member's loss on its first training batch (the divergence rule's reference);
    /// read after the first step of [`Trainer::run`].
    initial_loss: Option<Vec<f64>>,
    /// What [`Trainer::run`] has found so far (kept here so a checkpoint can carry it).
    record: RunRecord,
    /// The plugins' fault record (through the registry's probes) and where it stood when
    /// this trainer was made: any later fault stops training.
    faults: (Registry, FaultMark),
    // Reused host buffers: nothing is allocated per step once these have grown.
    tokens: Vec<u8>,
    labels: Vec<f64>,
    encoded: Vec<f64>,
    scratch: Vec<f64>,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("spec", &self.spec).field("step", &self.step).finish()
    }
}

/// What a run has found so far, by member.
struct RunRecord {
    /// Members that finished (learned or diverged), as they were then.
    done: Vec<Option<MemberResult>>,
    curves: Vec<CurvePoint>,
    /// Each unfinished member's latest evaluation and training loss, for members the
    /// budget stops.
    last_eval: Vec<Option<LastEval>>,
    last_train_loss: Vec<f64>,
    /// Seconds trained before this process (by the runs a checkpoint continues).
    seconds: f64,
}

/// The training and evaluation graphs of one ensemble size, planned on the backend.
struct Graphs {
    train: ModelGraph,
    train_exec: Executor,
    eval: ModelGraph,
    eval_exec: Executor,
}

impl Graphs {
    /// `seeds`: the members', to name them in an error.
    fn plan(backend: &mut dyn Backend, model: &Model, params: &ParamStore, tc: &TrainConfig, seeds: &[u64]) -> Result<Self, TrainError> {
        let model_error = |error| TrainError::Model { seeds: seeds.to_vec(), error };
        let train = model.build(params, tc.batch, true).map_err(model_error)?;
        let outputs: Vec<_> = std::iter::once(train.loss).chain(train.grads.iter().map(|g| g.1)).collect();
        let mut train_exec = Self::executor(backend, &train, &outputs, params)?;
        // Only the optimizer reads the gradients: a member's may stay in the CPU's scratch.
        train_exec.read_by_updates_only(&outputs[1..]);
        let eval = model.build(params, EVAL_CHUNK.min(tc.test_samples), false).map_err(model_error)?;
        let outputs: Vec<_> = std::iter::once(eval.logits).chain(eval.attention.iter().copied()).collect();
        let eval_exec = Self::executor(backend, &eval, &outputs, params)?;
        Ok(Graphs { train, train_exec, eval, eval_exec })
    }

    /// An executor computing `outputs` of `graph`, its constant inputs written.
    fn executor(backend: &mut dyn Backend, graph: &ModelGraph, outputs: &[NodeId], params: &ParamStore) -> Result<Executor, BackendError> {
        let exec = Executor::new(backend, graph.graph.clone(), outputs, params)?;
        for (node, values) in &graph.constants {
            exec.write(backend, *node, values)?;
        }
        Ok(exec)
    }

    /// Gradient buffer of every trained parameter, in the training graph's order.
    fn grads(&self) -> Vec<(ParamId, BufferId)> {
        self.train.grads.iter().map(|(p, g)| (*p, self.train_exec.buffer(*g).expect("planned"))).collect()
    }

    fn free(self, backend: &mut dyn Backend) -> Result<(), BackendError> {
        self.train_exec.free(backend)?;
        self.eval_exec.free(backend)
    }
}

/// Samples per member per evaluation launch. Fixed (not derived from R), so a member's
/// evaluation is computed identically alone or in any ensemble.
const EVAL_CHUNK: usize = 256;

impl<'b> Trainer<'b> {
    pub fn new(backend: &'b mut dyn Backend, spec: RunSpec, registry: &Registry) -> Result<Self, TrainError> {
        Self::with_restarts(backend, spec, registry, None)
    }

    /// [`Trainer::new`] for the restarts of a learner (see [`Restarts`]): each member's
    /// task and data come from its seed, its initialisation and minibatches from its
    /// restart seed, and every evaluation also scores it on its training and validation
    /// samples ([`MemberResult::scores`]).
    pub fn with_restarts(backend: &'b mut dyn Backend, spec: RunSpec, registry: &Registry, restarts: Option<Restarts>) -> Result<Self, TrainError> {
        let r = spec.seeds.len();
        if r == 0 {
            return Err(TrainError::Setup("no seeds: an ensemble needs at least one member".into()));
        }
        if let Some(x) = &restarts
            && (x.init_seeds.len() != r || x.validation.len() != r || !(x.instances.is_empty() || x.instances.len() == r))
        {
            return Err(TrainError::Setup(format!("restarts for {} and {} members, but the ensemble has {r}", x.init_seeds.len(), x.validation.len())));
        }
        let init_seed = |m: usize| restarts.as_ref().map_or(spec.seeds[m], |x| x.init_seeds[m]);
        if let Some(s) = &spec.samples
            && (s.len() != r || s.contains(&0))
        {
            return Err(TrainError::Setup(format!("{} per-member sample counts for {r} members (each at least 1)", s.len())));
        }
        let mark = registry.fault_mark();
        let tasks = member_tasks(registry, &spec.task, &spec.seeds)?;
        let t0 = &tasks[0];
        let data = DataShape { seq_len: t0.seq_len(), alphabet: t0.alphabet(), classes: t0.num_classes() };
        let attention = match &spec.model {
            ModelSpec::Transformer(c) => Some(registry.attention(&c.attention)?),
            ModelSpec::Mlp(_) => None,
        };
        let model_error = |error| TrainError::Model { seeds: spec.seeds.clone(), error };
        let (model, mut params) = Model::new(&spec.model, data, r, attention).map_err(model_error)?;
        let mut init: Vec<Pcg32> = (0..r).map(|m| Pcg32::new(init_seed(m), streams::INIT)).collect();
        params.initialize(backend, &mut init)?;

        let tc = &spec.train;
        let graphs = Graphs::plan(backend, &model, &params, tc, &spec.seeds)?;
        let optimizer = Optimizer::new(backend, tc.optim(), &params, &graphs.grads())?;
        tc.max_norm.check("train.max_norm").map_err(TrainError::Setup)?;
        let balls = match model.norm_layout() {
            Some(layout) => tc.max_norm.balls(&layout),
            None if tc.max_norm.is_unbounded() => Vec::new(),
            None => return Err(TrainError::Setup("train.max_norm bounds attention parameters, but this model has none (remove train.max_norm)".into())),
        };
        let projector = Projector::new(balls);

        let mut sources = Vec::new();
        let mut tests = Vec::new();
        let mut validation = Vec::new();
        // Every member's data is drawn even after one fails, so that one error names every
        // member whose task fails here (a sweep then retrains the rest once).
        let mut faults = Vec::new();
        for (m, (task, &seed)) in tasks.iter().zip(&spec.seeds).enumerate() {
            let drawn = (|| -> Result<_, TaskError> {
                let train = if tc.online { None } else { Some(Dataset::draw(task.as_ref(), spec.samples_of(m), &mut Pcg32::new(seed, streams::TRAIN_DATA))?) };
                let test = Dataset::draw(task.as_ref(), tc.test_samples, &mut Pcg32::new(seed, streams::TEST_DATA))?;
                Ok((train, test))
            })();
            let (mut train, test) = match drawn {
                Ok(d) => d,
                Err(error) => {
                    faults.push(MemberFault { member: m, seed, error });
                    continue;
                }
            };
            // A learner's validation split: the last v of the m samples.
            let held = restarts.as_ref().map_or(0, |x| x.validation[m]);
            validation.push(match train.as_mut() {
                Some(d) if held > 0 => {
                    let keep = d.len().saturating_sub(held).max(1);
                    let t = d.t;
                    let val = Dataset { t, tokens: d.tokens.split_off(keep * t), labels: d.labels.split_off(keep) };
                    Some(val)
                }
                _ => None,
            });
            let n = train.as_ref().map_or(0, |d| d.len());
            let stream = if tc.online { streams::ONLINE } else { streams::BATCH };
            let mut rng = Pcg32::new(init_seed(m), stream);
            let mut order: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut order);
            sources.push(BatchSource { train, order, pos: 0, rng });
            tests.push(test);
        }
        if !faults.is_empty() {
            return Err(TrainError::MemberFaults { step: 0, faults });
        }
        registry.faults_since(&mark).map_err(|fault| TrainError::Fault { step: 0, fault })?;
        Ok(Self {
            backend,
            spec,
            tasks,
            model,
            params,
            graphs,
            optimizer,
            projector,
            sources,
            tests,
            validation,
            scored: restarts.is_some(),
            stop_rule: restarts.as_ref().and_then(|x| x.stop),
            instances: restarts.as_ref().filter(|x| x.stop == Some(StopRule::Validation)).map_or(Vec::new(), |x| x.instances.clone()),
            patience: restarts.as_ref().map_or(1, |x| x.patience.max(1)),
            held: vec![0; r],
            step: 0,
            active: (0..r).collect(),
            stop: None,
            finished_params: vec![None; r],
            initial_loss: None,
            record: RunRecord { done: vec![None; r], curves: Vec::new(), last_eval: vec![None; r], last_train_loss: vec![f64::NAN; r], seconds: 0.0 },
            faults: (registry.clone(), mark),
            tokens: Vec::new(),
            labels: Vec::new(),
            encoded: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Floating-point operations of one training step (forward + backward), all active
    /// members.
    pub fn step_flops(&self) -> u64 {
        self.graphs.train_exec.flops()
    }

    /// Kernel launches per training step.
    pub fn step_launches(&self) -> usize {
        self.graphs.train_exec.launches()
    }

    /// Wait until the backend has finished everything queued so far (a GPU backend returns
    /// from [`Trainer::step`] once the step is recorded, not run).
    pub fn sync(&mut self) -> Result<(), TrainError> {
        Ok(self.backend.sync()?)
    }

    /// The parameter declarations (names and per-member shapes) of the model.
    pub fn param_store(&self) -> &ParamStore {
        &self.params
    }

    /// The members still training, in slot order (see [`Trainer::evaluate`]).
    pub fn active_members(&self) -> &[usize] {
        &self.active
    }

    /// Take the members in slots `leaving` out of the ensemble: their parameters are kept
    /// on the host as they are now, and the rest continue in a smaller ensemble with their
    /// parameters and optimizer state copied exactly.
    fn retire(&mut self, leaving: &[usize]) -> Result<(), TrainError> {
        if leaving.is_empty() {
            return Ok(());
        }
        let all = self.read_parameters()?;
        let lens: Vec<usize> = self.params.ids().map(|id| self.params.member_len(id)).collect();
        for &slot in leaving {
            let snapshot = all.iter().zip(&lens).map(|(p, &n)| p[slot * n..(slot + 1) * n].to_vec()).collect();
            self.finished_params[self.active[slot]] = Some(snapshot);
        }
        let keep: Vec<usize> = (0..self.active.len()).filter(|s| !leaving.contains(s)).collect();
        self.shrink(&keep)
    }

    /// Keep only the slots `keep` (in that order): parameters and optimizer state copied
    /// exactly into an ensemble of that size, the graphs planned again for it.
    fn shrink(&mut self, keep: &[usize]) -> Result<(), TrainError> {
        self.active = keep.iter().map(|&s| self.active[s]).collect();
        if keep.is_empty() {
            // Nothing left to train: the buffers go with the backend.
            return Ok(());
        }
        self.params.retain(self.backend, keep)?;
        let seeds: Vec<u64> = self.active.iter().map(|&m| self.spec.seeds[m]).collect();
        let graphs = Graphs::plan(self.backend, &self.model, &self.params, &self.spec.train, &seeds)?;
        self.optimizer.retain(self.backend, keep, &self.params, &graphs.grads())?;
        std::mem::replace(&mut self.graphs, graphs).free(self.backend)?;
        Ok(())
    }

    /// Stop [`Trainer::run`] after the step during which `flag` is set: it evaluates there,
    /// reports, and returns the members as they are.
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// `Err` if a plugin recorded a fault since this trainer was made.
    fn check_faults(&self) -> Result<(), TrainError> {
        self.faults.0.faults_since(&self.faults.1).map_err(|fault| TrainError::Fault { step: self.step, fault })
    }

    /// Draw each member's next minibatch and write it to the training graph's inputs.
    fn load_batch(&mut self) -> Result<(), TrainError> {
        let b = self.spec.train.batch;
        self.tokens.clear();
        self.labels.clear();
        self.encoded.clear();
        let mut faults = Vec::new();
        for &m in &self.active {
            let start = self.tokens.len();
            if let Err(error) = self.sources[m].next(self.tasks[m].as_ref(), b, &mut self.tokens, &mut self.labels) {
                // Go on drawing the others: one error names every member that fails now.
                faults.push(MemberFault { member: m, seed: self.spec.seeds[m], error });
                continue;
            }
            self.model.encode(b, &self.tokens[start..], &mut self.encoded);
        }
        if !faults.is_empty() {
            return Err(TrainError::MemberFaults { step: self.step, faults });
        }
        let g = &self.graphs;
        g.train_exec.write(self.backend, g.train.inputs, &self.encoded)?;
        g.train_exec.write(self.backend, g.train.labels, &self.labels)?;
        Ok(())
    }

    /// One optimizer step for every member.
    pub fn step(&mut self) -> Result<(), TrainError> {
        self.load_batch()?;
        // The optimizer step and the projection run with the backward pass, member by
        // member where the backend prefers that (a member's gradients are still in cache).
        let mut updates = self.optimizer.next_updates();
        updates.extend(self.projector.updates(self.backend, &self.params)?);
        self.graphs.train_exec.run_then(self.backend, &updates)?;
        self.step += 1;
        Ok(())
    }

    /// One step like [`Trainer::step`] with the forward + backward kernels timed one by one
    /// into `profile` (kernel and shape → calls, seconds): on the device as the step runs
    /// where the backend has timestamps ([`Backend::time_launches_as`]), else waiting for
    /// each launch. Returns whether the times are the device's.
    pub fn step_profiled(&mut self, profile: &mut std::collections::BTreeMap<String, (u64, f64)>) -> Result<bool, TrainError> {
        self.load_batch()?;
        self.graphs.train_exec.run_profiled(self.backend, profile)?;
        const OPTIMIZER: &str = "optimizer (all parameters, with the norm projection)";
        let timed = self.backend.time_launches_as(Some(OPTIMIZER))?;
        let start = std::time::Instant::now();
        let mut updates = self.optimizer.next_updates();
        updates.extend(self.projector.updates(self.backend, &self.params)?);
        if timed {
            // On the device each update is timed under its kind, so the optimizer's share
            // splits into norms, Adam and projection. The label changes only between kinds:
            // a change ends a backend's merging of consecutive launches.
            let mut kind = "";
            for (update, buffers) in &updates {
                if update.name() != kind {
                    kind = update.name();
                    self.backend.time_launches_as(Some(&format!("optimizer: {kind}")))?;
                }
                self.backend.update(update, buffers)?;
            }
        } else {
            run_updates(self.backend, &updates)?;
        }
        self.backend.sync()?;
        if timed {
            self.backend.time_launches_as(None)?;
            for (label, calls, seconds) in self.backend.launch_times()? {
                let e = profile.entry(label).or_insert((0, 0.0));
                e.0 += calls;
                e.1 += seconds;
            }
        } else {
            let e = profile.entry(OPTIMIZER.into()).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += start.elapsed().as_secs_f64();
        }
        self.step += 1;
        Ok(timed)
    }

    /// The last training batch's loss per active member (slot order).
    pub fn train_loss(&mut self) -> Result<Vec<f64>, TrainError> {
        let mut out = Vec::new();
        self.graphs.train_exec.read(self.backend, self.graphs.train.loss, &mut out)?;
        Ok(out)
    }

    /// Test accuracy, test loss and attention summary of every active member, in slot order
    /// ([`Trainer::active_members`]).
    pub fn evaluate(&mut self) -> Result<Vec<(f64, f64, Option<AttentionSummary>)>, TrainError> {
        let r = self.active.len();
        let chunk = self.graphs.eval.batch;
        let n_test = self.spec.train.test_samples;
        let classes = self.model.data.classes;
        let t = self.model.data.seq_len;
        let layers = self.graphs.eval.attention.len();
        let mut correct = vec![0usize; r];
        let mut loss = vec![0.0; r];
        // [member][layer] → flat [head × N] sums.
        let mut attn_sum: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); layers]; r];
        let mut start = 0;
        while start < n_test {
            let valid = chunk.min(n_test - start);
            self.tokens.clear();
            self.labels.clear();
            self.encoded.clear();
            for &m in &self.active {
                let test = &self.tests[m];
                let first = self.tokens.len();
                for i in 0..chunk {
                    // Pad the last chunk by repeating a row; padded rows are not counted.
                    let row = start + i.min(valid - 1);
                    self.tokens.extend_from_slice(test.row(row));
                    self.labels.push(test.labels[row] as f64);
                }
                self.model.encode(chunk, &self.tokens[first..], &mut self.encoded);
            }
            let g = &self.graphs;
            g.eval_exec.write(self.backend, g.eval.inputs, &self.encoded)?;
            g.eval_exec.run(self.backend)?;
            g.eval_exec.read(self.backend, g.eval.logits, &mut self.scratch)?;
            for m in 0..r {
                for i in 0..valid {
                    let row = &self.scratch[(m * chunk + i) * classes..(m * chunk + i + 1) * classes];
                    let y = self.labels[m * chunk + i] as usize;
                    let (arg, max) = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc });
                    if arg == y && max.is_finite() {
                        correct[m] += 1;
                    }
                    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    loss[m] += lse - row[y];
                }
            }
            for (l, &node) in self.graphs.eval.attention.iter().enumerate() {
                self.graphs.eval_exec.read(self.backend, node, &mut self.scratch)?;
                let per_sample = self.scratch.len() / (r * chunk);
                for m in 0..r {
                    let acc = &mut attn_sum[m][l];
                    if acc.is_empty() {
                        acc.resize(per_sample, 0.0);
                    }
                    for i in 0..valid {
                        let w = &self.scratch[(m * chunk + i) * per_sample..(m * chunk + i + 1) * per_sample];
                        for (a, &x) in acc.iter_mut().zip(w) {
                            *a += x;
                        }
                    }
                }
            }
            start += valid;
        }
        let mut out = Vec::with_capacity(r);
        for m in 0..r {
            let acc = correct[m] as f64 / n_test as f64;
            let l = loss[m] / n_test as f64;
            let summary = (layers > 0).then(|| {
                let n = t + 1;
                let weights: Vec<Vec<Vec<f64>>> =
                    attn_sum[m].iter().map(|flat| flat.chunks(n).map(|h| h.iter().map(|x| x / n_test as f64).collect()).collect()).collect();
                summarize_attention(weights, self.tasks[self.active[m]].relevant())
            });
            out.push((acc, l, summary));
        }
        Ok(out)
    }

    /// Train until every member has learned or diverged, or the step budget runs out.
    /// `progress` may return false to stop early, and the flag of [`Trainer::stop_on`] stops
    /// after the current step (members not finished are then reported as not learned, with
    /// their state at that step). Members leave the ensemble at the evaluation where they finish.
    pub fn run(&mut self, progress: &mut dyn FnMut(Progress) -> bool) -> Result<EnsembleResult, TrainError> {
        self.run_checkpointed(progress, 0, &mut |_| Ok(()))
    }

    /// [`Trainer::run`], handing `save` a [`Checkpoint`] (its `config` left empty for the
    /// caller to fill) after every `every` steps (0: never), once that step's evaluation is
    /// recorded and reported, and once more when training ends normally (not when stopped:
    /// a stop evaluates at a step an uninterrupted run may not, so the last regular
    /// checkpoint is the one to resume from).
    pub fn run_checkpointed(
        &mut self,
        progress: &mut dyn FnMut(Progress) -> bool,
        every: usize,
        save: &mut dyn FnMut(Checkpoint) -> Result<(), TrainError>,
    ) -> Result<EnsembleResult, TrainError> {
        let started = Instant::now();
        let r = self.spec.seeds.len();
        let tc = self.spec.train.clone();
        let seconds = |rec: &RunRecord| rec.seconds + started.elapsed().as_secs_f64();
        let mut stopped = false;
        while self.step < tc.max_steps && !self.active.is_empty() {
            self.step()?;
            if self.initial_loss.is_none() {
                // The loss of the first batch, at the initial parameters: the divergence
                // rule's reference (one extra read, once).
                let mut initial = vec![f64::NAN; r];
                for (slot, loss) in self.train_loss()?.into_iter().enumerate() {
                    initial[self.active[slot]] = loss;
                }
                self.initial_loss = Some(initial);
            }
            let stopping = self.stop_requested();
            let evaluate = self.step.is_multiple_of(tc.eval_every) || self.step == tc.max_steps || stopping;
            let mut keep_going = true;
            if evaluate {
                keep_going = self.evaluate_and_record(progress)?;
            }
            stopped = !keep_going || stopping;
            if stopped {
                break;
            }
            if every > 0 && self.step.is_multiple_of(every) && self.step < tc.max_steps && !self.active.is_empty() {
                let ck = self.snapshot(seconds(&self.record))?;
                save(ck)?;
            }
        }
        self.check_faults()?;
        let total = seconds(&self.record);
        if every > 0 && !stopped {
            let ck = self.snapshot(total)?;
            save(ck)?;
        }
        let rec = &mut self.record;
        let members = (0..r)
            .map(|m| {
                rec.done[m].clone().unwrap_or_else(|| {
                    let (acc, loss, attn, norms, scores) = rec.last_eval[m].clone().unwrap_or((0.0, f64::NAN, None, None, None));
                    // A learner's restart that trained to the budget is judged in its final
                    // state, as one that stopped is; under the test rule it did not learn.
                    let judged = self.stop_rule.is_some() && rec.last_eval[m].is_some();
                    let learned = judged && acc >= tc.target_accuracy;
                    MemberResult {
                        seed: self.spec.seeds[m],
                        relevant: self.tasks[m].relevant().to_vec(),
                        learned,
                        diverged: false,
                        step: judged.then_some(self.step),
                        steps_trained: self.step,
                        test_accuracy: acc,
                        test_loss: loss,
                        train_loss: rec.last_train_loss[m],
                        attention: attn,
                        norms,
                        scores,
                        stopped: self.scored.then_some(Stopped::Budget),
                    }
                })
            })
            .collect();
        Ok(EnsembleResult { members, curves: rec.curves.clone(), steps: self.step, seconds: total })
    }

    /// Evaluate the active members at this step, record the points and the members that
    /// finish (they leave the ensemble), and report; returns what `progress` said.
    fn evaluate_and_record(&mut self, progress: &mut dyn FnMut(Progress) -> bool) -> Result<bool, TrainError> {
        let (target, max_steps) = (self.spec.train.target_accuracy, self.spec.train.max_steps);
        let r = self.spec.seeds.len();
        let train_loss = self.train_loss()?;
        let evals = self.evaluate()?;
        let norms = self.norms()?;
        let scores = if self.scored { self.scores()? } else { vec![None; evals.len()] };
        // A plugin fault without an error channel (or one a caller swallowed) stops the
        // run here, before anything it may have touched is recorded.
        self.check_faults()?;
        let mut points = Vec::new();
        let mut leaving = Vec::new();
        let initial = |m: usize| self.initial_loss.as_ref().map_or(f64::NAN, |l| l[m]);
        // A learner's restart stops on what the learner may see (its training samples and
        // validation split), never on the test set, once its rule has held `patience` times
        // in a row.
        let rule_stops: Vec<bool> = (0..self.active.len())
            .map(|slot| {
                let m = self.active[slot];
                let holds =
                    self.stop_rule.is_some_and(|rule| scores[slot].as_ref().is_some_and(|s| rule.stops(s.train_accuracy, s.validation_accuracy, target)));
                self.held[m] = if holds { self.held[m] + 1 } else { 0 };
                self.held[m] >= self.patience
            })
            .collect();
        // Instances decided here: one of their restarts stops on validation at this evaluation.
        let decided: BTreeSet<usize> = if self.instances.is_empty() {
            BTreeSet::new()
        } else {
            (0..self.active.len())
                .filter(|&slot| rule_stops[slot] && !has_diverged(train_loss[slot], evals[slot].1, initial(self.active[slot])))
                .map(|slot| self.instances[self.active[slot]])
                .collect()
        };
        for (slot, ((((acc, test_loss, attn), &loss), norms), scores)) in evals.into_iter().zip(&train_loss).zip(norms).zip(scores).enumerate() {
            let m = self.active[slot];
            points.push(
                CurvePoint {
                    member: m,
                    seed: self.spec.seeds[m],
                    step: self.step,
                    train_loss: loss,
                    test_loss,
                    test_accuracy: acc,
                    best_mass_on_s: attn.as_ref().map(|a| a.mass_on_s[a.best_head.0][a.best_head.1]),
                    ..Default::default()
                }
                .with_norms(norms.as_ref())
                .with_scores(scores.as_ref()),
            );
            self.record.last_train_loss[m] = loss;
            let diverged = has_diverged(loss, test_loss, initial(m));
            let learned = !diverged && acc >= target;
            // `learned` only judges a learner's restart's state.
            let stops = if self.stop_rule.is_none() { learned } else { rule_stops[slot] };
            // Another restart of its instance validated here: its state no longer matters.
            let decides = !self.instances.is_empty() && decided.contains(&self.instances[m]);
            let stopped = if diverged {
                Stopped::Diverged
            } else if stops {
                Stopped::by(self.stop_rule)
            } else {
                Stopped::Decided
            };
            let stops = stops || decides;
            if diverged || stops {
                leaving.push(slot);
                self.record.done[m] = Some(MemberResult {
                    seed: self.spec.seeds[m],
                    relevant: self.tasks[m].relevant().to_vec(),
                    learned,
                    diverged,
                    // The stop step: where it learned (test rule) or where its rule stopped it.
                    step: (learned || (stops && self.stop_rule.is_some())).then_some(self.step),
                    steps_trained: self.step,
                    test_accuracy: acc,
                    test_loss,
                    train_loss: loss,
                    attention: attn,
                    norms,
                    stopped: self.scored.then_some(stopped),
                    scores,
                });
            } else {
                self.record.last_eval[m] = Some((acc, test_loss, attn, norms, scores));
            }
        }
        self.retire(&leaving)?;
        let finished = self.record.done.iter().filter(|d| d.is_some()).count();
        let keep_going = progress(Progress::Evaluated { step: self.step, max_steps, points: &points, finished, members: r });
        self.record.curves.extend(points);
        Ok(keep_going)
    }

    /// Everything needed to go on from this step exactly: see [`crate::checkpoint`]. The
    /// `config` is left empty (the trainer does not know the YAML it came from).
    pub fn snapshot(&mut self, seconds: f64) -> Result<Checkpoint, TrainError> {
        let mut tensors = Vec::new();
        let slots = self.active.len();
        if slots > 0 {
            let current = self.read_parameters()?;
            for (id, values) in self.params.ids().zip(current) {
                let spec = &self.params.specs[id.0];
                tensors.push((format!("param.{}", spec.name), [vec![slots], spec.shape.clone()].concat(), values));
            }
            let per = self.optimizer.buffers_per_param();
            let state = self.optimizer.read_state(self.backend)?;
            for (i, values) in state.into_iter().enumerate() {
                let spec = &self.params.specs[self.graphs.train.grads[i / per].0.0];
                tensors.push((format!("optim.{}.{}", spec.name, i % per), [vec![slots], spec.shape.clone()].concat(), values));
            }
        }
        for (m, finished) in self.finished_params.iter().enumerate() {
            for (spec, values) in self.params.specs.iter().zip(finished.iter().flatten()) {
                tensors.push((format!("finished.{m}.{}", spec.name), spec.shape.clone(), values.clone()));
            }
        }
        let rec = &self.record;
        let as_summary = |m: usize, e: &LastEval| {
            MemberSummary::from(&MemberResult {
                seed: self.spec.seeds[m],
                relevant: Vec::new(),
                learned: false,
                diverged: false,
                step: None,
                steps_trained: 0,
                test_accuracy: e.0,
                test_loss: e.1,
                train_loss: f64::NAN,
                attention: e.2.clone(),
                norms: e.3.clone(),
                scores: e.4.clone(),
                stopped: None,
            })
        };
        let state = TrainerState {
            step: self.step,
            active: self.active.clone(),
            optimizer_steps: self.optimizer.steps(),
            sources: self.sources.iter().map(|s| SourceState { order: s.order.clone(), pos: s.pos, rng: s.rng.clone() }).collect(),
            initial_loss: self.initial_loss.clone(),
            done: rec.done.iter().map(|d| d.as_ref().map(MemberSummary::from)).collect(),
            last_eval: rec.last_eval.iter().enumerate().map(|(m, e)| e.as_ref().map(|e| as_summary(m, e))).collect(),
            last_train_loss: rec.last_train_loss.clone(),
            seconds,
            builds: Vec::new(),
        };
        Ok(Checkpoint { config: String::new(), state, curves: rec.curves.clone(), tensors })
    }

    /// Put this freshly made trainer (no step taken) where `ck` was taken, so that
    /// [`Trainer::run`] goes on exactly as the run that wrote it did. A checkpoint that does
    /// not fit this run (members, parameter shapes, training-set sizes) is refused with
    /// [`TrainError::Setup`] and the trainer is left unusable.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<(), TrainError> {
        let bad = |why: String| Err(TrainError::Setup(format!("the checkpoint does not fit this run: {why}")));
        let st = &ck.state;
        let r = self.spec.seeds.len();
        if self.step != 0 {
            return bad("the trainer has already trained".into());
        }
        if st.sources.len() != r || st.done.len() != r || st.last_eval.len() != r || st.last_train_loss.len() != r {
            return bad(format!("it holds {} members, this run has {r}", st.sources.len()));
        }
        if st.active.windows(2).any(|w| w[0] >= w[1]) || st.active.iter().any(|&m| m >= r || st.done[m].is_some()) {
            return bad(format!("active members {:?} are not a subset of 0..{r} in order, or include finished ones", st.active));
        }
        if (0..r).any(|m| !st.active.contains(&m) && st.done[m].is_none()) {
            return bad("a member is neither active nor finished".into());
        }
        for (m, (src, saved)) in self.sources.iter().zip(&st.sources).enumerate() {
            let mut sorted = saved.order.clone();
            sorted.sort_unstable();
            if sorted != (0..src.order.len()).collect::<Vec<_>>() || saved.pos > saved.order.len() {
                return bad(format!("member {m}'s batch order is not a permutation of its {} training samples", src.order.len()));
            }
        }
        // Finished members' parameters, then the active ones' in a smaller ensemble.
        let mut finished = vec![None; r];
        for m in (0..r).filter(|m| st.done[*m].is_some()) {
            let mut values = Vec::new();
            for spec in &self.params.specs {
                let name = format!("finished.{m}.{}", spec.name);
                match ck.tensor(&name) {
                    Some((_, shape, v)) if *shape == spec.shape && v.len() == numel(&spec.shape) => values.push(v.clone()),
                    Some((_, shape, _)) => return bad(format!("tensor {name} has shape {shape:?}, this model's is {:?}", spec.shape)),
                    None => return bad(format!("no tensor {name}")),
                }
            }
            finished[m] = Some(values);
        }
        if st.active.len() < r {
            self.shrink(&st.active)?;
        }
        self.active = st.active.clone();
        if !self.active.is_empty() {
            let slots = self.active.len();
            let ids: Vec<ParamId> = self.params.ids().collect();
            for id in ids {
                let spec = &self.params.specs[id.0];
                let name = format!("param.{}", spec.name);
                let want = [vec![slots], spec.shape.clone()].concat();
                match ck.tensor(&name) {
                    Some((_, shape, v)) if *shape == want && v.len() == numel(&want) => self.backend.write(self.params.buffer(id), v)?,
                    Some((_, shape, _)) => return bad(format!("tensor {name} has shape {shape:?}, this model's is {want:?}")),
                    None => return bad(format!("no tensor {name}")),
                }
            }
            let per = self.optimizer.buffers_per_param();
            let mut state = Vec::new();
            for (p, _) in &self.graphs.train.grads {
                let spec = &self.params.specs[p.0];
                for k in 0..per {
                    let name = format!("optim.{}.{k}", spec.name);
                    let want = [vec![slots], spec.shape.clone()].concat();
                    match ck.tensor(&name) {
                        Some((_, shape, v)) if *shape == want => state.push(v.clone()),
                        Some((_, shape, _)) => return bad(format!("tensor {name} has shape {shape:?}, this model's is {want:?}")),
                        None => return bad(format!("no tensor {name} (another optimizer?)")),
                    }
                }
            }
            self.optimizer.write_state(self.backend, &state, st.optimizer_steps)?;
        }
        self.finished_params = finished;
        for (src, saved) in self.sources.iter_mut().zip(&st.sources) {
            src.order = saved.order.clone();
            src.pos = saved.pos;
            src.rng = saved.rng.clone();
        }
        self.step = st.step;
        self.initial_loss = st.initial_loss.clone();
        self.record = RunRecord {
            done: st.done.iter().map(|d| d.clone().map(MemberResult::from)).collect(),
            curves: ck.curves.clone(),
            last_eval: st
                .last_eval
                .iter()
                .map(|e| {
                    e.clone().map(|e| {
                        let e = MemberResult::from(e);
                        (e.test_accuracy, e.test_loss, e.attention, e.norms, e.scores)
                    })
                })
                .collect(),
            last_train_loss: st.last_train_loss.clone(),
            seconds: st.seconds,
        };
        // How long each member's stop rule has held, from its curve (evaluations in order).
        self.held = vec![0; r];
        if let Some(rule) = self.stop_rule {
            for c in &ck.curves {
                let holds = c.train_accuracy.is_some_and(|a| rule.stops(a, c.validation_accuracy, self.spec.train.target_accuracy));
                self.held[c.member] = if holds { self.held[c.member] + 1 } else { 0 };
            }
        }
        Ok(())
    }

    /// Every active member's accuracy and mean loss on its training samples and, where it
    /// has one, its validation split (slot order).
    fn scores(&mut self) -> Result<Vec<Option<Scores>>, TrainError> {
        let train: Vec<Option<Dataset>> = self.active.iter().map(|&m| self.sources[m].train.clone()).collect();
        let val: Vec<Option<Dataset>> = self.active.iter().map(|&m| self.validation[m].clone()).collect();
        let (train_acc, train_loss) = self.accuracy_on(&train)?;
        let (val_acc, _) = self.accuracy_on(&val)?;
        Ok((0..self.active.len())
            .map(|slot| {
                train[slot].as_ref().map(|_| Scores {
                    train_accuracy: train_acc[slot],
                    train_loss: train_loss[slot],
                    validation_accuracy: val[slot].as_ref().map(|_| val_acc[slot]),
                })
            })
            .collect())
    }

    /// Accuracy and mean loss of each active member on its own `sets[slot]` (NaN for none),
    /// through the evaluation graph in chunks; sets may differ in size.
    fn accuracy_on(&mut self, sets: &[Option<Dataset>]) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
        let r = self.active.len();
        let chunk = self.graphs.eval.batch;
        let classes = self.model.data.classes;
        let longest = sets.iter().flatten().map(|d| d.len()).max().unwrap_or(0);
        let (mut correct, mut loss) = (vec![0usize; r], vec![0.0; r]);
        let mut start = 0;
        while start < longest {
            self.tokens.clear();
            self.labels.clear();
            self.encoded.clear();
            for set in sets {
                let first = self.tokens.len();
                for i in 0..chunk {
                    // Rows past a set's end (or of no set) repeat a row and are not counted.
                    match set.as_ref().filter(|d| !d.is_empty()) {
                        Some(d) => {
                            let row = (start + i).min(d.len() - 1);
                            self.tokens.extend_from_slice(d.row(row));
                            self.labels.push(d.labels[row] as f64);
                        }
                        None => {
                            self.tokens.extend(std::iter::repeat_n(0u8, self.model.data.seq_len));
                            self.labels.push(0.0);
                        }
                    }
                }
                self.model.encode(chunk, &self.tokens[first..], &mut self.encoded);
            }
            let g = &self.graphs;
            g.eval_exec.write(self.backend, g.eval.inputs, &self.encoded)?;
            g.eval_exec.run(self.backend)?;
            g.eval_exec.read(self.backend, g.eval.logits, &mut self.scratch)?;
            for (slot, set) in sets.iter().enumerate() {
                let valid = set.as_ref().map_or(0, |d| d.len().saturating_sub(start).min(chunk));
                for i in 0..valid {
                    let row = &self.scratch[(slot * chunk + i) * classes..(slot * chunk + i + 1) * classes];
                    let y = self.labels[slot * chunk + i] as usize;
                    let (arg, max) = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc });
                    if arg == y && max.is_finite() {
                        correct[slot] += 1;
                    }
                    loss[slot] += max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - row[y];
                }
            }
            start += chunk;
        }
        let n = |slot: usize| sets[slot].as_ref().map_or(0, |d| d.len());
        Ok(((0..r).map(|s| correct[s] as f64 / n(s) as f64).collect(), (0..r).map(|s| loss[s] / n(s) as f64).collect()))
    }

    /// The capacity-bound norms of every active member, in slot order, computed on the host
    /// from the parameters as they are now (`None` for a model without attention). Only the
    /// parameters of the bound are read back; evaluations are rare, so this costs little.
    pub fn norms(&mut self) -> Result<Vec<Option<CapacityNorms>>, TrainError> {
        let r = self.active.len();
        let Some(layout) = self.model.norm_layout() else { return Ok(vec![None; r]) };
        let mut ids = vec![layout.tok];
        ids.extend(layout.pos);
        for l in &layout.layers {
            ids.extend([l.q.0, l.q.1, l.k.0, l.k.1, l.v.0, l.v.1, l.o.0, l.o.1]);
        }
        let mut values = std::collections::HashMap::new();
        for id in ids {
            let mut v = Vec::new();
            self.backend.read(self.params.buffer(id), &mut v)?;
            values.insert(id, v);
        }
        let params = &self.params;
        Ok((0..r)
            .map(|slot| {
                let value = |id: ParamId| -> &[f64] {
                    let n = params.member_len(id);
                    &values[&id][slot * n..(slot + 1) * n]
                };
                Some(capacity_norms(&layout, &value))
            })
            .collect())
    }

    /// The active members' parameters as stored, in declaration order: [slots, ..] each.
    fn read_parameters(&mut self) -> Result<Vec<Vec<f64>>, TrainError> {
        let mut out = Vec::new();
        for id in self.params.ids() {
            let mut v = Vec::new();
            self.backend.read(self.params.buffer(id), &mut v)?;
            out.push(v);
        }
        Ok(out)
    }

    /// Every member's parameters, in declaration order: one Vec per parameter, [R, ..].
    /// A member that finished contributes its values from the step it finished.
    pub fn parameters(&mut self) -> Result<Vec<Vec<f64>>, TrainError> {
        let current = if self.active.is_empty() { Vec::new() } else { self.read_parameters()? };
        let lens: Vec<usize> = self.params.ids().map(|id| self.params.member_len(id)).collect();
        let mut out: Vec<Vec<f64>> = lens.iter().map(|&n| Vec::with_capacity(n * self.spec.seeds.len())).collect();
        for m in 0..self.spec.seeds.len() {
            let slot = self.active.iter().position(|&a| a == m);
            for (i, &n) in lens.iter().enumerate() {
                match slot {
                    Some(slot) => out[i].extend_from_slice(&current[i][slot * n..(slot + 1) * n]),
                    None => out[i].extend_from_slice(&self.finished_params[m].as_ref().expect("a member is active or finished")[i]),
                }
            }
        }
        Ok(out)
    }

    /// Overwrite parameter `index` (declaration order) with `values` ([R, ..]), e.g. to
    /// restore a checkpoint before training.
    pub fn write_parameter(&mut self, index: usize, values: &[f64]) -> Result<(), TrainError> {
        let id = self.params.ids().nth(index).ok_or_else(|| TrainError::Setup(format!("no parameter {index}")))?;
        let n = self.params.member_len(id);
        let r = self.spec.seeds.len();
        if values.len() != r * n {
            return Err(TrainError::Setup(format!("parameter {index} holds {} values for {r} members, got {}", r * n, values.len())));
        }
        for (m, snapshot) in self.finished_params.iter_mut().enumerate() {
            if let Some(p) = snapshot {
                p[index].copy_from_slice(&values[m * n..(m + 1) * n]);
            }
        }
        if !self.active.is_empty() {
            let kept: Vec<f64> = self.active.iter().flat_map(|&m| values[m * n..(m + 1) * n].iter().copied()).collect();
            self.backend.write(self.params.buffer(id), &kept)?;
        }
        Ok(())
    }
}

/// Mass on S per head, the best head, and whether its top-s input positions are S.
pub fn summarize_attention(weights: Vec<Vec<Vec<f64>>>, relevant: &[usize]) -> AttentionSummary {
    let mass_on_s: Vec<Vec<f64>> = weights.iter().map(|layer| layer.iter().map(|h| relevant.iter().map(|&i| h[i + 1]).sum()).collect()).collect();
    let mut best_head = (0, 0);
    let mut best = f64::NEG_INFINITY;
    for (l, layer) in mass_on_s.iter().enumerate() {
        for (h, &m) in layer.iter().enumerate() {
            if m > best {
                best = m;
                best_head = (l, h);
            }
        }
    }
    let head = &weights[best_head.0][best_head.1];
    let mut order: Vec<usize> = (0..head.len() - 1).collect();
    // Input positions by descending weight (ties broken by position, so it is deterministic).
    order.sort_by(|&a, &b| head[b + 1].total_cmp(&head[a + 1]).then(a.cmp(&b)));
    let mut top: Vec<usize> = order[..relevant.len()].to_vec();
    top.sort();
    AttentionSummary { top_s_equals_s: top == relevant, weights, mass_on_s, best_head }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
