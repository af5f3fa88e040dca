//! Round 3, study R3.2 — balancing for an imbalanced mixture, evaluated cleanly.
//!
//! Rust 95% / Shakespeare 5% of the training windows (the multi-domain corpus, deduplicated),
//! with **mixed** batches (each window draws its domain) and **domain-homogeneous** batches (each
//! batch draws one), under five balancing rules — none (α = 0), the load-balancing loss
//! (α = 0.01), aux-loss-free bias balancing (u = 1e-3 and u = 1e-2, α = 0), and aux + bias
//! (u = 1e-3) — and a **dense** control (E = 1) in both batch modes; 5 seeds.
//!
//! Round 2 evaluated each domain in batches of that domain alone at the eval capacity factor,
//! where a minority's batch crowds the experts it prefers: part of "balancing helps the
//! minority" could be test-time drops. Here each domain's test cross-entropy is measured
//! **dropless** (the primary measure: what the model knows, whatever the batch), at the eval
//! capacity factor in **mixed-domain** batches (what a user's evaluation meets), and as in round 2
//! (reported apart).
//!
//! Criterion (pre-registered in experiments/README.md, R3.2): a rule helps the minority when its
//! paired (same seed) difference in Shakespeare dropless test cross-entropy to the same batch
//! mode's `none` arm is negative with a Holm-adjusted p < 0.05 over the 8 minority tests (4 rules ×
//! 2 modes). The homogeneous-batch penalty (homog − mixed) of a rule is MoE-specific only if it
//! exceeds the dense control's penalty: the paired interval of the difference lies above 0.
//!
//! ```sh
//! cargo run --release --features experiments --example build_corpus
//! cargo run --release --features experiments,tch --example imbalance3   # LIBTORCH as in README
//! cargo run --release --features experiments --example imbalance3 -- --report  # from final.csv
//! ```

use std::fmt::Write as _;
use std::path::Path;

use clap::Parser;
use switch_moe::backend::{SelectedAutodiff, default_device};
use switch_moe::lab::cli::{CommonArgs, fail, load_multidomain, select_arms};
use switch_moe::lab::plot::{self, Series};
use switch_moe::lab::run::{Mixture, RunLog, base_spec, lm_config, train_run};
use switch_moe::lab::stats::{holm, paired, paired_p};
use switch_moe::lab::study::{Metrics, Row, mean_of, paired_diffs, read_final, run_study};

#[derive(Parser, Debug)]
#[command(about = "Balancing rules for a 95/5 domain mixture, evaluated dropless (study R3.2)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Arms to run (default: all twelve).
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
    /// Train nothing: write the report from final.csv.
    #[arg(long)]
    report: bool,
}

/// Batch mode / rule. `dense` is the E = 1 control.
const ARMS: [&str; 12] = [
    "mixed/none",
    "mixed/aux",
    "mixed/bias",
    "mixed/bias1e-2",
    "mixed/aux+bias",
    "mixed/dense",
    "homog/none",
    "homog/aux",
    "homog/bias",
    "homog/bias1e-2",
    "homog/aux+bias",
    "homog/dense",
];
/// The rules tested against `none`.
const RULES: [&str; 4] = ["aux", "bias", "bias1e-2", "aux+bias"];
/// Domain indices of the corpus (`load_multidomain`).
const SHAKESPEARE: usize = 0;
const RUST: usize = 1;
/// The minority's share of the training windows.
const MINORITY_SHARE: f64 = 0.05;
/// Experts of the sparse arms.
const EXPERTS: usize = 8;
/// Optimiser steps (round 2's R2.2 budget).
const STEPS: usize = 600;

fn main() {
    let args = Args::parse();
    let out = args.common.out_dir("imbalance-r3");
    if !args.report {
        let corpus = load_multidomain(args.common.data.as_deref());
        let device = default_device();
        let (d, f, layers, seq, batch, _) = args.common.scale.standard_size();
        let steps = args.common.steps.unwrap_or(STEPS);
        let seeds = args.common.seeds_or(&[1, 2, 3, 4, 5]);
        let arms = select_arms(args.arms.as_deref(), &ARMS, &ARMS);
        run_study(&out, &arms, &seeds, |arm, seed| {
            let (mode, rule) = arm.split_once('/').expect("arms are mode/rule");
            let experts = if rule == "dense" { 1 } else { EXPERTS };
            let mut model = lm_config(256, seq, d, f, layers, experts);
            model.aux_coef = if rule.contains("aux") { 0.01 } else { 0.0 };
            let rate = match rule {
                "bias" | "aux+bias" => 1e-3,
                "bias1e-2" => 1e-2,
                _ => 0.0,
            };
            model.encoder = model.encoder.map_moe(|m| m.with_expert_bias_rate(rate));
            let name = format!("{}_seed{seed}", arm.replace('/', "_").replace('+', "-"));
            let mut spec = base_spec(name, model, seed, steps, batch);
            spec.cooldown = Some(0.1);
            spec.eval_windows = 256;
            spec.eval_mixed = true;
            spec.mixture = Some(Mixture {
                weights: vec![(RUST, 1.0 - MINORITY_SHARE), (SHAKESPEARE, MINORITY_SHARE)],
                homogeneous: mode == "homog",
            });
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            metrics(&log)
        });
    }
    report(&out);
}

