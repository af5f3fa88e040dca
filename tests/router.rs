//! Router precision, jitter and the paper's initialisation.

mod common;

use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use common::*;
use switch_moe::SwitchFeedForwardConfig;

/// The lower (or other) precision the test backend supports: f16 where it can, f64 otherwise
/// (ndarray has no f16); either way not f32, which is what the router must compute in.
fn model_dtype() -> FloatDType {
    if B::supports_dtype(&device(), DType::F16) {
        FloatDType::F16
    } else {
        FloatDType::F64
    }
}

#[test]
fn router_computes_in_f32_whatever_the_model_dtype() {
    let device = device();
    let dtype = model_dtype();
    let (d, e) = (8, 4);
    let mut moe = SwitchFeedForwardConfig::new(d, 16, e)
        .with_top_k(2)
        .init::<B>(&device);
    let x32 = tensor::<B, 3>(Rng::new(5).normals(2 * 3 * d, 1.0), [2, 3, d], &device);
    let (y32, stats32) = moe.forward(x32.clone(), None);

    // The same weights in the model dtype.
    moe.router.gate.weight = Param::from_tensor(moe.router.gate.weight.val().cast(dtype));
    moe.experts.w_in = Param::from_tensor(moe.experts.w_in.val().cast(dtype));
    moe.experts.w_out = Param::from_tensor(moe.experts.w_out.val().cast(dtype));
    let x = x32.cast(dtype);
    assert_eq!(moe.router.gate.weight.val().dtype(), DType::from(dtype));

    let routing = moe.router.forward(x.clone().reshape([6, d]));
    assert_eq!(routing.logits.dtype(), DType::F32);
    assert_eq!(routing.probs.dtype(), DType::F32);
    assert_eq!(routing.gates.dtype(), DType::F32);

    let (y, stats) = moe.forward(x, None);
    assert_eq!(
        y.dtype(),
        DType::from(dtype),
        "output stays in the model dtype"
    );
    assert_eq!(
        stats.aux_loss.dtype(),
        DType::from(dtype),
        "losses add to the model's loss"
    );
    assert_eq!(stats.tokens_per_expert.dtype(), DType::F32);
    let tol = if dtype == FloatDType::F16 { 2e-2 } else { 1e-5 };
    let diff = max_abs_diff(&host(y), &host(y32));
    assert!(diff < tol, "model-dtype output differs from f32 by {diff}");
    assert!(max_abs_diff(&host(stats.aux_loss), &host(stats32.aux_loss)) < tol);
}

#[test]
fn jitter_applies_in_training_only() {
    let device = device();
    let (d, e) = (8, 4);
    let router = SwitchFeedForwardConfig::new(d, 16, e)
        .with_jitter(0.5)
        .init_router::<AB>(&device);
    let x_host = Rng::new(9).normals(10 * d, 1.0);
    let x = tensor::<AB, 2>(x_host.clone(), [10, d], &device);

    // Inference: logits are exactly x·W.
    let inner = router.valid();
    let w = host(inner.gate.weight.val());
    let logits = host(
        inner
            .forward(tensor(x_host.clone(), [10, d], &device))
            .logits,
    );
    for t in 0..10 {
        for j in 0..e {
            let want: f32 = (0..d).map(|i| x_host[t * d + i] * w[i * e + j]).sum();
            assert!((logits[t * e + j] - want).abs() < 1e-5);
        }
    }
    let again = host(
        inner
            .forward(tensor(x_host.clone(), [10, d], &device))
            .logits,
    );
    assert_eq!(logits, again, "no noise in inference");

    // Training: the input is multiplied by U[0.5, 1.5], so the logits move.
    let a = host(router.forward(x.clone()).logits);
    let b = host(router.forward(x).logits);
    assert!(max_abs_diff(&a, &b) > 1e-3, "training logits carry jitter");
    assert!(max_abs_diff(&a, &logits) > 1e-3);

    // ε = 0 switches it off in training too.
    let quiet = SwitchFeedForwardConfig::new(d, 16, e)
        .with_jitter(0.0)
        .init_router::<AB>(&device);
    let xq = tensor::<AB, 2>(x_host, [10, d], &device);
    assert_eq!(
        host(quiet.forward(xq.clone()).logits),
        host(quiet.forward(xq).logits)
    );
}

fn std_and_max(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    let max = v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    (var.sqrt(), max)
}

#[test]
fn init_std_is_sqrt_of_scale_over_fan_in() {
    let device = device();
    B::seed(&device, 17);
    let (d, f, e) = (64, 256, 8);
    let moe = SwitchFeedForwardConfig::new(d, f, 64).init::<B>(&device);
    let experts = SwitchFeedForwardConfig::new(d, f, e)
        .init::<B>(&device)
        .experts;
    for (name, values, fan_in) in [
        ("router", host(moe.router.gate.weight.val()), d),
        ("w_in", host(experts.w_in.val()), d),
        ("w_out", host(experts.w_out.val()), f),
    ] {
        let target = (0.1 / fan_in as f64).sqrt();
        let (std, max) = std_and_max(&values);
        assert!(
            (std / target - 1.0).abs() < 0.05,
            "{name}: std {std} not within 5% of {target}"
        );
        // Truncation: nothing beyond 2 standard deviations of the widened normal.
        assert!(
            max <= 2.0 * target / 0.879_625_661 * (1.0 + 1e-5),
            "{name}: max {max}"
        );
    }
    // init_scale 1.0 gives √10 times the spread.
    let wide = SwitchFeedForwardConfig::new(d, f, e)
        .with_init_scale(1.0)
        .init::<B>(&device);
    let (std, _) = std_and_max(&host(wide.experts.w_in.val()));
    assert!((std / (1.0 / d as f64).sqrt() - 1.0).abs() < 0.05);
}
