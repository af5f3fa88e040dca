//! Sparse upcycling (Komatsuzaki et al. 2022, arXiv 2212.05055; Megatron-Core's
//! `--moe-use-upcycling`): a trained dense FFN becomes the experts of a Switch block, the
//! cheapest way to a good small MoE — the experts start where the dense model ended, and the
//! router learns to tell them apart.
//!
//! - [`UpcycleMode::Copy`]: every expert is a copy of the dense FFN (d_ff of the block = the dense
//!   FFN's). With the gates renormalised over the chosen experts (top-1 with `normalize_top1`, or
//!   top-k with `normalize_gates`) and room for every token, the block computes exactly the dense
//!   FFN, whatever the router picks.
//! - [`UpcycleMode::Granular`]: the dense FFN's f hidden units are split into E experts of f / E
//!   (a fine-grained split). With all E experts chosen (top-k = E), equal gates 1/E (a zero router)
//!   and a routed scaling of E, the block again computes exactly the dense FFN; choosing fewer
//!   experts then trades FLOPs for specialisation.
//!
//! Optional multiplicative noise (each weight × (1 + ε·N(0, 1))) breaks the copies' symmetry,
//! at the price of the exact start. [`SwitchEncoderConfig::upcycle`] does the same for a whole
//! burn-nn `TransformerEncoder`: every `moe_every`-th layer's FFN is upcycled, its attention and
//! norms copied, the other layers kept dense.

use burn::module::Param;
use burn::nn::transformer::{PositionWiseFeedForward, TransformerEncoder};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::encoder::{EncoderBlock, SwitchEncoder, SwitchEncoderConfig};
use crate::error::{Error, Result};
use crate::experts::Experts;
use crate::init::HostRng;
use crate::layer::SwitchEncoderLayer;
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};

/// How a dense FFN becomes experts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpcycleMode {
    /// Every expert a copy of the dense FFN.
    Copy,
    /// The dense FFN's hidden units split into E experts of f / E.
    Granular,
}

/// Upcycling settings: the mode, and multiplicative noise ε (0: exact copies) drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Upcycle {
    /// Copies or a granular split.
    pub mode: UpcycleMode,
    /// ε of the multiplicative weight noise (0 keeps the exact start).
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl Upcycle {
    /// Exact copies.
    pub fn copy() -> Self {
        Self {
            mode: UpcycleMode::Copy,
            noise: 0.0,
            seed: 0,
        }
    }

    /// An exact granular split.
    pub fn granular() -> Self {
        Self {
            mode: UpcycleMode::Granular,
            ..Self::copy()
        }
    }

    /// The same with noise ε from `seed`.
    pub fn with_noise(mut self, noise: f64, seed: u64) -> Self {
        self.noise = noise;
        self.seed = seed;
        self
    }
}

impl SwitchFeedForwardConfig {
    /// A block whose experts start from `dense` (see the module docs). The config must have
    /// `bias = true` (burn-nn's FFN has biases), ReLU or GELU as the dense FFN, d_model equal to
    /// the FFN's, and d_ff equal to the FFN's width (copies) or width / E (granular). The router
    /// is the config's: for the exact start, set the gate normalisation as the module docs say
    /// ([`Upcycle::granular`] also zeroes the router so that the gates are equal).
    ///
    /// # Errors
    /// [`Error::Config`] naming the field that does not fit the dense FFN.
    pub fn upcycle<B: Backend>(
        &self,
        dense: &PositionWiseFeedForward<B>,
        how: Upcycle,
        device: &B::Device,
    ) -> Result<SwitchFeedForward<B>> {
        let (w1, b1, w2, b2) = dense_weights(dense)?;
        let [d, f] = w1.dims();
        let e = self.num_experts;
        const C: &str = "SwitchFeedForwardConfig";
        let want_f = match how.mode {
            UpcycleMode::Copy => f,
            UpcycleMode::Granular if f.is_multiple_of(e) => f / e,
            UpcycleMode::Granular => {
                return Err(Error::config(
                    C,
                    "num_experts",
                    e,
                    format!("must divide the dense FFN's width {f} for a granular split"),
                ));
            }
        };
        if self.d_model != d || self.d_ff != want_f {
            return Err(Error::config(
                C,
                "d_ff",
                self.d_ff,
                format!(
                    "the dense FFN is {d} → {f} → {d}: upcycling it needs d_model {d} and d_ff \
                     {want_f}"
                ),
            ));
        }
        if !self.bias {
            return Err(Error::config(
                C,
                "bias",
                false,
                "burn-nn's FFN has biases: upcycle into experts with bias = true",
            ));
        }
        let mut block = self.init::<B>(device);
        let (w_in, b_in, w_out, b_out) = match how.mode {
            UpcycleMode::Copy => (
                w1.unsqueeze_dim::<3>(0).repeat_dim(0, e), // [E, d, f]
                b1.unsqueeze_dim::<2>(0).repeat_dim(0, e), // [E, f]
                w2.unsqueeze_dim::<3>(0).repeat_dim(0, e), // [E, f, d]
                b2.unsqueeze_dim::<2>(0).repeat_dim(0, e), // [E, d]
            ),
            UpcycleMode::Granular => {
                block.router.gate.weight =
                    Param::from_tensor(block.router.gate.weight.val().zeros_like());
                (
                    w1.reshape([d, e, want_f]).swap_dims(0, 1), // [E, d, f/E]
                    b1.reshape([e, want_f]),                    // [E, f/E]
                    w2.reshape([e, want_f, d]),                 // [E, f/E, d]
                    // Each of the E experts adds its b₂: a share of 1/E each.
                    b2.div_scalar(e as f64)
                        .unsqueeze_dim::<2>(0)
                        .repeat_dim(0, e), // [E, d]
                )
            }
        };
        let mut rng = HostRng::new(how.seed);
        let mut noisy = |t: Tensor<B, 3>| noise(t, how.noise, &mut rng);
        set(&mut block.experts, noisy(w_in), b_in, noisy(w_out), b_out);
        Ok(block)
    }
}

