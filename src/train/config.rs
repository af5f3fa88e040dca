//! What defines a training run: [`TrainingConfig`] (saved as `config.json`) and the
//! [`TokenizerKind`], with their validation. Errors name the config field
//! (`TrainingConfig.batch_size`); a program maps fields to its own flags.

use burn::config::Config;

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
}

/// The config's name in errors.
const CONFIG: &str = "TrainingConfig";

impl TrainingConfig {
    /// The window length S.
    pub fn seq_len(&self) -> usize {
        self.model.max_seq_len
    }

    /// Optimiser steps per epoch when the training split holds `windows` windows: the step
    /// budget's share, or one pass.
    pub fn steps_per_epoch(&self, windows: usize) -> usize {
        match self.max_steps {
            Some(max) => max.div_ceil(self.num_epochs.max(1)),
            None => windows.div_ceil(self.batch_size.max(1)),
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
    fn steps_per_epoch_is_the_budget_share_or_one_pass() {
        let c = config().with_batch_size(8).with_num_epochs(3);
        assert_eq!(c.steps_per_epoch(100), 13);
        let c = c.with_max_steps(Some(10));
        assert_eq!(c.steps_per_epoch(100), 4);
    }
}
