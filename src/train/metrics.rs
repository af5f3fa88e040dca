//! The language model's own metrics, read from [`LmStats`]: loss and perplexity. The routing
//! metrics are the crate's model-agnostic ones ([`routing_metrics`](crate::routing_metrics)).

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use super::step::LmStats;

/// What an [`LmMetric`] reads from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmMetricKind {
    /// "Loss": cross-entropy in nats per token (the language-modelling loss; the aux terms are
    /// reported apart).
    Loss,
    /// "Perplexity": exp(cross-entropy) of each batch.
    Perplexity,
}

impl LmMetricKind {
    /// The metric's name (also its log file name).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Loss => "Loss",
            Self::Perplexity => "Perplexity",
        }
    }
}

/// A numeric burn-train metric over [`LmStats`], weighted by the batch's tokens.
#[derive(Clone)]
pub struct LmMetric {
    kind: LmMetricKind,
    name: MetricName,
    state: NumericMetricState,
}

impl LmMetric {
    /// The metric for `kind`.
    pub fn new(kind: LmMetricKind) -> Self {
        Self {
            kind,
            name: Arc::new(kind.name().to_string()),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for LmMetric {
    type Input = LmStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, item: &LmStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let value = match self.kind {
            LmMetricKind::Loss => item.cross_entropy,
            LmMetricKind::Perplexity => item.cross_entropy.exp(),
        };
        self.state.update(
            value,
            item.num_tokens.max(1),
            FormatOptions::new(self.name()).precision(3),
        )
    }

    fn clear(&mut self) {
        self.state.reset()
    }
}

impl Numeric for LmMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
