//! Round 3, study R3.3 — is the degradation specific to MoE?
//!
//! R2.4 saw E = 16 over-fit 1.8× as fast as dense after its best point at dropout 0, on n = 2,
//! without a parameter-matched dense arm. Here, at dropout 0 on R2.4's setting (a slice of
//! tiny-shakespeare in 1,000-character blocks, 8/1/1 train/valid/test, d 128, 4 layers with every
//! other FFN sparse, constant lr 2e-3 after 50 warm-up steps, no z-loss), five arms on 5 seeds:
//! `dense` (E = 1), `dense-wide` (the sparse positions one FFN of 16 · d_ff: parameter-matched to
//! E = 16), `e16`, `e16-xd0.4` (expert-only dropout 0.4, the Switch paper's Table 4 setting for
//! fine-tuning), and `e16-d0.1` (dropout 0.1 everywhere, R2.4's fix). Long enough (48 epochs) that
//! the curves turn; a run whose best validation point is among its last two says it has not.
//!
//! Metrics: the slope of the validation loss after its best point (least squares over the points
//! after the best, nats per epoch), test loss at the best point and at the end, and the
//! repeated-4-gram rate of samples generated from the best and the final model (3 samples of 300
//! characters per run, shown in samples.md).
//!
//! Criterion (pre-registered in experiments/README.md, R3.3): the degradation is expert-specific
//! only if the 95% interval of the paired (same seed) difference of slopes (e16 − dense-wide) lies
//! above 0.
//!
//! ```sh
//! cargo run --release --features experiments,tch --example degradation3   # LIBTORCH as README
//! cargo run --release --features experiments --example degradation3 -- --report
//! ```

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use switch_moe::SwitchLm;
use switch_moe::backend::{SelectedAutodiff, default_device};
use switch_moe::data::TextTokenizer;
use switch_moe::lab::cli::{CommonArgs, Corpus, DomainSplits, fail, select_arms};
use switch_moe::lab::eval::{evaluate_all, repeated_ngram_rate, sample};
use switch_moe::lab::plot::{self, Series};
use switch_moe::lab::run::{RunLog, base_spec, lm_config, train_run_with};
use switch_moe::lab::stats::paired;
use switch_moe::lab::study::{Metrics, Row, mean_of, paired_diffs, read_final, run_study};

#[derive(Parser, Debug)]
#[command(about = "Is the over-fitting of R2.4 specific to experts? (study R3.3)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Arms to run (default: all five).
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
    /// Characters of tiny-shakespeare to use (R2.4's 60,000).
    #[arg(long, default_value_t = 60_000)]
    chars: usize,
    /// Epochs (passes over the training blocks).
    #[arg(long, default_value_t = 48)]
    epochs: usize,
    /// Train nothing: write the report from final.csv and the evaluation CSVs.
    #[arg(long)]
    report: bool,
}

const ARMS: [&str; 5] = ["dense", "dense-wide", "e16", "e16-xd0.4", "e16-d0.1"];
const D_MODEL: usize = 128;
const SEQ: usize = 64;
const BATCH: usize = 32;
/// Samples per model and their length in characters.
const SAMPLES: usize = 3;
const SAMPLE_CHARS: usize = 300;

/// R2.4's slice: 1,000-token blocks, 8 of 10 to training, the 9th to validation, the 10th to test.
fn interleaved_splits(ids: &[u32], vocab_size: usize) -> Corpus {
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (i, block) in ids.chunks(1000).enumerate() {
        match i % 10 {
            8 => valid.extend_from_slice(block),
            9 => test.extend_from_slice(block),
            _ => train.extend_from_slice(block),
        }
    }
    Corpus {
        domains: vec![DomainSplits {
            name: "shakespeare".into(),
            train: 0..train.len(),
            valid: valid.clone(),
            test,
        }],
        train,
        valid,
        vocab_size,
    }
}

fn main() {
    let args = Args::parse();
    let out = args.common.out_dir("degradation-r3");
    if !args.report {
        let (text, _) = switch_moe::data::load_corpus(args.common.data.as_deref())
            .unwrap_or_else(|e| fail(&e.to_string()));
        let text: String = text.chars().take(args.chars).collect();
        let tokenizer = TextTokenizer::char_level(&text);
        let ids = tokenizer
            .encode(&text)
            .unwrap_or_else(|e| fail(&e.to_string()));
        let corpus = interleaved_splits(&ids, tokenizer.vocab_size());
        let steps_per_epoch = corpus.train.len() as f64 / (BATCH * SEQ) as f64;
        let steps = args
            .common
            .steps
            .unwrap_or((args.epochs as f64 * steps_per_epoch).round() as usize);
        let seeds = args.common.seeds_or(&[1, 2, 3, 4, 5]);
        let arms = select_arms(args.arms.as_deref(), &ARMS, &ARMS);
        let device = default_device();
        run_study(&out, &arms, &seeds, |arm, seed| {
            run_arm::<SelectedAutodiff>(arm, seed, &corpus, &tokenizer, steps, &out, &device)
        });
    }
    report(&out);
}

