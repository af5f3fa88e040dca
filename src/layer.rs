//! A Transformer encoder layer whose feed-forward block is a Switch (mixture-of-experts) block
//! (Fedus et al. 2021, Fig. 2), with burn-nn 0.21's `TransformerEncoderLayer` semantics otherwise:
//! the same attention, dropout placement and pre-/post-norm data flow.

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, check};
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};
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
        let x = input;
        let attn_in = if self.norm_first {
            self.norm_attn.forward(x.clone())
        } else {
            x.clone()
        };
        let mut mha_input = MhaInput::self_attn(attn_in);
        if let Some(mask) = mask_pad.clone() {
            mha_input = mha_input.mask_pad(mask);
        }
        if let Some(mask) = mask_attn {
            mha_input = mha_input.mask_attn(mask);
        }
        let attn = self.mha.forward(mha_input).context; // [B, S, d]
        let mut x = x + self.dropout.forward(attn);
        if !self.norm_first {
            x = self.norm_attn.forward(x);
        }

        let ffn_in = if self.norm_first {
            self.norm_ffn.forward(x.clone())
        } else {
            x.clone()
        };
        let (ffn, stats) = self.moe.forward(ffn_in, mask_pad); // [B, S, d]
        let mut x = x + self.dropout.forward(ffn);
        if !self.norm_first {
            x = self.norm_ffn.forward(x);
        }
        (x, stats)
    }
}
