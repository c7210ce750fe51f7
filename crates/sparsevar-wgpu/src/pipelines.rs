//! Compute pipelines, created on first use and cached by kernel kind, each with an explicit
//! bind-group layout listing only the bindings its entry point touches. Shader modules and
//! pipelines are created inside error scopes so a bad shader is an `Err`, not a panic.

use std::num::NonZeroU64;

use crate::kernels::WORDS;

/// The WGSL modules: the shared prelude followed by one file.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Elementwise,
    Rows,
    MatMul,
    Scatter,
    Update,
}

const MODULES: usize = 5;
const PRELUDE: &str = include_str!("kernels/prelude.wgsl");

impl Module {
    fn file(self) -> (&'static str, &'static str) {
        match self {
            Module::Elementwise => ("elementwise.wgsl", include_str!("kernels/elementwise.wgsl")),
            Module::Rows => ("rows.wgsl", include_str!("kernels/rows.wgsl")),
            Module::MatMul => ("matmul.wgsl", include_str!("kernels/matmul.wgsl")),
            Module::Scatter => ("scatter.wgsl", include_str!("kernels/scatter.wgsl")),
            Module::Update => ("update.wgsl", include_str!("kernels/update.wgsl")),
        }
    }
}

/// The storage bindings of prelude.wgsl, by binding number (0 is the uniform).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Binding {
    /// Output of a kernel; the buffer an update writes.
    Y = 1,
    X0 = 2,
    X1 = 3,
    X2 = 4,
    S0 = 5,
    S1 = 6,
    /// The launch site's u32 scratch, written.
    Scratch = 7,
    /// The same scratch, read.
    Order = 8,
    /// The second to sixth parameter of a merged Adam dispatch: parameter, gradient, m, v
    /// (the sixth's only as gradients of merged sums of squares).
    P1 = 9,
    G1 = 10,
    M1 = 11,
    V1 = 12,
    P2 = 13,
    G2 = 14,
    M2 = 15,
    V2 = 16,
    P3 = 17,
    G3 = 18,
    M3 = 19,
    V3 = 20,
    P4 = 21,
    G4 = 22,
    M4 = 23,
    V4 = 24,
    P5 = 25,
    G5 = 26,
    M5 = 27,
    V5 = 28,
    P6 = 29,
    G6 = 30,
    M6 = 31,
    V6 = 32,
}

impl Binding {
    pub(crate) fn read_only(self) -> bool {
        use Binding::*;
        matches!(self, X0 | X1 | X2 | Order | G1 | G2 | G3 | G4 | G5 | G6)
    }

    /// Index into a launch's buffer slots (`None` for the site's own scratch).
    pub(crate) fn slot(self) -> Option<usize> {
        match self as usize {
            n @ 1..=6 => Some(n - 1),
            7 | 8 => None,
            n => Some(n - 3),
        }
    }
}

/// Buffer slots a launch fills: Y, X0, X1, X2, S0, S1, then P1 to V6.
pub(crate) const SLOTS: usize = 30;

/// One compute entry point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Pipe {
    Fill,
    Affine,
    Unary,
    UnaryBackward,
    Binary,
    SumTo,
    Permute,
    Narrow,
    NarrowBackward,
    Gather,
    Zero,
    Softmax,
    SoftmaxBackward,
    LayerNorm,
    LayerNormBackward,
    /// A LayerNorm, its scale and its shift, fused by the backend.
    LayerNormAffine,
    /// Their backward (but for the scale's gradient), fused likewise.
    NormAffineBackward,
    CrossEntropy,
    CrossEntropyBackward,
    MatMulSmall,
    MatMulTiled,
    /// A MatMul and the bias Add after it, fused by the backend.
    MatMulSmallBias,
    MatMulTiledBias,
    ScatterIndexShared,
    ScatterSum,
    ScatterScan,
    ScatterScanShared,
    AccumulateSquares,
    AccumulateSquaresMany,
    Adam,
    AdamMany,
    Sgd,
    ScaleToBall,
}

const PIPES: usize = 33;

