//! Train a Switch Transformer language model with burn-train's Learner.
//!
//! ```sh
//! cargo run --release --example train                      # ndarray (CPU), tiny-shakespeare
//! cargo run --release --features wgpu --example train      # wgpu (preset from the adapter)
//! cargo run --release --example train -- --data my.txt --max-steps 200
//! cargo run --release --example train -- --resume --artifact-dir artifacts/<run> --epochs 3
//! ```
//!
//! The program says what it is about to do in one block (backend, device, preset and why, model
//! size, steps, artifact directory), then shows progress (burn-train's dashboard on a terminal,
//! plain lines otherwise), the validation loss of each epoch and a few samples. Artifacts
//! (config, tokenizer, model.txt, checkpoints, metric logs, routing.csv, model.mpk) go to
//! `--artifact-dir`; `examples/generate.rs` samples from such a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::config::Config;
use burn::tensor::backend::AutodiffBackend;
use clap::{CommandFactory, FromArgMatches, Parser};
use switch_moe::backend::{DeviceInfo, DeviceKind};
use switch_moe::generate::{SamplingConfig, generate};
use switch_moe::train::{
    CollapsePolicy, TokenizerKind, TrainOptions, TrainPlan, TrainingConfig, load_trained,
    train_data_parallel,
};
use switch_moe::{DropPolicy, RouterScore, RoutingMode, SwitchEncoderConfig, SwitchLmConfig};

/// Train a small Switch Transformer (mixture-of-experts) language model on a text corpus, then
/// print a few samples from it.
///
/// With no flags it trains on tiny-shakespeare (downloaded once, about 1 MB) with the preset that
/// suits the device: `cpu` on a CPU (ndarray, LibTorch on the CPU, or wgpu on a software driver
/// such as lavapipe), `gpu` on a GPU. Each flag left out takes the preset's value (table below).
/// The program prints what it will do, then progress lines (or burn-train's dashboard on a
/// terminal) with the loss, routing balance, speed and time left. Checkpoints, metric logs,
/// per-expert routing (routing.csv) and the final model.mpk go to --artifact-dir; sample more
/// text with `cargo run --release --example generate -- --artifact-dir <dir>`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Corpus: a UTF-8 text file, or a directory whose files are all used. Default:
    /// $SWITCH_MOE_DATA, else tiny-shakespeare downloaded once to ~/.cache/switch-moe.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where config, tokenizer, model.txt, checkpoints, logs and routing.csv go. Default:
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
    /// Windows (sequences) per batch; one optimiser step per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per window (context length).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Epochs. Without a step budget an epoch is one pass over the training windows. With one
    /// (--max-steps, or the cpu preset's 500 steps) the budget is split evenly over the epochs
    /// and an epoch is that many batches of windows drawn at random: less or more than a pass.
    /// Giving --epochs without --max-steps drops the preset's step budget (whole passes).
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimiser steps in all, split evenly over the epochs (see --epochs): for quick runs.
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
    /// The defaults for flags left out (table below). Default: gpu on a GPU, cpu on a CPU
    /// (including wgpu on a software driver such as lavapipe).
    #[arg(long, value_parser = ["cpu", "gpu"])]
    preset: Option<String>,
    /// Plain progress lines even on a terminal (no dashboard).
    #[arg(long)]
    plain: bool,
    /// Train data-parallel on N devices with burn-train's multi-device strategy: N GPUs with
    /// cuda (and wgpu's discrete GPUs); on a CPU backend N copies of the one CPU device (the
    /// same code path, no speed-up). --batch-size stays the global batch, split evenly.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    devices: u16,
    /// Optimiser steps per epoch, i.e. between checkpoints: a kill loses at most this many.
    /// Default: a tenth of the run (of the step budget, or of the passes, at most one pass).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// What a collapse alarm (an expert dead for --dead-expert-steps steps, or a max expert load
    /// at --max-load-alarm) does: warn (one line, train on) or stop (like a NaN loss: the last
    /// good checkpoint stays intact).
    #[arg(long, value_parser = ["warn", "stop"])]
    on_collapse: Option<String>,
    /// Consecutive training steps with < 1% of its fair share after which an expert is dead.
    #[arg(long)]
    dead_expert_steps: Option<usize>,
    /// Max expert load (E · busiest fraction; 1 = balance, E = collapse) that raises an alarm.
    /// Default: halfway, 1 + (E − 1) / 2.
    #[arg(long)]
    max_load_alarm: Option<f64>,
    /// Router scores: softmax (Switch) or sigmoid (DeepSeek-V3).
    #[arg(long, value_parser = ["softmax", "sigmoid"])]
    router_score: Option<String>,
    /// Aux-loss-free balancing: per-expert selection bias moved by ± this rate after every
    /// training step (1e-3 is typical; 0 = off).
    #[arg(long)]
    expert_bias_rate: Option<f64>,
    /// Always-on shared experts added to every sparse layer (DeepSeekMoE, Qwen2-MoE).
    #[arg(long)]
    shared_experts: Option<usize>,
    /// Scale the shared experts by a learned sigmoid gate (Qwen2-MoE).
    #[arg(long)]
    shared_gate: bool,
    /// Which assignments an overflowing expert drops: position (earlier tokens first, the paper)
    /// or probability (lowest router probability first).
    #[arg(long, value_parser = ["position", "probability"])]
    drop_policy: Option<String>,
    /// Routing: token-choice (each token picks its experts). expert-choice is refused: in a
    /// causal language model it would see future tokens.
    #[arg(long, value_parser = ["token-choice", "expert-choice"])]
    routing: Option<String>,
}

