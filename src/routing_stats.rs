//! Routing statistics on the host: what the metrics, the routing CSV and a user's own logging
//! read, copied from the device with **one** transaction per step.
//!
//! [`MoeStats`](crate::MoeStats) / [`CombinedMoeStats`] hold device tensors so that the forward
//! never waits for the device. A training step hands them to its metrics, which call
//! [`RoutingStats::read`] once: every loss, count, fraction, entropy and dropped share of every
//! sparse layer comes back in a single `Transaction`. Any model can then get the routing metrics
//! of the `metrics` module (feature `metrics`) by adapting its output to [`RoutingStats`].

use burn::tensor::{Tensor, Transaction, backend::Backend};

use crate::stats::CombinedMoeStats;

/// One sparse layer's routing in one forward call, on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerRoutingStats {
    /// Tokens per expert `[E]`: token choice counts the real tokens' first choices before
    /// capacity (they sum to N); expert choice the tokens each expert took.
    pub tokens_per_expert: Vec<f64>,
    /// Token fractions f_i = count_i / Σ count `[E]`; they sum to 1 (all 0 without tokens).
    pub token_fractions: Vec<f64>,
    /// Mean router probability P_i of each expert over the real tokens `[E]`.
    pub router_prob_mean: Vec<f64>,
    /// Share of the k·N assignments dropped for lack of capacity.
    pub dropped_fraction: f64,
    /// Mean entropy of the router distribution, nats (ln E at uniform routing).
    pub router_entropy: f64,
    /// Share of the real tokens that no expert processed.
    pub skipped_fraction: f64,
    /// The aux-loss-free selection bias of each expert `[E]` (zeros when off).
    pub expert_bias: Vec<f64>,
}

/// An expert is **dead** when it receives less than this share of its fair 1/E of the tokens
/// (1%): the rule behind the "Dead Experts" metric, the run guard's alarm, the report and the
/// experiments ([`is_dead_expert`]).
pub const DEAD_EXPERT_SHARE: f64 = 0.01;

/// Whether an expert with token fraction `fraction` (of all E experts' tokens) is dead:
/// `fraction < DEAD_EXPERT_SHARE / E`.
pub fn is_dead_expert(fraction: f64, num_experts: usize) -> bool {
    fraction < DEAD_EXPERT_SHARE / num_experts.max(1) as f64
}

/// The max expert load (E · max fᵢ) at which a router counts as **collapsing**, by default:
/// halfway between balance (1) and collapse onto one expert (E), 1 + (E − 1) / 2.
pub fn collapse_load(num_experts: usize) -> f64 {
    1.0 + (num_experts as f64 - 1.0) / 2.0
}

impl LayerRoutingStats {
    /// E · max_i f_i: 1.0 is perfect balance, E is collapse onto one expert (0 when N = 0).
    pub fn max_expert_load(&self) -> f64 {
        max_load(&self.token_fractions)
    }

    /// The experts that received less than 1% of their fair share ([`is_dead_expert`]); none
    /// when the call routed no token.
    pub fn dead_experts(&self) -> Vec<usize> {
        dead_in(&self.tokens_per_expert)
    }
}

/// E · max fᵢ of token fractions (or counts normalised to fractions by the caller) `[E]`.
pub fn max_load(fractions: &[f64]) -> f64 {
    fractions.iter().copied().fold(0.0, f64::max) * fractions.len() as f64
}

/// The dead experts of one layer's token counts (or fractions) `[E]`: none without tokens.
pub fn dead_in(counts: &[f64]) -> Vec<usize> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return Vec::new();
    }
    (0..counts.len())
        .filter(|i| is_dead_expert(counts[*i] / total, counts.len()))
        .collect()
}

