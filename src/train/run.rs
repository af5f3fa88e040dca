//! A whole training run, top to bottom: config → data → tokenizer → model → Learner → fit →
//! save. The `train` example is a command-line front end to [`train`].

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SamplerDataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::AdamWConfig;
use burn::record::{DefaultRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn::train::metric::LearningRateMetric;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::{Learner, MetricEarlyStoppingStrategy, StoppingCondition, SupervisedTraining};

use super::logger::ResumeAwareLogger;
use super::metrics::{LmMetric, LmMetricKind};
use super::renderer::PlainRenderer;
use super::schedule::WarmupCosineLr;
use crate::Result as MoeResult;
use crate::data::{LmBatcher, TextTokenizer, TokenWindows, load_corpus};
use crate::error::Error;
use crate::lm::{SwitchLm, SwitchLmConfig};
use crate::metrics::{ROUTING_CSV, RoutingCsvMetric, routing_metrics};

/// How the run gets its tokenizer.
#[derive(Config, Debug, PartialEq)]
pub enum TokenizerKind {
    /// Byte-level BPE trained on the training split.
    Bpe {
        /// Vocabulary size (256 bytes + merges).
        vocab_size: usize,
    },
    /// One token per character of the corpus.
    Char,
    /// Loaded from a `tokenizer.json` given on the command line.
    File,
}

/// Everything that defines a training run; saved as `config.json` in the artifact directory.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The model (its `vocab_size` is set from the tokenizer; `max_seq_len` is the window).
    pub model: SwitchLmConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerKind,
    /// Windows per batch.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Epochs; one epoch is one pass over the training windows (or `max_steps / num_epochs`
    /// random windows when `max_steps` is set).
    #[config(default = 1)]
    pub num_epochs: usize,
    /// A step budget for quick runs: training stops after this many optimiser steps.
    pub max_steps: Option<usize>,
    /// Peak learning rate (AdamW).
    #[config(default = 3e-3)]
    pub lr: f64,
    /// Final learning rate of the cosine, as a fraction of `lr`.
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// AdamW weight decay.
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Gradient clipping by global norm.
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Share of the corpus (its tail) held out for validation.
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Seed of initialisation and shuffling.
    #[config(default = 42)]
    pub seed: u64,
    /// Early stopping: stop once the validation loss has not improved for this many epochs, and
    /// save the best epoch's weights as `model.mpk`. None (default): train every epoch.
    pub patience: Option<usize>,
}

impl TrainingConfig {
    /// The window length S.
    pub fn seq_len(&self) -> usize {
        self.model.max_seq_len
    }

    /// Checks the run settings and the model; errors name the flag to change.
    pub fn validate(&self) -> MoeResult<()> {
        let flag = |flag: &'static str, message: String| Err(Error::Flag { flag, message });
        if self.batch_size == 0 {
            return flag("--batch-size", "must be at least 1".into());
        }
        if self.num_epochs == 0 {
            return flag("--epochs", "must be at least 1".into());
        }
        if self.patience == Some(0) {
            return flag("--patience", "must be at least 1 epoch".into());
        }
        if self.max_steps == Some(0) {
            return flag("--max-steps", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return flag(
                "--lr",
                format!("{} is not a positive learning rate", self.lr),
            );
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return flag(
                "--valid-fraction",
                format!("{} must lie strictly between 0 and 1", self.valid_fraction),
            );
        }
        if self.model.max_seq_len < 2 {
            return flag(
                "--seq-len",
                format!("{} is too short: use at least 2", self.model.max_seq_len),
            );
        }
        if let TokenizerKind::Bpe { vocab_size } = self.tokenizer
            && vocab_size < 257
        {
            return flag(
                "--vocab-size",
                format!(
                    "{vocab_size} is too small for a byte-level BPE: use at least 257, or --char"
                ),
            );
        }
        // vocab_size 0 means "set from the tokenizer" (checked again once it is known).
        let mut model = self.model.clone();
        model.vocab_size = model.vocab_size.max(1);
        model.validate()
    }
}

/// Where things go, besides the training config.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run's artifact directory.
    pub artifact_dir: PathBuf,
    /// Corpus file or directory (`--data`); `None`: `$SWITCH_MOE_DATA` or tiny-shakespeare.
    pub data: Option<PathBuf>,
    /// A `tokenizer.json` to use instead of training one (`--tokenizer`).
    pub tokenizer_file: Option<PathBuf>,
    /// Continue from the last checkpoint in `artifact_dir` (`--resume`).
    pub resume: bool,
    /// Plain progress lines (`Some(true)`), the dashboard (`Some(false)`), or the dashboard only
    /// when stdout is a terminal (`None`).
    pub plain_progress: Option<bool>,
}

/// The files of a run.
#[derive(Debug, Clone)]
pub struct ArtifactDir(pub PathBuf);

