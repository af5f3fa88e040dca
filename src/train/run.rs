//! A whole training run, top to bottom: check the directory → data and tokenizer → loaders →
//! model, optimiser and schedule → the plan (reported to the caller) → Learner → fit → save.
//! The `train` example is a command-line front end to [`train_with_plan`].

use std::ops::RangeInclusive;
use std::path::PathBuf;

use burn::config::Config;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SamplerDataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, Optimizer};
use burn::record::DefaultRecorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::metric::LearningRateMetric;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::{
    Learner, LearningComponentsMarker, MetricEarlyStoppingStrategy, StoppingCondition,
    SupervisedTraining,
};

use super::artifacts::{ArtifactDir, check_start, epoch_metric, load_checked};
use super::config::{TokenizerKind, TrainingConfig};
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
    mut config: TrainingConfig,
    options: &TrainOptions,
    device: B::Device,
    on_plan: impl FnOnce(&TrainPlan),
) -> MoeResult<TrainSummary> {
    config.validate()?;
    let dir = ArtifactDir(options.artifact_dir.clone());
    let resume_from = check_start::<B::InnerBackend>(&dir, &config, options.resume, &device)?;
    let first_epoch = resume_from.map_or(1, |e| e + 1);

    // Data: corpus → contiguous split → tokenizer → token ids.
    let (corpus, tokenizer, train_tokens, valid_tokens) = tokenize(&mut config, options, &dir)?;
    let split_tokens = (train_tokens.len(), valid_tokens.len());

    // Loaders: windows of `seq_len` tokens; with a step budget each epoch draws its share.
    let train_windows = TokenWindows::new(train_tokens, config.seq_len());
    let steps_per_pass = train_windows.len().div_ceil(config.batch_size);
    let steps_per_epoch = config.steps_per_epoch(train_windows.len());
    let train_loader = train_loader::<B>(&config, train_windows, steps_per_epoch);
    let valid_loader = DataLoaderBuilder::<B::InnerBackend, _, _>::new(LmBatcher)
        .batch_size(config.batch_size)
        .build(TokenWindows::new(valid_tokens, config.seq_len()));

    // Model, optimiser, schedule.
    B::seed(&device, config.seed);
    let model: SwitchLm<B> = config.model.init(&device);
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip as f32)))
        .init();
    let total_steps = steps_per_epoch * config.num_epochs;
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
        epochs: first_epoch..=config.num_epochs,
        steps_per_epoch,
        steps_per_pass,
        sparse_layers: model.encoder.sparse_layers(),
    };
    if !options.resume {
        write_run_files(&dir, &config, &tokenizer, &model)?;
    }
    on_plan(&plan);

    // burn-train's Learner: metrics, checkpoints, early stopping, progress; then fit and save.
    let plain = options
        .plain_progress
        .unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let training = supervised_training::<B, _>(
        &dir,
        &config,
        &plan,
        resume_from,
        plain,
        train_loader,
        valid_loader,
    );
    let result = training.launch(Learner::new(model, optimizer, schedule));

    save_final_model::<B::InnerBackend>(&dir, &config, &plan, result.model, &device)
}

/// Loads the corpus (returning where it was read), splits it contiguously so that the validation
/// text is unseen, gets the tokenizer (the run's on a resume, a given file, or one trained on the
/// training split) and encodes both splits, checking that each holds a window and that every id
/// fits the model. Sets the model's vocabulary size on a fresh run.
fn tokenize(
    config: &mut TrainingConfig,
    options: &TrainOptions,
    dir: &ArtifactDir,
) -> MoeResult<(PathBuf, TextTokenizer, Vec<u32>, Vec<u32>)> {
    let (text, corpus) = load_corpus(options.data.as_deref())?;
    let (train_text, valid_text) = split_text(&text, config.valid_fraction);
    let tokenizer = if options.resume {
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
    if !options.resume {
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

/// The training loader: shuffled windows, or with a step budget `steps_per_epoch` batches of
/// windows drawn at random (with replacement) per epoch.
fn train_loader<B: AutodiffBackend>(
    config: &TrainingConfig,
    windows: TokenWindows,
    steps_per_epoch: usize,
) -> std::sync::Arc<dyn DataLoader<B, LmBatch<B>>> {
    let builder = DataLoaderBuilder::new(LmBatcher)
        .batch_size(config.batch_size)
        .shuffle(config.seed);
    match config.max_steps {
        Some(_) => builder.build(SamplerDataset::with_replacement(
            windows,
            steps_per_epoch * config.batch_size,
        )),
        None => builder.build(windows),
    }
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
    config
        .save(dir.config())
        .map_err(|e| Error::io("cannot write", dir.config(), e))?;
    tokenizer.save(&dir.tokenizer())?;
    std::fs::write(dir.model_summary(), format!("{model}\n"))
        .map_err(|e| Error::io("cannot write", dir.model_summary(), e))
}

/// burn-train's supervised training with the run's metrics, checkpoints, early stopping, logger
/// and progress output.
fn supervised_training<B: AutodiffBackend, O>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    plan: &TrainPlan,
    resume_from: Option<usize>,
    plain: bool,
    train_loader: std::sync::Arc<dyn DataLoader<B, LmBatch<B>>>,
    valid_loader: std::sync::Arc<dyn DataLoader<B::InnerBackend, LmBatch<B::InnerBackend>>>,
) -> SupervisedTraining<Components<B, O>>
where
    O: Optimizer<SwitchLm<B>, B> + 'static,
{
    let mut training = SupervisedTraining::new(&dir.0, train_loader, valid_loader);
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
        .with_file_checkpointer(DefaultRecorder::new())
        .num_epochs(config.num_epochs)
        .with_metric_logger(ResumeAwareLogger::new(&dir.0, *plan.epochs.start()));
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
        training = training.renderer(
            PlainRenderer::new(10).with_run(plan.steps_per_epoch, plan.tokens_per_step()),
        );
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
                .save_file(dir.model(), &DefaultRecorder::new())
                .map_err(save_err)?;
            best
        }
        _ => {
            last_model
                .save_file(dir.model(), &DefaultRecorder::new())
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
