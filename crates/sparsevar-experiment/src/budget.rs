//! Sizes that cannot fit are refused before anything is allocated.
//!
//! A huge T, training set, width, depth, ensemble or thread count used to abort deep inside
//! training with "memory allocation failed" (or to hang). Config validation now estimates
//! what one ensemble holds at its peak — parameters, gradients and optimizer state, the
//! planned buffers of the training and evaluation graphs, the members' datasets and the
//! host's staging buffers — and refuses, naming the key to lower, when that exceeds the
//! memory this machine has.
//!
//! The estimate plans the model's real graphs (for one member, at most three layers deep,
//! extrapolated: every tensor carries the ensemble axis, and layers between the first and
//! the last are alike), so it follows the model code instead of a formula that could drift.
//!
//! **The rule**: refuse when the estimate exceeds the memory available now (`MemAvailable`
//! in /proc/meminfo), or [`MEMORY_LIMIT_ENV`] where set (e.g. the share a cluster job was
//! granted); where neither can be read, [`FALLBACK_MEMORY`].

use sparsevar_core::attention::Attention;
use sparsevar_core::graph::{NodeId, planned_values};
use sparsevar_core::model::{DataShape, ModelSpec, Positions};
use sparsevar_core::optim::OptimizerKind;

use crate::config::TrainConfig;

/// Environment variable that sets the memory limit in bytes (suffixes K, M, G, T: powers
/// of 1024), replacing `MemAvailable`.
pub const MEMORY_LIMIT_ENV: &str = "SPARSEVAR_MEMORY_LIMIT";

/// The limit where neither [`MEMORY_LIMIT_ENV`] nor /proc/meminfo can be read: 16 GiB, a
/// common laptop or CI machine.
pub const FALLBACK_MEMORY: u64 = 16 << 30;

/// Samples per member per evaluation launch (the trainer's evaluation chunk).
pub(crate) const EVAL_CHUNK: usize = 256;

/// Most training runs (members over the whole grid) one sweep may hold: every run keeps a
/// row in memory and in runs.csv, and a grid this large would not finish anyway.
pub const MAX_SWEEP_RUNS: u128 = 1_000_000;

/// Shapes whose element counts come near the range of machine integers cannot be planned
/// at all (no machine holds 2^56 values either).
const MAX_PLANNED_PRODUCT: u128 = 1 << 56;

/// How much memory a config may use, and where that number came from.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// E.g. "MemAvailable in /proc/meminfo".
    pub source: String,
}

/// The memory limit in force (see the module docs for the rule).
pub fn memory_limit() -> MemoryLimit {
    if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV)
        && let Some(bytes) = parse_bytes(&v)
    {
        return MemoryLimit { bytes, source: format!("{MEMORY_LIMIT_ENV}={v}") };
    }
    if let Ok(text) = std::fs::read_to_string("/proc/meminfo")
        && let Some(kib) = meminfo_field(&text, "MemAvailable")
    {
        return MemoryLimit { bytes: kib.saturating_mul(1024), source: "MemAvailable in /proc/meminfo".into() };
    }
    MemoryLimit { bytes: FALLBACK_MEMORY, source: "no /proc/meminfo here; the fallback limit".into() }
}

/// A field of /proc/meminfo in KiB.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// "123", "64M", "16G", "1T" (powers of 1024).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Bytes as "12.3 GiB".
pub fn human(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = bytes;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{x:.0} B") } else { format!("{x:.1} {}", units[i]) }
}

/// The most worker threads a config or flag may ask for: 4 × the cores, at least 1024.
/// Results do not depend on the count and more threads than cores only add switching, but
/// each thread costs a stack and a kernel task: a million of them hangs the machine while
/// the pool starts.
pub fn thread_limit() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).max(1024)
}

