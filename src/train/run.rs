//! A whole training run, top to bottom: check the directory → data and tokenizer → loaders →
//! model, optimiser and schedule → the plan (reported to the caller) → Learner → fit → save.
//! The `train` program is a command-line front end to [`train_data_parallel`]; each step's
//! concept lives in its own file (the plan, preflight checks, the Learner's assembly, the watch,
//! the artifact directory), this one only calls them in order.

use std::path::PathBuf;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim};

use super::artifacts::{ArtifactDir, Start, check_start, save_final_model, write_run_files};
use super::config::{TokenizerKind, TrainingConfig};
use super::learner::{LearnerSetup, supervised_training, train_loader};
use super::plan::{TrainOptions, TrainPlan, TrainSummary};
use super::preflight::{check_memory, check_unfinished};
use super::schedule::WarmupCosineLr;
use super::watch::Watch;
use crate::Result as MoeResult;
use crate::data::{
    LmBatcher, TextTokenizer, TokenWindows, TokenizerSource, encode_splits, load_corpus, split_text,
};
use crate::error::Error;
use crate::lm::SwitchLm;

/// Trains a Switch language model with burn-train's Learner; see [`train_with_plan`].
pub fn train<B: AutodiffBackend>(
    config: TrainingConfig,
    options: &TrainOptions,
    device: B::Device,
) -> MoeResult<TrainSummary> {
    train_with_plan::<B>(config, options, device, |_| ())
}

/// Trains a Switch language model with burn-train's Learner, calling `on_plan` once the data,
/// tokenizer and model are ready and before the first step.
///
/// A fresh run refuses an artifact directory that already holds a run; a resumed one needs a
/// checkpoint and the same model config. Nothing in the directory is written before the inputs
/// have been checked.
pub fn train_with_plan<B: AutodiffBackend>(
    config: TrainingConfig,
    options: &TrainOptions,
    device: B::Device,
    on_plan: impl FnOnce(&TrainPlan),
) -> MoeResult<TrainSummary> {
    train_data_parallel::<B>(config, options, vec![device], on_plan)
}

