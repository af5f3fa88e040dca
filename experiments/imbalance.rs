//! Round 2, study 2 — specialisation and imbalance on the multi-domain corpus.
//!
//! 1. **Specialisation.** Does an expert come to serve a domain? Switch E = 8 trained on the
//!    natural mixture of the three domains (`natural/aux`); per sparse layer, the share of each
//!    domain's test tokens that each expert takes first (heatmap) and the normalised mutual
//!    information (NMI) between expert and domain, on a probe of equal size per domain.
//! 2. **Imbalance.** Rust 95% / Shakespeare 5% of the training windows, with **mixed** batches
//!    (each window draws its domain) and with **domain-homogeneous** batches (each batch draws
//!    one), under four balancing rules: none (α = 0), the load-balancing loss (α = 0.01),
//!    aux-loss-free bias balancing (u = 1e-3, α = 0), and both.
//!
//! 3. **Expert choice** sees the whole batch, so it leaks future tokens in a causal LM (the
//!    library refuses it there). The `enc-*` arms therefore train a bidirectional masked-byte
//!    model (15% of the positions masked, only those scored) on the same 95/5 mixture, and
//!    compare expert choice with the four token-choice rules there (`--arms enc-…`).
//!
//! Criterion, fixed before the runs: a balancing rule helps the minority when the 95% t interval
//! of its paired (same seed) difference in Shakespeare test cross-entropy to the same batch
//! mode's `none` arm lies below zero; "balance" is judged on the run-level load (E · the largest
//! expert's share of all the run's tokens, 1 = balanced) and on the largest per-batch load.
//!
//! ```sh
//! cargo run --release --features experiments --example build_corpus
//! cargo run --release --features experiments,tch --example imbalance    # LIBTORCH as in README
//! cargo run --release --features experiments,tch --example imbalance -- \
//!     --out experiments/results/imbalance-encoder --arms enc-mixed/none,enc-mixed/aux,\
//!     enc-mixed/bias,enc-mixed/aux+bias,enc-mixed/ec,enc-homog/aux,enc-homog/ec
//! ```

use switch_moe::lab as common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clap::Parser;
use common::cli::{CommonArgs, fail, load_multidomain, select_arms};
use common::plot::{self, Matrix, Series, color_of};
use common::run::{Mixture, Objective, RunLog, base_spec, lm_config, mean_and_band, train_run};
use common::stats::{nmi, paired};
use switch_moe::backend::{SelectedAutodiff, default_device};

#[derive(Parser, Debug)]
#[command(about = "Expert specialisation by domain, and balancing under a 95/5 domain mixture")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Arms to run, in order (default: the causal-LM arms).
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
    /// Train nothing: rewrite the report (summary.md, batch_modes.md, the PNGs) from the CSVs in
    /// the output directory (e.g. of an interrupted study).
    #[arg(long)]
    replot: bool,
}

/// Every arm: batch mode / balancing rule. `enc-*` arms train a bidirectional masked-byte
/// model (the only place expert choice is sound); the others a causal LM.
const ARMS: [&str; 16] = [
    "natural/aux",
    "mixed/none",
    "mixed/aux",
    "mixed/bias",
    "mixed/aux+bias",
    "homog/none",
    "homog/aux",
    "homog/bias",
    "homog/aux+bias",
    "enc-mixed/none",
    "enc-mixed/aux",
    "enc-mixed/bias",
    "enc-mixed/aux+bias",
    "enc-mixed/ec",
    "enc-homog/aux",
    "enc-homog/ec",
];

/// The causal-LM arms, run by default; the encoder arms run with `--arms` (see the README).
const DEFAULT_ARMS: usize = 9;

/// Domain indices in the corpus (see `load_multidomain`).
const SHAKESPEARE: usize = 0;
const RUST: usize = 1;
const PROSE: usize = 2;
/// Share of the minority domain in the 95/5 arms.
const MINORITY_SHARE: f64 = 0.05;
/// Experts in every arm.
const EXPERTS: usize = 8;
/// Share of the positions masked in the encoder arms (BERT's 15%).
const MASK_RATE: f64 = 0.15;

fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("imbalance");
    let corpus = load_multidomain(args.common.data.as_deref());
    let device = default_device();
    let (d, f, layers, seq, batch, _) = args.common.scale.standard_size();
    // 600 steps: the budget R2.2 reports.
    let steps = args.common.steps.unwrap_or(600);
    let seeds = args.common.seeds_or(&[1, 2, 3]);
    let arms = select_arms(args.arms.as_deref(), &ARMS, &ARMS[..DEFAULT_ARMS]);
    if args.replot {
        report(&out, "Redrawn from the CSVs (--replot).");
        return;
    }

    let mut logs: Vec<(String, u64, RunLog)> = Vec::new();
    for &seed in &seeds {
        for arm in &arms {
            let (mode, rule) = arm.split_once('/').expect("arm names are mode/rule");
            let encoder = mode.starts_with("enc-");
            // The masked objective's mask token is id 256, after the 256 bytes.
            let vocab = if encoder { 257 } else { 256 };
            let mut model = lm_config(vocab, seq, d, f, layers, EXPERTS);
            let aux = rule.contains("aux");
            let bias = rule.contains("bias");
            model.aux_coef = if aux { 0.01 } else { 0.0 };
            if bias {
                model.encoder = model.encoder.map_moe(|m| m.with_expert_bias_rate(1e-3));
            }
            let mut spec = base_spec(
                format!("{}_seed{seed}", file_name(arm)),
                model,
                seed,
                steps,
                batch,
            );
            spec.cooldown = Some(0.1);
            spec.eval_windows = 256;
            spec.mixture = match mode {
                "natural" => None,
                m => Some(Mixture {
                    weights: vec![(RUST, 1.0 - MINORITY_SHARE), (SHAKESPEARE, MINORITY_SHARE)],
                    homogeneous: m.ends_with("homog"),
                }),
            };
            if encoder {
                spec.objective = Objective::Masked { rate: MASK_RATE };
            }
            // Expert choice balances by construction: no auxiliary loss (Zhou et al. 2022).
            spec.expert_choice = rule == "ec";
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            logs.push((arm.clone(), seed, log));
            write_final(&out, &logs);
        }
    }
    let wall: f64 = logs.iter().map(|(_, _, l)| l.wall_s).sum();
    report(
        &out,
        &format!(
            "{steps} steps of {} tokens; backend {}, total wall {:.1} min.",
            batch * seq,
            switch_moe::backend::NAME,
            wall / 60.0
        ),
    );
}

/// `mixed/aux+bias` → `mixed_aux-bias` (file names).
fn file_name(arm: &str) -> String {
    arm.replace('/', "_").replace('+', "-")
}

/// Run-level routing of a log: each sparse layer's mean token fractions over the run `[layer][E]`.
fn run_fractions(log: &RunLog) -> Vec<Vec<f64>> {
    let layers = log.routing.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let rows: Vec<_> = log.routing.iter().filter(|r| r.layer == l).collect();
            let e = rows.first().map_or(0, |r| r.fractions.len());
            (0..e)
                .map(|i| rows.iter().map(|r| r.fractions[i]).sum::<f64>() / rows.len() as f64)
                .collect()
        })
        .collect()
}

/// Experts that took less than 1% of their fair share over the last tenth of the run (the
/// library's rule, `routing_stats::is_dead_expert`), summed over sparse layers.
fn dead_experts(log: &RunLog) -> usize {
    let last = log.routing.last().map_or(0, |r| r.step);
    let from = last - last / 10;
    let layers = log.routing.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    (0..layers)
        .map(|l| {
            let rows: Vec<_> = log
                .routing
                .iter()
                .filter(|r| r.layer == l && r.step > from)
                .collect();
            let e = rows.first().map_or(0, |r| r.fractions.len());
            (0..e)
                .filter(|&i| {
                    let f = rows.iter().map(|r| r.fractions[i]).sum::<f64>() / rows.len() as f64;
                    switch_moe::routing_stats::is_dead_expert(f, e)
                })
                .count()
        })
        .sum()
}

