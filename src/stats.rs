//! The losses and routing statistics a Switch layer returns (Fedus et al. 2021, §2.2 eq. 4–6;
//! Zoph et al. 2022, "ST-MoE", §3.1 eq. 5 for the router z-loss).
//!
//! With N real (non-padding) tokens, E experts, router probabilities p_i(x) and first choices:
//! - f_i = (1/N) Σ_x 1{argmax p(x) = i}: the fraction of tokens whose first choice is expert i
//!   (not differentiable);
//! - P_i = (1/N) Σ_x p_i(x): the mean router probability of expert i (differentiable);
//! - load-balancing loss = E · Σ_i f_i · P_i, equal to 1 at uniform routing and minimised by it
//!   (eq. 4); the training loss adds α times it, α = 0.01 in the paper;
//! - router z-loss = (1/N) Σ_x (log Σ_j exp(logit_j(x)))², which keeps logits small and the f32/f16
//!   softmax stable; the training loss adds β times it, β = 0.001 in ST-MoE.
//!
//! f and P are computed per layer over all real tokens of the forward call. Several layers'
//! losses are averaged ([`MoeStats::combine`]); tokens are never pooled across layers before f
//! and P are formed, which would let layers with opposite imbalances cancel out.

use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, backend::Backend};

use crate::dispatch::DispatchPlan;
use crate::expert_choice::ExpertChoicePlan;

/// Losses and routing statistics of one Switch layer's forward call.
///
/// The two losses are in the model's float type, ready to be added to the task loss; the
/// diagnostics stay in f32 (counts beyond f16's range stay exact).
#[derive(Debug, Clone)]
pub struct MoeStats<B: Backend> {
    /// Load-balancing loss E · Σ f_i · P_i `[1]`, differentiable through P. 1.0 at uniform routing.
    pub aux_loss: Tensor<B, 1>,
    /// Router z-loss, the mean squared logsumexp of the router logits `[1]`, differentiable.
    pub z_loss: Tensor<B, 1>,
    /// Tokens per expert `[E]`, f32: with token choice the real tokens' first choices before
    /// capacity (they sum to N); with expert choice the tokens each expert took.
    pub tokens_per_expert: Tensor<B, 1>,
    /// Real (non-padding) tokens N of the call `[1]`, f32.
    pub num_tokens: Tensor<B, 1>,
    /// Share of the real tokens that no expert processed (all their assignments dropped, or
    /// taken by no expert under expert choice) `[1]`, f32.
    pub skipped_fraction: Tensor<B, 1>,
    /// The router's aux-loss-free selection bias after this call `[E]`, f32 (zeros when off).
    pub expert_bias: Tensor<B, 1>,
    /// Fraction of the real tokens' k·N assignments dropped for lack of capacity `[1]`, f32.
    pub dropped_fraction: Tensor<B, 1>,
    /// Mean entropy of the router distribution over real tokens, in nats `[1]`, f32; ln E at
    /// uniform routing, 0 when every token is certain.
    pub router_entropy: Tensor<B, 1>,
    /// Mean router probability P_i of each expert over real tokens `[E]`, f32, detached.
    pub router_prob_mean: Tensor<B, 1>,
    /// Each token's first-choice expert `[T]` (token choice: its top choice before capacity;
    /// expert choice: its most probable expert), tokens in the flattened `[B·S]` order of the
    /// input; undefined for padding. Never read by the crate: it lets a caller attribute routing
    /// to its own token labels (domain, position, …).
    pub token_expert: Tensor<B, 1, Int>,
    /// Experts that processed each token `[T]` (token choice: 0..k, 0 when every assignment was
    /// dropped; expert choice: 0..E), 0 for padding; the same order as `token_expert`.
    pub token_experts_used: Tensor<B, 1, Int>,
}

/// What a dispatch plan counted, in the form [`MoeStats::new`] reads.
#[derive(Debug, Clone)]
pub struct RoutingCounts<B: Backend> {
    /// The numerator of the balance fractions f_i `[E]` (first choices, or tokens taken).
    pub per_expert: Tensor<B, 1, Int>,
    /// Assignments of real tokens `[1]`.
    pub num_routed: Tensor<B, 1, Int>,
    /// Assignments that got a slot `[1]`.
    pub num_kept: Tensor<B, 1, Int>,
    /// Real tokens that no expert processed `[1]`.
    pub num_skipped: Tensor<B, 1, Int>,
    /// Each token's first-choice (or most probable) expert `[T]`.
    pub token_expert: Tensor<B, 1, Int>,
    /// Experts that processed each token `[T]`, 0 for padding.
    pub token_experts_used: Tensor<B, 1, Int>,
}

