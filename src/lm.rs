//! A decoder-only Switch language model: token + learned position embeddings, a causal
//! [`SwitchEncoder`], a final LayerNorm and a linear LM head — its own weights, or the token
//! embeddings' transpose ([`SwitchLmConfig::tie_embeddings`], Press & Wolf 2017, as in GPT-2 and
//! T5). The final norm suits both norm placements of the encoder: a pre-norm stack ends
//! un-normalised, and after a post-norm stack it is a second, harmless normalisation.
//!
//! Its training loss is cross-entropy + α · mean load-balancing loss + β · mean z-loss over the
//! sparse layers (Switch paper §2.2, α = 0.01; ST-MoE §3.1, β = 0.001).
//!
//! For sampling, [`SwitchLm::forward_autoregressive_inference`] decodes one position at a time
//! with a key/value cache ([`SwitchLm::new_autoregressive_cache`]).

use burn::config::Config;
use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::encoder::{
    SwitchEncoder, SwitchEncoderAutoregressiveCache, SwitchEncoderConfig, SwitchEncoderInput,
};
use crate::error::{Error, check};
use crate::moe::RoutingMode;
use crate::stats::{CombinedMoeStats, MoeLossWeights, MoeStats};

/// Configuration of a [`SwitchLm`].
#[derive(Config, Debug)]
pub struct SwitchLmConfig {
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Longest context S_max (size of the position table).
    pub max_seq_len: usize,
    /// The encoder stack (built with causal attention, pre-norm recommended).
    pub encoder: SwitchEncoderConfig,
    /// The LM head is the token embedding matrix transposed (no head weights of its own; Press &
    /// Wolf 2017, "Using the Output Embedding to Improve Language Models"). The embeddings are
    /// then drawn from N(0, 1/d) rather than burn's N(0, 1), so that the initial logits have
    /// unit scale. Default false: a separate head d → V.
    #[config(default = false)]
    pub tie_embeddings: bool,
    /// Weight α of the load-balancing loss. Default 0.01 (paper §2.2, [`MoeLossWeights::PAPER`]).
    #[config(default = "MoeLossWeights::PAPER.aux")]
    pub aux_coef: f64,
    /// Weight β of the router z-loss. Default 0.001 (ST-MoE §3.1, [`MoeLossWeights::PAPER`]).
    #[config(default = "MoeLossWeights::PAPER.z")]
    pub z_coef: f64,
}

/// A Switch Transformer language model.
#[derive(Module, Debug)]
pub struct SwitchLm<B: Backend> {
    /// Token embeddings `[V, d]`.
    pub token_embedding: Embedding<B>,
    /// Learned position embeddings `[S_max, d]`.
    pub position_embedding: Embedding<B>,
    /// The causal encoder stack.
    pub encoder: SwitchEncoder<B>,
    /// Final LayerNorm.
    pub norm: LayerNorm<B>,
    /// LM head d → V, `None` when the head is the token embeddings' transpose
    /// ([`SwitchLmConfig::tie_embeddings`]); [`logits`](SwitchLm::logits) applies either.
    pub head: Option<Linear<B>>,
    /// Longest context.
    pub max_seq_len: usize,
    /// Weight α of the load-balancing loss.
    pub aux_coef: f64,
    /// Weight β of the router z-loss.
    pub z_coef: f64,
}

/// A batch of token windows: inputs and next-token targets.
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Input tokens `[B, S]`.
    pub inputs: Tensor<B, 2, Int>,
    /// Target tokens (inputs shifted by one) `[B, S]`.
    pub targets: Tensor<B, 2, Int>,
}

/// The losses of one batch, kept apart so that metrics can show each, and the routing stats.
#[derive(Debug, Clone)]
pub struct LmOutput<B: Backend> {
    /// Total loss ce + α·aux + β·z `[1]`.
    pub loss: Tensor<B, 1>,
    /// Cross-entropy (nats per token) `[1]`.
    pub cross_entropy: Tensor<B, 1>,
    /// Routing losses and per-layer stats of the sparse layers.
    pub moe: CombinedMoeStats<B>,
    /// Tokens in the batch.
    pub num_tokens: usize,
}

impl<B: Backend> LmOutput<B> {
    /// The same values cut from the autodiff graph (what metrics keep after the backward pass).
    pub fn detach(self) -> Self {
        Self {
            loss: self.loss.detach(),
            cross_entropy: self.cross_entropy.detach(),
            moe: self.moe.detach(),
            num_tokens: self.num_tokens,
        }
    }
}