/// Check a thread count given under `key` (`threads`, `--threads`).
pub fn check_threads(key: &str, n: usize) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{key} must be at least 1 (or leave it out to use every core)"));
    }
    let limit = thread_limit();
    if n > limit {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Err(format!(
            "{key} = {n} is more worker threads than this machine can run: at most {limit} (4 × its {cores} cores, at least 1024); results do not depend on the count, so use at most the number of cores"
        ));
    }
    Ok(())
}

/// Bytes per value on a backend: 4 for the f32 backends, 8 for `cpu-f64` and any other.
pub fn value_bytes(backend: &str) -> usize {
    if matches!(backend, "cpu" | "wgpu" | "auto") { 4 } else { 8 }
}

/// What one ensemble is trained at: the sizes an estimate needs.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    pub model: ModelSpec,
    pub train: TrainConfig,
    pub data: DataShape,
    /// Ensemble size R.
    pub members: usize,
    /// The largest training set of a member (ignored when online).
    pub samples: usize,
    /// Bytes per value on the backend.
    pub value_bytes: usize,
    pub attention: Option<&'a (dyn Attention + 'static)>,
}

/// An estimate of one ensemble's peak memory, in bytes, by part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Parameters, gradients and optimizer state on the backend.
    pub model_state: f64,
    /// The other planned buffers of the training and evaluation graphs.
    pub activations: f64,
    /// Training and test sets on the host.
    pub data: f64,
    /// Host staging buffers, parameter snapshots, graph constants and graph nodes.
    pub host: f64,
    /// When members finish, the smaller ensemble's graphs are planned before the old ones
    /// are freed: up to R − 1 members' activations more, for a moment.
    pub shrink: f64,
}

impl Estimate {
    pub fn total(&self) -> f64 {
        self.model_state + self.activations + self.data + self.host + self.shrink
    }

    /// "1.2 GiB (model state 10.0 MiB, activations …, datasets …, host buffers …)".
    pub fn describe(&self) -> String {
        format!(
            "{} (parameters and optimizer state {}, activations {}, datasets {}, host buffers {}, shrinking the ensemble {})",
            human(self.total()),
            human(self.model_state),
            human(self.activations),
            human(self.data),
            human(self.host),
            human(self.shrink)
        )
    }
}

/// Per-member counts of one planned model.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Parameter values.
    params: f64,
    /// Parameter values that get a gradient (and optimizer state).
    trained: f64,
    /// Planned values of the training graph (gradients included, parameters not).
    train: f64,
    /// Planned values of the evaluation graph.
    eval: f64,
    /// Host values of graph constants.
    constants: f64,
    /// Graph nodes (train + eval).
    nodes: f64,
}

impl Counts {
    /// a + k (b − a), field by field: extrapolate from depth n to depth n + k.
    fn extrapolate(a: Counts, b: Counts, k: f64) -> Counts {
        let f = |x: f64, y: f64| x + k * (y - x);
        Counts {
            params: f(a.params, b.params),
            trained: f(a.trained, b.trained),
            train: f(a.train, b.train),
            eval: f(a.eval, b.eval),
            constants: f(a.constants, b.constants),
            nodes: f(a.nodes, b.nodes),
        }
    }
}

/// The depth knob of a model (transformer layers, MLP hidden layers).
fn depth(model: &ModelSpec) -> usize {
    match model {
        ModelSpec::Transformer(c) => c.layers,
        ModelSpec::Mlp(c) => c.depth,
    }
}

fn with_depth(model: &ModelSpec, d: usize) -> ModelSpec {
    let mut m = model.clone();
    match &mut m {
        ModelSpec::Transformer(c) => c.layers = d,
        ModelSpec::Mlp(c) => c.depth = d,
    }
    m
}

/// An upper bound on the element count of any tensor of one member's graphs, so that
/// planning them cannot overflow.
fn largest_product(plan: &Plan) -> u128 {
    let t = plan.data.seq_len as u128;
    let n = t + 1;
    let v = plan.data.alphabet as u128 + 1;
    let c = plan.data.classes as u128;
    let b = (plan.train.batch.max(EVAL_CHUNK.min(plan.train.test_samples))) as u128;
    let width = match &plan.model {
        ModelSpec::Transformer(m) => (m.d_model as u128).max(m.d_model as u128 * m.mlp as u128).saturating_mul(m.heads as u128),
        ModelSpec::Mlp(m) => (m.width as u128).max(t.saturating_mul(v)),
    };
    [b, n, n, v, c.max(1), width.max(1)].iter().fold(1u128, |acc, &x| acc.saturating_mul(x.max(1)))
}

