//! Backend parity: one set of weights, saved from NdArray as a record and loaded into the selected
//! backend (`switch_moe::backend::TestBackend`), gives the same outputs, losses and gradients on
//! both under `Autodiff`. With only the default `ndarray` feature this compares NdArray with itself;
//! `--features wgpu` or `--features tch` compares NdArray with wgpu or LibTorch.
//!
//! Tolerance: max abs diff ≤ 1e-4 on every compared value, on every backend. The values are O(1)
//! to O(10) f32 sums of a few hundred products; backends differ only in summation order (matmul
//! tiling, reductions), which moves them by ~1e-6 relative. Routing (argmax, capacity, drops) must
//! agree exactly, and is checked exactly.
//!
//! Every weight comes from the crate's seeded host generator, not from a backend RNG: NdArray's
//! seed is process-global, and the tests of this binary run in parallel threads.
#![cfg(feature = "ndarray")]

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use common::*;
use switch_moe::{
    SwitchEncoderLayer, SwitchEncoderLayerConfig, SwitchFeedForward, SwitchFeedForwardConfig,
};

/// The reference: NdArray on the CPU, f32.
type Ref = NdArray;
type RefAD = Autodiff<NdArray>;

const TOL: f32 = 1e-4;
const BATCH: usize = 3;
const SEQ: usize = 7;
const D: usize = 8;

fn recorder() -> BinBytesRecorder<FullPrecisionSettings> {
    BinBytesRecorder::default()
}

/// Everything one forward and backward pass produces, read back to the host.
#[derive(Debug)]
struct Outcome {
    output: Vec<f32>,
    aux_loss: Vec<f32>,
    z_loss: Vec<f32>,
    tokens_per_expert: Vec<f32>,
    dropped_fraction: Vec<f32>,
    /// (parameter name, gradient)
    grads: Vec<(&'static str, Vec<f32>)>,
}

fn assert_close(what: &str, backend: &str, got: &[f32], want: &[f32]) {
    let diff = max_abs_diff(got, want);
    assert!(
        diff <= TOL,
        "{what}: {backend} differs from ndarray by {diff} (tolerance {TOL})"
    );
}

fn assert_same(got: &Outcome, want: &Outcome) {
    let name = switch_moe::backend::NAME;
    // Routing decisions are discrete: identical counts and drops, or the rest is meaningless.
    assert_eq!(
        got.tokens_per_expert, want.tokens_per_expert,
        "{name}: tokens per expert"
    );
    assert_eq!(
        got.dropped_fraction, want.dropped_fraction,
        "{name}: dropped fraction"
    );
    assert_close("output", name, &got.output, &want.output);
    assert_close("aux loss", name, &got.aux_loss, &want.aux_loss);
    assert_close("z loss", name, &got.z_loss, &want.z_loss);
    assert_eq!(got.grads.len(), want.grads.len());
    for ((n, g), (_, w)) in got.grads.iter().zip(&want.grads) {
        assert!(
            g.iter().any(|v| *v != 0.0),
            "{n}: gradient is all zero, the comparison would prove nothing"
        );
        assert_close(&format!("gradient of {n}"), name, g, w);
    }
}

/// The inputs shared by both backends: x `[B, S, d]`, a projection for the objective, and the
/// padding mask (true = padding; the last two positions of sequence 1, one of sequence 2).
struct Inputs {
    x: Vec<f32>,
    proj: Vec<f32>,
    pad: Vec<bool>,
}

impl Inputs {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let pad = (0..BATCH * SEQ)
            .map(|i| i == SEQ - 1 || i == SEQ - 2 || i == 2 * SEQ + 3)
            .collect();
        Self {
            x: rng.normals(BATCH * SEQ * D, 1.0),
            proj: rng.normals(BATCH * SEQ * D, 1.0),
            pad,
        }
    }
}

