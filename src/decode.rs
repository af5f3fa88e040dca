//! Decoding at cache speed: a [`SwitchLm`] step that feeds only the new tokens.
//!
//! [`SwitchLm::forward_autoregressive_inference`] follows burn-nn's cache design: the whole
//! sequence comes in at every step, every layer returns all positions (its caches concatenated
//! again), and burn-nn's `MhaCache` recomputes the attention scores of every cached query row, so
//! a step costs O(S²) and copies O(S·d) per layer. [`SwitchLm::decode`] keeps only what a step
//! needs:
//!
//! - per layer, the keys and values of every position so far (`[B, S, d]`); the new
//!   positions' queries attend to them (O(S) per new token) and their keys and values are
//!   appended;
//! - no per-position caches of norms or feed-forward outputs: only the new positions flow through
//!   the layers, and only the last one reaches the final norm and the head;
//! - a Switch block with few new tokens runs each on its chosen experts only
//!   ([`SwitchFeedForward::forward_few`]: the k experts' weights gathered on the device, no host
//!   read), instead of the batched `[E, C, d]` layout that runs every expert.
//!
//! The arithmetic is the full forward's (the same projections, scale 1/√d_k, `min_float`
//! masking, softmax or quiet softmax, norms), so the logits equal those of
//! [`SwitchLm::forward`] and of the older cached step up to float rounding, as long as no token
//! is dropped (run it on a [`dropless`](SwitchLm::dropless) model, as `generate` does). Inference
//! only: no dropout, no padding mask.

use burn::nn::attention::MultiHeadAttention;
use burn::nn::transformer::TransformerEncoderLayer;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{quiet_softmax, softmax};
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::encoder::EncoderBlock;
use crate::layer::SwitchEncoderLayer;
use crate::lm::SwitchLm;
use crate::moe::SwitchFeedForward;

/// The keys and values of every position decoded so far, per layer, for [`SwitchLm::decode`].
/// One cache per batch of sequences; start a new one for new sequences (or when the context
/// outgrows `max_seq_len`).
#[derive(Debug, Clone)]
pub struct DecodeCache<B: Backend> {
    /// Per layer: keys and values `[B, S, d]` (heads side by side), `None` before the first
    /// step.
    kv: Vec<Option<(Tensor<B, 3>, Tensor<B, 3>)>>,
    /// Positions cached.
    len: usize,
}

impl<B: Backend> DecodeCache<B> {
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend> SwitchLm<B> {
    /// An empty cache for [`decode`](Self::decode).
    pub fn new_decode_cache(&self) -> DecodeCache<B> {
        DecodeCache {
            kv: vec![None; self.encoder.layers.len()],
            len: 0,
        }
    }

    /// Feeds the next tokens of each sequence and returns the next-token logits after the last
    /// one: the prompt first (any length), then one sampled token per call. Positions continue
    /// from [`cache.len()`](DecodeCache::len).
    ///
    /// # Panics
    /// If the cache would outgrow `max_seq_len` (start a new cache for a shortened window), or
    /// the cache was built for another model or batch size.
    ///
    /// # Shapes
    /// - tokens: `[B, S_new]`, S_new ≥ 1, `cache.len() + S_new ≤ max_seq_len`
    /// - output: logits of the last new position `[B, V]`
    pub fn decode(&self, tokens: Tensor<B, 2, Int>, cache: &mut DecodeCache<B>) -> Tensor<B, 2> {
        let [batch, new] = tokens.dims();
        let start = cache.len;
        assert!(
            new >= 1 && start + new <= self.max_seq_len,
            "SwitchLm::decode: {start} cached + {new} new positions exceed max_seq_len {} \
             (start a new cache for a shortened window)",
            self.max_seq_len
        );
        assert_eq!(
            cache.kv.len(),
            self.encoder.layers.len(),
            "SwitchLm::decode: the cache was built for another model (new_decode_cache)"
        );
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + new) as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch); // [B, S_new]
        let mut x =
            self.token_embedding.forward(tokens) + self.position_embedding.forward(positions); // [B, S_new, d]
        // Causal among the new positions (the prompt); a single new token sees everything.
        let mask = (new > 1).then(|| causal_mask::<B>(start, new, &device)); // [1, 1, S_new, S]
        for (block, kv) in self.encoder.layers.iter().zip(&mut cache.kv) {
            x = match block {
                EncoderBlock::Sparse(layer) => sparse_step(layer, x, mask.clone(), kv),
                EncoderBlock::Dense(layer) => dense_step(layer, x, mask.clone(), kv),
            };
        }
        cache.len = start + new;
        let d = x.dims()[2];
        let last = x.slice([0..batch, new - 1..new, 0..d]).reshape([batch, d]); // [B, d]
        head(self, last) // [B, V]
    }
}

