//! A whole training run, top to bottom: check the directory → data and tokenizer → loaders →
//! model, optimiser and schedule → the plan (reported to the caller) → Learner → fit → save.
//! The `train` example is a command-line front end to [`train_with_plan`].

use std::ops::RangeInclusive;
use std::path::PathBuf;

use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::metric::LearningRateMetric;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::{
    ExecutionStrategy, Learner, LearningComponentsMarker, MetricEarlyStoppingStrategy,
    MultiDeviceOptim, StoppingCondition, SupervisedTraining,
};

use super::app_log::RunLogInstaller;
use super::artifacts::{ArtifactDir, Start, check_start, epoch_metric, load_checked};
use super::atomic::{CrashSafeRecorder, write_atomic};
use super::config::{EpochPlan, TokenizerKind, TrainingConfig};
use super::guard::{Alarms, RunGuard};
use super::loader::EpochLoader;
use super::logger::ResumeAwareLogger;
use super::metrics::{LmMetric, LmMetricKind};
use super::renderer::PlainRenderer;
use super::schedule::WarmupCosineLr;
use crate::Result as MoeResult;
use crate::data::{LmBatcher, TextTokenizer, TokenWindows, load_corpus};
use crate::error::Error;
use crate::lm::{LmBatch, SwitchLm};
use crate::metrics::{RoutingCsvMetric, routing_metrics};

/// burn-train's components of a run: the backend, our schedule and model, optimiser `O`.
type Components<B, O> = LearningComponentsMarker<B, WarmupCosineLr, SwitchLm<B>, O>;

/// Where things go, besides the training config.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run's artifact directory.
    pub artifact_dir: PathBuf,
    /// Corpus file or directory; `None`: `$SWITCH_MOE_DATA` or tiny-shakespeare.
    pub data: Option<PathBuf>,
    /// A `tokenizer.json` to use instead of training one.
    pub tokenizer_file: Option<PathBuf>,
    /// Continue from the last checkpoint in `artifact_dir`.
    pub resume: bool,
    /// Plain progress lines (`Some(true)`), the dashboard (`Some(false)`), or the dashboard only
    /// when stdout is a terminal (`None`).
    pub plain_progress: Option<bool>,
    /// Stop after this epoch of the plan (the schedule still spans the whole plan), as an
    /// interruption would; `--resume` continues from there. None: train every epoch.
    pub epoch_limit: Option<usize>,
}

/// What a run is about to do, known once the data is tokenized and the model built: handed to
/// the caller of [`train_with_plan`] before the first step, so that a program can say it.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// The artifact directory.
    pub artifact_dir: PathBuf,
    /// The corpus file or directory read (after a download: the cached file).
    pub corpus: PathBuf,
    /// Model parameters.
    pub num_params: usize,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Tokens in the training and validation splits.
    pub split_tokens: (usize, usize),
    /// Windows per batch.
    pub batch_size: usize,
    /// Tokens per window.
    pub seq_len: usize,
    /// The epochs this call trains (after a resume: those after the checkpoint).
    pub epochs: RangeInclusive<usize>,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Steps of one pass over the training windows; differs from `steps_per_epoch` when a step
    /// budget (`max_steps`) sets the epoch length.
    pub steps_per_pass: usize,
    /// The sparse (MoE) layers, 0-based.
    pub sparse_layers: Vec<usize>,
    /// Devices training in data parallel (each takes `batch_size / devices` windows per step).
    pub devices: usize,
    /// One-line notes for the user about how the run starts (a damaged checkpoint skipped, a
    /// run started over, …).
    pub notices: Vec<String>,
    /// The last epoch this call trains, when it stops early ([`TrainOptions::epoch_limit`]).
    pub epoch_limit: Option<usize>,
}

