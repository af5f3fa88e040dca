//! The MoE layer beside its floor: a dense FFN with the same d_ff (equal active FLOPs for top-1)
//! and the naive loop-over-experts MoE (what HF transformers' SwitchTransformersSparseMLP does),
//! timed in the same run on the selected backend.
//!
//! ```sh
//! cargo bench --bench moe                 # full sweep (ndarray; --features wgpu / tch)
//! cargo bench --bench moe -- --quick      # T = 2048 only, E in {8, 32}, fewer repeats
//! cargo bench --bench moe -- --peer "$(benches/peers/setup.sh | tail -n 1)"   # + PyTorch peer
//! cargo bench --bench moe -- --train      # end-to-end training tokens/s of the default LM
//! cargo bench --bench moe -- --profile 32 # only the MoE's forward+backward, for perf
//! cargo bench --bench moe -- --profile 32 --burn-backward  # the same with Burn's matmul backward
//! cargo bench --bench moe -- --cases 2048:8,8192:128       # chosen top-1 cases (T:E)
//! cargo bench --bench moe -- --options    # each routing option's f+b cost against the default
//! cargo bench --bench moe -- --decode     # generation tokens/s of the cpu-preset LM, both caches
//! ```
//!
//! The program makes no allocator setup call, as a user's crate would not: on burn-ndarray the
//! first block built tunes glibc itself (`backend::keep_freed_memory`); `--system-malloc` sets
//! `SWITCH_MOE_SYSTEM_MALLOC` and so keeps glibc's default (every large buffer a fresh mmap).
//!
//! Every time is a median over repeats after warm-up; every ratio divides two medians of the same
//! run (machines are noisy, runs are not comparable with each other). With `--peer PYTHON`, each
//! case also runs `benches/peers/moe_peer.py` (same shapes, same thread count: the machine's
//! cores, or `$BENCH_THREADS`) right after the Rust timings and prints switch-moe / PyTorch.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module};
use burn::nn::activation::ActivationConfig;
use burn::nn::transformer::{PositionWiseFeedForward, PositionWiseFeedForwardConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use switch_moe::{
    BalanceScope, DropPolicy, ForcedRouting, GluClamp, LmBatch, RouterScore, RoutingMode,
    SwitchEncoderConfig, SwitchFeedForward, SwitchFeedForwardConfig, SwitchLm, SwitchLmConfig,
};

mod common;
use common::{Ad, layer_fb, median, time};
type Inner = <Ad as AutodiffBackend>::InnerBackend;

struct Case {
    tokens: usize,
    d_model: usize,
    d_ff: usize,
    experts: usize,
    top_k: usize,
}

/// The naive MoE: route, read the choices to the host, then per expert gather its tokens, run its
/// FFN and scatter-add the gated result back. Same router, weights and capacity as the batched
/// layer (tokens past an expert's capacity are skipped, first come first served).
fn naive_forward<B: Backend>(
    moe: &SwitchFeedForward<B>,
    x: Tensor<B, 2>,
    capacity: usize,
) -> Tensor<B, 2> {
    let device = x.device();
    let [t, d] = x.dims();
    let routing = moe.router.forward(x.clone());
    let k = moe.router.top_k;
    let ids: Vec<i64> = routing
        .expert_ids
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    let gates = routing.gates.cast(x.dtype()); // [T, k]
    let mut out = Tensor::<B, 2>::zeros([t, d], &device);
    let e_total = moe.num_experts();
    let mut load = vec![0usize; e_total];
    let mut per_expert: Vec<Vec<(i64, usize)>> = vec![Vec::new(); e_total];
    for j in 0..k {
        for tok in 0..t {
            let e = ids[tok * k + j] as usize;
            if load[e] < capacity {
                load[e] += 1;
                per_expert[e].push((tok as i64, j));
            }
        }
    }
    for (e, assigned) in per_expert.iter().enumerate() {
        for j in 0..k {
            let idx: Vec<i64> = assigned.iter().filter(|a| a.1 == j).map(|a| a.0).collect();
            if idx.is_empty() {
                continue;
            }
            let n = idx.len();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &device);
            let xe = x.clone().select(0, idx.clone()); // [n, d]
            let w_in = moe
                .experts
                .w_in
                .val()
                .slice(e..e + 1)
                .reshape([d, moe.experts.w_in.dims()[2]]);
            let f = w_in.dims()[1];
            let w_out = moe.experts.w_out.val().slice(e..e + 1).reshape([f, d]);
            let h = moe.experts.activation.forward(xe.matmul(w_in)); // [n, f]
            let g = gates.clone().select(0, idx.clone()).slice([0..n, j..j + 1]); // [n, 1]
            let ye = h.matmul(w_out) * g; // [n, d]
            out = out.select_assign(0, idx, ye, IndexingUpdateOp::Add);
        }
    }
    out
}

