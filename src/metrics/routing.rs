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
        }
    }

    /// The value of one step.
    pub fn value(&self, s: &RoutingStats) -> f64 {
        match self {
            Self::AuxLoss => s.aux_loss,
            Self::ZLoss => s.z_loss,
            Self::DroppedFraction => s.layer_mean(|l| l.dropped_fraction),
            Self::RouterEntropy => s.layer_mean(|l| l.router_entropy),
            Self::MaxExpertLoad => s.layer_mean(|l| l.max_expert_load()),
            Self::ExpertFraction(e) => s.expert_fraction(*e),
        }
    }

    fn higher_is_better(&self) -> bool {
        matches!(self, Self::RouterEntropy)
    }
}

/// A numeric burn-train metric over [`RoutingStats`], weighted by the step's real tokens.
#[derive(Clone)]
pub struct RoutingMetric {
    kind: RoutingMetricKind,
    name: MetricName,
    state: NumericMetricState,
}

impl RoutingMetric {
    /// The metric for `kind`.
    pub fn new(kind: RoutingMetricKind) -> Self {
        Self {
            kind,
            name: Arc::new(kind.name()),
            state: NumericMetricState::new(),
        }
    }

    /// What it measures.
    pub fn kind(&self) -> RoutingMetricKind {
        self.kind
    }
}

/// The standard routing metrics of a model whose sparse layers have `num_experts` experts:
/// load-balancing and z losses, dropped fraction, router entropy, max expert load and one
/// "Expert i fraction" per expert. Register each for train and valid:
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
        self.state.update(
            self.kind.value(item),
            item.num_tokens.max(1),
            FormatOptions::new(self.name()).precision(precision),
        )
    }

    fn clear(&mut self) {
        self.state.reset()
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
