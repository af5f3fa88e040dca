//! Round 2, study 1 — headroom first, then Switch vs dense, on the multi-domain corpus
//! (`build_corpus`: Shakespeare, Rust, prose; byte-level), per step and FLOP-matched.
//!
//! Arms (every other layer sparse, top-1, the same tokens, constant LR after a 5% warm-up and a
//! linear cooldown over the last 10%, so the curves compare step by step until the cooldown):
//!
//! - `dense`: one expert of width f at the sparse positions (a dense FFN; E = 1 drops nothing);
//! - headroom: `dense-wide` (one expert of width 8·f at the sparse positions, the dense layers at
//!   f: parameter-matched to Switch E = 8, 8× its FLOPs there: the ceiling) and `dense-no-ffn`
//!   (the sparse positions' FFNs zeroed and frozen: the floor);
//! - `switch-E4`, `switch-E8`, `switch-E16`: E experts of width f, top-1 (FLOP-matched);
//! - `shared-E8`: 8 routed experts of width f/2 plus one always-on shared expert of width f/2,
//!   gated (Qwen2-MoE style; active FLOPs those of dense).
//!
//! Criterion, fixed before the runs: an arm beats dense when the 95% confidence interval of its
//! paired (same seed) difference in test cross-entropy (all domains, token-weighted) lies below
//! zero. The headroom probe is informative when the ceiling beats dense that way.
//!
//! ```sh
//! cargo run --release --features experiments --example build_corpus
//! cargo run --release --features experiments,tch --example multi_domain    # LIBTORCH as in README
//! ```

use switch_moe::lab as common;

use std::fmt::Write as _;
use std::path::Path;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_multidomain, select_arms};
use common::plot::{self, Series, color_of};
use common::run::{RunLog, base_spec, lm_config, mean_curve, seed_band, train_run};
use common::stats::paired;
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Headroom probe and Switch vs dense on the multi-domain corpus")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Arms to run, in order (default: all).
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
}

const ARMS: [&str; 7] = [
    "dense",
    "dense-wide",
    "dense-no-ffn",
    "switch-E4",
    "switch-E8",
    "switch-E16",
    "shared-E8",
];

/// Test cross-entropy over all domains, token-weighted, at the eval capacity factor (round 2's
/// measure).
fn test_all(log: &RunLog) -> f64 {
    weighted(log, |d| d.test_ce)
}

/// The same, dropless (round 3's primary measure).
fn test_all_dropless(log: &RunLog) -> f64 {
    weighted(log, |d| d.test_ce_dropless)
}

fn weighted(log: &RunLog, value: fn(&switch_moe::lab::run::DomainEval) -> f64) -> f64 {
    let tokens: usize = log.final_eval.iter().map(|d| d.tokens).sum();
    log.final_eval
        .iter()
        .map(|d| value(d) * d.tokens as f64)
        .sum::<f64>()
        / tokens.max(1) as f64
}

fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("multi_domain");
    let corpus = load_multidomain(args.common.data.as_deref());
    let device = default_device();
    let (d, f, layers, seq, batch, _) = args.common.scale.standard_size();
    // 800 steps: the budget R2.1 and R3.1 report.
    let steps = args.common.steps.unwrap_or(800);
    let seeds = args.common.seeds_or(&[1, 2, 3]);
    let arms = select_arms(args.arms.as_deref(), &ARMS, &ARMS);

    let mut logs: Vec<(String, u64, RunLog)> = Vec::new();
    for &seed in &seeds {
        for arm in &arms {
            let model = match arm.as_str() {
                "dense" | "dense-no-ffn" => lm_config(256, seq, d, f, layers, 1),
                "dense-wide" => {
                    let mut c = lm_config(256, seq, d, 8 * f, layers, 1);
                    c.encoder = c.encoder.with_dense_d_ff(Some(f));
                    c
                }
                "shared-E8" => {
                    let mut c = lm_config(256, seq, d, f / 2, layers, 8);
                    c.encoder = c
                        .encoder
                        .map_moe(|m| m.with_num_shared_experts(1).with_shared_gate(true));
                    c.encoder = c.encoder.with_dense_d_ff(Some(f));
                    c
                }
                e => {
                    let n: usize = e.trim_start_matches("switch-E").parse().unwrap();
                    lm_config(256, seq, d, f, layers, n)
                }
            };
            let mut spec = base_spec(format!("{arm}_seed{seed}"), model, seed, steps, batch);
            spec.cooldown = Some(0.1);
            spec.eval_windows = 512;
            spec.remove_sparse_ffn = arm == "dense-no-ffn";
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push((arm.clone(), seed, log));
            write_final(&out, &logs);
        }
    }
    summarize(&out, &arms, &seeds, &logs, steps);
}

