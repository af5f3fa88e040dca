//! What generic code must ask about a backend, answered in one place: whether it is burn-ndarray
//! 0.21, which lacks two things the layer otherwise relies on.
//!
//! - `float_argtopk` is unimplemented, so [`dispatch`](crate::dispatch)'s probability drop
//!   policy sorts instead (on the host, where ndarray's data already is);
//! - its matmul copies transposed operands to a standard layout, so the experts' backward uses
//!   [`expert_matmul`](crate::expert_matmul)'s transpose-free operation there.
//!
//! - its tensors live in the process heap, where glibc returns every buffer above its mmap
//!   threshold to the OS when freed: [`tune_allocator_for`] keeps them (see
//!   `backend::keep_freed_memory`).
//!
//! The answer is by type: `NdArray` or `Autodiff<NdArray>` (the crate's `ndarray` feature, the
//! element types the programs and tests use). The second is also what the transpose-free
//! operation needs to cast its operands to.

use core::any::TypeId;

use burn::tensor::backend::Backend;

/// `Autodiff<NdArray>`, the one autodiff ndarray type the transpose-free backward serves.
#[cfg(feature = "ndarray")]
pub(crate) type AutodiffNdArray = burn_autodiff::Autodiff<burn_ndarray::NdArray>;

/// Whether `B` is burn-ndarray, plain or behind autodiff.
pub(crate) fn is_ndarray<B: Backend>() -> bool {
    #[cfg(feature = "ndarray")]
    {
        let b = TypeId::of::<B>();
        b == TypeId::of::<burn_ndarray::NdArray>() || b == TypeId::of::<AutodiffNdArray>()
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = TypeId::of::<B>;
        false
    }
}

/// Whether `B` is exactly [`AutodiffNdArray`] (its tensors can be cast to that type's).
pub(crate) fn is_autodiff_ndarray<B: Backend>() -> bool {
    #[cfg(feature = "ndarray")]
    return TypeId::of::<B>() == TypeId::of::<AutodiffNdArray>();
    #[cfg(not(feature = "ndarray"))]
    false
}

/// The environment variable that keeps glibc's default allocator settings in a process whose
/// Switch blocks run on burn-ndarray (see [`tune_allocator_for`]).
pub const SYSTEM_MALLOC_ENV: &str = "SWITCH_MOE_SYSTEM_MALLOC";

/// Keeps freed memory in the process heap (glibc on Linux; a no-op elsewhere): no mmap for large
/// blocks, no trimming of the heap's top, 64 MiB of padding per heap extension. Why and what it
/// costs: `backend::keep_freed_memory`.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Whether `B` is burn-ndarray (plain or behind autodiff, any element types), by type name: a
/// user's crate may run burn-ndarray through burn's own `ndarray` feature without this crate's,
/// where [`is_ndarray`] cannot name the type.
fn keeps_tensors_in_heap<B: Backend>() -> bool {
    let name = core::any::type_name::<B>();
    name.starts_with("burn_ndarray::") || name.contains("Autodiff<burn_ndarray::")
}

/// Called by every Switch block's construction: on burn-ndarray, once per process, applies
/// [`keep_freed_memory`] unless [`SYSTEM_MALLOC_ENV`] is set. Without it every weight-sized
/// buffer of a training step is a fresh mmap, page-faulted and unmapped again (E = 64 at
/// T = 2048: 502–530 ms per forward + backward instead of 324 ms, BENCHMARKS.md), so a user's
/// crate would not get the speed the benchmarks report.
pub(crate) fn tune_allocator_for<B: Backend>() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if keeps_tensors_in_heap::<B>() {
        ONCE.call_once(|| {
            if std::env::var_os(SYSTEM_MALLOC_ENV).is_none() {
                keep_freed_memory();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_backend_is_recognised() {
        type B = crate::backend::TestBackend;
        type AB = crate::backend::TestAutodiffBackend;
        let ndarray = crate::backend::NAME == "ndarray";
        assert_eq!(is_ndarray::<B>(), ndarray);
        assert_eq!(is_ndarray::<AB>(), ndarray);
        assert_eq!(is_autodiff_ndarray::<AB>(), ndarray);
        assert!(!is_autodiff_ndarray::<B>());
        assert_eq!(keeps_tensors_in_heap::<B>(), ndarray);
        assert_eq!(keeps_tensors_in_heap::<AB>(), ndarray);
    }
}