/// `[1, 1, S_new, start + S_new]`, true where new position i (absolute start + i) may not look:
/// the keys after it.
fn causal_mask<B: Backend>(start: usize, new: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let total = start + new;
    let blocked: Vec<bool> = (0..new)
        .flat_map(|i| (0..total).map(move |j| j > start + i))
        .collect();
    Tensor::from_data(TensorData::new(blocked, [1, 1, new, total]), device)
}

/// A Switch layer on the new positions: burn-nn's data flow (see [`SwitchEncoderLayer`]) with
/// [`attend`] and, for few tokens, [`SwitchFeedForward::forward_few`].
fn sparse_step<B: Backend>(
    layer: &SwitchEncoderLayer<B>,
    x: Tensor<B, 3>,
    mask: Option<Tensor<B, 4, Bool>>,
    kv: &mut Option<(Tensor<B, 3>, Tensor<B, 3>)>,
) -> Tensor<B, 3> {
    let norms = (&layer.norm_attn, &layer.norm_ffn);
    residual_step(layer.norm_first, norms, &layer.mha, x, mask, kv, |h| {
        moe_step(&layer.moe, h)
    })
}

/// burn-nn's dense layer on the new positions (pre-norm: norm_2 before attention, norm_1 before
/// the FFN; post-norm: norm_1 after attention, norm_2 after the FFN).
fn dense_step<B: Backend>(
    layer: &TransformerEncoderLayer<B>,
    x: Tensor<B, 3>,
    mask: Option<Tensor<B, 4, Bool>>,
    kv: &mut Option<(Tensor<B, 3>, Tensor<B, 3>)>,
) -> Tensor<B, 3> {
    let norms = if layer.norm_first {
        (&layer.norm_2, &layer.norm_1)
    } else {
        (&layer.norm_1, &layer.norm_2)
    };
    // burn-nn's PositionWiseFeedForward without its dropout (inference), through `project`.
    let f = &layer.pwff;
    residual_step(layer.norm_first, norms, &layer.mha, x, mask, kv, |h| {
        project(
            &f.linear_outer,
            f.activation.forward(project(&f.linear_inner, h)),
        )
    })
}

/// One encoder layer's two residual blocks, attention then `ffn`, with the norms `(attention's,
/// the FFN's)` before each block (pre-norm) or after each residual sum (post-norm).
fn residual_step<B: Backend>(
    norm_first: bool,
    (norm_attn, norm_ffn): (&LayerNorm<B>, &LayerNorm<B>),
    mha: &MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    mask: Option<Tensor<B, 4, Bool>>,
    kv: &mut Option<(Tensor<B, 3>, Tensor<B, 3>)>,
    ffn: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    if norm_first {
        let x = x.clone() + attend(mha, norm_attn.forward(x), mask, kv);
        x.clone() + ffn(norm_ffn.forward(x))
    } else {
        let x = norm_attn.forward(x.clone() + attend(mha, x, mask, kv));
        norm_ffn.forward(x.clone() + ffn(x))
    }
}

/// The Switch block on `[B, S_new, d]`: each token on its chosen experts when that is exact
/// (one token, or a dropless block), else the block's own forward.
fn moe_step<B: Backend>(moe: &SwitchFeedForward<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, new, d] = x.dims();
    let t = batch * new;
    // Gathering k experts per token pays while the tokens are few against the experts.
    if moe.can_forward_few(t) && t * moe.router.top_k <= moe.num_experts().max(4) {
        moe.forward_few(x.reshape([t, d])).reshape([batch, new, d])
    } else {
        moe.forward(x, None).0
    }
}

