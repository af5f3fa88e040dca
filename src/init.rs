//! The Switch Transformer's weight initialisation (Fedus et al. 2021, §2.4 "Smaller parameter
//! initialization for stability").
//!
//! Each weight matrix is drawn from a truncated normal with mean 0 and standard deviation
//! σ = √(s / n), where s is the scale hyper-parameter (0.1 in the paper, 10× below the usual
//! 1.0) and n the number of input units (fan-in). Draws beyond two standard deviations are
//! resampled. As in Mesh TensorFlow's `variance_scaling_initializer`, whose behaviour the paper
//! inherits, the normal is widened by 1/0.8796 before truncation, so that the *truncated*
//! distribution has standard deviation σ (a normal cut at ±2 keeps 0.8796 of its standard deviation).
//!
//! Burn 0.21 has no truncated normal initialiser; this one runs on the device, with no host loop.

use burn::tensor::{Distribution, Shape, Tensor, backend::Backend};

/// Standard deviation of a unit normal truncated to [−2, 2].
pub const TRUNCATED_UNIT_STD: f64 = 0.879_625_661_034_239_8;

/// Rounds of resampling before any survivor beyond ±2 is clamped. A draw falls outside with
/// probability 0.0455, so after 12 rounds about one element in 10¹⁶ remains: in practice none.
const RESAMPLE_ROUNDS: usize = 12;

/// σ = √(scale / fan_in), the target standard deviation of the paper's initialiser.
pub fn switch_init_std(scale: f64, fan_in: usize) -> f64 {
    (scale / fan_in as f64).sqrt()
}

/// A tensor drawn from the paper's truncated normal: std √(scale / fan_in), mean 0, bounded by
/// ±2·√(scale / fan_in) / 0.8796.
///
/// # Shapes
/// - output: `shape`
pub fn truncated_normal<B: Backend, const D: usize>(
    shape: impl Into<Shape>,
    scale: f64,
    fan_in: usize,
    device: &B::Device,
) -> Tensor<B, D> {
    let shape = shape.into();
    let unit = Distribution::Normal(0.0, 1.0);
    let mut z = Tensor::<B, D>::random(shape.clone(), unit, device);
    for _ in 0..RESAMPLE_ROUNDS {
        // Resample only the draws outside [-2, 2]; the others keep their value.
        let outside = z.clone().abs().greater_elem(2.0);
        let fresh = Tensor::<B, D>::random(shape.clone(), unit, device);
        z = z.mask_where(outside, fresh);
    }
    let z = z.clamp(-2.0, 2.0);
    z.mul_scalar(switch_init_std(scale, fan_in) / TRUNCATED_UNIT_STD)
}