impl<B: Backend> From<&DispatchPlan<B>> for RoutingCounts<B> {
    fn from(plan: &DispatchPlan<B>) -> Self {
        Self {
            per_expert: plan.first_choice_counts.clone(),
            num_routed: plan.num_routed.clone(),
            num_kept: plan.num_kept.clone(),
            num_skipped: plan.num_skipped.clone(),
            token_expert: plan.first_choice.clone(),
            token_experts_used: plan.kept_per_token.clone(),
        }
    }
}

impl<B: Backend> From<&ExpertChoicePlan<B>> for RoutingCounts<B> {
    fn from(plan: &ExpertChoicePlan<B>) -> Self {
        let taken = plan.tokens_per_expert.clone().sum(); // [1]
        Self {
            per_expert: plan.tokens_per_expert.clone(),
            num_routed: taken.clone(),
            num_kept: taken,
            num_skipped: plan.num_skipped.clone(),
            token_expert: plan.preferred_expert.clone(),
            token_experts_used: plan.experts_per_token.clone(),
        }
    }
}

/// Over which tokens [`MoeStats::with_balance`] takes the load-balancing loss's fᵢ and Pᵢ (see
/// [`crate::balance`]).
#[derive(Debug, Clone)]
pub enum BalanceTokens<B: Backend> {
    /// The call's tokens.
    Batch,
    /// Each of the call's sequences apart (the T tokens are `sequences` × S, sequence-major);
    /// the loss is the mean over the sequences that hold a real token.
    Sequence {
        /// B, the number of sequences.
        sequences: usize,
    },
    /// fᵢ from these first-choice counts `[E]` (every shard's, summed), Pᵢ from the call.
    Counts(Tensor<B, 1>),
}

impl<B: Backend> MoeStats<B> {
    /// Computes the statistics of one routing decision, the balance loss over the call's tokens
    /// ([`BalanceTokens::Batch`]).
    ///
    /// # Shapes
    /// - logits, probs: `[T, E]` (f32); probs rows sum to 1
    /// - counts: see [`RoutingCounts`]
    /// - expert_bias: `[E]`, f32
    /// - real: `[T]`, true for non-padding tokens (`None`: all real)
    pub fn new(
        logits: Tensor<B, 2>,
        probs: Tensor<B, 2>,
        counts: RoutingCounts<B>,
        expert_bias: Tensor<B, 1>,
        real: Option<Tensor<B, 1, Bool>>,
        loss_dtype: FloatDType,
    ) -> Self {
        Self::with_balance(
            logits,
            probs,
            counts,
            expert_bias,
            real,
            loss_dtype,
            BalanceTokens::Batch,
        )
    }

