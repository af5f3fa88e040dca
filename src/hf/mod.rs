//! Hugging Face interop: the sparse MLP blocks of `SwitchTransformers`, `Mixtral` and `Qwen2-MoE`
//! checkpoints (safetensors) loaded into [`SwitchFeedForward`] blocks, and ours saved under
//! their names, through burn-store 0.21's [`SafetensorsStore`].
//!
//! Hugging Face stores every expert as its own `nn.Linear` weights (`[out, in]`); we stack them
//! into `[E, d, f]` / `[E, f, d]` on import and split them again on export.
//!
//! | format | router | expert i (ours: W₁, W₃, W₂) | shared expert |
//! |---|---|---|---|
//! | [`SwitchTransformers`](HfFormat::SwitchTransformers) | `router.classifier.weight` `[E, d]` | `experts.expert_{i}.wi`, –, `wo` | – |
//! | [`Mixtral`](HfFormat::Mixtral) | `gate.weight` | `experts.{i}.w1`, `w3`, `w2` | – |
//! | [`Qwen2Moe`](HfFormat::Qwen2Moe) | `gate.weight` | `experts.{i}.gate_proj`, `up_proj`, `down_proj` | `shared_expert.{gate,up,down}_proj`, `shared_expert_gate` `[1, d]` |
//!
//! Names are relative to a block prefix such as `model.layers.3.block_sparse_moe` (Mixtral),
//! `model.layers.3.mlp` (Qwen2-MoE) or `encoder.block.1.layer.1.mlp` (SwitchTransformers).
//!
//! **Semantics.** [`HfFormat::config`] builds the config whose forward is HF's in inference:
//! softmax router in f32, then top-k; Switch's top-1 gate is the unnormalised probability;
//! Mixtral renormalises the k gates, Qwen2-MoE does so when `norm_topk_prob` (set
//! `normalize_gates`); Mixtral and Qwen2-MoE never drop tokens (`dropless`). Qwen2-MoE adds
//! σ(x·w_s)·shared_expert(x); one shared expert of width S is n = S / d_ff of ours (the hidden
//! units split into n blocks give the same sum). Switch Transformers' capacity is a fixed
//! `expert_capacity` per sequence where ours is a factor over the flat batch: outputs agree
//! whenever neither drops a token.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! use switch_moe::hf::{HfCheckpoint, HfExport, HfFormat};
//! # fn main() -> switch_moe::Result<()> {
//! let device = Default::default();
//! let config = HfFormat::Mixtral.config(4096, 14336, 8, 2);
//! let mut ckpt = HfCheckpoint::open("model-00001-of-00019.safetensors")?;
//! let block = ckpt.load_block::<NdArray>(&config, "model.layers.0.block_sparse_moe", HfFormat::Mixtral, &device)?;
//! HfExport::new(HfFormat::Mixtral)
//!     .block("model.layers.0.block_sparse_moe", &block)
//!     .save("layer0.safetensors")?;
//! # Ok(()) }
//! ```

//!
//! The code: the formats and their names here, reading in [`import`] ([`HfCheckpoint`]), writing
//! in [`export`] ([`HfExport`]).

mod export;
mod import;

pub use export::HfExport;
pub use import::HfCheckpoint;

use burn::tensor::backend::Backend;

use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};
use crate::router::RouterScore;

/// Which Hugging Face model family a sparse block's tensors are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfFormat {
    /// `SwitchTransformersSparseMLP`: top-1, ReLU experts `wi`/`wo`, router `router.classifier`.
    SwitchTransformers,
    /// `MixtralSparseMoeBlock`: top-k (2), SwiGLU experts `w1`/`w3`/`w2`, router `gate`.
    Mixtral,
    /// `Qwen2MoeSparseMoeBlock`: top-k, SwiGLU experts `gate_proj`/`up_proj`/`down_proj`, a gated
    /// shared expert.
    Qwen2Moe,
}

/// The HF names of one expert's three (or two) weights.
pub(crate) struct ExpertNames {
    pub(crate) w_in: &'static str,
    pub(crate) w_up: Option<&'static str>,
    pub(crate) w_out: &'static str,
}

