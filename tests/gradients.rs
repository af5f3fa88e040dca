//! Gradients: the router learns through the gates, idle experts get nothing, the router gradient
//! agrees with finite differences (softmax and sigmoid scores, the shared-expert gate), and the
//! experts' transpose-free backward agrees with a per-expert reference.

mod common;

use burn::module::{AutodiffModule, Param};
use common::*;
use switch_moe::{RouterScore, SwitchFeedForward};

#[test]
fn router_gets_gradients_and_idle_experts_get_zero() {
    let device = device();
    let (d, f, e) = (4, 6, 4);
    let mut moe: SwitchFeedForward<AB> = no_drop_config(d, f, e).init(&device);
    // Positive inputs; expert 3's router column is negative, so it never wins.
    let mut rng = Rng::new(3);
    let mut router: Vec<f32> = (0..d * e).map(|_| rng.uniform() as f32).collect();
    for i in 0..d {
        router[i * e + 3] = -1.0;
    }
    moe.router.gate.weight = Param::from_tensor(tensor(router, [d, e], &device));
    let x: Vec<f32> = (0..2 * 6 * d).map(|_| 0.1 + rng.uniform() as f32).collect();
    let (y, stats) = moe.forward(tensor(x, [2, 6, d], &device), None);
    assert_eq!(host(stats.tokens_per_expert.clone())[3], 0.0);

    let loss = (y.clone() * y).sum();
    let grads = loss.backward();
    let g_router = host(moe.router.gate.weight.grad(&grads).expect("router grad"));
    assert!(
        g_router.iter().any(|v| v.abs() > 1e-6),
        "router weights must get a gradient through the gates"
    );
    let g_in = host(moe.experts.w_in.grad(&grads).expect("w_in grad")); // [E, d, f]
    let g_out = host(moe.experts.w_out.grad(&grads).expect("w_out grad")); // [E, f, d]
    let per_expert = d * f;
    for ex in 0..e {
        let gin = &g_in[ex * per_expert..(ex + 1) * per_expert];
        let gout = &g_out[ex * per_expert..(ex + 1) * per_expert];
        let used = host(stats.tokens_per_expert.clone().inner())[ex] > 0.0;
        if used {
            assert!(
                gout.iter().any(|v| *v != 0.0),
                "expert {ex} used but no grad"
            );
        } else {
            assert!(
                gin.iter().all(|v| *v == 0.0),
                "idle expert {ex}: w_in grad not zero"
            );
            assert!(
                gout.iter().all(|v| *v == 0.0),
                "idle expert {ex}: w_out grad not zero"
            );
        }
    }
}

#[test]
fn router_gradient_matches_finite_differences() {
    let device = device();
    let (d, f, e, t) = (3, 5, 3, 4);
    let mut moe: SwitchFeedForward<AB> = no_drop_config(d, f, e).init(&device);
    let mut rng = Rng::new(7);
    let x_host = rng.normals(t * d, 1.0);
    let proj_host = rng.normals(t * d, 1.0); // objective: <output, proj>
    // The router weights come from the host generator, not the backend's RNG (unseeded, and
    // different on every backend), so that routing is the same on every backend and every run.
    let router_host = rng.normals(d * e, 1.0);
    moe.router.gate.weight = Param::from_tensor(tensor(router_host.clone(), [d, e], &device));
    let h = 1e-2f32;
    // The objective is piecewise smooth: it jumps where a token's top-1 expert changes. Moving one
    // weight W[i][j] by ±h moves logit j of token t by h·|x[t][i]|, so a top-1 margin above
    // 2·h·max|x| guarantees that no difference below crosses a jump.
    for tok in 0..t {
        let xt = &x_host[tok * d..(tok + 1) * d];
        let mut logits: Vec<f32> = (0..e)
            .map(|j| (0..d).map(|i| xt[i] * router_host[i * e + j]).sum())
            .collect();
        logits.sort_by(|a, b| b.partial_cmp(a).unwrap());
        let max_x = xt.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            logits[0] - logits[1] > 2.0 * h * max_x,
            "token {tok}: top-1 margin {} too small for finite differences",
            logits[0] - logits[1]
        );
    }
    let x = tensor::<AB, 3>(x_host.clone(), [1, t, d], &device);
    let proj = tensor::<AB, 3>(proj_host.clone(), [1, t, d], &device);

    let (y, _) = moe.forward(x, None);
    let grads = (y * proj).sum().backward();
    let analytic = host(moe.router.gate.weight.grad(&grads).expect("router grad"));

    // Central differences on the inference copy (same capacity: no drops either way).
    let inner = moe.valid();
    let w0 = host(inner.router.gate.weight.val());
    let objective = |w: Vec<f32>| -> f64 {
        let mut m = inner.clone();
        m.router.gate.weight = Param::from_tensor(tensor(w, [d, e], &device));
        let (y, _) = m.forward(tensor(x_host.clone(), [1, t, d], &device), None);
        let p = tensor::<B, 3>(proj_host.clone(), [1, t, d], &device);
        host((y * p).sum())[0] as f64
    };
    for i in 0..d * e {
        let mut plus = w0.clone();
        plus[i] += h;
        let mut minus = w0.clone();
        minus[i] -= h;
        let numeric = (objective(plus) - objective(minus)) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        assert!(
            (numeric - a).abs() <= 2e-3 + 2e-2 * a.abs(),
            "router weight {i}: analytic {a}, numeric {numeric}"
        );
    }
    // The objective depends on the router weights through the gates only.
    assert!(analytic.iter().any(|v| v.abs() > 1e-4));
}