/// At most this many rows go through the host kernels ([`crate::host`]) on `NdArray`.
#[cfg(feature = "ndarray")]
const HOST_ROWS: usize = 8;

/// `linear` on `[B, S, n]`; a few rows on `NdArray` through the host kernels (which read the
/// weights in place instead of packing them for a one-row sgemm).
fn project<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(feature = "ndarray")]
    {
        let [b, s, n] = x.dims();
        if b * s <= HOST_ROWS {
            let rows = x.clone().reshape([b * s, n]);
            let bias = linear.bias.as_ref().map(|p| p.val());
            if let Some(y) = crate::host::linear(&rows, &linear.weight.val(), bias.as_ref()) {
                let out = y.dims()[1];
                return y.reshape([b, s, out]);
            }
        }
    }
    linear.forward(x)
}

/// The final norm and the LM head on `[B, d]`, a few rows through the host kernels on
/// `NdArray` ([`SwitchLm::logits`] otherwise).
fn head<B: Backend>(model: &SwitchLm<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "ndarray")]
    {
        let [b, d] = x.dims();
        if b <= HOST_ROWS {
            let h = model.norm.forward(x.clone());
            let y = match &model.head {
                Some(linear) => Some(project(linear, h.reshape([b, 1, d])).squeeze_dim::<2>(1)),
                None => crate::host::linear_transposed(&h, &model.token_embedding.weight.val()),
            };
            if let Some(y) = y {
                return y;
            }
        }
    }
    model.logits(x)
}

/// Self-attention of the new positions `x` over the cached and new keys; appends the new keys
/// and values to `kv`. burn-nn's `MultiHeadAttention` arithmetic (its weights, scale 1/√d_k,
/// `min_float` masking, softmax or quiet softmax), without dropout.
///
/// # Shapes
/// - x: `[B, S_new, d]`
/// - mask: `[1, 1, S_new, S]` (S = cached + new), true where blocked
/// - output: `[B, S_new, d]`
fn attend<B: Backend>(
    mha: &MultiHeadAttention<B>,
    x: Tensor<B, 3>,
    mask: Option<Tensor<B, 4, Bool>>,
    kv: &mut Option<(Tensor<B, 3>, Tensor<B, 3>)>,
) -> Tensor<B, 3> {
    let [batch, new, d] = x.dims();
    let (heads, d_k) = (mha.n_heads, mha.d_k);
    let (q, k, v) = (
        project(&mha.query, x.clone()),
        project(&mha.key, x.clone()),
        project(&mha.value, x),
    ); // [B, S_new, d] each
    let (k, v) = match kv.take() {
        Some((k_old, v_old)) => (
            Tensor::cat(vec![k_old, k], 1),
            Tensor::cat(vec![v_old, v], 1),
        ), // [B, S, d]
        None => (k, v),
    };
    *kv = Some((k.clone(), v.clone()));
    #[cfg(feature = "ndarray")]
    if new == 1
        && let Some(context) = crate::host::attend_one(&q, &k, &v, heads, mha.quiet_softmax)
    {
        return project(&mha.output, context);
    }
    let split = |t: Tensor<B, 3>| {
        let s = t.dims()[1];
        t.reshape([batch, s, heads, d_k]).swap_dims(1, 2) // [B, H, S, d_k]
    };
    let mut scores = split(q)
        .matmul(split(k).transpose())
        .div_scalar((d_k as f32).sqrt()); // [B, H, S_new, S]
    if let Some(mask) = mask {
        scores = scores.mask_fill(mask, mha.min_float);
    }
    let weights = if mha.quiet_softmax {
        quiet_softmax(scores, 3)
    } else {
        softmax(scores, 3)
    };
    let context = weights
        .matmul(split(v))
        .swap_dims(1, 2)
        .reshape([batch, new, d]); // [B, S_new, d]
    project(&mha.output, context)
}
