//! The backend of the examples, tests, benches and experiments, chosen by cargo feature.
//!
//! The library itself is generic over `B: Backend`; only programs pick one. Precedence when
//! several backend features are on: `cuda`, then `wgpu`, then `tch`, then `ndarray` (the default
//! feature), so `cargo run --features wgpu --example train` runs on wgpu without
//! turning the default features off.

#[cfg(feature = "cuda")]
mod selected {
    /// The selected backend: CUDA (NVIDIA GPUs; optional feature, not tested in CI).
    pub type Backend = burn::backend::Cuda;
    /// Its device type.
    pub type Device = burn::backend::cuda::CudaDevice;

    /// GPUs 0..n.
    pub fn devices(n: usize) -> Vec<Device> {
        (0..n).map(Device::new).collect()
    }
    /// Name for messages.
    pub const NAME: &str = "cuda";

    /// A CUDA device is a GPU; its name would need a CUDA context, so the index stands in.
    pub fn describe(device: &Device) -> super::DeviceInfo {
        super::DeviceInfo {
            name: format!("CUDA device {}", device.index),
            kind: super::DeviceKind::DiscreteGpu,
            detail: None,
        }
    }
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod selected {
    /// The selected backend: wgpu (Vulkan, Metal, DX12 or WebGPU; fusion and autotune on).
    pub type Backend = burn::backend::Wgpu;
    /// Its device type.
    pub type Device = burn::backend::wgpu::WgpuDevice;

    /// One device: the default adapter; n > 1: discrete GPUs 0..n (wgpu numbers them per
    /// kind), or with `SWITCH_MOE_WGPU_SHARED=1` n copies of the default adapter (one queue:
    /// the data-parallel code path without a second GPU).
    pub fn devices(n: usize) -> Vec<Device> {
        if n <= 1 || std::env::var_os("SWITCH_MOE_WGPU_SHARED").is_some() {
            vec![Device::default(); n.max(1)]
        } else {
            (0..n).map(Device::DiscreteGpu).collect()
        }
    }
    /// Name for messages.
    pub const NAME: &str = "wgpu";

    /// Asks wgpu for the adapter behind `device`. Initialising the runtime with cubecl's
    /// `init_setup` is the one way burn-wgpu 0.21 exposes the adapter; it does what the first
    /// tensor would do (same graphics API, default options), once per device: the answer is
    /// kept for later calls.
    pub fn describe(device: &Device) -> super::DeviceInfo {
        use std::sync::Mutex;

        use burn::backend::wgpu::graphics::AutoGraphicsApi;
        use burn::backend::wgpu::{RuntimeOptions, init_setup};

        static DESCRIBED: Mutex<Vec<(Device, super::DeviceInfo)>> = Mutex::new(Vec::new());
        let mut described = DESCRIBED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, info)) = described.iter().find(|(d, _)| d == device) {
            return info.clone();
        }
        let setup = init_setup::<AutoGraphicsApi>(device, RuntimeOptions::default());
        let adapter = setup.adapter.get_info();
        // wgpu is not a direct dependency, so its `DeviceType` is matched by its Debug name.
        let kind = match format!("{:?}", adapter.device_type).as_str() {
            "Cpu" => super::DeviceKind::Cpu,
            "DiscreteGpu" => super::DeviceKind::DiscreteGpu,
            "IntegratedGpu" => super::DeviceKind::IntegratedGpu,
            "VirtualGpu" => super::DeviceKind::VirtualGpu,
            _ => super::DeviceKind::Other,
        };
        let api = format!("{:?}", adapter.backend);
        let detail = [api.as_str(), &adapter.driver, &adapter.driver_info]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        let info = super::DeviceInfo {
            name: adapter.name.clone(),
            kind,
            detail: Some(detail),
        };
        described.push((device.clone(), info.clone()));
        info
    }
}

#[cfg(all(feature = "tch", not(any(feature = "wgpu", feature = "cuda"))))]
mod selected {
    /// The selected backend: LibTorch.
    pub type Backend = burn::backend::LibTorch;
    /// Its device type.
    pub type Device = burn::backend::libtorch::LibTorchDevice;

    /// n copies of the CPU device (the data-parallel code path; the copies share the host's
    /// cores). LibTorch's CUDA devices are not enumerated here: the crate does not link `tch`
    /// directly to count them.
    pub fn devices(n: usize) -> Vec<Device> {
        vec![Device::default(); n.max(1)]
    }
    /// Name for messages.
    pub const NAME: &str = "tch";

