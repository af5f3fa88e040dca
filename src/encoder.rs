//! A stack of Transformer encoder layers in which every `moe_every`-th feed-forward block is a
//! Switch block and the others are dense (Fedus et al. 2021, §2: "we replace every other FFN layer
//! with a Switch layer", following GShard).

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderLayer};
use burn::tensor::{Bool, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, check};
use crate::layer::{SwitchEncoderLayer, SwitchEncoderLayerConfig};
use crate::moe::SwitchFeedForwardConfig;
use crate::stats::MoeStats;

/// Configuration of a [`SwitchEncoder`]: the number of layers, how often a layer is sparse, and
/// one [`SwitchEncoderLayerConfig`] that every layer is built from (its MoE config for the sparse
/// layers; its attention settings, `d_ff` and activation for the dense ones).
///
/// **Activation:** the dense FFNs use the MoE config's
/// [`activation`](crate::SwitchFeedForwardConfig::activation), **ReLU** by default as in
/// T5/Switch. burn-nn's `TransformerEncoderConfig` defaults to GELU; to match it, call
/// `.map_moe(|m| m.with_activation(ActivationConfig::Gelu))`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchEncoderConfig {
    /// Number of layers L.
    pub n_layers: usize,
    /// Layer i (0-based) is sparse when (i + 1) is a multiple of `moe_every`: 2 (default) makes
    /// every other layer sparse, as in the paper; 1 makes all sparse. Must not exceed `n_layers`.
    pub moe_every: usize,
    /// The settings of every layer (attention, norms, dropout, and the MoE block).
    pub layer: SwitchEncoderLayerConfig,
}

impl Config for SwitchEncoderConfig {}

impl std::fmt::Display for SwitchEncoderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

impl SwitchEncoderConfig {
    /// `n_layers` layers of width `d_model` with `n_heads` heads; every other one sparse with
    /// `num_experts` experts of hidden width `d_ff` (the dense FFNs have width `d_ff` too).
    pub fn new(
        d_model: usize,
        d_ff: usize,
        n_heads: usize,
        n_layers: usize,
        num_experts: usize,
    ) -> Self {
        Self {
            n_layers,
            moe_every: 2,
            layer: SwitchEncoderLayerConfig::new(d_model, d_ff, n_heads, num_experts),
        }
    }

    /// The MoE config of the sparse layers.
    pub fn moe(&self) -> &SwitchFeedForwardConfig {
        &self.layer.moe
    }

    /// Sets [`moe_every`](Self::moe_every).
    pub fn with_moe_every(mut self, moe_every: usize) -> Self {
        self.moe_every = moe_every;
        self
    }

    /// Dropout of the attention scores, both residual branches and the dense FFNs
    /// ([`SwitchEncoderLayerConfig::dropout`]).
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.layer.dropout = dropout;
        self
    }

    /// Pre-norm (true) or post-norm ([`SwitchEncoderLayerConfig::norm_first`]).
    pub fn with_norm_first(mut self, norm_first: bool) -> Self {
        self.layer.norm_first = norm_first;
        self
    }

    /// Changes the layer config with its own builders.
    pub fn map_layer(
        mut self,
        f: impl FnOnce(SwitchEncoderLayerConfig) -> SwitchEncoderLayerConfig,
    ) -> Self {
        self.layer = f(self.layer);
        self
    }

    /// Changes the MoE config with its own builders, e.g. `.map_moe(|m| m.with_top_k(2))`.
    pub fn map_moe(
        mut self,
        f: impl FnOnce(SwitchFeedForwardConfig) -> SwitchFeedForwardConfig,
    ) -> Self {
        self.layer.moe = f(self.layer.moe);
        self
    }
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

    /// The config burn-nn builds the dense layers from: the layer's attention settings, with
    /// the MoE config's `d_ff` and activation.
    pub fn dense_config(&self) -> TransformerEncoderConfig {
        let layer = &self.layer;
        TransformerEncoderConfig::new(
            layer.d_model(),
            layer.moe.d_ff,
            layer.n_heads,
            self.n_layers,
        )
        .with_dropout(layer.dropout)
        .with_norm_first(layer.norm_first)
        .with_quiet_softmax(layer.quiet_softmax)
        .with_initializer(layer.initializer.clone())
        .with_activation(layer.moe.activation.clone())
        .with_layer_norm_eps(layer.layer_norm_eps)
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
        self.layer.validate()
    }

    /// Builds the encoder. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchEncoder<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let dense = self.dense_config();
        let sparse = &self.layer;
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
