//! The batched dispatch against a naive per-token reference written here on the host:
//! per token, score the router logits (softmax or sigmoid), pick the top-k experts by score plus
//! the selection bias, claim capacity slots in priority order (position: all first choices in
//! token order, then all second choices; probability: each expert keeps its most probable
//! assignments), or let each expert pick its top-C tokens (expert choice); run the chosen
//! experts' FFNs on plain vectors, weight them by the unbiased gates, and add the shared experts.
//! After Switch: a router bias on the logits, DeepSeek-V3's group-limited selection and routed
//! scaling, a renormalised top-1 gate, forced (round-robin) routing, and gpt-oss's clamped SwiGLU
//! with biases on every projection.

mod common;

use burn::module::{Param, RunningState};
use burn::tensor::Tensor;
use common::*;
use switch_moe::{
    DropPolicy, RouterScore, RoutingMode, SwitchFeedForward, SwitchFeedForwardConfig,
};

/// Host copy of a stack of expert FFNs.
struct HostFfn {
    d: usize,
    f: usize,
    w_in: Vec<f32>,  // [E, d, f]
    w_out: Vec<f32>, // [E, f, d]
    b_in: Option<Vec<f32>>,
    b_out: Option<Vec<f32>>,
    w_up: Option<Vec<f32>>, // [E, d, f], gated (SwiGLU) experts
    b_up: Option<Vec<f32>>, // [E, f]
    /// gpt-oss's clamped SwiGLU: (alpha, limit).
    clamp: Option<(f64, f64)>,
}

