//! Hugging Face interop: the sparse MoE blocks of seven model families' checkpoints
//! (safetensors) loaded into [`SwitchFeedForward`] blocks, and ours saved under their names,
//! through burn-store 0.21's [`SafetensorsStore`](burn_store::SafetensorsStore).
//!
//! Most families store every expert as its own `nn.Linear` weights (`[out, in]`); we stack them
//! into `[E, d, f]` / `[E, f, d]` on import and split them again on export. gpt-oss stores them
//! fused (`gate_up_proj` `[E, d, 2f]`, gate and up interleaved column by column; `down_proj`
//! `[E, f, d]`), in f32/bf16 or as MXFP4 blocks, which the import dequantises.
//!
//! | format | router | expert i (ours: W₁, W₃, W₂) | shared expert |
//! |---|---|---|---|
//! | [`SwitchTransformers`](HfFormat::SwitchTransformers) | `router.classifier.weight` `[E, d]` | `experts.expert_{i}.wi`, –, `wo` | – |
//! | [`Mixtral`](HfFormat::Mixtral) | `gate.weight` | `experts.{i}.w1`, `w3`, `w2` | – |
//! | [`Qwen2Moe`](HfFormat::Qwen2Moe) | `gate.weight` | `experts.{i}.gate_proj`, `up_proj`, `down_proj` | `shared_expert.{gate,up,down}_proj`, `shared_expert_gate` `[1, d]` |
//! | [`Qwen3Moe`](HfFormat::Qwen3Moe), [`Olmoe`](HfFormat::Olmoe) | `gate.weight` | `experts.{i}.gate_proj`, `up_proj`, `down_proj` | – |
//! | [`DeepseekV3`](HfFormat::DeepseekV3) | `gate.weight`, `gate.e_score_correction_bias` `[E]` | `experts.{i}.gate_proj`, `up_proj`, `down_proj` | `shared_experts.{gate,up,down}_proj` (no gate) |
//! | [`GptOss`](HfFormat::GptOss) | `router.weight`, `router.bias` `[E]` | `experts.gate_up_proj` `[E, d, 2f]` (or `_blocks` + `_scales`, MXFP4) and `_bias` `[E, 2f]`, `experts.down_proj` `[E, f, d]` (or MXFP4) and `_bias` `[E, d]` | – |
//!
//! Names are relative to a block prefix such as `model.layers.3.block_sparse_moe` (Mixtral),
//! `model.layers.3.mlp` (the Qwens, OLMoE, DeepSeek-V3, gpt-oss) or
//! `encoder.block.1.layer.1.mlp` (SwitchTransformers).
//!
//! **Semantics** (read from transformers 4.57.1 and checked against it in `tests/hf.rs`).
//! [`HfFormat::config`] builds the config whose forward is HF's in inference, and
//! [`HfFormat::from_config_json`] reads the widths, E, k and the routing keys from a model's
//! `config.json`:
//! - Switch: softmax router in f32, top-1, the gate is the unnormalised probability. Its
//!   capacity is a fixed `expert_capacity` per sequence where ours is a factor over the flat
//!   batch: outputs agree whenever neither drops a token.
//! - Mixtral, Qwen2/3-MoE, OLMoE: softmax, top-k, the k gates renormalised when
//!   `norm_topk_prob` (always for Mixtral), SwiGLU experts, dropless. Qwen2-MoE adds
//!   σ(x·w_s)·shared_expert(x).
//! - DeepSeek-V3: sigmoid scores; the selection adds `e_score_correction_bias` (a frozen
//!   [`selection_bias`](SwitchFeedForwardConfig::selection_bias)) and is limited to the
//!   `topk_group` best of `n_group` expert groups; the gates are the unbiased scores,
//!   normalised (+1e-20) and multiplied by `routed_scaling_factor`; the shared experts are added
//!   without a gate.
//! - gpt-oss: a router bias; top-k of the logits, softmax over the k (= softmax then
//!   renormalise); experts with biases and the clamped SwiGLU (u + 1)·g·σ(1.702·g), g ≤ 7,
//!   |u| ≤ 7 ([`GluClamp`]).
//!
//! One HF shared expert of width S is n = S / d_ff of ours (the hidden units split into n
//! blocks give the same sum).
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! use switch_moe::hf::{HfCheckpoint, HfExport, HfFormat};
//! # fn main() -> switch_moe::Result<()> {
//! let device = Default::default();
//! let (format, config) = HfFormat::from_config_json("Mixtral-8x7B/config.json")?;
//! let mut ckpt = HfCheckpoint::open("Mixtral-8x7B/model-00001-of-00019.safetensors")?;
//! let block = ckpt.load_block::<NdArray>(&config, "model.layers.0.block_sparse_moe", format, &device)?;
//! HfExport::new(format)
//!     .block("model.layers.0.block_sparse_moe", &block)
//!     .save("layer0.safetensors")?;
//! # Ok(()) }
//! ```
//!
//! The code: the formats and their names here, `config.json` in `config_json.rs`, reading
//! in `import.rs` ([`HfCheckpoint`]), writing in `export.rs` ([`HfExport`]), MXFP4 in `mxfp4.rs`.

