//! Round 3, study R3.4 — which router should a user choose?
//!
//! On the deduplicated multi-domain corpus (natural mixture), the round-2 model (d 64, 4 layers,
//! every other FFN sparse, bytes), at **equal active FLOPs** per token (one FFN of width 256 at
//! each sparse position), 1,200 steps of 2,048 tokens, constant lr 3e-3 after a 5% warm-up with a
//! linear cooldown over the last 10%, seeds 1–3:
//!
//! - `switch-top1`: 8 experts of 256, top-1, load-balancing loss α = 0.01 (Switch);
//! - `top2-half`: 16 experts of 128, top-2 (same parameters and active FLOPs; GShard/Mixtral's k);
//! - `shared-fine`: 16 routed experts of 128, top-1, plus one always-on shared expert of 128
//!   (DeepSeekMoE/Qwen2-MoE's fine-grained + shared);
//! - `sigmoid-bias`: 8 experts of 256, top-1, sigmoid scores with the aux-loss-free selection
//!   bias (u = 1e-3) and no balancing loss (DeepSeek-V3's rule);
//! - `dense`: one FFN of 256 (the floor every router should beat).
//!
//! Expert choice leaks future tokens in a causal LM (the library refuses it there); its
//! comparison is R2.2b's masked-byte encoder.
//!
//! Measured: test cross-entropy on every byte of each domain's test split, dropless (primary)
//! and at the eval capacity factor; training tokens/s; and specialisation as the conditional
//! mutual information I(expert; domain | byte) per sparse layer on a probe of each domain's test
//! bytes, beside the values two reference routers give on the same bytes: a hash of the
//! (previous, current) byte pair (a router that knows only the bigram) and uniform random experts
//! (the estimator's bias: its true value is 0). A hash of the current byte alone gives exactly 0.
//!
//! Criterion (pre-registered in experiments/README.md, R3.4): a router beats `switch-top1` when
//! the 95% interval of its paired difference in all-domain dropless test cross-entropy lies below
//! 0; per second, the comparison divides by the measured tokens/s.
//!
//! ```sh
//! cargo run --release --features experiments,tch --example routers   # LIBTORCH as in README
//! cargo run --release --features experiments --example routers -- --report
//! ```

use std::fmt::Write as _;
use std::path::Path;

use clap::Parser;
use switch_moe::RouterScore;
use switch_moe::backend::{SelectedAutodiff, default_device};
use switch_moe::init::HostRng;
use switch_moe::lab::cli::{CommonArgs, Corpus, fail, load_multidomain, select_arms};
use switch_moe::lab::eval::PROBE_TOKENS;
use switch_moe::lab::run::{RunLog, base_spec, lm_config, train_run};
use switch_moe::lab::stats::{conditional_mi, paired};
use switch_moe::lab::study::{Metrics, mean_of, paired_diffs, read_final, run_study};

#[derive(Parser, Debug)]
#[command(about = "Which router at equal active FLOPs, per step and per second (study R3.4)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Arms to run (default: all five).
    #[arg(long, value_delimiter = ',')]
    arms: Option<Vec<String>>,
    /// Train nothing: write the report from final.csv.
    #[arg(long)]
    report: bool,
}

const ARMS: [&str; 5] = [
    "switch-top1",
    "top2-half",
    "shared-fine",
    "sigmoid-bias",
    "dense",
];
const STEPS: usize = 1200;
/// The reference routers' expert count (the arms' sparse layers have 8 or 16; 8 is reported).
const REFERENCE_EXPERTS: usize = 8;

fn main() {
    let args = Args::parse();
    let out = args.common.out_dir("routers-r3");
    let corpus = load_multidomain(args.common.data.as_deref());
    if !args.report {
        let device = default_device();
        let (d, f, layers, seq, batch, _) = args.common.scale.standard_size();
        let steps = args.common.steps.unwrap_or(STEPS);
        let seeds = args.common.seeds_or(&[1, 2, 3]);
        let arms = select_arms(args.arms.as_deref(), &ARMS, &ARMS);
        run_study(&out, &arms, &seeds, |arm, seed| {
            let model = match arm {
                "switch-top1" => lm_config(256, seq, d, f, layers, 8),
                "top2-half" => lm_config(256, seq, d, f / 2, layers, 16)
                    .map_moe_top_k(2)
                    .dense_width(f),
                "shared-fine" => lm_config(256, seq, d, f / 2, layers, 16)
                    .shared(1)
                    .dense_width(f),
                "sigmoid-bias" => lm_config(256, seq, d, f, layers, 8).sigmoid_bias(),
                _ => lm_config(256, seq, d, f, layers, 1),
            };
            let name = format!("{arm}_seed{seed}");
            let mut spec = base_spec(name, model, seed, steps, batch);
            spec.cooldown = Some(0.1);
            spec.eval_windows = 512;
            let log = train_run::<SelectedAutodiff>(&spec, &corpus, &device);
            log.write_csv(&out)
                .unwrap_or_else(|e| fail(&format!("writing CSVs: {e}")));
            metrics(&log)
        });
    }
    report(&out, &corpus);
}

/// The small changes of the arms, on the library's config.
trait ArmConfig {
    fn map_moe_top_k(self, k: usize) -> Self;
    fn dense_width(self, f: usize) -> Self;
    fn shared(self, n: usize) -> Self;
    fn sigmoid_bias(self) -> Self;
}

