//! A cost model of one MoE layer's training step on P devices: data parallelism (what
//! `--devices` runs today) against expert parallelism (a design, not implemented), from layer
//! times **measured here** on one device and a stated interconnect.
//!
//! ```sh
//! cargo bench --bench scaling                          # measures on the selected backend
//! cargo bench --bench scaling -- --bandwidth-gbs 400 --latency-us 5
//! cargo bench --bench scaling -- --tokens 4096 --d-model 256 --d-ff 1024 --reps 3
//! cargo bench --bench scaling -- --speedup 1000   # what-if: a device 1000× faster than this one
//! ```
//!
//! Per device and step: T tokens (weak scaling, the global batch is P·T), one MoE layer of E
//! experts (d → f → d, top-k, capacity factor cf), fp32 (4-byte) activations and gradients.
//!
//! - **Data parallel** (P replicas, each with all E experts): compute = t(E, T), the measured
//!   forward + backward of the whole layer on T tokens; communication = a ring all-reduce of the
//!   expert gradients, 2·(P−1)/P · 2·E·d·f·4 bytes / BW + 2·(P−1)·α.
//! - **Expert parallel** (experts sharded over q = min(P, E) devices, E/q each; r = P/q data
//!   parallel groups): compute = t(E/q, T), the measured layer with E/q experts on T tokens (a
//!   device receives ≈ T·k tokens for its local experts when routing is balanced); four
//!   all-to-alls per step (dispatch and combine, forward and backward), each sending
//!   T·k·cf·d·4·(q−1)/q bytes per device: that / BW + (q−1)·α; plus a ring all-reduce of the
//!   local experts' gradients over the r replicas.
//!
//! Step time = compute + communication (no overlap: an upper bound); tokens/s = P·T / step. `--speedup X` adds a what-if table with
//! every measured compute time divided by X (a faster device, same interconnect).
//! The attention and dense layers are left out: they are the same in both designs. What it
//! does not model: load imbalance (the busiest expert sets the all-to-all's pace), stragglers,
//! the router's all-gather of nothing (routing is local), and the compute/communication overlap
//! real systems use.

use burn::tensor::{Distribution, Tensor};
use switch_moe::{SwitchFeedForward, SwitchFeedForwardConfig};

mod common;
use common::{Ad, layer_fb};

struct Args {
    tokens: usize,
    d_model: usize,
    d_ff: usize,
    top_k: usize,
    capacity_factor: f64,
    bandwidth_gbs: f64,
    latency_us: f64,
    reps: usize,
    speedup: f64,
}