/// [`train_with_plan`] on several devices: burn-train's `ExecutionStrategy::MultiDevice` (data
/// parallel, gradients gathered on `devices[0]`, which also validates and checkpoints). One
/// device trains as [`train_with_plan`] does.
///
/// `config.batch_size` stays the **global** batch: each device takes `batch_size / n` windows
/// of every step (it must divide), so the epoch plan, the schedule and the tokens per optimiser
/// step are those of a one-device run. Each device's shard computes its own cross-entropy,
/// load-balancing and z-losses (means over its tokens); burn-train **sums** the n shards'
/// gradients, which AdamW's update does not see (it is invariant to the gradient's scale up to
/// ε) once the per-tensor clipping threshold is scaled by n as well, which this function does.
/// The metrics receive each shard's step output and weight them by tokens, so the epoch values
/// (and the expert fractions, summing to 1) cover every device's tokens. The aux-loss-free
/// expert bias is one [`RunningState`](burn::module::RunningState) shared by the replicas: each
/// shard computes its update from its own counts, and Burn folds the n pending values into
/// their mean before the next read, so every device selects with the same bias, which moves
/// once per optimiser step by the mean of the shards' updates; it is saved once, with the model.
///
/// # Errors
/// As [`train_with_plan`], and a config error when `batch_size` is not a multiple of the
/// number of devices.
pub fn train_data_parallel<B: AutodiffBackend>(
    mut config: TrainingConfig,
    options: &TrainOptions,
    devices: Vec<B::Device>,
    on_plan: impl FnOnce(&TrainPlan),
) -> MoeResult<TrainSummary> {
    config.validate()?;
    let n_devices = devices.len().max(1);
    if !config.batch_size.is_multiple_of(n_devices) {
        return Err(Error::config(
            "TrainingConfig",
            "batch_size",
            config.batch_size,
            format!(
                "the global batch must split evenly over {n_devices} devices (a multiple of \
                 {n_devices})"
            ),
        ));
    }
    let device = devices.first().cloned().unwrap_or_default();
    let dir = ArtifactDir(options.artifact_dir.clone());
    let Start {
        resume_from,
        notices,
    } = check_start::<B::InnerBackend>(&dir, &config, options.resume, &device)?;
    // A run started over (resumed without any checkpoint) is a fresh run in its own directory.
    let resuming = resume_from.is_some();
    let first_epoch = resume_from.map_or(1, |e| e + 1);
    let (corpus, tokenizer, train_tokens, valid_tokens) =
        tokenize(&mut config, options, &dir, resuming)?;
    let split_tokens = (train_tokens.len(), valid_tokens.len());

    // Loaders: windows of `seq_len` tokens; each epoch (checkpoint interval) a function of
    // (seed, epoch), so that a resumed run sees the batches an uninterrupted one would.
    let train_windows = TokenWindows::new(train_tokens, config.seq_len());
    let epochs = config.epoch_plan(train_windows.len());
    check_unfinished(&dir, &epochs, resume_from)?;
    check_memory(&config)?;
    let train_loader = train_loader::<B>(
        &config,
        &epochs,
        train_windows,
        first_epoch,
        config.batch_size / n_devices,
        &device,
    );
    let valid_loader = DataLoaderBuilder::<B::InnerBackend, _, _>::new(LmBatcher)
        .batch_size(config.batch_size)
        .build(TokenWindows::new(valid_tokens, config.seq_len()));

    // Model, optimiser (burn-train sums the devices' gradients: clip at n × the threshold),
    // schedule.
    B::seed(&device, config.seed);
    let model: SwitchLm<B> = config.model.init(&device);
    // A `Global` balance scope meets the other devices' counts at every training forward.
    for balance in model.encoder.global_balances() {
        balance.set_parties(n_devices);
    }
    let clip = GradientClippingConfig::Norm((config.grad_clip * n_devices as f64) as f32);
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(clip))
        .init();
    let total_steps = epochs.total_steps;
    let warmup = config.warmup_steps.min(total_steps / 2);
    let min_lr = config.lr * config.min_lr_ratio;
    let schedule = WarmupCosineLr::new(config.lr, min_lr, warmup, total_steps);

    // The plan, told to the caller before the first step; a fresh run's files.
    let plan = TrainPlan {
        artifact_dir: dir.0.clone(),
        corpus,
        num_params: model.num_params(),
        vocab_size: config.model.vocab_size,
        split_tokens,
        batch_size: config.batch_size,
        seq_len: config.seq_len(),
        epochs: first_epoch..=epochs.epochs,
        steps_per_epoch: epochs.steps_per_epoch,
        steps_per_pass: epochs.steps_per_pass,
        sparse_layers: model.encoder.sparse_layers(),
        devices: n_devices,
        notices,
        epoch_limit: options.epoch_limit,
    };
    if !resuming {
        write_run_files(&dir, &config, &tokenizer, &model)?;
    }
    on_plan(&plan);

    // burn-train's Learner: metrics, checkpoints, early stopping, progress; then fit and save.
    let watch = Watch::default();
    let mut training = supervised_training::<B, _>(LearnerSetup {
        dir: &dir,
        config: &config,
        plan: &plan,
        resume_from,
        plain: options
            .plain_progress
            .unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stdout())),
        train_loader,
        valid_loader,
        watch: &watch,
    });
    if n_devices > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::<B>::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
    }
    let result = training.launch(Learner::new(model, optimizer, schedule));
    watch.check(&dir)?;
    save_final_model::<B::InnerBackend>(&dir, &config, &plan, result.model, &device)
}

/// The corpus (and where it was read), the run's tokenizer and both splits' token ids: the text
/// split contiguously, the tokenizer the run saved (a resume, or a run started over), a given
/// file, or one made from the training split; sets the model's vocabulary size on a fresh run.
fn tokenize(
    config: &mut TrainingConfig,
    options: &TrainOptions,
    dir: &ArtifactDir,
    resuming: bool,
) -> MoeResult<(PathBuf, TextTokenizer, Vec<u32>, Vec<u32>)> {
    let (text, corpus) = load_corpus(options.data.as_deref())?;
    let splits = split_text(&text, config.valid_fraction);
    let saved = dir.tokenizer();
    let source = if resuming || saved.exists() {
        TokenizerSource::File(&saved)
    } else if let Some(file) = &options.tokenizer_file {
        config.tokenizer = TokenizerKind::File;
        TokenizerSource::File(file)
    } else {
        TokenizerSource::Make(&config.tokenizer)
    };
    let tokenizer = source.tokenizer(splits.0, &text)?;
    // Set from the tokenizer on a fresh run, and on a resume whose config left it open (0).
    if !resuming || config.model.vocab_size == 0 {
        config.model.vocab_size = tokenizer.vocab_size();
    }
    config.model.validate()?;
    let (train, valid) = encode_splits(
        &tokenizer,
        splits,
        config.seq_len(),
        config.model.vocab_size,
    )?;
    Ok((corpus, tokenizer, train, valid))
}