impl TrainPlan {
    /// Tokens per optimiser step (batch × window).
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len
    }

    /// Optimiser steps this call runs.
    pub fn steps(&self) -> usize {
        self.steps_per_epoch * self.epochs.clone().count()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The artifact directory.
    pub artifact_dir: PathBuf,
    /// Epochs trained in this call (after a resume: the epochs after the checkpoint).
    pub epochs: RangeInclusive<usize>,
    /// Validation loss (cross-entropy) of each epoch trained in this call.
    pub valid_loss: Vec<f64>,
    /// The epoch whose weights `model.mpk` holds: the last one, or with `patience` the best.
    pub saved_epoch: usize,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Model parameters.
    pub num_params: usize,
    /// Tokens in the training and validation splits.
    pub split_tokens: (usize, usize),
}

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
        return Err(Error::Config {
            config: "TrainingConfig",
            field: "batch_size",
            value: config.batch_size.to_string(),
            reason: format!(
                "the global batch must split evenly over {n_devices} devices (a multiple of \
                 {n_devices})"
            ),
        });
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

    // Data: corpus → contiguous split → tokenizer → token ids.
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

    // Model, optimiser, schedule.
    B::seed(&device, config.seed);
    let model: SwitchLm<B> = config.model.init(&device);
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        // burn-train sums the devices' gradients: clip the sum at n × the threshold.
        .with_grad_clipping(Some(GradientClippingConfig::Norm(
            (config.grad_clip * n_devices as f64) as f32,
        )))
        .init();
    let total_steps = epochs.total_steps;
    let schedule = WarmupCosineLr::new(
        config.lr,
        config.lr * config.min_lr_ratio,
        config.warmup_steps.min(total_steps / 2),
        total_steps,
    );

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
    let plain = options
        .plain_progress
        .unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let watch = Watch::default();
    let mut training = supervised_training::<B, _>(
        &dir,
        &config,
        &plan,
        resume_from,
        plain,
        train_loader,
        valid_loader,
        &watch,
    );
    if n_devices > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::<B>::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
    }
    let result = training.launch(Learner::new(model, optimizer, schedule));
    watch.check(&dir)?;

    save_final_model::<B::InnerBackend>(&dir, &config, &plan, result.model, &device)
}

/// What the run's guard and checkpointer report back: alarms and a failed checkpoint write.
#[derive(Clone, Default)]
struct Watch {
    alarms: Alarms,
    write_failure: Arc<Mutex<Option<String>>>,
}

impl Watch {
    /// An error when the run was stopped: by a non-finite loss, a collapse alarm with
    /// `on_collapse = Stop`, or a checkpoint that could not be written. It names the last good
    /// checkpoint, which the stop left intact.
    fn check(&self, dir: &ArtifactDir) -> MoeResult<()> {
        // A non-finite loss reaches the guard through burn-train's metric thread, which can lag
        // the training loop: the Learner may already have checkpointed the epoch of the bad
        // step (or a later one) with poisoned weights. Those are set aside, so that the message
        // and `--resume` name the last checkpoint written before the non-finite step.
        let mut set_aside = String::new();
        if let Some(alarm) = self.alarms.stop()
            && matches!(alarm.kind, super::guard::AlarmKind::NonFinite { .. })
        {
            let moved = dir.set_aside_from(alarm.epoch, "nonfinite");
            if !moved.is_empty() {
                set_aside = format!(
                    " ({} checkpoint file(s) written at or after the non-finite step renamed to \
                     *.nonfinite)",
                    moved.len()
                );
            }
        }
        let last_good = match dir.last_checkpoint() {
            Some(epoch) => format!(
                "the last good checkpoint is {} (epoch {epoch}): continue with --resume",
                dir.checkpoint_model(epoch).with_extension("mpk").display()
            ),
            None => "no checkpoint was saved yet: --resume starts the run over".to_string(),
        };
        if let Some(message) = self.write_failure.lock().ok().and_then(|m| m.clone()) {
            return Err(Error::Checkpoint(format!(
                "training stopped: {message}; {last_good}"
            )));
        }
        if let Some(alarm) = self.alarms.stop() {
            let hint = match alarm.kind {
                super::guard::AlarmKind::NonFinite { .. } => " (e.g. with a lower --lr)",
                _ => "",
            };
            return Err(Error::Checkpoint(format!(
                "training stopped: {alarm}; {last_good}{hint}{set_aside}"
            )));
        }
        Ok(())
    }
}