/// Times of the PyTorch peer for one case (ms).
struct Peer {
    dense_fb: f64,
    hf_fb: f64,
    grouped_fb: f64,
}

fn run_peer(python: &str, case: &Case, threads: usize, reps: usize) -> Option<Peer> {
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/peers/moe_peer.py"
        ))
        .args(["--json", "--warmup", "1", "--capacity-factor", "1.25"])
        .args(["--tokens", &case.tokens.to_string()])
        .args(["--d-model", &case.d_model.to_string()])
        .args(["--d-ff", &case.d_ff.to_string()])
        .args(["--experts", &case.experts.to_string()])
        .args(["--top-k", &case.top_k.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--reps", &reps.to_string()])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("peer failed: {}", String::from_utf8_lossy(&o.stderr));
            return None;
        }
        Err(e) => {
            eprintln!("cannot run the peer with {python}: {e}");
            return None;
        }
    };
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    Some(Peer {
        dense_fb: v["dense_fb_ms"].as_f64()?,
        hf_fb: v["hf_fb_ms"].as_f64()?,
        grouped_fb: v["grouped_fb_ms"].as_f64()?,
    })
}

fn run_case(case: &Case, warmup: usize, reps: usize, peer: Option<(&str, usize)>) {
    let device = switch_moe::backend::default_device();
    let Case {
        tokens: t,
        d_model: d,
        d_ff: f,
        experts: e,
        top_k: k,
    } = *case;
    // Forward-only (inference) and forward+backward use the same capacity factor 1.25, so that
    // both compare the same FLOPs with the dense FFN (the default eval factor is 2.0).
    let moe_config = SwitchFeedForwardConfig::new(d, f, e)
        .with_top_k(k)
        .with_eval_capacity_factor(1.25)
        .with_expert_dropout(0.0);
    let moe: SwitchFeedForward<Ad> = moe_config.init(&device);
    let dense: PositionWiseFeedForward<Ad> = PositionWiseFeedForwardConfig::new(d, f)
        .with_dropout(0.0)
        .with_activation(ActivationConfig::Relu)
        .init(&device);
    let x_inner = Tensor::<Inner, 3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
    let capacity = moe.capacity(t, true);
    let capacity = match capacity {
        switch_moe::Capacity::Fixed(c) => c,
        switch_moe::Capacity::Dropless => t,
    };

    // Forward (inference backend).
    let moe_i = moe.valid();
    let dense_i = dense.valid();
    let dense_fwd = time(warmup, reps, || {
        let y = dense_i.forward(x_inner.clone());
        Inner::sync(&device).unwrap();
        drop(y);
    });
    let moe_fwd = time(warmup, reps, || {
        let (y, _) = moe_i.forward(x_inner.clone(), None);
        Inner::sync(&device).unwrap();
        drop(y);
    });

    // Forward + backward (autodiff backend, training capacity).
    let x = Tensor::<Ad, 3>::from_inner(x_inner.clone());
    let dense_fb = time(warmup, reps, || {
        let y = dense.forward(x.clone().require_grad());
        let _g = y.sum().backward();
        Ad::sync(&device).unwrap();
    });
    let moe_fb = layer_fb(&moe, &x, warmup, reps);
    // The same layer with Burn's own matmul backward (∂x = ∂y·Wᵀ), for the A/B of the experts'
    // weight-transpose-free backward (src/expert_matmul.rs) in the same run.
    switch_moe::expert_matmul::set_transpose_free_backward(false);
    let plain_fb = layer_fb(&moe, &x, warmup, reps);
    switch_moe::expert_matmul::set_transpose_free_backward(true);
    let dropless = SwitchFeedForward {
        dropless: true,
        ..moe.clone()
    };
    let dropless_fb = layer_fb(&dropless, &x, warmup, reps);
    // The same layer with exactly balanced experts (forced round-robin routing): the speed the
    // layer would have if the router balanced perfectly (random init routes unevenly).
    let mut balanced = moe.clone();
    balanced.router.forced = ForcedRouting::RoundRobin;
    let balanced_fb = layer_fb(&balanced, &x, warmup, reps);
    let x2 = x.clone().reshape([t, d]);
    // The naive loop costs seconds to minutes at large E·T (each expert's scatter-add and its
    // backward touch the whole [T, d] output): one run from E = 32 on, none past E·T = 128·1024.
    let naive_fb = (e * t <= 128 * 1024).then(|| {
        let (w, r) = if e >= 32 { (0, 1) } else { (1, reps.min(3)) };
        time(w, r, || {
            let y = naive_forward(&moe, x2.clone().require_grad(), capacity);
            let _g = y.sum().backward();
            Ad::sync(&device).unwrap();
        })
    });

    // The experts' matmul FLOPs of forward + backward (3 × the forward's 2 matmuls of
    // 2·E·C·d·f each) over the whole layer's time: a lower bound on the matmuls' throughput.
    let expert_flops = 3.0 * 2.0 * 2.0 * (e * capacity) as f64 * d as f64 * f as f64;
    let tflops = expert_flops / (moe_fb * 1e-3) / 1e12;
    let mut row = format!(
        "| {t:>5} | {d}/{f} | {e:>3} | {k} | {dense_fwd:>7.1} | {moe_fwd:>7.1} | {:>5.2} | {dense_fb:>7.1} | {moe_fb:>7.1} | {:>5.2} | {plain_fb:>7.1} | {:>5.2} | {:>5.2} | {:>5.2} | {} | {} | {tflops:>6.3} |",
        moe_fwd / dense_fwd,
        moe_fb / dense_fb,
        plain_fb / dense_fb,
        dropless_fb / dense_fb,
        balanced_fb / dense_fb,
        naive_fb.map_or("—".into(), |n| format!("{n:>7.1}")),
        naive_fb.map_or("—".into(), |n| format!("{:>5.2}", n / moe_fb)),
    );
    if let Some((python, threads)) = peer {
        match run_peer(python, case, threads, reps) {
            Some(p) => row.push_str(&format!(
                " {:>7.1} | {:>7.1} | {:>5.2} | {:>5.2} | {:>5.2} | {:>5.2} |",
                p.dense_fb,
                p.hf_fb,
                p.hf_fb / p.dense_fb,
                dense_fb / p.dense_fb,
                moe_fb / p.hf_fb,
                moe_fb / p.grouped_fb,
            )),
            None => row.push_str(" — | — | — | — | — | — |"),
        }
    }
    println!("{row}");
}

