//! A Transformer encoder layer whose feed-forward block is a Switch (mixture-of-experts) block
//! (Fedus et al. 2021, Fig. 2), with burn-nn 0.21's `TransformerEncoderLayer` semantics otherwise:
//! the same attention, dropout placement and pre-/post-norm data flow.
//!
//! For autoregressive decoding, [`SwitchEncoderLayer::forward_autoregressive_inference`] mirrors
//! burn-nn's `TransformerEncoderLayer::forward_autoregressive_inference`: the whole sequence comes
//! in at every step, the cache holds the earlier positions' results, and only the newest position
//! is computed (attention through burn-nn's `MhaCache`; norms and the Switch block through
//! [`SwitchEncoderLayerAutoregressiveCache`]).

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::attention::{MhaCache, MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, check};
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};
use crate::noise::dropout;
use crate::stats::MoeStats;

/// Configuration of a [`SwitchEncoderLayer`]: burn-nn's attention and residual settings (as in
/// `TransformerEncoderConfig`) around one [`SwitchFeedForwardConfig`], which holds every MoE
/// setting (and d_model, d_ff).
///
/// ```
/// use switch_moe::SwitchEncoderLayerConfig;
/// // d_model 64, d_ff 256, 4 heads, 8 experts; then MoE settings on the nested config.
/// let config = SwitchEncoderLayerConfig::new(64, 256, 4, 8)
///     .with_norm_first(true)
///     .map_moe(|moe| moe.with_top_k(2).with_capacity_factor(1.0));
/// assert_eq!(config.moe.top_k, 2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchEncoderLayerConfig {
    /// Attention heads; must divide d_model.
    pub n_heads: usize,
    /// The mixture-of-experts block: d_model, d_ff and every routing and expert setting.
    pub moe: SwitchFeedForwardConfig,
    /// Dropout of the attention scores and of both residual branches. Default 0.1 (burn-nn).
    /// Expert dropout is [`SwitchFeedForwardConfig::expert_dropout`].
    pub dropout: f64,
    /// Pre-norm (true) or post-norm (false, default; burn-nn and the original Transformer).
    pub norm_first: bool,
    /// Quiet softmax in attention. Default false (burn-nn).
    pub quiet_softmax: bool,
    /// Initializer of the attention (and, in a [`SwitchEncoder`](crate::SwitchEncoder), dense
    /// FFN) weights. Default Kaiming uniform, gain 1/√3 (burn-nn). Router and experts use the
    /// paper's truncated normal with [`SwitchFeedForwardConfig::init_scale`].
    pub initializer: Initializer,
    /// LayerNorm epsilon. Default 1e-5 (burn-nn).
    pub layer_norm_eps: f64,
}

impl Config for SwitchEncoderLayerConfig {}

impl std::fmt::Display for SwitchEncoderLayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

impl SwitchEncoderLayerConfig {
    /// A layer of width `d_model` with `n_heads` heads and `num_experts` experts of hidden width
    /// `d_ff`; every other setting at its default (burn-nn's for attention, the paper's for MoE).
    pub fn new(d_model: usize, d_ff: usize, n_heads: usize, num_experts: usize) -> Self {
        Self::from_moe(
            n_heads,
            SwitchFeedForwardConfig::new(d_model, d_ff, num_experts),
        )
    }

    /// A layer around an existing MoE config, attention settings at burn-nn's defaults.
    pub fn from_moe(n_heads: usize, moe: SwitchFeedForwardConfig) -> Self {
        Self {
            n_heads,
            moe,
            dropout: 0.1,
            norm_first: false,
            quiet_softmax: false,
            initializer: Initializer::KaimingUniform {
                gain: 1.0 / 3.0f64.sqrt(),
                fan_out_only: false,
            },
            layer_norm_eps: 1e-5,
        }
    }

    /// Model width d (from the MoE config).
    pub fn d_model(&self) -> usize {
        self.moe.d_model
    }

    /// Sets [`dropout`](Self::dropout) (attention scores and residual branches).
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets [`norm_first`](Self::norm_first).
    pub fn with_norm_first(mut self, norm_first: bool) -> Self {
        self.norm_first = norm_first;
        self
    }

    /// Sets [`quiet_softmax`](Self::quiet_softmax).
    pub fn with_quiet_softmax(mut self, quiet_softmax: bool) -> Self {
        self.quiet_softmax = quiet_softmax;
        self
    }