/// One arm on one seed: trains, keeps the best validation model, measures and samples.
fn run_arm<B: AutodiffBackend>(
    arm: &str,
    seed: u64,
    corpus: &Corpus,
    tokenizer: &TextTokenizer,
    steps: usize,
    out: &Path,
    device: &B::Device,
) -> Metrics {
    let f = 4 * D_MODEL;
    let (experts, width) = match arm {
        "dense" => (1, f),
        "dense-wide" => (1, 16 * f),
        _ => (16, f),
    };
    let mut model = lm_config(corpus.vocab_size, SEQ, D_MODEL, width, 4, experts);
    model.encoder.dense_d_ff = Some(f);
    model.z_coef = 0.0;
    let (dropout, expert_dropout) = match arm {
        "e16-xd0.4" => (0.0, 0.4),
        "e16-d0.1" => (0.1, 0.1),
        _ => (0.0, 0.0),
    };
    model.encoder.layer.dropout = dropout;
    model.encoder.layer.moe.expert_dropout = expert_dropout;
    let mut spec = base_spec(format!("{arm}_seed{seed}"), model, seed, steps, BATCH);
    spec.cooldown = Some(0.0);
    spec.warmup_steps = 50;
    spec.lr = 2e-3;
    spec.eval_every = (corpus.train.len() / (BATCH * SEQ) * 2).max(1);
    spec.eval_windows = usize::MAX;
    let test = &corpus.domains[0].test;
    let spec_ref = spec.clone();
    // (step, test CE) at every evaluation, and the model of the best validation point.
    let mut tests = Vec::new();
    let mut best: Option<(f64, SwitchLm<B::InnerBackend>)> = None;
    let mut hook = |step: usize, valid: f64, model: &SwitchLm<B::InnerBackend>| {
        tests.push((step, evaluate_all(model, test, &spec_ref, device)));
        if best.as_ref().is_none_or(|(v, _)| valid < *v) {
            best = Some((valid, model.clone()));
        }
    };
    let log = train_run_with::<B>(&spec, corpus, device, &mut hook);
    log.write_csv(out)
        .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
    let Some((_, best_model)) = best else {
        fail(&format!("{arm} seed {seed}: no evaluation point"))
    };
    summarise::<B>(
        arm,
        seed,
        &log,
        &tests,
        &best_model,
        corpus,
        tokenizer,
        out,
        device,
    )
}

/// Slope (least squares) of `points` (x, y).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx.max(1e-12)
}

/// The run's metrics; samples of the best model go to `samples-<arm>-seed<seed>.txt`.
#[allow(clippy::too_many_arguments)]
fn summarise<B: AutodiffBackend>(
    arm: &str,
    seed: u64,
    log: &RunLog,
    tests: &[(usize, f64)],
    best_model: &SwitchLm<B::InnerBackend>,
    corpus: &Corpus,
    tokenizer: &TextTokenizer,
    out: &Path,
    device: &B::Device,
) -> Metrics {
    let points = &log.points;
    let (bi, best) = points
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.valid_ce.total_cmp(&b.1.valid_ce))
        .expect("evaluation points");
    let after: Vec<(f64, f64)> = points[bi..].iter().map(|p| (p.epoch, p.valid_ce)).collect();
    let test_at = |step: usize| tests.iter().find(|t| t.0 == step).map_or(f64::NAN, |t| t.1);
    let last = points.last().expect("evaluation points");
    // Samples: prompts from the test split's first windows; the 4-gram rate of the
    // continuations (characters).
    let mut text = String::new();
    let mut rates = Vec::new();
    for i in 0..SAMPLES {
        let start = i * 997 % (corpus.domains[0].test.len() - 40);
        let prompt = &corpus.domains[0].test[start..start + 32];
        let ids = sample(
            best_model,
            prompt,
            SAMPLE_CHARS,
            seed * 10 + i as u64,
            device,
        );
        rates.push(repeated_ngram_rate(&ids[prompt.len()..], 4));
        let decoded = tokenizer.decode(&ids).unwrap_or_default();
        let _ = writeln!(
            text,
            "--- sample {} (prompt: 32 test characters) ---\n{decoded}\n",
            i + 1
        );
    }
    let file = out.join(format!("samples-{arm}-seed{seed}.txt"));
    std::fs::write(&file, text).unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())));
    vec![
        ("best_epoch", best.epoch),
        ("last_epoch", last.epoch),
        ("turned", f64::from(u8::from(bi + 2 < points.len()))),
        ("best_valid", best.valid_ce),
        ("slope_after_best", slope(&after)),
        ("test_at_best", test_at(best.step)),
        ("test_final", test_at(last.step)),
        ("gap_at_best", best.valid_ce - best.train_ce),
        (
            "repeat4_best",
            rates.iter().sum::<f64>() / rates.len() as f64,
        ),
        ("params", log.num_params as f64),
        ("tokens_per_s", log.tokens_per_s),
    ]
}

