//! `cargo run --release --example train`: trains a Switch Transformer language model with
//! burn-train's Learner, then prints samples and draws the run's report.
//!
//! The settings come from a preset (`--preset cpu|gpu`, by default the one that suits the device)
//! or a config file (`--config FILE`, e.g. a run's `config.json`), then the flags, each of which
//! replaces one field. `--print-config` prints the resolved config and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::backend::{DeviceInfo, DeviceKind};
use crate::generate::{SamplingConfig, generate};
use crate::train::human::{duration, thousands};
use crate::train::{
    CollapsePolicy, Preset, TokenizerKind, TrainOptions, TrainPlan, TrainingConfig, load_trained,
    time_steps, train_data_parallel,
};
use crate::{BalanceScope, DropPolicy, Error, ForcedRouting, RouterScore, RoutingMode};

/// Train a small Switch Transformer (mixture-of-experts) language model on a text corpus, then
/// print a few samples from it and draw the run's report.
///
/// With no flags it trains on tiny-shakespeare (downloaded once, about 1 MB) with the preset that
/// suits the device: `cpu` on a CPU (ndarray, LibTorch on the CPU, or wgpu on a software driver
/// such as lavapipe), `gpu` on a GPU. A config file (--config, e.g. a run's config.json) replaces
/// the preset; each flag then replaces one setting. The program prints what it will do, then
/// progress lines (or burn-train's dashboard on a terminal) with the loss, routing balance, speed
/// and time left. Checkpoints, metric logs, per-expert routing (routing.csv), the final model.mpk
/// and report.html go to --artifact-dir; sample more text with
/// `cargo run --release --example generate -- --artifact-dir <dir>`.
#[derive(Parser, Debug)]
#[command(name = "train", version)]
pub struct Args {
    // --- Data ---
    /// Corpus: a UTF-8 text file, or a directory whose files are all used. Default:
    /// $SWITCH_MOE_DATA, else tiny-shakespeare downloaded once to ~/.cache/switch-moe.
    #[arg(long, help_heading = "Data")]
    data: Option<PathBuf>,
    /// Use this tokenizer.json instead of training a BPE.
    #[arg(long, conflicts_with = "char", help_heading = "Data")]
    tokenizer: Option<PathBuf>,
    /// Character-level tokens instead of byte-level BPE.
    #[arg(long, help_heading = "Data")]
    char: bool,
    /// BPE vocabulary size (256 bytes + merges), at least 257.
    #[arg(long, help_heading = "Data")]
    vocab_size: Option<usize>,
    /// Tokens per window (context length).
    #[arg(long, help_heading = "Data")]
    seq_len: Option<usize>,
    /// Windows (sequences) per batch; one optimiser step per batch.
    #[arg(long, help_heading = "Data")]
    batch_size: Option<usize>,
    /// Share of the corpus (its tail) held out for validation.
    #[arg(long, help_heading = "Data")]
    valid_fraction: Option<f64>,

    // --- Model ---
    /// Model width d_model.
    #[arg(long, help_heading = "Model")]
    d_model: Option<usize>,
    /// Hidden width of each expert and dense FFN.
    #[arg(long, help_heading = "Model")]
    d_ff: Option<usize>,
    /// Transformer layers.
    #[arg(long, help_heading = "Model")]
    layers: Option<usize>,
    /// Attention heads (must divide --d-model).
    #[arg(long, help_heading = "Model")]
    heads: Option<usize>,
    /// Experts per sparse layer; 1 trains a dense model (one expert is exactly a dense FFN: its
    /// gate is a softmax over one logit, and it drops nothing).
    #[arg(long, help_heading = "Model")]
    experts: Option<usize>,
    /// Every n-th layer is sparse (2 = every other, as in the paper; 1 = all).
    #[arg(long, help_heading = "Model")]
    moe_every: Option<usize>,
    /// Hidden activation of the experts and dense FFNs; swiglu (gated experts, as in Mixtral)
    /// needs every layer sparse (--moe-every 1).
    #[arg(long, value_parser = ["relu", "gelu", "swiglu"], help_heading = "Model")]
    activation: Option<String>,
    /// Layer norm placement: pre (before attention and FFN, as in GPT-2 and the presets) or post
    /// (after each residual addition, as in the original Transformer).
    #[arg(long, value_parser = ["pre", "post"], help_heading = "Model")]
    norm: Option<String>,
    /// Tie the LM head to the token embeddings (the head is the embedding matrix transposed).
    #[arg(long, help_heading = "Model")]
    tie_embeddings: bool,
    /// Dropout of the attention scores, residual branches and dense FFNs.
    #[arg(long, help_heading = "Model")]
    dropout: Option<f64>,
    /// Dropout inside the experts (on their hidden activations); the Switch paper's Table 4
    /// uses 0.4 for fine-tuning.
    #[arg(long, help_heading = "Model")]
    expert_dropout: Option<f64>,

