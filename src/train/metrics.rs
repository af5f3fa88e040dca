//! Numeric metrics read from [`LmStats`]: losses, perplexity and the routing statistics, one
//! metric per expert for the token fractions. Each value is weighted by the batch's tokens, so an
//! epoch value is the token-weighted mean over its batches.

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use super::step::LmStats;

/// What a [`StatMetric`] reads from a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// "Loss": cross-entropy in nats per token (the language-modelling loss; the aux terms are
    /// reported apart).
    Loss,
    /// "Perplexity": exp(cross-entropy) of each batch.
    Perplexity,
    /// "Load Balancing Loss": E·Σ f·P, mean over sparse layers; 1.0 at uniform routing.
    AuxLoss,
    /// "Router Z Loss": mean squared logsumexp of the router logits, mean over sparse layers.
    ZLoss,
    /// "Dropped Fraction": share of token assignments over capacity, mean over sparse layers.
    DroppedFraction,
    /// "Router Entropy": mean router entropy in nats (ln E = uniform), mean over sparse layers.
    RouterEntropy,
    /// "Max Expert Load": E · max_i f_i, mean over sparse layers; 1.0 is perfect balance, E is
    /// collapse onto one expert.
    MaxExpertLoad,
    /// "Expert i fraction": share of tokens whose first choice is expert i, mean over sparse
    /// layers; the E values sum to 1.
    ExpertFraction(usize),
}

impl StatKind {
    /// The metric's name (also its log file name, spaces as underscores).
    pub fn name(&self) -> String {
        match self {
            Self::Loss => "Loss".into(),
            Self::Perplexity => "Perplexity".into(),
            Self::AuxLoss => "Load Balancing Loss".into(),
            Self::ZLoss => "Router Z Loss".into(),
            Self::DroppedFraction => "Dropped Fraction".into(),
            Self::RouterEntropy => "Router Entropy".into(),
            Self::MaxExpertLoad => "Max Expert Load".into(),
            Self::ExpertFraction(e) => format!("Expert {e} fraction"),
        }
    }

    /// The value of one step.
    pub fn value(&self, s: &LmStats) -> f64 {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        match self {
            Self::Loss => s.cross_entropy,
            Self::Perplexity => s.cross_entropy.exp(),
            Self::AuxLoss => s.aux_loss,
            Self::ZLoss => s.z_loss,
            Self::DroppedFraction => mean(&s.dropped_fraction),
            Self::RouterEntropy => mean(&s.router_entropy),
            Self::MaxExpertLoad => mean(
                &s.token_fractions
                    .iter()
                    .map(|f| f.iter().cloned().fold(0.0, f64::max) * f.len() as f64)
                    .collect::<Vec<_>>(),
            ),
            Self::ExpertFraction(e) => mean(
                &s.token_fractions
                    .iter()
                    .map(|f| f.get(*e).copied().unwrap_or(0.0))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn higher_is_better(&self) -> bool {
        matches!(self, Self::RouterEntropy)
    }
}

/// A numeric burn-train metric over [`LmStats`].
#[derive(Clone)]
pub struct StatMetric {
    kind: StatKind,
    name: MetricName,
    state: NumericMetricState,
}

impl StatMetric {
    /// The metric for `kind`.
    pub fn new(kind: StatKind) -> Self {
        Self {
            kind,
            name: Arc::new(kind.name()),
            state: NumericMetricState::new(),
        }
    }

    /// The standard set: loss, perplexity, routing losses and stats, one fraction per expert.
    pub fn all(num_experts: usize) -> Vec<Self> {
        let mut kinds = vec![
            StatKind::Loss,
            StatKind::Perplexity,
            StatKind::AuxLoss,
            StatKind::ZLoss,
            StatKind::DroppedFraction,
            StatKind::RouterEntropy,
            StatKind::MaxExpertLoad,
        ];
        kinds.extend((0..num_experts).map(StatKind::ExpertFraction));
        kinds.into_iter().map(Self::new).collect()
    }
}

impl Metric for StatMetric {
    type Input = LmStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: self.kind.higher_is_better(),
        }
        .into()
    }

    fn update(&mut self, item: &LmStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let precision = if matches!(self.kind, StatKind::ExpertFraction(_)) {
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

impl Numeric for StatMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}