impl ArtifactDir {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }
    /// The Learner's checkpoint directory.
    pub fn checkpoints(&self) -> PathBuf {
        self.0.join("checkpoint")
    }
    /// The final model, without extension (the recorder adds `.mpk`).
    pub fn model(&self) -> PathBuf {
        self.0.join("model")
    }
    /// `routing.csv`.
    pub fn routing_csv(&self) -> PathBuf {
        self.0.join(ROUTING_CSV)
    }

    /// The epoch of the newest `checkpoint/model-<epoch>.mpk`.
    pub fn last_checkpoint(&self) -> Option<usize> {
        std::fs::read_dir(self.checkpoints())
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("model-")?
                    .strip_suffix(".mpk")?
                    .parse()
                    .ok()
            })
            .max()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The artifact directory.
    pub artifact_dir: PathBuf,
    /// Epochs trained in this call (after a resume: the epochs after the checkpoint).
    pub epochs: std::ops::RangeInclusive<usize>,
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

/// The token-weighted epoch value of a logged metric, e.g. `epoch_metric(dir, "valid", 2, "Loss")`.
pub fn epoch_metric(dir: &Path, split: &str, epoch: usize, name: &str) -> Option<f64> {
    let file = dir
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{}.log", name.replace(' ', "_")));
    let text = std::fs::read_to_string(file).ok()?;
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let mut parts = line.split(',');
        let value: f64 = parts.next()?.parse().ok()?;
        let n: f64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1.0);
        sum += value * n;
        count += n;
    }
    (count > 0.0).then(|| sum / count)
}

/// Trains a Switch language model with burn-train's Learner.
///
/// A fresh run refuses an artifact directory that already holds a run; `--resume` needs one with a
/// checkpoint and the same model config. Nothing in the directory is overwritten before the
/// inputs have been checked.
pub fn train<B: AutodiffBackend>(
    mut config: TrainingConfig,
    options: &TrainOptions,
    device: B::Device,
) -> MoeResult<TrainSummary> {
    config.validate()?;
    let dir = ArtifactDir(options.artifact_dir.clone());
    let resume_from = if options.resume {
        Some(check_resumable::<B::InnerBackend>(&dir, &config, &device)?)
    } else {
        if dir.config().exists() || dir.checkpoints().exists() {
            return Err(Error::Checkpoint(format!(
                "artifact directory {} already holds a run: pass --resume to continue it, or \
                 choose another --artifact-dir",
                dir.0.display()
            )));
        }
        None
    };

    // Data: a contiguous split, so that the validation text is unseen.
    let (text, _) = load_corpus(options.data.as_deref())?;
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

    if !options.resume {
        std::fs::create_dir_all(&dir.0).map_err(|e| Error::io("cannot create", &dir.0, e))?;
        config
            .save(dir.config())
            .map_err(|e| Error::io("cannot write", dir.config(), e))?;
        tokenizer.save(&dir.tokenizer())?;
    }

    // Loaders. With a step budget each epoch draws its share of random windows.
    let batch = config.batch_size;
    let train_windows = TokenWindows::new(train_tokens.clone(), seq_len);
    let natural_steps = train_windows.len().div_ceil(batch);
    let (train_loader, steps_per_epoch) = match config.max_steps {
        Some(max) => {
            let per_epoch = max.div_ceil(config.num_epochs);
            let sampled = SamplerDataset::with_replacement(train_windows, per_epoch * batch);
            (
                DataLoaderBuilder::new(LmBatcher)
                    .batch_size(batch)
                    .shuffle(config.seed)
                    .build(sampled),
                per_epoch,
            )
        }
        None => (
            DataLoaderBuilder::new(LmBatcher)
                .batch_size(batch)
                .shuffle(config.seed)
                .build(train_windows),
            natural_steps,
        ),
    };
    let valid_loader = DataLoaderBuilder::<B::InnerBackend, _, _>::new(LmBatcher)
        .batch_size(batch)
        .build(TokenWindows::new(valid_tokens.clone(), seq_len));

    // Model, optimiser, schedule.
    B::seed(&device, config.seed);
    let model: SwitchLm<B> = config.model.init(&device);
    let num_params = model.num_params();
    let sparse_layers = model.encoder.sparse_layers();
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
    training = training
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train(RoutingCsvMetric::new(
            dir.routing_csv(),
            "train",
            sparse_layers.clone(),
        ))
        .metric_valid(RoutingCsvMetric::new(
            dir.routing_csv(),
            "valid",
            sparse_layers,
        ))
        .with_file_checkpointer(DefaultRecorder::new())
        .num_epochs(config.num_epochs)
        .summary();
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
    let first_epoch = resume_from.map_or(1, |e| e + 1);
    training = training.with_metric_logger(ResumeAwareLogger::new(&dir.0, first_epoch));
    let plain = options
        .plain_progress
        .unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if plain {
        training = training.renderer(PlainRenderer::new(10));
    }
    let result = training.launch(Learner::new(model, optimizer, schedule));

    // Epochs actually trained (early stopping may end the run before num_epochs).
    let last_epoch = (first_epoch..=config.num_epochs)
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
    match best_epoch {
        Some(best) if config.patience.is_some() && best != last_epoch => {
            let file = dir.checkpoints().join(format!("model-{best}"));
            load_checked::<B::InnerBackend>(&config.model, &file, &device)?
                .save_file(dir.model(), &DefaultRecorder::new())
                .map_err(save_err)?;
        }
        _ => result
            .model
            .save_file(dir.model(), &DefaultRecorder::new())
            .map_err(save_err)?,
    }
    Ok(TrainSummary {
        artifact_dir: dir.0,
        epochs,
        valid_loss,
        saved_epoch: if config.patience.is_some() {
            best_epoch.unwrap_or(last_epoch)
        } else {
            last_epoch
        },
        vocab_size: config.model.vocab_size,
        num_params,
        split_tokens: (train_tokens.len(), valid_tokens.len()),
    })
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

/// The checkpoint epoch to resume from, after checking that the directory holds a run of the same
/// model and a checkpoint whose tensors fit it.
fn check_resumable<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    device: &B::Device,
) -> MoeResult<usize> {
    let epoch = dir.last_checkpoint().ok_or_else(|| {
        Error::Checkpoint(format!(
            "--resume: {} holds no checkpoint (checkpoint/model-<epoch>.mpk): train without \
             --resume first, or point --artifact-dir at a run that saved one",
            dir.0.display()
        ))
    })?;
    let saved = TrainingConfig::load(dir.config()).map_err(|e| {
        Error::Checkpoint(format!(
            "--resume: cannot read {} ({e}): the artifact directory is incomplete",
            dir.config().display()
        ))
    })?;
    if saved.model.to_string() != config.model.to_string() {
        return Err(Error::Checkpoint(format!(
            "--resume: the model settings differ from the run in {} (its config.json): resume \
             with the same model flags, or start a new --artifact-dir",
            dir.0.display()
        )));
    }
    if epoch >= config.num_epochs {
        return Err(Error::Flag {
            flag: "--epochs",
            message: format!(
                "the run in {} already finished epoch {epoch}: pass --epochs larger than {epoch} to continue",
                dir.0.display()
            ),
        });
    }
    load_checked::<B>(
        &config.model,
        &dir.checkpoints().join(format!("model-{epoch}")),
        device,
    )?;
    Ok(epoch)
}