mod config_json;
mod export;
mod import;
mod mxfp4;

pub use export::HfExport;
pub use import::HfCheckpoint;

use burn::tensor::backend::Backend;

use crate::experts::ExpertActivation;
use crate::moe::{GluClamp, SwitchFeedForward, SwitchFeedForwardConfig};
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
    /// `Qwen3MoeSparseMoeBlock`: Qwen2-MoE's experts and router without the shared expert; the
    /// released checkpoints renormalise the k gates (`norm_topk_prob: true`).
    Qwen3Moe,
    /// `OlmoeSparseMoeBlock`: as Qwen3-MoE, its expert width under `intermediate_size`, gates not
    /// renormalised by default.
    Olmoe,
    /// `DeepseekV3MoE`: sigmoid scores, a frozen selection bias (`e_score_correction_bias`),
    /// group-limited selection, routed scaling, ungated shared experts.
    DeepseekV3,
    /// `GptOssMLP`: a router with a bias, fused experts with biases and the clamped SwiGLU,
    /// dense or MXFP4.
    GptOss,
}

/// The HF names of one expert's three (or two) weights.
pub(crate) struct ExpertNames {
    pub(crate) w_in: &'static str,
    pub(crate) w_up: Option<&'static str>,
    pub(crate) w_out: &'static str,
}

/// The HF names of a block's shared expert(s).
pub(crate) struct SharedNames {
    /// The shared MLP's module name (its weights are `{name}.gate_proj.weight`, …).
    pub(crate) name: &'static str,
    /// The sigmoid gate's weight `[1, d]`, if the family gates the shared output.
    pub(crate) gate: Option<&'static str>,
}

/// gpt-oss's clamped SwiGLU: α and the limit are constants of `GptOssExperts`, not config.
const GPT_OSS_CLAMP: (f64, f64) = (1.702, 7.0);

impl HfFormat {
    /// Every format, in the order of the table above.
    pub const ALL: [HfFormat; 7] = [
        Self::SwitchTransformers,
        Self::Mixtral,
        Self::Qwen2Moe,
        Self::Qwen3Moe,
        Self::Olmoe,
        Self::DeepseekV3,
        Self::GptOss,
    ];