/// Forward + backward of one layer built from `config` on `x`, median ms.
fn moe_fb(config: &SwitchFeedForwardConfig, x: &Tensor<Ad, 3>, reps: usize) -> f64 {
    let moe: SwitchFeedForward<Ad> = config.init(&switch_moe::backend::default_device());
    layer_fb(&moe, x, 1, reps)
}

/// Each routing option's forward + backward against the default layer (top-1 softmax token
/// choice, position drops), T = 2048, d 256 / d_ff 1024, cf 1.25, E = 8 and 64, in one run.
fn options_table(reps: usize) {
    let device = switch_moe::backend::default_device();
    let (t, d, f) = (2048, 256, 1024);
    // 16 sequences of 128 tokens (the sequence scope needs sequences).
    let x = Tensor::<Ad, 3>::random([16, t / 16, d], Distribution::Normal(0.0, 1.0), &device);
    type Variant = (
        &'static str,
        fn(SwitchFeedForwardConfig) -> SwitchFeedForwardConfig,
    );
    let options: [Variant; 17] = [
        ("default (softmax, token choice)", |c| c),
        ("sigmoid scores", |c| {
            c.with_router_score(RouterScore::Sigmoid)
        }),
        ("expert bias u = 1e-3", |c| c.with_expert_bias_rate(1e-3)),
        ("expert choice", |c| {
            c.with_routing(RoutingMode::ExpertChoice)
        }),
        ("1 shared expert", |c| c.with_num_shared_experts(1)),
        ("1 shared expert, gated", |c| {
            c.with_num_shared_experts(1).with_shared_gate(true)
        }),
        ("probability drop policy", |c| {
            c.with_drop_policy(DropPolicy::Probability)
        }),
        ("balance scope: sequence (16 × 128)", |c| {
            c.with_balance_scope(BalanceScope::Sequence)
        }),
        ("balance scope: global (1 device)", |c| {
            c.with_balance_scope(BalanceScope::Global)
        }),
        ("groups 4, best 2 (sigmoid, bias, × 2.5)", |c| {
            c.with_router_score(RouterScore::Sigmoid)
                .with_selection_bias(true)
                .with_n_group(4)
                .with_topk_group(2)
                .with_routed_scaling_factor(2.5)
        }),
        ("router bias", |c| c.with_router_bias(true)),
        ("normalize_top1", |c| c.with_normalize_top1(true)),
        ("SwiGLU experts", |c| c.with_swiglu()),
        ("clamped SwiGLU + biases (gpt-oss)", |c| {
            c.with_swiglu()
                .with_bias(true)
                .with_glu_clamp(Some(GluClamp::new()))
        }),
        ("forced routing: round-robin", |c| {
            c.with_forced_routing(ForcedRouting::RoundRobin)
        }),
        ("forced routing: random", |c| {
            c.with_forced_routing(ForcedRouting::Random)
        }),
        ("replay: recording", |c| c),
    ];
    println!("| option | E = 8 f+b | ÷ default | E = 64 f+b | ÷ default |\n|---|---|---|---|---|");
    let base = |e: usize| SwitchFeedForwardConfig::new(d, f, e).with_expert_dropout(0.0);
    let default = [moe_fb(&base(8), &x, reps), moe_fb(&base(64), &x, reps)];
    for (name, option) in options {
        let ms = [8, 64].map(|e| {
            let layer: SwitchFeedForward<Ad> = option(base(e)).init(&device);
            if name.starts_with("replay") {
                // Every forward reads its experts [T, 1] to the host and keeps them.
                layer.router.replay.start_recording();
            }
            layer_fb(&layer, &x, 1, reps)
        });
        println!(
            "| {name} | {:.1} | {:.2} | {:.1} | {:.2} |",
            ms[0],
            ms[0] / default[0],
            ms[1],
            ms[1] / default[1]
        );
    }
}