impl HfFormat {
    /// A config whose inference forward is this family's: widths, E and k as given; no expert
    /// biases; router without jitter except Switch's 0.01; Mixtral and Qwen2-MoE gated (SwiGLU)
    /// and dropless, Mixtral renormalising the k gates, Qwen2-MoE not (its `norm_topk_prob =
    /// false` default; change with `with_normalize_gates`) and with one gated shared expert of
    /// width `d_ff` (for `shared_expert_intermediate_size` S = n·d_ff, `with_num_shared_experts(n)`).
    ///
    /// # Panics
    /// Never; an invalid width is reported by `validate` / `init`.
    pub fn config(
        &self,
        d_model: usize,
        d_ff: usize,
        num_experts: usize,
        top_k: usize,
    ) -> SwitchFeedForwardConfig {
        let base = SwitchFeedForwardConfig::new(d_model, d_ff, num_experts)
            .with_top_k(top_k)
            .with_bias(false)
            .with_router_score(RouterScore::Softmax);
        match self {
            Self::SwitchTransformers => base.with_jitter(0.01),
            Self::Mixtral => base
                .with_swiglu()
                .with_jitter(0.0)
                .with_expert_dropout(0.0)
                .with_dropless(true)
                .with_normalize_gates(true),
            Self::Qwen2Moe => base
                .with_swiglu()
                .with_jitter(0.0)
                .with_expert_dropout(0.0)
                .with_dropless(true)
                .with_normalize_gates(false)
                .with_num_shared_experts(1)
                .with_shared_gate(true),
        }
    }

    pub(crate) fn router_name(&self) -> &'static str {
        match self {
            Self::SwitchTransformers => "router.classifier.weight",
            Self::Mixtral | Self::Qwen2Moe => "gate.weight",
        }
    }

    pub(crate) fn expert_prefix(&self, i: usize) -> String {
        match self {
            Self::SwitchTransformers => format!("experts.expert_{i}"),
            Self::Mixtral | Self::Qwen2Moe => format!("experts.{i}"),
        }
    }

    pub(crate) fn expert_names(&self) -> ExpertNames {
        match self {
            Self::SwitchTransformers => ExpertNames {
                w_in: "wi",
                w_up: None,
                w_out: "wo",
            },
            Self::Mixtral => ExpertNames {
                w_in: "w1",
                w_up: Some("w3"),
                w_out: "w2",
            },
            Self::Qwen2Moe => ExpertNames {
                w_in: "gate_proj",
                w_up: Some("up_proj"),
                w_out: "down_proj",
            },
        }
    }

    pub(crate) fn gated(&self) -> bool {
        self.expert_names().w_up.is_some()
    }

    pub(crate) fn has_shared(&self) -> bool {
        *self == Self::Qwen2Moe
    }

    /// Why `block` cannot hold this format's sparse block (either direction), if it cannot:
    /// plain vs gated experts, expert biases, sigmoid scores, shared experts in a format
    /// without them, or Qwen2-MoE's shared expert without its gate.
    pub(crate) fn block_problem<B: Backend>(&self, block: &SwitchFeedForward<B>) -> Option<String> {
        let x = &block.experts;
        let gated = x.w_up.is_some();
        if gated != self.gated() {
            Some(format!(
                "{self:?} experts are {}, the block's are {}: build it with HfFormat::{self:?}.config(..)",
                if self.gated() {
                    "gated (SwiGLU)"
                } else {
                    "plain (ReLU)"
                },
                if gated { "gated" } else { "plain" },
            ))
        } else if x.b_in.is_some() || x.b_out.is_some() {
            Some(format!(
                "{self:?} experts have no biases; the block has (set bias = false)"
            ))
        } else if block.router.score != RouterScore::Softmax {
            Some(format!(
                "{self:?} routes by softmax; the block uses sigmoid scores"
            ))
        } else if block.shared.is_some() && !self.has_shared() {
            Some(format!(
                "{self:?} has no shared experts; the block has (num_shared_experts = 0)"
            ))
        } else if block.shared.as_ref().is_some_and(|s| s.gate.is_none()) {
            Some("Qwen2-MoE gates its shared expert: set shared_gate = true".to_string())
        } else {
            None
        }
    }
}

/// `prefix.name`, or `name` for an empty prefix.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_end_matches('.');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