    /// A config whose inference forward is this family's, with widths, E and k as given:
    ///
    /// | format | experts | router | gates | other |
    /// |---|---|---|---|---|
    /// | Switch | ReLU | softmax, jitter 0.01 (training) | top-1 probability | capacity (HF: per sequence) |
    /// | Mixtral | SwiGLU | softmax | renormalised | dropless |
    /// | Qwen2-MoE | SwiGLU | softmax | not renormalised (`norm_topk_prob = false`) | dropless, one gated shared expert of width `d_ff` |
    /// | Qwen3-MoE | SwiGLU | softmax | renormalised (the released `norm_topk_prob = true`) | dropless |
    /// | OLMoE | SwiGLU | softmax | not renormalised | dropless |
    /// | DeepSeek-V3 | SwiGLU | sigmoid, frozen selection bias, 8 groups, best 4 | renormalised (+1e-20), × 2.5 | dropless, one ungated shared expert |
    /// | gpt-oss | clamped SwiGLU, biases | softmax, router bias | renormalised | dropless |
    ///
    /// Change what a model's `config.json` says otherwise (`with_normalize_gates`,
    /// `with_num_shared_experts(S / d_ff)`, `with_n_group`, …), or read it with
    /// [`from_config_json`](Self::from_config_json). No expert biases except gpt-oss's; no jitter
    /// or expert dropout except Switch's jitter.
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
        let gated = base
            .with_swiglu()
            .with_jitter(0.0)
            .with_expert_dropout(0.0)
            .with_dropless(true);
        match self {
            Self::SwitchTransformers => SwitchFeedForwardConfig::new(d_model, d_ff, num_experts)
                .with_top_k(top_k)
                .with_bias(false)
                .with_jitter(0.01),
            Self::Mixtral | Self::Qwen3Moe => gated.with_normalize_gates(true),
            Self::Olmoe => gated.with_normalize_gates(false),
            Self::Qwen2Moe => gated
                .with_normalize_gates(false)
                .with_num_shared_experts(1)
                .with_shared_gate(true),
            Self::DeepseekV3 => gated
                .with_router_score(RouterScore::Sigmoid)
                .with_normalize_gates(true)
                .with_selection_bias(true)
                .with_n_group(8)
                .with_topk_group(4)
                .with_routed_scaling_factor(2.5)
                .with_num_shared_experts(1)
                .with_shared_gate(false),
            Self::GptOss => gated
                .with_normalize_gates(true)
                .with_bias(true)
                .with_router_bias(true)
                .with_glu_clamp(Some(
                    GluClamp::new()
                        .with_alpha(GPT_OSS_CLAMP.0)
                        .with_limit(GPT_OSS_CLAMP.1),
                )),
        }
    }

    /// The `model_type` of this family's `config.json`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::SwitchTransformers => "switch_transformers",
            Self::Mixtral => "mixtral",
            Self::Qwen2Moe => "qwen2_moe",
            Self::Qwen3Moe => "qwen3_moe",
            Self::Olmoe => "olmoe",
            Self::DeepseekV3 => "deepseek_v3",
            Self::GptOss => "gpt_oss",
        }
    }

    /// The router weight's name.
    pub(crate) fn router_name(&self) -> &'static str {
        match self {
            Self::SwitchTransformers => "router.classifier.weight",
            Self::GptOss => "router.weight",
            _ => "gate.weight",
        }
    }

    /// The router logit bias's name (gpt-oss only).
    pub(crate) fn router_bias_name(&self) -> Option<&'static str> {
        (*self == Self::GptOss).then_some("router.bias")
    }

    /// The frozen selection bias's name (DeepSeek-V3 only).
    pub(crate) fn selection_bias_name(&self) -> Option<&'static str> {
        (*self == Self::DeepseekV3).then_some("gate.e_score_correction_bias")
    }

    /// Whether the experts are stored fused (gpt-oss) rather than one module per expert.
    pub(crate) fn fused(&self) -> bool {
        *self == Self::GptOss
    }

    pub(crate) fn expert_prefix(&self, i: usize) -> String {
        match self {
            Self::SwitchTransformers => format!("experts.expert_{i}"),
            _ => format!("experts.{i}"),
        }
    }

    /// The per-expert weight names (for gpt-oss, whose experts are fused, the names of the
    /// shared-MLP convention; unused).
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
            _ => ExpertNames {
                w_in: "gate_proj",
                w_up: Some("up_proj"),
                w_out: "down_proj",
            },
        }
    }

    pub(crate) fn shared(&self) -> Option<SharedNames> {
        match self {
            Self::Qwen2Moe => Some(SharedNames {
                name: "shared_expert",
                gate: Some("shared_expert_gate.weight"),
            }),
            Self::DeepseekV3 => Some(SharedNames {
                name: "shared_experts",
                gate: None,
            }),
            _ => None,
        }
    }

    pub(crate) fn gated(&self) -> bool {
        *self != Self::SwitchTransformers
    }

    fn score(&self) -> RouterScore {
        match self {
            Self::DeepseekV3 => RouterScore::Sigmoid,
            _ => RouterScore::Softmax,
        }
    }

    /// Why `block` cannot hold this format's sparse block (either direction), if it cannot:
    /// plain vs gated experts, the activation, expert and router biases, the router's scores,
    /// group-limited selection or routed scaling where the family has none, and shared experts
    /// (present, gated) unlike the family's.
    pub(crate) fn block_problem<B: Backend>(&self, block: &SwitchFeedForward<B>) -> Option<String> {
        let x = &block.experts;
        let router = &block.router;
        let fix = format!("build it with HfFormat::{self:?}.config(..)");
        let gated = x.w_up.is_some();
        let clamp = match x.activation {
            ExpertActivation::ClampedSwiGlu { alpha, limit } => Some((alpha, limit)),
            _ => None,
        };
        let gpt_oss = *self == Self::GptOss;
        let biases = [x.b_in.is_some(), x.b_up.is_some(), x.b_out.is_some()];
        let shared = self.shared();
        if gated != self.gated() {
            Some(format!(
                "{self:?} experts are {}, the block's are {}: {fix}",
                if self.gated() {
                    "gated (SwiGLU)"
                } else {
                    "plain (ReLU)"
                },
                if gated { "gated" } else { "plain" },
            ))
        } else if gpt_oss && clamp != Some(GPT_OSS_CLAMP) {
            Some(format!(
                "GptOss experts use the clamped SwiGLU (glu_clamp alpha 1.702, limit 7); the \
                 block's activation is {:?}: {fix}",
                x.activation
            ))
        } else if !gpt_oss && clamp.is_some() {
            Some(format!(
                "{self:?} experts use SiLU's SwiGLU; the block's is clamped (set glu_clamp = None)"
            ))
        } else if gpt_oss && biases != [true, true, true] {
            Some("GptOss experts have biases on all three projections (set bias = true)".into())
        } else if !gpt_oss && biases.contains(&true) {
            Some(format!(
                "{self:?} experts have no biases; the block has (set bias = false)"
            ))
        } else if router.gate.bias.is_some() != gpt_oss {
            Some(if gpt_oss {
                "the GptOss router has a bias (set router_bias = true)".to_string()
            } else {
                format!(
                    "the {self:?} router has no bias; the block's has (set router_bias = false)"
                )
            })
        } else if router.score != self.score() {
            Some(format!(
                "{self:?} routes by {:?} scores; the block by {:?}",
                self.score(),
                router.score
            ))
        } else if *self != Self::DeepseekV3 && (router.n_group > 1 || router.scaling != 1.0) {
            Some(format!(
                "{self:?} has no group-limited routing or routed scaling; the block has \
                 n_group = {}, routed_scaling_factor = {}",
                router.n_group, router.scaling
            ))
        } else if block.shared.is_some() && shared.is_none() {
            Some(format!(
                "{self:?} has no shared experts; the block has (num_shared_experts = 0)"
            ))
        } else if let (Some(s), Some(names)) = (&block.shared, &shared)
            && s.gate.is_some() != names.gate.is_some()
        {
            Some(if names.gate.is_some() {
                format!("{self:?} gates its shared expert: set shared_gate = true")
            } else {
                format!("{self:?} does not gate its shared experts: set shared_gate = false")
            })
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