    /// [`new`](Self::new) with the balance loss over `balance`'s tokens (see
    /// [`crate::balance`]): per sequence, or with fᵢ from counts summed over data-parallel
    /// shards. Every statistic but the loss is the call's own.
    ///
    /// # Shapes
    /// As [`new`](Self::new); for [`BalanceTokens::Counts`] the counts are `[E]`.
    pub fn with_balance(
        logits: Tensor<B, 2>,
        probs: Tensor<B, 2>,
        counts: RoutingCounts<B>,
        expert_bias: Tensor<B, 1>,
        real: Option<Tensor<B, 1, Bool>>,
        loss_dtype: FloatDType,
        balance: BalanceTokens<B>,
    ) -> Self {
        let [t, e] = probs.dims();
        let device = probs.device();
        let weight = match real {
            Some(real) => real.float().cast(FloatDType::F32).reshape([t, 1]), // [T, 1]
            None => Tensor::<B, 2>::ones([t, 1], (&device, DType::F32)),
        };
        let num_tokens = weight.clone().sum(); // [1], N
        let n = num_tokens.clone().clamp_min(1.0); // [1] (≥ 1 so an all-padding batch gives 0s)

        let per_expert = counts.per_expert.float().cast(FloatDType::F32); // [E]
        let p_mean = (probs.clone() * weight.clone()).sum_dim(0).reshape([e]) / n.clone(); // [E]
        let aux_loss = match balance {
            BalanceTokens::Batch => balance_loss(per_expert.clone(), p_mean.clone()),
            BalanceTokens::Counts(global) => {
                balance_loss(global.cast(FloatDType::F32), p_mean.clone())
            }
            BalanceTokens::Sequence { sequences } => sequence_balance_loss(
                probs.clone(),
                counts.token_expert.clone(),
                weight.clone(),
                sequences,
            ),
        }; // [1]

        let lse = log_sum_exp(logits); // [T, 1]
        let z_loss = (lse.powi_scalar(2) * weight.clone()).sum() / n.clone(); // [1]

        let p = probs.detach();
        let plogp = p.clone() * p.clamp_min(1e-30).log(); // [T, E]; 0·log 0 = 0
        let entropy = plogp.sum_dim(1).neg(); // [T, 1]
        let router_entropy = (entropy * weight).sum() / n.clone(); // [1]

        let routed = counts.num_routed.float().cast(FloatDType::F32); // [1]
        let kept = counts.num_kept.float().cast(FloatDType::F32); // [1]
        let dropped_fraction = (routed.clone() - kept) / routed.clamp_min(1.0); // [1]
        let skipped = counts.num_skipped.float().cast(FloatDType::F32); // [1]

        Self {
            aux_loss: aux_loss.cast(loss_dtype),
            z_loss: z_loss.cast(loss_dtype),
            tokens_per_expert: per_expert,
            num_tokens,
            skipped_fraction: skipped / n,
            expert_bias: expert_bias.detach(),
            dropped_fraction,
            router_entropy,
            router_prob_mean: p_mean.detach(),
            token_expert: counts.token_expert,
            token_experts_used: counts.token_experts_used,
        }
    }

    /// The same values cut from the autodiff graph: what a training step hands to its metrics
    /// after the backward pass, so the graph is not kept alive.
    pub fn detach(self) -> Self {
        Self {
            aux_loss: self.aux_loss.detach(),
            z_loss: self.z_loss.detach(),
            tokens_per_expert: self.tokens_per_expert.detach(),
            num_tokens: self.num_tokens.detach(),
            skipped_fraction: self.skipped_fraction.detach(),
            expert_bias: self.expert_bias.detach(),
            dropped_fraction: self.dropped_fraction.detach(),
            router_entropy: self.router_entropy.detach(),
            router_prob_mean: self.router_prob_mean.detach(),
            token_expert: self.token_expert,
            token_experts_used: self.token_experts_used,
        }
    }

    /// α·aux + β·z `[1]`: the term this layer adds to the training loss.
    pub fn weighted_loss(&self, weights: MoeLossWeights) -> Tensor<B, 1> {
        weights.apply(self.aux_loss.clone(), self.z_loss.clone())
    }

    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.tokens_per_expert.dims()[0]
    }

    /// Per-expert token fractions f_i = count_i / N `[E]`, f32 (all 0 when N = 0).
    pub fn token_fractions(&self) -> Tensor<B, 1> {
        let n = self.tokens_per_expert.clone().sum().clamp_min(1.0); // [1]
        self.tokens_per_expert.clone() / n
    }

    /// Combines the stats of several layers: losses are averaged over layers, counts and
    /// diagnostics are kept per layer.
    ///
    /// # Panics
    /// If `layers` is empty.
    pub fn combine(layers: Vec<MoeStats<B>>) -> CombinedMoeStats<B> {
        assert!(
            !layers.is_empty(),
            "MoeStats::combine: no layer stats to combine"
        );
        let mean = |parts: Vec<Tensor<B, 1>>| Tensor::cat(parts, 0).mean(); // [1]
        let aux_loss = mean(layers.iter().map(|s| s.aux_loss.clone()).collect());
        let z_loss = mean(layers.iter().map(|s| s.z_loss.clone()).collect());
        CombinedMoeStats {
            aux_loss,
            z_loss,
            layers,
        }
    }
}