    /// Sets [`initializer`](Self::initializer).
    pub fn with_initializer(mut self, initializer: Initializer) -> Self {
        self.initializer = initializer;
        self
    }

    /// Sets [`layer_norm_eps`](Self::layer_norm_eps).
    pub fn with_layer_norm_eps(mut self, layer_norm_eps: f64) -> Self {
        self.layer_norm_eps = layer_norm_eps;
        self
    }

    /// Replaces the MoE config.
    pub fn with_moe(mut self, moe: SwitchFeedForwardConfig) -> Self {
        self.moe = moe;
        self
    }

    /// Changes the MoE config with its own builders, e.g. `.map_moe(|m| m.with_top_k(2))`.
    pub fn map_moe(
        mut self,
        f: impl FnOnce(SwitchFeedForwardConfig) -> SwitchFeedForwardConfig,
    ) -> Self {
        self.moe = f(self.moe);
        self
    }

    /// Checks every field; the error names the config, the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchEncoderLayerConfig";
        self.moe.validate()?;
        let d_model = self.moe.d_model;
        check::positive(C, "n_heads", self.n_heads)?;
        if !d_model.is_multiple_of(self.n_heads) {
            return Err(Error::config(
                C,
                "n_heads",
                self.n_heads,
                format!("must divide d_model = {d_model}"),
            ));
        }
        check::probability(C, "dropout", self.dropout)?;
        check::positive_f64(C, "layer_norm_eps", self.layer_norm_eps)
    }

    /// Builds the layer. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchEncoderLayer<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let norm = || {
            LayerNormConfig::new(self.d_model())
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        SwitchEncoderLayer {
            mha: MultiHeadAttentionConfig::new(self.d_model(), self.n_heads)
                .with_initializer(self.initializer.clone())
                .with_dropout(self.dropout)
                .with_quiet_softmax(self.quiet_softmax)
                .init(device),
            moe: self.moe.init(device),
            norm_attn: norm(),
            norm_ffn: norm(),
            dropout: DropoutConfig::new(self.dropout).init(),
            norm_first: self.norm_first,
        }
    }
}

/// A Transformer encoder layer with a Switch feed-forward block.
///
/// Post-norm: `x = norm_attn(x + drop(mha(x)))`, then `x = norm_ffn(x + drop(moe(x)))`.
/// Pre-norm: `x = x + drop(mha(norm_attn(x)))`, then `x = x + drop(moe(norm_ffn(x)))`.
/// (burn-nn's `TransformerEncoderLayer` calls these `norm_1`/`norm_2` in post-norm and
/// `norm_2`/`norm_1` in pre-norm.)
#[derive(Module, Debug)]
pub struct SwitchEncoderLayer<B: Backend> {
    /// Multi-head self-attention.
    pub mha: MultiHeadAttention<B>,
    /// The mixture-of-experts feed-forward block.
    pub moe: SwitchFeedForward<B>,
    /// LayerNorm of the attention sub-block.
    pub norm_attn: LayerNorm<B>,
    /// LayerNorm of the feed-forward sub-block.
    pub norm_ffn: LayerNorm<B>,
    /// Dropout on both residual branches.
    pub dropout: Dropout,
    /// Pre-norm (true) or post-norm (false).
    pub norm_first: bool,
}

impl<B: Backend> SwitchEncoderLayer<B> {
    /// Self-attention then the Switch block, each with its residual connection and norm.
    ///
    /// # Shapes
    /// - input: `[B, S, d]`
    /// - mask_pad: `[B, S]`, true at padding positions (masked in attention, not routed)
    /// - mask_attn: `[B, S, S]`, true where attention is blocked (e.g. causal)
    /// - output: `[B, S, d]` and the MoE block's stats
    pub fn forward(
        &self,
        input: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        mask_attn: Option<Tensor<B, 3, Bool>>,
    ) -> (Tensor<B, 3>, MoeStats<B>) {
        self.forward_with(input, mask_pad, mask_attn, None)
    }

