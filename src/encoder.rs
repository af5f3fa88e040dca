//! A stack of Transformer encoder layers in which every `moe_every`-th feed-forward block is a
//! Switch block and the others are dense (Fedus et al. 2021, §2: "we replace every other FFN layer
//! with a Switch layer", following GShard).

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::activation::ActivationConfig;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderLayer};
use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::error::{Error, check};
use crate::layer::{SwitchEncoderLayer, SwitchEncoderLayerConfig};
use crate::stats::MoeStats;

/// Configuration of a [`SwitchEncoder`]: the fields of [`SwitchEncoderLayerConfig`] plus the
/// number of layers and how often a layer is sparse.
#[derive(Config, Debug)]
pub struct SwitchEncoderConfig {
    /// Model width d.
    pub d_model: usize,
    /// Hidden width f of every FFN (dense) and of each expert (sparse).
    pub d_ff: usize,
    /// Attention heads; must divide d_model.
    pub n_heads: usize,
    /// Number of layers L.
    pub n_layers: usize,
    /// Number of experts E of each sparse layer.
    pub num_experts: usize,
    /// Layer i (0-based) is sparse when (i + 1) is a multiple of `moe_every`: 2 (default) makes
    /// every other layer sparse, as in the paper; 1 makes all sparse. Must not exceed `n_layers`.
    #[config(default = 2)]
    pub moe_every: usize,
    /// Dropout of the attention scores, both residual branches and the dense FFNs. Default 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Pre-norm (true) or post-norm (false, default).
    #[config(default = false)]
    pub norm_first: bool,
    /// Quiet softmax in attention. Default false.
    #[config(default = false)]
    pub quiet_softmax: bool,
    /// Initializer of attention and dense-FFN weights. Default Kaiming uniform, gain 1/√3 (burn-nn).
    #[config(
        default = "Initializer::KaimingUniform{gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false}"
    )]
    pub initializer: Initializer,
    /// LayerNorm epsilon. Default 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Experts per token k. Default 1.
    #[config(default = 1)]
    pub top_k: usize,
    /// Capacity factor in training. Default 1.25.
    #[config(default = 1.25)]
    pub capacity_factor: f64,
    /// Capacity factor in inference. Default 2.0.
    #[config(default = 2.0)]
    pub eval_capacity_factor: f64,
    /// Never drop tokens (one host read per sparse layer and forward). Default false.
    #[config(default = false)]
    pub dropless: bool,
    /// Router-input jitter ε, training only. Default 0.01.
    #[config(default = 0.01)]
    pub jitter: f64,
    /// Activation of experts and dense FFNs: `Relu` (default) or `Gelu`.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Expert biases. Default false.
    #[config(default = false)]
    pub bias: bool,
    /// Expert dropout. Default 0.1.
    #[config(default = 0.1)]
    pub expert_dropout: f64,
    /// Initialisation scale of routers and experts. Default 0.1.
    #[config(default = 0.1)]
    pub init_scale: f64,
    /// For top-k > 1: renormalise the k gates. Default true.
    #[config(default = true)]
    pub normalize_gates: bool,
}

/// One layer of a [`SwitchEncoder`].
// The variants differ in size, but layers live in a `Vec` of a handful of elements and Burn 0.21
// has no `Module` impl for `Box`, so boxing is not an option.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum EncoderBlock<B: Backend> {
    /// burn-nn's dense Transformer encoder layer.
    Dense(TransformerEncoderLayer<B>),
    /// A layer with a Switch feed-forward block.
    Sparse(SwitchEncoderLayer<B>),
}

/// A Transformer encoder whose every `moe_every`-th layer is sparse.
#[derive(Module, Debug)]
pub struct SwitchEncoder<B: Backend> {
    /// The layers, in order.
    pub layers: Vec<EncoderBlock<B>>,
}

/// Input of [`SwitchEncoder::forward`].
#[derive(Debug, Clone)]
pub struct SwitchEncoderInput<B: Backend> {
    /// Token representations `[B, S, d]`.
    pub tensor: Tensor<B, 3>,
    /// True at padding positions `[B, S]`.
    pub mask_pad: Option<Tensor<B, 2, Bool>>,
    /// True where attention is blocked `[B, S, S]`.
    pub mask_attn: Option<Tensor<B, 3, Bool>>,
}

impl<B: Backend> SwitchEncoderInput<B> {
    /// An input without masks.
    pub fn new(tensor: Tensor<B, 3>) -> Self {
        Self {
            tensor,
            mask_pad: None,
            mask_attn: None,
        }
    }

