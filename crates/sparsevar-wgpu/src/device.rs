//! Finding adapters and opening a device: the only place that talks to the wgpu instance.

use std::fmt;

/// Why no device could be opened.
#[derive(Debug, thiserror::Error)]
pub enum WgpuError {
    #[error(
        "no GPU adapter found; install a Vulkan driver — on a machine without a GPU, Mesa's software driver: apt-get install mesa-vulkan-drivers libvulkan1"
    )]
    NoAdapter,
    #[error("no GPU adapter number {index}: {count} found (`sparsevar info` lists them)")]
    AdapterIndex { index: usize, count: usize },
    #[error("GPU adapter {name} ({backend}): {message}")]
    Device { name: String, backend: String, message: String },
}

/// One adapter as `sparsevar info` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Position in [`adapters`], the number [`crate::WgpuBackend::with_adapter`] takes.
    pub index: usize,
    pub name: String,
    /// Graphics API: "vulkan", "metal", "dx12", …
    pub backend: String,
    /// "discrete", "integrated", "virtual", "cpu" or "other".
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {}) driver {} {} | max storage binding {} MiB, workgroups/dim {}, invocations/workgroup {}",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            self.max_storage_buffer_binding_size >> 20,
            self.max_compute_workgroups_per_dimension,
            self.max_compute_invocations_per_workgroup
        )
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

/// Preference order of [`crate::WgpuBackend::new`]: a discrete GPU, then an integrated
/// one, then anything else, a software rasteriser last.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Every adapter the instance sees (backends narrowed by `WGPU_BACKEND` if set), in a
/// stable order.
pub(crate) fn enumerate() -> Vec<wgpu::Adapter> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    // One GPU reached through two ICD manifests (see `headless`) is listed once.
    let mut seen = std::collections::HashSet::new();
    adapters.retain(|a| seen.insert(format!("{:?}", a.get_info())));
    adapters
}

pub(crate) fn summary(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterSummary {
        index,
        name: info.name,
        backend: info.backend.to_string(),
        device_type: device_type_name(info.device_type).to_string(),
        driver: info.driver,
        driver_info: info.driver_info,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
    }
}

/// All adapters, for `sparsevar info`.
pub fn adapters() -> Vec<AdapterSummary> {
    enumerate().iter().enumerate().map(|(i, a)| summary(i, a)).collect()
}

/// Index of the adapter [`crate::WgpuBackend::new`] picks: best [`preference`], first on ties.
pub(crate) fn best(adapters: &[wgpu::Adapter]) -> Option<usize> {
    adapters.iter().enumerate().min_by_key(|(_, a)| preference(a.get_info().device_type)).map(|(i, _)| i)
}

/// Storage buffers of the merged update entry points (update.wgsl): `accumulate_squares_many`
/// binds y, x0 to x2 and p1 to v6; `adam_many` 25 of them.
pub(crate) const MANY_STORAGE_BUFFERS: u32 = 28;

/// Open a device with the limits our kernels need, raised to the adapter's buffer sizes and
/// dispatch size so large ensembles fit.
pub(crate) fn open(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue), WgpuError> {
    let info = adapter.get_info();
    let have = adapter.limits();
    let fail = |message: String| WgpuError::Device { name: info.name.clone(), backend: info.backend.to_string(), message };
    let mut need = wgpu::Limits::downlevel_defaults();
    // 256-invocation workgroups (16 x 16 for the tiled matmul), 9 KiB of workgroup memory,
    // five storage buffers (Adam: parameter, gradient, norm, m, v) at least.
    need.max_compute_invocations_per_workgroup = 256;
    need.max_compute_workgroup_size_x = 256;
    need.max_compute_workgroup_size_y = 16;
    need.max_compute_workgroup_storage_size = 16384;
    // Merged updates bind up to 28 buffers (six parameters' four and the norm in an Adam
    // dispatch, 27 gradients and the sums in one of sums of squares) and fused chains up to
    // seven, where the adapter allows (lavapipe has 32, desktop GPUs more); five at least.
    need.max_storage_buffers_per_shader_stage = have.max_storage_buffers_per_shader_stage.clamp(5, MANY_STORAGE_BUFFERS);
    // ... and the launch's uniform besides them.
    need.max_buffers_and_acceleration_structures_per_shader_stage = need
        .max_buffers_and_acceleration_structures_per_shader_stage
        .max(have.max_buffers_and_acceleration_structures_per_shader_stage.min(MANY_STORAGE_BUFFERS + 1));
    need.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size;
    need.max_buffer_size = have.max_buffer_size;
    need.max_compute_workgroups_per_dimension = have.max_compute_workgroups_per_dimension;
    // Timestamps between dispatches, where the adapter has them, for device-side profiles.
    let timestamps = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
    let desc = wgpu::DeviceDescriptor {
        label: Some("sparsevar"),
        required_features: adapter.features() & timestamps,
        required_limits: need,
        memory_hints: wgpu::MemoryHints::Performance,
        ..Default::default()
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| fail(format!("cannot open a device: {e}")))
}