    /// LibTorch's device enum says what it is.
    pub fn describe(device: &Device) -> super::DeviceInfo {
        use super::{DeviceInfo, DeviceKind};
        let (name, kind) = match device {
            Device::Cpu => (super::host_cpu().0, DeviceKind::Cpu),
            Device::Cuda(i) => (format!("CUDA device {i}"), DeviceKind::DiscreteGpu),
            Device::Mps => ("Apple GPU (MPS)".to_string(), DeviceKind::IntegratedGpu),
            Device::Vulkan => ("Vulkan device".to_string(), DeviceKind::Other),
        };
        let threads = match device {
            Device::Cpu => super::host_cpu().1.map(|t| format!(", {t}")),
            _ => None,
        };
        DeviceInfo {
            name,
            kind,
            detail: Some(format!("LibTorch{}", threads.unwrap_or_default())),
        }
    }
}

#[cfg(all(
    feature = "ndarray",
    not(any(feature = "wgpu", feature = "tch", feature = "cuda"))
))]
mod selected {
    /// The selected backend: ndarray (pure Rust, CPU, multi-threaded).
    pub type Backend = burn::backend::NdArray;
    /// Its device type.
    pub type Device = burn::backend::ndarray::NdArrayDevice;

    /// n copies of the one CPU device: ndarray has no other (the data-parallel code path; the
    /// copies share the host's cores, so no speed-up).
    pub fn devices(n: usize) -> Vec<Device> {
        vec![Device::default(); n.max(1)]
    }
    /// Name for messages.
    pub const NAME: &str = "ndarray";

    /// ndarray always computes on the host CPU.
    pub fn describe(_device: &Device) -> super::DeviceInfo {
        let (name, detail) = super::host_cpu();
        super::DeviceInfo {
            name,
            kind: super::DeviceKind::Cpu,
            detail,
        }
    }
}

pub use selected::{Backend as SelectedBackend, Device as SelectedDevice, NAME};

/// What kind of processor a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host CPU, or a driver that runs on it (wgpu on Mesa's lavapipe/llvmpipe).
    Cpu,
    /// A discrete GPU.
    DiscreteGpu,
    /// A GPU sharing memory with the CPU.
    IntegratedGpu,
    /// A virtualised GPU.
    VirtualGpu,
    /// Anything the backend does not classify.
    Other,
}

impl DeviceKind {
    /// `CPU`, `discrete GPU`, ... for messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cpu => "CPU",
            Self::DiscreteGpu => "discrete GPU",
            Self::IntegratedGpu => "integrated GPU",
            Self::VirtualGpu => "virtual GPU",
            Self::Other => "unknown kind",
        }
    }

    /// Whether it is a GPU of any kind.
    pub fn is_gpu(self) -> bool {
        matches!(
            self,
            Self::DiscreteGpu | Self::IntegratedGpu | Self::VirtualGpu
        )
    }
}

/// A device as a program reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The adapter or device name, e.g. `NVIDIA GeForce RTX 4090` or `llvmpipe (LLVM 15.0.7,
    /// 256 bits)`.
    pub name: String,
    /// What kind of processor it is.
    pub kind: DeviceKind,
    /// Graphics API and driver, where the backend says (wgpu: `Vulkan, llvmpipe Mesa 23.2.1`).
    pub detail: Option<String>,
}

/// `n` devices of the selected backend for data-parallel training (the train program's devices option): distinct
/// GPUs where the backend has them (cuda; wgpu discrete GPUs), otherwise n copies
/// of the one CPU device, which runs burn-train's multi-device code path on shared cores.
pub fn data_parallel_devices(n: usize) -> Vec<SelectedDevice> {
    selected::devices(n)
}

/// Describes `device` of the selected backend: its name and whether it is a CPU or a GPU.
///
/// # Panics
///
/// With wgpu this initialises the wgpu runtime on `device` (the adapter is known only then), so
/// the first call for a device must come before its first tensor: cubecl refuses to initialise a
/// device twice. Later calls return the first answer. Without a usable adapter, wgpu panics here
/// as it would at the first tensor.
pub fn describe_device(device: &SelectedDevice) -> DeviceInfo {
    selected::describe(device)
}

/// The host CPU: `("host CPU", "8 threads")`.
#[cfg_attr(any(feature = "wgpu", feature = "cuda"), allow(dead_code))] // ndarray and tch use it
fn host_cpu() -> (String, Option<String>) {
    let threads = std::thread::available_parallelism().map(|n| format!("{n} threads"));
    ("host CPU".to_string(), threads.ok())
}

