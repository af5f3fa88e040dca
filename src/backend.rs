//! The backend of the examples, tests, benches and experiments, chosen by cargo feature.
//!
//! The library itself is generic over `B: Backend`; only programs pick one. Precedence when
//! several backend features are on: `cuda`, then `wgpu`, then `tch`, then `ndarray` (the default
//! feature), so `cargo run --features wgpu --example train` runs on wgpu without
//! `--no-default-features`.

#[cfg(feature = "cuda")]
mod selected {
    /// The selected backend: CUDA (NVIDIA GPUs; optional feature, not tested in CI).
    pub type Backend = burn::backend::Cuda;
    /// Its device type.
    pub type Device = burn::backend::cuda::CudaDevice;
    /// Name for messages.
    pub const NAME: &str = "cuda";
}

#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
mod selected {
    /// The selected backend: wgpu (Vulkan, Metal, DX12 or WebGPU; fusion and autotune on).
    pub type Backend = burn::backend::Wgpu;
    /// Its device type.
    pub type Device = burn::backend::wgpu::WgpuDevice;
    /// Name for messages.
    pub const NAME: &str = "wgpu";
}

#[cfg(all(feature = "tch", not(any(feature = "wgpu", feature = "cuda"))))]
mod selected {
    /// The selected backend: LibTorch.
    pub type Backend = burn::backend::LibTorch;
    /// Its device type.
    pub type Device = burn::backend::libtorch::LibTorchDevice;
    /// Name for messages.
    pub const NAME: &str = "tch";
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
    /// Name for messages.
    pub const NAME: &str = "ndarray";
}

pub use selected::{Backend as SelectedBackend, Device as SelectedDevice, NAME};

/// The selected backend with automatic differentiation, for training.
pub type SelectedAutodiff = burn::backend::Autodiff<SelectedBackend>;

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
/// (glibc on Linux; a no-op elsewhere). Call once at the start of a training or benchmark program.
///
/// Why: a CPU training step allocates many buffers far above glibc's mmap threshold (32 MiB at
/// most) — weight gradients `[E, d, f]`, the layout copies burn-ndarray makes for transposed
/// matmul operands — so each one is a fresh `mmap`, page-faulted and zeroed by the kernel, then
/// `munmap`ed. With mmap disabled and trimming off they come from the heap and are reused:
/// MoE forward+backward at T = 2048, d 256/1024 (ndarray, 1 thread) takes 143 ms instead of
/// 178 ms at E = 8 and 554 ms instead of 894 ms at E = 128 (`cargo bench --bench moe --
/// --profile E`, see BENCHMARKS.md). The cost: the process keeps its peak heap until it exits.
/// A library never calls this on its own; the programs of this crate do.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