/// NMI per sparse layer between expert and domain over `domains` (equal probe size each).
fn layer_nmi(log: &RunLog, domains: &[usize]) -> Vec<f64> {
    log.domain_routing
        .iter()
        .map(|per_domain| {
            let table: Vec<Vec<f64>> = domains.iter().map(|&d| per_domain[d].clone()).collect();
            nmi(&table)
        })
        .collect()
}

fn test_ce(log: &RunLog, domain: usize) -> f64 {
    log.final_eval.get(domain).map_or(f64::NAN, |d| d.test_ce)
}

fn dropped_share(log: &RunLog, domain: usize) -> f64 {
    log.domain_drops
        .iter()
        .find(|d| d.0 == domain)
        .map_or(f64::NAN, |d| d.2 / d.1.max(1.0))
}

/// `final.csv`: one row per (arm, seed) with every headline number; rewritten after every run,
/// so an interrupted study keeps what it finished. `routing_by_domain.csv`: the probe's counts.
fn write_final(out: &Path, logs: &[(String, u64, RunLog)]) {
    let mut csv = String::from(
        "arm,seed,test_shakespeare,test_rust,test_prose,mean_batch_load,peak_batch_load,\
         run_load_l1,run_load_l2,dead_experts,dropped_shakespeare,dropped_rust,nmi2_l1,nmi2_l2,\
         nmi3_l1,nmi3_l2,tokens_per_s\n",
    );
    let mut routing = String::from("arm,seed,layer,domain,expert,count\n");
    for (arm, seed, log) in logs {
        let loads: Vec<f64> = run_fractions(log)
            .iter()
            .map(|f| f.iter().copied().fold(0.0, f64::max) * f.len() as f64)
            .collect();
        let mean_load =
            log.points.iter().map(|p| p.max_load).sum::<f64>() / log.points.len().max(1) as f64;
        let n2 = layer_nmi(log, &[RUST, SHAKESPEARE]);
        let n3 = layer_nmi(log, &[SHAKESPEARE, RUST, PROSE]);
        let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            csv,
            "{arm},{seed},{:.5},{:.5},{:.5},{mean_load:.4},{:.4},{:.4},{:.4},{},{:.5},{:.5},\
             {:.4},{:.4},{:.4},{:.4},{:.0}",
            test_ce(log, SHAKESPEARE),
            test_ce(log, RUST),
            test_ce(log, PROSE),
            log.peak_load,
            at(&loads, 0),
            at(&loads, 1),
            dead_experts(log),
            dropped_share(log, SHAKESPEARE),
            dropped_share(log, RUST),
            at(&n2, 0),
            at(&n2, 1),
            at(&n3, 0),
            at(&n3, 1),
            log.tokens_per_s
        );
        for (l, per_domain) in log.domain_routing.iter().enumerate() {
            for (d, counts) in per_domain.iter().enumerate() {
                for (e, c) in counts.iter().enumerate() {
                    let _ = writeln!(routing, "{arm},{seed},{l},{d},{e},{c}");
                }
            }
        }
    }
    std::fs::write(out.join("final.csv"), csv).unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(out.join("routing_by_domain.csv"), routing)
        .unwrap_or_else(|e| fail(&e.to_string()));
}

