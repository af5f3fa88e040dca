//! Experiment 1 — Switch vs dense at equal FLOPs (Switch paper Table 1 / Fig. 4, at small scale).
//!
//! A dense model (E = 1: one expert is exactly a dense FFN — its gate is a softmax over one logit,
//! i.e. 1, and capacity ⌈1.25·T⌉ ≥ T drops nothing) against Switch models with E = 2, 4, 8, 16
//! experts: same d_model, d_ff, layers (every other FFN sparse), top-1, same tokens seen, so the
//! same FLOPs per token up to the router. Validation loss vs step, the loss at fixed steps, and
//! the step at which each model reaches the dense model's final loss (the "speed-up").
//!
//! ```sh
//! SWITCH_MOE_DATA=../shared/data/tinyshakespeare.txt \
//!   cargo run --release --features experiments --example switch_vs_dense
//! ```

use switch_moe::lab as common;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_char_corpus};
use common::plot::{self, Series};
use common::run::{RunLog, base_spec, lm_config, mean_curve, train_run};
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Switch vs dense at equal FLOPs per token")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Expert counts to compare (1 is the dense baseline).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 4, 8, 16])]
    experts: Vec<usize>,
}

/// The study from its flags to its report, in the order the README section tells it.
// Over 100 lines on purpose: one study read top to bottom; its parts are used once.
fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("switch_vs_dense");
    let corpus = load_char_corpus(&args.common, None);
    let device = default_device();
    // Char-level tiny-shakespeare; a 4-layer d 64 model sees 2048 tokens a step. Small enough that
    // 10 runs fit in 30 minutes on 2 cores; the lr is the one that trains this size fastest.
    let (d, f, layers, seq, batch, steps) = args.common.scale.standard_size();
    let steps = args.common.steps.unwrap_or(steps);
    let seeds = args.common.seeds_or(&[1, 2]);
    if args.experts.contains(&0) {
        fail("--experts: 0 is not an expert count");
    }

    let mut logs: Vec<RunLog> = Vec::new();
    for &seed in &seeds {
        for &e in &args.experts {
            let spec = base_spec(
                format!("{}_seed{seed}", label(e)),
                lm_config(corpus.vocab_size, seq, d, f, layers, e),
                seed,
                steps,
                batch,
            );
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push(log);
        }
    }

    let runs_of = |e: usize| -> Vec<&RunLog> {
        logs.iter()
            .filter(|l| l.spec.model.encoder.moe().num_experts == e)
            .collect()
    };
    let curve = |e: usize| mean_curve(&runs_of(e), false, |p| p.valid_ce);
    let series: Vec<Series> = args
        .experts
        .iter()
        .enumerate()
        .map(|(i, &e)| Series::new(label(e), curve(e), i))
        .collect();
    let final_dense = series
        .iter()
        .zip(&args.experts)
        .find(|(_, e)| **e == 1)
        .and_then(|(s, _)| s.points.last().map(|p| p.1));
    let (y_lo, y_hi) = plot::loss_range(&series);
    plot::lines(
        &out.join("valid_loss.png"),
        &format!("Validation loss, mean of {} seed(s)", seeds.len()),
        "step",
        "validation cross-entropy (nats/char)",
        &series,
        Some((y_lo, y_hi)),
    )
    .unwrap_or_else(|e| fail(&e));

    let mut table = String::new();
    table.push_str(&format!(
        "| model | params | valid @ {} | valid @ {} | valid @ {} (final) | ± seeds | steps to dense final | speed-up | tokens/s |\n|---|---|---|---|---|---|---|---|---|\n",
        steps / 4,
        steps / 2,
        steps
    ));
    for (s, &e) in series.iter().zip(&args.experts) {
        let runs = runs_of(e);
        let at = |frac: usize| {
            s.points
                .iter()
                .find(|p| p.0 as usize >= steps * frac / 4)
                .map_or(f64::NAN, |p| p.1)
        };
        let finals: Vec<f64> = runs.iter().map(|r| r.final_valid()).collect();
        let spread = finals.iter().fold(f64::MIN, |a, b| a.max(*b))
            - finals.iter().fold(f64::MAX, |a, b| a.min(*b));
        let reach = final_dense.and_then(|t| s.points.iter().find(|p| p.1 <= t).map(|p| p.0));
        let tps = runs.iter().map(|r| r.tokens_per_s).sum::<f64>() / runs.len() as f64;
        table.push_str(&format!(
            "| {} | {:.2} M | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {:.0} |\n",
            label(e),
            runs[0].num_params as f64 / 1e6,
            at(1),
            at(2),
            at(4),
            spread,
            reach.map_or("—".into(), |r| format!("{r:.0}")),
            reach.map_or("—".into(), |r| format!("{:.2}×", steps as f64 / r)),
            tps
        ));
    }
    let wall: f64 = logs.iter().map(|l| l.wall_s).sum();
    let summary = format!(
        "{table}\nValidation cross-entropy in nats per character, mean over seeds {seeds:?}; \
         ± seeds is the spread (max − min) of the final loss over seeds. Backend {}, total wall \
         {:.1} min.\n",
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}

fn label(e: usize) -> String {
    if e == 1 {
        "dense".into()
    } else {
        format!("switch-E{e}")
    }
}
