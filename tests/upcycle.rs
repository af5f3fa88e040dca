//! Upcycling: a block made from a dense FFN, and an encoder made from a burn-nn
//! `TransformerEncoder`, compute exactly what the dense model computes before any training step
//! (copies with renormalised top-1 gates; a granular split with every expert chosen at equal
//! gates), and the config refuses what does not fit.

mod common;

use burn::nn::activation::ActivationConfig;
use burn::nn::transformer::{
    PositionWiseFeedForwardConfig, TransformerEncoder, TransformerEncoderConfig,
    TransformerEncoderInput,
};
use common::*;
use switch_moe::{SwitchEncoderConfig, SwitchEncoderInput, SwitchFeedForwardConfig, Upcycle};

#[test]
fn an_upcycled_block_equals_its_dense_ffn() {
    let device = device();
    let (b, s, d, f) = (2, 5, 8, 32);
    let dense = PositionWiseFeedForwardConfig::new(d, f)
        .with_dropout(0.0)
        .with_activation(ActivationConfig::Relu)
        .init::<B>(&device);
    let x = tensor::<B, 3>(Rng::new(1).normals(b * s * d, 1.0), [b, s, d], &device);
    let want = host(dense.forward(x.clone()));

    // Copies, top-1 renormalised (gate 1), room for every token.
    let copies = SwitchFeedForwardConfig::new(d, f, 4)
        .with_bias(true)
        .with_normalize_top1(true)
        .with_eval_capacity_factor(4.0)
        .upcycle(&dense, Upcycle::copy(), &device)
        .expect("fits");
    let (got, _) = copies.forward(x.clone(), None);
    let diff = max_abs_diff(&host(got), &want);
    assert!(diff <= 1e-5, "copies: {diff}");

    // A granular split into 4 experts of 8, all chosen with equal gates, scaled by 4.
    let granular = SwitchFeedForwardConfig::new(d, f / 4, 4)
        .with_bias(true)
        .with_top_k(4)
        .with_routed_scaling_factor(4.0)
        .with_eval_capacity_factor(4.0)
        .upcycle(&dense, Upcycle::granular(), &device)
        .expect("fits");
    let (got, _) = granular.forward(x.clone(), None);
    let diff = max_abs_diff(&host(got), &want);
    assert!(diff <= 1e-5, "granular: {diff}");

    // Noise breaks the symmetry (and the exact start).
    let noisy = SwitchFeedForwardConfig::new(d, f, 4)
        .with_bias(true)
        .with_normalize_top1(true)
        .with_eval_capacity_factor(4.0)
        .upcycle(&dense, Upcycle::copy().with_noise(0.05, 7), &device)
        .expect("fits");
    let (got, _) = noisy.forward(x, None);
    assert!(max_abs_diff(&host(got), &want) > 1e-4);

    // What does not fit is named.
    let err = SwitchFeedForwardConfig::new(d, 16, 4)
        .with_bias(true)
        .upcycle(&dense, Upcycle::copy(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_ff") && err.contains("32"), "{err}");
    let err = SwitchFeedForwardConfig::new(d, f, 4)
        .upcycle(&dense, Upcycle::copy(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias"), "{err}");
}

#[test]
fn an_upcycled_encoder_equals_the_trained_dense_encoder() {
    let device = device();
    let (b, s, d, f, heads, layers) = (2, 6, 16, 32, 2, 4);
    for norm_first in [false, true] {
        let dense: TransformerEncoder<B> = TransformerEncoderConfig::new(d, f, heads, layers)
            .with_dropout(0.0)
            .with_norm_first(norm_first)
            .with_activation(ActivationConfig::Relu)
            .init(&device);
        let x = tensor::<B, 3>(Rng::new(2).normals(b * s * d, 1.0), [b, s, d], &device);
        // burn-nn's parameters are lazy: one forward materialises them.
        let want = host(dense.forward(TransformerEncoderInput::new(x.clone())));

        let encoder = SwitchEncoderConfig::new(d, f, heads, layers, 4)
            .with_norm_first(norm_first)
            .with_dropout(0.0)
            .map_moe(|m| {
                m.with_bias(true)
                    .with_normalize_top1(true)
                    .with_eval_capacity_factor(4.0)
            })
            .upcycle(&dense, Upcycle::copy(), &device)
            .expect("fits");
        assert_eq!(encoder.sparse_layers(), vec![1, 3]);
        let (got, stats) = encoder.forward(SwitchEncoderInput::new(x));
        let diff = max_abs_diff(&host(got), &want);
        assert!(diff <= 1e-5, "norm_first {norm_first}: {diff}");
        assert_eq!(stats.len(), 2);
    }
}
