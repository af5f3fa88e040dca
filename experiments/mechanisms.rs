//! Study R2.4 — the seed's degradation, mechanism by mechanism.
//!
//! The seed's author saw a Switch LM write coherent text after a few epochs and then degrade
//! "much earlier than expected". Round 1 (`degradation.rs`) trained on 10k characters and never
//! left bigram level; this study trains where a character model becomes readable and overfits
//! late: a slice of tiny-shakespeare cut into 1,000-character blocks, 8 of every 10 blocks for
//! training, one for validation, one for test (the same text distribution in all three), constant
//! learning rate, no z-loss unless an arm adds it, dropout 0 or 0.1 (attention/residual and
//! expert dropout alike). Each arm runs on every seed.
//!
//! Mechanisms and their decisive tests:
//! - (a) tokens dropped at generation time: every evaluation also runs the first validation
//!   windows one at a time (batch 1, one window), with eval capacity factor 1.0, 1.25, 2.0 and
//!   dropless, recording each setting's loss and dropped fraction;
//! - (b) a hobby balancing loss: "counts only" (E·Σ f_i², f the argmax counts) has no gradient,
//!   so its arm is the same run as aux coefficient 0;
//! - (c) expert over-fitting: best epoch and the slope after it for E ∈ {1, 4, 16};
//! - (d) router logit growth without the z-loss: the z-loss value (mean squared logsumexp of the
//!   router logits) over training and the routing flip rate on a fixed probe batch (share of
//!   probe tokens whose first-choice expert changed since the last evaluation), with and
//!   without the z-loss (f32; see the README for f16);
//! - (e) routing fluctuation: the routers frozen from the seed's best validation step on.
//!
//! Model selection on validation, every conclusion on the test split.
//!
//! ```sh
//! cargo run --release --features experiments,tch --example mechanisms
//! ```

use switch_moe::lab as common;

use std::io::Write;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Parser;
use common::cli::{CommonArgs, Corpus, DomainSplits, fail, load_char_corpus, select_arms};
use common::eval::{batch, evaluate_all, read_first_choices};
use common::plot::{self, Series};
use common::run::{RunLog, base_spec, lm_config, train_run_with};
use switch_moe::backend::{SelectedAutodiff, default_device};
use switch_moe::{EncoderBlock, RoutingStats, SwitchLm};

#[derive(Parser, Debug)]
#[command(about = "The seed's degradation, mechanism by mechanism")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Characters of tiny-shakespeare in the slice (80% train, 10% validation, 10% test).
    #[arg(long, default_value_t = 60_000)]
    chars: usize,
    /// Model width d (d_ff = 4·d; 4 layers, every other one sparse).
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Arms to run (default: all), by name.
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
    /// Write the report from the CSVs in the output directory; train nothing.
    #[arg(long)]
    report: bool,
}

/// One arm of the study.
#[derive(Clone, Copy)]
struct Arm {
    name: &'static str,
    experts: usize,
    dropout: f64,
    aux: f64,
    z: f64,
    /// Freeze the routers from the best validation step of this arm's run on the same seed.
    freeze_after: Option<&'static str>,
    /// Run the model in f16 on wgpu (`--features wgpu`; lavapipe on a CPU machine).
    half: bool,
    /// Router logits and softmax in f32 (the library's default); false: in the model's type.
    router_f32: bool,
}

const fn arm(name: &'static str, experts: usize, dropout: f64) -> Arm {
    Arm {
        name,
        experts,
        dropout,
        aux: 0.01,
        z: 0.0,
        freeze_after: None,
        half: false,
        router_f32: true,
    }
}