    /// One autoregressive decoding step, as burn-nn's
    /// `TransformerEncoderLayer::forward_autoregressive_inference`: the whole sequence comes in,
    /// the cache supplies the results of every position but the newest, and only the newest
    /// position goes through the norms, the attention projections and the Switch block.
    ///
    /// The first call on an empty cache computes every position (e.g. a whole prompt, with a
    /// causal `mask_attn`); every later call must add exactly one position. Passing the causal
    /// mask at every step is harmless: the newest position sees them all.
    ///
    /// **Routing.** The Switch block routes only the positions computed in this call, with its
    /// own capacity rule. The returned [`MoeStats`] are theirs: the whole input on the first
    /// call, the newest position afterwards. A single new token (B = 1) is never dropped: the
    /// capacity is at least 1 and its k choices are distinct experts. With B > 1 the B newest
    /// tokens share the capacity and can be dropped unless
    /// [`dropless`](crate::SwitchFeedForward::dropless) is set; the cached and the full forward
    /// agree exactly only when nothing is dropped, since the full forward shares capacity over
    /// all B·S tokens.
    ///
    /// Meant for inference (no autodiff): dropout and router jitter would apply to the newest
    /// position only.
    ///
    /// # Shapes
    /// - input: `[B, S, d]`, S = the cached positions + 1 (any S on an empty cache)
    /// - mask_pad: `[B, S]`, true at padding positions
    /// - mask_attn: `[B, S, S]`, true where attention is blocked
    /// - output: `[B, S, d]` (earlier positions from the cache) and the stats of the positions
    ///   routed in this call
    pub fn forward_autoregressive_inference(
        &self,
        input: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        mask_attn: Option<Tensor<B, 3, Bool>>,
        cache: &mut SwitchEncoderLayerAutoregressiveCache<B>,
    ) -> (Tensor<B, 3>, MoeStats<B>) {
        self.forward_with(input, mask_pad, mask_attn, Some(cache))
    }

    /// The one data flow of [`forward`](Self::forward) (no cache) and
    /// [`forward_autoregressive_inference`](Self::forward_autoregressive_inference).
    fn forward_with(
        &self,
        input: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
        mask_attn: Option<Tensor<B, 3, Bool>>,
        mut cache: Option<&mut SwitchEncoderLayerAutoregressiveCache<B>>,
    ) -> (Tensor<B, 3>, MoeStats<B>) {
        let [batch, seq, _] = input.dims();
        if let Some(cache) = cache.as_deref() {
            cache.check_step(seq);
        }
        let x = input;
        let attn_in = if self.norm_first {
            per_position(
                cache.as_deref_mut().map(|c| &mut c.norm_attn),
                x.clone(),
                |x| self.norm_attn.forward(x),
            )
        } else {
            x.clone()
        };
        let attn = match cache.as_deref_mut() {
            Some(c) => {
                let mut mha_input = MhaInput::self_attn(attn_in);
                if let Some(mask) = mask_pad.clone() {
                    mha_input = mha_input.mask_pad(mask);
                }
                if let Some(mask) = mask_attn {
                    mha_input = mha_input.mask_attn(mask);
                }
                self.mha.forward_cache(mha_input, &mut c.mha).context // [B, S, d]
            }
            None => self_attention(&self.mha, attn_in, mask_pad.clone(), mask_attn), // [B, S, d]
        };
        let mut x = x + dropout(attn, self.dropout.prob);
        if !self.norm_first {
            x = per_position(cache.as_deref_mut().map(|c| &mut c.norm_attn), x, |x| {
                self.norm_attn.forward(x)
            });
        }

        let ffn_in = if self.norm_first {
            per_position(
                cache.as_deref_mut().map(|c| &mut c.norm_ffn),
                x.clone(),
                |x| self.norm_ffn.forward(x),
            )
        } else {
            x.clone()
        };
        // The Switch block routes only the positions not cached yet, with their padding mask.
        let (new_in, start) = match cache.as_deref_mut() {
            Some(c) => c.moe.uncached(ffn_in), // [B, S - start, d]
            None => (ffn_in, 0),
        };
        let new_pad = mask_pad.map(|m| {
            if start == 0 {
                m
            } else {
                m.slice([0..batch, start..seq]) // [B, S - start]
            }
        });
        let (ffn, stats) = self.moe.forward(new_in, new_pad); // [B, S - start, d]
        let ffn = match cache.as_deref_mut() {
            Some(c) => c.moe.append(ffn), // [B, S, d]
            None => ffn,
        };
        let mut x = x + dropout(ffn, self.dropout.prob);
        if !self.norm_first {
            x = per_position(cache.map(|c| &mut c.norm_ffn), x, |x| {
                self.norm_ffn.forward(x)
            });
        }
        (x, stats)
    }
}