impl ArmConfig for switch_moe::SwitchLmConfig {
    fn map_moe_top_k(mut self, k: usize) -> Self {
        self.encoder = self.encoder.map_moe(|m| m.with_top_k(k));
        self
    }
    /// The dense layers keep the full width (the experts are narrower).
    fn dense_width(mut self, f: usize) -> Self {
        self.encoder.dense_d_ff = Some(f);
        self
    }
    fn shared(mut self, n: usize) -> Self {
        self.encoder = self.encoder.map_moe(|m| m.with_num_shared_experts(n));
        self
    }
    fn sigmoid_bias(mut self) -> Self {
        self.aux_coef = 0.0;
        self.encoder = self.encoder.map_moe(|m| {
            m.with_router_score(RouterScore::Sigmoid)
                .with_expert_bias_rate(1e-3)
        });
        self
    }
}

/// The numbers of one run.
fn metrics(log: &RunLog) -> Metrics {
    let tokens: usize = log.final_eval.iter().map(|d| d.tokens).sum();
    let all = |f: fn(&switch_moe::lab::run::DomainEval) -> f64| {
        log.final_eval
            .iter()
            .map(|d| f(d) * d.tokens as f64)
            .sum::<f64>()
            / tokens.max(1) as f64
    };
    let mut m: Metrics = vec![
        ("all_dropless", all(|d| d.test_ce_dropless)),
        ("all_eval_cf", all(|d| d.test_ce)),
    ];
    for (i, name) in ["shakespeare", "rust", "prose"].iter().enumerate() {
        let v = log
            .final_eval
            .get(i)
            .map_or(f64::NAN, |d| d.test_ce_dropless);
        m.push((domain_key(name), v));
    }
    for (l, table) in log.byte_routing.iter().enumerate().take(2) {
        m.push((
            if l == 0 { "cmi_l1" } else { "cmi_l2" },
            conditional_mi(table),
        ));
    }
    m.push(("params", log.num_params as f64));
    m.push(("tokens_per_s", log.tokens_per_s));
    m
}

fn domain_key(name: &str) -> &'static str {
    match name {
        "shakespeare" => "shakespeare_dropless",
        "rust" => "rust_dropless",
        _ => "prose_dropless",
    }
}

/// I(expert; domain | byte) of the two reference routers on the probe bytes (the first
/// [`PROBE_TOKENS`] of each domain's test split, as the runs' probe): a hash of the (previous,
/// current) byte pair, and uniform random experts (seeded).
fn reference_cmi(corpus: &Corpus) -> (f64, f64) {
    let e = REFERENCE_EXPERTS;
    let domains = corpus.domains.len();
    let mut hash = vec![vec![vec![0.0; e]; domains]; 256];
    let mut random = hash.clone();
    let mut rng = HostRng::new(0xC0FFEE);
    for (d, domain) in corpus.domains.iter().enumerate() {
        let bytes = &domain.test[..PROBE_TOKENS.min(domain.test.len())];
        for (i, &b) in bytes.iter().enumerate() {
            let prev = if i == 0 { 0 } else { bytes[i - 1] };
            let h = (prev as u64 * 0x9E37_79B9 + b as u64 * 0x85EB_CA6B) >> 7;
            hash[b as usize % 256][d][(h % e as u64) as usize] += 1.0;
            random[b as usize % 256][d][rng.below(e)] += 1.0;
        }
    }
    (conditional_mi(&hash), conditional_mi(&random))
}

/// summary.md from final.csv (and the probe bytes for the references).
fn report(out: &Path, corpus: &Corpus) {
    let rows = read_final(out);
    if rows.is_empty() {
        fail(&format!("no runs in {}/final.csv", out.display()));
    }
    let (hash, random) = reference_cmi(corpus);
    let mut md = String::from("# R3.4 — which router?\n\n");
    let _ = writeln!(
        md,
        "Test cross-entropy in nats per byte on every byte of the test splits, mean over seeds, \
         **dropless**; Δ: paired (same seed) difference to `switch-top1` with its 95% t interval. \
         Per second: Δ ÷ the arm's training speed relative to `switch-top1`'s is not meaningful \
         for a loss; the tokens/s column says how much longer an arm takes for the same steps. \
         CMI: I(expert; domain | byte) in nats per sparse layer; references on the same probe \
         bytes: bigram hash router {hash:.4}, random router (estimator bias) {random:.4}, byte \
         hash 0.\n\n| arm | seeds | params | all | shakespeare | rust | prose | Δ all vs \
         switch-top1 | beats it? | eval-cf all | tokens/s | CMI L1 / L2 |\n|---|---|---|---|---|\
         ---|---|---|---|---|---|---|"
    );
    for arm in ARMS {
        let n = rows.iter().filter(|r| r.arm == arm).count();
        if n == 0 {
            continue;
        }
        let m = |k: &str| mean_of(&rows, arm, k);
        let (delta, beats) = if arm == "switch-top1" {
            ("—".to_string(), "—")
        } else {
            let (d, h) = paired(&paired_diffs(&rows, arm, "switch-top1", "all_dropless"));
            (
                format!("{d:+.4} ± {h:.4}"),
                if d + h < 0.0 { "yes" } else { "no" },
            )
        };
        let _ = writeln!(
            md,
            "| {arm} | {n} | {:.2} M | {:.4} | {:.4} | {:.4} | {:.4} | {delta} | {beats} | {:.4} | \
             {:.0} | {:.4} / {:.4} |",
            m("params") / 1e6,
            m("all_dropless"),
            m("shakespeare_dropless"),
            m("rust_dropless"),
            m("prose_dropless"),
            m("all_eval_cf"),
            m("tokens_per_s"),
            m("cmi_l1"),
            m("cmi_l2"),
        );
    }
    std::fs::write(out.join("summary.md"), &md)
        .unwrap_or_else(|e| fail(&format!("writing summary.md: {e}")));
    print!("{md}");
}
