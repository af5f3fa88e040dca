//! Router replay: a replayed forward reproduces the recorded one exactly, and keeps the recorded
//! experts when the router's weights have changed — for one block and for a whole LM.

mod common;

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use switch_moe::{SwitchEncoderConfig, SwitchFeedForwardConfig, SwitchLmConfig};

#[test]
fn a_replayed_block_uses_the_recorded_experts() {
    let device = device();
    let (b, s, d, e) = (2, 5, 8, 4);
    let mut moe = SwitchFeedForwardConfig::new(d, 16, e)
        .with_top_k(2)
        .with_capacity_factor(4.0)
        .with_eval_capacity_factor(4.0)
        .with_init_scale(1.0)
        .init::<B>(&device);
    let mut rng = Rng::new(3);
    let x = tensor::<B, 3>(rng.normals(b * s * d, 1.0), [b, s, d], &device);
    let replay = moe.router.replay.clone();
    replay.start_recording();
    let (y, stats) = moe.forward(x.clone(), None);
    assert_eq!(replay.recorded().len(), 1);
    let recorded_first = host_int(stats.token_expert.clone());

    // Replaying with the same weights: exactly the recorded forward.
    replay.start_replaying();
    let (y2, _) = moe.forward(x.clone(), None);
    assert_eq!(host(y2), host(y.clone()));

    // New router weights: routing alone picks other experts for some tokens...
    moe.router.gate.weight = Param::from_tensor(tensor(rng.normals(d * e, 2.0), [d, e], &device));
    replay.stop();
    let (_, free) = moe.forward(x.clone(), None);
    let free_first = host_int(free.token_expert);
    assert_ne!(
        free_first, recorded_first,
        "the new router routes differently"
    );
    // ...but a replayed forward keeps the recorded experts, gated by the new router's scores.
    replay.start_replaying();
    let (y3, replayed) = moe.forward(x, None);
    assert_eq!(host_int(replayed.token_expert), recorded_first);
    assert_ne!(host(y3), host(y), "the gates come from the current router");
}

#[test]
fn a_replayed_lm_reproduces_its_recorded_logits_and_keeps_its_experts() {
    let device = device();
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 4, 4)
        .with_norm_first(true)
        .map_moe(|m| m.with_top_k(2).with_init_scale(1.0));
    let mut model: switch_moe::SwitchLm<B> = SwitchLmConfig::new(20, 8, encoder).init(&device);
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            (0..16).map(|i| (i * 7 % 20) as i64).collect::<Vec<_>>(),
            [2, 8],
        ),
        &device,
    );
    let replays = model.routing_replays();
    assert_eq!(replays.0.len(), 2, "two sparse layers");
    replays.start_recording();
    let (logits, stats) = model.forward(tokens.clone());
    replays.start_replaying();
    let (again, _) = model.forward(tokens.clone());
    // Equal up to rounding: on wgpu the autotuner may pick another matmul kernel for the attention
    // and the head between two forwards (CI saw differences of 3e-7); the routing itself must be
    // the recorded one exactly.
    let diff = max_abs_diff(&host(again), &host(logits.clone()));
    assert!(diff <= 1e-5, "the replayed logits differ by {diff}");

    // Change every sparse layer's router; the replayed forward keeps each layer's experts.
    let mut rng = Rng::new(9);
    for layer in model.encoder.layers.iter_mut() {
        if let switch_moe::EncoderBlock::Sparse(l) = layer {
            l.moe.router.gate.weight =
                Param::from_tensor(tensor(rng.normals(16 * 4, 3.0), [16, 4], &device));
        }
    }
    replays.start_replaying();
    let (_, replayed) = model.forward(tokens);
    for (a, b) in stats.iter().zip(&replayed) {
        assert_eq!(
            host_int(a.token_expert.clone()),
            host_int(b.token_expert.clone())
        );
    }
}