/// Loads the recorded block into backend `Bk`, runs forward and backward on
/// loss = Σ y·proj + aux + z, and reads everything back.
fn run_moe<Bk: AutodiffBackend>(
    config: &SwitchFeedForwardConfig,
    bytes: &[u8],
    inputs: &Inputs,
    device: &Bk::Device,
) -> Outcome {
    let record = Recorder::<Bk>::load(&recorder(), bytes.to_vec(), device).expect("load record");
    let moe: SwitchFeedForward<Bk> = config.init::<Bk>(device).load_record(record);
    let shape = [BATCH, SEQ, D];
    let x = tensor::<Bk, 3>(inputs.x.clone(), shape, device).require_grad();
    let proj = tensor::<Bk, 3>(inputs.proj.clone(), shape, device);
    let mask = bool_tensor::<Bk, 2>(inputs.pad.clone(), [BATCH, SEQ], device);

    let (y, stats) = moe.forward(x.clone(), Some(mask));
    let loss = (y.clone() * proj).sum() + stats.aux_loss.clone() + stats.z_loss.clone();
    let grads = loss.backward();
    let grad = |t: Option<Tensor<Bk::InnerBackend, 3>>| host(t.expect("gradient"));
    Outcome {
        output: host(y),
        aux_loss: host(stats.aux_loss),
        z_loss: host(stats.z_loss),
        tokens_per_expert: host(stats.tokens_per_expert),
        dropped_fraction: host(stats.dropped_fraction),
        grads: vec![
            (
                "router weight",
                host(
                    moe.router
                        .gate
                        .weight
                        .grad(&grads)
                        .expect("router gradient"),
                ),
            ),
            ("w_in", grad(moe.experts.w_in.grad(&grads))),
            ("w_out", grad(moe.experts.w_out.grad(&grads))),
            ("input", grad(x.grad(&grads))),
        ],
    }
}

/// Expert hidden width.
const F: usize = 16;

/// No jitter and no dropout (random on each backend). Capacity factor 0.75 drops tokens whatever
/// the routing: C = ⌈0.75·21·k/4⌉ gives 16 slots for 18 real tokens (k = 1), 32 for 36 (k = 2).
fn moe_config(e: usize, k: usize, bias: bool) -> SwitchFeedForwardConfig {
    SwitchFeedForwardConfig::new(D, F, e)
        .with_top_k(k)
        .with_capacity_factor(0.75)
        .with_eval_capacity_factor(0.75)
        .with_jitter(0.0)
        .with_expert_dropout(0.0)
        .with_bias(bias)
        .with_init_scale(1.0)
}

/// A parameter of the reference backend drawn from the host generator: normal, std `std`.
fn param<const R: usize>(rng: &mut Rng, shape: [usize; R], std: f64) -> Param<Tensor<Ref, R>> {
    let n = shape.iter().product();
    Param::from_tensor(tensor(rng.normals(n, std), shape, &Default::default()))
}

/// Overwrites every router and expert parameter with host draws (std 1/√fan_in, biases 0.1).
fn fill_moe(moe: &mut SwitchFeedForward<Ref>, rng: &mut Rng) {
    let e = moe.num_experts();
    moe.router.gate.weight = param(rng, [D, e], (1.0 / D as f64).sqrt());
    moe.experts.w_in = param(rng, [e, D, F], (1.0 / D as f64).sqrt());
    moe.experts.w_out = param(rng, [e, F, D], (1.0 / F as f64).sqrt());
    if moe.experts.b_in.is_some() {
        moe.experts.b_in = Some(param(rng, [e, F], 0.1));
        moe.experts.b_out = Some(param(rng, [e, D], 0.1));
    }
}

fn moe_parity(e: usize, k: usize, bias: bool, seed: u64) {
    let config = moe_config(e, k, bias);
    let ref_device = Default::default();
    let mut moe = config.init::<Ref>(&ref_device);
    fill_moe(&mut moe, &mut Rng::new(seed + 1000));
    let bytes = Recorder::<Ref>::record(&recorder(), moe.into_record(), ()).expect("record");
    let inputs = Inputs::new(seed);

    let want = run_moe::<RefAD>(&config, &bytes, &inputs, &ref_device);
    assert!(
        want.dropped_fraction[0] > 0.0,
        "E={e} k={k}: the case is meant to drop tokens"
    );
    let got = run_moe::<AB>(&config, &bytes, &inputs, &device());
    assert_same(&got, &want);
}