/// The routing statistics of all sparse layers of one forward call (or one training step), on
/// the host. Build it with [`RoutingStats::read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingStats {
    /// Load-balancing loss, mean over the sparse layers (1.0 at uniform routing).
    pub aux_loss: f64,
    /// Router z-loss, mean over the sparse layers.
    pub z_loss: f64,
    /// Real (non-padding) tokens N routed by each layer: the weight of this step in epoch means.
    pub num_tokens: usize,
    /// Per sparse layer, in layer order.
    pub layers: Vec<LayerRoutingStats>,
}

impl RoutingStats {
    /// Reads every statistic of `stats` from the device in one transaction.
    pub fn read<B: Backend>(stats: &CombinedMoeStats<B>) -> Self {
        Self::read_with(stats, Vec::new()).0
    }

    /// Like [`read`](Self::read), and reads `extra` tensors (e.g. the task loss) in the same
    /// transaction; their values come back in order.
    pub fn read_with<B: Backend>(
        stats: &CombinedMoeStats<B>,
        extra: Vec<Tensor<B, 1>>,
    ) -> (Self, Vec<Vec<f64>>) {
        let num_extra = extra.len();
        let losses = Tensor::cat(vec![stats.aux_loss.clone(), stats.z_loss.clone()], 0); // [2]
        let mut transaction = Transaction::default()
            .register(losses)
            .register(stats.tokens_per_expert()) // [L, E]
            .register(stats.router_prob_mean()) // [L, E]
            .register(stats.dropped_fraction()) // [L]
            .register(stats.router_entropy()) // [L]
            .register(stats.skipped_fraction()) // [L]
            .register(stats.expert_bias()) // [L, E]
            .register(stats.num_tokens()); // [L]
        for tensor in extra {
            transaction = transaction.register(tensor);
        }
        let mut values: Vec<Vec<f64>> = transaction
            .execute()
            .into_iter()
            .map(|d| d.convert::<f64>().to_vec::<f64>().unwrap_or_default())
            .collect();
        let extra = values.split_off(values.len() - num_extra);
        let [
            losses,
            counts,
            probs,
            dropped,
            entropy,
            skipped,
            bias,
            tokens,
        ]: [Vec<f64>; 8] = values.try_into().expect("eight registered tensors");

        let num_layers = stats.layers.len();
        let e = counts.len() / num_layers.max(1);
        let rows =
            |v: &[f64]| -> Vec<Vec<f64>> { v.chunks(e.max(1)).map(<[f64]>::to_vec).collect() };
        let (probs, bias) = (rows(&probs), rows(&bias));
        let layers: Vec<LayerRoutingStats> = rows(&counts)
            .into_iter()
            .enumerate()
            .map(|(l, counts)| {
                let n: f64 = counts.iter().sum();
                LayerRoutingStats {
                    token_fractions: counts.iter().map(|c| c / n.max(1.0)).collect(),
                    tokens_per_expert: counts,
                    router_prob_mean: probs[l].clone(),
                    dropped_fraction: dropped[l],
                    router_entropy: entropy[l],
                    skipped_fraction: skipped[l],
                    expert_bias: bias[l].clone(),
                }
            })
            .collect();
        let num_tokens = tokens.first().map_or(0, |n| n.round() as usize);
        let routing = Self {
            aux_loss: losses.first().copied().unwrap_or(f64::NAN),
            z_loss: losses.get(1).copied().unwrap_or(f64::NAN),
            num_tokens,
            layers,
        };
        (routing, extra)
    }

    /// Experts per sparse layer E (0 without layers).
    pub fn num_experts(&self) -> usize {
        self.layers.first().map_or(0, |l| l.token_fractions.len())
    }

    /// The mean over sparse layers of a per-layer value.
    pub fn layer_mean(&self, value: impl Fn(&LayerRoutingStats) -> f64) -> f64 {
        let sum: f64 = self.layers.iter().map(value).sum();
        sum / self.layers.len().max(1) as f64
    }

    /// Expert `e`'s token fraction, mean over sparse layers; the E values sum to 1.
    pub fn expert_fraction(&self, e: usize) -> f64 {
        self.layer_mean(|l| l.token_fractions.get(e).copied().unwrap_or(0.0))
    }
}
