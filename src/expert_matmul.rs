//! The experts' batched matmul `x·W` (`[E, C, a] × [E, a, b]`) as one autodiff operation whose
//! backward never transposes a weight.
//!
//! Burn's autodiff matmul computes the input gradient as ∂x = ∂y·Wᵀ. On a backend whose matmul
//! copies non-contiguous operands (burn-ndarray 0.21 reshapes both operands to a standard layout,
//! `burn-ndarray-0.21.0/src/ops/matmul.rs`), the transposed view Wᵀ costs a copy of the whole
//! stacked weight, E·a·b floats, at every step, although only C ≈ cf·T/E tokens per expert use it:
//! the cost that made the MoE layer grow with E on the CPU (BENCHMARKS.md).
//! [`transpose_free_matmul`] computes the same gradient as ∂x = (W·∂yᵀ)ᵀ, where only
//! activation-sized operands (∂y, and the result) are transposed; the weight gradient
//! ∂W = xᵀ·∂y already transposes only the activations. Values are the same sums in another
//! association, equal to Burn's within float rounding.
//!
//! The operation follows Burn's backend-extension pattern: a [`Backward`] implementation on the
//! autodiff decorator, generic over its inner backend and checkpointing strategy, so it runs on
//! every backend. The layer uses it where it pays: [`expert_matmul`] selects it at run time by
//! the backend's type for `Autodiff<NdArray>` (with this crate's `ndarray` feature). LibTorch's
//! `bmm` multiplies transposed operands without copying them, and there the transposed ∂x made
//! the cpu-preset training step 5–13% slower (three A/B runs, BENCHMARKS.md); GPU matmul kernels
//! (wgpu, CUDA) read transposed operands natively as well. Every other backend runs
//! `Tensor::matmul`.

use core::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive, ops::FloatTensor};
use burn_autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, binary},
};

/// Process-wide switch of the weight-transpose-free backward (on by default).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the weight-transpose-free backward on or off for the whole process (off: every backend
/// runs `Tensor::matmul`, Burn's own backward). For A/B measurements (`benches/moe.rs` times
/// both in one run); the values agree within float rounding either way.
pub fn set_transpose_free_backward(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether [`expert_matmul`] takes the weight-transpose-free backward on backend `B`:
/// `Autodiff<NdArray>` with this crate's `ndarray` feature, and the switch
/// ([`set_transpose_free_backward`]) on.
pub fn has_transpose_free_backward<B: Backend>() -> bool {
    if !ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    crate::backend_caps::is_autodiff_ndarray::<B>()
}

/// `x·W` for stacked expert operands: [`transpose_free_matmul`] where it pays — on the backends
/// of [`has_transpose_free_backward`], when each expert has fewer slots than the input width
/// (C < a: the transposed ∂y, E·C·b floats, is then smaller than the transposed weight, E·a·b) —
/// else `Tensor::matmul` (see the module docs).
///
/// # Shapes
/// - x: `[E, C, a]`
/// - w: `[E, a, b]`
/// - output: `[E, C, b]`
pub fn expert_matmul<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 3>) -> Tensor<B, 3> {
    // The transposes each backward copies: Burn's Wᵀ, E·a·b floats; ours ∂yᵀ, E·C·b. Ours pays
    // while the experts hold fewer slots than the operand's width (C < a).
    let [_, slots, width] = x.dims();
    if slots >= width || !has_transpose_free_backward::<B>() {
        return x.matmul(w);
    }
    #[cfg(feature = "ndarray")]
    return via_ndarray(x, w);
    #[cfg(not(feature = "ndarray"))]
    unreachable!("only Autodiff<NdArray> has the transpose-free backward")
}

/// [`transpose_free_matmul`] on `B`, which [`has_transpose_free_backward`] found to be
/// `Autodiff<NdArray>`: the tensors are that type's, behind the generic name.
#[cfg(feature = "ndarray")]
fn via_ndarray<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 3>) -> Tensor<B, 3> {
    use core::any::Any;
    type Nd = crate::backend_caps::AutodiffNdArray;
    fn cast<From: 'static, To: 'static>(t: From) -> To {
        *(Box::new(t) as Box<dyn Any>)
            .downcast::<To>()
            .expect("has_transpose_free_backward checked the backend type")
    }
    cast(transpose_free_matmul::<burn_ndarray::NdArray, _>(
        cast::<_, Tensor<Nd, 3>>(x),
        cast(w),
    ))
}

/// `x·W` on any autodiff backend, with the backward ∂x = (W·∂yᵀ)ᵀ and ∂W = xᵀ·∂y: no
/// weight-sized operand is ever transposed (see the module docs).
///
/// # Shapes
/// - x: `[E, C, a]`
/// - w: `[E, a, b]`
/// - output: `[E, C, b]`
pub fn transpose_free_matmul<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 3>,
    w: Tensor<Autodiff<B, C>, 3>,
) -> Tensor<Autodiff<B, C>, 3> {
    let y = weight_matmul::<B, C>(x.into_primitive().tensor(), w.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

fn weight_matmul<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    w: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    /// y = x·W with ∂x = (W·∂yᵀ)ᵀ and ∂W = xᵀ·∂y.
    #[derive(Debug)]
    struct WeightMatmul;

    impl<B: Backend> Backward<B, 2> for WeightMatmul {
        /// The checkpointed x (needed for ∂W) and W (needed for ∂x).
        type State = (Option<NodeId>, Option<NodeId>);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let (x, w) = ops.state;
            let x = x.map(|id| checkpointer.retrieve_node_output(id));
            let w = w.map(|id| checkpointer.retrieve_node_output(id));
            binary::<B, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| {
                    // [E, a, b] · [E, b, C] → [E, a, C], read as [E, C, a].
                    let grad_t = B::float_swap_dims(grad, 1, 2);
                    let w = w.expect("W is kept when x needs a gradient");
                    B::float_swap_dims(B::float_matmul(w, grad_t), 1, 2)
                },
                |grad| {
                    // [E, a, C] · [E, C, b] → [E, a, b].
                    let x = x.expect("x is kept when W needs a gradient");
                    B::float_matmul(B::float_swap_dims(x, 1, 2), grad)
                },
            );
        }
    }

    let x_tracked = x.is_tracked();
    let w_tracked = w.is_tracked();
    match WeightMatmul
        .prepare::<C>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = w_tracked.then(|| prep.checkpoint(&x));
            let w_state = x_tracked.then(|| prep.checkpoint(&w));
            prep.finish(
                (x_state, w_state),
                B::float_matmul(x.primitive, w.primitive),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(B::float_matmul(x.primitive, w.primitive)),
    }
}
