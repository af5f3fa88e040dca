//! What generic code must ask about a backend, answered in one place: whether it is burn-ndarray
//! 0.21, which lacks two things the layer otherwise relies on.
//!
//! - `float_argtopk` is unimplemented, so [`dispatch`](crate::dispatch)'s probability drop
//!   policy sorts instead (on the host, where ndarray's data already is);
//! - its matmul copies transposed operands to a standard layout, so the experts' backward uses
//!   [`expert_matmul`](crate::expert_matmul)'s transpose-free operation there.
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
    }
}