/// The experts' matmuls run through `switch_moe::expert_matmul`, whose backward on ndarray
/// computes ∂x = (W·∂yᵀ)ᵀ instead of Burn's ∂y·Wᵀ. The layer's gradients must equal Burn's own
/// matmul backward, computed here expert by expert with 2-D matmuls of slices, for every
/// activation, with biases and with the gated third weight (on the other backends the layer
/// runs Burn's matmul, and this checks that path).
#[test]
fn expert_gradients_match_a_per_expert_reference() {
    use burn::tensor::Tensor;
    use switch_moe::expert_matmul::has_transpose_free_backward;
    use switch_moe::experts::Experts;

    let device = device();
    assert_eq!(
        has_transpose_free_backward::<AB>(),
        switch_moe::backend::NAME == "ndarray",
        "ndarray takes the custom backward (else this test compares Burn with itself there)"
    );
    // C < d < f: both matmuls take the custom backward on ndarray (it needs C < the input width).
    let (e, c, d, f) = (3, 3, 4, 6);
    let mut rng = Rng::new(11);
    for (name, config) in [
        ("relu", no_drop_config(d, f, e)),
        (
            "gelu",
            no_drop_config(d, f, e).with_activation(burn::nn::activation::ActivationConfig::Gelu),
        ),
        ("swiglu", no_drop_config(d, f, e).with_swiglu()),
    ] {
        // Gated configs refuse biases; the module runs them all the same, so every variant gets
        // non-zero biases here, and their gradients and their effect on the others are tested.
        let mut experts: Experts<AB> = config.init_experts(&device);
        experts.b_in = Some(Param::from_tensor(tensor(
            rng.normals(e * f, 0.5),
            [e, f],
            &device,
        )));
        experts.b_out = Some(Param::from_tensor(tensor(
            rng.normals(e * d, 0.5),
            [e, d],
            &device,
        )));
        let x_host = rng.normals(e * c * d, 1.0);
        let r = tensor::<AB, 3>(rng.normals(e * c * d, 1.0), [e, c, d], &device);

        let x = tensor::<AB, 3>(x_host.clone(), [e, c, d], &device).require_grad();
        let grads = (experts.forward(x.clone()) * r.clone()).sum().backward();

        // The reference: leaf copies of every operand, one expert at a time.
        let leaf3 =
            |t: Tensor<AB, 3>| Tensor::<AB, 3>::from_data(t.to_data(), &device).require_grad();
        let leaf2 =
            |t: Tensor<AB, 2>| Tensor::<AB, 2>::from_data(t.to_data(), &device).require_grad();
        let x_ref = tensor::<AB, 3>(x_host, [e, c, d], &device).require_grad();
        let w_in = leaf3(experts.w_in.val());
        let w_out = leaf3(experts.w_out.val());
        let w_up = experts.w_up.as_ref().map(|w| leaf3(w.val()));
        let b_in = leaf2(experts.b_in.as_ref().unwrap().val());
        let b_out = leaf2(experts.b_out.as_ref().unwrap().val());
        let mut outputs = Vec::new();
        for i in 0..e {
            let xi = x_ref.clone().slice([i..i + 1, 0..c, 0..d]).reshape([c, d]);
            let slice = |w: &Tensor<AB, 3>, a: usize, b: usize| {
                w.clone().slice([i..i + 1, 0..a, 0..b]).reshape([a, b])
            };
            let row = |b: &Tensor<AB, 2>, n: usize| b.clone().slice([i..i + 1, 0..n]);
            let mut h = xi.clone().matmul(slice(&w_in, d, f)) + row(&b_in, f);
            h = experts.activation.forward(h);
            if let Some(w_up) = &w_up {
                h = h * xi.matmul(slice(w_up, d, f));
            }
            outputs.push((h.matmul(slice(&w_out, f, d)) + row(&b_out, d)).reshape([1, c, d]));
        }
        let y_ref = Tensor::cat(outputs, 0);
        let grads_ref = (y_ref * r).sum().backward();

        let pairs = [
            (
                "x",
                host(x.grad(&grads).unwrap()),
                host(x_ref.grad(&grads_ref).unwrap()),
            ),
            (
                "w_in",
                host(experts.w_in.grad(&grads).unwrap()),
                host(w_in.grad(&grads_ref).unwrap()),
            ),
            (
                "w_out",
                host(experts.w_out.grad(&grads).unwrap()),
                host(w_out.grad(&grads_ref).unwrap()),
            ),
            (
                "b_in",
                host(experts.b_in.as_ref().unwrap().grad(&grads).unwrap()),
                host(b_in.grad(&grads_ref).unwrap()),
            ),
            (
                "b_out",
                host(experts.b_out.as_ref().unwrap().grad(&grads).unwrap()),
                host(b_out.grad(&grads_ref).unwrap()),
            ),
        ];
        let mut checked = Vec::from(pairs);
        if let (Some(w), Some(w_ref)) = (&experts.w_up, &w_up) {
            checked.push((
                "w_up",
                host(w.grad(&grads).unwrap()),
                host(w_ref.grad(&grads_ref).unwrap()),
            ));
        }
        for (what, got, want) in checked {
            assert!(
                want.iter().any(|v| v.abs() > 1e-3),
                "{name} {what}: the reference gradient is zero"
            );
            let diff = max_abs_diff(&got, &want);
            assert!(
                diff <= 1e-5,
                "{name}: ∂{what} differs from the per-expert reference by {diff}"
            );
        }
    }
}

