//! The crate's one error type.
//!
//! Configuration problems are reported by every config's `validate()`; `init` panics with the same
//! message, as Burn's own configs do for invalid shapes.

use thiserror::Error;

/// Errors reported by switch-moe.
#[derive(Debug, Clone, PartialEq, Error)]
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
    /// The same error reported under an enclosing config (e.g. a layer config validating the
    /// block config it builds), with the field renamed where the enclosing config names it
    /// differently (`renames`: pairs of inner name, outer name).
    pub(crate) fn within(self, config: &'static str, renames: &[(&str, &'static str)]) -> Self {
        match self {
            Error::Config {
                field,
                value,
                reason,
                ..
            } => Error::Config {
                config,
                field: renames
                    .iter()
                    .find(|(inner, _)| *inner == field)
                    .map_or(field, |(_, outer)| outer),
                value,
                reason,
            },
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