/// Why a plan could not be sized.
#[derive(Clone, Debug, PartialEq)]
pub enum Unplannable {
    /// The largest element count of one member's tensors, beyond [`MAX_PLANNED_PRODUCT`].
    Product(u128),
    /// The model cannot be built at these sizes (the message names the key).
    Model(String),
}

/// Plan one member's graphs for a model of this depth.
fn count(plan: &Plan, model: &ModelSpec) -> Result<Counts, Unplannable> {
    let model_err = |e: sparsevar_core::model::ModelError| Unplannable::Model(e.to_string());
    // Sinusoidal positions are a constant the builder computes on the host; plan learned
    // ones (the same graph shape) and count the table below, so sizing allocates nothing.
    let sinusoidal = matches!(model, ModelSpec::Transformer(c) if c.positions == Positions::Sinusoidal);
    let mut spec = model.clone();
    if let ModelSpec::Transformer(c) = &mut spec
        && sinusoidal
    {
        c.positions = Positions::Learned;
    }
    let attention = plan.attention.map(dyn_clone::clone_box);
    let (model, params) = sparsevar_core::model::Model::new(&spec, plan.data, 1, attention).map_err(model_err)?;
    let train = model.build(&params, plan.train.batch, true).map_err(model_err)?;
    let outputs: Vec<NodeId> = std::iter::once(train.loss).chain(train.grads.iter().map(|g| g.1)).collect();
    let train_values = planned_values(&train.graph, &outputs) as f64;
    let trained: usize = train.grads.iter().map(|(p, _)| params.member_len(*p)).sum();
    let eval = model.build(&params, EVAL_CHUNK.min(plan.train.test_samples), false).map_err(model_err)?;
    let outputs: Vec<NodeId> = std::iter::once(eval.logits).chain(eval.attention.iter().copied()).collect();
    let eval_values = planned_values(&eval.graph, &outputs) as f64;
    let constants: usize = train.constants.iter().chain(&eval.constants).map(|(_, v)| v.len()).sum();
    let mut c = Counts {
        params: params.count_per_member() as f64,
        trained: trained as f64,
        train: train_values,
        eval: eval_values,
        constants: constants as f64,
        nodes: (train.graph.nodes().len() + eval.graph.nodes().len()) as f64,
    };
    if let (true, ModelSpec::Transformer(m)) = (sinusoidal, &spec) {
        // The table replaces the learned embedding: an input of each graph, a host constant.
        let table = ((plan.data.seq_len + 1) * m.d_model) as f64;
        c.params -= table;
        c.trained -= table;
        c.train += table;
        c.eval += table;
        c.constants += 2.0 * table;
    }
    Ok(c)
}

/// Bytes a graph node costs on the host (the node, its shape and inputs, its plan entry).
const NODE_BYTES: f64 = 256.0;