/// Collects parameter shapes.
struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.shape().dims::<D>().to_vec());
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.0.push(param.shape().dims::<D>().to_vec());
    }
}

/// Loads a model record, checking every tensor's shape against `config`.
fn load_checked<B: Backend>(
    config: &SwitchLmConfig,
    file: &Path,
    device: &B::Device,
) -> MoeResult<SwitchLm<B>> {
    let fresh: SwitchLm<B> = config.init(device);
    let mismatch = |detail: String| {
        Error::Checkpoint(format!(
            "checkpoint {} does not fit the model of config.json ({detail}): it comes from a \
             different configuration; start a new --artifact-dir",
            file.display()
        ))
    };
    let record: <SwitchLm<B> as Module<B>>::Record =
        Recorder::<B>::load(&DefaultRecorder::new(), file.to_path_buf(), device)
            .map_err(|e| mismatch(e.to_string()))?;
    let loaded = fresh.clone().load_record(record);
    let (mut want, mut got) = (Shapes(Vec::new()), Shapes(Vec::new()));
    fresh.visit(&mut want);
    loaded.visit(&mut got);
    if want.0 != got.0 {
        return Err(mismatch("tensor shapes differ".into()));
    }
    Ok(loaded)
}

/// Rebuilds a trained model and its tokenizer from an artifact directory: `config.json`,
/// `tokenizer.json` and `model.mpk` (or, while training runs, the newest checkpoint).
pub fn load_trained<B: Backend>(
    artifact_dir: &Path,
    device: &B::Device,
) -> MoeResult<(SwitchLm<B>, TextTokenizer, TrainingConfig)> {
    let dir = ArtifactDir(artifact_dir.to_path_buf());
    let config = TrainingConfig::load(dir.config()).map_err(|e| {
        Error::Checkpoint(format!(
            "cannot read {} ({e}): --artifact-dir must be a directory written by the train example",
            dir.config().display()
        ))
    })?;
    let tokenizer = TextTokenizer::load(&dir.tokenizer())?;
    let weights = if dir.model().with_extension("mpk").exists() {
        dir.model()
    } else {
        let epoch = dir.last_checkpoint().ok_or_else(|| {
            Error::Checkpoint(format!(
                "{} holds neither model.mpk nor a checkpoint: train first",
                dir.0.display()
            ))
        })?;
        dir.checkpoints().join(format!("model-{epoch}"))
    };
    let model = load_checked::<B>(&config.model, &weights, device)?;
    Ok((model, tokenizer, config))
}