/// The dense FFN's W₁ `[d, f]`, b₁ `[f]`, W₂ `[f, d]`, b₂ `[d]`.
#[allow(clippy::type_complexity)]
fn dense_weights<B: Backend>(
    dense: &PositionWiseFeedForward<B>,
) -> Result<(Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 2>, Tensor<B, 1>)> {
    let bias = |b: &Option<Param<Tensor<B, 1>>>| {
        b.as_ref().map(Param::val).ok_or_else(|| {
            Error::config(
                "PositionWiseFeedForward",
                "linear_inner.bias",
                "None",
                "the dense FFN has no biases, which burn-nn always gives it",
            )
        })
    };
    let inner = &dense.linear_inner;
    let outer = &dense.linear_outer;
    Ok((
        inner.weight.val(),
        bias(&inner.bias)?,
        outer.weight.val(),
        bias(&outer.bias)?,
    ))
}

/// `t · (1 + ε·N(0, 1))`, element-wise from the host generator (ε = 0: `t`).
fn noise<B: Backend, const D: usize>(t: Tensor<B, D>, eps: f64, rng: &mut HostRng) -> Tensor<B, D> {
    if eps == 0.0 {
        return t;
    }
    let shape = t.shape();
    let n = shape.num_elements();
    let factors: Vec<f32> = (0..n).map(|_| (1.0 + eps * rng.normal()) as f32).collect();
    let factors = Tensor::<B, D>::from_data(TensorData::new(factors, shape), &t.device());
    t * factors
}

fn set<B: Backend>(
    experts: &mut Experts<B>,
    w_in: Tensor<B, 3>,
    b_in: Tensor<B, 2>,
    w_out: Tensor<B, 3>,
    b_out: Tensor<B, 2>,
) {
    experts.w_in = Param::from_tensor(w_in);
    experts.b_in = Some(Param::from_tensor(b_in));
    experts.w_out = Param::from_tensor(w_out);
    experts.b_out = Some(Param::from_tensor(b_out));
}

impl SwitchEncoderConfig {
    /// A [`SwitchEncoder`] from a trained burn-nn `TransformerEncoder`: every `moe_every`-th
    /// layer becomes a Switch layer whose attention and norms are the dense layer's and whose
    /// experts are upcycled from its FFN ([`SwitchFeedForwardConfig::upcycle`]); the other layers
    /// are kept as they are. The config's widths, heads, layer count and norm placement must be
    /// the dense encoder's.
    ///
    /// Make sure the dense encoder's parameters are initialised (a loaded record, or one forward
    /// pass): burn-nn's parameters are lazy.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting that does not fit the dense encoder.
    pub fn upcycle<B: Backend>(
        &self,
        dense: &TransformerEncoder<B>,
        how: Upcycle,
        device: &B::Device,
    ) -> Result<SwitchEncoder<B>> {
        const C: &str = "SwitchEncoderConfig";
        let checks: [(&'static str, usize, usize); 3] = [
            ("n_layers", self.n_layers, dense.layers.len()),
            ("layer.moe.d_model", self.layer.d_model(), dense.d_model),
            ("layer.n_heads", self.layer.n_heads, dense.n_heads),
        ];
        for (field, ours, theirs) in checks {
            if ours != theirs {
                return Err(Error::config(
                    C,
                    field,
                    ours,
                    format!("the dense encoder has {theirs}"),
                ));
            }
        }
        if self.layer.norm_first != dense.norm_first {
            return Err(Error::config(
                C,
                "layer.norm_first",
                self.layer.norm_first,
                "must be the dense encoder's norm placement",
            ));
        }
        self.validate()?;
        let mut encoder = self.init::<B>(device);
        for (i, layer) in dense.layers.iter().enumerate() {
            encoder.layers[i] = if self.is_sparse(i) {
                // burn-nn names its norms by position: post-norm's norm_1 follows attention,
                // pre-norm's norm_2 precedes it.
                let (norm_attn, norm_ffn) = if layer.norm_first {
                    (layer.norm_2.clone(), layer.norm_1.clone())
                } else {
                    (layer.norm_1.clone(), layer.norm_2.clone())
                };
                let moe = self.layer.moe.upcycle(&layer.pwff, how, device)?;
                let EncoderBlock::Sparse(ours) = &encoder.layers[i] else {
                    unreachable!("layer {i} is sparse")
                };
                EncoderBlock::Sparse(SwitchEncoderLayer {
                    mha: layer.mha.clone(),
                    moe,
                    norm_attn,
                    norm_ffn,
                    dropout: ours.dropout.clone(),
                    norm_first: layer.norm_first,
                })
            } else {
                EncoderBlock::Dense(layer.clone())
            };
        }
        Ok(encoder)
    }
}