/// summary.md and the curves, from final.csv and the runs' CSVs.
fn report(out: &Path) {
    let rows = read_final(out);
    if rows.is_empty() {
        fail(&format!("no runs in {}/final.csv", out.display()));
    }
    let mut md = String::from("# R3.3 — is the degradation specific to MoE?\n\n");
    let _ = writeln!(
        md,
        "Mean over seeds. Slope: validation loss per epoch after the best point (least squares); \
         turned: runs whose best point has at least two evaluations after it; repeat-4: share of \
         the character 4-grams of the best model's samples that repeat an earlier one.\n\n| arm | \
         seeds | params | best epoch | turned | slope after best | test at best | test at end | \
         repeat-4 | tokens/s |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for arm in ARMS {
        let n = rows.iter().filter(|r| r.arm == arm).count();
        if n == 0 {
            continue;
        }
        let m = |k: &str| mean_of(&rows, arm, k);
        let turned = rows
            .iter()
            .filter(|r| r.arm == arm && r.get("turned") > 0.5)
            .count();
        let _ = writeln!(
            md,
            "| {arm} | {n} | {:.2} M | {:.1} | {turned}/{n} | {:+.5} | {:.4} | {:.4} | {:.3} | {:.0} |",
            m("params") / 1e6,
            m("best_epoch"),
            m("slope_after_best"),
            m("test_at_best"),
            m("test_final"),
            m("repeat4_best"),
            m("tokens_per_s"),
        );
    }
    let _ = writeln!(
        md,
        "\n## Paired differences (same seed), 95% t intervals\n\n| comparison | slope after best | \
         test at end | test at best |\n|---|---|---|---|"
    );
    let mut verdict = String::new();
    for (a, b) in [
        ("e16", "dense-wide"),
        ("e16", "dense"),
        ("dense-wide", "dense"),
        ("e16-xd0.4", "e16"),
        ("e16-d0.1", "e16"),
    ] {
        let cell = |k: &str| {
            let (m, h) = paired(&paired_diffs(&rows, a, b, k));
            format!("{m:+.5} ± {h:.5}")
        };
        let _ = writeln!(
            md,
            "| {a} − {b} | {} | {} | {} |",
            cell("slope_after_best"),
            cell("test_final"),
            cell("test_at_best")
        );
        if (a, b) == ("e16", "dense-wide") {
            let (m, h) = paired(&paired_diffs(&rows, a, b, "slope_after_best"));
            verdict = if m - h > 0.0 {
                format!("expert-specific: e16 − dense-wide slope {m:+.5} ± {h:.5} lies above 0")
            } else {
                format!(
                    "not expert-specific: e16 − dense-wide slope {m:+.5} ± {h:.5} does not lie \
                     above 0"
                )
            };
        }
    }
    let _ = writeln!(md, "\n**Criterion:** {verdict}.");
    std::fs::write(out.join("summary.md"), &md)
        .unwrap_or_else(|e| fail(&format!("writing summary.md: {e}")));
    curves(out, &rows);
    print!("{md}");
}

/// `valid_loss.png`: validation loss against epoch per arm, mean over seeds with the seeds'
/// range, read from the runs' CSVs.
fn curves(out: &Path, rows: &[Row]) {
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let mut series = Vec::new();
    for (i, arm) in ARMS.iter().enumerate() {
        let runs: Vec<Vec<(f64, f64)>> = rows
            .iter()
            .filter(|r| r.arm == *arm)
            .filter_map(|r| read_curve(&out.join(format!("{arm}_seed{}.csv", r.seed))))
            .collect();
        if runs.is_empty() {
            continue;
        }
        let (line, band) = switch_moe::lab::run::mean_and_band(&runs);
        series.push(Series::new(*arm, line, i + 1).with_band(band));
    }
    plot::lines(
        &out.join("valid_loss.png"),
        "Validation loss (mean over seeds, band: seeds' range)",
        "epoch",
        "nats per character",
        &series,
        None,
    )
    .unwrap_or_else(|e| fail(&e));
}

/// (epoch, valid_ce) of a run's CSV.
fn read_curve(path: &Path) -> Option<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                Some((c.get(1)?.parse().ok()?, c.get(3)?.parse().ok()?))
            })
            .collect(),
    )
}