/// Estimate the peak memory of training `plan` (see the module docs). `Err` when the
/// shapes are too large to plan at all, or the model cannot be built.
pub fn estimate(plan: &Plan) -> Result<Estimate, Unplannable> {
    let product = largest_product(plan);
    if product > MAX_PLANNED_PRODUCT {
        return Err(Unplannable::Product(product));
    }
    let d = depth(&plan.model);
    let counts = if d <= 3 {
        count(plan, &plan.model)?
    } else {
        let (two, three) = (count(plan, &with_depth(&plan.model, 2))?, count(plan, &with_depth(&plan.model, 3))?);
        Counts::extrapolate(two, three, (d - 2) as f64)
    };
    let tc = &plan.train;
    let r = plan.members as f64;
    let vb = plan.value_bytes as f64;
    let t = plan.data.seq_len as f64;
    let n = t + 1.0;
    let heads = match &plan.model {
        ModelSpec::Transformer(m) => m.heads as f64,
        ModelSpec::Mlp(_) => 0.0,
    };
    let layers = match &plan.model {
        ModelSpec::Transformer(m) => m.layers as f64,
        ModelSpec::Mlp(_) => 0.0,
    };
    let input_width = match &plan.model {
        ModelSpec::Transformer(_) => n,
        ModelSpec::Mlp(_) => {
            if plan.data.alphabet == 2 {
                t
            } else {
                t * plan.data.alphabet as f64
            }
        }
    };
    let state = if tc.optimizer == OptimizerKind::Sgd { 1.0 } else { 2.0 };
    // Parameters, then gradients (planned with the training graph) and moments.
    let model_state = r * vb * (counts.params + state * counts.trained + 1.0);
    let activations = r * vb * (counts.train + counts.eval);
    let data = data_bytes(plan);
    let batch = tc.batch as f64;
    let chunk = EVAL_CHUNK.min(tc.test_samples) as f64;
    let classes = plan.data.classes as f64;
    let staging = batch.max(chunk) * (t + 8.0 + 8.0 * input_width) + 8.0 * chunk * classes.max(heads * n) + 8.0 * layers * heads * n;
    // Snapshots of finished members' parameters (or, at the start, the initial values).
    let host = r * (staging + 8.0 * counts.params + 8.0 * counts.constants) + NODE_BYTES * counts.nodes;
    let shrink = if r > 1.0 { activations * (r - 1.0) / r } else { 0.0 };
    Ok(Estimate { model_state, activations, data, host, shrink })
}

/// One size a user can lower, for naming the culprit of an estimate over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knob {
    T,
    Samples,
    TestSamples,
    Batch,
    Members,
    Width,
    Heads,
    Mlp,
    Depth,
}

impl Knob {
    const ALL: [Knob; 9] = [Knob::T, Knob::Samples, Knob::TestSamples, Knob::Batch, Knob::Members, Knob::Width, Knob::Heads, Knob::Mlp, Knob::Depth];

    /// The plan with this knob at its smallest useful setting (None: it does not apply).
    fn minimal<'a>(self, p: &Plan<'a>) -> Option<Plan<'a>> {
        let mut q = p.clone();
        match (self, &mut q.model) {
            (Knob::T, _) => q.data.seq_len = 1,
            (Knob::Samples, _) if !p.train.online => q.samples = 1,
            (Knob::Samples, _) => return None,
            (Knob::TestSamples, _) => q.train.test_samples = 1,
            (Knob::Batch, _) => q.train.batch = 1,
            (Knob::Members, _) => q.members = 1,
            (Knob::Width, ModelSpec::Transformer(c)) => c.d_model = c.heads,
            (Knob::Width, ModelSpec::Mlp(c)) => c.width = 1,
            (Knob::Heads, ModelSpec::Transformer(c)) => c.heads = 1,
            (Knob::Mlp, ModelSpec::Transformer(c)) => c.mlp = 0,
            (Knob::Depth, ModelSpec::Transformer(c)) => c.layers = 1,
            (Knob::Depth, ModelSpec::Mlp(c)) => c.depth = 0,
            _ => return None,
        }
        Some(q)
    }
}

/// Names and values of the knobs, as the config spells them.
pub struct KnobNames<'a> {
    pub name: &'a dyn Fn(Knob) -> String,
    pub value: &'a dyn Fn(Knob) -> String,
}

/// The knob whose smallest setting shrinks the estimate (or the planned product) most.
fn culprit(plan: &Plan, size: &dyn Fn(&Plan) -> f64) -> Knob {
    let mut best = (Knob::T, f64::INFINITY);
    for k in Knob::ALL {
        let Some(q) = k.minimal(plan) else { continue };
        let reduced = size(&q);
        if reduced < best.1 {
            best = (k, reduced);
        }
    }
    best.0
}