    /// With a padding mask `[B, S]`.
    pub fn mask_pad(mut self, mask_pad: Tensor<B, 2, Bool>) -> Self {
        self.mask_pad = Some(mask_pad);
        self
    }

    /// With an attention mask `[B, S, S]`.
    pub fn mask_attn(mut self, mask_attn: Tensor<B, 3, Bool>) -> Self {
        self.mask_attn = Some(mask_attn);
        self
    }
}

impl SwitchEncoderConfig {
    /// Whether layer `i` (0-based) is sparse.
    pub fn is_sparse(&self, i: usize) -> bool {
        (i + 1).is_multiple_of(self.moe_every)
    }

    /// The config of one sparse layer.
    pub fn layer_config(&self) -> SwitchEncoderLayerConfig {
        SwitchEncoderLayerConfig::new(self.d_model, self.d_ff, self.n_heads, self.num_experts)
            .with_dropout(self.dropout)
            .with_norm_first(self.norm_first)
            .with_quiet_softmax(self.quiet_softmax)
            .with_initializer(self.initializer.clone())
            .with_layer_norm_eps(self.layer_norm_eps)
            .with_top_k(self.top_k)
            .with_capacity_factor(self.capacity_factor)
            .with_eval_capacity_factor(self.eval_capacity_factor)
            .with_dropless(self.dropless)
            .with_jitter(self.jitter)
            .with_activation(self.activation.clone())
            .with_bias(self.bias)
            .with_expert_dropout(self.expert_dropout)
            .with_init_scale(self.init_scale)
            .with_normalize_gates(self.normalize_gates)
    }

    /// The config burn-nn builds the dense layers from.
    pub fn dense_config(&self) -> TransformerEncoderConfig {
        TransformerEncoderConfig::new(self.d_model, self.d_ff, self.n_heads, self.n_layers)
            .with_dropout(self.dropout)
            .with_norm_first(self.norm_first)
            .with_quiet_softmax(self.quiet_softmax)
            .with_initializer(self.initializer.clone())
            .with_activation(self.activation.clone())
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchEncoderConfig";
        check::positive(C, "n_layers", self.n_layers)?;
        check::positive(C, "moe_every", self.moe_every)?;
        if self.moe_every > self.n_layers {
            return Err(Error::config(
                C,
                "moe_every",
                self.moe_every,
                format!(
                    "must not exceed n_layers = {}, or no layer would be sparse",
                    self.n_layers
                ),
            ));
        }
        self.layer_config().validate().map_err(|e| e.within(C, &[]))
    }

    /// Builds the encoder. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchEncoder<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let dense = self.dense_config();
        let sparse = self.layer_config();
        let layers = (0..self.n_layers)
            .map(|i| {
                if self.is_sparse(i) {
                    EncoderBlock::Sparse(sparse.init(device))
                } else {
                    EncoderBlock::Dense(TransformerEncoderLayer::new(&dense, device))
                }
            })
            .collect();
        SwitchEncoder { layers }
    }
}

impl<B: Backend> SwitchEncoder<B> {
    /// Indices of the sparse layers, in order: `stats[j]` of [`forward`](Self::forward) belongs
    /// to layer `sparse_layers()[j]`.
    pub fn sparse_layers(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, EncoderBlock::Sparse(_)))
            .map(|(i, _)| i)
            .collect()
    }

    /// Runs all layers.
    ///
    /// # Shapes
    /// - input.tensor: `[B, S, d]`; masks as in [`SwitchEncoderInput`]
    /// - output: `[B, S, d]` and one [`MoeStats`] per sparse layer, in layer order
    ///   (combine them with [`MoeStats::combine`])
    pub fn forward(&self, input: SwitchEncoderInput<B>) -> (Tensor<B, 3>, Vec<MoeStats<B>>) {
        let SwitchEncoderInput {
            tensor: mut x,
            mask_pad,
            mask_attn,
        } = input;
        let mut stats = Vec::new();
        for layer in &self.layers {
            x = match layer {
                EncoderBlock::Dense(layer) => layer.forward(x, mask_pad.clone(), mask_attn.clone()),
                EncoderBlock::Sparse(layer) => {
                    let (x, s) = layer.forward(x, mask_pad.clone(), mask_attn.clone());
                    stats.push(s);
                    x
                }
            };
        }
        (x, stats)
    }
}
