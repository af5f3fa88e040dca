//! The language model's own metrics, read from [`LmStats`]: loss and perplexity. The routing
//! metrics are the crate's model-agnostic ones ([`routing_metrics`](crate::routing_metrics)).

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry, format_float,
};

use super::step::LmStats;

/// What an [`LmMetric`] reads from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmMetricKind {
    /// "Loss": cross-entropy in nats per token (the language-modelling loss; the aux terms are
    /// reported apart).
    Loss,
    /// "Perplexity": exp of the token-weighted mean cross-entropy — of the batch for a batch's
    /// value, of the epoch so far for the running (epoch) value. Not the mean of the batches'
    /// perplexities, which is larger (exp is convex: Jensen's inequality).
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
    /// The token-weighted cross-entropy (both kinds: perplexity is its exponential).
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
        let tokens = item.num_tokens.max(1);
        let entry = self.state.update(
            item.cross_entropy,
            tokens,
            FormatOptions::new(self.name()).precision(3),
        );
        match self.kind {
            LmMetricKind::Loss => entry,
            LmMetricKind::Perplexity => {
                let batch = item.cross_entropy.exp();
                let epoch = self.state.running_value().current().exp();
                let serialized = NumericEntry::Aggregated {
                    aggregated_value: batch,
                    count: tokens,
                }
                .serialize();
                let formatted = format!(
                    "epoch {} - batch {}",
                    format_float(epoch, 3),
                    format_float(batch, 3)
                );
                SerializedEntry::new(formatted, serialized)
            }
        }
    }

    fn clear(&mut self) {
        self.state.reset()
    }
}

impl LmMetric {
    /// The kind's value of a cross-entropy entry: itself, or its exponential.
    fn of(&self, entry: NumericEntry) -> NumericEntry {
        match (self.kind, entry) {
            (LmMetricKind::Loss, entry) => entry,
            (LmMetricKind::Perplexity, NumericEntry::Value(v)) => NumericEntry::Value(v.exp()),
            (
                LmMetricKind::Perplexity,
                NumericEntry::Aggregated {
                    aggregated_value,
                    count,
                },
            ) => NumericEntry::Aggregated {
                aggregated_value: aggregated_value.exp(),
                count,
            },
        }
    }
}

impl Numeric for LmMetric {
    fn value(&self) -> NumericEntry {
        self.of(self.state.current_value())
    }

    fn running_value(&self) -> NumericEntry {
        self.of(self.state.running_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_perplexity_is_exp_of_the_mean_cross_entropy() {
        // Two batches of different sizes: 100 tokens at CE 1.0, 300 tokens at CE 3.0.
        let mut perplexity = LmMetric::new(LmMetricKind::Perplexity);
        let mut loss = LmMetric::new(LmMetricKind::Loss);
        let progress = burn::data::dataloader::Progress {
            items_processed: 1,
            items_total: 1,
        };
        let metadata = MetricMetadata {
            progress: progress.clone(),
            global_progress: progress,
            iteration: Some(1),
            lr: None,
        };
        for (ce, tokens) in [(1.0f64, 100usize), (3.0, 300)] {
            let item = LmStats {
                cross_entropy: ce,
                num_tokens: tokens,
                ..LmStats::default()
            };
            perplexity.update(&item, &metadata);
            loss.update(&item, &metadata);
        }
        // By hand: mean CE = (100·1 + 300·3) / 400 = 2.5, so the perplexity is e^2.5 = 12.1825,
        // not the mean of the batches' perplexities (100·e + 300·e³) / 400 = 15.744.
        let epoch = perplexity.running_value().current();
        assert!((epoch - 2.5f64.exp()).abs() < 1e-9, "{epoch}");
        assert!((epoch - 12.182_493_960_703_473).abs() < 1e-9);
        assert!((loss.running_value().current() - 2.5).abs() < 1e-12);
        // The last batch alone: e^3.
        assert!((perplexity.value().current() - 3.0f64.exp()).abs() < 1e-9);
    }
}
