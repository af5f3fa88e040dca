//! What defines a training run: [`TrainingConfig`] (saved as `config.json`) and the
//! [`TokenizerKind`], with their validation. Errors name the config field
//! (`TrainingConfig.batch_size`); a program maps fields to its own flags.

use burn::config::Config;

use super::guard::HealthConfig;
use super::loader::EpochOrder;
use crate::Result as MoeResult;
use crate::error::Error;
use crate::lm::SwitchLmConfig;

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
    /// Loaded from a `tokenizer.json` ([`TrainOptions::tokenizer_file`](super::TrainOptions)).
    File,
}

/// Everything that defines a training run; saved as `config.json` in the artifact directory.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The model (its `vocab_size` is set from the tokenizer; `max_seq_len` is the window).
    pub model: SwitchLmConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerKind,
    /// Windows per batch (default 32).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Epochs (default 1). Without `max_steps` an epoch is one pass over the training windows;
    /// with `max_steps` it is `max_steps / num_epochs` batches of windows drawn at random, which
    /// may be less or more than one pass.
    #[config(default = 1)]
    pub num_epochs: usize,
    /// A step budget for quick runs: training stops after this many optimiser steps, spread
    /// evenly over the epochs (default: none, whole passes).
    pub max_steps: Option<usize>,
    /// Peak learning rate of AdamW (default 3e-3).
    #[config(default = 3e-3)]
    pub lr: f64,
    /// Final learning rate of the cosine, as a fraction of `lr` (default 0.1).
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warm-up steps (default 50; at most half the run).
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// AdamW weight decay (default 0.01).
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Gradient clipping by global norm (default 1.0).
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Share of the corpus (its tail) held out for validation (default 0.1).
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Seed of initialisation and shuffling (default 42).
    #[config(default = 42)]
    pub seed: u64,
    /// Early stopping: stop once the validation loss has not improved for this many epochs, and
    /// save the best epoch's weights as `model.mpk`. None (default): train every epoch.
    pub patience: Option<usize>,
    /// Optimiser steps per epoch, i.e. between checkpoints (a kill loses at most this many).
    /// With `max_steps`: the budget is cut into ⌈max_steps / checkpoint_every⌉ epochs (and
    /// `num_epochs` is not used). Without: the `num_epochs` passes are cut into epochs of this
    /// many steps. None (default): `max_steps / num_epochs` with a budget; otherwise a tenth of
    /// the run, at most one pass.
    pub checkpoint_every: Option<usize>,
    /// Router health alarms (dead experts, collapse) and what they do.
    #[config(default = "HealthConfig::new()")]
    pub health: HealthConfig,
}

/// How a run is cut into epochs (checkpoint intervals), from [`TrainingConfig::epoch_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    /// Epochs of the run (the Learner's, each ending with validation and a checkpoint).
    pub epochs: usize,
    /// Optimiser steps per epoch (the last may be shorter without a step budget).
    pub steps_per_epoch: usize,
    /// Optimiser steps of the whole run.
    pub total_steps: usize,
    /// Steps of one pass over the training windows.
    pub steps_per_pass: usize,
    /// How each epoch picks its windows.
    pub order: EpochOrder,
}

/// The config's name in errors.
const CONFIG: &str = "TrainingConfig";

impl TrainingConfig {
    /// The window length S.
    pub fn seq_len(&self) -> usize {
        self.model.max_seq_len
    }

    /// Optimiser steps per epoch when the training split holds `windows` windows.
    pub fn steps_per_epoch(&self, windows: usize) -> usize {
        self.epoch_plan(windows).steps_per_epoch
    }

    /// The run's epochs when the training split holds `windows` windows (see
    /// [`checkpoint_every`](Self::checkpoint_every)).
    pub fn epoch_plan(&self, windows: usize) -> EpochPlan {
        let batch = self.batch_size.max(1);
        let steps_per_pass = windows.div_ceil(batch).max(1);
        match self.max_steps {
            Some(max) => {
                let every = self
                    .checkpoint_every
                    .unwrap_or_else(|| max.div_ceil(self.num_epochs.max(1)))
                    .max(1);
                let epochs = max.div_ceil(every).max(1);
                EpochPlan {
                    epochs,
                    steps_per_epoch: every,
                    total_steps: epochs * every,
                    steps_per_pass,
                    order: EpochOrder::Sample(every * batch),
                }
            }
            None => {
                let total_steps = (windows * self.num_epochs).div_ceil(batch).max(1);
                let every = self
                    .checkpoint_every
                    .unwrap_or_else(|| total_steps.div_ceil(10).min(steps_per_pass))
                    .max(1);
                EpochPlan {
                    epochs: total_steps.div_ceil(every),
                    steps_per_epoch: every,
                    total_steps,
                    steps_per_pass,
                    order: EpochOrder::Passes {
                        per_epoch: every * batch,
                        total: windows * self.num_epochs,
                    },
                }
            }
        }
    }