/// The numbers of one run.
fn metrics(log: &RunLog) -> Metrics {
    let eval = |d: usize| log.final_eval.get(d);
    let drops = |d: usize| {
        log.domain_drops
            .iter()
            .find(|x| x.0 == d)
            .map_or(f64::NAN, |x| x.2 / x.1.max(1.0))
    };
    let run_load = {
        let layers = log.routing.iter().map(|r| r.layer + 1).max().unwrap_or(0);
        let loads: Vec<f64> = (0..layers)
            .map(|l| {
                let rows: Vec<_> = log.routing.iter().filter(|r| r.layer == l).collect();
                let e = rows.first().map_or(1, |r| r.fractions.len());
                let mean: Vec<f64> = (0..e)
                    .map(|i| rows.iter().map(|r| r.fractions[i]).sum::<f64>() / rows.len() as f64)
                    .collect();
                switch_moe::routing_stats::max_load(&mean)
            })
            .collect();
        loads.iter().sum::<f64>() / loads.len().max(1) as f64
    };
    vec![
        (
            "shakespeare_dropless",
            eval(SHAKESPEARE).map_or(f64::NAN, |e| e.test_ce_dropless),
        ),
        (
            "rust_dropless",
            eval(RUST).map_or(f64::NAN, |e| e.test_ce_dropless),
        ),
        (
            "shakespeare_mixed",
            eval(SHAKESPEARE)
                .and_then(|e| e.test_ce_mixed)
                .unwrap_or(f64::NAN),
        ),
        (
            "rust_mixed",
            eval(RUST).and_then(|e| e.test_ce_mixed).unwrap_or(f64::NAN),
        ),
        (
            "shakespeare_homog",
            eval(SHAKESPEARE).map_or(f64::NAN, |e| e.test_ce),
        ),
        ("rust_homog", eval(RUST).map_or(f64::NAN, |e| e.test_ce)),
        ("run_load", run_load),
        ("peak_batch_load", log.peak_load),
        ("train_dropped_shakespeare", drops(SHAKESPEARE)),
        ("train_dropped_rust", drops(RUST)),
        ("tokens_per_s", log.tokens_per_s),
    ]
}

/// `mean ± half-width (low, high)` of paired differences.
fn interval(diffs: &[f64]) -> String {
    let (m, h) = paired(diffs);
    format!("{m:+.4} ± {h:.4}")
}

/// summary.md and the plots, from final.csv alone.
fn report(out: &Path) {
    let rows = read_final(out);
    if rows.is_empty() {
        fail(&format!("no runs in {}/final.csv", out.display()));
    }
    let mut md = String::from("# R3.2 — balancing a 95/5 mixture, evaluated dropless\n\n");
    arms_table(&mut md, &rows);
    let recommendation = criterion_table(&mut md, &rows);
    penalty_table(&mut md, &rows);
    let _ = writeln!(
        md,
        "\n**Recommended for imbalanced data:** {recommendation}.\n"
    );
    std::fs::write(out.join("summary.md"), &md)
        .unwrap_or_else(|e| fail(&format!("writing summary.md: {e}")));
    forest_plot(out, &rows);
    print!("{md}");
}

fn arms_table(md: &mut String, rows: &[Row]) {
    let _ = writeln!(
        md,
        "Test cross-entropy (nats per byte), mean over seeds; **dropless** is the primary \
         measure; *mixed* at the eval capacity factor 2.0 in domain-mixed batches; *homog.* as \
         round 2 measured it (eval capacity, one domain per batch). Load: E · the busiest \
         expert's share of the run's tokens (1 = balanced). Drops: training tokens no expert \
         processed.\n"
    );
    let _ = writeln!(
        md,
        "| arm | seeds | shakespeare dropless | rust dropless | shakespeare mixed | shakespeare \
         homog. | run load | peak batch load | dropped shakesp. / rust | tokens/s |\n|---|---|---|\
         ---|---|---|---|---|---|---|"
    );
    for arm in ARMS {
        let n = rows.iter().filter(|r| r.arm == arm).count();
        if n == 0 {
            continue;
        }
        let m = |k: &str| mean_of(rows, arm, k);
        let _ = writeln!(
            md,
            "| {arm} | {n} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2} | {:.1}% / {:.1}% | {:.0} |",
            m("shakespeare_dropless"),
            m("rust_dropless"),
            m("shakespeare_mixed"),
            m("shakespeare_homog"),
            m("run_load"),
            m("peak_batch_load"),
            100.0 * m("train_dropped_shakespeare"),
            100.0 * m("train_dropped_rust"),
            m("tokens_per_s"),
        );
    }
}