/// The report, from the CSVs in `out` alone (so `--replot` and an interrupted study give the
/// same): `summary.md`, `expert_by_domain.png`, `valid_loss.png`, `max_load.png`,
/// `batch_modes.md`. `footer` adds what only the live run knows (wall time).
// Over 100 lines on purpose: the report's tables and figures in the order summary.md shows them.
fn report(out: &Path, footer: &str) {
    let finals = read_final_csv(out);
    let arms: Vec<String> = ARMS
        .iter()
        .map(|a| a.to_string())
        .filter(|a| finals.keys().any(|(x, _)| x == a))
        .collect();
    let mut seeds: Vec<u64> = finals.keys().map(|(_, s)| *s).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let Some(&first_seed) = seeds.first() else {
        fail(&format!("no runs in {}", out.join("final.csv").display()));
    };
    draw_heatmaps(out, &arms, first_seed, &read_routing_csv(out));

    // Curves (validation loss, per-batch load) from the per-run CSVs, mean and seed range.
    let curves = |column: &str| -> Vec<Series> {
        arms.iter()
            .map(|arm| {
                let runs: Vec<Vec<(f64, f64)>> = seeds
                    .iter()
                    .filter(|s| finals.contains_key(&(arm.clone(), **s)))
                    .map(|s| read_curve(out, &format!("{}_seed{s}", file_name(arm)), column))
                    .collect();
                let (mean, band) = mean_and_band(&runs);
                Series::new(arm.clone(), mean, color_of(arm, &ARMS)).with_band(band)
            })
            .collect()
    };
    plot::lines(
        &out.join("valid_loss.png"),
        &format!(
            "Validation loss (all three domains), mean of {} seeds, band: seed range",
            seeds.len()
        ),
        "step",
        "validation cross-entropy (nats/byte)",
        &curves("valid_ce"),
        None,
    )
    .unwrap_or_else(|e| fail(&e));
    plot::lines(
        &out.join("max_load.png"),
        "Per-batch load E·max f (mean of the sparse layers and of the steps since the last point)",
        "step",
        "E · max_i f_i (1 = balanced)",
        &curves("max_load"),
        Some((1.0, 1.0)),
    )
    .unwrap_or_else(|e| fail(&e));

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| arm | seeds | test shakespeare (minority) | Δ vs same-mode none, else aux (95% CI) | \
         test rust (majority) | Δ (95% CI) | test prose (unseen) | per-batch load mean / peak | \
         run load L1 / L2 | dead experts | dropped shakespeare / rust | NMI L1 / L2 |"
    );
    let _ = writeln!(table, "|{}", "---|".repeat(12));
    let value = |arm: &str, seed: u64, column: &str| -> Option<f64> {
        finals.get(&(arm.to_string(), seed))?.get(column).copied()
    };
    for arm in &arms {
        let present: Vec<u64> = seeds
            .iter()
            .copied()
            .filter(|s| finals.contains_key(&(arm.clone(), *s)))
            .collect();
        let mean = |column: &str| {
            let v: Vec<f64> = present
                .iter()
                .filter_map(|s| value(arm, *s, column))
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let baseline = arm.split_once('/').and_then(|(m, _)| {
            [format!("{m}/none"), format!("{m}/aux")]
                .into_iter()
                .find(|b| arms.contains(b))
                .filter(|b| b != arm)
        });
        let delta = |column: &str| -> String {
            let Some(b) = &baseline else {
                return "—".into();
            };
            let diffs: Vec<f64> = present
                .iter()
                .filter_map(|s| Some(value(arm, *s, column)? - value(b, *s, column)?))
                .collect();
            if diffs.is_empty() {
                return "—".into();
            }
            let (m, h) = paired(&diffs);
            let bold = if m + h < 0.0 { "**" } else { "" };
            format!("{bold}{m:+.4} ± {h:.4}{bold} (vs {b})")
        };
        let natural = arm.starts_with("natural");
        let drops = if natural {
            "—".to_string()
        } else {
            format!(
                "{:.1}% / {:.1}%",
                100.0 * mean("dropped_shakespeare"),
                100.0 * mean("dropped_rust")
            )
        };
        let nmi_cols = if natural {
            ("nmi3_l1", "nmi3_l2")
        } else {
            ("nmi2_l1", "nmi2_l2")
        };
        let _ = writeln!(
            table,
            "| {arm} | {} | {:.4} | {} | {:.4} | {} | {:.4} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {drops} | {:.3} / {:.3} |",
            present.len(),
            mean("test_shakespeare"),
            delta("test_shakespeare"),
            mean("test_rust"),
            delta("test_rust"),
            mean("test_prose"),
            mean("mean_batch_load"),
            mean("peak_batch_load"),
            mean("run_load_l1"),
            mean("run_load_l2"),
            mean("dead_experts"),
            mean(nmi_cols.0),
            mean(nmi_cols.1),
        );
    }
    let summary = format!(
        "{table}\nTest cross-entropy in nats per byte on each domain's full test split, mean over \
         the seeds; Δ: mean of the per-seed differences to the same batch mode's `none` arm \
         (`aux` where `none` did not run) with a 95% t interval, bold when it lies below 0; \
         `enc-*` arms: masked-byte cross-entropy (15% of positions) of a bidirectional model. \
         Loads are E · max_i f_i (1 = balanced, {EXPERTS} = collapse): per batch (mean over the \
         run, and the largest of any batch and layer) and over the whole run per sparse layer. \
         Dead: experts under 1% of their fair share in the last tenth of the run (both layers). \
         Dropped: share of the domain's training tokens that no expert processed (capacity \
         factor 1.25), both layers. NMI between first-choice (expert choice: most probable) \
         expert and domain on {} test tokens per domain (natural: three domains; 95/5 arms: \
         rust and shakespeare). {footer}\n",
        common::eval::PROBE_TOKENS,
    );
    println!("{summary}");
    std::fs::write(out.join("summary.md"), summary).unwrap_or_else(|e| fail(&e.to_string()));
    println!("{}", batch_mode_table(out, &finals));
}