/// The preset's training config; flags replace its fields.
fn preset(name: &str) -> TrainingConfig {
    let gpu = name == "gpu";
    // cpu: about 10 minutes on 2 cores with ndarray (BENCHMARKS.md: ~4k tokens/s).
    let d_model = if gpu { 384 } else { 128 };
    let d_ff = 4 * d_model;
    let layers = if gpu { 6 } else { 4 };
    let heads = if gpu { 6 } else { 4 };
    let experts = 8;
    let seq_len = if gpu { 256 } else { 128 };
    let batch = if gpu { 64 } else { 32 };
    // With the step budget, 10 epochs of 50 steps: a checkpoint every tenth of the run.
    let epochs = if gpu { 5 } else { 10 };
    let max_steps = if gpu { None } else { Some(500) };
    let lr = if gpu { 1e-3 } else { 2e-3 };
    let encoder = SwitchEncoderConfig::new(d_model, d_ff, heads, layers, experts)
        .with_norm_first(true)
        .with_dropout(0.1);
    let model = SwitchLmConfig::new(0, seq_len, encoder);
    TrainingConfig::new(model, TokenizerKind::Bpe { vocab_size: 1024 })
        .with_batch_size(batch)
        .with_num_epochs(epochs)
        .with_max_steps(max_steps)
        .with_lr(lr)
}

