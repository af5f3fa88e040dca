//! A stack of Transformer encoder layers in which every `moe_every`-th feed-forward block is a
//! Switch block and the others are dense (Fedus et al. 2021, §2: "we replace every other FFN layer
//! with a Switch layer", following GShard).
//!
//! Like burn-nn's `TransformerEncoder`, it decodes autoregressively with a cache
//! ([`SwitchEncoder::forward_autoregressive_inference`]): dense layers use burn-nn's own layer
//! cache, sparse layers [`SwitchEncoderLayerAutoregressiveCache`].

use burn::config::Config;
use burn::module::Module;
use burn::nn::activation::ActivationConfig;
use burn::nn::transformer::{
    TransformerEncoderConfig, TransformerEncoderLayer, TransformerEncoderLayerAutoregressiveCache,
};
use burn::tensor::{Bool, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, check};
use crate::layer::{
    SwitchEncoderLayer, SwitchEncoderLayerAutoregressiveCache, SwitchEncoderLayerConfig,
};
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
    /// Hidden width of the dense layers' FFNs; `None` (default): the MoE config's `d_ff`. A
    /// parameter-matched dense baseline sets the sparse layers to one expert of width E·d_ff
    /// and keeps the dense layers at d_ff.
    #[serde(default)]
    pub dense_d_ff: Option<usize>,
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
            dense_d_ff: None,
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

    /// Sets [`dense_d_ff`](Self::dense_d_ff).
    pub fn with_dense_d_ff(mut self, dense_d_ff: Option<usize>) -> Self {
        self.dense_d_ff = dense_d_ff;
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
    /// `dense_d_ff` (default the MoE config's `d_ff`) and the MoE config's activation.
    pub fn dense_config(&self) -> TransformerEncoderConfig {
        let layer = &self.layer;
        TransformerEncoderConfig::new(
            layer.d_model(),
            self.dense_d_ff.unwrap_or(layer.moe.d_ff),
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
        if self.dense_d_ff == Some(0) {
            return Err(Error::config(C, "dense_d_ff", 0, "must be at least 1"));
        }
        let has_dense = (0..self.n_layers).any(|i| !self.is_sparse(i));
        if has_dense && matches!(self.layer.moe.activation, ActivationConfig::SwiGlu(_)) {
            return Err(Error::config(
                C,
                "moe_every",
                self.moe_every,
                "gated (SwiGlu) experts need every layer sparse (moe_every = 1): the dense \
                 layers are burn-nn's, which have no gated feed-forward",
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
                EncoderBlock::Dense(layer) => {
                    crate::layer::dense_layer_forward(layer, x, mask_pad.clone(), mask_attn.clone())
                }
                EncoderBlock::Sparse(layer) => {
                    let (x, s) = layer.forward(x, mask_pad.clone(), mask_attn.clone());
                    stats.push(s);
                    x
                }
            };
        }
        (x, stats)
    }
    /// An empty cache for [`forward_autoregressive_inference`](Self::forward_autoregressive_inference),
    /// one entry per layer.
    pub fn new_autoregressive_cache(&self) -> SwitchEncoderAutoregressiveCache<B> {
        let layers = self
            .layers
            .iter()
            .map(|layer| match layer {
                EncoderBlock::Dense(_) => {
                    LayerCache::Dense(TransformerEncoderLayerAutoregressiveCache::empty())
                }
                EncoderBlock::Sparse(_) => {
                    LayerCache::Sparse(SwitchEncoderLayerAutoregressiveCache::empty())
                }
            })
            .collect();
        SwitchEncoderAutoregressiveCache { layers, len: 0 }
    }

    /// One autoregressive decoding step, as burn-nn's
    /// `TransformerEncoder::forward_autoregressive_inference`: the whole sequence comes in, and
    /// every layer computes only the newest position, taking the earlier ones from `cache`.
    /// The first call on an empty cache computes every position (pass a causal `mask_attn`
    /// for a multi-token prompt); each later call must add exactly one position.
    ///
    /// Dense layers run burn-nn's `TransformerEncoderLayer::forward_autoregressive_inference`;
    /// sparse layers run [`SwitchEncoderLayer::forward_autoregressive_inference`], whose
    /// routing rules (and stats, not returned here) are documented there. The result equals
    /// [`forward`](Self::forward) of the same sequence when neither drops a token, which
    /// dropless sparse layers guarantee ([`dropless`](Self::dropless)).
    ///
    /// # Shapes
    /// - input.tensor: `[B, S, d]`, S = [`cache.len()`](SwitchEncoderAutoregressiveCache::len)
    ///   + 1 (any S on an empty cache); masks as in [`SwitchEncoderInput`]
    /// - output: `[B, S, d]`
    pub fn forward_autoregressive_inference(
        &self,
        input: SwitchEncoderInput<B>,
        cache: &mut SwitchEncoderAutoregressiveCache<B>,
    ) -> Tensor<B, 3> {
        let SwitchEncoderInput {
            tensor: mut x,
            mask_pad,
            mask_attn,
        } = input;
        let seq = x.dims()[1];
        assert_eq!(
            cache.layers.len(),
            self.layers.len(),
            "SwitchEncoder: the cache has {} layers, the encoder {}; build it with new_autoregressive_cache",
            cache.layers.len(),
            self.layers.len()
        );
        assert!(
            cache.len == 0 || seq == cache.len + 1,
            "SwitchEncoder: an autoregressive step must add exactly one position (the cache holds \
             {}, the input has {seq}); start a new cache for a new sequence",
            cache.len
        );
        for (i, (layer, layer_cache)) in self.layers.iter().zip(&mut cache.layers).enumerate() {
            x = match (layer, layer_cache) {
                (EncoderBlock::Dense(layer), LayerCache::Dense(c)) => layer
                    .forward_autoregressive_inference(x, mask_pad.clone(), mask_attn.clone(), c),
                (EncoderBlock::Sparse(layer), LayerCache::Sparse(c)) => {
                    layer
                        .forward_autoregressive_inference(x, mask_pad.clone(), mask_attn.clone(), c)
                        .0
                }
                _ => panic!(
                    "SwitchEncoder: layer {i} is not of the kind the cache was built for; \
                     build the cache with this encoder's new_autoregressive_cache"
                ),
            };
        }
        cache.len = seq;
        x
    }

    /// The same encoder with every sparse layer dropless
    /// ([`SwitchFeedForward::dropless`](crate::SwitchFeedForward::dropless)): no token is ever
    /// dropped, at the cost of one scalar host read per sparse layer and forward. What sampling
    /// wants: a token's output no longer depends on how many other tokens chose its expert.
    pub fn dropless(mut self) -> Self {
        for layer in &mut self.layers {
            if let EncoderBlock::Sparse(layer) = layer {
                layer.moe.dropless = true;
            }
        }
        self
    }

    /// The routers' replay records, one per sparse layer in layer order ([`crate::replay`]):
    /// start, stop and read them together with [`RoutingReplays`].
    pub fn routing_replays(&self) -> RoutingReplays {
        RoutingReplays(
            self.layers
                .iter()
                .filter_map(|l| match l {
                    EncoderBlock::Sparse(layer) => Some(layer.moe.router.replay.clone()),
                    EncoderBlock::Dense(_) => None,
                })
                .collect(),
        )
    }

    /// The sparse layers' exchanges for the `Global` balance scope ([`crate::balance`]).
    pub fn global_balances(&self) -> Vec<crate::balance::GlobalBalance> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                EncoderBlock::Sparse(layer) => Some(layer.moe.global_balance.clone()),
                EncoderBlock::Dense(_) => None,
            })
            .collect()
    }
}