/// `final.csv`: (arm, seed) → column → value.
type Finals = BTreeMap<(String, u64), BTreeMap<String, f64>>;

/// A report input file, or the program's one error line.
fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())))
}

/// `final.csv` as (arm, seed) → column → value.
fn read_final_csv(out: &Path) -> Finals {
    let path = out.join("final.csv");
    let text = read_text(&path);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let mut map = BTreeMap::new();
    for line in lines {
        let c: Vec<&str> = line.split(',').collect();
        let (Some(arm), Some(Ok(seed))) = (c.first(), c.get(1).map(|v| v.parse::<u64>())) else {
            fail(&format!("{}: bad line {line:?}", path.display()));
        };
        let values = header
            .iter()
            .zip(&c)
            .skip(2)
            .filter_map(|(h, v)| Some((h.to_string(), v.parse::<f64>().ok()?)))
            .collect();
        map.insert((arm.to_string(), seed), values);
    }
    map
}

/// (step, value of `column`) from a run's CSV (`<name>.csv`).
fn read_curve(out: &Path, name: &str, column: &str) -> Vec<(f64, f64)> {
    let path = out.join(format!("{name}.csv"));
    let text = read_text(&path);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let Some(col) = header.iter().position(|h| *h == column) else {
        fail(&format!("{}: no column {column}", path.display()));
    };
    lines
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            Some((c.first()?.parse().ok()?, c.get(col)?.parse().ok()?))
        })
        .collect()
}

/// `routing_by_domain.csv` as (arm, seed) → counts `[layer][domain][expert]`.
fn read_routing_csv(out: &Path) -> BTreeMap<(String, u64), Vec<Vec<Vec<f64>>>> {
    let path = out.join("routing_by_domain.csv");
    let text = read_text(&path);
    let mut map: BTreeMap<(String, u64), Vec<Vec<Vec<f64>>>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let parsed = (|| -> Option<_> {
            Some((
                c.first()?.to_string(),
                c.get(1)?.parse::<u64>().ok()?,
                c.get(2)?.parse::<usize>().ok()?,
                c.get(3)?.parse::<usize>().ok()?,
                c.get(4)?.parse::<usize>().ok()?,
                c.get(5)?.parse::<f64>().ok()?,
            ))
        })();
        let Some((arm, seed, l, d, e, count)) = parsed else {
            fail(&format!("{}: bad line {line:?}", path.display()));
        };
        let t = map.entry((arm, seed)).or_default();
        if t.len() <= l {
            t.resize(l + 1, Vec::new());
        }
        if t[l].len() <= d {
            t[l].resize(d + 1, Vec::new());
        }
        if t[l][d].len() <= e {
            t[l][d].resize(e + 1, 0.0);
        }
        t[l][d][e] = count;
    }
    map
}

