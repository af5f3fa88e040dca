//! `Wgpu<f16>`: the model computes in f16, the router in f32 (paper §2.4, selective precision).
//! Compiled only with the `wgpu` feature.
//!
//! This test has its own binary on purpose. Burn 0.21 keeps the default float dtype per *device*
//! (`burn::tensor::get_device_settings`, keyed by device id and device type), and `Wgpu<f16>` and
//! `Wgpu<f32>` share the device type `WgpuDevice`: whichever backend creates the first tensor on a
//! device fixes its default for the whole process. In a binary that also runs `Wgpu<f32>` tests,
//! an f16 model would silently be created in f32.
#![cfg(all(feature = "wgpu", feature = "ndarray"))]

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{DType, FloatDType, IntDType, get_device_settings, set_default_dtypes};
use common::*;
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

type Half = burn::backend::Wgpu<burn::tensor::f16>;
type HalfAD = Autodiff<Half>;
type Ref = NdArray;
type RefAD = Autodiff<NdArray>;

const BATCH: usize = 3;
const SEQ: usize = 7;
const D: usize = 8;

/// Tolerance against the f32 NdArray reference: 2e-2 max abs diff on outputs of magnitude ~1.
/// f16 has an 11-bit significand (relative step 9.8e-4); weights, inputs, the two expert matmuls
/// and the gate product are each rounded to it, so errors of a few 1e-3 are expected. 2e-2 leaves
/// room without hiding a wrong routing or a dropped token, which change outputs by O(1).
const F16_TOL: f32 = 2e-2;

/// The wgpu device with f16 as its default float type. The first use of the device in this
/// process makes that explicit (it would be anyway, from `Half`'s float element); a later call
/// checks it, and fails clearly if something else came first.
fn half_device() -> <Half as burn::tensor::backend::BackendTypes>::Device {
    let device = Default::default();
    if set_default_dtypes::<Half>(&device, FloatDType::F16, IntDType::I32).is_err() {
        assert_eq!(
            get_device_settings::<Half>(&device).float_dtype,
            FloatDType::F16,
            "the wgpu device was initialised with another float dtype before this test"
        );
    }
    device
}