    // --- Routing ---
    /// Experts per token (1 = Switch routing).
    #[arg(long, help_heading = "Routing")]
    top_k: Option<usize>,
    /// Expert capacity factor in training.
    #[arg(long, help_heading = "Routing")]
    capacity_factor: Option<f64>,
    /// Expert capacity factor in validation and generation.
    #[arg(long, help_heading = "Routing")]
    eval_capacity_factor: Option<f64>,
    /// Weight α of the load-balancing loss.
    #[arg(long, help_heading = "Routing")]
    aux_coef: Option<f64>,
    /// Weight β of the router z-loss.
    #[arg(long, help_heading = "Routing")]
    z_coef: Option<f64>,
    /// Router scores: softmax (Switch) or sigmoid (DeepSeek-V3).
    #[arg(long, value_parser = ["softmax", "sigmoid"], help_heading = "Routing")]
    router_score: Option<String>,
    /// Aux-loss-free balancing: per-expert selection bias moved by ± this rate after every
    /// training step (1e-3 is typical; 0 = off).
    #[arg(long, help_heading = "Routing")]
    expert_bias_rate: Option<f64>,
    /// Always-on shared experts added to every sparse layer (DeepSeekMoE, Qwen2-MoE).
    #[arg(long, help_heading = "Routing")]
    shared_experts: Option<usize>,
    /// Scale the shared experts by a learned sigmoid gate (Qwen2-MoE).
    #[arg(long, help_heading = "Routing")]
    shared_gate: bool,
    /// Which assignments an overflowing expert drops: position (earlier tokens first, the paper)
    /// or probability (lowest router probability first).
    #[arg(long, value_parser = ["position", "probability"], help_heading = "Routing")]
    drop_policy: Option<String>,
    /// Routing: token-choice (each token picks its experts). expert-choice is refused: in a
    /// causal language model it would see future tokens.
    #[arg(long, value_parser = ["token-choice", "expert-choice"], help_heading = "Routing")]
    routing: Option<String>,
    /// Over which tokens the load-balancing loss takes its fractions: batch (each forward's
    /// tokens, Switch), sequence (each sequence apart, DeepSeek-V3) or global (every token of the
    /// optimiser step across --devices, Megatron-Core).
    #[arg(long, value_parser = ["batch", "sequence", "global"], help_heading = "Routing")]
    balance_scope: Option<String>,
    /// Group-limited routing (DeepSeek-V3): the experts form this many groups.
    #[arg(long, help_heading = "Routing")]
    n_group: Option<usize>,
    /// Groups a token may choose its experts from (with --n-group).
    #[arg(long, help_heading = "Routing")]
    topk_group: Option<usize>,
    /// Factor on the gates after normalisation (DeepSeek-V3's routed_scaling_factor, 2.5).
    #[arg(long, help_heading = "Routing")]
    routed_scaling_factor: Option<f64>,
    /// A bias on the router logits (gpt-oss).
    #[arg(long, help_heading = "Routing")]
    router_bias: bool,
    /// Debug: choose experts without the router (round-robin or uniform random; balance losses
    /// off), to measure speed without the router's imbalance.
    #[arg(long, value_parser = ["off", "round-robin", "random"], help_heading = "Routing")]
    forced_routing: Option<String>,

