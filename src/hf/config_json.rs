//! A model's `config.json` → [`HfFormat`] and the [`SwitchFeedForwardConfig`] of its sparse
//! blocks. The keys, and their defaults when absent, are those of transformers 4.57.1's
//! configuration classes.

use std::path::Path;

use serde_json::{Map, Value};

use super::HfFormat;
use crate::error::{Error, Result};
use crate::moe::SwitchFeedForwardConfig;

impl HfFormat {
    /// The format whose `config.json` says `"model_type": model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// Reads a model's `config.json`: the family (`model_type`) and the config of its sparse
    /// blocks, [`config`](Self::config) with the widths, E, k and routing keys of the file:
    ///
    /// | format | d, f, E, k | routing keys read |
    /// |---|---|---|
    /// | Switch | `d_model`, `d_ff`, `num_experts`, 1 | `router_jitter_noise` |
    /// | Mixtral | `hidden_size`, `intermediate_size`, `num_local_experts`, `num_experts_per_tok` | `router_jitter_noise` |
    /// | Qwen2-MoE | `hidden_size`, `moe_intermediate_size`, `num_experts`, `num_experts_per_tok` | `norm_topk_prob`, `shared_expert_intermediate_size` (÷ f shared experts) |
    /// | Qwen3-MoE | as Qwen2-MoE | `norm_topk_prob` |
    /// | OLMoE | `hidden_size`, `intermediate_size`, `num_experts`, `num_experts_per_tok` | `norm_topk_prob` |
    /// | DeepSeek-V3 | `hidden_size`, `moe_intermediate_size`, `n_routed_experts`, `num_experts_per_tok` | `n_group`, `topk_group`, `routed_scaling_factor`, `norm_topk_prob`, `n_shared_experts` |
    /// | gpt-oss | `hidden_size`, `intermediate_size`, `num_local_experts`, `num_experts_per_tok` | – (α 1.702 and the limit 7 are constants in HF) |
    ///
    /// Routing keys that are absent take their HF defaults (`norm_topk_prob`: false for the
    /// Qwens and OLMoE, true for DeepSeek-V3). Which layers are sparse (`decoder_sparse_step`,
    /// `mlp_only_layers`, `first_k_dense_replace`) is not part of a block's config: choose the
    /// block prefixes accordingly.
    ///
    /// # Errors
    /// [`Error::Hf`] naming the file and the key: unreadable or not JSON, an unknown
    /// `model_type`, a missing or non-numeric width, or a shared width that is not a multiple of
    /// the expert width.
    pub fn from_config_json(path: impl AsRef<Path>) -> Result<(Self, SwitchFeedForwardConfig)> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::hf(path, format!("cannot read: {e}")))?;
        Self::from_config_str(&text).map_err(|message| Error::hf(path, message))
    }

    /// [`from_config_json`](Self::from_config_json) on the file's text; the error is the message.
    pub(crate) fn from_config_str(
        text: &str,
    ) -> std::result::Result<(Self, SwitchFeedForwardConfig), String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON config: {e}"))?;
        let json = value
            .as_object()
            .ok_or("not a JSON config: expected an object")?;
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("config.json has no \"model_type\"")?;
        let format = Self::from_model_type(model_type).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|f| f.model_type()).collect();
            format!("model_type {model_type:?} is not one of {known:?}")
        })?;
        let keys = Keys(json);
        let config = match format {
            Self::SwitchTransformers => format
                .config(
                    keys.usize("d_model")?,
                    keys.usize("d_ff")?,
                    keys.usize("num_experts")?,
                    1,
                )
                .with_jitter(keys.f64_or("router_jitter_noise", 0.01)?),
            Self::Mixtral => format
                .config(
                    keys.usize("hidden_size")?,
                    keys.usize("intermediate_size")?,
                    keys.usize("num_local_experts")?,
                    keys.usize("num_experts_per_tok")?,
                )
                .with_jitter(keys.f64_or("router_jitter_noise", 0.0)?),
            Self::Qwen2Moe | Self::Qwen3Moe => {
                let f = keys.usize("moe_intermediate_size")?;
                let mut config = format
                    .config(
                        keys.usize("hidden_size")?,
                        f,
                        keys.usize("num_experts")?,
                        keys.usize("num_experts_per_tok")?,
                    )
                    .with_normalize_gates(keys.bool_or("norm_topk_prob", false)?);
                if format == Self::Qwen2Moe {
                    let s = keys.usize("shared_expert_intermediate_size")?;
                    if f == 0 || s % f != 0 {
                        return Err(format!(
                            "shared_expert_intermediate_size {s} is not a multiple of \
                             moe_intermediate_size {f}"
                        ));
                    }
                    config = config
                        .with_num_shared_experts(s / f)
                        .with_shared_gate(s > 0);
                }
                config
            }
            Self::Olmoe => format
                .config(
                    keys.usize("hidden_size")?,
                    keys.usize("intermediate_size")?,
                    keys.usize("num_experts")?,
                    keys.usize("num_experts_per_tok")?,
                )
                .with_normalize_gates(keys.bool_or("norm_topk_prob", false)?),
            Self::DeepseekV3 => format
                .config(
                    keys.usize("hidden_size")?,
                    keys.usize("moe_intermediate_size")?,
                    keys.usize("n_routed_experts")?,
                    keys.usize("num_experts_per_tok")?,
                )
                .with_n_group(keys.usize_or("n_group", 8)?)
                .with_topk_group(keys.usize_or("topk_group", 4)?)
                .with_routed_scaling_factor(keys.f64_or("routed_scaling_factor", 2.5)?)
                .with_normalize_gates(keys.bool_or("norm_topk_prob", true)?)
                .with_num_shared_experts(keys.usize_or("n_shared_experts", 1)?),
            Self::GptOss => format.config(
                keys.usize("hidden_size")?,
                keys.usize("intermediate_size")?,
                keys.usize("num_local_experts")?,
                keys.usize("num_experts_per_tok")?,
            ),
        };
        Ok((format, config))
    }
}

/// Typed reads of a config's keys, errors naming the key.
struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    fn usize(&self, key: &str) -> std::result::Result<usize, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(format!("config.json has no {key:?}")),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("{key:?} is {v}, expected a non-negative integer")),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> std::result::Result<usize, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.usize(key),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> std::result::Result<f64, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("{key:?} is {v}, expected a number")),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> std::result::Result<bool, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{key:?} is {v}, expected true or false")),
        }
    }
}
