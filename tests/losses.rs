//! Load-balancing and z-loss against hand-computed values.

mod common;

use burn::module::Param;
use burn::tensor::Tensor;
use common::*;
use switch_moe::{MoeLossWeights, MoeStats, RoutingStats, SwitchFeedForwardConfig};

fn block(d: usize, e: usize, router: Vec<f32>) -> switch_moe::SwitchFeedForward<B> {
    let device = device();
    let mut moe = SwitchFeedForwardConfig::new(d, 4, e)
        .with_eval_capacity_factor(4.0)
        .init::<B>(&device);
    moe.router.gate.weight = Param::from_tensor(tensor(router, [d, e], &device));
    moe
}

#[test]
fn aux_loss_is_one_at_uniform_routing() {
    let device = device();
    let (d, e) = (3, 4);
    let moe = block(d, e, vec![0.0; d * e]); // zero router: every probability is 1/4
    let x = tensor::<B, 3>(Rng::new(1).normals(2 * 5 * d, 1.0), [2, 5, d], &device);
    let (_, stats) = moe.forward(x, None);
    assert_eq!(host(stats.aux_loss), vec![1.0]);
    let entropy = host(stats.router_entropy)[0];
    assert!((entropy - (4f32).ln()).abs() < 1e-6, "entropy {entropy}");
}

#[test]
fn aux_and_z_match_hand_computed_values_and_ignore_padding() {
    let device = device();
    // Router = identity, so logits = x. Three real tokens and one padding token with huge logits.
    let moe = block(2, 2, vec![1.0, 0.0, 0.0, 1.0]);
    let x = tensor::<B, 3>(
        vec![1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 9.0, -9.0],
        [1, 4, 2],
        &device,
    );
    let mask = bool_tensor::<B, 2>(vec![false, false, false, true], [1, 4], &device);
    let (y, stats) = moe.forward(x, Some(mask));

    // By hand: logits (1,0), (0,2), (2,0).
    let e = std::f64::consts::E;
    let p = [
        [e / (e + 1.0), 1.0 / (e + 1.0)],
        [1.0 / (1.0 + e * e), e * e / (1.0 + e * e)],
        [e * e / (1.0 + e * e), 1.0 / (1.0 + e * e)],
    ];
    // First choices: expert 0, 1, 0 -> f = (2/3, 1/3); P = column means.
    let f = [2.0 / 3.0, 1.0 / 3.0];
    let big_p = [
        (p[0][0] + p[1][0] + p[2][0]) / 3.0,
        (p[0][1] + p[1][1] + p[2][1]) / 3.0,
    ];
    let aux = 2.0 * (f[0] * big_p[0] + f[1] * big_p[1]); // ≈ 1.051347
    let lse = [(e + 1.0).ln(), (1.0 + e * e).ln(), (e * e + 1.0).ln()];
    let z = lse.iter().map(|l| l * l).sum::<f64>() / 3.0; // ≈ 3.590767

    let got_aux = host(stats.aux_loss)[0] as f64;
    let got_z = host(stats.z_loss)[0] as f64;
    assert!((got_aux - aux).abs() < 1e-6, "aux {got_aux} vs {aux}");
    assert!((got_aux - 1.051_347).abs() < 1e-5);
    assert!((got_z - z).abs() < 1e-5, "z {got_z} vs {z}");
    assert!((got_z - 3.590_767).abs() < 1e-5);
    assert_eq!(host(stats.tokens_per_expert), vec![2.0, 1.0]);
    assert_eq!(host(stats.dropped_fraction), vec![0.0]);
    let entropy: f64 = p
        .iter()
        .map(|r| -r.iter().map(|q| q * q.ln()).sum::<f64>())
        .sum::<f64>()
        / 3.0;
    assert!((host(stats.router_entropy)[0] as f64 - entropy).abs() < 1e-6);
    // The padding token's output is exactly zero.
    assert_eq!(&host(y)[6..8], &[0.0, 0.0]);
}