impl SwitchLmConfig {
    /// Parameters of the model this config builds, counted from the config alone (nothing is
    /// allocated): what a trainer checks against the machine's memory before building it.
    pub fn num_params(&self) -> usize {
        let enc = &self.encoder;
        let moe = enc.moe();
        let (d, f, e, v) = (moe.d_model, moe.d_ff, moe.num_experts, self.vocab_size);
        let norm = 2 * d; // LayerNorm gamma and beta
        let attention = 4 * (d * d + d) + 2 * norm; // q, k, v, out with biases; two norms
        let f_dense = enc.dense_d_ff.unwrap_or(f);
        let dense = attention + d * f_dense + f_dense + f_dense * d + d; // burn-nn's FFN has biases
        let expert_bias = if moe.bias { f + d } else { 0 };
        let gated = matches!(
            moe.activation,
            burn::nn::activation::ActivationConfig::SwiGlu(_)
        );
        let weights = if gated { 3 } else { 2 }; // W₁, W₂ (and W₃)
        let ffn_experts = |n: usize| n * (weights * d * f + expert_bias);
        let sparse = attention
            + d * e // router
            + ffn_experts(e)
            + ffn_experts(moe.num_shared_experts)
            + if moe.shared_gate { d } else { 0 }
            + if moe.expert_bias_rate > 0.0 { e } else { 0 }; // the bias state is recorded too
        let layers: usize = (0..enc.n_layers)
            .map(|i| if enc.is_sparse(i) { sparse } else { dense })
            .sum();
        let head = if self.tie_embeddings { 0 } else { d * v };
        v * d + self.max_seq_len * d + layers + norm + head
    }

    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchLmConfig";
        check::positive(C, "vocab_size", self.vocab_size)?;
        check::positive(C, "max_seq_len", self.max_seq_len)?;
        for (field, value) in [("aux_coef", self.aux_coef), ("z_coef", self.z_coef)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::config(C, field, value, "must be finite and ≥ 0"));
            }
        }
        self.encoder.validate()?;
        if self.encoder.moe().routing == RoutingMode::ExpertChoice {
            return Err(Error::config(
                C,
                "encoder.layer.moe.routing",
                "ExpertChoice",
                "expert-choice routing lets each expert pick its tokens from the whole batch, so \
                 whether a token is processed depends on the tokens after it: a causal language \
                 model would see the future. Use token choice (the default) and balance it with \
                 the load-balancing loss, expert_bias_rate (aux-loss-free), drop_policy or the \
                 capacity factor",
            ));
        }
        Ok(())
    }

    /// Builds the model. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchLm<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let d = self.encoder.layer.d_model();
        let mut token_embedding = EmbeddingConfig::new(self.vocab_size, d);
        if self.tie_embeddings {
            // Unit-scale logits at init: x (normalised) · Eᵀ has variance d · var(E) = 1.
            token_embedding = token_embedding.with_initializer(Initializer::Normal {
                mean: 0.0,
                std: (1.0 / d as f64).sqrt(),
            });
        }
        SwitchLm {
            token_embedding: token_embedding.init(device),
            position_embedding: EmbeddingConfig::new(self.max_seq_len, d).init(device),
            encoder: self.encoder.init(device),
            norm: LayerNormConfig::new(d)
                .with_epsilon(self.encoder.layer.layer_norm_eps)
                .init(device),
            head: (!self.tie_embeddings).then(|| {
                LinearConfig::new(d, self.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            max_seq_len: self.max_seq_len,
            aux_coef: self.aux_coef,
            z_coef: self.z_coef,
        }
    }
}

impl<B: Backend> SwitchLm<B> {
    /// Next-token logits with causal attention, and the sparse layers' stats.
    ///
    /// # Shapes
    /// - tokens: `[B, S]`, S ≤ max_seq_len
    /// - output: logits `[B, S, V]`
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 3>, Vec<MoeStats<B>>) {
        let (x, mask) = self.embed(tokens); // [B, S, d], [B, S, S]
        let (x, stats) = self
            .encoder
            .forward(SwitchEncoderInput::new(x).mask_attn(mask));
        (self.logits(x), stats) // [B, S, V]
    }

    /// Logits with **bidirectional** attention (no causal mask): every position sees the whole
    /// window, as a masked-token objective needs. Expert-choice layers are sound here.
    ///
    /// # Shapes
    /// - tokens: `[B, S]`, S ≤ max_seq_len
    /// - output: logits `[B, S, V]`
    pub fn forward_bidirectional(
        &self,
        tokens: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Vec<MoeStats<B>>) {
        let (x, _) = self.embed(tokens); // [B, S, d]
        let (x, stats) = self.encoder.forward(SwitchEncoderInput::new(x));
        (self.logits(x), stats)
    }

    /// The sparse layers' routing replay records ([`crate::replay`]): record a forward, then
    /// replay its experts in a later one (RL fine-tuning, activation recompute).
    pub fn routing_replays(&self) -> crate::encoder::RoutingReplays {
        self.encoder.routing_replays()
    }

    /// An empty cache for [`forward_autoregressive_inference`](Self::forward_autoregressive_inference).
    pub fn new_autoregressive_cache(&self) -> SwitchEncoderAutoregressiveCache<B> {
        self.encoder.new_autoregressive_cache()
    }

    /// One decoding step with a key/value cache: the next-token logits of the last position.
    ///
    /// `tokens` is the whole sequence so far. The first call on an empty cache runs every
    /// position (the prompt); each later call must add exactly one token, and only that position
    /// goes through the encoder layers (earlier ones come from `cache`), the final norm and the
    /// head. Positions are absolute, so a sequence that outgrows `max_seq_len` needs a new cache
    /// for its shortened window (as `generate::generate` does, feature `train`).
    ///
    /// The logits equal the last row of [`forward`](Self::forward) of the same tokens when
    /// neither drops a token, which a [`dropless`](Self::dropless) model guarantees (the prompt
    /// is then routed without capacity limits). Without it the two can differ: the full forward
    /// shares capacity over all B·S tokens, a step over the B newest only (a single new token,
    /// B = 1, is never dropped). Routing stats are not returned. Meant for inference models
    /// (no autodiff).
    ///
    /// # Shapes
    /// - tokens: `[B, S]`, S ≤ max_seq_len, S = [`cache.len()`](SwitchEncoderAutoregressiveCache::len)
    ///   + 1 (any S on an empty cache)
    /// - output: logits of position S − 1 `[B, V]`
    pub fn forward_autoregressive_inference(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: &mut SwitchEncoderAutoregressiveCache<B>,
    ) -> Tensor<B, 2> {
        let [batch, seq] = tokens.dims();
        // All positions are embedded (cheap); the encoder computes only the uncached ones. The
        // causal mask matters for the first call, which runs the whole prompt.
        let (x, mask) = self.embed(tokens); // [B, S, d], [B, S, S]
        let x = self
            .encoder
            .forward_autoregressive_inference(SwitchEncoderInput::new(x).mask_attn(mask), cache); // [B, S, d]
        let d = x.dims()[2];
        let last = x.slice([0..batch, seq - 1..seq, 0..d]).reshape([batch, d]); // [B, d]
        self.logits(last) // [B, V]
    }

    /// The same model with every sparse layer dropless ([`SwitchEncoder::dropless`]): what
    /// sampling runs on, so that no prompt token is dropped and a token's output does not depend
    /// on the others' routing.
    pub fn dropless(mut self) -> Self {
        self.encoder = self.encoder.dropless();
        self
    }

    /// The final norm and the LM head (its own weights, or the token embeddings transposed).
    ///
    /// # Shapes
    /// - x: `[..., d]`, the encoder's output
    /// - output: `[..., V]`
    pub fn logits<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = self.norm.forward(x);
        match &self.head {
            Some(head) => head.forward(x),
            None => {
                let weight = self.token_embedding.weight.val().transpose(); // [d, V]
                burn::tensor::module::linear(x, weight, None) // [..., V]
            }
        }
    }

    /// Token + position embeddings of `tokens` and the causal mask.
    ///
    /// # Shapes
    /// - tokens: `[B, S]`, S ≤ max_seq_len
    /// - output: `[B, S, d]` and the causal mask `[B, S, S]` (true above the diagonal)
    fn embed(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 3>, Tensor<B, 3, Bool>) {
        let [batch, seq] = tokens.dims();
        assert!(
            seq <= self.max_seq_len,
            "SwitchLm: sequence length {seq} exceeds max_seq_len {}",
            self.max_seq_len
        );
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch); // [B, S]
        let x = self.token_embedding.forward(tokens) + self.position_embedding.forward(positions); // [B, S, d]
        let mask = generate_autoregressive_mask::<B>(batch, seq, &device); // [B, S, S]
        (x, mask)
    }

    /// The weights α, β of the routing losses in [`forward_step`](Self::forward_step).
    pub fn loss_weights(&self) -> MoeLossWeights {
        MoeLossWeights {
            aux: self.aux_coef,
            z: self.z_coef,
        }
    }

    /// The cross-entropy of each target token, nats: what the mean training loss averages,
    /// per position, so that a caller can attribute it (to a window's domain, say).
    ///
    /// # Shapes
    /// - logits: `[B, S, V]`; targets: `[B, S]`
    /// - output: `[B, S]`
    pub fn token_nll(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, s, v] = logits.dims();
        let logp = log_softmax(logits.reshape([b * s, v]), 1); // [B·S, V]
        logp.gather(1, targets.reshape([b * s, 1])) // [B·S, 1]
            .reshape([b, s])
            .neg()
    }

    /// The training objective of a batch: ce + α·mean aux + β·mean z.
    pub fn forward_step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        let [b, s] = batch.inputs.dims();
        let (logits, stats) = self.forward(batch.inputs);
        let vocab = logits.dims()[2];
        let ce = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(
                logits.reshape([b * s, vocab]),
                batch.targets.reshape([b * s]),
            );
        let moe = MoeStats::combine(stats);
        let loss = ce.clone() + moe.weighted_loss(self.loss_weights());
        LmOutput {
            loss,
            cross_entropy: ce,
            moe,
            num_tokens: b * s,
        }
    }
}