const ARMS: [Arm; 11] = [
    arm("dense-d0", 1, 0.0),
    arm("e4-d0", 4, 0.0),
    arm("e16-d0", 16, 0.0),
    arm("dense-d0.1", 1, 0.1),
    arm("e16-d0.1", 16, 0.1),
    // The mechanisms' arms change e16-d0, the arm that over-fits within the budget.
    Arm {
        aux: 0.0,
        ..arm("e16-d0-counts-only", 16, 0.0)
    },
    Arm {
        z: 0.001,
        ..arm("e16-d0-zloss", 16, 0.0)
    },
    Arm {
        freeze_after: Some("e16-d0"),
        ..arm("e16-d0-frozen-router", 16, 0.0)
    },
    Arm {
        aux: 0.0,
        ..arm("e16-d0.1-counts-only", 16, 0.1)
    },
    // (d) in f16 (wgpu only; not in the default list): selective precision vs an f16 router.
    Arm {
        half: true,
        ..arm("f16-e16-d0-router-f32", 16, 0.0)
    },
    Arm {
        half: true,
        router_f32: false,
        ..arm("f16-e16-d0-router-f16", 16, 0.0)
    },
];

/// The eval capacity settings of mechanism (a); `None` is dropless.
const CAPACITIES: [Option<f64>; 4] = [Some(1.0), Some(1.25), Some(2.0), None];
/// Validation windows run one at a time at each evaluation (mechanism a).
const SINGLE_WINDOWS: usize = 48;
/// Windows of the fixed probe batch (mechanism d).
const PROBE_WINDOWS: usize = 16;

/// What the per-evaluation hook measures.
#[derive(Clone, Debug)]
struct EvalRow {
    step: usize,
    test_ce: f64,
    /// (loss, dropped fraction) at batch 1 for each of [`CAPACITIES`].
    single: Vec<(f64, f64)>,
    /// Share of probe (token, sparse layer) pairs whose first choice changed since the last
    /// evaluation (NaN at the first).
    flip: f64,
    /// Probe z-loss (mean squared logsumexp of router logits), mean over sparse layers.
    probe_z: f64,
}

/// Cuts `ids` into 1,000-token blocks: 8 of each 10 to training, the 9th to validation, the
/// 10th to test.
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

fn set_capacity<B: Backend>(model: &SwitchLm<B>, capacity: Option<f64>) -> SwitchLm<B> {
    let mut model = model.clone();
    for layer in model.encoder.layers.iter_mut() {
        if let EncoderBlock::Sparse(l) = layer {
            match capacity {
                Some(c) => {
                    l.moe.eval_capacity_factor = c;
                    l.moe.dropless = false;
                }
                None => l.moe.dropless = true,
            }
        }
    }
    model
}

/// First-choice experts of the probe tokens per sparse layer, and the mean probe z-loss.
fn probe<B: Backend>(
    model: &SwitchLm<B>,
    tokens: &[u32],
    starts: &[usize],
    seq: usize,
    device: &B::Device,
) -> (Vec<Vec<i64>>, f64) {
    let out = model.forward_step(batch::<B>(tokens, starts, seq, device));
    let (stats, firsts) = read_first_choices(&out.moe);
    let firsts = firsts
        .into_iter()
        .map(|l| l.into_iter().map(|v| v as i64).collect())
        .collect();
    (firsts, stats.z_loss)
}

