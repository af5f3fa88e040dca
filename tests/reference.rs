//! The batched dispatch against a naive per-token reference written here on the host:
//! per token, softmax the router logits, pick the top-k experts, claim capacity slots in priority
//! order (all first choices in token order, then all second choices), run the chosen experts'
//! FFNs on plain vectors and weight them by the gates.

mod common;

use common::*;
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

/// Host copy of a `SwitchFeedForward`'s weights.
struct HostMoe {
    e: usize,
    d: usize,
    f: usize,
    router: Vec<f32>, // [d, E]
    w_in: Vec<f32>,   // [E, d, f]
    w_out: Vec<f32>,  // [E, f, d]
    b_in: Option<Vec<f32>>,
    b_out: Option<Vec<f32>>,
}

impl HostMoe {
    fn read(m: &SwitchFeedForward<B>) -> Self {
        let [e, d, f] = m.experts.w_in.shape().dims::<3>();
        Self {
            e,
            d,
            f,
            router: host(m.router.gate.weight.val()),
            w_in: host(m.experts.w_in.val()),
            w_out: host(m.experts.w_out.val()),
            b_in: m.experts.b_in.as_ref().map(|b| host(b.val())),
            b_out: m.experts.b_out.as_ref().map(|b| host(b.val())),
        }
    }

    fn ffn(&self, e: usize, x: &[f32]) -> Vec<f64> {
        let (d, f) = (self.d, self.f);
        let mut h = vec![0f64; f];
        for (j, hj) in h.iter_mut().enumerate() {
            let mut s = self.b_in.as_ref().map_or(0.0, |b| b[e * f + j] as f64);
            for (i, xi) in x.iter().enumerate() {
                s += *xi as f64 * self.w_in[(e * d + i) * f + j] as f64;
            }
            *hj = s.max(0.0); // ReLU
        }
        (0..d)
            .map(|o| {
                let mut s = self.b_out.as_ref().map_or(0.0, |b| b[e * d + o] as f64);
                for (j, hj) in h.iter().enumerate() {
                    s += hj * self.w_out[(e * f + j) * d + o] as f64;
                }
                s
            })
            .collect()
    }

