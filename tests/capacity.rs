//! Capacity and token dropping with a router skewed by hand towards expert 0.

mod common;

use burn::module::{AutodiffModule, Param};
use common::*;
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

const D: usize = 4;
const E: usize = 4;

/// A block whose router sends every positive input to expert 0; positive inputs, T = 8.
fn skewed<Bk: burn::tensor::backend::Backend>(
    device: &Bk::Device,
) -> (SwitchFeedForward<Bk>, burn::tensor::Tensor<Bk, 3>) {
    let mut moe = SwitchFeedForwardConfig::new(D, 8, E)
        .with_capacity_factor(1.0)
        .with_eval_capacity_factor(2.0)
        .with_jitter(0.0)
        .with_expert_dropout(0.0)
        .with_init_scale(1.0)
        .init::<Bk>(device);
    let mut router = vec![0.0f32; D * E];
    for i in 0..D {
        router[i * E] = 2.0; // column of expert 0
    }
    moe.router.gate.weight = Param::from_tensor(tensor(router, [D, E], device));
    let mut rng = Rng::new(42);
    let x: Vec<f32> = (0..8 * D).map(|_| 0.5 + rng.uniform() as f32).collect();
    (moe, tensor(x, [1, 8, D], device))
}

fn zero_rows(y: &[f32]) -> Vec<bool> {
    y.chunks(D).map(|r| r.iter().all(|v| *v == 0.0)).collect()
}

#[test]
fn later_tokens_are_dropped_exactly_at_capacity_factor_one() {
    let device = device();
    let (moe, x) = skewed::<AB>(&device);
    // Training (autodiff backend): C = ceil(1.0 * 8 * 1 / 4) = 2 slots for expert 0.
    let (y, stats) = moe.forward(x, None);
    let zeros = zero_rows(&host(y));
    assert_eq!(
        zeros,
        vec![false, false, true, true, true, true, true, true],
        "tokens 0 and 1 keep the two slots, 2..8 are dropped with an exact zero output"
    );
    assert_eq!(host(stats.dropped_fraction), vec![6.0 / 8.0]);
    assert_eq!(host(stats.tokens_per_expert), vec![8.0, 0.0, 0.0, 0.0]);
}

#[test]
fn eval_capacity_differs_from_training_capacity() {
    let device = device();
    let (moe, x) = skewed::<AB>(&device);
    let moe = moe.valid(); // inference: C = ceil(2.0 * 8 / 4) = 4
    let (y, stats) = moe.forward(x.inner(), None);
    assert_eq!(
        zero_rows(&host(y)),
        vec![false, false, false, false, true, true, true, true]
    );
    assert_eq!(host(stats.dropped_fraction), vec![0.5]);
}

#[test]
fn padding_never_takes_a_slot_from_a_real_token() {
    let device = device();
    let (moe, x) = skewed::<AB>(&device);
    // Tokens 0..4 are padding; the two slots go to real tokens 4 and 5.
    let mask = bool_tensor::<AB, 2>(
        vec![true, true, true, true, false, false, false, false],
        [1, 8],
        &device,
    );
    let (y, stats) = moe.forward(x, Some(mask));
    assert_eq!(
        zero_rows(&host(y)),
        vec![true, true, true, true, false, false, true, true],
        "padding rows are zero, real tokens 4 and 5 are kept, 6 and 7 dropped"
    );
    assert_eq!(host(stats.dropped_fraction), vec![0.5]);
    assert_eq!(host(stats.tokens_per_expert), vec![4.0, 0.0, 0.0, 0.0]);
}

#[test]
fn capacity_formula() {
    use switch_moe::dispatch::expert_capacity;
    // ceil(1.25 * 2048 * 1 / 8) = 320.
    assert_eq!(expert_capacity(2048, 1, 8, 1.25), 320);
    // ceil(2.0 * 10 * 2 / 3) = 14 > T = 10: clamped to 10.
    assert_eq!(expert_capacity(10, 2, 3, 2.0), 10);
    assert_eq!(expert_capacity(3, 1, 64, 1.0), 1);
    assert_eq!(expert_capacity(4, 1, 1, 8.0), 4);
}
