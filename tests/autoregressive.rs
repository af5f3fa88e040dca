//! Decoding with a key/value cache gives what a full forward gives: `SwitchLm` step by step
//! against `SwitchLm::forward` of every prefix (dense and sparse layers, top-1 and top-2), one
//! `SwitchEncoderLayer` in post- and pre-norm with padding, `SwitchLm::decode` (new tokens only)
//! against both the full forward and the older cached step in every layer variant, and
//! `generate` against greedy decoding by full forwards under the same context rule.

mod common;

use burn::nn::attention::generate_autoregressive_mask;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use switch_moe::{
    EncoderBlock, SwitchEncoderConfig, SwitchEncoderLayerAutoregressiveCache,
    SwitchEncoderLayerConfig, SwitchLm, SwitchLmConfig,
};

const TOLERANCE: f32 = 1e-5;

/// A small pre-norm LM: 4 layers (dense, sparse, dense, sparse), 4 experts, top-k as given;
/// dropless, so that no token is ever dropped.
fn small_lm(vocab: usize, max_seq_len: usize, top_k: usize) -> SwitchLm<B> {
    let (d_model, d_ff, heads, layers, experts) = (16, 32, 2, 4, 4);
    let encoder = SwitchEncoderConfig::new(d_model, d_ff, heads, layers, experts)
        .with_norm_first(true)
        .with_dropout(0.0)
        .map_moe(|m| m.with_top_k(top_k).with_init_scale(1.0));
    SwitchLmConfig::new(vocab, max_seq_len, encoder)
        .init::<B>(&device())
        .dropless()
}

fn tokens(batch: usize, seq: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut rng = Rng::new(seed);
    (0..batch * seq)
        .map(|_| ((rng.uniform() * vocab as f64) as i64).min(vocab as i64 - 1))
        .collect()
}

/// The prefix of length `len` of every row of `all` (`[batch, seq]`, row-major).
fn prefix(all: &[i64], batch: usize, seq: usize, len: usize) -> Tensor<B, 2, Int> {
    let rows: Vec<i64> = (0..batch)
        .flat_map(|b| all[b * seq..b * seq + len].iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(rows, [batch, len]), &device())
}

/// Feeds a prompt, then 20 tokens one at a time, through the cache and compares the last
/// position's logits at every step with a full forward of the same prefix. Returns the largest
/// difference seen.
fn lm_cache_matches_full_forward(top_k: usize) -> f32 {
    let (vocab, max_seq_len, batch, prompt, extra) = (20, 32, 2, 5, 20);
    let model = small_lm(vocab, max_seq_len, top_k);
    assert!(
        model
            .encoder
            .layers
            .iter()
            .any(|l| matches!(l, EncoderBlock::Dense(_)))
            && model.encoder.sparse_layers().len() == 2
    );
    let seq = prompt + extra;
    let all = tokens(batch, seq, vocab, 7 + top_k as u64);

    let mut cache = model.new_autoregressive_cache();
    let mut worst = 0.0f32;
    let mut experts_used = vec![0.0f32; 4];
    for len in prompt..=seq {
        let input = prefix(&all, batch, seq, len);
        let got = host(model.forward_autoregressive_inference(input.clone(), &mut cache)); // [B, V]
        assert_eq!(cache.len(), len);
        let (full, stats) = model.forward(input); // [B, len, V]
        let want = host(
            full.slice([0..batch, len - 1..len, 0..vocab])
                .reshape([batch, vocab]),
        );
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= TOLERANCE,
            "top-{top_k}, prefix {len}: cached and full logits differ by {diff}"
        );
        worst = worst.max(diff);
        for s in stats {
            assert_eq!(host(s.dropped_fraction), vec![0.0], "dropless");
            for (u, c) in experts_used.iter_mut().zip(host(s.tokens_per_expert)) {
                *u += c;
            }
        }
    }
    // The comparison means something only if routing does: several experts must be chosen.
    let busy = experts_used.iter().filter(|c| **c > 0.0).count();
    assert!(busy >= 2, "only {busy} expert(s) used: {experts_used:?}");
    worst
}

