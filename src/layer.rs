//! A Transformer encoder layer whose feed-forward block is a Switch (mixture-of-experts) block
//! (Fedus et al. 2021, Fig. 2), with burn-nn 0.21's `TransformerEncoderLayer` semantics otherwise:
//! the same attention, dropout placement and pre-/post-norm data flow.

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::activation::ActivationConfig;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::error::{Error, check};
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};
use crate::stats::MoeStats;

/// Configuration of a [`SwitchEncoderLayer`]: burn-nn's `TransformerEncoderConfig` fields (less
/// `n_layers`) plus the MoE fields of [`SwitchFeedForwardConfig`].
#[derive(Config, Debug)]
pub struct SwitchEncoderLayerConfig {
    /// Model width d.
    pub d_model: usize,
    /// Hidden width f of each expert.
    pub d_ff: usize,
    /// Attention heads; must divide d_model.
    pub n_heads: usize,
    /// Number of experts E.
    pub num_experts: usize,
    /// Dropout of the attention scores and of both residual branches. Default 0.1 (burn-nn).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Pre-norm (true) or post-norm (false, default; burn-nn and the original Transformer).
    #[config(default = false)]
    pub norm_first: bool,
    /// Quiet softmax in attention. Default false (burn-nn).
    #[config(default = false)]
    pub quiet_softmax: bool,
    /// Initializer of the attention weights. Default Kaiming uniform, gain 1/√3 (burn-nn).
    /// Router and experts use the paper's truncated normal with `init_scale`.
    #[config(
        default = "Initializer::KaimingUniform{gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false}"
    )]
    pub initializer: Initializer,
    /// LayerNorm epsilon. Default 1e-5 (burn-nn).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Experts per token k. Default 1 (Switch routing).
    #[config(default = 1)]
    pub top_k: usize,
    /// Capacity factor in training. Default 1.25 (paper Table 1).
    #[config(default = 1.25)]
    pub capacity_factor: f64,
    /// Capacity factor in inference. Default 2.0.
    #[config(default = 2.0)]
    pub eval_capacity_factor: f64,
    /// Never drop tokens (one host read per forward). Default false.
    #[config(default = false)]
    pub dropless: bool,
    /// Router-input jitter ε, training only. Default 0.01 (paper §2.4).
    #[config(default = 0.01)]
    pub jitter: f64,
    /// Expert activation: `Relu` (default) or `Gelu`.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Expert biases. Default false (T5/Switch).
    #[config(default = false)]
    pub bias: bool,
    /// Expert dropout on the hidden activations. Default 0.1 (paper Table 4).
    #[config(default = 0.1)]
    pub expert_dropout: f64,
    /// Initialisation scale of router and experts. Default 0.1 (paper §2.4).
    #[config(default = 0.1)]
    pub init_scale: f64,
    /// For top-k > 1: renormalise the k gates. Default true.
    #[config(default = true)]
    pub normalize_gates: bool,
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

impl SwitchEncoderLayerConfig {
    /// The MoE block's config.
    pub fn moe_config(&self) -> SwitchFeedForwardConfig {
        SwitchFeedForwardConfig::new(self.d_model, self.d_ff, self.num_experts)
            .with_top_k(self.top_k)
            .with_capacity_factor(self.capacity_factor)
            .with_eval_capacity_factor(self.eval_capacity_factor)
            .with_dropless(self.dropless)
            .with_jitter(self.jitter)
            .with_activation(self.activation.clone())
            .with_bias(self.bias)
            .with_dropout(self.expert_dropout)
            .with_init_scale(self.init_scale)
            .with_normalize_gates(self.normalize_gates)
    }

    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchEncoderLayerConfig";
        validate_attention(
            C,
            self.d_model,
            self.n_heads,
            self.dropout,
            self.layer_norm_eps,
        )?;
        self.moe_config()
            .validate()
            .map_err(|e| e.within(C, &[("dropout", "expert_dropout")]))
    }

    /// Builds the layer. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchEncoderLayer<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let norm = || {
            LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        SwitchEncoderLayer {
            mha: MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
                .with_initializer(self.initializer.clone())
                .with_dropout(self.dropout)
                .with_quiet_softmax(self.quiet_softmax)
                .init(device),
            moe: self.moe_config().init(device),
            norm_attn: norm(),
            norm_ffn: norm(),
            dropout: DropoutConfig::new(self.dropout).init(),
            norm_first: self.norm_first,
        }
    }
}

/// Checks shared by the layer and encoder configs.
pub(crate) fn validate_attention(
    config: &'static str,
    d_model: usize,
    n_heads: usize,
    dropout: f64,
    layer_norm_eps: f64,
) -> crate::Result<()> {
    check::positive(config, "d_model", d_model)?;
    check::positive(config, "n_heads", n_heads)?;
    if !d_model.is_multiple_of(n_heads) {
        return Err(Error::config(
            config,
            "n_heads",
            n_heads,
            format!("must divide d_model = {d_model}"),
        ));
    }
    check::probability(config, "dropout", dropout)?;
    check::positive_f64(config, "layer_norm_eps", layer_norm_eps)
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