/// `final.csv`: one row per (arm, seed, domain) with the test cross-entropy; rewritten after
/// every run, so an interrupted study keeps what it finished.
fn write_final(out: &Path, logs: &[(String, u64, RunLog)]) {
    let mut csv =
        String::from("arm,seed,domain,test_ce,tokens,params,tokens_per_s,test_ce_dropless\n");
    for (arm, seed, log) in logs {
        for d in &log.final_eval {
            let _ = writeln!(
                csv,
                "{arm},{seed},{},{:.5},{},{},{:.0},{:.5}",
                d.name, d.test_ce, d.tokens, log.num_params, log.tokens_per_s, d.test_ce_dropless
            );
        }
    }
    std::fs::write(out.join("final.csv"), csv).unwrap_or_else(|e| fail(&e.to_string()));
}

/// The summary table and figures from the runs' CSVs.
// Over 100 lines on purpose: one table and its figures, each section used once.
fn summarize(
    out: &Path,
    arms: &[String],
    seeds: &[u64],
    logs: &[(String, u64, RunLog)],
    steps: usize,
) {
    let run = |arm: &str, seed: u64| {
        logs.iter()
            .find(|(a, s, _)| a == arm && *s == seed)
            .map(|(_, _, l)| l)
    };
    let runs_of =
        |arm: &str| -> Vec<&RunLog> { seeds.iter().filter_map(|&s| run(arm, s)).collect() };
    let domains: Vec<String> = logs
        .first()
        .map(|(_, _, l)| l.final_eval.iter().map(|d| d.name.clone()).collect())
        .unwrap_or_default();

    // Curves (mean over seeds) and their paired differences to dense.
    let series: Vec<Series> = arms
        .iter()
        .map(|a| {
            let runs = runs_of(a);
            Series::new(
                a.clone(),
                mean_curve(&runs, false, |p| p.valid_ce),
                color_of(a, &ARMS),
            )
            .with_band(seed_band(&runs, false, |p| p.valid_ce))
        })
        .collect();
    let (lo, hi) = plot::loss_range(&series);
    plot::lines(
        &out.join("valid_loss.png"),
        &format!(
            "Validation loss (all domains), mean of {} seeds",
            seeds.len()
        ),
        "step",
        "validation cross-entropy (nats/byte)",
        &series,
        Some((lo, hi)),
    )
    .unwrap_or_else(|e| fail(&e));
    if arms.iter().any(|a| a == "dense") {
        let dense = mean_curve(&runs_of("dense"), false, |p| p.valid_ce);
        let diffs: Vec<Series> = series
            .iter()
            .filter(|s| s.label != "dense")
            .map(|s| {
                Series::new(
                    format!("{} − dense", s.label),
                    s.points
                        .iter()
                        .zip(&dense)
                        .map(|(a, b)| (a.0, a.1 - b.1))
                        .collect(),
                    s.color,
                )
            })
            .collect();
        if !diffs.is_empty() {
            plot::lines(
                &out.join("valid_loss_minus_dense.png"),
                "Validation loss minus dense's, mean of paired seeds",
                "step",
                "Δ cross-entropy (nats/byte)",
                &diffs,
                None,
            )
            .unwrap_or_else(|e| fail(&e));
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| arm | params | test CE, all (mean) | all, dropless | {} | paired Δ vs dense (95% CI) | beats dense? | dropless Δ vs dense | steps to dense's pre-cooldown loss | tokens/s |",
        domains
            .iter()
            .map(|d| format!("test {d}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(table, "|{}", "---|".repeat(9 + domains.len()));
    let constant_until = logs
        .first()
        .map_or(steps, |(_, _, l)| l.spec.constant_until());
    // Dense's loss at the end of the constant phase, mean over seeds.
    let dense_mark = {
        let d = mean_curve(&runs_of("dense"), false, |p| p.valid_ce);
        d.iter()
            .rev()
            .find(|p| p.0 as usize <= constant_until)
            .map(|p| (p.0, p.1))
    };
    for arm in arms {
        let runs = runs_of(arm);
        if runs.is_empty() {
            continue;
        }
        let mean_all = runs.iter().map(|r| test_all(r)).sum::<f64>() / runs.len() as f64;
        let mean_dropless =
            runs.iter().map(|r| test_all_dropless(r)).sum::<f64>() / runs.len() as f64;
        let dropless_diffs: Vec<f64> = seeds
            .iter()
            .filter_map(|&s| {
                Some(test_all_dropless(run(arm, s)?) - test_all_dropless(run("dense", s)?))
            })
            .collect();
        let dropless_delta = if arm == "dense" || dropless_diffs.is_empty() {
            "—".to_string()
        } else {
            let (m, h) = paired(&dropless_diffs);
            format!("{m:+.4} ± {h:.4}")
        };
        let per_domain: Vec<String> = domains
            .iter()
            .map(|name| {
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| {
                        r.final_eval
                            .iter()
                            .find(|d| &d.name == name)
                            .map(|d| d.test_ce)
                    })
                    .collect();
                format!("{:.4}", v.iter().sum::<f64>() / v.len().max(1) as f64)
            })
            .collect();
        let diffs: Vec<f64> = seeds
            .iter()
            .filter_map(|&s| Some(test_all(run(arm, s)?) - test_all(run("dense", s)?)))
            .collect();
        let (delta, ci) = if arm == "dense" || diffs.is_empty() {
            ("—".to_string(), "—".to_string())
        } else {
            let (m, h) = paired(&diffs);
            let verdict = if m + h < 0.0 {
                "yes"
            } else if m - h > 0.0 {
                "no (worse)"
            } else {
                "no (CI spans 0)"
            };
            (
                format!("{m:+.4} ± {h:.4} (n = {})", diffs.len()),
                verdict.to_string(),
            )
        };
        let reach = dense_mark.and_then(|(step, loss)| {
            let curve = mean_curve(&runs, false, |p| p.valid_ce);
            curve
                .iter()
                .find(|p| p.0 as usize <= constant_until && p.1 <= loss)
                .map(|p| format!("{:.0} ({:.2}×)", p.0, step / p.0))
        });
        let tps = runs.iter().map(|r| r.tokens_per_s).sum::<f64>() / runs.len() as f64;
        let _ = writeln!(
            table,
            "| {arm} | {:.2} M | {mean_all:.4} | {mean_dropless:.4} | {} | {delta} | {ci} | {dropless_delta} | {} | {tps:.0} |",
            runs[0].num_params as f64 / 1e6,
            per_domain.join(" | "),
            reach.unwrap_or_else(|| "—".into()),
        );
    }
    let wall: f64 = logs.iter().map(|(_, _, l)| l.wall_s).sum();
    let summary = format!(
        "{table}\nTest cross-entropy in nats per byte on the full test split of each domain (all: \
         token-weighted over domains), mean over seeds {seeds:?}; Δ is the mean of the per-seed \
         differences to dense with a 95% t interval. {steps} steps of {} tokens; constant LR \
         until step {constant_until}. Backend {}, total wall {:.1} min.\n",
        logs.first()
            .map_or(0, |(_, _, l)| l.spec.batch_size * l.spec.model.max_seq_len),
        switch_moe::backend::NAME,
        wall / 60.0
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
}
