//! Experiment 3 — stability and balance (Switch paper §2.2 and Table 3; ST-MoE §3).
//!
//! One Switch model (E = 8, top-1, cf 1.25) trained with: no balancing loss; the load-balancing
//! loss α = 0.01; α = 0.01 plus the router z-loss β = 0.001; and that last setting with the
//! initialisation scale 1.0 instead of 0.1 (Table 3: scale 1.0 is unstable). The per-expert token
//! fraction over time is drawn as a heatmap (setting × sparse layer × expert × step).
//!
//! The router-precision arm (router in f32 vs in the model's f16/bf16) needs a backend with f16:
//! ndarray has none, so on the CPU it is skipped with a note; `tests/wgpu_f16.rs` checks that the
//! router stays f32 when the model runs in f16 on wgpu.
//!
//! ```sh
//! SWITCH_MOE_DATA=../shared/data/tinyshakespeare.txt \
//!   cargo run --release --features experiments --example stability
//! ```

mod common;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_char_corpus};
use common::plot::{self, Series};
use common::run::{RunLog, base_spec, lm_config, mean_curve, seed_band, train_run};
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Routing balance and stability: balance loss, z-loss, init scale")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Experts per sparse layer.
    #[arg(long, default_value_t = 8)]
    experts: usize,
}

/// (label, α, β, init scale, repeat over all seeds)
const ARMS: [(&str, f64, f64, f64, bool); 4] = [
    ("no balance loss", 0.0, 0.0, 0.1, false),
    ("α 0.01", 0.01, 0.0, 0.1, false),
    ("α 0.01 + z 0.001", 0.01, 0.001, 0.1, true),
    ("α 0.01 + z 0.001, init 1.0", 0.01, 0.001, 1.0, true),
];

fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("stability");
    let corpus = load_char_corpus(&args.common, None);
    let device = default_device();
    let (d, f, layers, seq, batch, steps) = args.common.scale.standard_size();
    let steps = args.common.steps.unwrap_or(steps);
    // The init-scale claim is about variance across runs: those two arms run on every seed, the
    // balance arms on the first (their effect is far larger than the seed-to-seed spread).
    let seeds = args.common.seeds_or(&[1, 2]);
    if args.experts < 2 {
        fail("--experts must be at least 2 for routing to mean anything");
    }
    eprintln!(
        "note: backend {} has {} f16; the router-precision arm is {}",
        switch_moe::backend::NAME,
        if switch_moe::backend::NAME == "ndarray" {
            "no"
        } else {
            ""
        },
        if switch_moe::backend::NAME == "ndarray" {
            "skipped (see tests/wgpu_f16.rs on wgpu)"
        } else {
            "not part of this program yet"
        }
    );

    let mut logs: Vec<(usize, RunLog)> = Vec::new();
    for (i, seed) in seeds.iter().enumerate() {
        for (arm, &(name, aux, z, init, all_seeds)) in ARMS.iter().enumerate() {
            if i > 0 && !all_seeds {
                continue;
            }
            let mut model = lm_config(corpus.vocab_size, seq, d, f, layers, args.experts);
            model.aux_coef = aux;
            model.z_coef = z;
            model.encoder.layer.moe.init_scale = init;
            let file = format!("arm{}_seed{seed}", arm + 1);
            let mut spec = base_spec(file, model, *seed, steps, batch);
            spec.log_every = (steps / 100).max(1);
            eprintln!("arm {}: {name}, seed {seed}", arm + 1);
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push((arm, log));
        }
    }

    // Heatmaps of the first seed: rows = settings, columns = sparse layers.
    let mut panels = Vec::new();
    for (arm, &(name, ..)) in ARMS.iter().enumerate() {
        if let Some((_, log)) = logs
            .iter()
            .find(|(a, l)| *a == arm && l.spec.seed == seeds[0])
        {
            panels.extend(plot::routing_panels(log, name));
        }
    }
    let cols = layers / 2;
    plot::heatmaps(
        &out.join("routing_heatmap.png"),
        &format!(
            "Per-expert token fraction over training (seed {})",
            seeds[0]
        ),
        &panels,
        cols.max(1),
    )
    .unwrap_or_else(|e| fail(&e));

    let runs_of = |arm: usize| -> Vec<&RunLog> {
        logs.iter()
            .filter(|(a, _)| *a == arm)
            .map(|(_, l)| l)
            .collect()
    };
    let series =
        |value: fn(&common::run::Point) -> f64| -> Vec<Series> {
            ARMS.iter()
                .enumerate()
                .map(|(arm, a)| {
                    Series::new(a.0, mean_curve(&runs_of(arm), false, value), arm)
                        .with_band(seed_band(&runs_of(arm), false, value))
                })
                .collect()
        };
    for (file, title, y, value) in [
        (
            "max_load.png",
            "Load of the busiest expert (E · max fraction; 1 = balanced)",
            "E · max fraction",
            (|p: &common::run::Point| p.max_load) as fn(&common::run::Point) -> f64,
        ),
        (
            "router_z.png",
            "Router z-loss (mean log-sum-exp² of the router logits)",
            "z-loss",
            |p| p.z,
        ),
        (
            "entropy.png",
            "Router entropy (nats; ln E = uniform)",
            "entropy",
            |p| p.entropy,
        ),
        (
            "dropped.png",
            "Dropped-token fraction in training",
            "dropped fraction",
            |p| p.dropped,
        ),
    ] {
        plot::lines(&out.join(file), title, "step", y, &series(value), None)
            .unwrap_or_else(|e| fail(&e));
    }
    let valid = series(|p| p.valid_ce);
    let (y_lo, y_hi) = plot::loss_range(&valid);
    plot::lines(
        &out.join("valid_loss.png"),
        "Validation loss",
        "step",
        "validation cross-entropy (nats/char)",
        &valid,
        Some((y_lo, y_hi)),
    )
    .unwrap_or_else(|e| fail(&e));

    let mut table = String::from(
        "| setting | seeds | final valid loss | ± seeds | max load (last) | dropped (last) | router entropy (last) | z-loss (last) | diverged |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (arm, &(name, ..)) in ARMS.iter().enumerate() {
        let runs = runs_of(arm);
        let mean =
            |f: &dyn Fn(&RunLog) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64;
        let last = |f: fn(&common::run::Point) -> f64| {
            mean(&|r: &RunLog| r.points.last().map_or(f64::NAN, f))
        };
        let finals: Vec<f64> = runs.iter().map(|r| r.final_valid()).collect();
        let spread = finals.iter().fold(f64::MIN, |a, b| a.max(*b))
            - finals.iter().fold(f64::MAX, |a, b| a.min(*b));
        let diverged: Vec<String> = runs
            .iter()
            .filter_map(|r| {
                r.diverged_at
                    .map(|s| format!("seed {} at step {s}", r.spec.seed))
            })
            .collect();
        table.push_str(&format!(
            "| {name} | {} | {:.4} | {:.4} | {:.2} | {:.3} | {:.3} | {:.3} | {} |\n",
            runs.len(),
            mean(&|r: &RunLog| r.final_valid()),
            spread,
            last(|p| p.max_load),
            last(|p| p.dropped),
            last(|p| p.entropy),
            last(|p| p.z),
            if diverged.is_empty() {
                "no".into()
            } else {
                diverged.join(", ")
            }
        ));
    }
    let wall: f64 = logs.iter().map(|(_, l)| l.wall_s).sum();
    let summary = format!(
        "{table}\nE = {}, cf 1.25, {steps} steps; \"last\" = mean over the last logging window \
         (and over seeds). Backend {}, total wall {:.1} min.\n",
        args.experts,
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}
