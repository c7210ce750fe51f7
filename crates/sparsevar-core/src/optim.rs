//! Optimizers (Adam, AdamW, SGD with momentum), gradient clipping and learning-rate
//! schedules, run as in-place [`Update`]s on the backend so nothing travels to the host.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, BufferId, Update, run_updates};
use crate::graph::{ParamId, ParamStore};

/// Which update rule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam without weight decay.
    Adam,
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw,
    /// SGD with momentum (PyTorch convention), weight decay added to the gradient.
    Sgd,
}

/// Learning-rate schedule.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after the optional linear warmup.
    Constant,
    /// Linear warmup, then cosine decay to 0 at the last step.
    Cosine,
}

/// Optimizer settings (hyperparameters shared by every member of an ensemble).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    /// Clip each member's global gradient norm to this value.
    pub clip: Option<f64>,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    /// Total steps (the cosine schedule reaches 0 here).
    pub total_steps: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.9,
            clip: None,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            total_steps: 1,
        }
    }
}

impl OptimConfig {
    /// Learning rate at 0-based step `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[derive(Debug)]
struct Slot {
    param: BufferId,
    grad: BufferId,
    state: Vec<BufferId>,
    len: usize,
}

/// Optimizer state for one ensemble: moment buffers per parameter, the step counter.
#[derive(Debug)]
pub struct Optimizer {
    pub config: OptimConfig,
    slots: Vec<Slot>,
    norm: Option<BufferId>,
    groups: usize,
    step: usize,
}

impl Optimizer {
    /// State for the parameters that have a gradient buffer in `grads`.
    pub fn new(backend: &mut dyn Backend, config: OptimConfig, params: &ParamStore, grads: &[(ParamId, BufferId)]) -> Result<Self, BackendError> {
        let groups = params.members;
        let n_state = if config.kind == OptimizerKind::Sgd { 1 } else { 2 };
        let mut slots = Vec::new();
        for &(p, grad) in grads {
            let len = params.member_len(p);
            let state = (0..n_state).map(|_| backend.alloc(groups * len)).collect::<Result<_, _>>()?;
            slots.push(Slot { param: params.buffer(p), grad, state, len });
        }
        let norm = if config.clip.is_some() { Some(backend.alloc(groups)?) } else { None };
        Ok(Self { config, slots, norm, groups, step: 0 })
    }

    /// Shrink to the members `keep` (in that order) of the ensemble, now trained over the
    /// smaller ensemble's parameters and gradient buffers (`params`, `grads`, in the same
    /// order as when this optimizer was made). Moments and the step counter carry over, so
    /// each kept member's updates go on exactly as before; the old buffers are freed.
    pub fn retain(&mut self, backend: &mut dyn Backend, keep: &[usize], params: &ParamStore, grads: &[(ParamId, BufferId)]) -> Result<(), BackendError> {
        assert_eq!(grads.len(), self.slots.len(), "the smaller ensemble must train the same parameters");
        for (slot, &(p, grad)) in self.slots.iter_mut().zip(grads) {
            debug_assert_eq!(slot.len, params.member_len(p));
            for b in &mut slot.state {
                *b = crate::graph::retain_rows(backend, *b, slot.len, keep)?;
            }
            slot.param = params.buffer(p);
            slot.grad = grad;
        }
        // The clipping norms are recomputed every step: a fresh buffer will do.
        if let Some(b) = self.norm {
            backend.free(b)?;
            self.norm = Some(backend.alloc(keep.len())?);
        }
        self.groups = keep.len();
        Ok(())
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// The state buffers (moments, or SGD's velocity) of every trained parameter, read to
    /// the host: for each parameter in the order it was given (`grads` of [`Optimizer::new`]),
    /// each of its buffers, [members, ..]. With [`Optimizer::steps`] this is all a checkpoint
    /// needs (the clipping norms are recomputed every step).
    pub fn read_state(&self, backend: &mut dyn Backend) -> Result<Vec<Vec<f64>>, BackendError> {
        let mut out = Vec::new();
        for s in &self.slots {
            for &b in &s.state {
                let mut v = Vec::new();
                backend.read(b, &mut v)?;
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Restore what [`Optimizer::read_state`] returned (for an ensemble of the same size and
    /// the same parameters) and the step counter, so the next update equals the one an
    /// uninterrupted run makes.
    pub fn write_state(&mut self, backend: &mut dyn Backend, state: &[Vec<f64>], steps: usize) -> Result<(), BackendError> {
        let buffers: Vec<(BufferId, usize)> = self.slots.iter().flat_map(|s| s.state.iter().map(move |&b| (b, s.len))).collect();
        if buffers.len() != state.len() {
            return Err(BackendError::Device {
                backend: backend.name(),
                message: format!("optimizer state: {} buffers given for {} held", state.len(), buffers.len()),
            });
        }
        for ((b, len), values) in buffers.into_iter().zip(state) {
            if values.len() != len * self.groups {
                return Err(BackendError::BufferSize {
                    backend: backend.name(),
                    kernel: "optimizer state".into(),
                    buffer: b,
                    have: values.len(),
                    need: len * self.groups,
                });
            }
            backend.write(b, values)?;
        }
        self.step = steps;
        Ok(())
    }

    /// How many state buffers each trained parameter has (2 for Adam/AdamW, 1 for SGD).
    pub fn buffers_per_param(&self) -> usize {
        if self.config.kind == OptimizerKind::Sgd { 1 } else { 2 }
    }

    /// Apply one update from the current gradient buffers.
    pub fn step(&mut self, backend: &mut dyn Backend) -> Result<(), BackendError> {
        run_updates(backend, &self.next_updates())
    }

    /// The updates of the next [`Optimizer::step`], in order, to run later (member by member
    /// after the backward pass where the backend prefers that). Counts as taking the step.
    pub fn next_updates(&mut self) -> Vec<(Update, Vec<BufferId>)> {
        let c = &self.config;
        let lr = c.lr_at(self.step);
        self.step += 1;
        let groups = self.groups;
        let mut out = Vec::with_capacity(self.slots.len() + 1);
        if let Some(norm) = self.norm {
            out.push((Update::Zero { len: groups }, vec![norm]));
            for s in &self.slots {
                out.push((Update::AccumulateSquares { groups, len: s.len }, vec![s.grad, norm]));
            }
        }
        let t = self.step as i32;
        for s in &self.slots {
            let mut bufs = vec![s.param, s.grad];
            bufs.extend(&s.state);
            bufs.extend(self.norm);
            let u = match c.kind {
                OptimizerKind::Adam | OptimizerKind::Adamw => Update::Adam {
                    groups,
                    len: s.len,
                    lr,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    weight_decay: if c.kind == OptimizerKind::Adamw { c.weight_decay } else { 0.0 },
                    bias1: 1.0 - c.beta1.powi(t),
                    bias2: 1.0 - c.beta2.powi(t),
                    clip: c.clip,
                },
                OptimizerKind::Sgd => Update::Sgd { groups, len: s.len, lr, momentum: c.momentum, weight_decay: c.weight_decay, clip: c.clip },
            };
            out.push((u, bufs));
        }
        out
    }
}