/// burn-nn 0.21's `MultiHeadAttention::forward` (self-attention), its dropout on the scores
/// drawn by [`crate::noise::dropout`]: the same arithmetic — projections, q·kᵀ / √d_k, dropout on
/// the scores, padding and attention masks filled with `min_float`, softmax (or quiet softmax),
/// the weighted values, the output projection — with the noise of this crate's generator.
///
/// # Shapes
/// - x: `[B, S, d]` (query = key = value), masks `[B, S]` / `[B, S, S]`
/// - output: `[B, S, d]`
pub(crate) fn self_attention<B: Backend>(
    mha: &MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    mask_pad: Option<Tensor<B, 2, Bool>>,
    mask_attn: Option<Tensor<B, 3, Bool>>,
) -> Tensor<B, 3> {
    let [batch, seq, d] = x.dims();
    let heads = |linear: &burn::nn::Linear<B>, x: Tensor<B, 3>| {
        linear
            .forward(x)
            .reshape([batch, seq, mha.n_heads, mha.d_k])
            .swap_dims(1, 2) // [B, H, S, d_k]
    };
    let q = heads(&mha.query, x.clone());
    let k = heads(&mha.key, x.clone());
    let v = heads(&mha.value, x);
    let scores = q.matmul(k.transpose()).div_scalar((mha.d_k as f32).sqrt()); // [B, H, S, S]
    let mut scores = dropout(scores, mha.dropout.prob);
    if let Some(mask) = mask_pad {
        scores = scores.mask_fill(mask.reshape([batch, 1, 1, seq]), mha.min_float);
    }
    if let Some(mask) = mask_attn {
        scores = scores.mask_fill(mask.reshape([batch, 1, seq, seq]), mha.min_float);
    }
    let weights = if mha.quiet_softmax {
        burn::tensor::activation::quiet_softmax(scores, 3)
    } else {
        burn::tensor::activation::softmax(scores, 3)
    };
    let context = weights.matmul(v).swap_dims(1, 2).reshape([batch, seq, d]); // [B, S, d]
    mha.output.forward(context)
}

/// burn-nn 0.21's `TransformerEncoderLayer::forward` (a dense layer of a [`SwitchEncoder`]
/// (crate::SwitchEncoder)) with [`self_attention`] and this crate's dropout: pre-norm
/// `x + drop(mha(norm_2(x)))`, `x + drop(ffn(norm_1(x)))`; post-norm `norm_1(x + drop(mha(x)))`,
/// `norm_2(x + drop(ffn(x)))`; the FFN's own dropout after its activation.
///
/// # Shapes
/// - x: `[B, S, d]`, masks `[B, S]` / `[B, S, S]`; output `[B, S, d]`
pub(crate) fn dense_layer_forward<B: Backend>(
    layer: &burn::nn::transformer::TransformerEncoderLayer<B>,
    x: Tensor<B, 3>,
    mask_pad: Option<Tensor<B, 2, Bool>>,
    mask_attn: Option<Tensor<B, 3, Bool>>,
) -> Tensor<B, 3> {
    let p = layer.dropout.prob;
    let attention = |h: Tensor<B, 3>| {
        dropout(
            self_attention(&layer.mha, h, mask_pad.clone(), mask_attn.clone()),
            p,
        )
    };
    let ffn = |h: Tensor<B, 3>| {
        let f = &layer.pwff;
        let hidden = dropout(
            f.activation.forward(f.linear_inner.forward(h)),
            f.dropout.prob,
        );
        dropout(f.linear_outer.forward(hidden), p)
    };
    if layer.norm_first {
        let x = x.clone() + attention(layer.norm_2.forward(x));
        x.clone() + ffn(layer.norm_1.forward(x))
    } else {
        let x = layer.norm_1.forward(x.clone() + attention(x));
        layer.norm_2.forward(x.clone() + ffn(x))
    }
}

/// What [`SwitchEncoderLayer::forward_autoregressive_inference`] keeps between steps: burn-nn's
/// attention cache (projected queries, keys, values and outputs) and the results of both norms
/// and of the Switch block at every position computed so far.
///
/// Start each sequence with [`empty`](Self::empty); a cache belongs to one layer and one
/// sequence (its positions are fixed once computed).
pub struct SwitchEncoderLayerAutoregressiveCache<B: Backend> {
    mha: MhaCache<B>,
    norm_attn: PositionCache<B>,
    norm_ffn: PositionCache<B>,
    moe: PositionCache<B>,
}