/// What `plan` surely needs, counted without planning anything: the datasets and the
/// training graph's input. Planning builds host constants of up to this size, so a plan is
/// only planned once this fits.
fn floor(plan: &Plan) -> Estimate {
    let tc = &plan.train;
    let t = plan.data.seq_len as f64;
    let r = plan.members as f64;
    let input_width = match &plan.model {
        ModelSpec::Transformer(_) => t + 1.0,
        ModelSpec::Mlp(_) => t * if plan.data.alphabet == 2 { 1.0 } else { plan.data.alphabet as f64 },
    };
    Estimate { activations: r * plan.value_bytes as f64 * tc.batch as f64 * (input_width + 1.0), data: data_bytes(plan), ..Estimate::default() }
}

/// The members' training and test sets: tokens and a label byte per sample; a fixed
/// training set also keeps its order.
fn data_bytes(plan: &Plan) -> f64 {
    let tc = &plan.train;
    let t = plan.data.seq_len as f64;
    let train_set = if tc.online { 0.0 } else { plan.samples as f64 * (t + 1.0 + 8.0) };
    plan.members as f64 * (train_set + tc.test_samples as f64 * (t + 1.0))
}

/// Refuse `plan` when it cannot fit in `limit`, naming the knob to lower (one line).
pub fn check(plan: &Plan, limit: &MemoryLimit, names: &KnobNames) -> Result<Estimate, String> {
    let cap = limit.bytes as f64;
    let floor_total = floor(plan).total();
    if floor_total > cap {
        let k = culprit(plan, &|q| floor(q).total());
        return Err(format!(
            "{} = {} is too large: training would need at least {} for its datasets and inputs alone, more than the {} this machine has ({}); lower {}",
            (names.name)(k),
            (names.value)(k),
            human(floor_total),
            human(cap),
            limit.source,
            (names.name)(k)
        ));
    }
    match estimate(plan) {
        Ok(e) if e.total() <= limit.bytes as f64 => Ok(e),
        Ok(e) => {
            // Variants only shrink sizes, so planning them allocates no more than this did.
            let k = culprit(plan, &|q| estimate(q).map_or(f64::INFINITY, |e| e.total()));
            Err(format!(
                "{} = {} is too large: training would need about {}, more than the {} this machine has ({}); lower {}",
                (names.name)(k),
                (names.value)(k),
                e.describe(),
                human(limit.bytes as f64),
                limit.source,
                (names.name)(k)
            ))
        }
        // Building the model is the trainer's to report (with its members and plugin);
        // the floor above is all that can be checked here.
        Err(Unplannable::Model(_)) => Ok(floor(plan)),
        Err(Unplannable::Product(product)) => {
            let k = culprit(plan, &|q| largest_product(q) as f64);
            Err(format!(
                "{} = {} is too large: one member's tensors would hold up to {product:.3e} values, more than any machine can hold (limit {}: {}); lower {}",
                (names.name)(k),
                (names.value)(k),
                human(limit.bytes as f64),
                limit.source,
                (names.name)(k)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_and_print() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64M"), Some(64 << 20));
        assert_eq!(parse_bytes(" 2g "), Some(2 << 30));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(3.0 * (1u64 << 40) as f64), "3.0 TiB");
        let info = "MemTotal:       16314188 kB\nMemFree:  100 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(meminfo_field(info, "MemAvailable"), Some(12_000_000));
        assert_eq!(meminfo_field(info, "Cached"), None);
    }

    #[test]
    fn threads_are_bounded() {
        assert!(check_threads("threads", 1).is_ok());
        assert!(check_threads("threads", thread_limit()).is_ok());
        let e = check_threads("--threads", 1_000_000).unwrap_err();
        assert!(e.starts_with("--threads = 1000000 is more worker threads") && e.contains("at most"), "{e}");
        assert!(check_threads("threads", 0).unwrap_err().contains("at least 1"));
    }
}
