//! What a run is told and what it tells: where its files go ([`TrainOptions`]), what it is about
//! to do once the data and model are ready ([`TrainPlan`], handed to the caller before the first
//! step), and what it did ([`TrainSummary`]).

use std::ops::RangeInclusive;
use std::path::PathBuf;

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
    /// interruption would; a resume continues from there. None: train every epoch.
    pub epoch_limit: Option<usize>,
}

/// What a run is about to do, known once the data is tokenized and the model built: handed to
/// the caller of [`train_with_plan`](super::train_with_plan) before the first step, so that a program can say it.
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
