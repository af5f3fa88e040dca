//! Numeric routing metrics: the routing losses, drops, entropy, balance and one metric per expert
//! for the token fractions.

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::routing_stats::RoutingStats;

/// What a [`RoutingMetric`] reads from [`RoutingStats`]; the doc of each variant is its meaning on
/// the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingMetricKind {
    /// "Load Balancing Loss": E·Σ f·P, mean over sparse layers; 1.0 at uniform routing, E at
    /// collapse.
    AuxLoss,
    /// "Router Z Loss": mean squared logsumexp of the router logits, mean over sparse layers.
    ZLoss,
    /// "Dropped Fraction": share of token assignments over capacity, mean over sparse layers.
    DroppedFraction,
    /// "Router Entropy": mean router entropy in nats (ln E = undecided), mean over sparse layers.
    RouterEntropy,
    /// "Max Expert Load": E · max_i f_i, mean over sparse layers; 1.0 is perfect balance, E is
    /// collapse onto one expert.
    MaxExpertLoad,
    /// "Expert i fraction": share of tokens whose first choice is expert i, mean over sparse
    /// layers; the E values sum to 1.
    ExpertFraction(usize),
    /// "Dead Experts": experts that have received less than 1% of their fair share (1/E) of the
    /// epoch's tokens so far, summed over sparse layers (0 is healthy). Each step logs the count
    /// over the epoch up to that step.
    DeadExperts,
    /// "Skipped Fraction": share of real tokens that no expert processed (every assignment
    /// dropped, or no expert chose them), mean over sparse layers.
    SkippedFraction,
}

impl RoutingMetricKind {
    /// The metric's name (also its log file name, spaces as underscores).
    pub fn name(&self) -> String {
        match self {
            Self::AuxLoss => "Load Balancing Loss".into(),
            Self::ZLoss => "Router Z Loss".into(),
            Self::DroppedFraction => "Dropped Fraction".into(),
            Self::RouterEntropy => "Router Entropy".into(),
            Self::MaxExpertLoad => "Max Expert Load".into(),
            Self::ExpertFraction(e) => format!("Expert {e} fraction"),
            Self::DeadExperts => "Dead Experts".into(),
            Self::SkippedFraction => "Skipped Fraction".into(),
        }
    }

    /// The value of one step (for `DeadExperts`: of that step alone; the metric counts over the
    /// epoch).
    pub fn value(&self, s: &RoutingStats) -> f64 {
        match self {
            Self::AuxLoss => s.aux_loss,
            Self::ZLoss => s.z_loss,
            Self::DroppedFraction => s.layer_mean(|l| l.dropped_fraction),
            Self::RouterEntropy => s.layer_mean(|l| l.router_entropy),
            Self::MaxExpertLoad => s.layer_mean(|l| l.max_expert_load()),
            Self::ExpertFraction(e) => s.expert_fraction(*e),
            Self::DeadExperts => dead_experts(s.layers.iter().map(|l| l.tokens_per_expert.clone())),
            Self::SkippedFraction => s.layer_mean(|l| l.skipped_fraction),
        }
    }

    fn higher_is_better(&self) -> bool {
        matches!(self, Self::RouterEntropy)
    }
}

/// Experts with less than 1% of their fair share of the counted tokens, summed over layers.
fn dead_experts(layers: impl Iterator<Item = Vec<f64>>) -> f64 {
    layers
        .map(|counts| crate::routing_stats::dead_in(&counts).len())
        .sum::<usize>() as f64
}

/// A numeric burn-train metric over [`RoutingStats`], weighted by the step's real tokens.
#[derive(Clone)]
pub struct RoutingMetric {
    kind: RoutingMetricKind,
    name: MetricName,
    state: NumericMetricState,
    /// Tokens per sparse layer and expert over the epoch so far (`DeadExperts` only).
    epoch_counts: Vec<Vec<f64>>,
}

impl RoutingMetric {
    /// The metric for `kind`.
    pub fn new(kind: RoutingMetricKind) -> Self {
        Self {
            kind,
            name: Arc::new(kind.name()),
            state: NumericMetricState::new(),
            epoch_counts: Vec::new(),
        }
    }

    /// What it measures.
    pub fn kind(&self) -> RoutingMetricKind {
        self.kind
    }
}

/// The standard routing metrics of a model whose sparse layers have `num_experts` experts:
/// load-balancing and z losses, dropped fraction, router entropy, max expert load, dead experts,
/// skipped fraction and one "Expert i fraction" per expert. Register each for train and valid:
///
/// ```ignore
/// for metric in switch_moe::routing_metrics(8) {
///     training = training.metric_train_numeric(metric.clone()).metric_valid_numeric(metric);
/// }
/// ```
pub fn routing_metrics(num_experts: usize) -> Vec<RoutingMetric> {
    let mut kinds = vec![
        RoutingMetricKind::AuxLoss,
        RoutingMetricKind::ZLoss,
        RoutingMetricKind::DroppedFraction,
        RoutingMetricKind::RouterEntropy,
        RoutingMetricKind::MaxExpertLoad,
        RoutingMetricKind::DeadExperts,
        RoutingMetricKind::SkippedFraction,
    ];
    kinds.extend((0..num_experts).map(RoutingMetricKind::ExpertFraction));
    kinds.into_iter().map(RoutingMetric::new).collect()
}

impl Metric for RoutingMetric {
    type Input = RoutingStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some(format!("{:?}", self.kind))
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: self.kind.higher_is_better(),
        }
        .into()
    }

    fn update(&mut self, item: &RoutingStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let precision = if matches!(self.kind, RoutingMetricKind::ExpertFraction(_)) {
            4
        } else {
            3
        };
        let value = if self.kind == RoutingMetricKind::DeadExperts {
            if self.epoch_counts.len() != item.layers.len() {
                self.epoch_counts = item
                    .layers
                    .iter()
                    .map(|l| vec![0.0; l.tokens_per_expert.len()])
                    .collect();
            }
            for (sums, layer) in self.epoch_counts.iter_mut().zip(&item.layers) {
                sums.iter_mut()
                    .zip(&layer.tokens_per_expert)
                    .for_each(|(s, c)| *s += c);
            }
            dead_experts(self.epoch_counts.iter().cloned())
        } else {
            self.kind.value(item)
        };
        self.state.update(
            value,
            item.num_tokens.max(1),
            FormatOptions::new(self.name()).precision(precision),
        )
    }

    fn clear(&mut self) {
        self.state.reset();
        self.epoch_counts.clear();
    }
}

impl Numeric for RoutingMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

#[cfg(test)]
mod tests {
    use super::dead_experts;

    #[test]
    fn dead_means_under_one_percent_of_the_fair_share() {
        // 300 tokens over 4 experts: fair share 75, 1% of it 0.75.
        let layer = vec![100.0, 100.0, 0.5, 99.5];
        assert_eq!(dead_experts([layer.clone()].into_iter()), 1.0);
        let two_layers = [layer, vec![0.0, 0.0, 10.0, 10.0]];
        assert_eq!(dead_experts(two_layers.into_iter()), 3.0);
        assert_eq!(
            dead_experts([vec![0.0; 4]].into_iter()),
            0.0,
            "no tokens: none dead"
        );
    }
}