/// The environment variable that sets cubecl's autotune level (wgpu, cuda).
pub const AUTOTUNE_LEVEL_ENV: &str = "CUBECL_AUTOTUNE_LEVEL";

/// Makes cubecl's autotune level `minimal` unless `CUBECL_AUTOTUNE_LEVEL` is set, and returns the
/// level in effect; `None` for backends without autotune (ndarray, tch).
///
/// Why: cubecl benchmarks every candidate kernel of an operation the first time it meets a shape
/// "anchor" (a power of 2 at the default level, of 2.5 at `minimal`, so fewer distinct shapes
/// are tuned). A training run has few shapes, but validation's last batch and generation's
/// growing prompts add more, and on a CPU adapter (lavapipe) each tuning takes minutes. 0.10 has
/// no switch that skips tuning; the level, read once from this variable or a `cubecl.toml`, is
/// the knob. Results are cached in [`autotune_cache_dir`] and reused by later runs.
///
/// # Safety
///
/// Sets an environment variable: call at the start of `main`, before any other thread exists
/// (see [`std::env::set_var`]).
pub unsafe fn prefer_minimal_autotune() -> Option<String> {
    if !matches!(NAME, "wgpu" | "cuda") {
        return None;
    }
    match std::env::var(AUTOTUNE_LEVEL_ENV) {
        Ok(level) => Some(level),
        Err(_) => {
            // SAFETY: the caller guarantees that no other thread exists yet.
            unsafe { std::env::set_var(AUTOTUNE_LEVEL_ENV, "minimal") };
            Some("minimal".to_string())
        }
    }
}

/// Where cubecl keeps its autotune results by default: `target/autotune` of the nearest
/// directory above the working directory that holds a `Cargo.toml` (in a clone of this crate:
/// its `target/`, whatever `CARGO_TARGET_DIR` says), else the user's cache directory.
/// `None` for backends without autotune.
pub fn autotune_cache_dir() -> Option<std::path::PathBuf> {
    if !matches!(NAME, "wgpu" | "cuda") {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let project = cwd.ancestors().find(|d| d.join("Cargo.toml").is_file());
    match project {
        Some(dir) => Some(dir.join("target").join("autotune")),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache"))
                })?;
            Some(cache.join("cubecl").join("autotune"))
        }
    }
}

/// The selected backend with automatic differentiation, for training. Named through the direct
/// `burn-autodiff` dependency: `burn::backend::Autodiff` exists only with burn's `autodiff`
/// feature, which a backend feature alone (`default-features = false, features = ["ndarray"]`)
/// does not turn on.
pub type SelectedAutodiff = burn_autodiff::Autodiff<SelectedBackend>;

/// The backend the test suite runs on (the selected one).
pub type TestBackend = SelectedBackend;

/// [`TestBackend`] with automatic differentiation.
pub type TestAutodiffBackend = SelectedAutodiff;

/// The selected backend's default device (the first GPU for cuda and wgpu; CPU for tch and
/// ndarray).
pub fn default_device() -> SelectedDevice {
    SelectedDevice::default()
}

/// Keeps freed memory in the process heap instead of returning every large buffer to the OS
/// (glibc on Linux; a no-op elsewhere).
///
/// **The library applies this itself** the first time a Switch block is built on burn-ndarray
/// (`SwitchFeedForwardConfig::init` and everything that calls it), once per process; set the
/// environment variable `SWITCH_MOE_SYSTEM_MALLOC` (any value) to keep glibc's defaults. Other
/// backends keep their tensors outside the process heap and are left alone; call this yourself
/// to apply it anyway.
///
/// Why: a CPU training step allocates many buffers far above glibc's mmap threshold (32 MiB at
/// most) — weight gradients `[E, d, f]`, the layout copies burn-ndarray makes for transposed
/// matmul operands — so each one is a fresh `mmap`, page-faulted and zeroed by the kernel, then
/// `munmap`ed. With mmap disabled and trimming off they come from the heap and are reused:
/// MoE forward+backward at T = 2048, d 256/1024 (ndarray, 1 thread) takes 143 ms instead of
/// 178 ms at E = 8 and 554 ms instead of 894 ms at E = 128 (`cargo bench --bench moe --
/// --profile E`, see BENCHMARKS.md). The cost: the process keeps its peak heap until it exits.
pub fn keep_freed_memory() {
    crate::backend_caps::keep_freed_memory();
}
