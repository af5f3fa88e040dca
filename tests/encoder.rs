//! `SwitchEncoderLayer` with one expert is burn-nn's `TransformerEncoderLayer`, and the encoder
//! stack interleaves dense and sparse layers.

mod common;

use burn::module::Param;
use burn::nn::activation::ActivationConfig;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderLayer};
use burn::tensor::Tensor;
use common::*;
use switch_moe::{EncoderBlock, SwitchEncoderConfig, SwitchEncoderInput, SwitchEncoderLayerConfig};

fn parity(norm_first: bool, activation: ActivationConfig) {
    let device = device();
    let (batch, seq, d, f, heads) = (2, 6, 8, 16, 2);
    let dense: TransformerEncoderLayer<B> = TransformerEncoderLayer::new(
        &TransformerEncoderConfig::new(d, f, heads, 1)
            .with_norm_first(norm_first)
            .with_activation(activation.clone()),
        &device,
    );
    let mut switch = SwitchEncoderLayerConfig::new(d, f, heads, 1)
        .with_norm_first(norm_first)
        .map_moe(|m| m.with_activation(activation).with_bias(true))
        .init::<B>(&device);

    let x = tensor::<B, 3>(
        Rng::new(21).normals(batch * seq * d, 1.0),
        [batch, seq, d],
        &device,
    );
    // burn-nn's params are lazy: a clone of an uninitialised one initialises anew. One forward
    // materialises them all before they are copied.
    let _ = dense.forward(x.clone(), None, None);

    // Copy the dense layer's weights. burn-nn names its norms by position: in post-norm norm_1
    // follows attention, in pre-norm norm_2 precedes it.
    switch.mha = dense.mha.clone();
    let (attn_norm, ffn_norm) = if norm_first {
        (&dense.norm_2, &dense.norm_1)
    } else {
        (&dense.norm_1, &dense.norm_2)
    };
    switch.norm_attn = attn_norm.clone();
    switch.norm_ffn = ffn_norm.clone();
    let experts = &mut switch.moe.experts;
    let inner = &dense.pwff.linear_inner;
    let outer = &dense.pwff.linear_outer;
    experts.w_in = Param::from_tensor(inner.weight.val().unsqueeze_dim(0)); // [1, d, f]
    experts.w_out = Param::from_tensor(outer.weight.val().unsqueeze_dim(0)); // [1, f, d]
    let bias = |b: &Option<Param<Tensor<B, 1>>>| {
        Some(Param::from_tensor(
            b.as_ref().expect("bias").val().unsqueeze_dim(0),
        ))
    };
    experts.b_in = bias(&inner.bias);
    experts.b_out = bias(&outer.bias);

    // Sequence 1 ends in two padding positions; causal attention.
    let pad: Vec<bool> = (0..batch * seq).map(|i| i >= 2 * seq - 2).collect();
    let mask_pad = bool_tensor::<B, 2>(pad.clone(), [batch, seq], &device);
    let mask_attn = generate_autoregressive_mask::<B>(batch, seq, &device);

    for (mp, ma) in [
        (None, None),
        (Some(mask_pad.clone()), None),
        (Some(mask_pad), Some(mask_attn)),
    ] {
        let padded = mp.is_some();
        let want = host(dense.forward(x.clone(), mp.clone(), ma.clone()));
        let (got, stats) = switch.forward(x.clone(), mp, ma);
        let got = host(got);
        // Padding positions are not routed (the MoE adds 0 there), burn-nn runs its FFN on them:
        // compare the real positions.
        for (pos, is_pad) in pad.iter().enumerate() {
            if padded && *is_pad {
                continue;
            }
            let diff = max_abs_diff(&got[pos * d..(pos + 1) * d], &want[pos * d..(pos + 1) * d]);
            assert!(
                diff <= 1e-5,
                "norm_first={norm_first} pos {pos}: diff {diff}"
            );
        }
        assert_eq!(host(stats.dropped_fraction), vec![0.0]);
        let real = if padded { batch * seq - 2 } else { batch * seq };
        assert_eq!(host(stats.tokens_per_expert), vec![real as f32]);
    }
}

#[test]
fn one_expert_equals_burn_transformer_encoder_layer_post_norm() {
    parity(false, ActivationConfig::Relu);
}

#[test]
fn one_expert_equals_burn_transformer_encoder_layer_pre_norm() {
    parity(true, ActivationConfig::Gelu);
}

#[test]
fn encoder_interleaves_dense_and_sparse_layers() {
    let device = device();
    let encoder = SwitchEncoderConfig::new(8, 16, 2, 4, 4).init::<B>(&device);
    let kinds: Vec<bool> = encoder
        .layers
        .iter()
        .map(|l| matches!(l, EncoderBlock::Sparse(_)))
        .collect();
    assert_eq!(kinds, vec![false, true, false, true]);
    assert_eq!(encoder.sparse_layers(), vec![1, 3]);

    let x = tensor::<B, 3>(Rng::new(3).normals(2 * 5 * 8, 1.0), [2, 5, 8], &device);
    let mask = generate_autoregressive_mask::<B>(2, 5, &device);
    let (y, stats) = encoder.forward(SwitchEncoderInput::new(x).mask_attn(mask));
    assert_eq!(y.dims(), [2, 5, 8]);
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert_eq!(host(s.tokens_per_expert.clone()).iter().sum::<f32>(), 10.0);
    }

    let all_sparse = SwitchEncoderConfig::new(8, 16, 2, 3, 4)
        .with_moe_every(1)
        .init::<B>(&device);
    assert_eq!(all_sparse.sparse_layers(), vec![0, 1, 2]);
}