#[test]
fn combine_averages_losses_and_keeps_layers() {
    let device = device();
    let one = |v: f32| Tensor::<B, 1>::from_floats([v], &device);
    let layer = |aux: f32, z: f32, counts: [f32; 2], dropped: f32| MoeStats::<B> {
        aux_loss: one(aux),
        z_loss: one(z),
        tokens_per_expert: Tensor::from_floats(counts, &device),
        num_tokens: one(6.0),
        skipped_fraction: one(0.0),
        expert_bias: Tensor::from_floats([0.0, 0.0], &device),
        dropped_fraction: one(dropped),
        router_entropy: one(0.5),
        router_prob_mean: Tensor::from_floats([0.5, 0.5], &device),
        token_expert: Tensor::from_ints([0, 0, 0, 1, 1, 1], &device),
        token_experts_used: Tensor::from_ints([1, 1, 1, 1, 1, 1], &device),
    };
    // Layer 1 sends everything to expert 0, layer 2 to expert 1: pooled counts would look
    // balanced, the per-layer ones do not.
    let combined = MoeStats::combine(vec![
        layer(2.0, 1.0, [6.0, 0.0], 0.25),
        layer(1.0, 3.0, [0.0, 6.0], 0.0),
    ]);
    assert_eq!(host(combined.aux_loss.clone()), vec![1.5]);
    assert_eq!(host(combined.z_loss.clone()), vec![2.0]);
    assert_eq!(host(combined.token_fractions()), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(host(combined.dropped_fraction()), vec![0.25, 0.0]);
    assert_eq!(combined.layers.len(), 2);
}

#[test]
fn routing_stats_read_the_per_layer_values_in_one_pass() {
    let device = device();
    let one = |v: f32| Tensor::<B, 1>::from_floats([v], &device);
    let layer =
        |aux: f32, counts: [f32; 4], probs: [f32; 4], dropped: f32, entropy: f32| MoeStats::<B> {
            aux_loss: one(aux),
            z_loss: one(2.0 * aux),
            tokens_per_expert: Tensor::from_floats(counts, &device),
            num_tokens: one(8.0),
            skipped_fraction: one(dropped / 2.0),
            expert_bias: Tensor::from_floats([aux, -aux, 0.0, 0.0], &device),
            dropped_fraction: one(dropped),
            router_entropy: one(entropy),
            router_prob_mean: Tensor::from_floats(probs, &device),
            token_expert: Tensor::zeros([8], &device),
            token_experts_used: Tensor::ones([8], &device),
        };
    let combined = MoeStats::combine(vec![
        layer(1.0, [4.0, 2.0, 2.0, 0.0], [0.4, 0.3, 0.2, 0.1], 0.25, 1.0),
        layer(3.0, [0.0, 0.0, 8.0, 0.0], [0.1, 0.1, 0.7, 0.1], 0.5, 0.2),
    ]);
    let loss = Tensor::<B, 1>::from_floats([7.5], &device);
    let (stats, extra) = RoutingStats::read_with(&combined, vec![loss]);
    assert_eq!(extra, vec![vec![7.5]]);
    assert_eq!(stats.num_tokens, 8);
    assert_eq!(stats.num_experts(), 4);
    assert!((stats.aux_loss - 2.0).abs() < 1e-6 && (stats.z_loss - 4.0).abs() < 1e-6);
    assert_eq!(stats.layers[0].token_fractions, vec![0.5, 0.25, 0.25, 0.0]);
    assert_eq!(stats.layers[1].token_fractions, vec![0.0, 0.0, 1.0, 0.0]);
    // Max expert load E·max f: 4·0.5 = 2 and 4·1 = 4; the metric is their mean, 3.
    assert_eq!(stats.layers[0].max_expert_load(), 2.0);
    assert_eq!(stats.layer_mean(|l| l.max_expert_load()), 3.0);
    // Expert fractions, mean over layers: (0.25, 0.125, 0.625, 0), summing to 1.
    let fractions: Vec<f64> = (0..4).map(|e| stats.expert_fraction(e)).collect();
    assert_eq!(fractions, vec![0.25, 0.125, 0.625, 0.0]);
    assert!((stats.layer_mean(|l| l.dropped_fraction) - 0.375).abs() < 1e-9);
    assert!((stats.layers[1].router_prob_mean[2] - 0.7).abs() < 1e-6);
    assert_eq!(stats.layers[1].expert_bias, vec![3.0, -3.0, 0.0, 0.0]);
    assert_eq!(stats.layers[0].skipped_fraction, 0.125);
    // `read` is the same without extras.
    assert_eq!(RoutingStats::read(&combined), stats);
}

#[test]
fn weighted_loss_is_alpha_aux_plus_beta_z() {
    let device = device();
    let moe = block(2, 2, vec![1.0, 0.0, 0.0, 1.0]);
    let x = tensor::<B, 3>(vec![1.0, 0.0, 0.0, 2.0, 2.0, 0.0], [1, 3, 2], &device);
    let (_, stats) = moe.forward(x, None);
    let (aux, z) = (
        host(stats.aux_loss.clone())[0],
        host(stats.z_loss.clone())[0],
    );
    let paper = host(stats.weighted_loss(MoeLossWeights::default()))[0];
    assert!((paper - (0.01 * aux + 0.001 * z)).abs() < 1e-7);
    let custom = MoeLossWeights { aux: 0.5, z: 0.0 };
    let combined = MoeStats::combine(vec![stats.clone(), stats]);
    assert!((host(combined.weighted_loss(custom))[0] - 0.5 * aux).abs() < 1e-6);
}
