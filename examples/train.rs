//! Train a Switch Transformer language model with burn-train's Learner.
//!
//! ```sh
//! cargo run --release --example train                      # ndarray (CPU), tiny-shakespeare
//! cargo run --release --features wgpu --example train      # wgpu (GPU preset)
//! cargo run --release --example train -- --data my.txt --max-steps 200
//! cargo run --release --example train -- --resume --artifact-dir artifacts/<run>
//! ```
//!
//! Artifacts (config, tokenizer, checkpoints, metric logs, routing.csv, model.mpk) go to
//! `--artifact-dir`; `examples/generate.rs` samples from such a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use switch_moe::generate::{SamplingConfig, generate};
use switch_moe::train::{TokenizerKind, TrainOptions, TrainingConfig, load_trained, train};
use switch_moe::{SwitchEncoderConfig, SwitchLmConfig};

/// Train a Switch Transformer language model (burn-train Learner, per-expert routing metrics,
/// checkpoints). Flags left out take the preset's value: `cpu` (small, ~10 minutes on 2 cores
/// with ndarray) or `gpu` (larger; the default with `--features wgpu`).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Corpus: a UTF-8 text file, or a directory whose files are all used. Default:
    /// $SWITCH_MOE_DATA, else tiny-shakespeare downloaded once to ~/.cache/switch-moe.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where config, tokenizer, checkpoints, logs and routing.csv go. Default:
    /// artifacts/<unix-time>.
    #[arg(long)]
    artifact_dir: Option<PathBuf>,
    /// Continue the run in --artifact-dir from its last checkpoint (model settings come from its
    /// config.json; --epochs may be raised).
    #[arg(long)]
    resume: bool,
    /// Use this tokenizer.json instead of training a BPE.
    #[arg(long, conflicts_with = "char")]
    tokenizer: Option<PathBuf>,
    /// Character-level tokens instead of byte-level BPE.
    #[arg(long)]
    char: bool,
    /// BPE vocabulary size (256 bytes + merges), at least 257.
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Model width d_model.
    #[arg(long)]
    d_model: Option<usize>,
    /// Hidden width of each expert and dense FFN.
    #[arg(long)]
    d_ff: Option<usize>,
    /// Transformer layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (must divide --d-model).
    #[arg(long)]
    heads: Option<usize>,
    /// Experts per sparse layer.
    #[arg(long)]
    experts: Option<usize>,
    /// Experts per token (1 = Switch routing).
    #[arg(long)]
    top_k: Option<usize>,
    /// Every n-th layer is sparse (2 = every other, as in the paper; 1 = all).
    #[arg(long)]
    moe_every: Option<usize>,
    /// Expert capacity factor in training.
    #[arg(long)]
    capacity_factor: Option<f64>,
    /// Expert capacity factor in validation and generation.
    #[arg(long)]
    eval_capacity_factor: Option<f64>,
    /// Weight α of the load-balancing loss.
    #[arg(long)]
    aux_coef: Option<f64>,
    /// Weight β of the router z-loss.
    #[arg(long)]
    z_coef: Option<f64>,
    /// Windows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per window (context length).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Epochs (one pass over the training windows each).
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many optimiser steps (spread over the epochs): for quick runs.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Peak learning rate (AdamW, warm-up then cosine).
    #[arg(long)]
    lr: Option<f64>,
    /// Early stopping: stop when the validation loss has not improved for this many epochs and
    /// keep the best epoch's weights.
    #[arg(long)]
    patience: Option<usize>,
    /// Seed of initialisation, shuffling and sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Defaults for flags left out: cpu or gpu. Default: gpu with the wgpu or cuda backend, else cpu.
    #[arg(long, value_parser = ["cpu", "gpu"])]
    preset: Option<String>,
    /// Plain progress lines even on a terminal (no dashboard).
    #[arg(long)]
    plain: bool,
}

/// The preset's training config; flags replace its fields.
fn preset(name: &str) -> TrainingConfig {
    // d_model, d_ff, layers, heads, experts, seq_len, batch, epochs, lr, max_steps
    let (d, f, l, h, e, s, b, epochs, lr, max_steps) = match name {
        "gpu" => (384, 1536, 6, 6, 8, 256, 64, 5, 1e-3, None),
        _ => (128, 512, 4, 4, 8, 128, 32, 1, 2e-3, Some(500)),
    };
    let encoder = SwitchEncoderConfig::new(d, f, h, l, e)
        .with_norm_first(true)
        .with_dropout(0.1);
    let model = SwitchLmConfig::new(0, s, encoder);
    TrainingConfig::new(model, TokenizerKind::Bpe { vocab_size: 1024 })
        .with_batch_size(b)
        .with_num_epochs(epochs)
        .with_max_steps(max_steps)
        .with_lr(lr)
}