/// The pre-registered test; returns the recommended rule.
fn criterion_table(md: &mut String, rows: &[Row]) -> String {
    let mut tests = Vec::new();
    for mode in ["mixed", "homog"] {
        for rule in RULES {
            let a = format!("{mode}/{rule}");
            let diffs = paired_diffs(rows, &a, &format!("{mode}/none"), "shakespeare_dropless");
            tests.push((a, diffs));
        }
    }
    let p: Vec<f64> = tests.iter().map(|(_, d)| paired_p(d)).collect();
    let adjusted = holm(&p);
    let _ = writeln!(
        md,
        "\n## Criterion: does the rule help the minority?\n\nPaired (same seed) difference to \
         the same batch mode's `none` in Shakespeare dropless test CE; 95% t interval; p of the \
         paired t test, Holm-adjusted over the {} tests.\n\n| rule | n | Δ shakespeare | Δ rust | p | \
         Holm p | helps? |\n|---|---|---|---|---|---|---|",
        tests.len()
    );
    let mut passing = Vec::new();
    for (((arm, diffs), p), adj) in tests.iter().zip(&p).zip(&adjusted) {
        let mode = arm.split('/').next().unwrap_or_default();
        let rust = paired_diffs(rows, arm, &format!("{mode}/none"), "rust_dropless");
        let helps = *adj < 0.05 && paired(diffs).0 < 0.0;
        if helps {
            passing.push((arm.clone(), mean_of(rows, arm, "shakespeare_dropless")));
        }
        let _ = writeln!(
            md,
            "| {arm} | {} | {} | {} | {p:.4} | {adj:.4} | {} |",
            diffs.len(),
            interval(diffs),
            interval(&rust),
            if helps { "yes" } else { "no" }
        );
    }
    passing.sort_by(|a, b| a.1.total_cmp(&b.1));
    match passing.first() {
        Some((arm, ce)) => {
            format!("`{arm}` (lowest minority dropless CE among the rules that pass, {ce:.4})")
        }
        None => "no rule passes the criterion; the library's default (the load-balancing loss, \
                 α = 0.01) stays"
            .to_string(),
    }
}

fn penalty_table(md: &mut String, rows: &[Row]) {
    let _ = writeln!(
        md,
        "\n## Is the homogeneous-batch penalty MoE-specific?\n\nPenalty = homog − mixed in \
         Shakespeare dropless test CE (paired by seed); MoE-specific when the paired interval of \
         (rule's penalty − dense's penalty) lies above 0.\n\n| rule | penalty | dense penalty | \
         difference | MoE-specific? |\n|---|---|---|---|---|"
    );
    let dense = paired_diffs(rows, "homog/dense", "mixed/dense", "shakespeare_dropless");
    for rule in ["none", "aux", "bias", "bias1e-2", "aux+bias"] {
        let pen = paired_diffs(
            rows,
            &format!("homog/{rule}"),
            &format!("mixed/{rule}"),
            "shakespeare_dropless",
        );
        let diff: Vec<f64> = pen.iter().zip(&dense).map(|(a, b)| a - b).collect();
        let (m, h) = paired(&diff);
        let _ = writeln!(
            md,
            "| {rule} | {} | {} | {} | {} |",
            interval(&pen),
            interval(&dense),
            interval(&diff),
            if m - h > 0.0 { "yes" } else { "no" }
        );
    }
}

/// `forest.png`: each rule's paired difference to `none` (minority, dropless) with its interval.
fn forest_plot(out: &Path, rows: &[Row]) {
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let mut series = Vec::new();
    for (i, mode) in ["mixed", "homog"].iter().enumerate() {
        for (j, rule) in RULES.iter().enumerate() {
            let diffs = paired_diffs(
                rows,
                &format!("{mode}/{rule}"),
                &format!("{mode}/none"),
                "shakespeare_dropless",
            );
            let (m, h) = paired(&diffs);
            let y = (i * RULES.len() + j) as f64;
            series.push(Series::new(
                format!("{mode}/{rule}: {m:+.3} ± {h:.3}"),
                vec![(m - h, y), (m, y), (m + h, y)],
                j + 1,
            ));
        }
    }
    series.push(Series::new(
        "0 (no effect)",
        vec![(0.0, -0.5), (0.0, 7.5)],
        0,
    ));
    plot::lines(
        &out.join("forest.png"),
        "Minority test CE, rule − none (dropless; 95% intervals)",
        "Δ nats per byte (negative: the rule helps Shakespeare)",
        "test (mixed rows 0–3, homogeneous 4–7)",
        &series,
        None,
    )
    .unwrap_or_else(|e| fail(&e));
}
