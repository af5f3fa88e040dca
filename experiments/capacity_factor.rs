//! Experiment 2 — capacity factor (Switch paper §2.2, Table 1).
//!
//! One Switch model (E = 8, top-1) trained with training capacity factors 0.75, 1.0, 1.25, 2.0 and
//! dropless: validation loss, the fraction of tokens dropped in training, and training tokens/s.
//! Validation always runs at the eval capacity factor 2.0 (dropless for the dropless model), so it
//! measures the model, not the eval-time drops.
//!
//! ```sh
//! SWITCH_MOE_DATA=../shared/data/tinyshakespeare.txt \
//!   cargo run --release --features experiments --example capacity_factor
//! ```

use switch_moe::lab as common;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_char_corpus};
use common::plot::{self, Series};
use common::run::{RunLog, base_spec, lm_config, mean_curve, seed_band, train_run};
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Capacity factor: quality, dropped tokens and speed")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Experts per sparse layer.
    #[arg(long, default_value_t = 8)]
    experts: usize,
}

/// `None` is dropless.
const FACTORS: [Option<f64>; 5] = [Some(0.75), Some(1.0), Some(1.25), Some(2.0), None];

fn label(cf: Option<f64>) -> String {
    cf.map_or("dropless".into(), |c| format!("cf {c}"))
}

/// The study from its flags to its report: arms, runs, table and figures in the order the README
/// section tells them.
// Over 100 lines on purpose: one study read top to bottom; its parts are used once.
fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("capacity_factor");
    let corpus = load_char_corpus(&args.common, None);
    let device = default_device();
    // The model and budget of experiment 1 (E = 8), so the two tables can be read together.
    let (d, f, layers, seq, batch, steps) = args.common.scale.standard_size();
    let steps = args.common.steps.unwrap_or(steps);
    let seeds = args.common.seeds_or(&[1, 2, 3]);
    if args.experts == 0 {
        fail("--experts must be at least 1");
    }

    let mut logs: Vec<(Option<f64>, RunLog)> = Vec::new();
    for &seed in &seeds {
        for cf in FACTORS {
            let mut model = lm_config(corpus.vocab_size, seq, d, f, layers, args.experts);
            match cf {
                Some(c) => model.encoder.layer.moe.capacity_factor = c,
                None => model.encoder.layer.moe.dropless = true,
            }
            let name = format!("{}_seed{seed}", label(cf).replace(' ', ""));
            let spec = base_spec(name, model, seed, steps, batch);
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push((cf, log));
        }
    }

    let runs_of = |cf: Option<f64>| -> Vec<&RunLog> {
        logs.iter()
            .filter(|(c, _)| *c == cf)
            .map(|(_, l)| l)
            .collect()
    };
    let series = |value: fn(&common::run::Point) -> f64| -> Vec<Series> {
        FACTORS
            .iter()
            .enumerate()
            .map(|(i, &cf)| {
                Series::new(label(cf), mean_curve(&runs_of(cf), false, value), i)
                    .with_band(seed_band(&runs_of(cf), false, value))
            })
            .collect()
    };
    let valid = series(|p| p.valid_ce);
    let (y_lo, y_hi) = plot::loss_range(&valid);
    plot::lines(
        &out.join("valid_loss.png"),
        &format!(
            "Validation loss by training capacity factor (E = {})",
            args.experts
        ),
        "step",
        "validation cross-entropy (nats/char)",
        &valid,
        Some((y_lo, y_hi)),
    )
    .unwrap_or_else(|e| fail(&e));
    plot::lines(
        &out.join("dropped.png"),
        "Fraction of tokens dropped in training (mean over sparse layers)",
        "step",
        "dropped fraction",
        &series(|p| p.dropped),
        None,
    )
    .unwrap_or_else(|e| fail(&e));

    let mut table = String::from(
        "| training capacity | final valid loss | − cf 1.25, paired (95%) | dropped (mean over run) | dropped (last 10%) | max load | tokens/s |\n|---|---|---|---|---|---|---|\n",
    );
    let reference = runs_of(Some(1.25));
    for cf in FACTORS {
        let runs = runs_of(cf);
        let finals: Vec<f64> = runs.iter().map(|r| r.final_valid()).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // Per seed: this factor's final loss minus cf 1.25's on the same seed.
        let diffs: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                reference
                    .iter()
                    .find(|b| b.spec.seed == r.spec.seed)
                    .map(|b| r.final_valid() - b.final_valid())
            })
            .collect();
        let (d_mean, d_half) = common::stats::paired(&diffs);
        let paired = if cf == Some(1.25) {
            "—".to_string()
        } else if d_half.is_finite() {
            format!("{d_mean:+.4} ± {d_half:.4}")
        } else {
            format!("{d_mean:+.4} (one seed)")
        };
        let dropped_all: Vec<f64> = runs
            .iter()
            .map(|r| mean(&r.points.iter().map(|p| p.dropped).collect::<Vec<_>>()))
            .collect();
        let dropped_last: Vec<f64> = runs
            .iter()
            .map(|r| {
                let n = r.points.len();
                mean(
                    &r.points[n - (n / 10).max(1)..]
                        .iter()
                        .map(|p| p.dropped)
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let load: Vec<f64> = runs
            .iter()
            .map(|r| r.points.last().map_or(f64::NAN, |p| p.max_load))
            .collect();
        let tps: Vec<f64> = runs.iter().map(|r| r.tokens_per_s).collect();
        table.push_str(&format!(
            "| {} | {:.4} | {paired} | {:.3} | {:.3} | {:.2} | {:.0} |\n",
            label(cf),
            mean(&finals),
            mean(&dropped_all),
            mean(&dropped_last),
            mean(&load),
            mean(&tps)
        ));
    }
    let wall: f64 = logs.iter().map(|(_, l)| l.wall_s).sum();
    let summary = format!(
        "{table}\nE = {}, seeds {seeds:?}, {steps} steps; validation at eval capacity factor 2.0 \
         (dropless run: dropless); the paired column is the mean over seeds of (this factor − \
         cf 1.25) with a 95% t interval. Max load = E · largest expert fraction at the last point \
         (1.0 = balanced). Backend {}, total wall {:.1} min.\n",
        args.experts,
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}