impl Pipe {
    /// Module, entry point, and the bindings it uses.
    pub(crate) fn info(self) -> (Module, &'static str, &'static [Binding]) {
        use Binding::*;
        use Module as M;
        match self {
            Pipe::Fill => (M::Elementwise, "fill", &[Y]),
            Pipe::Affine => (M::Elementwise, "affine", &[Y, X0]),
            Pipe::Unary => (M::Elementwise, "unary", &[Y, X0]),
            Pipe::UnaryBackward => (M::Elementwise, "unary_backward", &[Y, X0, X1]),
            Pipe::Binary => (M::Elementwise, "binary", &[Y, X0, X1]),
            Pipe::SumTo => (M::Elementwise, "sum_to", &[Y, X0]),
            // x1 and s0: a second permute paired with it (unused by a single one).
            Pipe::Permute => (M::Elementwise, "permute", &[Y, X0, X1, S0]),
            Pipe::Narrow => (M::Elementwise, "narrow", &[Y, X0]),
            Pipe::NarrowBackward => (M::Elementwise, "narrow_backward", &[Y, X0]),
            Pipe::Gather => (M::Elementwise, "gather", &[Y, X0, X1]),
            Pipe::Zero => (M::Elementwise, "zero", &[Y]),
            // s0: the output of an Affine launch fused with it (unused without).
            Pipe::Softmax => (M::Rows, "softmax", &[Y, X0, S0]),
            Pipe::SoftmaxBackward => (M::Rows, "softmax_backward", &[Y, X0, X1, S0]),
            Pipe::LayerNorm => (M::Rows, "layer_norm", &[Y, X0]),
            Pipe::LayerNormBackward => (M::Rows, "layer_norm_backward", &[Y, X0, X1]),
            Pipe::LayerNormAffine => (M::Rows, "layer_norm_affine", &[Y, X0, X1, X2, S0, S1]),
            Pipe::NormAffineBackward => (M::Elementwise, "norm_affine_backward", &[Y, X0, X1, X2, S0, S1]),
            // x2 and s0: the backward fused after the loss (dloss in, dlogits out).
            Pipe::CrossEntropy => (M::Rows, "cross_entropy", &[Y, X0, X1, X2, S0]),
            Pipe::CrossEntropyBackward => (M::Rows, "cross_entropy_backward", &[Y, X0, X1, X2, S0]),
            // x2 and s0: a second product's operand and output (unused by a single one).
            Pipe::MatMulSmall => (M::MatMul, "matmul_small", &[Y, X0, X1, X2, S0]),
            Pipe::MatMulTiled => (M::MatMul, "matmul_tiled", &[Y, X0, X1, X2, S0]),
            // s1 and g1: an activation or residual fused after the bias (unused without).
            Pipe::MatMulSmallBias => (M::MatMul, "matmul_small_bias", &[Y, X0, X1, X2, S0, S1, G1]),
            Pipe::MatMulTiledBias => (M::MatMul, "matmul_tiled_bias", &[Y, X0, X1, X2, S0, S1, G1]),
            Pipe::ScatterIndexShared => (M::Scatter, "scatter_index_shared", &[X0, Scratch]),
            Pipe::ScatterSum => (M::Scatter, "scatter_sum", &[Y, X1, Order]),
            Pipe::ScatterScan => (M::Scatter, "scatter_scan", &[Y, X0, X1]),
            Pipe::ScatterScanShared => (M::Scatter, "scatter_scan_shared", &[Y, X0, X1]),
            Pipe::AccumulateSquares => (M::Update, "accumulate_squares", &[Y, X0, X1, X2]),
            Pipe::AccumulateSquaresMany => (
                M::Update,
                "accumulate_squares_many",
                &[Y, X0, X1, X2, P1, G1, M1, V1, P2, G2, M2, V2, P3, G3, M3, V3, P4, G4, M4, V4, P5, G5, M5, V5, P6, G6, M6, V6],
            ),
            Pipe::Adam => (M::Update, "adam", &[Y, X0, X1, S0, S1]),
            Pipe::AdamMany => (M::Update, "adam_many", &[Y, X0, X1, S0, S1, P1, G1, M1, V1, P2, G2, M2, V2, P3, G3, M3, V3, P4, G4, M4, V4, P5, G5, M5, V5]),
            Pipe::Sgd => (M::Update, "sgd", &[Y, X0, X1, S0]),
            Pipe::ScaleToBall => (M::Update, "scale_to_ball", &[Y, X0]),
        }
    }
}

/// A ready pipeline and the layout its bind groups must follow.
pub(crate) struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The cache: at most one module per file and one pipeline per entry point, ever.
pub(crate) struct Pipelines {
    modules: [Option<wgpu::ShaderModule>; MODULES],
    pipes: [Option<Compiled>; PIPES],
}

impl Pipelines {
    pub(crate) fn new() -> Self {
        Pipelines { modules: Default::default(), pipes: std::array::from_fn(|_| None) }
    }

    /// The pipeline for `pipe`, compiled on first use. Errors are messages for
    /// `BackendError::Device`.
    pub(crate) fn get(&mut self, device: &wgpu::Device, pipe: Pipe) -> Result<&Compiled, String> {
        if self.pipes[pipe as usize].is_none() {
            let (module, entry, bindings) = pipe.info();
            if self.modules[module as usize].is_none() {
                let (name, source) = module.file();
                let code = format!("{PRELUDE}\n{source}");
                let sm = scoped(device, || {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(code.into()) })
                })
                .map_err(|e| format!("shader {name}: {e}"))?;
                self.modules[module as usize] = Some(sm);
            }
            let sm = self.modules[module as usize].as_ref().expect("just created");
            let compiled = scoped(device, || {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new((WORDS * 4) as u64),
                    },
                    count: None,
                }];
                entries.extend(bindings.iter().map(|&b| wgpu::BindGroupLayoutEntry {
                    binding: b as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: b.read_only() },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }));
                let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(entry),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pl),
                    module: sm,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                });
                Compiled { pipeline, layout }
            })
            .map_err(|e| format!("pipeline {entry}: {e}"))?;
            self.pipes[pipe as usize] = Some(compiled);
        }
        Ok(self.pipes[pipe as usize].as_ref().expect("just created"))
    }
}

/// Run `f` inside validation, out-of-memory and internal error scopes; the first error
/// caught, or `f`'s value.
pub(crate) fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> Result<T, wgpu::Error> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    // Scopes pop innermost first.
    let errors = [pollster::block_on(validation.pop()), pollster::block_on(oom.pop()), pollster::block_on(internal.pop())];
    match errors.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(value),
    }
}