fn parse() -> Args {
    let mut a = Args {
        tokens: 4096,
        d_model: 256,
        d_ff: 1024,
        top_k: 1,
        capacity_factor: 1.25,
        bandwidth_gbs: 50.0,
        latency_us: 10.0,
        reps: 3,
        speedup: 1.0,
    };
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| fail(&format!("{flag} needs a number")))
        };
        match flag.as_str() {
            "--tokens" => a.tokens = value() as usize,
            "--d-model" => a.d_model = value() as usize,
            "--d-ff" => a.d_ff = value() as usize,
            "--top-k" => a.top_k = value() as usize,
            "--capacity-factor" => a.capacity_factor = value(),
            "--bandwidth-gbs" => a.bandwidth_gbs = value(),
            "--latency-us" => a.latency_us = value(),
            "--reps" => a.reps = (value() as usize).max(1),
            "--speedup" => a.speedup = value().max(1e-9),
            other => fail(&format!("unknown flag {other} (see the file's header)")),
        }
    }
    a
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// Median ms of forward + backward of a layer with `e` experts on `t` tokens.
fn layer_ms(a: &Args, e: usize) -> f64 {
    let device = switch_moe::backend::default_device();
    let config = SwitchFeedForwardConfig::new(a.d_model, a.d_ff, e)
        .with_top_k(a.top_k.min(e))
        .with_capacity_factor(a.capacity_factor);
    let moe: SwitchFeedForward<Ad> = config.init(&device);
    let x = Tensor::<Ad, 3>::random(
        [1, a.tokens, a.d_model],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    layer_fb(&moe, &x, 1, a.reps)
}

/// Ring all-reduce of `bytes` over `p` devices, ms.
fn all_reduce_ms(a: &Args, bytes: f64, p: usize) -> f64 {
    if p <= 1 {
        return 0.0;
    }
    let p = p as f64;
    2.0 * (p - 1.0) / p * bytes / (a.bandwidth_gbs * 1e9) * 1e3
        + 2.0 * (p - 1.0) * a.latency_us / 1e3
}

/// One all-to-all where each of `q` devices holds `bytes` to scatter, ms.
fn all_to_all_ms(a: &Args, bytes: f64, q: usize) -> f64 {
    if q <= 1 {
        return 0.0;
    }
    let q = q as f64;
    bytes * (q - 1.0) / q / (a.bandwidth_gbs * 1e9) * 1e3 + (q - 1.0) * a.latency_us / 1e3
}

fn main() {
    let a = parse();
    switch_moe::backend::keep_freed_memory();
    let experts = [8usize, 64, 256];
    let devices = [8usize, 32, 64, 256];

    // Local expert counts either design needs: E, and E / min(P, E).
    let mut locals: Vec<usize> = experts.to_vec();
    for &e in &experts {
        for &p in &devices {
            locals.push((e / p.min(e)).max(1));
        }
    }
    locals.sort_unstable();
    locals.dedup();
    println!(
        "# MoE layer step, measured on {} ({:?}): T = {} tokens per device, d {} / d_ff {}, top-{}, cf {}",
        switch_moe::backend::NAME,
        switch_moe::backend::describe_device(&switch_moe::backend::default_device()),
        a.tokens,
        a.d_model,
        a.d_ff,
        a.top_k,
        a.capacity_factor
    );
    let measured: Vec<(usize, f64)> = locals
        .iter()
        .map(|&e| {
            let ms = layer_ms(&a, e);
            eprintln!("measured: E = {e:>3}: forward + backward {ms:.1} ms");
            (e, ms)
        })
        .collect();
    println!(
        "# measured forward + backward (median of {}): {}",
        a.reps,
        measured
            .iter()
            .map(|(e, t)| format!("E={e}: {t:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let speedups: Vec<f64> = if a.speedup == 1.0 {
        vec![1.0]
    } else {
        vec![1.0, a.speedup]
    };
    for speedup in speedups {
        table(&a, &measured, speedup);
    }
}

/// The table for compute times = measured / `speedup`.
fn table(a: &Args, measured: &[(usize, f64)], speedup: f64) {
    let experts = [8usize, 64, 256];
    let devices = [8usize, 32, 64, 256];
    let (d, f) = (a.d_model as f64, a.d_ff as f64);
    let t_of = |e: usize| {
        measured
            .iter()
            .find(|(x, _)| *x == e)
            .map(|(_, t)| *t)
            .unwrap()
            / speedup
    };
    println!();
    if speedup != 1.0 {
        println!(
            "# what-if: compute times are the measured ones divided by {speedup} (a faster device)"
        );
    } else {
        println!("# compute times as measured");
    }
    println!(
        "# interconnect: {} GB/s per device, {} µs per message; no compute/communication overlap",
        a.bandwidth_gbs, a.latency_us
    );
    println!();
    println!(
        "| E | P | data parallel: compute + all-reduce = step | tokens/s | expert parallel (q × r): compute + all-to-all + all-reduce = step | tokens/s | EP / DP |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &e in &experts {
        for &p in &devices {
            let expert_bytes = 2.0 * d * f * 4.0; // one expert's W₁ and W₂ gradients
            let dp_comp = t_of(e);
            let dp_comm = all_reduce_ms(a, e as f64 * expert_bytes, p);
            let dp = dp_comp + dp_comm;

            let q = p.min(e);
            let r = p / q;
            let local = (e / q).max(1);
            let ep_comp = t_of(local);
            let moved = a.tokens as f64 * a.top_k as f64 * a.capacity_factor * d * 4.0;
            let ep_a2a = 4.0 * all_to_all_ms(a, moved, q);
            let ep_ar = all_reduce_ms(a, local as f64 * expert_bytes, r);
            let ep = ep_comp + ep_a2a + ep_ar;

            let tps = |ms: f64| p as f64 * a.tokens as f64 / (ms / 1e3);
            println!(
                "| {e} | {p} | {dp_comp:.2} + {dp_comm:.2} = {dp:.2} ms | {} | ({q} × {r}) {ep_comp:.2} + {ep_a2a:.2} + {ep_ar:.2} = {ep:.2} ms | {} | {:.2} |",
                human(tps(dp)),
                human(tps(ep)),
                dp / ep
            );
        }
    }
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