/// The presets' values, for `--help`, read from [`preset`] itself.
fn presets_help() -> String {
    let (cpu, gpu) = (preset("cpu"), preset("gpu"));
    type Row = (&'static str, fn(&TrainingConfig) -> String);
    let rows: [Row; 10] = [
        ("d_model", |c| c.model.encoder.moe().d_model.to_string()),
        ("d_ff", |c| c.model.encoder.moe().d_ff.to_string()),
        ("layers", |c| {
            let e = &c.model.encoder;
            format!("{} ({} sparse)", e.n_layers, e.n_layers / e.moe_every)
        }),
        ("heads", |c| c.model.encoder.layer.n_heads.to_string()),
        ("experts", |c| {
            let moe = c.model.encoder.moe();
            format!("{}, top-{}", moe.num_experts, moe.top_k)
        }),
        ("seq len", |c| c.model.max_seq_len.to_string()),
        ("batch", |c| c.batch_size.to_string()),
        ("vocab", |c| match c.tokenizer {
            TokenizerKind::Bpe { vocab_size } => format!("BPE {vocab_size}"),
            _ => "char".into(),
        }),
        ("steps", |c| match (c.max_steps, c.num_epochs) {
            (Some(steps), 1) => format!("{steps} (1 epoch)"),
            (Some(steps), n) => format!("{steps} ({n} epochs)"),
            (None, n) => format!("{n} epochs, 1 pass each"),
        }),
        ("lr", |c| format!("{:e}", c.lr)),
    ];
    let mut text = String::from("Presets (flags left out take these values):\n");
    text += &format!("  {:<10} {:<20} {}\n", "", "cpu", "gpu");
    for (name, value) in rows {
        text += &format!("  {name:<10} {:<20} {}\n", value(&cpu), value(&gpu));
    }
    text += "\nThe cpu preset takes about 10 minutes on 2 CPU cores (ndarray, release build).\n\
             An epoch is one pass over the data unless a step budget (--max-steps) sets its length.";
    text
}

/// The preset named by `--preset`, or the one that suits the device, with the reason.
fn choose_preset(args: &Args, device: &DeviceInfo) -> (&'static str, String) {
    let backend = switch_moe::backend::NAME;
    if let Some(name) = &args.preset {
        let name = if name == "gpu" { "gpu" } else { "cpu" };
        return (name, "chosen with --preset".into());
    }
    if device.kind.is_gpu() {
        let why = format!(
            "the {backend} device is a {}; --preset cpu for a short run",
            device.kind.label()
        );
        return ("gpu", why);
    }
    let why = match (backend, device.kind) {
        ("wgpu", DeviceKind::Cpu) => "the wgpu adapter runs on the CPU (a software driver such as \
                                      lavapipe), where the gpu preset would take hours; --preset \
                                      gpu to override"
            .to_string(),
        (_, DeviceKind::Cpu) => format!("{backend} computes on the CPU; --preset gpu to override"),
        (_, kind) => format!(
            "the {backend} device is of {} (not a known GPU); --preset gpu to override",
            kind.label()
        ),
    };
    ("cpu", why)
}

fn build_config(args: &Args, preset_name: &str) -> TrainingConfig {
    let mut c = preset(preset_name);
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
    set!(args.expert_bias_rate, moe.expert_bias_rate);
    set!(args.shared_experts, moe.num_shared_experts);
    if args.shared_gate {
        moe.shared_gate = true;
    }
    if let Some(score) = &args.router_score {
        moe.router_score = match score.as_str() {
            "sigmoid" => RouterScore::Sigmoid,
            _ => RouterScore::Softmax,
        };
    }
    if let Some(policy) = &args.drop_policy {
        moe.drop_policy = match policy.as_str() {
            "probability" => DropPolicy::Probability,
            _ => DropPolicy::Position,
        };
    }
    if let Some(routing) = &args.routing {
        moe.routing = match routing.as_str() {
            "expert-choice" => RoutingMode::ExpertChoice,
            _ => RoutingMode::TokenChoice,
        };
    }
    set!(args.aux_coef, c.model.aux_coef);
    set!(args.z_coef, c.model.z_coef);
    set!(args.seq_len, c.model.max_seq_len);
    set!(args.batch_size, c.batch_size);
    set!(args.epochs, c.num_epochs);
    set!(args.lr, c.lr);
    set!(args.seed, c.seed);
    if args.checkpoint_every.is_some() {
        c.checkpoint_every = args.checkpoint_every;
    }
    set!(args.dead_expert_steps, c.health.dead_expert_steps);
    if args.max_load_alarm.is_some() {
        c.health.max_load_alarm = args.max_load_alarm;
    }
    if let Some(policy) = &args.on_collapse {
        c.health.on_collapse = match policy.as_str() {
            "stop" => CollapsePolicy::Stop,
            _ => CollapsePolicy::Warn,
        };
    }
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
    c
}

/// `host CPU (2 threads)`, or `llvmpipe (LLVM 15.0.7, 256 bits), a CPU (Vulkan, llvmpipe, ...)`.
fn device_line(info: &DeviceInfo) -> String {
    let mut line = info.name.clone();
    if !info.name.contains(info.kind.label()) {
        line += &format!(", a {}", info.kind.label());
    }
    if let Some(detail) = &info.detail {
        line += &format!(" ({detail})");
    }
    line
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The second half of the start block: what the run will do, once data and model are ready.
fn print_plan(plan: &TrainPlan, config: &TrainingConfig) {
    let enc = &config.model.encoder;
    let moe = enc.moe();
    println!(
        "  model      {} parameters: d_model {}, d_ff {}, {} layers ({} sparse × {} experts, \
         top-{}), {} heads, vocab {}",
        thousands(plan.num_params),
        moe.d_model,
        moe.d_ff,
        enc.n_layers,
        plan.sparse_layers.len(),
        moe.num_experts,
        moe.top_k,
        enc.layer.n_heads,
        plan.vocab_size
    );
    println!(
        "  data       {}: {} training / {} validation tokens",
        plan.corpus.display(),
        thousands(plan.split_tokens.0),
        thousands(plan.split_tokens.1)
    );
    let epochs = plan.epochs.clone().count();
    let epoch_is = if config.max_steps.is_some() {
        format!(
            "random batches, a step budget; one pass would be {} steps",
            thousands(plan.steps_per_pass)
        )
    } else {
        "one pass over the training windows".to_string()
    };
    println!(
        "  plan       {} steps of {} tokens (batch {} × seq {}): {} epoch{} of {} steps ({epoch_is})",
        thousands(plan.steps()),
        thousands(plan.tokens_per_step()),
        plan.batch_size,
        plan.seq_len,
        epochs,
        if epochs == 1 { "" } else { "s" },
        thousands(plan.steps_per_epoch),
    );
    if plan.devices > 1 {
        println!(
            "  parallel   each step: {} devices × {} windows; gradients summed on the first",
            plan.devices,
            plan.batch_size / plan.devices
        );
    }
    println!(
        "  artifacts  {} (model.txt lists the model's modules)",
        plan.artifact_dir.display()
    );
    for notice in &plan.notices {
        println!("  note       {notice}");
    }
    println!();
}

fn run<B: AutodiffBackend>(
    args: Args,
    devices: Vec<B::Device>,
    info: &DeviceInfo,
    autotune: Option<String>,
) -> Result<(), switch_moe::Error> {
    let device = devices[0].clone();
    let artifact_dir = args.artifact_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("artifacts").join(secs.to_string())
    });
    // A run killed before it wrote its config.json has nothing to resume: start it afresh.
    let resume = args.resume && artifact_dir.join("config.json").exists();
    let fresh_note = (args.resume && !resume).then(|| {
        format!(
            "--resume: {} holds no run yet (it stopped before writing config.json): starting \
             a fresh run there",
            artifact_dir.display()
        )
    });
    let (config, preset_line) = if resume {
        let mut saved = TrainingConfig::load(artifact_dir.join("config.json")).map_err(|e| {
            switch_moe::Error::Checkpoint(format!(
                "--resume: cannot read {}/config.json ({e}): pass the --artifact-dir of an earlier run",
                artifact_dir.display()
            ))
        })?;
        // The model is the run's; how long and how fast it trains may change on a resume
        // (e.g. a lower --lr after a NaN, a larger budget to train on).
        if let Some(epochs) = args.epochs {
            saved.num_epochs = epochs;
        }
        if args.max_steps.is_some() {
            saved.max_steps = args.max_steps;
        }
        if args.checkpoint_every.is_some() {
            saved.checkpoint_every = args.checkpoint_every;
        }
        if let Some(lr) = args.lr {
            saved.lr = lr;
        }
        (
            saved,
            "none: --resume continues with the run's config.json".into(),
        )
    } else {
        let (name, why) = choose_preset(&args, info);
        (build_config(&args, name), format!("{name}, because {why}"))
    };
    config.validate()?;

    // The start block: what runs where, then (once the data and model are ready) the plan.
    println!("switch-moe train");
    let mut backend_line = switch_moe::backend::NAME.to_string();
    if let Some(level) = autotune {
        backend_line += &format!(" (cubecl autotune level {level}");
        if let Some(dir) = switch_moe::backend::autotune_cache_dir() {
            backend_line += &format!(", results cached in {}", dir.display());
        }
        backend_line += ")";
    }
    println!("  backend    {backend_line}");
    match devices.len() {
        1 => println!("  device     {}", device_line(info)),
        n => println!(
            "  devices    {n} × {} (data parallel: burn-train's multi-device strategy)",
            device_line(info)
        ),
    }
    println!("  preset     {preset_line}");
    if let Some(note) = fresh_note {
        println!("  note       {note}");
    }

    let options = TrainOptions {
        artifact_dir: artifact_dir.clone(),
        data: args.data.clone(),
        tokenizer_file: args.tokenizer.clone(),
        resume,
        plain_progress: args.plain.then_some(true),
        epoch_limit: None,
    };
    let start = std::time::Instant::now();
    let shown = config.clone();
    let summary =
        train_data_parallel::<B>(config, &options, devices, |plan| print_plan(plan, &shown))?;

    println!(
        "\ntrained in {:.1} min ({} parameters, vocab {})",
        start.elapsed().as_secs_f64() / 60.0,
        thousands(summary.num_params),
        summary.vocab_size,
    );
    for (epoch, loss) in summary.epochs.clone().zip(&summary.valid_loss) {
        println!(
            "epoch {epoch}: validation loss {loss:.4} (perplexity {:.2})",
            loss.exp()
        );
    }
    println!(
        "{} holds the weights of epoch {}",
        artifact_dir.join("model.mpk").display(),
        summary.saved_epoch
    );

    let (model, tokenizer, _) = load_trained::<B::InnerBackend>(&artifact_dir, &device)?;
    // Prompts for tiny-shakespeare; on another corpus a character tokenizer may lack their
    // letters, and then the model's first token stands in.
    let mut prompts: Vec<String> = ["ROMEO:", "First Citizen:\n", "The king"]
        .into_iter()
        .filter(|p| tokenizer.encode(p).is_ok())
        .map(String::from)
        .collect();
    if prompts.is_empty() {
        prompts.push(tokenizer.decode(&[0])?);
    }
    for (i, prompt) in prompts.iter().enumerate() {
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
        "batch_size" => "--batch-size",
        "num_epochs" => "--epochs",
        "max_steps" => "--max-steps",
        "patience" => "--patience",
        "lr" => "--lr",
        "seed" => "--seed",
        "checkpoint_every" => "--checkpoint-every",
        "expert_bias_rate" => "--expert-bias-rate",
        "shared_gate" => "--shared-gate",
        "num_shared_experts" => "--shared-experts",
        "routing" | "encoder.layer.moe.routing" => "--routing",
        "dead_expert_steps" => "--dead-expert-steps",
        "max_load_alarm" => "--max-load-alarm",
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

/// The arguments, with the presets' table at the end of `--help`.
fn parse_args() -> Args {
    let matches = Args::command().after_help(presets_help()).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    // CPU training allocates many large buffers per step; keep them in the heap (glibc).
    switch_moe::backend::keep_freed_memory();
    let args = parse_args();
    // SAFETY: no other thread has started yet (clap and mallopt start none).
    let autotune = unsafe { switch_moe::backend::prefer_minimal_autotune() };
    let devices = switch_moe::backend::data_parallel_devices(args.devices as usize);
    // Before the first tensor: with wgpu this is where the adapter is chosen.
    let info = switch_moe::backend::describe_device(&devices[0]);
    match run::<switch_moe::backend::SelectedAutodiff>(args, devices, &info, autotune) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}