/// Refuses to resume a run that has already trained all its epochs.
fn check_unfinished(
    dir: &ArtifactDir,
    epochs: &EpochPlan,
    resume_from: Option<usize>,
) -> MoeResult<()> {
    match resume_from {
        Some(done) if done >= epochs.epochs => Err(Error::config(
            "TrainingConfig",
            "num_epochs",
            epochs.epochs,
            format!(
                "the run in {} already finished its {} epochs: raise the step budget or the \
                 epochs to continue it",
                dir.0.display(),
                epochs.epochs
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a model whose training state cannot fit in memory, before allocating it: weights,
/// gradients and AdamW's two moments (4 × 4 bytes per parameter), plus the activations of one
/// step (a rough 16 floats per token and layer, and 3 copies of the logits).
fn check_memory(config: &TrainingConfig) -> MoeResult<()> {
    let params = config.model.num_params() as f64;
    let tokens = (config.batch_size * config.seq_len()) as f64;
    let d = config.model.encoder.moe().d_model as f64;
    let layers = config.model.encoder.n_layers as f64;
    let activations = tokens * (16.0 * d * layers + 3.0 * config.model.vocab_size as f64);
    let needed = 4.0 * (4.0 * params + activations);
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if needed > available as f64 {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(Error::Config {
            config: "SwitchLmConfig",
            field: "encoder",
            value: format!("{:.3e} parameters", params),
            reason: format!(
                "training it needs about {:.1} GiB (weights, gradients and AdamW state: 16 bytes \
                 per parameter, plus activations) but this machine has {:.1} GiB available: use \
                 a smaller d_model, d_ff, number of layers or experts, or a smaller batch",
                gib(needed),
                gib(available as f64)
            ),
        });
    }
    Ok(())
}

/// Memory the system can give this process, in bytes (Linux: `MemAvailable`).
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Loads the corpus (returning where it was read), splits it contiguously so that the validation
/// text is unseen, gets the tokenizer (the run's on a resume, a given file, or one trained on the
/// training split) and encodes both splits, checking that each holds a window and that every id
/// fits the model. Sets the model's vocabulary size on a fresh run.
fn tokenize(
    config: &mut TrainingConfig,
    options: &TrainOptions,
    dir: &ArtifactDir,
    resuming: bool,
) -> MoeResult<(PathBuf, TextTokenizer, Vec<u32>, Vec<u32>)> {
    let (text, corpus) = load_corpus(options.data.as_deref())?;
    let (train_text, valid_text) = split_text(&text, config.valid_fraction);
    // A resumed run, or one started over in its own directory (check_start allowed only those),
    // keeps the tokenizer it saved.
    let tokenizer = if resuming || dir.tokenizer().exists() {
        TextTokenizer::load(&dir.tokenizer())?
    } else if let Some(file) = &options.tokenizer_file {
        config.tokenizer = TokenizerKind::File;
        TextTokenizer::load(file)?
    } else {
        match config.tokenizer {
            TokenizerKind::Bpe { vocab_size } => TextTokenizer::train_bpe(train_text, vocab_size)?,
            TokenizerKind::Char | TokenizerKind::File => TextTokenizer::char_level(&text),
        }
    };
    // Set from the tokenizer on a fresh run, and on a resume whose config left it open (0).
    if !resuming || config.model.vocab_size == 0 {
        config.model.vocab_size = tokenizer.vocab_size();
    }
    config.model.validate()?;
    let train_tokens = tokenizer.encode(train_text)?;
    let valid_tokens = tokenizer.encode(valid_text)?;
    let seq_len = config.seq_len();
    for (split, n) in [
        ("training", train_tokens.len()),
        ("validation", valid_tokens.len()),
    ] {
        if n < seq_len + 1 {
            return Err(Error::Data(format!(
                "the corpus is too short: its {split} split has {n} tokens, one window needs \
                 {} (--seq-len {seq_len} + 1); use a longer corpus (--data) or a smaller --seq-len",
                seq_len + 1
            )));
        }
    }
    if let Some(id) = train_tokens
        .iter()
        .chain(&valid_tokens)
        .find(|t| **t as usize >= config.model.vocab_size)
    {
        return Err(Error::Tokenizer(format!(
            "token id {id} is outside the model's vocabulary of {}: the tokenizer does not belong \
             to this model",
            config.model.vocab_size
        )));
    }
    Ok((corpus, tokenizer, train_tokens, valid_tokens))
}

/// Splits text at a character boundary: the head for training, the last `valid_fraction` for
/// validation.
fn split_text(text: &str, valid_fraction: f64) -> (&str, &str) {
    let target = ((text.len() as f64) * (1.0 - valid_fraction)) as usize;
    let cut = (target..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text.split_at(cut)
}

/// The training loader (batches of `batch_size`: the global batch over the devices): each epoch's windows (a budget's random draw, or a slice of the stream
/// of shuffled passes) from (seed, epoch), starting at `first_epoch`; each epoch reseeds the
/// backend's generator (dropout, jitter) likewise.
fn train_loader<B: AutodiffBackend>(
    config: &TrainingConfig,
    epochs: &EpochPlan,
    windows: TokenWindows,
    first_epoch: usize,
    batch_size: usize,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
    let windows: Arc<dyn Dataset<Vec<u32>>> = Arc::new(windows);
    Arc::new(
        EpochLoader::new(windows, Arc::new(LmBatcher), batch_size, device.clone())
            .with_order(epochs.order)
            .with_seed(config.seed)
            .with_first_epoch(first_epoch)
            .with_backend_reseed(true),
    )
}

/// `config.json`, `tokenizer.json` and `model.txt` (the model's modules, as burn prints them) of
/// a fresh run.
fn write_run_files<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    tokenizer: &TextTokenizer,
    model: &SwitchLm<B>,
) -> MoeResult<()> {
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io("cannot create", &dir.0, e))?;
    // Each written atomically: a kill leaves the old file or the new one, never half of one.
    write_atomic(&dir.config(), config.to_string().as_bytes())
        .map_err(|e| Error::io("cannot write", dir.config(), e))?;
    tokenizer.save(&dir.tokenizer())?;
    write_atomic(&dir.model_summary(), format!("{model}\n").as_bytes())
        .map_err(|e| Error::io("cannot write", dir.model_summary(), e))
}

/// burn-train's supervised training with the run's metrics, guard, crash-safe checkpoints, early
/// stopping, logger and progress output.
#[allow(clippy::too_many_arguments)]
fn supervised_training<B: AutodiffBackend, O>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    plan: &TrainPlan,
    resume_from: Option<usize>,
    plain: bool,
    train_loader: std::sync::Arc<dyn DataLoader<B, LmBatch<B>>>,
    valid_loader: std::sync::Arc<dyn DataLoader<B::InnerBackend, LmBatch<B::InnerBackend>>>,
    watch: &Watch,
) -> SupervisedTraining<Components<B, O>>
where
    O: Optimizer<SwitchLm<B>, B> + 'static,
{
    let mut training = SupervisedTraining::new(&dir.0, train_loader, valid_loader);
    let interrupter = training.interrupter();
    let guard = RunGuard::new(
        config.health.clone(),
        interrupter.clone(),
        watch.alarms.clone(),
    )
    // The Learner counts one iteration per device's shard.
    .with_steps_per_epoch(plan.steps_per_epoch * plan.devices);
    training = training.metric_train(guard);
    for kind in [LmMetricKind::Loss, LmMetricKind::Perplexity] {
        training = training
            .metric_train_numeric(LmMetric::new(kind))
            .metric_valid_numeric(LmMetric::new(kind));
    }
    for metric in routing_metrics(config.model.encoder.moe().num_experts) {
        training = training
            .metric_train_numeric(metric.clone())
            .metric_valid_numeric(metric);
    }
    let csv = |split| RoutingCsvMetric::new(dir.routing_csv(), split, plan.sparse_layers.clone());
    training = training
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train(csv("train"))
        .metric_valid(csv("valid"))
        .with_file_checkpointer(CrashSafeRecorder::on_failure(
            interrupter,
            watch.write_failure.clone(),
        ))
        .num_epochs(
            plan.epoch_limit
                .unwrap_or(usize::MAX)
                .min(*plan.epochs.end()),
        )
        .with_metric_logger(ResumeAwareLogger::new(&dir.0, *plan.epochs.start()))
        .with_application_logger(Some(Box::new(RunLogInstaller::new(
            dir.0.join("experiment.log"),
        ))));
    if let Some(epoch) = resume_from {
        training = training.checkpoint(epoch);
    }
    if let Some(n_epochs) = config.patience {
        // The Learner's default checkpointing keeps the epoch of lowest validation "Loss" (our
        // cross-entropy metric has that name), so the best weights survive the stop.
        training = training.early_stopping(MetricEarlyStoppingStrategy::new(
            &LmMetric::new(LmMetricKind::Loss),
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
            StoppingCondition::NoImprovementSince { n_epochs },
        ));
    }
    if plain {
        training = training.renderer(PlainRenderer::new(10).with_run(
            plan.steps_per_epoch * plan.devices,
            plan.tokens_per_step() / plan.devices,
        ));
    }
    training
}

/// Finds the epochs actually trained (early stopping may end the run before `num_epochs`) and
/// saves `model.mpk`: the last weights, or with `patience` the best epoch's checkpoint.
fn save_final_model<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    plan: &TrainPlan,
    last_model: SwitchLm<B>,
    device: &B::Device,
) -> MoeResult<TrainSummary> {
    let first_epoch = *plan.epochs.start();
    let last_epoch = plan
        .epochs
        .clone()
        .take_while(|e| epoch_metric(&dir.0, "valid", *e, "Loss").is_some())
        .last()
        .unwrap_or(first_epoch);
    let epochs = first_epoch..=last_epoch;
    let valid_loss: Vec<f64> = epochs
        .clone()
        .filter_map(|e| epoch_metric(&dir.0, "valid", e, "Loss"))
        .collect();
    let best_epoch = epochs
        .clone()
        .zip(&valid_loss)
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(e, _)| e);
    let save_err = |e: burn::record::RecorderError| {
        Error::Checkpoint(format!("cannot save the model to {}: {e}", dir.0.display()))
    };
    let saved_epoch = match best_epoch {
        Some(best) if config.patience.is_some() && best != last_epoch => {
            load_checked::<B>(&config.model, &dir.checkpoint_model(best), device)?
                .save_file(dir.model(), &CrashSafeRecorder::new())
                .map_err(save_err)?;
            best
        }
        _ => {
            last_model
                .save_file(dir.model(), &CrashSafeRecorder::new())
                .map_err(save_err)?;
            last_epoch
        }
    };
    Ok(TrainSummary {
        artifact_dir: dir.0.clone(),
        epochs,
        valid_loss,
        saved_epoch,
        vocab_size: config.model.vocab_size,
        num_params: plan.num_params,
        split_tokens: plan.split_tokens,
    })
}