/// Only the batched MoE's forward + backward (T = 2048, d 256, d_ff 1024, top-1), `iters` times:
/// for `perf record` / callgrind, so that the profile holds nothing else.
fn profile_moe(experts: usize, iters: usize) {
    let device = switch_moe::backend::default_device();
    let (t, d, f) = (2048, 256, 1024);
    let moe: SwitchFeedForward<Ad> = SwitchFeedForwardConfig::new(d, f, experts)
        .with_expert_dropout(0.0)
        .init(&device);
    let x = Tensor::<Ad, 3>::random([1, t, d], Distribution::Normal(0.0, 1.0), &device);
    let ms = layer_fb(&moe, &x, 1, iters);
    println!("MoE f+b, T {t}, d {d}/{f}, E {experts}: median {ms:.1} ms over {iters}");
}

/// End-to-end training throughput of the default LM config (examples/train.rs, cpu preset):
/// d 128, d_ff 512, 4 layers (2 sparse, E = 8, top-1, cf 1.25), vocab 1024, 32 × 128 tokens per
/// step; forward, backward and an AdamW step on random tokens. Runs twice from the same seed,
/// with Burn's own matmul backward for the experts and with the weight-transpose-free one
/// (src/expert_matmul.rs), and prints both speeds and how far their losses ever differ.
fn train_throughput(steps: usize) {
    let device = switch_moe::backend::default_device();
    let (vocab, seq, batch) = (1024, 128, 32);
    let mut losses: Vec<Vec<f32>> = Vec::new();
    for transpose_free in [false, true] {
        switch_moe::expert_matmul::set_transpose_free_backward(transpose_free);
        Ad::seed(&device, 7);
        let encoder = SwitchEncoderConfig::new(128, 512, 4, 4, 8).with_norm_first(true);
        let mut model: SwitchLm<Ad> = SwitchLmConfig::new(vocab, seq, encoder).init(&device);
        let mut optim = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
            .init::<Ad, SwitchLm<Ad>>();
        let tokens = || {
            Tensor::<Ad, 2, Int>::random(
                [batch, seq],
                Distribution::Uniform(0.0, vocab as f64),
                &device,
            )
        };
        let mut step_ms = Vec::new();
        let mut run_losses = Vec::new();
        for i in 0..steps + 2 {
            let batch = LmBatch {
                inputs: tokens(),
                targets: tokens(),
            };
            Ad::sync(&device).unwrap();
            let start = Instant::now();
            let out = model.forward_step(batch);
            let loss = out.loss.clone();
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
            Ad::sync(&device).unwrap();
            if i >= 2 {
                step_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            run_losses.push(loss.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0]);
        }
        let ms = median(step_ms);
        println!(
            "training, default LM (cpu preset, {:.2} M params), experts' backward {}: median step {ms:.0} ms over {steps} steps = {:.0} tokens/s; last loss {:.6}",
            model.num_params() as f64 / 1e6,
            if transpose_free {
                "transpose-free"
            } else {
                "Burn's matmul"
            },
            (batch * seq) as f64 / (ms / 1e3),
            run_losses.last().copied().unwrap_or(f32::NAN)
        );
        losses.push(run_losses);
    }
    let max_diff = losses[0]
        .iter()
        .zip(&losses[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "max |Δ loss| between the two runs over {} steps: {max_diff:.2e}",
        losses[0].len()
    );
}

/// Decoding speed of the cpu-preset LM (random weights; d 128, d_ff 512, 4 layers of which 2
/// sparse, E = 8, top-1, vocabulary 1024, context 128): `generate_ids` (SwitchLm::decode, new
/// tokens only) against the same loop on the older cached step (`forward_autoregressive_inference`,
/// whole window in, burn-nn's MhaCache), 500 greedy tokens after an 8-token prompt, the context
/// rule of `generate` (restart from the last 64 tokens when 128 are full). Alternates the two
/// `reps` times and prints medians.
fn decode_throughput(reps: usize, length: usize, only_new: bool) -> f64 {
    use switch_moe::generate::{SamplingConfig, generate_ids};
    let device = switch_moe::backend::default_device();
    type I = Inner;
    let encoder = SwitchEncoderConfig::new(128, 512, 4, 4, 8).with_norm_first(true);
    let model: SwitchLm<I> = SwitchLmConfig::new(1024, 128, encoder).init(&device);
    let prompt: Vec<u32> = (0..8).map(|i| (i * 37 % 1024) as u32).collect();
    let config = SamplingConfig {
        length,
        temperature: 1.0,
        top_k: Some(1),
        seed: 0,
    };
    // The older step, under generate's context rule.
    let older = |model: &SwitchLm<I>| -> Vec<u32> {
        let model = model.clone().dropless();
        let mut tokens = prompt.clone();
        let (mut start, keep) = (0, model.max_seq_len / 2);
        let mut cache = model.new_autoregressive_cache();
        for _ in 0..length {
            if tokens.len() - start > model.max_seq_len {
                start = tokens.len() - keep;
                cache = model.new_autoregressive_cache();
            }
            let window: Vec<i64> = tokens[start..].iter().map(|t| *t as i64).collect();
            let n = window.len();
            let input = Tensor::<I, 2, Int>::from_data(TensorData::new(window, [1, n]), &device);
            let logits: Vec<f32> = model
                .forward_autoregressive_inference(input, &mut cache)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap();
            let best = (0..logits.len())
                .max_by(|a, b| logits[*a].total_cmp(&logits[*b]))
                .unwrap();
            tokens.push(best as u32);
        }
        tokens
    };
    let (mut new_s, mut old_s) = (Vec::new(), Vec::new());
    let (mut new_out, mut old_out) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let start = Instant::now();
        new_out = generate_ids(&model, &prompt, &config, &device).unwrap();
        new_s.push(start.elapsed().as_secs_f64());
        if only_new {
            continue; // for a profile of the new path alone
        }
        let start = Instant::now();
        old_out = older(&model);
        old_s.push(start.elapsed().as_secs_f64());
    }
    if only_new {
        let new_s = median(new_s);
        println!(
            "decode: {:.0} tokens/s ({new_s:.3} s)",
            length as f64 / new_s
        );
        return length as f64 / new_s;
    }
    let (new_s, old_s) = (median(new_s), median(old_s));
    println!(
        "decode, cpu-preset LM ({:.2} M params), {length} tokens after an 8-token prompt, median of {reps}: \
         SwitchLm::decode {:.0} tokens/s ({:.3} s), older cached step {:.0} tokens/s ({:.3} s), \
         speed-up {:.2}×; same tokens: {}",
        model.num_params() as f64 / 1e6,
        length as f64 / new_s,
        new_s,
        length as f64 / old_s,
        old_s,
        old_s / new_s,
        new_out == old_out
    );
    length as f64 / new_s
}

