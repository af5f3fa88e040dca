//! The crate's one error type.
//!
//! Configuration problems are reported by every config's `validate()`; `init` panics with the same
//! message, as Burn's own configs do for invalid shapes. Data, tokenizer, checkpoint and
//! command-line problems are returned as values; each message names the file or flag and says what
//! to do.

use std::path::PathBuf;

use thiserror::Error;

/// Errors reported by switch-moe.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// A configuration field holds a value the module cannot be built with.
    #[error("invalid config: {config}.{field} = {value}: {reason}")]
    Config {
        /// The config type, e.g. `SwitchFeedForwardConfig`.
        config: &'static str,
        /// The offending field, e.g. `top_k`.
        field: &'static str,
        /// The value it held, formatted.
        value: String,
        /// What is expected instead.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::sync::Arc<std::io::Error>,
    },
    /// The training corpus is missing, empty, not UTF-8 or too short.
    #[error("{0}")]
    Data(String),
    /// A tokenizer could not be trained, loaded or saved.
    #[error("{0}")]
    Tokenizer(String),
    /// A checkpoint or artifact directory cannot be used.
    #[error("{0}")]
    Checkpoint(String),
    /// A Hugging Face safetensors file cannot be read, written or mapped onto a block; the
    /// message names the tensor or setting.
    #[error("{}: {message}", file.display())]
    Hf {
        /// The safetensors file.
        file: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
    /// A config file (`config.json`, or one written by hand) does not describe a config: a field
    /// that is not a setting, a value of the wrong type, or a setting missing.
    #[error("config file {}: {message}", file.display())]
    ConfigFile {
        /// The file.
        file: PathBuf,
        /// The field's path, e.g. `model.encoder.layer.moe.jitter` (empty when the file as a
        /// whole is at fault).
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A command-line flag holds an unusable value.
    #[error("invalid value for {flag}: {message}")]
    Flag {
        /// The flag, as the program spells it (src/cli).
        flag: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl Error {
    /// A [`Error::Config`] for `config.field = value`.
    pub(crate) fn config(
        config: &'static str,
        field: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Config {
            config,
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// An [`Error::Hf`] for `file`.
    #[cfg_attr(not(feature = "hf"), allow(dead_code))]
    pub(crate) fn hf(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Hf {
            file: file.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    #[cfg_attr(not(feature = "train"), allow(dead_code))]
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source: std::sync::Arc::new(source),
        }
    }
}

/// `Result` with the crate's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

/// Shared checks used by the configs' `validate()`.
pub(crate) mod check {
    use super::{Error, Result};

    /// `value ≥ 1`.
    pub fn positive(config: &'static str, field: &'static str, value: usize) -> Result<()> {
        if value == 0 {
            return Err(Error::config(config, field, value, "must be at least 1"));
        }
        Ok(())
    }

    /// A dropout probability in [0, 1).
    pub fn probability(config: &'static str, field: &'static str, value: f64) -> Result<()> {
        if !(0.0..1.0).contains(&value) {
            return Err(Error::config(config, field, value, "must lie in [0, 1)"));
        }
        Ok(())
    }

    /// A finite value > 0.
    pub fn positive_f64(config: &'static str, field: &'static str, value: f64) -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            return Err(Error::config(
                config,
                field,
                value,
                "must be finite and > 0",
            ));
        }
        Ok(())
    }
}
