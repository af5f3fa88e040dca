//! The routing options beyond Switch that the reference test cannot show by outputs alone: the
//! aux-loss-free bias rule (by hand), its balancing effect without any optimiser, its persistence
//! in the module record, expert choice refused by the causal LM, and gradients through sigmoid
//! scores and the shared-expert gate (finite differences).

mod common;

use burn::module::{AutodiffModule, Module, Param};
use burn::record::{DefaultRecorder, Recorder};
use burn::tensor::{DType, Tensor};
use common::*;
use switch_moe::{
    RouterScore, RoutingMode, SwitchEncoderConfig, SwitchFeedForward, SwitchFeedForwardConfig,
    SwitchLmConfig,
};

/// A router whose weights make token t's scores depend on its input only through `x`: with
/// d = E and an identity router, logits = x.
fn identity_router<BB: burn::tensor::backend::Backend>(moe: &mut SwitchFeedForward<BB>, e: usize) {
    let device = moe.router.gate.weight.device();
    let mut w = vec![0.0f32; e * e];
    for i in 0..e {
        w[i * e + i] = 1.0;
    }
    moe.router.gate.weight = Param::from_tensor(tensor(w, [e, e], &device));
}

#[test]
fn bias_rule_by_hand() {
    // E = 3, 6 tokens, top-1; logits = x chosen so that the first choices are 0, 0, 0, 0, 1, 2:
    // counts c = (4, 1, 1), mean 2, sign(mean − c) = (−1, +1, +1). With u = 0.1 the step is
    // (−0.1, +0.1, +0.1), its mean 0.1/3, so the re-centred bias is (−0.4/3, 0.2/3, 0.2/3).
    let device = device();
    let e = 3;
    let u = 0.1;
    let mut moe: SwitchFeedForward<AB> = SwitchFeedForwardConfig::new(e, 4, e)
        .with_jitter(0.0)
        .with_expert_bias_rate(u)
        .with_capacity_factor(3.0)
        .init(&device);
    identity_router(&mut moe, e);
    let x = vec![
        5.0, 0.0, 0.0, //
        5.0, 0.0, 0.0, //
        5.0, 0.0, 0.0, //
        5.0, 0.0, 0.0, //
        0.0, 5.0, 0.0, //
        0.0, 0.0, 5.0f32,
    ];
    let (_, stats) = moe.forward(tensor::<AB, 3>(x.clone(), [1, 6, e], &device), None);
    assert_eq!(
        host(stats.tokens_per_expert.clone().inner()),
        vec![4.0, 1.0, 1.0]
    );
    let want = [-0.4 / 3.0, 0.2 / 3.0, 0.2 / 3.0];
    let got = host(moe.router.expert_bias().inner());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "bias {got:?}, want {want:?}");
    }
    // The stats carry the bias after the update, and it stays f32.
    assert_eq!(host(stats.expert_bias.clone().inner()), got);
    assert_eq!(moe.router.expert_bias().dtype(), DType::F32);

    // Inference forwards leave it unchanged.
    let inner = moe.valid();
    for _ in 0..3 {
        let _ = inner.forward(tensor::<B, 3>(x.clone(), [1, 6, e], &device), None);
    }
    assert_eq!(host(inner.router.expert_bias()), got);
    // A second training forward moves it again (same counts: by the same step).
    let _ = moe.forward(tensor::<AB, 3>(x, [1, 6, e], &device), None);
    let twice = host(moe.router.expert_bias().inner());
    for (t, g) in twice.iter().zip(&got) {
        assert!((t - 2.0 * g).abs() < 1e-6, "{twice:?} vs 2·{got:?}");
    }
}

/// The busiest expert's share of first choices after `steps` training forwards of a router
/// skewed towards expert 0 (no optimiser, aux weight 0: only the bias can move).
fn share_after(rate: f64, steps: usize) -> (f32, f32) {
    let device = device();
    let (d, e, t) = (8, 4, 256);
    let mut moe: SwitchFeedForward<AB> = SwitchFeedForwardConfig::new(d, 8, e)
        .with_jitter(0.0)
        .with_expert_bias_rate(rate)
        .init(&device);
    let mut rng = Rng::new(5);
    let mut w = rng.normals(d * e, 0.3);
    for i in 0..d {
        w[i * e] += 1.0; // expert 0's column: positive inputs favour it
    }
    moe.router.gate.weight = Param::from_tensor(tensor(w, [d, e], &device));
    let x: Vec<f32> = (0..t * d).map(|_| rng.uniform() as f32).collect();
    let x = tensor::<AB, 3>(x, [1, t, d], &device);
    let busiest = |moe: &SwitchFeedForward<AB>| {
        let (_, stats) = moe.valid().forward(x.clone().inner(), None);
        let counts = host(stats.tokens_per_expert);
        counts.iter().cloned().fold(0.0, f32::max) / t as f32
    };
    let before = busiest(&moe);
    for _ in 0..steps {
        let _ = moe.forward(x.clone(), None);
    }
    (before, busiest(&moe))
}