/// The custom operation itself, on every backend (the layer uses it on ndarray only): its output
/// and both gradients equal Burn's matmul's on leaf copies of the same operands.
#[test]
fn transpose_free_matmul_matches_burns_matmul() {
    use burn::tensor::Tensor;
    use switch_moe::expert_matmul::transpose_free_matmul;

    let device = device();
    let (e, c, a, b) = (3, 5, 4, 6);
    let mut rng = Rng::new(12);
    let (x_host, w_host) = (rng.normals(e * c * a, 1.0), rng.normals(e * a * b, 1.0));
    let r = tensor::<AB, 3>(rng.normals(e * c * b, 1.0), [e, c, b], &device);
    let x = tensor::<AB, 3>(x_host.clone(), [e, c, a], &device).require_grad();
    let w = tensor::<AB, 3>(w_host.clone(), [e, a, b], &device).require_grad();
    let y = transpose_free_matmul(x.clone(), w.clone());
    let grads = (y.clone() * r.clone()).sum().backward();

    let x_ref = tensor::<AB, 3>(x_host, [e, c, a], &device).require_grad();
    let w_ref = tensor::<AB, 3>(w_host, [e, a, b], &device).require_grad();
    let y_ref: Tensor<AB, 3> = x_ref.clone().matmul(w_ref.clone());
    let grads_ref = (y_ref.clone() * r).sum().backward();
    for (what, got, want) in [
        ("y", host(y), host(y_ref)),
        (
            "∂x",
            host(x.grad(&grads).unwrap()),
            host(x_ref.grad(&grads_ref).unwrap()),
        ),
        (
            "∂W",
            host(w.grad(&grads).unwrap()),
            host(w_ref.grad(&grads_ref).unwrap()),
        ),
    ] {
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{what} differs from Burn's matmul by {diff}");
    }
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