/// `expert_by_domain.png`: per arm and sparse layer, the share of each domain's probe tokens
/// whose first choice is each expert, for one seed, with the NMI in the title.
fn draw_heatmaps(
    out: &Path,
    arms: &[String],
    seed: u64,
    routing: &BTreeMap<(String, u64), Vec<Vec<Vec<f64>>>>,
) {
    let domain_names = ["shakespeare", "rust", "prose"];
    let mut panels = Vec::new();
    for arm in arms {
        let Some(per_layer) = routing.get(&(arm.clone(), seed)) else {
            continue;
        };
        let domains: &[usize] = if arm.starts_with("natural") {
            &[SHAKESPEARE, RUST, PROSE]
        } else {
            &[SHAKESPEARE, RUST]
        };
        for (l, per_domain) in per_layer.iter().enumerate() {
            let values: Vec<Vec<f64>> = domains
                .iter()
                .map(|&d| {
                    let n: f64 = per_domain[d].iter().sum();
                    per_domain[d].iter().map(|c| c / n.max(1.0)).collect()
                })
                .collect();
            let table: Vec<Vec<f64>> = domains.iter().map(|&d| per_domain[d].clone()).collect();
            panels.push(Matrix {
                title: format!("{arm} · sparse layer {} · NMI {:.3}", l + 1, nmi(&table)),
                rows: domains
                    .iter()
                    .map(|&d| domain_names[d].to_string())
                    .collect(),
                col_desc: "expert (first choice)".into(),
                row_desc: "test domain".into(),
                values,
            });
        }
    }
    if panels.is_empty() {
        return;
    }
    plot::matrices(
        &out.join("expert_by_domain.png"),
        &format!("Share of each domain's test tokens per expert (%), seed {seed}"),
        &panels,
        2,
        "share of the domain's tokens",
    )
    .unwrap_or_else(|e| fail(&e));
}

/// `batch_modes.md`: for every rule run with both batch modes, the paired (same seed) difference
/// homogeneous − mixed of the minority's and the majority's test loss, from `final.csv`.
fn batch_mode_table(out: &Path, finals: &Finals) -> String {
    // (arm, seed) → (shakespeare, rust)
    let rows: BTreeMap<(String, u64), (f64, f64)> = finals
        .iter()
        .filter_map(|(key, v)| {
            Some((
                key.clone(),
                (*v.get("test_shakespeare")?, *v.get("test_rust")?),
            ))
        })
        .collect();
    let mut table = String::from(
        "| rule | homogeneous − mixed, shakespeare (95% CI) | homogeneous − mixed, rust (95% CI) | seeds |\n|---|---|---|---|\n",
    );
    for (mixed, homog) in [("mixed", "homog"), ("enc-mixed", "enc-homog")] {
        for rule in ["none", "aux", "bias", "aux+bias", "ec"] {
            let (m, h) = (format!("{mixed}/{rule}"), format!("{homog}/{rule}"));
            let pairs: Vec<((f64, f64), (f64, f64))> = rows
                .iter()
                .filter(|((a, _), _)| *a == h)
                .filter_map(|((_, s), hv)| Some((*hv, *rows.get(&(m.clone(), *s))?)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let fmt = |diffs: Vec<f64>| {
                let (mean, half) = paired(&diffs);
                format!("{mean:+.4} ± {half:.4}")
            };
            let _ = writeln!(
                table,
                "| {h} − {m} | {} | {} | {} |",
                fmt(pairs.iter().map(|(h, m)| h.0 - m.0).collect()),
                fmt(pairs.iter().map(|(h, m)| h.1 - m.1).collect()),
                pairs.len()
            );
        }
    }
    std::fs::write(out.join("batch_modes.md"), &table).unwrap_or_else(|e| fail(&e.to_string()));
    table
}