    /// Checks the run settings and the model; errors name the field to change
    /// ([`Error::Config`]).
    pub fn validate(&self) -> MoeResult<()> {
        let fail = |field: &'static str, value: String, reason: &str| {
            Err(Error::config(CONFIG, field, value, reason))
        };
        if self.batch_size == 0 {
            return fail("batch_size", "0".into(), "must be at least 1");
        }
        if self.num_epochs == 0 {
            return fail("num_epochs", "0".into(), "must be at least 1");
        }
        if self.patience == Some(0) {
            return fail("patience", "0".into(), "must be at least 1 epoch");
        }
        if self.checkpoint_every == Some(0) {
            return fail("checkpoint_every", "0".into(), "must be at least 1 step");
        }
        if self.max_steps == Some(0) {
            return fail("max_steps", "0".into(), "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(
                "lr",
                self.lr.to_string(),
                "must be a positive learning rate",
            );
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return fail(
                "valid_fraction",
                self.valid_fraction.to_string(),
                "must lie strictly between 0 and 1",
            );
        }
        if self.model.max_seq_len < 2 {
            return Err(Error::config(
                "SwitchLmConfig",
                "max_seq_len",
                self.model.max_seq_len,
                "too short for a language model: use at least 2",
            ));
        }
        if let TokenizerKind::Bpe { vocab_size } = self.tokenizer
            && vocab_size < 257
        {
            return Err(Error::config(
                "TokenizerKind::Bpe",
                "vocab_size",
                vocab_size,
                "too small for a byte-level BPE: use at least 257, or a character-level \
                 tokenizer",
            ));
        }
        // vocab_size 0 means "set from the tokenizer" (checked again once it is known).
        let mut model = self.model.clone();
        model.vocab_size = model.vocab_size.max(1);
        model.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SwitchEncoderConfig;

    fn config() -> TrainingConfig {
        let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, 4);
        TrainingConfig::new(SwitchLmConfig::new(0, 16, encoder), TokenizerKind::Char)
    }

    fn field_of(config: &TrainingConfig) -> (&'static str, &'static str) {
        match config.validate() {
            Err(Error::Config { config, field, .. }) => (config, field),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(config().validate().is_ok());
        let cases: [(TrainingConfig, &str); 6] = [
            (config().with_batch_size(0), "batch_size"),
            (config().with_num_epochs(0), "num_epochs"),
            (config().with_patience(Some(0)), "patience"),
            (config().with_max_steps(Some(0)), "max_steps"),
            (config().with_lr(0.0), "lr"),
            (config().with_valid_fraction(1.0), "valid_fraction"),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), ("TrainingConfig", field));
        }
        let mut short = config();
        short.model.max_seq_len = 1;
        assert_eq!(field_of(&short), ("SwitchLmConfig", "max_seq_len"));
        let mut bpe = config();
        bpe.tokenizer = TokenizerKind::Bpe { vocab_size: 10 };
        assert_eq!(field_of(&bpe), ("TokenizerKind::Bpe", "vocab_size"));
    }

    #[test]
    fn epochs_are_checkpoint_intervals() {
        // 3 passes of 100 windows in batches of 8: 300/8 → 38 steps, a pass 13 steps; by default
        // epochs of a tenth of the run (4 steps), so 10 epochs.
        let c = config().with_batch_size(8).with_num_epochs(3);
        let plan = c.epoch_plan(100);
        assert_eq!(
            (plan.epochs, plan.steps_per_epoch, plan.total_steps),
            (10, 4, 38)
        );
        assert_eq!(plan.steps_per_pass, 13);
        // Never longer than a pass.
        let c1 = config().with_batch_size(8).with_num_epochs(30);
        assert_eq!(c1.epoch_plan(100).steps_per_epoch, 13);
        // A step budget of 10 over 3 epochs: ⌈10/3⌉ = 4 steps each, rounded up to 12 in all.
        let b = c.clone().with_max_steps(Some(10));
        let plan = b.epoch_plan(100);
        assert_eq!(
            (plan.epochs, plan.steps_per_epoch, plan.total_steps),
            (3, 4, 12)
        );
        assert_eq!(plan.order, EpochOrder::Sample(32));
        // checkpoint_every sets the interval in both modes.
        let e = b.with_checkpoint_every(Some(5));
        assert_eq!(e.epoch_plan(100).epochs, 2);
        let p = c.with_checkpoint_every(Some(7)).epoch_plan(100);
        assert_eq!((p.epochs, p.steps_per_epoch), (6, 7));
        assert_eq!(
            p.order,
            EpochOrder::Passes {
                per_epoch: 56,
                total: 300
            }
        );
    }
}