    /// Returns the outputs `[T·d]` and the number of dropped (token, choice) assignments.
    fn forward(
        &self,
        x: &[f32],
        real: &[bool],
        k: usize,
        capacity: usize,
        normalize: bool,
    ) -> (Vec<f32>, usize) {
        let (d, e) = (self.d, self.e);
        let t = real.len();
        // Route every token.
        let mut choices = vec![]; // per token: Vec<(expert, gate)>
        for tok in 0..t {
            let xt = &x[tok * d..(tok + 1) * d];
            let logits: Vec<f64> = (0..e)
                .map(|j| {
                    (0..d)
                        .map(|i| xt[i] as f64 * self.router[i * e + j] as f64)
                        .sum()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            let probs: Vec<f64> = logits.iter().map(|l| (l - m).exp() / z).collect();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|a, b| probs[*b].partial_cmp(&probs[*a]).unwrap().then(a.cmp(b)));
            let mut top: Vec<(usize, f64)> = order[..k].iter().map(|&j| (j, probs[j])).collect();
            if normalize && k > 1 {
                let s: f64 = top.iter().map(|c| c.1).sum();
                top.iter_mut().for_each(|c| c.1 /= s);
            }
            choices.push(top);
        }
        // Claim slots: choice rank first, then token order.
        let mut load = vec![0usize; e];
        let mut kept = vec![vec![false; k]; t];
        let mut dropped = 0;
        for j in 0..k {
            for tok in 0..t {
                if !real[tok] {
                    continue;
                }
                let ex = choices[tok][j].0;
                if load[ex] < capacity {
                    load[ex] += 1;
                    kept[tok][j] = true;
                } else {
                    dropped += 1;
                }
            }
        }
        let mut y = vec![0f32; t * d];
        for tok in 0..t {
            let mut acc = vec![0f64; d];
            for j in 0..k {
                if kept[tok][j] {
                    let (ex, gate) = choices[tok][j];
                    let out = self.ffn(ex, &x[tok * d..(tok + 1) * d]);
                    acc.iter_mut().zip(out).for_each(|(a, o)| *a += gate * o);
                }
            }
            y[tok * d..(tok + 1) * d]
                .iter_mut()
                .zip(acc)
                .for_each(|(yy, a)| *yy = a as f32);
        }
        (y, dropped)
    }
}

fn case(e: usize, k: usize, capacity_factor: f64, bias: bool, pad: bool, seed: u64) {
    let device = device();
    let (batch, seq, d, f) = (3, 7, 8, 16);
    let t = batch * seq;
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let mut moe = SwitchFeedForwardConfig::new(d, f, e)
        .with_top_k(k)
        .with_capacity_factor(capacity_factor)
        .with_eval_capacity_factor(capacity_factor)
        .with_bias(bias)
        .with_init_scale(1.0)
        .init::<B>(&device);
    let mut rng = Rng::new(seed);
    if bias {
        // Non-zero biases so that they are exercised.
        moe.experts.b_in = Some(burn::module::Param::from_tensor(tensor(
            rng.normals(e * f, 0.1),
            [e, f],
            &device,
        )));
        moe.experts.b_out = Some(burn::module::Param::from_tensor(tensor(
            rng.normals(e * d, 0.1),
            [e, d],
            &device,
        )));
    }
    let x = rng.normals(t * d, 1.0);
    let real: Vec<bool> = (0..t).map(|i| !pad || i % 5 != 3).collect();
    let mask = bool_tensor::<B, 2>(real.iter().map(|r| !r).collect(), [batch, seq], &device);

    let (y, stats) = moe.forward(tensor(x.clone(), [batch, seq, d], &device), Some(mask));

    // Capacity by the paper's formula, computed here: ceil(cf * T * k / E), within [1, T].
    let capacity = ((capacity_factor * (t * k) as f64 / e as f64).ceil() as usize).clamp(1, t);
    let reference = HostMoe::read(&moe);
    let (expected, dropped) = reference.forward(&x, &real, k, capacity, true);
    let got = host(y);
    let diff = max_abs_diff(&got, &expected);
    assert!(
        diff <= 1e-5,
        "E={e} k={k} cf={capacity_factor}: max abs diff {diff}"
    );

    let n_real = real.iter().filter(|r| **r).count();
    let dropped_fraction = host(stats.dropped_fraction)[0];
    let want = dropped as f32 / (k * n_real) as f32;
    assert!(
        (dropped_fraction - want).abs() < 1e-6,
        "dropped fraction {dropped_fraction} != {want}"
    );
    if capacity_factor < 1.0 {
        assert!(dropped > 0, "case meant to drop tokens dropped none");
    }
}

#[test]
fn top1_matches_reference_without_drops() {
    for (e, seed) in [(1, 1), (2, 2), (4, 3), (8, 4)] {
        case(e, 1, e as f64, false, false, seed);
    }
}

#[test]
fn top1_matches_reference_with_drops() {
    for (e, seed) in [(2, 5), (4, 6), (8, 7)] {
        case(e, 1, 0.5, false, false, seed);
        case(e, 1, 1.0, true, true, seed + 100);
    }
}

#[test]
fn top2_matches_reference_without_drops() {
    for (e, seed) in [(2, 8), (4, 9), (8, 10)] {
        case(e, 2, e as f64, true, true, seed);
    }
}

#[test]
fn top2_matches_reference_with_drops() {
    for (e, seed) in [(3, 11), (4, 12), (8, 13)] {
        case(e, 2, 0.6, false, false, seed);
        case(e, 2, 1.0, true, true, seed + 100);
    }
}

#[test]
fn top_k_equal_to_num_experts() {
    case(3, 3, 3.0, false, true, 14);
}

#[test]
fn dropless_drops_nothing_and_matches_reference() {
    let device = device();
    let (batch, seq, d, f, e) = (2, 8, 4, 8, 4);
    let t = batch * seq;
    let moe = SwitchFeedForwardConfig::new(d, f, e)
        .with_dropless(true)
        .with_capacity_factor(0.1)
        .with_eval_capacity_factor(0.1)
        .with_init_scale(1.0)
        .init::<B>(&device);
    // Positive inputs and a router column that dominates: every token picks expert 2.
    let mut router = vec![0.0f32; d * e];
    for i in 0..d {
        router[i * e + 2] = 3.0;
    }
    let mut moe = moe;
    moe.router.gate.weight = burn::module::Param::from_tensor(tensor(router, [d, e], &device));
    let mut rng = Rng::new(15);
    let x: Vec<f32> = (0..t * d).map(|_| 0.5 + rng.uniform() as f32).collect();
    let (y, stats) = moe.forward(tensor(x.clone(), [batch, seq, d], &device), None);
    let reference = HostMoe::read(&moe);
    let (expected, dropped) = reference.forward(&x, &vec![true; t], 1, t, true);
    assert_eq!(dropped, 0);
    assert!(max_abs_diff(&host(y), &expected) <= 1e-5);
    assert_eq!(host(stats.dropped_fraction), vec![0.0]);
    assert_eq!(host(stats.tokens_per_expert), vec![0.0, 0.0, t as f32, 0.0]);
}

#[test]
fn forward_is_deterministic() {
    let device = device();
    let moe = SwitchFeedForwardConfig::new(8, 16, 4)
        .with_top_k(2)
        .with_capacity_factor(0.7)
        .with_eval_capacity_factor(0.7)
        .init::<B>(&device);
    let x = tensor::<B, 3>(Rng::new(16).normals(2 * 9 * 8, 1.0), [2, 9, 8], &device);
    let (a, _) = moe.forward(x.clone(), None);
    let (b, _) = moe.forward(x, None);
    assert_eq!(host(a), host(b));
}