impl HostFfn {
    fn read(x: &switch_moe::Experts<B>) -> Self {
        let [_, d, f] = x.w_in.shape().dims::<3>();
        Self {
            d,
            f,
            w_in: host(x.w_in.val()),
            w_out: host(x.w_out.val()),
            b_in: x.b_in.as_ref().map(|b| host(b.val())),
            b_out: x.b_out.as_ref().map(|b| host(b.val())),
            w_up: x.w_up.as_ref().map(|w| host(w.val())),
            b_up: x.b_up.as_ref().map(|b| host(b.val())),
            clamp: match x.activation {
                switch_moe::ExpertActivation::ClampedSwiGlu { alpha, limit } => {
                    Some((alpha, limit))
                }
                _ => None,
            },
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
            *hj = match &self.w_up {
                None => s.max(0.0), // ReLU
                Some(up) => {
                    let u: f64 = self.b_up.as_ref().map_or(0.0, |b| b[e * f + j] as f64)
                        + (0..d)
                            .map(|i| x[i] as f64 * up[(e * d + i) * f + j] as f64)
                            .sum::<f64>();
                    match self.clamp {
                        // SwiGLU: SiLU(x·W₁) · (x·W₃)
                        None => s / (1.0 + (-s).exp()) * u,
                        // gpt-oss: g = min(s, l); (clamp(u, ±l) + 1) · g · σ(α g)
                        Some((alpha, limit)) => {
                            let g = s.min(limit);
                            (u.clamp(-limit, limit) + 1.0) * g / (1.0 + (-alpha * g).exp())
                        }
                    }
                }
            };
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
}

/// How the reference routes.
#[derive(Clone)]
struct Opts {
    k: usize,
    /// Slots per expert (token choice) or tokens per expert (expert choice).
    capacity: usize,
    normalize: bool,
    sigmoid: bool,
    /// Selection bias per expert.
    bias: Option<Vec<f64>>,
    probability_policy: bool,
    expert_choice: bool,
    /// DeepSeek-V3's group limit: (groups, groups kept).
    groups: Option<(usize, usize)>,
    /// Routed scaling factor on the gates.
    scaling: f64,
    /// Renormalise a top-1 gate too.
    normalize_top1: bool,
    /// Token t's j-th choice is expert (t + j) mod E.
    round_robin: bool,
}

impl Opts {
    fn top(k: usize, capacity: usize) -> Self {
        Self {
            k,
            capacity,
            normalize: true,
            sigmoid: false,
            bias: None,
            probability_policy: false,
            expert_choice: false,
            groups: None,
            scaling: 1.0,
            normalize_top1: false,
            round_robin: false,
        }
    }
}

/// Host copy of a `SwitchFeedForward`'s weights.
struct HostMoe {
    e: usize,
    d: usize,
    router: Vec<f32>,              // [d, E]
    router_bias: Option<Vec<f32>>, // [E]
    experts: HostFfn,
    shared: Option<(HostFfn, usize, Option<Vec<f32>>)>, // FFNs, n, gate [d]
}

impl HostMoe {
    fn read(m: &SwitchFeedForward<B>) -> Self {
        let [e, d, _] = m.experts.w_in.shape().dims::<3>();
        Self {
            e,
            d,
            router: host(m.router.gate.weight.val()),
            router_bias: m.router.gate.bias.as_ref().map(|b| host(b.val())),
            experts: HostFfn::read(&m.experts),
            shared: m.shared.as_ref().map(|s| {
                (
                    HostFfn::read(&s.experts),
                    s.experts.num_experts(),
                    s.gate.as_ref().map(|g| host(g.weight.val())),
                )
            }),
        }
    }

    /// Per token: (scores used for the gates, probabilities for expert choice), both `[E]`.
    fn scores(&self, xt: &[f32], sigmoid: bool) -> (Vec<f64>, Vec<f64>) {
        let (d, e) = (self.d, self.e);
        let logits: Vec<f64> = (0..e)
            .map(|j| {
                self.router_bias.as_ref().map_or(0.0, |b| b[j] as f64)
                    + (0..d)
                        .map(|i| xt[i] as f64 * self.router[i * e + j] as f64)
                        .sum::<f64>()
            })
            .collect();
        if sigmoid {
            let s: Vec<f64> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
            let sum: f64 = s.iter().sum();
            let p = s.iter().map(|v| v / sum).collect();
            (s, p)
        } else {
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            let p: Vec<f64> = logits.iter().map(|l| (l - m).exp() / z).collect();
            (p.clone(), p)
        }
    }

    /// Returns the outputs `[T·d]`, the number of dropped (token, choice) assignments, and per
    /// token its first-choice (expert choice: most probable) expert and how many experts
    /// processed it.
    #[allow(clippy::needless_range_loop)] // index loops read closest to the papers' sums
    fn forward(
        &self,
        x: &[f32],
        real: &[bool],
        o: &Opts,
    ) -> (Vec<f32>, usize, Vec<(usize, usize)>) {
        let (d, e) = (self.d, self.e);
        let t = real.len();
        let mut acc = vec![vec![0f64; d]; t];
        let mut dropped = 0;
        let mut per_token = vec![(0usize, 0usize); t];
        if o.expert_choice {
            let probs: Vec<Vec<f64>> = (0..t)
                .map(|tok| self.scores(&x[tok * d..(tok + 1) * d], o.sigmoid).1)
                .collect();
            for (tok, p) in probs.iter().enumerate() {
                per_token[tok].0 = (0..e).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            }
            for ex in 0..e {
                let mut order: Vec<usize> = (0..t).filter(|tok| real[*tok]).collect();
                order.sort_by(|a, b| probs[*b][ex].partial_cmp(&probs[*a][ex]).unwrap());
                for &tok in order.iter().take(o.capacity) {
                    per_token[tok].1 += 1;
                    let out = self.experts.ffn(ex, &x[tok * d..(tok + 1) * d]);
                    let gate = probs[tok][ex];
                    acc[tok]
                        .iter_mut()
                        .zip(out)
                        .for_each(|(a, v)| *a += gate * v);
                }
            }
        } else {
            // Route every token: select by score + bias, gate by the unbiased score.
            let mut choices = vec![]; // per token: Vec<(expert, gate)>
            for tok in 0..t {
                let (s, _) = self.scores(&x[tok * d..(tok + 1) * d], o.sigmoid);
                let mut sel: Vec<f64> = (0..e)
                    .map(|j| s[j] + o.bias.as_ref().map_or(0.0, |b| b[j]))
                    .collect();
                if let Some((groups, keep)) = o.groups {
                    limit_to_groups(&mut sel, groups, keep);
                }
                let chosen: Vec<usize> = if o.round_robin {
                    (0..o.k).map(|j| (tok + j) % e).collect()
                } else {
                    let mut order: Vec<usize> = (0..e).collect();
                    order.sort_by(|a, b| sel[*b].partial_cmp(&sel[*a]).unwrap().then(a.cmp(b)));
                    order[..o.k].to_vec()
                };
                let mut top: Vec<(usize, f64)> = chosen.iter().map(|&j| (j, s[j])).collect();
                if o.normalize && (o.k > 1 || o.normalize_top1) {
                    let sum: f64 = top.iter().map(|c| c.1).sum();
                    let eps = if o.sigmoid { 1e-20 } else { 0.0 };
                    top.iter_mut().for_each(|c| c.1 /= sum + eps);
                }
                top.iter_mut().for_each(|c| c.1 *= o.scaling);
                choices.push(top);
            }
            // Claim slots.
            let mut kept = vec![vec![false; o.k]; t];
            if o.probability_policy {
                for ex in 0..e {
                    let mut mine: Vec<(usize, usize)> = (0..o.k)
                        .flat_map(|j| (0..t).map(move |tok| (tok, j)))
                        .filter(|(tok, j)| real[*tok] && choices[*tok][*j].0 == ex)
                        .collect();
                    mine.sort_by(|a, b| {
                        choices[b.0][b.1]
                            .1
                            .partial_cmp(&choices[a.0][a.1].1)
                            .unwrap()
                    });
                    for (rank, (tok, j)) in mine.into_iter().enumerate() {
                        if rank < o.capacity {
                            kept[tok][j] = true;
                        } else {
                            dropped += 1;
                        }
                    }
                }
            } else {
                let mut load = vec![0usize; e];
                for j in 0..o.k {
                    for tok in 0..t {
                        if !real[tok] {
                            continue;
                        }
                        let ex = choices[tok][j].0;
                        if load[ex] < o.capacity {
                            load[ex] += 1;
                            kept[tok][j] = true;
                        } else {
                            dropped += 1;
                        }
                    }
                }
            }
            for tok in 0..t {
                per_token[tok] = (choices[tok][0].0, kept[tok].iter().filter(|k| **k).count());
                for j in 0..o.k {
                    if kept[tok][j] {
                        let (ex, gate) = choices[tok][j];
                        let out = self.experts.ffn(ex, &x[tok * d..(tok + 1) * d]);
                        acc[tok]
                            .iter_mut()
                            .zip(out)
                            .for_each(|(a, v)| *a += gate * v);
                    }
                }
            }
        }
        if let Some((ffn, n, gate)) = &self.shared {
            for tok in (0..t).filter(|tok| real[*tok]) {
                let xt = &x[tok * d..(tok + 1) * d];
                let scale = gate.as_ref().map_or(1.0, |w| {
                    let z: f64 = (0..d).map(|i| xt[i] as f64 * w[i] as f64).sum();
                    1.0 / (1.0 + (-z).exp())
                });
                for s in 0..*n {
                    let out = ffn.ffn(s, xt);
                    acc[tok]
                        .iter_mut()
                        .zip(out)
                        .for_each(|(a, v)| *a += scale * v);
                }
            }
        }
        (
            acc.into_iter().flatten().map(|v| v as f32).collect(),
            dropped,
            per_token,
        )
    }
}

/// DeepSeek-V3's group limit on one token's selection scores: each group of E/groups experts is
/// scored by the sum of its two largest scores; the experts outside the `keep` best groups get 0
/// (ties between groups go to the lower group).
fn limit_to_groups(sel: &mut [f64], groups: usize, keep: usize) {
    let per = sel.len() / groups;
    let scores: Vec<f64> = (0..groups)
        .map(|g| {
            let mut v = sel[g * per..(g + 1) * per].to_vec();
            v.sort_by(|a, b| b.partial_cmp(a).unwrap());
            v[0] + v[1]
        })
        .collect();
    let mut order: Vec<usize> = (0..groups).collect();
    order.sort_by(|a, b| scores[*b].partial_cmp(&scores[*a]).unwrap().then(a.cmp(b)));
    for g in order[keep..].iter() {
        sel[g * per..(g + 1) * per]
            .iter_mut()
            .for_each(|v| *v = 0.0);
    }
}

/// A block whose biases are non-zero so that they are exercised.
fn randomize_biases(moe: &mut SwitchFeedForward<B>, rng: &mut Rng) {
    let device = device();
    let fill = |n: usize, shape: [usize; 2], rng: &mut Rng| {
        Some(Param::from_tensor(tensor(
            rng.normals(n, 0.1),
            shape,
            &device,
        )))
    };
    let [e, d, f] = moe.experts.w_in.shape().dims::<3>();
    moe.experts.b_in = fill(e * f, [e, f], rng);
    moe.experts.b_out = fill(e * d, [e, d], rng);
    if moe.experts.b_up.is_some() {
        moe.experts.b_up = fill(e * f, [e, f], rng);
    }
    if moe.router.gate.bias.is_some() {
        moe.router.gate.bias = Some(Param::from_tensor(tensor(
            rng.normals(e, 0.5),
            [e],
            &device,
        )));
    }
}

fn case(e: usize, k: usize, capacity_factor: f64, bias: bool, pad: bool, seed: u64) {
    option_case(e, k, capacity_factor, bias, pad, seed, |c| c, |_| {}, |o| o);
}

/// One comparison of the batched block against the reference: `configure` sets the options on
/// the config, `prepare` edits the built block (e.g. sets a bias), `opts` the reference's options.
#[allow(clippy::too_many_arguments)]
fn option_case(
    e: usize,
    k: usize,
    capacity_factor: f64,
    bias: bool,
    pad: bool,
    seed: u64,
    configure: impl Fn(SwitchFeedForwardConfig) -> SwitchFeedForwardConfig,
    prepare: impl Fn(&mut SwitchFeedForward<B>),
    opts: impl Fn(Opts) -> Opts,
) -> (usize, switch_moe::MoeStats<B>) {
    let device = device();
    let (batch, seq, d, f) = (3, 7, 8, 16);
    let t = batch * seq;
    <B as burn::tensor::backend::Backend>::seed(&device, seed);
    let config = configure(
        SwitchFeedForwardConfig::new(d, f, e)
            .with_top_k(k)
            .with_capacity_factor(capacity_factor)
            .with_eval_capacity_factor(capacity_factor)
            .with_bias(bias)
            .with_init_scale(1.0),
    );
    let mut moe = config.init::<B>(&device);
    let mut rng = Rng::new(seed);
    if bias {
        randomize_biases(&mut moe, &mut rng);
    }
    prepare(&mut moe);
    let x = rng.normals(t * d, 1.0);
    let real: Vec<bool> = (0..t).map(|i| !pad || i % 5 != 3).collect();
    let mask = bool_tensor::<B, 2>(real.iter().map(|r| !r).collect(), [batch, seq], &device);

    let (y, stats) = moe.forward(tensor(x.clone(), [batch, seq, d], &device), Some(mask));

    // Capacity by the papers' formulas, computed here: ceil(cf · T · k / E) for token choice,
    // ceil(cf · T / E) for expert choice, within [1, T].
    let expert_choice = config.routing == RoutingMode::ExpertChoice;
    let per_expert = if expert_choice { t } else { t * k };
    let capacity = ((capacity_factor * per_expert as f64 / e as f64).ceil() as usize).clamp(1, t);
    let reference = HostMoe::read(&moe);
    let o = opts(Opts::top(k, capacity));
    let (expected, dropped, per_token) = reference.forward(&x, &real, &o);
    let got = host(y);
    // The per-token record: first choice (real tokens) and experts used (0 for padding).
    let first = host_int(stats.token_expert.clone());
    let used = host_int(stats.token_experts_used.clone());
    for (tok, &(want_first, want_used)) in per_token.iter().enumerate() {
        if real[tok] {
            assert_eq!(first[tok], want_first as i64, "token {tok}: first choice");
        }
        assert_eq!(used[tok], want_used as i64, "token {tok}: experts used");
    }
    let diff = max_abs_diff(&got, &expected);
    assert!(
        diff <= 1e-5,
        "E={e} k={k} cf={capacity_factor}: max abs diff {diff}"
    );
    for (tok, r) in real.iter().enumerate() {
        if !r {
            assert!(
                got[tok * d..(tok + 1) * d].iter().all(|v| *v == 0.0),
                "padding row {tok}"
            );
        }
    }

    if !expert_choice {
        let n_real = real.iter().filter(|r| **r).count();
        let dropped_fraction = host(stats.dropped_fraction.clone())[0];
        let want = dropped as f32 / (k * n_real) as f32;
        assert!(
            (dropped_fraction - want).abs() < 1e-6,
            "dropped fraction {dropped_fraction} != {want}"
        );
        if capacity_factor < 1.0 {
            assert!(dropped > 0, "case meant to drop tokens dropped none");
        }
    }
    (capacity, stats)
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
    let (expected, dropped, _) = reference.forward(&x, &vec![true; t], &Opts::top(1, t));
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

#[test]
fn sigmoid_scores_match_reference() {
    let sigmoid = |c: SwitchFeedForwardConfig| c.with_router_score(RouterScore::Sigmoid);
    let opts = |o: Opts| Opts { sigmoid: true, ..o };
    for (e, k, cf, seed) in [
        (4, 1, 4.0, 20),
        (4, 1, 0.6, 21),
        (8, 2, 8.0, 22),
        (4, 2, 0.6, 23),
    ] {
        option_case(e, k, cf, true, true, seed, sigmoid, |_| {}, opts);
    }
}

/// Installs a fixed selection bias in the router (as if trained) and returns it.
fn with_bias(bias: Vec<f32>) -> impl Fn(&mut SwitchFeedForward<B>) {
    move |moe: &mut SwitchFeedForward<B>| {
        let n = bias.len();
        let state =
            Tensor::<B, 1>::from_data(burn::tensor::TensorData::new(bias.clone(), [n]), &device());
        moe.router.expert_bias = Some(RunningState::new(state));
    }
}

#[test]
fn biased_selection_with_unbiased_gates_matches_reference() {
    // Large enough to change many selections; the reference gates with the unbiased scores, so
    // a bias leaking into the gates makes the outputs differ.
    let bias = vec![0.3f32, -0.2, 0.1, -0.2];
    let configure = |c: SwitchFeedForwardConfig| c.with_expert_bias_rate(1e-3);
    let host_bias: Vec<f64> = bias.iter().map(|b| *b as f64).collect();
    for (k, cf, score, seed) in [
        (1, 4.0, RouterScore::Softmax, 30),
        (2, 0.7, RouterScore::Softmax, 31),
        (1, 0.7, RouterScore::Sigmoid, 32),
        (2, 4.0, RouterScore::Sigmoid, 33),
    ] {
        let sigmoid = score == RouterScore::Sigmoid;
        option_case(
            4,
            k,
            cf,
            false,
            true,
            seed,
            |c| configure(c).with_router_score(score.clone()),
            with_bias(bias.clone()),
            |o| Opts {
                bias: Some(host_bias.clone()),
                sigmoid,
                ..o
            },
        );
    }
}

#[test]
fn probability_drop_policy_keeps_the_most_probable_assignments() {
    let configure = |c: SwitchFeedForwardConfig| c.with_drop_policy(DropPolicy::Probability);
    let opts = |o: Opts| Opts {
        probability_policy: true,
        ..o
    };
    for (e, k, cf, bias, seed) in [
        (4, 1, 0.5, false, 40),
        (8, 1, 1.0, true, 41),
        (4, 2, 0.6, true, 42),
        (3, 2, 0.8, false, 43),
        (4, 1, 4.0, false, 44), // no drops: the same as the position policy
    ] {
        option_case(e, k, cf, bias, true, seed, configure, |_| {}, opts);
    }
}

#[test]
fn expert_choice_matches_reference_and_fills_every_expert() {
    let configure = |c: SwitchFeedForwardConfig| c.with_routing(RoutingMode::ExpertChoice);
    let opts = |o: Opts| Opts {
        expert_choice: true,
        ..o
    };
    for (e, cf, pad, seed) in [(4, 1.0, false, 50), (8, 2.0, true, 51), (3, 0.5, true, 52)] {
        let (c, stats) = option_case(e, 1, cf, true, pad, seed, configure, |_| {}, opts);
        // T·cf/E ≤ T real tokens: every expert takes exactly C tokens.
        assert_eq!(host(stats.tokens_per_expert.clone()), vec![c as f32; e]);
        assert_eq!(host(stats.dropped_fraction), vec![0.0]);
    }
    // C = T: every expert takes every real token, so none is skipped.
    let (_, stats) = option_case(4, 1, 4.0, false, true, 53, configure, |_| {}, opts);
    assert_eq!(host(stats.skipped_fraction), vec![0.0]);
    // Sigmoid scores work with expert choice too.
    option_case(
        4,
        1,
        1.0,
        false,
        false,
        54,
        |c| configure(c).with_router_score(RouterScore::Sigmoid),
        |_| {},
        |o| Opts {
            sigmoid: true,
            ..opts(o)
        },
    );
}

#[test]
fn shared_experts_with_and_without_gate_match_reference() {
    for (n, gate, k, cf, seed) in [
        (1, false, 1, 4.0, 60),
        (2, true, 2, 0.6, 61),
        (1, true, 1, 0.5, 62),
    ] {
        option_case(
            4,
            k,
            cf,
            true,
            true,
            seed,
            |c| c.with_num_shared_experts(n).with_shared_gate(gate),
            |_| {},
            |o| o,
        );
    }
}

#[test]
fn gated_swiglu_experts_match_reference() {
    // Routed and shared (gated) experts both SwiGLU, top-1 and top-2, with and without drops.
    for (k, cf, shared, seed) in [(1, 4.0, 0, 80), (2, 0.75, 1, 81), (2, 4.0, 2, 82)] {
        option_case(
            4,
            k,
            cf,
            false,
            true,
            seed,
            |c| {
                c.with_swiglu()
                    .with_num_shared_experts(shared)
                    .with_shared_gate(shared > 0)
            },
            |m| assert!(m.experts.w_up.is_some(), "gated experts without W₃"),
            |o| o,
        );
    }
}

#[test]
fn skipped_fraction_counts_tokens_with_every_assignment_dropped() {
    // cf 0.25 with top-1 over E = 2: C = ⌈0.25·21/2⌉ = 3 slots per expert, so at most 6 of the 21
    // tokens are processed and at least 15 skip the experts entirely.
    let (_, stats) = option_case(2, 1, 0.25, false, false, 70, |c| c, |_| {}, |o| o);
    let dropped = host(stats.dropped_fraction)[0];
    let skipped = host(stats.skipped_fraction)[0];
    assert!(skipped >= 15.0 / 21.0 - 1e-6, "skipped {skipped}");
    assert!((skipped - dropped).abs() < 1e-6, "top-1: skipped = dropped");
}

#[test]
fn group_limited_selection_with_scaling_matches_reference() {
    // DeepSeek-V3's routing: sigmoid scores, a fixed selection bias, 4 groups of 2 of which 2
    // are kept, gates normalised over the k and scaled by 2.5; with and without drops.
    let bias = vec![0.2f32, -0.1, 0.05, 0.3, -0.2, 0.1, 0.0, -0.05];
    let host_bias: Vec<f64> = bias.iter().map(|b| *b as f64).collect();
    for (k, cf, seed) in [(2, 8.0, 90), (2, 0.7, 91), (3, 8.0, 92), (1, 0.6, 93)] {
        option_case(
            8,
            k,
            cf,
            false,
            true,
            seed,
            |c| {
                c.with_router_score(RouterScore::Sigmoid)
                    .with_selection_bias(true)
                    .with_n_group(4)
                    .with_topk_group(2)
                    .with_routed_scaling_factor(2.5)
            },
            with_bias(bias.clone()),
            |o| Opts {
                sigmoid: true,
                bias: Some(host_bias.clone()),
                groups: Some((4, 2)),
                scaling: 2.5,
                ..o
            },
        );
    }
}

#[test]
fn router_bias_normalised_top1_and_round_robin_match_reference() {
    // A bias on the router logits (gpt-oss), softmax top-2 and top-1 with drops.
    for (k, cf, seed) in [(2, 0.7, 100), (1, 4.0, 101)] {
        option_case(
            4,
            k,
            cf,
            true,
            true,
            seed,
            |c| c.with_router_bias(true),
            |_| {},
            |o| o,
        );
    }
    // A renormalised top-1 gate is exactly 1: the expert's output unweighted.
    option_case(
        4,
        1,
        0.6,
        false,
        true,
        102,
        |c| c.with_normalize_top1(true),
        |_| {},
        |o| Opts {
            normalize_top1: true,
            ..o
        },
    );
    // Forced round-robin routing: balanced by construction; its balance losses are zero.
    for (k, seed) in [(1, 103), (2, 104)] {
        let (_, stats) = option_case(
            4,
            k,
            1.0,
            false,
            true,
            seed,
            |c| c.with_forced_routing(switch_moe::ForcedRouting::RoundRobin),
            |_| {},
            |o| Opts {
                round_robin: true,
                ..o
            },
        );
        assert_eq!(host(stats.aux_loss), vec![0.0]);
        assert_eq!(host(stats.z_loss), vec![0.0]);
    }
}

#[test]
fn clamped_swiglu_experts_with_biases_match_reference() {
    // gpt-oss's experts: biases on gate, up and down, (clamp(u) + 1) · g · σ(1.702 g) with
    // g = min(gate, 7); inputs scaled up so that the clamp is hit.
    for (k, cf, limit, seed) in [(2, 4.0, 7.0, 110), (2, 0.7, 0.5, 111), (1, 4.0, 0.3, 112)] {
        option_case(
            4,
            k,
            cf,
            true,
            true,
            seed,
            |c| {
                c.with_swiglu()
                    .with_glu_clamp(Some(switch_moe::GluClamp::new().with_limit(limit)))
                    .with_router_bias(true)
            },
            |m| {
                assert!(
                    m.experts.b_up.is_some(),
                    "gated experts with biases have b₃"
                )
            },
            |o| o,
        );
    }
}