impl<B: Backend> SwitchEncoderLayerAutoregressiveCache<B> {
    /// A cache holding no position.
    pub fn empty() -> Self {
        Self {
            mha: MhaCache::autoregressive(),
            norm_attn: PositionCache::empty(),
            norm_ffn: PositionCache::empty(),
            moe: PositionCache::empty(),
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.moe.len()
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Panics unless an input of `seq` positions is the next step: any length on an empty
    /// cache, one position more than cached afterwards. Checked before anything is cached, so
    /// a refused step leaves the cache as it was.
    fn check_step(&self, seq: usize) {
        let cached = self.len();
        assert!(
            cached == 0 || seq == cached + 1,
            "SwitchEncoderLayer: an autoregressive step must add exactly one position \
             (the cache holds {cached}, the input has {seq}); start a new cache for a new sequence"
        );
    }
}

impl<B: Backend> Default for SwitchEncoderLayerAutoregressiveCache<B> {
    fn default() -> Self {
        Self::empty()
    }
}

/// The results of a position-wise computation for the positions seen so far, so that a step
/// computes only the newest one. burn-nn's `TensorCache` does this, but its
/// `forward_autoregressive` is crate-private; this one also tells the caller where the new
/// positions start (to slice the padding mask for the Switch block).
struct PositionCache<B: Backend> {
    /// `[B, S_cached, d]`, `None` before the first step.
    value: Option<Tensor<B, 3>>,
}

impl<B: Backend> PositionCache<B> {
    fn empty() -> Self {
        Self { value: None }
    }

    fn len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.dims()[1])
    }

    /// The positions of `input` not cached yet and the index of the first: every position on an
    /// empty cache, the newest afterwards (the layer checked that exactly one was added).
    fn uncached(&self, input: Tensor<B, 3>) -> (Tensor<B, 3>, usize) {
        let cached = self.len();
        if cached == 0 {
            return (input, 0);
        }
        let [batch, seq, d] = input.dims();
        (input.slice([0..batch, cached..seq, 0..d]), cached) // [B, 1, d]
    }

    /// Appends newly computed positions and returns all of them.
    fn append(&mut self, new: Tensor<B, 3>) -> Tensor<B, 3> {
        let all = match self.value.take() {
            Some(old) => Tensor::cat(vec![old, new], 1), // [B, S, d]
            None => new,
        };
        self.value = Some(all.clone());
        all
    }
}

/// `f` over every position of `input`; with a cache, over the uncached positions only.
fn per_position<B: Backend>(
    cache: Option<&mut PositionCache<B>>,
    input: Tensor<B, 3>,
    f: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    match cache {
        Some(cache) => {
            let (new, _) = cache.uncached(input);
            cache.append(f(new))
        }
        None => f(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend;

    #[test]
    fn printing_a_layer_shows_the_moe_settings_and_parameter_count() {
        let device = Default::default();
        let layer = SwitchEncoderLayerConfig::new(8, 16, 2, 4)
            .map_moe(|m| m.with_top_k(2).with_capacity_factor(1.5))
            .init::<TestBackend>(&device);
        let text = layer.to_string();
        // Router 8·4 + experts 2·4·8·16 = 32 + 1024 parameters in the MoE block.
        for needle in [
            "num_experts: 4",
            "top_k: 2",
            "capacity_factor: 1.5",
            "eval_capacity_factor: 2",
            "dropless: false",
            "params: 1056",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn norm_placement_changes_where_the_residual_is_normalised() {
        // Pre- and post-norm layers with the same weights differ (the norm sits elsewhere), and
        // both keep the input's shape.
        let device = Default::default();
        let config = SwitchEncoderLayerConfig::new(8, 16, 2, 2).with_dropout(0.0);
        let post: SwitchEncoderLayer<TestBackend> = config.clone().init(&device);
        let mut pre = post.clone();
        pre.norm_first = true;
        let x = Tensor::<TestBackend, 3>::random(
            [2, 3, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let (a, _) = post.forward(x.clone(), None, None);
        let (b, _) = pre.forward(x, None, None);
        assert_eq!(a.dims(), [2, 3, 8]);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff > 1e-4, "pre- and post-norm agree: {diff}");
    }
}