/// Every sparse layer's [`RoutingReplay`](crate::RoutingReplay), driven together.
#[derive(Debug, Clone)]
pub struct RoutingReplays(pub Vec<crate::RoutingReplay>);

impl RoutingReplays {
    /// Every router records the experts of each later forward.
    pub fn start_recording(&self) {
        self.0
            .iter()
            .for_each(crate::RoutingReplay::start_recording);
    }

    /// Every router replays its record, forward by forward.
    pub fn start_replaying(&self) {
        self.0
            .iter()
            .for_each(crate::RoutingReplay::start_replaying);
    }

    /// Every router routes normally again (the records stay).
    pub fn stop(&self) {
        self.0.iter().for_each(crate::RoutingReplay::stop);
    }
}

/// What [`SwitchEncoder::forward_autoregressive_inference`] keeps between steps: one cache per
/// layer (burn-nn's for dense layers, [`SwitchEncoderLayerAutoregressiveCache`] for sparse ones)
/// and the number of positions cached. Build it with
/// [`SwitchEncoder::new_autoregressive_cache`]; one cache serves one sequence.
pub struct SwitchEncoderAutoregressiveCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
}

impl<B: Backend> SwitchEncoderAutoregressiveCache<B> {
    /// Positions cached so far (the sequence length of the last step).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The cache of one layer, of the layer's kind.
enum LayerCache<B: Backend> {
    Dense(TransformerEncoderLayerAutoregressiveCache<B>),
    Sparse(SwitchEncoderLayerAutoregressiveCache<B>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_moe_every_th_layer_is_sparse() {
        let every_other = SwitchEncoderConfig::new(8, 16, 2, 6, 4);
        let sparse: Vec<usize> = (0..6).filter(|i| every_other.is_sparse(*i)).collect();
        assert_eq!(
            sparse,
            vec![1, 3, 5],
            "the paper's every other FFN, from the second"
        );
        let all = SwitchEncoderConfig::new(8, 16, 2, 3, 4).with_moe_every(1);
        assert!((0..3).all(|i| all.is_sparse(i)));
        let last = SwitchEncoderConfig::new(8, 16, 2, 3, 4).with_moe_every(3);
        assert_eq!((0..3).filter(|i| last.is_sparse(*i)).count(), 1);
        // The dense layers take dense_d_ff when set.
        let wide = SwitchEncoderConfig::new(8, 16, 2, 2, 4).with_dense_d_ff(Some(64));
        assert_eq!(wide.dense_config().d_ff, 64);
        assert_eq!(
            SwitchEncoderConfig::new(8, 16, 2, 2, 4).dense_config().d_ff,
            16
        );
    }
}