/// Windows `[steps, batch, seq + 1]` of a seeded sparse Markov chain over `vocab` tokens (each
/// token has 4 successors drawn once), so that a model's loss can fall below ln V.
fn markov_windows(steps: usize, batch: usize, seq: usize, vocab: usize) -> Vec<u32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let successors: Vec<[u32; 4]> = (0..vocab)
        .map(|_| std::array::from_fn(|_| (next() % vocab as u64) as u32))
        .collect();
    let mut out = Vec::with_capacity(steps * batch * (seq + 1));
    for _ in 0..steps * batch {
        let mut token = (next() % vocab as u64) as u32;
        for _ in 0..=seq {
            out.push(token);
            token = successors[token as usize][(next() % 4) as usize];
        }
    }
    out
}

/// The cpu-preset LM against its PyTorch peer (`benches/peers/lm_peer.py`) in one run: `steps`
/// training steps of both on the same token windows (the preset's AdamW, warm-up and cosine,
/// per-tensor clipping; steps after the third timed), the loss of both at chosen steps, then
/// 500 greedy decoding steps of each (random weights). Prints tokens/s and ours / peer.
fn lm_peer(python: &str, steps: usize, threads: usize) {
    use burn::tensor::ElementConversion;
    use switch_moe::train::{TrainingConfig, WarmupCosineLr};
    let device = switch_moe::backend::default_device();
    let mut config = TrainingConfig::cpu();
    config.model.vocab_size = 1024;
    let (batch, seq, vocab) = (config.batch_size, config.model.max_seq_len, 1024);
    let windows = markov_windows(steps, batch, seq, vocab);
    let path = std::env::temp_dir().join(format!("lm-peer-{}.u32", std::process::id()));
    let bytes: Vec<u8> = windows.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(&path, bytes).expect("write the token windows");

    // Ours: the train program's optimiser and schedule on these windows.
    Ad::seed(&device, 42);
    let mut model: SwitchLm<Ad> = config.model.init(&device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip as f32)))
        .init::<Ad, SwitchLm<Ad>>();
    let warmup = config.warmup_steps.min(steps / 2);
    let schedule = WarmupCosineLr::new(config.lr, config.lr * config.min_lr_ratio, warmup, steps);
    let (mut losses, mut step_ms) = (Vec::new(), Vec::new());
    let w = seq + 1;
    for step in 0..steps {
        let block = &windows[step * batch * w..(step + 1) * batch * w];
        let cut = |from: usize| -> Tensor<Ad, 2, Int> {
            let ids: Vec<i64> = (0..batch)
                .flat_map(|b| {
                    block[b * w + from..b * w + from + seq]
                        .iter()
                        .map(|t| *t as i64)
                })
                .collect();
            Tensor::from_data(TensorData::new(ids, [batch, seq]), &device)
        };
        let batch_in = LmBatch {
            inputs: cut(0),
            targets: cut(1),
        };
        Ad::sync(&device).unwrap();
        let start = Instant::now();
        let out = model.forward_step(batch_in);
        let loss = out.loss.clone();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(schedule.lr_at(step + 1), model, grads);
        Ad::sync(&device).unwrap();
        if step >= 3 {
            step_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        losses.push(loss.into_scalar().elem::<f64>());
    }
    let ours_tps = (batch * seq) as f64 / (median(step_ms) / 1e3);

    // The peer on the same windows.
    let csv = std::env::temp_dir().join(format!("lm-peer-{}.csv", std::process::id()));
    let mut cmd = std::process::Command::new(python);
    cmd.arg("benches/peers/lm_peer.py")
        .arg("train")
        .args([
            "--steps",
            &steps.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args([
            "--tokens",
            path.to_str().unwrap(),
            "--csv",
            csv.to_str().unwrap(),
            "--json",
        ]);
    if !config.model.encoder.layer.norm_first {
        cmd.arg("--post-norm");
    }
    let peer = peer_json(cmd);
    let peer_losses: Vec<f64> = std::fs::read_to_string(&csv)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(2)?.parse().ok()) // step,lr,loss,…
        .collect();
    let peer_tps = peer["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "training, cpu preset ({:.2} M params, {} norm), {steps} steps of {}×{seq} tokens, {threads} threads:",
        model.num_params() as f64 / 1e6,
        if config.model.encoder.layer.norm_first {
            "pre"
        } else {
            "post"
        },
        batch
    );
    println!(
        "  ours ({}) {ours_tps:.0} tokens/s, PyTorch {} eager {peer_tps:.0} tokens/s: ours/peer {:.2}",
        switch_moe::backend::NAME,
        peer["torch"].as_str().unwrap_or("?"),
        ours_tps / peer_tps
    );
    println!("  | step | loss, ours | loss, PyTorch |");
    println!("  |---|---|---|");
    for s in [1, 2, 5, 10, 20, 30, 40, 50, 75, 100]
        .into_iter()
        .filter(|s| *s <= steps)
    {
        let peer_loss = peer_losses.get(s - 1).copied().unwrap_or(f64::NAN);
        println!("  | {s} | {:.4} | {peer_loss:.4} |", losses[s - 1]);
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&csv);

    // Decoding: 500 greedy tokens after an 8-token prompt, random weights, batch 1.
    let ours_decode = decode_throughput(3, 500, true);
    let mut cmd = std::process::Command::new(python);
    cmd.arg("benches/peers/lm_peer.py")
        .arg("decode")
        .args(["--new-tokens", "500", "--prompt-len", "8", "--greedy"])
        .args(["--threads", &threads.to_string(), "--json"]);
    let peer = peer_json(cmd);
    let peer_decode = peer["decode_tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "decode, 500 greedy tokens: ours ({}) {ours_decode:.0} tokens/s, PyTorch {peer_decode:.0} tokens/s: ours/peer {:.2}",
        switch_moe::backend::NAME,
        ours_decode / peer_decode
    );
}

/// Runs a peer command and parses the JSON line it prints last.
fn peer_json(mut cmd: std::process::Command) -> serde_json::Value {
    let out = cmd.output().expect("run the PyTorch peer");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("the PyTorch peer failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(line).expect("the peer's JSON line")
}

/// Per-token cost of a decode step's parts on the cpu-preset sizes (µs, median of 2000 calls).
fn decode_parts() {
    let device = switch_moe::backend::default_device();
    type I = Inner;
    let encoder = SwitchEncoderConfig::new(128, 512, 4, 4, 8).with_norm_first(true);
    let model: SwitchLm<I> = SwitchLmConfig::new(1024, 128, encoder).init(&device);
    let model = model.dropless();
    let layer = match &model.encoder.layers[1] {
        switch_moe::EncoderBlock::Sparse(l) => l.clone(),
        _ => unreachable!(),
    };
    let x2 = Tensor::<I, 2>::random([1, 128], Distribution::Normal(0.0, 1.0), &device);
    let x3 = x2.clone().reshape([1, 1, 128]);
    let us = |f: &mut dyn FnMut()| {
        let mut v = Vec::new();
        for _ in 0..2000 {
            let s = Instant::now();
            f();
            v.push(s.elapsed().as_secs_f64() * 1e6);
        }
        median(v)
    };
    let parts: Vec<(&str, f64)> = vec![
        (
            "moe.forward_few [1, d]",
            us(&mut || drop(layer.moe.forward_few(x2.clone()))),
        ),
        (
            "moe.forward [1, 1, d] (batched)",
            us(&mut || drop(layer.moe.forward(x3.clone(), None))),
        ),
        (
            "router.forward",
            us(&mut || drop(layer.moe.router.forward(x2.clone()))),
        ),
        (
            "norm",
            us(&mut || drop(layer.norm_attn.forward(x3.clone()))),
        ),
        (
            "linear d→d",
            us(&mut || drop(layer.mha.query.forward(x3.clone()))),
        ),
        (
            "logits (norm + head d→V)",
            us(&mut || drop(model.logits(x2.clone()))),
        ),
        ("add [1,1,d]", us(&mut || drop(x3.clone() + x3.clone()))),
        (
            "into_data of [1, V]",
            us(&mut || drop(model.logits(x2.clone()).into_data())),
        ),
    ];
    for (name, t) in parts {
        println!("{name}: {t:.1} µs");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // No allocator setup here, as in a user's crate: the first block built on burn-ndarray tunes
    // glibc itself (backend::keep_freed_memory); --system-malloc opts out the way a user would.
    let tuned_malloc = !args.iter().any(|a| a == "--system-malloc");
    if !tuned_malloc {
        // SAFETY: set before any other thread exists (first statement after reading the args).
        unsafe { std::env::set_var("SWITCH_MOE_SYSTEM_MALLOC", "1") };
    }
    let quick = args.iter().any(|a| a == "--quick");
    let peer = args.iter().position(|a| a == "--peer").map(|i| {
        args.get(i + 1)
            .cloned()
            .expect("--peer needs a python path")
    });
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "backend {}, {threads} threads, {} mode, {} malloc; times in ms (median)",
        switch_moe::backend::NAME,
        if quick { "quick" } else { "full" },
        if tuned_malloc {
            "library-tuned"
        } else {
            "system"
        }
    );
    // `--burn-backward`: the experts' matmuls with Burn's own backward (∂x = ∂y·Wᵀ) for the whole
    // run, e.g. to profile the weight-transpose copies that the default backward avoids.
    if args.iter().any(|a| a == "--burn-backward") {
        switch_moe::expert_matmul::set_transpose_free_backward(false);
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let e = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--profile E");
        profile_moe(e, 20);
        return;
    }
    if args.iter().any(|a| a == "--options") {
        options_table(if quick { 3 } else { 7 });
        return;
    }
    if args.iter().any(|a| a == "--decode-parts") {
        decode_parts();
        return;
    }
    if args.iter().any(|a| a == "--decode") {
        let only_new = args.iter().any(|a| a == "--new-only");
        decode_throughput(if quick { 3 } else { 7 }, 500, only_new);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--lm-peer") {
        let python = args.get(i + 1).expect("--lm-peer needs a python path");
        lm_peer(python, if quick { 20 } else { 50 }, threads);
        return;
    }
    if args.iter().any(|a| a == "--train") {
        train_throughput(if quick { 5 } else { 10 });
        return;
    }
    let mut header = String::from(
        "| T | d/f | E | k | dense fwd | MoE fwd | MoE/dense | dense f+b | MoE f+b | MoE/dense | Burn-backward MoE f+b | its /dense | dropless/dense | round-robin/dense | naive f+b | naive/MoE | expert TFLOP/s |",
    );
    let mut rule =
        String::from("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    if peer.is_some() {
        header.push_str(" torch dense f+b | torch HF f+b | HF/dense | dense: ours/torch | MoE: ours/HF | MoE: ours/grouped |");
        rule.push_str("---|---|---|---|---|---|");
    }
    println!("{header}\n{rule}");
    // `--cases T:E,T:E,…`: those top-1 cases only (e.g. the targets of BENCHMARKS.md).
    if let Some(i) = args.iter().position(|a| a == "--cases") {
        let list = args.get(i + 1).expect("--cases T:E,T:E,…");
        let (d, f) = (256, 1024);
        for item in list.split(',') {
            let (t, e) = item
                .split_once(':')
                .and_then(|(t, e)| Some((t.parse().ok()?, e.parse().ok()?)))
                .unwrap_or_else(|| panic!("--cases: {item} is not T:E"));
            let case = Case {
                tokens: t,
                d_model: d,
                d_ff: f,
                experts: e,
                top_k: 1,
            };
            run_case(
                &case,
                1,
                if t > 4096 { 3 } else { 5 },
                peer.as_deref().map(|p| (p, threads)),
            );
        }
        return;
    }
    let (tokens, experts, ks, reps): (&[usize], &[usize], &[usize], usize) = if quick {
        (&[2048], &[8, 32], &[1], 3)
    } else {
        (&[1024, 8192], &[1, 8, 32, 128], &[1, 2], 5)
    };
    let (d, f) = if matches!(switch_moe::backend::NAME, "wgpu" | "cuda") {
        (1024, 4096)
    } else {
        (256, 1024)
    };
    for &t in tokens {
        for &k in ks {
            for &e in experts {
                if k > e || (k == 2 && e > 32) {
                    continue; // top-2 at E = 8 and 32 only
                }
                let case = Case {
                    tokens: t,
                    d_model: d,
                    d_ff: f,
                    experts: e,
                    top_k: k,
                };
                // Medians of 5 (3 at T = 8192, where one case runs for seconds).
                let reps = if t > 4096 { reps.min(3) } else { reps };
                run_case(&case, 1, reps, peer.as_deref().map(|p| (p, threads)));
            }
        }
    }
}