/// Trains one arm on one seed with the hook of mechanisms (a) and (d).
fn run_arm<B: AutodiffBackend>(
    arm: &Arm,
    seed: u64,
    corpus: &Corpus,
    size: (usize, usize, usize, usize, usize, usize),
    freeze_at: Option<usize>,
    device: &B::Device,
) -> (RunLog, Vec<EvalRow>) {
    let (d, f, layers, seq, batch_size, steps) = size;
    let mut model = lm_config(corpus.vocab_size, seq, d, f, layers, arm.experts);
    model.aux_coef = arm.aux;
    model.z_coef = arm.z;
    model.encoder.layer.dropout = arm.dropout;
    model.encoder.layer.moe.expert_dropout = arm.dropout;
    model.encoder.layer.moe.router_f32 = arm.router_f32;
    let mut spec = base_spec(
        format!("{}_seed{seed}", arm.name),
        model,
        seed,
        steps,
        batch_size,
    );
    spec.cooldown = Some(0.0);
    spec.warmup_steps = 50;
    spec.lr = 2e-3;
    spec.eval_every = (corpus.train.len() / (batch_size * seq) * 2).max(1);
    spec.eval_windows = usize::MAX;
    spec.freeze_router_at = freeze_at;
    let valid = &corpus.valid;
    let test = &corpus.domains[0].test;
    let single: Vec<usize> = (0..SINGLE_WINDOWS).map(|i| i * seq).collect();
    let probe_starts: Vec<usize> = (0..PROBE_WINDOWS).map(|i| (i * 2 + 1) * seq).collect();
    if single.last().copied().unwrap_or(0) + seq + 1 > valid.len()
        || probe_starts.last().copied().unwrap_or(0) + seq + 1 > valid.len()
    {
        fail("--chars: the validation split is too short for the probe windows; use more");
    }
    let mut rows = Vec::new();
    let mut last_firsts: Option<Vec<Vec<i64>>> = None;
    let sparse = arm.experts > 1;
    let spec_ref = spec.clone();
    let mut hook = |step: usize, _valid: f64, model: &SwitchLm<B::InnerBackend>| {
        let test_ce = evaluate_all(model, test, &spec_ref, device);
        let mut single_rows = Vec::new();
        if sparse {
            for capacity in CAPACITIES {
                let m = set_capacity(model, capacity);
                let (mut ce, mut dropped) = (0.0, 0.0);
                for &s in &single {
                    let out = m.forward_step(batch::<B::InnerBackend>(valid, &[s], seq, device));
                    let (stats, extra) = RoutingStats::read_with(&out.moe, vec![out.cross_entropy]);
                    ce += extra[0][0];
                    dropped += stats.layer_mean(|l| l.dropped_fraction);
                }
                let n = single.len() as f64;
                single_rows.push((ce / n, dropped / n));
            }
        }
        let (flip, probe_z) = if sparse {
            let (firsts, z) = probe(model, valid, &probe_starts, seq, device);
            let flip = last_firsts.as_ref().map_or(f64::NAN, |prev| {
                let (changed, total) = prev
                    .iter()
                    .flatten()
                    .zip(firsts.iter().flatten())
                    .fold((0usize, 0usize), |(c, t), (a, b)| {
                        (c + usize::from(a != b), t + 1)
                    });
                changed as f64 / total.max(1) as f64
            });
            last_firsts = Some(firsts);
            (flip, z)
        } else {
            (f64::NAN, f64::NAN)
        };
        eprintln!(
            "  test {test_ce:.4}; batch 1 (ce, drop) {}; flip {flip:.3} z {probe_z:.2}",
            single_rows
                .iter()
                .map(|(c, d)| format!("({c:.3}, {d:.3})"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        rows.push(EvalRow {
            step,
            test_ce,
            single: single_rows,
            flip,
            probe_z,
        });
    };
    let log = train_run_with::<B>(&spec, corpus, device, &mut hook);
    (log, rows)
}

fn write_rows(path: &Path, arm: &str, seed: u64, log: &RunLog, rows: &[EvalRow]) {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let mut text = String::new();
    if new {
        text.push_str(
            "arm,seed,step,epoch,train_ce,valid_ce,test_ce,z_train,dropped_train,b1_ce_cf1.0,b1_drop_cf1.0,\
             b1_ce_cf1.25,b1_drop_cf1.25,b1_ce_cf2.0,b1_drop_cf2.0,b1_ce_dropless,b1_drop_dropless,flip,probe_z\n",
        );
    }
    for (p, r) in log.points.iter().zip(rows) {
        assert_eq!(p.step, r.step, "evaluation rows out of step");
        let mut single = r.single.clone();
        single.resize(CAPACITIES.len(), (f64::NAN, f64::NAN));
        text.push_str(&format!(
            "{arm},{seed},{},{:.3},{:.5},{:.5},{:.5},{:.4},{:.5},{},{:.5},{:.5}\n",
            p.step,
            p.epoch,
            p.train_ce,
            p.valid_ce,
            r.test_ce,
            p.z,
            p.dropped,
            single
                .iter()
                .map(|(c, d)| format!("{c:.5},{d:.5}"))
                .collect::<Vec<_>>()
                .join(","),
            r.flip,
            r.probe_z
        ));
    }
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}

/// The study from its flags to its report, in the order the README section tells it.
// Over 100 lines on purpose: one study read top to bottom; its parts are used once.
fn main() {
    let args = Args::parse();
    plot::init_font().unwrap_or_else(|e| fail(&e));
    let out = args.common.out_dir("mechanisms");
    if args.report {
        report(&out);
        return;
    }
    let whole = load_char_corpus(&args.common, None);
    let ids: Vec<u32> = whole.train.iter().chain(&whole.valid).copied().collect();
    if args.chars < 20_000 || args.chars > ids.len() {
        fail(&format!(
            "--chars: use between 20000 and {} characters",
            ids.len()
        ));
    }
    let corpus = interleaved_splits(&ids[..args.chars], whole.vocab_size);
    eprintln!(
        "slice of {} chars: {} train / {} valid / {} test",
        args.chars,
        corpus.train.len(),
        corpus.valid.len(),
        corpus.domains[0].test.len()
    );
    let names: Vec<&str> = ARMS.iter().map(|a| a.name).collect();
    let default: Vec<&str> = ARMS.iter().filter(|a| !a.half).map(|a| a.name).collect();
    let chosen = select_arms(args.arms.as_deref(), &names, &default);
    let arms: Vec<Arm> = ARMS
        .iter()
        .filter(|a| chosen.iter().any(|c| c == a.name))
        .copied()
        .collect();
    if arms.iter().any(|a| a.half) {
        if arms.iter().any(|a| !a.half) {
            // Burn keeps one default float type per device and process (tests/wgpu_f16.rs).
            fail("--arms: run the f16 arms in a process of their own");
        }
        half::init();
    }
    let steps_per_epoch = corpus.train.len() as f64 / (32.0 * 64.0);
    let default_steps = (40.0 * steps_per_epoch).round() as usize;
    let size = (
        args.d_model,
        4 * args.d_model,
        4,
        64,
        32,
        args.common.steps.unwrap_or(default_steps),
    );
    let seeds = args.common.seeds_or(&[1, 2]);
    let device = default_device();
    let csv = out.join("evals.csv");
    // Runs already in evals.csv (a study stopped and started again) are kept, not repeated.
    let previous = if csv.exists() {
        read_evals(&csv)
    } else {
        Vec::new()
    };
    let mut best_steps: Vec<(&str, u64, usize)> = Vec::new();
    let mut done: Vec<(&str, u64, RunLog, Vec<EvalRow>)> = Vec::new();
    for &seed in &seeds {
        for arm in &arms {
            let earlier: Vec<&Eval> = previous
                .iter()
                .filter(|e| e.arm == arm.name && e.seed == seed)
                .collect();
            if !earlier.is_empty() {
                let best = summarise(&earlier).best.step;
                eprintln!(
                    "arm {}, seed {seed}: in evals.csv already (best step {best})",
                    arm.name
                );
                best_steps.push((arm.name, seed, best));
                continue;
            }
            let freeze_at = match arm.freeze_after {
                None => None,
                Some(base) => match best_steps.iter().find(|(a, s, _)| *a == base && *s == seed) {
                    Some(&(_, _, step)) => Some(step),
                    None => fail(&format!(
                        "arm {} needs arm {base} on seed {seed} first (add it to --arms)",
                        arm.name
                    )),
                },
            };
            eprintln!("arm {}, seed {seed}", arm.name);
            let (log, rows) = if arm.half {
                half::run(arm, seed, &corpus, size, freeze_at)
            } else {
                run_arm::<SelectedAutodiff>(arm, seed, &corpus, size, freeze_at, &device)
            };
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            write_rows(&csv, arm.name, seed, &log, &rows);
            best_steps.push((arm.name, seed, log.best_valid().1));
            done.push((arm.name, seed, log, rows));
        }
    }
    let wall: f64 = done.iter().map(|(_, _, l, _)| l.wall_s).sum();
    eprintln!(
        "done: {} runs, {:.1} min ({})",
        done.len(),
        wall / 60.0,
        switch_moe::backend::NAME
    );
    report(&out);
}

/// The f16 arms: the model on `Wgpu<f16>` (with `--features wgpu`).
mod half {
    use super::*;

    #[cfg(feature = "wgpu")]
    type Half = burn::backend::Wgpu<burn::tensor::f16>;

    /// Makes f16 the wgpu device's default float type, before any tensor exists on it.
    #[cfg(feature = "wgpu")]
    pub fn init() {
        use burn::tensor::{FloatDType, IntDType, get_device_settings, set_default_dtypes};
        let device = Default::default();
        if set_default_dtypes::<Half>(&device, FloatDType::F16, IntDType::I32).is_err()
            && get_device_settings::<Half>(&device).float_dtype != FloatDType::F16
        {
            fail("the wgpu device was set to another float type first");
        }
    }

    #[cfg(not(feature = "wgpu"))]
    pub fn init() {
        fail("the f16 arms run on wgpu: build with --features experiments,wgpu");
    }

    #[cfg(feature = "wgpu")]
    pub fn run(
        arm: &Arm,
        seed: u64,
        corpus: &Corpus,
        size: (usize, usize, usize, usize, usize, usize),
        freeze_at: Option<usize>,
    ) -> (RunLog, Vec<EvalRow>) {
        let device = Default::default();
        run_arm::<burn::backend::Autodiff<Half>>(arm, seed, corpus, size, freeze_at, &device)
    }

    #[cfg(not(feature = "wgpu"))]
    pub fn run(
        _: &Arm,
        _: u64,
        _: &Corpus,
        _: (usize, usize, usize, usize, usize, usize),
        _: Option<usize>,
    ) -> (RunLog, Vec<EvalRow>) {
        init();
        unreachable!("init fails without wgpu")
    }
}

/// One line of `evals.csv`.
#[derive(Clone, Debug)]
struct Eval {
    arm: String,
    seed: u64,
    step: usize,
    epoch: f64,
    train: f64,
    valid: f64,
    test: f64,
    z: f64,
    /// (loss, dropped) at batch 1 per [`CAPACITIES`].
    single: [(f64, f64); 4],
    flip: f64,
}

fn read_evals(path: &Path) -> Vec<Eval> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("{}: {e} (run the study first)", path.display())));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let c: Vec<&str> = line.split(',').collect();
            let num = |i: usize| -> f64 {
                c.get(i)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail(&format!("{}: bad line {line}", path.display())))
            };
            Eval {
                arm: c[0].to_string(),
                seed: num(1) as u64,
                step: num(2) as usize,
                epoch: num(3),
                train: num(4),
                valid: num(5),
                test: num(6),
                z: num(7),
                single: [
                    (num(9), num(10)),
                    (num(11), num(12)),
                    (num(13), num(14)),
                    (num(15), num(16)),
                ],
                flip: num(17),
            }
        })
        .collect()
}