#[test]
fn lm_cache_matches_full_forward_top1() {
    let worst = lm_cache_matches_full_forward(1);
    println!("top-1: max |cached - full| = {worst:e}");
}

#[test]
fn lm_cache_matches_full_forward_top2() {
    let worst = lm_cache_matches_full_forward(2);
    println!("top-2: max |cached - full| = {worst:e}");
}

/// One sparse layer, step by step against its full causal forward, with the second sequence
/// ending in padding. The first step runs a 3-position prefix at once.
fn layer_cache_matches_full_forward(norm_first: bool) {
    let device = device();
    let (batch, seq, d, f, heads, experts) = (2, 9, 8, 16, 2, 4);
    let mut layer = SwitchEncoderLayerConfig::new(d, f, heads, experts)
        .with_norm_first(norm_first)
        .with_dropout(0.0)
        .map_moe(|m| m.with_top_k(2).with_init_scale(1.0))
        .init::<B>(&device);
    layer.moe.dropless = true;

    let x = tensor::<B, 3>(
        Rng::new(11).normals(batch * seq * d, 1.0),
        [batch, seq, d],
        &device,
    );
    let pad: Vec<bool> = (0..batch * seq).map(|i| i >= 2 * seq - 3).collect();
    let mask_pad = bool_tensor::<B, 2>(pad, [batch, seq], &device);
    let mask_attn = generate_autoregressive_mask::<B>(batch, seq, &device);
    let (full, _) = layer.forward(x.clone(), Some(mask_pad.clone()), Some(mask_attn));
    let full = host(full); // [B, S, d]

    let mut cache = SwitchEncoderLayerAutoregressiveCache::empty();
    let first = 3;
    for len in first..=seq {
        let (y, stats) = layer.forward_autoregressive_inference(
            x.clone().slice([0..batch, 0..len, 0..d]),
            Some(mask_pad.clone().slice([0..batch, 0..len])),
            Some(generate_autoregressive_mask::<B>(batch, len, &device)),
            &mut cache,
        );
        assert_eq!(y.dims(), [batch, len, d]);
        assert_eq!(cache.len(), len);
        let y = host(y);
        // Every position, cached or new, must be the full forward's.
        for b in 0..batch {
            for p in 0..len {
                let got = &y[(b * len + p) * d..(b * len + p + 1) * d];
                let want = &full[(b * seq + p) * d..(b * seq + p + 1) * d];
                let diff = max_abs_diff(got, want);
                assert!(
                    diff <= TOLERANCE,
                    "norm_first={norm_first}, step {len}, row {b}, position {p}: diff {diff}"
                );
            }
        }
        // The stats cover the positions routed in this call: the prefix, then the newest.
        let routed = if len == first { batch * first } else { batch };
        let padding = if len == first {
            0
        } else {
            usize::from(len > seq - 3)
        };
        let counted: f32 = host(stats.tokens_per_expert).iter().sum();
        assert_eq!(counted as usize, routed - padding, "step {len}");
    }
}

#[test]
fn layer_cache_matches_full_forward_post_norm() {
    layer_cache_matches_full_forward(false);
}

#[test]
fn layer_cache_matches_full_forward_pre_norm() {
    layer_cache_matches_full_forward(true);
}

#[test]
#[should_panic(expected = "must add exactly one position")]
fn a_step_must_add_one_position() {
    let model = small_lm(20, 32, 1);
    let mut cache = model.new_autoregressive_cache();
    let all = tokens(1, 6, 20, 1);
    let _ = model.forward_autoregressive_inference(prefix(&all, 1, 6, 3), &mut cache);
    let _ = model.forward_autoregressive_inference(prefix(&all, 1, 6, 5), &mut cache);
}