    // --- Optimisation ---
    /// Peak learning rate (AdamW, linear warm-up then cosine).
    #[arg(long, help_heading = "Optimisation")]
    lr: Option<f64>,
    /// Final learning rate of the cosine as a fraction of --lr.
    #[arg(long, help_heading = "Optimisation")]
    min_lr_ratio: Option<f64>,
    /// Steps of linear warm-up (at most half the run).
    #[arg(long, help_heading = "Optimisation")]
    warmup_steps: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, help_heading = "Optimisation")]
    weight_decay: Option<f64>,
    /// Gradient clipping threshold (norm).
    #[arg(long, help_heading = "Optimisation")]
    grad_clip: Option<f64>,
    /// Epochs. Without a step budget an epoch is one pass over the training windows. With one
    /// (--max-steps, or the cpu preset's 500 steps) the budget is split evenly over the epochs
    /// and an epoch is that many batches of windows drawn at random: less or more than a pass.
    /// Giving --epochs without --max-steps drops the preset's step budget (whole passes).
    #[arg(long, help_heading = "Optimisation")]
    epochs: Option<usize>,
    /// Optimiser steps in all, split evenly over the epochs (see --epochs): for quick runs.
    #[arg(long, help_heading = "Optimisation")]
    max_steps: Option<usize>,
    /// Early stopping: stop when the validation loss has not improved for this many epochs and
    /// keep the best epoch's weights.
    #[arg(long, help_heading = "Optimisation")]
    patience: Option<usize>,

    // --- Run ---
    /// Read settings from this config file (a run's config.json, --print-config's output, or
    /// one written by hand): its fields replace the preset's, settings it leaves out keep the
    /// preset's, and flags replace both. Unknown or mistyped fields are an error.
    #[arg(long, help_heading = "Run")]
    config: Option<PathBuf>,
    /// Print the resolved config (preset or --config, then the flags) as JSON and exit.
    #[arg(long, help_heading = "Run")]
    print_config: bool,
    /// The defaults for flags left out (table below). Default: gpu on a GPU, cpu on a CPU
    /// (including wgpu on a software driver such as lavapipe).
    #[arg(long, value_parser = ["cpu", "gpu"], help_heading = "Run")]
    preset: Option<String>,
    /// Where config, tokenizer, model.txt, checkpoints, logs, routing.csv and the report go.
    /// Default: `artifacts/<unix-time>`.
    #[arg(long, help_heading = "Run")]
    artifact_dir: Option<PathBuf>,
    /// Continue the run in --artifact-dir from its last checkpoint (model settings come from its
    /// config.json; --epochs, --max-steps, --checkpoint-every and --lr may change).
    #[arg(long, help_heading = "Run")]
    resume: bool,
    /// Seed of initialisation, shuffling and sampling.
    #[arg(long, help_heading = "Run")]
    seed: Option<u64>,
    /// Plain progress lines even on a terminal (no dashboard).
    #[arg(long, help_heading = "Run")]
    plain: bool,
    /// Train data-parallel on N devices with burn-train's multi-device strategy: N GPUs with
    /// cuda (and wgpu's discrete GPUs); on a CPU backend N copies of the one CPU device (the
    /// same code path, no speed-up). --batch-size stays the global batch, split evenly.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), help_heading = "Run")]
    devices: u16,
    /// Optimiser steps per epoch, i.e. between checkpoints: a kill loses at most this many.
    /// Default: a tenth of the run (of the step budget, or of the passes, at most one pass).
    #[arg(long, help_heading = "Run")]
    checkpoint_every: Option<usize>,
    /// What a collapse alarm (an expert dead for --dead-expert-steps steps, or a max expert load
    /// at --max-load-alarm) does: warn (one line, train on) or stop (like a NaN loss: the last
    /// good checkpoint stays intact).
    #[arg(long, value_parser = ["warn", "stop"], help_heading = "Run")]
    on_collapse: Option<String>,
    /// Consecutive training steps with < 1% of its fair share after which an expert is dead.
    #[arg(long, help_heading = "Run")]
    dead_expert_steps: Option<usize>,
    /// Max expert load (E · busiest fraction; 1 = balance, E = collapse) that raises an alarm.
    /// Default: halfway, 1 + (E − 1) / 2.
    #[arg(long, help_heading = "Run")]
    max_load_alarm: Option<f64>,
    /// Skip timing a few steps before the run (done when another backend compiled into this
    /// program may be faster on this machine, e.g. wgpu on a software driver vs ndarray).
    #[arg(long, help_heading = "Run")]
    no_calibrate: bool,
    /// Do not draw report.html and its PNGs at the end of the run.
    #[arg(long, help_heading = "Run")]
    no_report: bool,
}

