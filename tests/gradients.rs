//! Gradients: the router learns through the gates, idle experts get nothing, and the router
//! gradient agrees with finite differences.

mod common;

use burn::module::{AutodiffModule, Param};
use common::*;
use switch_moe::SwitchFeedForward;

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