/// `generate` with top-k 1 is greedy decoding: the same tokens as full forwards of the context
/// that the module's rule gives (the last `max_seq_len / 2` tokens once the window is full).
#[cfg(feature = "train")]
#[test]
fn generate_is_greedy_decoding_under_the_context_rule() {
    use switch_moe::data::TextTokenizer;
    use switch_moe::generate::{SamplingConfig, generate};

    let tokenizer = TextTokenizer::char_level("abcdefghijklmnopqrs \n");
    let vocab = tokenizer.vocab_size();
    let max_seq_len = 8;
    // Not dropless: generate must make its own dropless copy.
    let model = SwitchLmConfig::new(
        vocab,
        max_seq_len,
        SwitchEncoderConfig::new(16, 32, 2, 2, 4)
            .with_norm_first(true)
            .with_dropout(0.0)
            .map_moe(|m| m.with_init_scale(1.0)),
    )
    .init::<B>(&device());
    let length = 30;
    let sampling = SamplingConfig {
        length,
        temperature: 1.0,
        top_k: Some(1),
        seed: 0,
    };
    let text = generate(&model, &tokenizer, "abc", &sampling, &device()).unwrap();

    let reference = model.clone().dropless();
    let mut ids = tokenizer.encode("abc").unwrap();
    let mut start = 0;
    for _ in 0..length {
        if ids.len() - start > max_seq_len {
            start = ids.len() - max_seq_len / 2;
        }
        let window: Vec<i64> = ids[start..].iter().map(|t| *t as i64).collect();
        let s = window.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(window, [1, s]), &device());
        let (logits, _) = reference.forward(input);
        let last = host(logits.slice([0..1, s - 1..s, 0..vocab]).reshape([vocab]));
        let best = (0..vocab)
            .max_by(|a, b| last[*a].total_cmp(&last[*b]))
            .unwrap();
        ids.push(best as u32);
    }
    assert_eq!(text, tokenizer.decode(&ids).unwrap());
}

#[test]
fn sampling_at_batch_one_drops_nothing_even_with_a_collapsed_router() {
    // Every sparse layer's selection bias sends all tokens to expert 0; with the eval capacity
    // factor 1.0, C = ⌈16/4⌉ = 4 of a 16-token window fit, so the plain forward drops 12 of 16.
    let device = device();
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, 4)
        .with_norm_first(true)
        .map_moe(|m| m.with_expert_bias_rate(1e-3).with_eval_capacity_factor(1.0));
    let mut model: switch_moe::SwitchLm<B> = SwitchLmConfig::new(20, 16, encoder).init(&device);
    for layer in model.encoder.layers.iter_mut() {
        if let switch_moe::EncoderBlock::Sparse(l) = layer {
            let skew = Tensor::<B, 1>::from_floats([10.0, 0.0, 0.0, 0.0], &device);
            l.moe.router.expert_bias = Some(burn::module::RunningState::new(skew));
        }
    }
    let window = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new((0..16).map(|i| i % 20).collect::<Vec<i64>>(), [1, 16]),
        &device,
    );
    let (_, stats) = model.forward(window.clone());
    assert_eq!(host(stats[0].dropped_fraction.clone()), vec![0.75]);
    // What `generate` samples from: the dropless copy.
    let (_, stats) = model.dropless().forward(window);
    for s in stats {
        assert_eq!(host(s.dropped_fraction), vec![0.0]);
        assert_eq!(host(s.tokens_per_expert), vec![16.0, 0.0, 0.0, 0.0]);
    }
}