fn build_config(args: &Args) -> Result<TrainingConfig, switch_moe::Error> {
    let name = args.preset.clone().unwrap_or_else(|| {
        if matches!(switch_moe::backend::NAME, "wgpu" | "cuda") {
            "gpu"
        } else {
            "cpu"
        }
        .to_string()
    });
    let mut c = preset(&name);
    let enc = &mut c.model.encoder;
    macro_rules! set {
        ($flag:expr, $field:expr) => {
            if let Some(v) = $flag {
                $field = v;
            }
        };
    }
    set!(args.layers, enc.n_layers);
    set!(args.moe_every, enc.moe_every);
    set!(args.heads, enc.layer.n_heads);
    let moe = &mut enc.layer.moe;
    set!(args.d_model, moe.d_model);
    set!(args.d_ff, moe.d_ff);
    set!(args.experts, moe.num_experts);
    set!(args.top_k, moe.top_k);
    set!(args.capacity_factor, moe.capacity_factor);
    set!(args.eval_capacity_factor, moe.eval_capacity_factor);
    set!(args.aux_coef, c.model.aux_coef);
    set!(args.z_coef, c.model.z_coef);
    set!(args.seq_len, c.model.max_seq_len);
    set!(args.batch_size, c.batch_size);
    set!(args.epochs, c.num_epochs);
    set!(args.lr, c.lr);
    set!(args.seed, c.seed);
    if args.patience.is_some() {
        c.patience = args.patience;
    }
    if args.max_steps.is_some() {
        c.max_steps = args.max_steps;
    } else if args.epochs.is_some() {
        c.max_steps = None; // an explicit epoch count means whole epochs
    }
    if args.char {
        c.tokenizer = TokenizerKind::Char;
    } else if let Some(v) = args.vocab_size {
        c.tokenizer = TokenizerKind::Bpe { vocab_size: v };
    }
    if c.model.encoder.moe_every > c.model.encoder.n_layers && args.moe_every.is_none() {
        c.model.encoder.moe_every = c.model.encoder.n_layers; // e.g. --layers 1: make it sparse
    }
    Ok(c)
}

fn run<B: AutodiffBackend>(args: Args, device: B::Device) -> Result<(), switch_moe::Error> {
    let artifact_dir = args.artifact_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("artifacts").join(secs.to_string())
    });
    let config = if args.resume {
        let mut saved = TrainingConfig::load(artifact_dir.join("config.json")).map_err(|e| {
            switch_moe::Error::Checkpoint(format!(
                "--resume: cannot read {}/config.json ({e}): pass the --artifact-dir of an earlier run",
                artifact_dir.display()
            ))
        })?;
        if let Some(epochs) = args.epochs {
            saved.num_epochs = epochs;
        }
        saved
    } else {
        build_config(&args)?
    };
    let options = TrainOptions {
        artifact_dir: artifact_dir.clone(),
        data: args.data.clone(),
        tokenizer_file: args.tokenizer.clone(),
        resume: args.resume,
        plain_progress: args.plain.then_some(true),
    };
    println!(
        "backend: {}  artifacts: {}",
        switch_moe::backend::NAME,
        artifact_dir.display()
    );
    let start = std::time::Instant::now();
    let summary = train::<B>(config, &options, device.clone())?;
    println!(
        "trained {} parameters (vocab {}, {} train / {} valid tokens) in {:.1} min",
        summary.num_params,
        summary.vocab_size,
        summary.split_tokens.0,
        summary.split_tokens.1,
        start.elapsed().as_secs_f64() / 60.0
    );
    for (epoch, loss) in summary.epochs.clone().zip(&summary.valid_loss) {
        println!(
            "epoch {epoch}: validation loss {loss:.4} (perplexity {:.2})",
            loss.exp()
        );
    }
    println!(
        "model.mpk holds the weights of epoch {}",
        summary.saved_epoch
    );

    let (model, tokenizer, _) = load_trained::<B::InnerBackend>(&artifact_dir, &device)?;
    for (i, prompt) in ["ROMEO:", "First Citizen:\n", "The king"]
        .iter()
        .enumerate()
    {
        let sampling = SamplingConfig {
            length: 120,
            seed: i as u64,
            ..SamplingConfig::default()
        };
        let text = generate(&model, &tokenizer, prompt, &sampling, &device)?;
        println!("\n--- sample {} ---\n{text}", i + 1);
    }
    Ok(())
}

/// The flag that sets a config field, for error messages.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "vocab_size" => "--vocab-size",
        "max_seq_len" => "--seq-len",
        "d_model" => "--d-model",
        "d_ff" => "--d-ff",
        "n_layers" => "--layers",
        "n_heads" => "--heads",
        "num_experts" => "--experts",
        "top_k" => "--top-k",
        "moe_every" => "--moe-every",
        "capacity_factor" => "--capacity-factor",
        "eval_capacity_factor" => "--eval-capacity-factor",
        "aux_coef" => "--aux-coef",
        "z_coef" => "--z-coef",
        _ => return None,
    })
}

/// One paragraph: config errors are reported by the flag that set the value.
fn describe(error: &switch_moe::Error) -> String {
    match error {
        switch_moe::Error::Config {
            field,
            value,
            reason,
            ..
        } => match flag_of(field) {
            Some(flag) => format!("invalid value for {flag}: {value} ({reason}); see --help"),
            None => format!("{error}"),
        },
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    // CPU training allocates many large buffers per step; keep them in the heap (glibc).
    switch_moe::backend::keep_freed_memory();
    let args = Args::parse();
    let device = switch_moe::backend::default_device();
    match run::<switch_moe::backend::SelectedAutodiff>(args, device) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}