#[test]
fn bias_balances_a_skewed_router_without_any_optimiser() {
    let (before, after) = share_after(0.01, 150);
    assert!(
        before > 0.8,
        "the router is meant to start skewed: {before}"
    );
    assert!(
        after < 1.5 / 4.0,
        "busiest share {after} after 150 bias updates"
    );
    let (before0, after0) = share_after(0.0, 150);
    assert_eq!(before0, after0, "u = 0: nothing moves");
    assert!(after0 > 0.8);
}

#[test]
fn bias_survives_a_record_round_trip() {
    let device = device();
    let (d, e, t) = (8, 4, 64);
    let config = SwitchFeedForwardConfig::new(d, 8, e)
        .with_jitter(0.0)
        .with_expert_bias_rate(0.05);
    let moe: SwitchFeedForward<AB> = config.init(&device);
    let x = tensor::<AB, 3>(Rng::new(9).normals(t * d, 1.0), [1, t, d], &device);
    for _ in 0..5 {
        let _ = moe.forward(x.clone(), None);
    }
    let trained = moe.valid();
    let bias = host(trained.router.expert_bias());
    assert!(
        bias.iter().any(|b| b.abs() > 1e-3),
        "the bias moved: {bias:?}"
    );

    let file = std::env::temp_dir().join("switch-moe-bias-record");
    trained
        .clone()
        .save_file(file.clone(), &DefaultRecorder::new())
        .expect("save");
    let fresh: SwitchFeedForward<B> = config.init(&device);
    assert!(host(fresh.router.expert_bias()).iter().all(|b| *b == 0.0));
    let record = Recorder::<B>::load(&DefaultRecorder::new(), file, &device).expect("load");
    let loaded = fresh.load_record(record);
    assert_eq!(host(loaded.router.expert_bias()), bias);
    let (a, sa) = trained.forward(x.clone().inner(), None);
    let (b, sb) = loaded.forward(x.inner(), None);
    assert_eq!(host(a), host(b), "identical routing after loading");
    assert_eq!(host(sa.tokens_per_expert), host(sb.tokens_per_expert));
}

#[test]
fn the_causal_lm_refuses_expert_choice() {
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, 4)
        .map_moe(|m| m.with_routing(RoutingMode::ExpertChoice));
    assert!(
        encoder.validate().is_ok(),
        "a bidirectional encoder may use it"
    );
    let err = SwitchLmConfig::new(10, 8, encoder)
        .validate()
        .expect_err("the LM must refuse expert choice")
        .to_string();
    for needle in ["routing", "ExpertChoice", "future", "token choice"] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
}

#[test]
fn invalid_option_combinations_name_the_field() {
    let base = || SwitchFeedForwardConfig::new(8, 16, 4);
    let msg = |c: SwitchFeedForwardConfig| c.validate().expect_err("invalid").to_string();
    assert!(msg(base().with_expert_bias_rate(-1.0)).contains("expert_bias_rate"));
    assert!(msg(base().with_shared_gate(true)).contains("shared_gate"));
    let ec = || base().with_routing(RoutingMode::ExpertChoice);
    assert!(msg(ec().with_expert_bias_rate(1e-3)).contains("expert_bias_rate"));
    assert!(msg(ec().with_dropless(true)).contains("dropless"));
}

