//! Experiment 4 — the degradation: why the original Switch LM got worse after some epochs, earlier
//! than a dense model, and which fix helps.
//!
//! Setting like the original's: a small training corpus (the first 10k characters of
//! tiny-shakespeare; validation on the usual held-out tail of the whole corpus), many epochs,
//! dropout 0.1, no z-loss; a Switch LM (E = 8) beside a dense model of equal FLOPs
//! (E = 1). Tracked per validation point: validation and training loss, per-expert fractions,
//! router entropy, dropped fraction and expert weight norms. Then the fixes the literature
//! suggests, one at a time: expert dropout 0.4 (Switch paper Table 4), the router z-loss (ST-MoE),
//! a higher capacity factor, a lower learning rate for the experts, and early stopping on the
//! validation loss (read off each run: the best validation point is what the Learner's early
//! stopping would keep; `examples/train.rs --patience N` does it in burn-train).
//!
//! ```sh
//! SWITCH_MOE_DATA=../shared/data/tinyshakespeare.txt \
//!   cargo run --release --features experiments --example degradation
//! ```

use switch_moe::lab as common;

use clap::Parser;
use common::cli::{CommonArgs, Scale, fail, load_char_corpus};
use common::plot::{self, Series};
use common::run::{Point, RunLog, base_spec, lm_config, mean_curve, seed_band, train_run};
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Why the Switch LM degraded after some epochs, and what fixes it")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Training characters: the head of the training split (a small corpus is what makes
    /// epochs repeat). Validation always uses the held-out tail of the whole corpus.
    #[arg(long, default_value_t = 10_000)]
    chars: usize,
}

struct Arm {
    label: &'static str,
    experts: usize,
    expert_dropout: f64,
    z_coef: f64,
    capacity_factor: f64,
    expert_lr_ratio: f64,
    /// Run on every seed (the two models the claim compares), else on the first only.
    all_seeds: bool,
}

const fn arm(label: &'static str, experts: usize) -> Arm {
    Arm {
        label,
        experts,
        expert_dropout: 0.1,
        z_coef: 0.0,
        capacity_factor: 1.25,
        expert_lr_ratio: 1.0,
        all_seeds: false,
    }
}

fn arms() -> Vec<Arm> {
    vec![
        Arm {
            all_seeds: true,
            ..arm("dense", 1)
        },
        Arm {
            all_seeds: true,
            ..arm("switch E8 (original)", 8)
        },
        Arm {
            expert_dropout: 0.4,
            ..arm("+ expert dropout 0.4", 8)
        },
        Arm {
            z_coef: 0.001,
            ..arm("+ z-loss 0.001", 8)
        },
        Arm {
            capacity_factor: 2.0,
            ..arm("+ capacity 2.0", 8)
        },
        Arm {
            expert_lr_ratio: 0.2,
            ..arm("+ expert lr ×0.2", 8)
        },
    ]
}

