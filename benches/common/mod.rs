//! Timing helpers shared by the benches (`moe.rs`, `scaling.rs`): one median, one timing loop,
//! one forward + backward of a Switch block with the paper's load-balancing weight.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use switch_moe::{MoeLossWeights, SwitchFeedForward};

/// The autodiff backend the benches run on (the backend feature's).
pub type Ad = switch_moe::backend::SelectedAutodiff;

/// The median of `v` (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `f` over `reps` runs after `warmup` runs.
pub fn time<F: FnMut()>(warmup: usize, reps: usize, mut f: F) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Median ms of one forward + backward of `layer` on `x` `[B, S, d]`: loss = Σy + α·aux with the
/// paper's α ([`MoeLossWeights::PAPER`]), synchronised with the device after every repetition.
pub fn layer_fb(
    layer: &SwitchFeedForward<Ad>,
    x: &Tensor<Ad, 3>,
    warmup: usize,
    reps: usize,
) -> f64 {
    let device = x.device();
    time(warmup, reps, || {
        let (y, stats) = layer.forward(x.clone().require_grad(), None);
        let loss = y.sum() + stats.aux_loss.mul_scalar(MoeLossWeights::PAPER.aux);
        let _g = loss.backward();
        Ad::sync(&device).unwrap();
    })
}
