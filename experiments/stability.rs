//! Experiment 3 — stability and balance (Switch paper §2.2 and Table 3; ST-MoE §3).
//!
//! One Switch model (E = 8, top-1, cf 1.25) trained with: no balancing loss; the load-balancing
//! loss α = 0.01; α = 0.01 plus the router z-loss β = 0.001; and that last setting with **every**
//! weight matrix drawn as in the paper's Table 3 — truncated normal of std √(s / fan_in) with
//! s = 0.1 and with s = 1.0 (Table 3: 1.0 is unstable). Every arm runs on every seed; the
//! summary gives each claim's paired (same seed) difference with a 95% t interval. The
//! per-expert token fraction over time is drawn as a heatmap (setting × sparse layer × expert ×
//! step).
//!
//! The router-precision arm (router in f32 vs in the model's f16/bf16) needs a backend with f16:
//! ndarray has none, so on the CPU it is skipped with a note; `tests/wgpu_f16.rs` checks that the
//! router stays f32 when the model runs in f16 on wgpu.
//!
//! ```sh
//! SWITCH_MOE_DATA=../shared/data/tinyshakespeare.txt \
//!   cargo run --release --features experiments --example stability
//! ```

use switch_moe::lab as common;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_char_corpus};
use common::plot::{self, Series};
use common::run::{RunLog, base_spec, lm_config, mean_curve, seed_band, train_run};
use common::stats::paired;
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

/// (label, α, β, Table-3 scale of every weight matrix: None = the library's initialisation)
const ARMS: [(&str, f64, f64, Option<f64>); 5] = [
    ("no balance loss", 0.0, 0.0, None),
    ("α 0.01", 0.01, 0.0, None),
    ("α 0.01 + z 0.001", 0.01, 0.001, None),
    (
        "α 0.01 + z 0.001, all weights s 0.1",
        0.01,
        0.001,
        Some(0.1),
    ),
    (
        "α 0.01 + z 0.001, all weights s 1.0",
        0.01,
        0.001,
        Some(1.0),
    ),
];

/// The claims, as (arm, reference arm): each is read from the paired difference.
const CLAIMS: [(usize, usize, &str); 4] = [
    (1, 0, "load-balancing loss"),
    (2, 1, "router z-loss"),
    (3, 2, "Table-3 init s 0.1 vs the library's"),
    (4, 3, "Table-3 init s 1.0 vs s 0.1"),
];

/// The study from its flags to its report, in the order the README section tells it.
// Over 100 lines on purpose: one study read top to bottom; its parts are used once.
fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("stability");
    let corpus = load_char_corpus(&args.common, None);
    let device = default_device();
    let (d, f, layers, seq, batch, steps) = args.common.scale.standard_size();
    let steps = args.common.steps.unwrap_or(steps);
    let seeds = args.common.seeds_or(&[1, 2, 3]);
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
    for seed in &seeds {
        for (arm, &(name, aux, z, init)) in ARMS.iter().enumerate() {
            let mut model = lm_config(corpus.vocab_size, seq, d, f, layers, args.experts);
            model.aux_coef = aux;
            model.z_coef = z;
            if let Some(scale) = init {
                model.encoder.layer.moe.init_scale = scale;
            }
            let file = format!("arm{}_seed{seed}", arm + 1);
            let mut spec = base_spec(file, model, *seed, steps, batch);
            spec.log_every = (steps / 100).max(1);
            spec.eval_windows = 512;
            spec.init_all = init;
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
        "| arm | setting | seeds | final valid loss | seed range (max − min) | max load (last) | dropped (last) | router entropy (last) | z-loss (last) | diverged |\n|---|---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {name} | {} | {:.4} | {:.4} | {:.2} | {:.3} | {:.3} | {:.3} | {} |\n",
            arm + 1,
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
    table.push_str(
        "\n| claim | arm − reference, final valid loss (95% CI) | seeds | max load, arm − reference |\n|---|---|---|---|\n",
    );
    for (arm, reference, claim) in CLAIMS {
        let pairs: Vec<(&RunLog, &RunLog)> = seeds
            .iter()
            .filter_map(|s| {
                let find = |a: usize| {
                    logs.iter()
                        .find(|(x, l)| *x == a && l.spec.seed == *s)
                        .map(|(_, l)| l)
                };
                Some((find(arm)?, find(reference)?))
            })
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let (m, h) = paired(
            &pairs
                .iter()
                .map(|(a, b)| a.final_valid() - b.final_valid())
                .collect::<Vec<_>>(),
        );
        let load = pairs
            .iter()
            .map(|(a, b)| {
                let last = |l: &RunLog| l.points.last().map_or(f64::NAN, |p| p.max_load);
                last(a) - last(b)
            })
            .sum::<f64>()
            / pairs.len() as f64;
        table.push_str(&format!(
            "| {claim} (arm {} − arm {}) | {m:+.4} ± {h:.4} | {} | {load:+.2} |\n",
            arm + 1,
            reference + 1,
            pairs.len()
        ));
    }
    let wall: f64 = logs.iter().map(|(_, l)| l.wall_s).sum();
    let summary = format!(
        "{table}\nE = {}, cf 1.25, {steps} steps; \"last\" = mean over the last logging window \
         (and over seeds); final validation loss on 512 fixed windows. Backend {}, total wall \
         {:.1} min.\n",
        args.experts,
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}