#[test]
fn wgpu_f16_routes_in_f32_and_outputs_f16() {
    let device = half_device();

    let config = SwitchFeedForwardConfig::new(D, 16, 4)
        .with_top_k(2)
        .with_capacity_factor(1.0)
        .with_eval_capacity_factor(1.0)
        .with_jitter(0.0)
        .with_expert_dropout(0.0)
        .with_init_scale(1.0);
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let ref_device = Default::default();
    <Ref as burn::tensor::backend::Backend>::seed(&ref_device, 51);
    let bytes =
        Recorder::<Ref>::record(&recorder, config.init::<Ref>(&ref_device).into_record(), ())
            .expect("record");

    let mut rng = Rng::new(51);
    let x_host = rng.normals(BATCH * SEQ * D, 1.0);
    let proj_host = rng.normals(BATCH * SEQ * D, 1.0);
    let pad: Vec<bool> = (0..BATCH * SEQ).map(|i| i % 6 == 5).collect();
    let shape = [BATCH, SEQ, D];

    // The f32 reference.
    let record = Recorder::<RefAD>::load(&recorder, bytes.clone(), &ref_device).expect("load");
    let reference: SwitchFeedForward<RefAD> = config.init(&ref_device).load_record(record);
    let mask = bool_tensor::<RefAD, 2>(pad.clone(), [BATCH, SEQ], &ref_device);
    let (want, want_stats) =
        reference.forward(tensor(x_host.clone(), shape, &ref_device), Some(mask));

    // The same weights in f16 on wgpu.
    let record = Recorder::<HalfAD>::load(&recorder, bytes, &device).expect("load");
    let moe: SwitchFeedForward<HalfAD> = config.init(&device).load_record(record);
    assert_eq!(moe.router.gate.weight.val().dtype(), DType::F16);
    assert_eq!(moe.experts.w_in.val().dtype(), DType::F16);
    assert_eq!(moe.experts.w_out.val().dtype(), DType::F16);

    let x = tensor::<HalfAD, 3>(x_host, shape, &device).require_grad();
    assert_eq!(x.dtype(), DType::F16);
    let routing = moe.router.forward(x.clone().reshape([BATCH * SEQ, D]));
    assert_eq!(routing.logits.dtype(), DType::F32, "router logits in f32");
    assert_eq!(
        routing.probs.dtype(),
        DType::F32,
        "router probabilities in f32"
    );
    assert_eq!(routing.gates.dtype(), DType::F32);

    let mask = bool_tensor::<HalfAD, 2>(pad, [BATCH, SEQ], &device);
    let (y, stats) = moe.forward(x, Some(mask));
    assert_eq!(y.dtype(), DType::F16, "output in the model dtype");
    assert_eq!(stats.aux_loss.dtype(), DType::F16);
    assert_eq!(stats.z_loss.dtype(), DType::F16);
    assert_eq!(stats.tokens_per_expert.dtype(), DType::F32);

    assert_eq!(
        host(stats.tokens_per_expert.clone()),
        host(want_stats.tokens_per_expert),
        "f16 routing differs from f32"
    );
    assert_eq!(
        host(stats.dropped_fraction.clone()),
        host(want_stats.dropped_fraction)
    );
    let diff = max_abs_diff(&host(y.clone()), &host(want));
    assert!(
        diff <= F16_TOL,
        "f16 output differs from f32 by {diff} (tolerance {F16_TOL})"
    );

    // Training works in f16 too: the gradients come back in the parameters' dtype, finite.
    let proj = tensor::<HalfAD, 3>(proj_host, shape, &device);
    let loss = (y * proj).sum() + stats.aux_loss + stats.z_loss;
    let grads = loss.backward();
    let g_router = moe
        .router
        .gate
        .weight
        .grad(&grads)
        .expect("router gradient");
    let g_in = moe.experts.w_in.grad(&grads).expect("w_in gradient");
    assert_eq!(g_router.dtype(), DType::F16);
    assert_eq!(g_in.dtype(), DType::F16);
    for g in [host(g_router), host(g_in)] {
        assert!(g.iter().all(|v| v.is_finite()), "non-finite f16 gradient");
        assert!(g.iter().any(|v| *v != 0.0), "all-zero f16 gradient");
    }
}

/// `router_f32 = false` (the paper's Table 2 ablation): the logits are the f16 product x·Wᵣ,
/// exactly, handed on as f32; with the default they are the f32 product of the same f16 values.
/// Both are checked against products computed here, so a flag that did nothing fails.
#[test]
fn router_f32_false_computes_the_logits_in_f16() {
    use burn::tensor::Tensor;
    let device = half_device();
    let config = SwitchFeedForwardConfig::new(D, 16, 4)
        .with_jitter(0.0)
        .with_init_scale(1.0);
    let mut rng = Rng::new(52);
    let x = tensor::<Half, 2>(rng.normals(BATCH * SEQ * D, 3.0), [BATCH * SEQ, D], &device);
    let router_f32 = config.init_router::<Half>(&device);
    let mut router_f16 = router_f32.clone();
    router_f16.float32 = false;
    let w: Tensor<Half, 2> = router_f32.gate.weight.val();
    assert_eq!(w.dtype(), DType::F16);

    let in_f16 = host(x.clone().matmul(w.clone()).cast(FloatDType::F32));
    let in_f32 = host(
        x.clone()
            .cast(FloatDType::F32)
            .matmul(w.cast(FloatDType::F32)),
    );
    let got_f16 = router_f16.forward(x.clone()).logits;
    let got_f32 = router_f32.forward(x).logits;
    assert_eq!(got_f16.dtype(), DType::F32, "handed on as f32");
    assert_eq!(
        host(got_f16),
        in_f16,
        "router_f32 = false: logits from the f16 product"
    );
    assert_eq!(
        host(got_f32),
        in_f32,
        "default: logits from the f32 product"
    );
    assert_ne!(
        in_f16, in_f32,
        "the two products must differ for this test to mean anything"
    );
}