/// What one run shows, read off its evaluations (selection on validation, values on test).
struct RunSummary {
    seed: u64,
    best_epoch: f64,
    test_at_best: f64,
    test_final: f64,
    /// Validation loss gained per epoch after the best point (0 when the best is the last).
    slope_after: f64,
    gap_at_best: f64,
    best: Eval,
    last: Eval,
    flip_before: f64,
    flip_after: f64,
}

fn summarise(evals: &[&Eval]) -> RunSummary {
    let (bi, best) = evals
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.valid.total_cmp(&b.1.valid))
        .expect("a run has evaluations");
    let last = evals.last().expect("a run has evaluations");
    let slope_after = if bi + 1 < evals.len() {
        (last.valid - best.valid) / (last.epoch - best.epoch)
    } else {
        0.0
    };
    let mean_flip = |r: &[&Eval]| {
        let v: Vec<f64> = r.iter().map(|e| e.flip).filter(|f| f.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    RunSummary {
        seed: best.seed,
        best_epoch: best.epoch,
        test_at_best: best.test,
        test_final: last.test,
        slope_after,
        gap_at_best: best.valid - best.train,
        best: (*best).clone(),
        last: (*last).clone(),
        flip_before: mean_flip(&evals[..=bi]),
        flip_after: mean_flip(&evals[bi + 1..]),
    }
}

/// `a − b` per seed (seeds both have), as mean ± 95% half-width, with the per-seed values.
fn diff(a: &[RunSummary], b: &[RunSummary], f: impl Fn(&RunSummary) -> f64) -> String {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|x| b.iter().find(|y| y.seed == x.seed).map(|y| f(x) - f(y)))
        .collect();
    if d.is_empty() {
        return "–".into();
    }
    let (m, h) = common::stats::paired(&d);
    let each: Vec<String> = d.iter().map(|v| format!("{v:+.3}")).collect();
    if h.is_finite() {
        format!("{m:+.4} ± {h:.4} ({})", each.join(", "))
    } else {
        format!("{m:+.4} (n = 1)")
    }
}