/// `SwitchLm::decode` — a prompt, then one token per call — against the full forward of every
/// prefix and against the older cached step, for pre- and post-norm, top-1 and top-2, and gated
/// experts with a gated shared expert and biases; B = 2.
#[test]
fn decode_matches_the_full_forward_and_the_older_cache() {
    let (vocab, max_seq_len, batch, prompt, extra) = (20, 32, 2, 5, 20);
    let variants: [(&str, bool, usize, bool); 5] = [
        ("pre-norm top-1", true, 1, false),
        ("pre-norm top-2", true, 2, false),
        ("post-norm top-1", false, 1, false),
        ("post-norm top-2", false, 2, false),
        (
            "pre-norm top-2, SwiGLU + biases + gated shared",
            true,
            2,
            true,
        ),
    ];
    for (name, norm_first, top_k, gated) in variants {
        let encoder = SwitchEncoderConfig::new(16, 32, 2, 4, 4)
            .with_norm_first(norm_first)
            .with_dropout(0.0)
            .map_moe(|m| {
                let m = m.with_top_k(top_k).with_init_scale(1.0);
                if gated {
                    m.with_swiglu()
                        .with_bias(true)
                        .with_num_shared_experts(1)
                        .with_shared_gate(true)
                } else {
                    m
                }
            });
        // A gated encoder has no dense layers (burn-nn's FFN is not gated): every layer sparse.
        let encoder = if gated {
            encoder.with_moe_every(1)
        } else {
            encoder
        };
        let model = SwitchLmConfig::new(vocab, max_seq_len, encoder)
            .init::<B>(&device())
            .dropless();
        let seq = prompt + extra;
        let all = tokens(batch, seq, vocab, 11 + top_k as u64);
        let mut old = model.new_autoregressive_cache();
        let mut cache = model.new_decode_cache();
        let (mut worst_full, mut worst_old) = (0.0f32, 0.0f32);
        for len in prompt..=seq {
            let input = prefix(&all, batch, seq, len);
            let start = cache.len();
            let new = input.clone().slice([0..batch, start..len]); // the prompt, then one token
            let got = host(model.decode(new, &mut cache)); // [B, V]
            assert_eq!(cache.len(), len);
            let older = host(model.forward_autoregressive_inference(input.clone(), &mut old));
            let (full, _) = model.forward(input);
            let full = host(
                full.slice([0..batch, len - 1..len, 0..vocab])
                    .reshape([batch, vocab]),
            );
            worst_full = worst_full.max(max_abs_diff(&got, &full));
            worst_old = worst_old.max(max_abs_diff(&got, &older));
        }
        println!(
            "{name}: max |decode − full| {worst_full:.1e}, |decode − older cache| {worst_old:.1e}"
        );
        assert!(
            worst_full <= TOLERANCE,
            "{name}: decode vs full forward {worst_full}"
        );
        assert!(
            worst_old <= TOLERANCE,
            "{name}: decode vs older cache {worst_old}"
        );
    }
}

/// The decode step routes a single token through its chosen experts only; that path must equal
/// the block's batched forward token by token, whatever the router picks (a mutation of the
/// gather, the gates or the shared expert shows here first).
#[test]
fn one_token_on_its_chosen_experts_equals_the_batched_block() {
    let device = device();
    for (top_k, gated) in [(1, false), (2, false), (3, true)] {
        let config = switch_moe::SwitchFeedForwardConfig::new(8, 16, 6)
            .with_top_k(top_k)
            .with_init_scale(1.0)
            .with_expert_dropout(0.0);
        let config = if gated {
            config
                .with_swiglu()
                .with_bias(true)
                .with_num_shared_experts(2)
                .with_shared_gate(true)
        } else {
            config
        };
        let block = config.init::<B>(&device);
        let x = tensor::<B, 2>(Rng::new(5).normals(7 * 8, 1.0), [7, 8], &device);
        for t in 0..7 {
            let row = x.clone().slice([t..t + 1, 0..8]); // [1, d]
            assert!(block.can_forward_few(1));
            let few = host(block.forward_few(row.clone()));
            let (batched, _) = block.forward(row.reshape([1, 1, 8]), None);
            let diff = max_abs_diff(&few, &host(batched));
            assert!(diff <= 1e-6, "top-{top_k} gated {gated}, token {t}: {diff}");
        }
    }
}

#[test]
#[should_panic(expected = "exceed max_seq_len")]
fn decode_refuses_to_outgrow_the_position_table() {
    let model = small_lm(20, 8, 1);
    let mut cache = model.new_decode_cache();
    let _ = model.decode(prefix(&tokens(1, 9, 20, 1), 1, 9, 9), &mut cache);
}