/// The weights of the routing losses in a training objective:
/// `loss = task_loss + aux · load_balancing_loss + z · router_z_loss`.
///
/// ```
/// # use switch_moe::MoeLossWeights;
/// let w = MoeLossWeights::default(); // the papers' α = 0.01, β = 0.001
/// assert_eq!((w.aux, w.z), (0.01, 0.001));
/// let no_balancing = MoeLossWeights { aux: 0.0, ..w };
/// # let _ = no_balancing;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MoeLossWeights {
    /// α, the weight of the load-balancing loss.
    pub aux: f64,
    /// β, the weight of the router z-loss.
    pub z: f64,
}

impl MoeLossWeights {
    /// The papers' weights: α = 0.01 (Switch Transformer §2.2, "sufficiently large to ensure
    /// load balancing while small enough to not overwhelm the primary cross-entropy objective")
    /// and β = 0.001 (ST-MoE §3.1).
    pub const PAPER: Self = Self {
        aux: 0.01,
        z: 0.001,
    };

    /// aux·`aux_loss` + z·`z_loss` `[1]`.
    pub fn apply<B: Backend>(&self, aux_loss: Tensor<B, 1>, z_loss: Tensor<B, 1>) -> Tensor<B, 1> {
        aux_loss.mul_scalar(self.aux) + z_loss.mul_scalar(self.z)
    }
}

impl Default for MoeLossWeights {
    fn default() -> Self {
        Self::PAPER
    }
}

/// Stats of several sparse layers: mean losses and the per-layer detail.
#[derive(Debug, Clone)]
pub struct CombinedMoeStats<B: Backend> {
    /// Mean over layers of the load-balancing losses `[1]`.
    pub aux_loss: Tensor<B, 1>,
    /// Mean over layers of the router z-losses `[1]`.
    pub z_loss: Tensor<B, 1>,
    /// The per-layer stats, in layer order.
    pub layers: Vec<MoeStats<B>>,
}

impl<B: Backend> CombinedMoeStats<B> {
    /// The same values cut from the autodiff graph (see [`MoeStats::detach`]).
    pub fn detach(self) -> Self {
        Self {
            aux_loss: self.aux_loss.detach(),
            z_loss: self.z_loss.detach(),
            layers: self.layers.into_iter().map(MoeStats::detach).collect(),
        }
    }

    /// α·mean aux + β·mean z `[1]`: the term the sparse layers add to the training loss.
    pub fn weighted_loss(&self, weights: MoeLossWeights) -> Tensor<B, 1> {
        weights.apply(self.aux_loss.clone(), self.z_loss.clone())
    }

    /// Per-layer tokens per expert `[L, E]` (all layers must have the same E).
    pub fn tokens_per_expert(&self) -> Tensor<B, 2> {
        self.stack_layers(|s| s.tokens_per_expert.clone())
    }

    /// Per-layer token fractions `[L, E]`; each row sums to 1 (when the batch has a real token).
    pub fn token_fractions(&self) -> Tensor<B, 2> {
        self.stack_layers(MoeStats::token_fractions)
    }

    /// Per-layer dropped fractions `[L]`.
    pub fn dropped_fraction(&self) -> Tensor<B, 1> {
        self.cat_layers(|s| s.dropped_fraction.clone())
    }

    /// Per-layer shares of real tokens that no expert processed `[L]`.
    pub fn skipped_fraction(&self) -> Tensor<B, 1> {
        self.cat_layers(|s| s.skipped_fraction.clone())
    }

    /// Per-layer real-token counts `[L]`.
    pub fn num_tokens(&self) -> Tensor<B, 1> {
        self.cat_layers(|s| s.num_tokens.clone())
    }

    /// Per-layer mean router probabilities `[L, E]`.
    pub fn router_prob_mean(&self) -> Tensor<B, 2> {
        self.stack_layers(|s| s.router_prob_mean.clone())
    }

    /// Per-layer mean router entropies `[L]`.
    pub fn router_entropy(&self) -> Tensor<B, 1> {
        self.cat_layers(|s| s.router_entropy.clone())
    }

    /// Per-layer aux-loss-free selection biases `[L, E]`.
    pub fn expert_bias(&self) -> Tensor<B, 2> {
        self.stack_layers(|s| s.expert_bias.clone())
    }

    /// One `[1]` value per layer, concatenated `[L]`.
    fn cat_layers(&self, value: impl Fn(&MoeStats<B>) -> Tensor<B, 1>) -> Tensor<B, 1> {
        Tensor::cat(self.layers.iter().map(value).collect(), 0)
    }