fn mean(runs: &[RunSummary], f: impl Fn(&RunSummary) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

/// Writes summary.md and the figures from `evals.csv`.
// Over 100 lines on purpose: the report's tables and figures in the order summary.md shows them.
fn report(out: &Path) {
    let evals = read_evals(&out.join("evals.csv"));
    let runs_of = |arm: &str| -> Vec<RunSummary> {
        let mut seeds: Vec<u64> = evals
            .iter()
            .filter(|e| e.arm == arm)
            .map(|e| e.seed)
            .collect();
        seeds.dedup();
        seeds
            .iter()
            .map(|&s| {
                let rows: Vec<&Eval> = evals
                    .iter()
                    .filter(|e| e.arm == arm && e.seed == s)
                    .collect();
                summarise(&rows)
            })
            .collect()
    };
    let present: Vec<&Arm> = ARMS
        .iter()
        .filter(|a| !runs_of(a.name).is_empty())
        .collect();
    let mut md =
        String::from("## Per arm (means over seeds; selection on validation, losses on test)\n\n");
    md.push_str(
        "| arm | seeds | best epoch | test at best | test final | final − best (test) | valid slope after best (/epoch) | valid − train at best |\n|---|---|---|---|---|---|---|---|\n",
    );
    for arm in &present {
        let r = runs_of(arm.name);
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.4} | {:.4} | {:+.4} | {:+.4} | {:+.3} |\n",
            arm.name,
            r.len(),
            mean(&r, |x| x.best_epoch),
            mean(&r, |x| x.test_at_best),
            mean(&r, |x| x.test_final),
            mean(&r, |x| x.test_final - x.test_at_best),
            mean(&r, |x| x.slope_after),
            mean(&r, |x| x.gap_at_best),
        ));
    }
    md.push_str("\n## Paired differences (per seed; mean ± 95% t half-width, then each seed)\n\n");
    md.push_str("| comparison | best epoch | test at best | test final | valid slope after best |\n|---|---|---|---|---|\n");
    let pairs = [
        ("(c) e4-d0 − dense-d0", "e4-d0", "dense-d0"),
        ("(c) e16-d0 − dense-d0", "e16-d0", "dense-d0"),
        ("(c) e16-d0.1 − dense-d0.1", "e16-d0.1", "dense-d0.1"),
        ("dropout: e16-d0.1 − e16-d0", "e16-d0.1", "e16-d0"),
        ("dropout: dense-d0.1 − dense-d0", "dense-d0.1", "dense-d0"),
        (
            "(b) counts-only − paper's aux",
            "e16-d0-counts-only",
            "e16-d0",
        ),
        (
            "(b) counts-only − paper's aux, dropout 0.1",
            "e16-d0.1-counts-only",
            "e16-d0.1",
        ),
        ("(d) z-loss − none", "e16-d0-zloss", "e16-d0"),
        (
            "(e) frozen router − learning router",
            "e16-d0-frozen-router",
            "e16-d0",
        ),
        (
            "(d) f16 model: router in f16 − router in f32",
            "f16-e16-d0-router-f16",
            "f16-e16-d0-router-f32",
        ),
    ];
    for (label, a, b) in pairs {
        let (ra, rb) = (runs_of(a), runs_of(b));
        if ra.is_empty() || rb.is_empty() {
            continue;
        }
        md.push_str(&format!(
            "| {label} | {} | {} | {} | {} |\n",
            diff(&ra, &rb, |x| x.best_epoch),
            diff(&ra, &rb, |x| x.test_at_best),
            diff(&ra, &rb, |x| x.test_final),
            diff(&ra, &rb, |x| x.slope_after),
        ));
    }
    md.push_str(
        "\n## (a) One window at a time (batch 1): validation loss and dropped share by eval capacity factor\n\n\
         Each cell: loss / dropped share of the sparse layers' assignments, mean over seeds, at the best \
         validation point and at the end. Δ = loss at the factor − dropless loss.\n\n\
         | arm | when | cf 1.0 | cf 1.25 | cf 2.0 | dropless | Δ cf 1.0 | Δ cf 1.25 | Δ cf 2.0 |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for arm in present.iter().filter(|a| a.experts > 1) {
        let r = runs_of(arm.name);
        for (when, pick) in [
            (
                "best",
                (|x: &RunSummary| x.best.clone()) as fn(&RunSummary) -> Eval,
            ),
            ("final", |x| x.last.clone()),
        ] {
            let cell = |i: usize| {
                format!(
                    "{:.4} / {:.3}",
                    mean(&r, |x| pick(x).single[i].0),
                    mean(&r, |x| pick(x).single[i].1)
                )
            };
            let delta = |i: usize| mean(&r, |x| pick(x).single[i].0 - pick(x).single[3].0);
            md.push_str(&format!(
                "| {} | {when} | {} | {} | {} | {} | {:+.4} | {:+.4} | {:+.4} |\n",
                arm.name,
                cell(0),
                cell(1),
                cell(2),
                cell(3),
                delta(0),
                delta(1),
                delta(2)
            ));
        }
    }
    md.push_str(
        "\n## (d) Router logits and routing flips\n\n\
         z: the training batches' router z-loss (mean squared logsumexp of the logits) at the best \
         point and at the end; flips: share of the probe tokens whose first-choice expert changed \
         between consecutive evaluations (two epochs apart), before and after the best point.\n\n\
         | arm | z at best | z final | flips before best | flips after best |\n|---|---|---|---|---|\n",
    );
    for arm in present.iter().filter(|a| a.experts > 1) {
        let r = runs_of(arm.name);
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.3} | {:.3} |\n",
            arm.name,
            mean(&r, |x| x.best.z),
            mean(&r, |x| x.last.z),
            mean(&r, |x| x.flip_before),
            mean(&r, |x| x.flip_after),
        ));
    }
    std::fs::write(out.join("summary.md"), &md).unwrap_or_else(|e| fail(&e.to_string()));
    println!("{md}");
    figures(out, &evals, &present);
}

