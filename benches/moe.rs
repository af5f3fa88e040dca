//! The MoE layer beside its floor: a dense FFN with the same d_ff (equal active FLOPs for top-1)
//! and the naive loop-over-experts MoE (what HF transformers' SwitchTransformersSparseMLP does),
//! timed in the same run on the selected backend.
//!
//! ```sh
//! cargo bench --bench moe                 # full sweep (ndarray; --features wgpu / tch)
//! cargo bench --bench moe -- --quick      # T = 2048 only, E in {8, 32}, fewer repeats
//! ```
//!
//! Every time is a median over repeats after warm-up; every ratio divides two medians of the same
//! run (machines are noisy, runs are not comparable with each other).

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::activation::ActivationConfig;
use burn::nn::transformer::{PositionWiseFeedForward, PositionWiseFeedForwardConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

type Ad = switch_moe::backend::SelectedAutodiff;
type Inner = <Ad as AutodiffBackend>::InnerBackend;

struct Case {
    tokens: usize,
    d_model: usize,
    d_ff: usize,
    experts: usize,
    top_k: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `f` over `reps` runs after `warmup` runs.
fn time<F: FnMut()>(warmup: usize, reps: usize, mut f: F) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
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

fn run_case(case: &Case, warmup: usize, reps: usize) {
    let device = switch_moe::backend::default_device();
    let Case {
        tokens: t,
        d_model: d,
        d_ff: f,
        experts: e,
        top_k: k,
    } = *case;
    let moe_config = SwitchFeedForwardConfig::new(d, f, e)
        .with_top_k(k)
        .with_dropout(0.0);
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
    let moe_fb = time(warmup, reps, || {
        let (y, stats) = moe.forward(x.clone().require_grad(), None);
        let loss = y.sum() + stats.aux_loss.mul_scalar(0.01);
        let _g = loss.backward();
        Ad::sync(&device).unwrap();
    });
    let x2 = x.clone().reshape([t, d]);
    let naive_fb = time(warmup.min(1), reps.min(3), || {
        let y = naive_forward(&moe, x2.clone().require_grad(), capacity);
        let _g = y.sum().backward();
        Ad::sync(&device).unwrap();
    });

    println!(
        "| {t:>5} | {d}/{f} | {e:>3} | {k} | {dense_fwd:>8.1} | {moe_fwd:>8.1} | {:>5.2} | {dense_fb:>8.1} | {moe_fb:>8.1} | {:>5.2} | {naive_fb:>8.1} | {:>5.2} |",
        moe_fwd / dense_fwd,
        moe_fb / dense_fb,
        naive_fb / moe_fb,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "backend {}, {threads} threads, {} mode; times in ms (median)",
        switch_moe::backend::NAME,
        if quick { "quick" } else { "full" }
    );
    println!(
        "| T | d/f | E | k | dense fwd | MoE fwd | MoE/dense | dense f+b | MoE f+b | MoE/dense | naive f+b | naive/MoE |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (tokens, experts, ks, reps): (&[usize], &[usize], &[usize], usize) = if quick {
        (&[2048], &[8, 32], &[1], 3)
    } else {
        (&[1024, 8192], &[1, 8, 32, 128], &[1, 2], 5)
    };
    let (d, f) = if switch_moe::backend::NAME == "wgpu" {
        (1024, 4096)
    } else {
        (256, 1024)
    };
    for &t in tokens {
        for &k in ks {
            for &e in experts {
                if k > e {
                    continue;
                }
                let case = Case {
                    tokens: t,
                    d_model: d,
                    d_ff: f,
                    experts: e,
                    top_k: k,
                };
                run_case(&case, 1, reps);
            }
        }
    }
}
