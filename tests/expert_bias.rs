//! Aux-loss-free balancing (Wang et al. 2024), what the reference test cannot show by outputs
//! alone: the bias rule by hand, its balancing effect without any optimiser, and its persistence
//! in the module record.

mod common;

use burn::module::{AutodiffModule, Module, Param};
use burn::record::{DefaultRecorder, Recorder};
use burn::tensor::DType;
use common::*;
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

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