/// The presets' values, for `--help`, read from [`Preset::config`] itself.
fn presets_help() -> String {
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
            (None, n) => format!("{n} passes"),
        }),
        ("lr", |c| format!("{:e}", c.lr)),
    ];
    let configs: Vec<TrainingConfig> = Preset::ALL.iter().map(|p| p.config()).collect();
    let mut text = String::from("Presets (flags left out take these values):\n");
    text += &format!("  {:<10} {:<20} {}\n", "", "cpu", "gpu");
    for (name, value) in rows {
        text += &format!(
            "  {name:<10} {:<20} {}\n",
            value(&configs[0]),
            value(&configs[1])
        );
    }
    text += "\nThe cpu preset takes about 10 minutes on 2 CPU cores (ndarray, release build).\n\
             An epoch is one pass over the data unless a step budget (--max-steps) sets its \
             length.";
    text
}

/// The preset named by `--preset`, or the one that suits the device, with the reason.
fn choose_preset(args: &Args, device: &DeviceInfo) -> (Preset, String) {
    let backend = crate::backend::NAME;
    if let Some(preset) = args.preset.as_deref().and_then(Preset::from_name) {
        return (preset, "chosen with --preset".into());
    }
    if device.kind.is_gpu() {
        let why = format!(
            "the {backend} device is a {}; --preset cpu for a short run",
            device.kind.label()
        );
        return (Preset::Gpu, why);
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
    (Preset::Cpu, why)
}

/// Replaces the fields the flags set.
fn apply_flags(mut c: TrainingConfig, args: &Args) -> TrainingConfig {
    macro_rules! set {
        ($flag:expr, $field:expr) => {
            if let Some(v) = $flag {
                $field = v;
            }
        };
    }
    let enc = &mut c.model.encoder;
    set!(args.layers, enc.n_layers);
    set!(args.moe_every, enc.moe_every);
    set!(args.heads, enc.layer.n_heads);
    set!(args.dropout, enc.layer.dropout);
    if let Some(norm) = &args.norm {
        enc.layer.norm_first = norm == "pre";
    }
    let moe = &mut enc.layer.moe;
    set!(args.d_model, moe.d_model);
    set!(args.d_ff, moe.d_ff);
    set!(args.experts, moe.num_experts);
    set!(args.top_k, moe.top_k);
    set!(args.capacity_factor, moe.capacity_factor);
    set!(args.eval_capacity_factor, moe.eval_capacity_factor);
    set!(args.expert_bias_rate, moe.expert_bias_rate);
    set!(args.shared_experts, moe.num_shared_experts);
    set!(args.expert_dropout, moe.expert_dropout);
    if args.shared_gate {
        moe.shared_gate = true;
    }
    if let Some(activation) = &args.activation {
        use burn::nn::activation::ActivationConfig;
        let relu_or_gelu = match activation.as_str() {
            "gelu" => Some(ActivationConfig::Gelu),
            "relu" => Some(ActivationConfig::Relu),
            _ => None,
        };
        // SwiGLU's widths are the block's own, so they are set after --d-model and --d-ff.
        *moe = match relu_or_gelu {
            Some(a) => moe.clone().with_activation(a),
            None => moe.clone().with_swiglu(),
        };
    } else if matches!(
        moe.activation,
        burn::nn::activation::ActivationConfig::SwiGlu(_)
    ) {
        // A config file's SwiGLU follows width flags.
        *moe = moe.clone().with_swiglu();
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
    if let Some(scope) = &args.balance_scope {
        moe.balance_scope = match scope.as_str() {
            "sequence" => BalanceScope::Sequence,
            "global" => BalanceScope::Global,
            _ => BalanceScope::Batch,
        };
    }
    if let Some(forced) = &args.forced_routing {
        moe.forced_routing = match forced.as_str() {
            "round-robin" => ForcedRouting::RoundRobin,
            "random" => ForcedRouting::Random,
            _ => ForcedRouting::Off,
        };
    }
    set!(args.n_group, moe.n_group);
    set!(args.topk_group, moe.topk_group);
    set!(args.routed_scaling_factor, moe.routed_scaling_factor);
    if args.router_bias {
        moe.router_bias = true;
    }
    if args.tie_embeddings {
        c.model.tie_embeddings = true;
    }
    set!(args.aux_coef, c.model.aux_coef);
    set!(args.z_coef, c.model.z_coef);
    set!(args.seq_len, c.model.max_seq_len);
    set!(args.batch_size, c.batch_size);
    set!(args.valid_fraction, c.valid_fraction);
    set!(args.epochs, c.num_epochs);
    set!(args.lr, c.lr);
    set!(args.min_lr_ratio, c.min_lr_ratio);
    set!(args.warmup_steps, c.warmup_steps);
    set!(args.weight_decay, c.weight_decay);
    set!(args.grad_clip, c.grad_clip);
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

/// The config of a fresh run: a config file or a preset, then the flags; with the start block's
/// line saying where it came from.
fn fresh_config(args: &Args, info: &DeviceInfo) -> Result<(TrainingConfig, String), Error> {
    let (preset, why) = choose_preset(args, info);
    let mut line = format!("{}, because {why}", preset.name());
    let mut config = preset.config();
    if let Some(file) = &args.config {
        config = TrainingConfig::read_over(file, &config)?;
        line += &format!("; settings from {}", file.display());
    }
    Ok((apply_flags(config, args), line))
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

/// The second half of the start block: what the run will do, once data and model are ready.
fn print_plan(plan: &TrainPlan, config: &TrainingConfig) {
    let enc = &config.model.encoder;
    let moe = enc.moe();
    let experts = if moe.num_experts == 1 {
        "dense: 1 expert".to_string()
    } else {
        format!(
            "{} sparse × {} experts, top-{}",
            plan.sparse_layers.len(),
            moe.num_experts,
            moe.top_k
        )
    };
    println!(
        "  model      {} parameters: d_model {}, d_ff {}, {} layers ({experts}), {} heads, \
         vocab {}",
        thousands(plan.num_params),
        moe.d_model,
        moe.d_ff,
        enc.n_layers,
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
        println!("  note       {}", super::in_flags(notice));
    }
}

/// Whether a calibration can say something useful: the device is a CPU (ndarray itself, a
/// software GPU driver, LibTorch on the CPU) and ndarray, the CPU backend every default build
/// has, is compiled in beside another backend.
fn worth_calibrating(info: &DeviceInfo) -> bool {
    cfg!(feature = "ndarray") && crate::backend::NAME != "ndarray" && info.kind == DeviceKind::Cpu
}

/// Times a few steps of the run's model on ndarray and on the training backend and prints both
/// estimates, with the command to switch when ndarray is faster. On wgpu the training backend's
/// first step compiles its kernels, which the run then reuses.
fn calibrate<B: AutodiffBackend>(
    config: &TrainingConfig,
    plan: &TrainPlan,
    info: &DeviceInfo,
    device: &B::Device,
) {
    const STEPS: usize = 2;
    let backend = crate::backend::NAME;
    let steps = plan.steps();
    #[cfg(feature = "ndarray")]
    let cpu = {
        let timing = time_steps::<burn_autodiff::Autodiff<burn::backend::NdArray>>(
            config,
            plan.vocab_size,
            &Default::default(),
            STEPS,
        );
        println!(
            "  speed      ndarray (compiled in): {:.2} s/step measured, the run ≈ {}",
            timing.per_step.as_secs_f64(),
            duration(timing.estimate(steps).as_secs_f64())
        );
        timing
    };
    if backend == "wgpu" {
        println!(
            "             {backend} on {}: timing its first steps now; the first compiles every \
             kernel of the model with LLVM on the CPU (several minutes: about 7 for the cpu preset \
             on 2 cores), and the run reuses them",
            info.name
        );
    }
    let mine = time_steps::<B>(config, plan.vocab_size, device, STEPS);
    println!(
        "             {backend}: {:.2} s/step measured (first step {}), the run ≈ {}",
        mine.per_step.as_secs_f64(),
        duration(mine.first.as_secs_f64()),
        duration(mine.estimate(steps).as_secs_f64())
    );
    #[cfg(feature = "ndarray")]
    {
        let ratio = mine.per_step.as_secs_f64() / cpu.per_step.as_secs_f64().max(1e-9);
        if ratio >= 1.5 {
            println!(
                "  advice     ndarray is {ratio:.1}× faster on this machine: stop (Ctrl-C) and run \
                 `cargo run --release --example train` with the same flags"
            );
        }
    }
    if cfg!(debug_assertions) {
        // Both timings above ran this crate's code unoptimised: they say nothing of a release
        // build, where ndarray takes 1–2 s per cpu-preset step on 2 cores.
        println!(
            "  advice     this is a debug build (no --release), whose own code runs unoptimised: \
             both timings are slow for that reason; `cargo run --release --example train` \
             (ndarray) is the fast way on a CPU"
        );
    }
}

fn run<B: AutodiffBackend>(
    args: Args,
    devices: Vec<B::Device>,
    info: &DeviceInfo,
    autotune: Option<String>,
) -> Result<(), Error> {
    let device = devices[0].clone();
    let artifact_dir = args.artifact_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("artifacts").join(secs.to_string())
    });
    // Nothing to resume (no run was ever started there, or it was killed before it wrote its
    // config.json): a fresh run starts, which the start block says.
    let resume = args.resume && artifact_dir.join("config.json").exists();
    let fresh_note = (args.resume && !resume).then(|| {
        format!(
            "--resume: there is no run in {} (no config.json): starting a fresh run there",
            artifact_dir.display()
        )
    });
    let (config, config_line) = if resume {
        let mut saved = TrainingConfig::read(&artifact_dir.join("config.json"))?;
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
        fresh_config(&args, info)?
    };
    config.validate()?;
    if args.print_config {
        println!("{config}");
        return Ok(());
    }

    // The start block: what runs where, then (once the data and model are ready) the plan.
    println!("switch-moe train");
    let mut backend_line = crate::backend::NAME.to_string();
    if let Some(level) = autotune {
        backend_line += &format!(" (cubecl autotune level {level}");
        if let Some(dir) = crate::backend::autotune_cache_dir() {
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
    println!("  preset     {config_line}");
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
    let start = Instant::now();
    let shown = config.clone();
    let calibration = !args.no_calibrate && worth_calibrating(info);
    let first_step_note = !calibration && crate::backend::NAME == "wgpu" && !info.kind.is_gpu();
    let summary = train_data_parallel::<B>(config, &options, devices, |plan| {
        print_plan(plan, &shown);
        if calibration {
            calibrate::<B>(&shown, plan, info, &device);
        } else if first_step_note {
            println!(
                "  note       the first step compiles every kernel of the model with LLVM on the \
                 CPU ({}): several minutes (about 7 for the cpu preset on 2 cores) before the \
                 first progress line",
                info.name
            );
        }
        println!();
    })?;

    println!(
        "\ntrained in {} ({} parameters, vocab {})",
        duration(start.elapsed().as_secs_f64()),
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
    if !args.no_report {
        println!();
        super::report::draw_and_tell(&artifact_dir);
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
        "valid_fraction" => "--valid-fraction",
        "num_epochs" => "--epochs",
        "max_steps" => "--max-steps",
        "patience" => "--patience",
        "lr" => "--lr",
        "min_lr_ratio" => "--min-lr-ratio",
        "warmup_steps" => "--warmup-steps",
        "weight_decay" => "--weight-decay",
        "grad_clip" => "--grad-clip",
        "seed" => "--seed",
        "checkpoint_every" => "--checkpoint-every",
        "dropout" => "--dropout",
        "expert_dropout" => "--expert-dropout",
        "activation" => "--activation",
        "expert_bias_rate" => "--expert-bias-rate",
        "shared_gate" => "--shared-gate",
        "num_shared_experts" => "--shared-experts",
        "routing" | "encoder.layer.moe.routing" => "--routing",
        "dead_expert_steps" => "--dead-expert-steps",
        "balance_scope" => "--balance-scope",
        "n_group" => "--n-group",
        "topk_group" => "--topk-group",
        "routed_scaling_factor" => "--routed-scaling-factor",
        "forced_routing" => "--forced-routing",
        "max_load_alarm" => "--max-load-alarm",
        _ => return None,
    })
}

/// One paragraph: config errors are reported by the flag that sets the value.
fn describe(error: &Error) -> String {
    match error {
        Error::Config {
            field,
            value,
            reason,
            ..
        } => match flag_of(field) {
            Some(flag) => format!(
                "invalid value for {flag}: {value} ({}); see --help",
                super::in_flags(reason)
            ),
            None => super::in_flags(&error.to_string()),
        },
        other => super::in_flags(&other.to_string()),
    }
}

/// The arguments, with the presets' table at the end of `--help`.
fn parse_args() -> Args {
    let matches = Args::command().after_help(presets_help()).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The `train` program.
pub fn main() -> ExitCode {
    // CPU training allocates many large buffers per step; keep them in the heap (glibc).
    crate::backend::keep_freed_memory();
    let args = parse_args();
    // SAFETY: no other thread has started yet (clap and mallopt start none).
    let autotune = unsafe { crate::backend::prefer_minimal_autotune() };
    let devices = crate::backend::data_parallel_devices(args.devices as usize);
    // Before the first tensor: with wgpu this is where the adapter is chosen.
    let info = crate::backend::describe_device(&devices[0]);
    match run::<crate::backend::SelectedAutodiff>(args, devices, &info, autotune) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Args {
        let argv = std::iter::once("train").chain(flags.iter().copied());
        Args::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn each_flag_changes_its_setting() {
        let base = || apply_flags(Preset::Cpu.config(), &parse(&[]));
        let changed = |flags: &[&str]| apply_flags(Preset::Cpu.config(), &parse(flags));
        let before = base();
        let c = changed(&[
            "--dropout",
            "0.3",
            "--expert-dropout",
            "0.4",
            "--weight-decay",
            "0.05",
            "--warmup-steps",
            "7",
            "--min-lr-ratio",
            "0.2",
            "--grad-clip",
            "0.5",
            "--activation",
            "gelu",
            "--norm",
            "post",
            "--tie-embeddings",
            "--moe-every",
            "1",
            "--valid-fraction",
            "0.2",
        ]);
        assert_eq!(c.model.encoder.layer.dropout, 0.3);
        assert_eq!(c.model.encoder.moe().expert_dropout, 0.4);
        assert_eq!((c.weight_decay, c.warmup_steps), (0.05, 7));
        assert_eq!((c.min_lr_ratio, c.grad_clip), (0.2, 0.5));
        assert!(matches!(
            c.model.encoder.moe().activation,
            burn::nn::activation::ActivationConfig::Gelu
        ));
        assert!(before.model.encoder.layer.norm_first && !c.model.encoder.layer.norm_first);
        assert!(!before.model.tie_embeddings && c.model.tie_embeddings);
        assert_eq!((c.model.encoder.moe_every, c.valid_fraction), (1, 0.2));

        // SwiGLU takes the widths given beside it.
        let g = changed(&["--activation", "swiglu", "--d-model", "32", "--d-ff", "64"]);
        match &g.model.encoder.moe().activation {
            burn::nn::activation::ActivationConfig::SwiGlu(glu) => {
                assert_eq!((glu.d_input, glu.d_output), (32, 64))
            }
            other => panic!("{other:?}"),
        }
    }
}