#[test]
fn switch_feed_forward_top1_with_padding_and_drops() {
    moe_parity(4, 1, false, 31);
}

#[test]
fn switch_feed_forward_top2_with_padding_drops_and_biases() {
    moe_parity(4, 2, true, 32);
}

fn run_layer<Bk: AutodiffBackend>(
    config: &SwitchEncoderLayerConfig,
    bytes: &[u8],
    inputs: &Inputs,
    device: &Bk::Device,
) -> Outcome {
    let record = Recorder::<Bk>::load(&recorder(), bytes.to_vec(), device).expect("load record");
    let layer: SwitchEncoderLayer<Bk> = config.init::<Bk>(device).load_record(record);
    let shape = [BATCH, SEQ, D];
    let x = tensor::<Bk, 3>(inputs.x.clone(), shape, device).require_grad();
    let proj = tensor::<Bk, 3>(inputs.proj.clone(), shape, device);
    let mask = bool_tensor::<Bk, 2>(inputs.pad.clone(), [BATCH, SEQ], device);
    let mask_attn = burn::nn::attention::generate_autoregressive_mask::<Bk>(BATCH, SEQ, device);

    let (y, stats) = layer.forward(x.clone(), Some(mask), Some(mask_attn));
    let loss = (y.clone() * proj).sum() + stats.aux_loss.clone() + stats.z_loss.clone();
    let grads = loss.backward();
    let g2 = |t: Option<Tensor<Bk::InnerBackend, 2>>| host(t.expect("gradient"));
    let g3 = |t: Option<Tensor<Bk::InnerBackend, 3>>| host(t.expect("gradient"));
    Outcome {
        output: host(y),
        aux_loss: host(stats.aux_loss),
        z_loss: host(stats.z_loss),
        tokens_per_expert: host(stats.tokens_per_expert),
        dropped_fraction: host(stats.dropped_fraction),
        grads: vec![
            ("attention query", g2(layer.mha.query.weight.grad(&grads))),
            (
                "router weight",
                g2(layer.moe.router.gate.weight.grad(&grads)),
            ),
            ("w_in", g3(layer.moe.experts.w_in.grad(&grads))),
            ("w_out", g3(layer.moe.experts.w_out.grad(&grads))),
            ("input", g3(x.grad(&grads))),
        ],
    }
}

fn layer_parity(norm_first: bool, k: usize, seed: u64) {
    // No dropout or jitter; capacity factor 0.75 drops tokens (see `moe_config`).
    let config = SwitchEncoderLayerConfig::new(D, F, 2, 4)
        .with_norm_first(norm_first)
        .with_dropout(0.0)
        .map_moe(|m| {
            m.with_top_k(k)
                .with_capacity_factor(0.75)
                .with_expert_dropout(0.0)
                .with_jitter(0.0)
                .with_init_scale(1.0)
        });
    let ref_device = Default::default();
    let mut layer = config.init::<Ref>(&ref_device);
    let rng = &mut Rng::new(seed + 1000);
    let linear = |rng: &mut Rng| Linear {
        weight: param(rng, [D, D], (1.0 / D as f64).sqrt()),
        bias: Some(param(rng, [D], 0.1)),
    };
    layer.mha.query = linear(rng);
    layer.mha.key = linear(rng);
    layer.mha.value = linear(rng);
    layer.mha.output = linear(rng);
    fill_moe(&mut layer.moe, rng);
    // The norms keep their deterministic init (γ = 1, β = 0).
    let bytes = Recorder::<Ref>::record(&recorder(), layer.into_record(), ()).expect("record");
    let inputs = Inputs::new(seed);

    let want = run_layer::<RefAD>(&config, &bytes, &inputs, &ref_device);
    assert!(
        want.dropped_fraction[0] > 0.0,
        "the case is meant to drop tokens"
    );
    let got = run_layer::<AB>(&config, &bytes, &inputs, &device());
    assert_same(&got, &want);
}

#[test]
fn switch_encoder_layer_post_norm_top1() {
    layer_parity(false, 1, 41);
}

#[test]
fn switch_encoder_layer_pre_norm_top2() {
    layer_parity(true, 2, 42);
}