fn figures(out: &Path, evals: &[Eval], present: &[&Arm]) {
    let names: Vec<&str> = ARMS.iter().map(|a| a.name).collect();
    // Per seed of `arm`, the points (epoch, value) where `value` has one.
    let per_seed = |arm: &str, value: &dyn Fn(&Eval) -> Option<f64>| -> Vec<common::run::Curve> {
        let mut seeds: Vec<u64> = evals
            .iter()
            .filter(|e| e.arm == arm)
            .map(|e| e.seed)
            .collect();
        seeds.dedup();
        seeds
            .iter()
            .map(|&s| {
                evals
                    .iter()
                    .filter(|e| e.arm == arm && e.seed == s)
                    .filter_map(|e| Some((e.epoch, value(e)?)))
                    .collect()
            })
            .collect()
    };
    let curve = |arm: &str, value: &dyn Fn(&Eval) -> f64| -> Series {
        let (line, band) = common::run::mean_and_band(&per_seed(arm, &|e| Some(value(e))));
        Series::new(arm, line, plot::color_of(arm, &names)).with_band(band)
    };
    let plot_or_fail = |r: Result<(), String>| r.unwrap_or_else(|e| fail(&e));
    let valid: Vec<Series> = present
        .iter()
        .map(|a| curve(a.name, &|e| e.valid))
        .collect();
    plot_or_fail(plot::lines(
        &out.join("valid_loss.png"),
        "Validation loss by epoch (mean of seeds, band: seed range)",
        "epoch",
        "validation cross-entropy (nats/char)",
        &valid,
        Some(plot::loss_range(&valid)),
    ));
    // The effects are 0.01–0.05 nats on a 1-nat axis: each sparse arm minus the dense arm of its
    // dropout, seed by seed (paired), mean and seed range.
    let paired: Vec<Series> = present
        .iter()
        .filter(|a| a.experts > 1)
        .filter_map(|a| {
            let dense = if a.name.contains("d0.1") {
                "dense-d0.1"
            } else {
                "dense-d0"
            };
            let curves: Vec<common::run::Curve> = per_seed(a.name, &|e| {
                let d = evals
                    .iter()
                    .find(|d| d.arm == dense && d.seed == e.seed && d.step == e.step)?;
                Some(e.valid - d.valid)
            })
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect();
            if curves.is_empty() {
                return None;
            }
            let (line, band) = common::run::mean_and_band(&curves);
            Some(
                Series::new(
                    format!("{} − {dense}", a.name),
                    line,
                    plot::color_of(a.name, &names),
                )
                .with_band(band),
            )
        })
        .collect();
    if !paired.is_empty() {
        plot_or_fail(plot::lines(
            &out.join("valid_loss_minus_dense.png"),
            "Validation loss minus dense (same dropout, same seed; band: seeds)",
            "epoch",
            "Δ validation cross-entropy (nats/char)",
            &paired,
            None,
        ));
    }
    let sparse: Vec<&&Arm> = present.iter().filter(|a| a.experts > 1).collect();
    for (file, title, y, value) in [
        (
            "batch1_capacity_gap.png",
            "(a) Batch 1, eval capacity 1.0: loss minus dropless loss",
            "Δ cross-entropy (nats/char)",
            (|e: &Eval| e.single[0].0 - e.single[3].0) as fn(&Eval) -> f64,
        ),
        (
            "router_z.png",
            "(d) Router z-loss of the training batches",
            "mean squared logsumexp of router logits",
            |e| e.z,
        ),
        (
            "flip_rate.png",
            "(d, e) Probe tokens whose first-choice expert changed since the last evaluation",
            "share of probe tokens",
            |e| e.flip,
        ),
    ] {
        let series: Vec<Series> = sparse.iter().map(|a| curve(a.name, &value)).collect();
        plot_or_fail(plot::lines(
            &out.join(file),
            title,
            "epoch",
            y,
            &series,
            None,
        ));
    }
}