    /// One `[E]` vector per layer, stacked `[L, E]`.
    fn stack_layers(&self, value: impl Fn(&MoeStats<B>) -> Tensor<B, 1>) -> Tensor<B, 2> {
        Tensor::stack(self.layers.iter().map(value).collect(), 0)
    }
}

/// E · Σᵢ fᵢ·Pᵢ with fᵢ = countsᵢ / Σ counts `[1]`.
///
/// # Shapes
/// - counts: `[E]` (first choices); p_mean: `[E]`
fn balance_loss<B: Backend>(counts: Tensor<B, 1>, p_mean: Tensor<B, 1>) -> Tensor<B, 1> {
    let e = counts.dims()[0];
    let f = counts.clone() / counts.sum().clamp_min(1.0); // [E], sums to 1
    (f * p_mean).sum().mul_scalar(e as f64) // [1]
}

/// The sequence-wise balance loss: E · Σᵢ fᵢ·Pᵢ of each sequence's real tokens, averaged over
/// the sequences that hold one (DeepSeek-V3's complementary loss with Switch's first-choice fᵢ).
///
/// # Shapes
/// - probs: `[T, E]`, T = sequences · S; first: `[T]` (first-choice experts); weight: `[T, 1]`
///   (1 real, 0 padding)
/// - output: `[1]`
fn sequence_balance_loss<B: Backend>(
    probs: Tensor<B, 2>,
    first: Tensor<B, 1, Int>,
    weight: Tensor<B, 2>,
    sequences: usize,
) -> Tensor<B, 1> {
    let [t, e] = probs.dims();
    let (b, s) = (sequences.max(1), t / sequences.max(1));
    let device = probs.device();
    let experts = Tensor::<B, 1, Int>::arange(0..e as i64, &device).reshape([1, e]); // [1, E]
    let chosen = first
        .reshape([t, 1])
        .equal(experts)
        .float()
        .cast(FloatDType::F32)
        * weight.clone(); // [T, E], real tokens' first choices
    let real = weight.clone().reshape([b, s]).sum_dim(1); // [B, 1]
    let per = real.clone().clamp_min(1.0); // [B, 1]
    let f = chosen.reshape([b, s, e]).sum_dim(1).reshape([b, e]) / per.clone(); // [B, E]
    let p = (probs * weight)
        .reshape([b, s, e])
        .sum_dim(1)
        .reshape([b, e])
        / per; // [B, E]
    let per_sequence = (f * p).sum_dim(1).mul_scalar(e as f64); // [B, 1]
    let has_tokens = real.greater_elem(0.0).float(); // [B, 1]
    (per_sequence * has_tokens.clone()).sum() / has_tokens.sum().clamp_min(1.0) // [1]
}

/// log Σ_j exp(x_j) along the last dim, stabilised by the (constant) row maximum.
///
/// # Shapes
/// - x: `[T, E]`
/// - output: `[T, 1]`
pub fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let max = x.clone().detach().max_dim(1); // [T, 1]
    (x - max.clone()).exp().sum_dim(1).log() + max // [T, 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::tensor::TensorData;

    #[test]
    fn log_sum_exp_is_exact_and_stable_for_large_logits() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 1000.0, 1000.0, -5.0, 2.0], [3, 2]),
            &device,
        );
        let lse: Vec<f32> = log_sum_exp(x).into_data().to_vec().unwrap();
        // ln 2; 1000 + ln 2 (a naive exp overflows f32); ln(e⁻⁵ + e²) = 2.000911.
        let expected = [
            2f64.ln(),
            1000.0 + 2f64.ln(),
            ((-5f64).exp() + 2f64.exp()).ln(),
        ];
        for (got, want) in lse.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-4, "{lse:?} vs {expected:?}");
        }
    }

    #[test]
    fn loss_weights_are_the_papers() {
        assert_eq!(
            MoeLossWeights::default(),
            MoeLossWeights {
                aux: 0.01,
                z: 0.001
            }
        );
        let device = Default::default();
        let one = Tensor::<B, 1>::from_floats([1.0], &device);
        let two = Tensor::<B, 1>::from_floats([2.0], &device);
        let total: f32 = MoeLossWeights::PAPER.apply(one, two).into_scalar();
        assert!((total - 0.012).abs() < 1e-7);
    }
}