/// Central differences of <output, proj> against autodiff, for one parameter tensor chosen by
/// `param` (get, set). Routing must not flip within ±h: `margin_ok` checks the chosen inputs.
fn check_gradient(
    moe: SwitchFeedForward<AB>,
    x_host: Vec<f32>,
    shape: [usize; 3],
    get: impl Fn(
        &SwitchFeedForward<AB>,
        &<AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    ) -> Vec<f32>,
    values: impl Fn(&SwitchFeedForward<B>) -> Vec<f32>,
    set: impl Fn(&mut SwitchFeedForward<B>, Vec<f32>),
) {
    let device = device();
    let n = shape.iter().product();
    let proj_host = Rng::new(77).normals(n, 1.0);
    let (y, _) = moe.forward(tensor::<AB, 3>(x_host.clone(), shape, &device), None);
    let grads = (y * tensor::<AB, 3>(proj_host.clone(), shape, &device))
        .sum()
        .backward();
    let analytic = get(&moe, &grads);
    let inner = moe.valid();
    let w0 = values(&inner);
    let h = 1e-3f32;
    let objective = |w: Vec<f32>| -> f64 {
        let mut m = inner.clone();
        set(&mut m, w);
        let (y, _) = m.forward(tensor(x_host.clone(), shape, &device), None);
        host((y * tensor::<B, 3>(proj_host.clone(), shape, &device)).sum())[0] as f64
    };
    for i in 0..w0.len() {
        let mut plus = w0.clone();
        plus[i] += h;
        let mut minus = w0.clone();
        minus[i] -= h;
        let numeric = (objective(plus) - objective(minus)) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        assert!(
            (numeric - a).abs() <= 2e-3 + 2e-2 * a.abs(),
            "weight {i}: analytic {a}, numeric {numeric}"
        );
    }
    assert!(analytic.iter().any(|v| v.abs() > 1e-4), "a gradient flows");
}

#[test]
fn sigmoid_router_gradient_matches_finite_differences() {
    let device = device();
    let (d, e, t) = (3, 3, 4);
    // Top-2 so that the normalised sigmoid gates carry a gradient (top-1 sigmoid gates do too:
    // the raw score). Inputs and weights from the host generator, margins checked below.
    let mut moe: SwitchFeedForward<AB> = no_drop_config(d, 5, e)
        .with_top_k(2)
        .with_router_score(RouterScore::Sigmoid)
        .init(&device);
    let mut rng = Rng::new(11);
    let x_host = rng.normals(t * d, 1.0);
    let router = rng.normals(d * e, 1.0);
    moe.router.gate.weight = Param::from_tensor(tensor(router.clone(), [d, e], &device));
    for tok in 0..t {
        let xt = &x_host[tok * d..(tok + 1) * d];
        let mut logits: Vec<f32> = (0..e)
            .map(|j| (0..d).map(|i| xt[i] * router[i * e + j]).sum())
            .collect();
        logits.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let max_x = xt.iter().fold(0f32, |m, v| m.max(v.abs()));
        // The 2nd and 3rd logits must not swap within ±h (sigmoid is monotone).
        assert!(
            logits[1] - logits[2] > 2.0 * 1e-3 * max_x,
            "token {tok}: margin"
        );
    }
    check_gradient(
        moe,
        x_host,
        [1, t, d],
        |m, g| host(m.router.gate.weight.grad(g).expect("router grad")),
        |m| host(m.router.gate.weight.val()),
        |m, w| m.router.gate.weight = Param::from_tensor(tensor(w, [d, e], &device)),
    );
}

#[test]
fn shared_gate_gradient_matches_finite_differences() {
    let device = device();
    let (d, e, t) = (3, 2, 4);
    let moe: SwitchFeedForward<AB> = no_drop_config(d, 5, e)
        .with_num_shared_experts(2)
        .with_shared_gate(true)
        .init(&device);
    let x_host = Rng::new(12).normals(t * d, 1.0);
    let gate = |m: &SwitchFeedForward<B>| {
        host(
            m.shared
                .as_ref()
                .unwrap()
                .gate
                .as_ref()
                .unwrap()
                .weight
                .val(),
        )
    };
    check_gradient(
        moe,
        x_host,
        [1, t, d],
        |m, g| {
            let w = &m.shared.as_ref().unwrap().gate.as_ref().unwrap().weight;
            host(w.grad(g).expect("gate grad"))
        },
        gate,
        |m, w| {
            let shared = m.shared.as_mut().unwrap();
            shared.gate.as_mut().unwrap().weight = Param::from_tensor(tensor(w, [d, 1], &device));
        },
    );
}

#[test]
fn printing_shows_the_routing_options() {
    let device = device();
    let moe: SwitchFeedForward<B> = SwitchFeedForwardConfig::new(8, 16, 4)
        .with_router_score(RouterScore::Sigmoid)
        .with_num_shared_experts(1)
        .with_expert_bias_rate(1e-3)
        .init(&device);
    let text = moe.to_string();
    for needle in [
        "score: Sigmoid",
        "shared_experts: 1",
        "expert_bias_rate: 0.001",
        "routing: TokenChoice",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    let _ = Tensor::<B, 1>::zeros([1], &device);
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