/// The study from its flags to its report, in the order the README section tells it.
// Over 100 lines on purpose: one study read top to bottom; its parts are used once.
fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("degradation");
    let mut corpus = load_char_corpus(&args.common, None);
    if args.chars < 1000 {
        fail("--chars: use at least 1000 training characters");
    }
    corpus.train.truncate(args.chars);
    eprintln!("training on the first {} characters", corpus.train.len());
    let device = default_device();
    let (d, f, layers, seq, batch, steps) = match args.common.scale {
        Scale::Cpu => (64, 256, 4, 64, 32, 500),
        Scale::Gpu => (256, 1024, 6, 128, 32, 6000),
    };
    let steps = args.common.steps.unwrap_or(steps);
    let seeds = args.common.seeds_or(&[1, 2]);
    let arms = arms();

    let mut logs: Vec<(usize, RunLog)> = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        for (a, arm) in arms.iter().enumerate() {
            if i > 0 && !arm.all_seeds {
                continue;
            }
            let mut model = lm_config(corpus.vocab_size, seq, d, f, layers, arm.experts);
            model.z_coef = arm.z_coef;
            model.encoder.layer.moe.expert_dropout = arm.expert_dropout;
            model.encoder.layer.moe.capacity_factor = arm.capacity_factor;
            let mut spec = base_spec(
                format!("arm{}_seed{seed}", a + 1),
                model,
                seed,
                steps,
                batch,
            );
            spec.expert_lr_ratio = arm.expert_lr_ratio;
            spec.eval_every = (steps / 40).max(1);
            eprintln!("arm {}: {}, seed {seed}", a + 1, arm.label);
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push((a, log));
        }
    }

    let runs_of = |a: usize| -> Vec<&RunLog> {
        logs.iter()
            .filter(|(x, _)| *x == a)
            .map(|(_, l)| l)
            .collect()
    };
    let series = |value: fn(&Point) -> f64, which: &[usize]| -> Vec<Series> {
        which
            .iter()
            .map(|&a| {
                Series::new(arms[a].label, mean_curve(&runs_of(a), true, value), a)
                    .with_band(seed_band(&runs_of(a), true, value))
            })
            .collect()
    };
    let all: Vec<usize> = (0..arms.len()).collect();
    let valid = series(|p| p.valid_ce, &all);
    let (y_lo, y_hi) = plot::loss_range(&valid);
    let plot_or_fail = |r: Result<(), String>| r.unwrap_or_else(|e| fail(&e));
    plot_or_fail(plot::lines(
        &out.join("valid_loss.png"),
        "Validation loss over epochs (small corpus)",
        "epoch",
        "validation cross-entropy (nats/char)",
        &valid,
        Some((y_lo, y_hi)),
    ));
    let mut gap = Vec::new();
    for a in [0, 1] {
        for (what, value) in [
            ("train", (|p: &Point| p.train_ce) as fn(&Point) -> f64),
            ("valid", |p| p.valid_ce),
        ] {
            gap.push(Series::new(
                format!("{} · {what}", arms[a].label),
                mean_curve(&runs_of(a), true, value),
                2 * a + usize::from(what == "valid"),
            ));
        }
    }
    let (g_lo, _) = plot::loss_range(&gap);
    plot_or_fail(plot::lines(
        &out.join("train_vs_valid.png"),
        "Train vs validation loss: dense and Switch",
        "epoch",
        "cross-entropy (nats/char)",
        &gap,
        Some((g_lo, y_hi)),
    ));
    let sparse: Vec<usize> = (1..arms.len()).collect();
    plot_or_fail(plot::lines(
        &out.join("expert_norm.png"),
        "Mean expert weight norm (first sparse layer)",
        "epoch",
        "‖W_in‖+‖W_out‖ Frobenius, per expert",
        &series(|p| p.expert_norm.first().copied().unwrap_or(f64::NAN), &all),
        None,
    ));
    for (file, title, y, value) in [
        (
            "dropped.png",
            "Dropped-token fraction in training",
            "dropped fraction",
            (|p: &Point| p.dropped) as fn(&Point) -> f64,
        ),
        (
            "entropy.png",
            "Router entropy (ln 8 = 2.08 is uniform)",
            "entropy (nats)",
            |p| p.entropy,
        ),
        (
            "max_load.png",
            "Load of the busiest expert (E · max fraction)",
            "E · max fraction",
            |p| p.max_load,
        ),
    ] {
        plot_or_fail(plot::lines(
            &out.join(file),
            title,
            "epoch",
            y,
            &series(value, &sparse),
            None,
        ));
    }
    if let Some((_, log)) = logs
        .iter()
        .find(|(a, l)| *a == 1 && l.spec.seed == seeds[0])
    {
        plot_or_fail(plot::heatmaps(
            &out.join("routing_heatmap.png"),
            "Switch E8 (original): per-expert token fraction",
            &plot::routing_panels(log, "original"),
            (layers / 2).max(1),
        ));
    }

    let mut table = String::from(
        "| setting | seeds | best valid (early stop) | at epoch | final valid | final − best | train − valid gap (final) | dropped (final) | entropy (final) | expert norm first → last |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (a, arm) in arms.iter().enumerate() {
        let runs = runs_of(a);
        let n = runs.len() as f64;
        let mean = |f: &dyn Fn(&RunLog) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / n;
        let best = mean(&|r| r.best_valid().0);
        let best_epoch = mean(&|r| {
            let step = r.best_valid().1;
            r.points
                .iter()
                .find(|p| p.step == step)
                .map_or(f64::NAN, |p| p.epoch)
        });
        let last = |f: fn(&Point) -> f64| mean(&|r: &RunLog| r.points.last().map_or(f64::NAN, f));
        let final_valid = last(|p| p.valid_ce);
        let norm_first = mean(&|r| {
            r.points
                .first()
                .and_then(|p| p.expert_norm.first().copied())
                .unwrap_or(f64::NAN)
        });
        let norm_last = last(|p| p.expert_norm.first().copied().unwrap_or(f64::NAN));
        table.push_str(&format!(
            "| {} | {} | {best:.4} | {best_epoch:.1} | {final_valid:.4} | {:+.4} | {:+.4} | {:.3} | {:.3} | {norm_first:.2} → {norm_last:.2} |\n",
            arm.label,
            runs.len(),
            final_valid - best,
            last(|p| p.train_ce) - final_valid,
            last(|p| p.dropped),
            last(|p| p.entropy),
        ));
    }
    let wall: f64 = logs.iter().map(|(_, l)| l.wall_s).sum();
    let epochs = logs
        .first()
        .and_then(|(_, l)| l.points.last())
        .map_or(0.0, |p| p.epoch);
    let summary = format!(
        "{table}\nTrained on the first {} characters, validated on the {}-character held-out \
         tail; {steps} steps = {epochs:.1} epochs, seeds {seeds:?} for the first two rows, seed {} \
         for the fixes. Losses in nats per character (means over seeds). Backend {}, total wall \
         {:.1} min.\n",
        corpus.train.len(),
        corpus.valid.len(),
        seeds[0],
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}
