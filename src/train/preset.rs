//! Named starting points for a training run, in the library so that a program, its help text and a
//! library user read the same values (as candle names its configs, `Config::v0_1_8x7b()`).
//!
//! | | [`Preset::Cpu`] | [`Preset::Gpu`] |
//! |---|---|---|
//! | model | d 128, f 512, 4 layers, 4 heads | d 384, f 1536, 6 layers, 6 heads |
//! | experts | 8 in every other layer, top-1 | 8 in every other layer, top-1 |
//! | data | BPE 1024, batches of 32 × 128 tokens | BPE 1024, batches of 64 × 256 tokens |
//! | length | a budget of 500 steps in 10 epochs, lr 2e-3 | 5 passes in 10 epochs each, lr 1e-3 |
//!
//! Both are pre-norm, dropout 0.1 (attention, residual branches and the experts), and otherwise
//! the defaults of [`TrainingConfig`] and [`SwitchFeedForwardConfig`](crate::SwitchFeedForwardConfig):
//! the Switch Transformer's routing (capacity factor 1.25, eval 2.0, jitter 0.01, α 0.01,
//! β 0.001), AdamW with weight decay 0.01, warm-up then cosine to 0.1·lr, clipping at norm 1.

use super::config::{TokenizerKind, TrainingConfig};
use crate::{SwitchEncoderConfig, SwitchLmConfig};

/// A named training config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// About 10 minutes on 2 CPU cores (ndarray, release build): a 2.9 M-parameter model, 500
    /// steps of 4,096 tokens.
    Cpu,
    /// A 6-layer model of d 384 for whole passes over the corpus on a GPU.
    Gpu,
}

impl Preset {
    /// Every preset, in the order programs list them.
    pub const ALL: [Preset; 2] = [Preset::Cpu, Preset::Gpu];

    /// `cpu` or `gpu`: the name a program's flag takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }

    /// The preset called `name` (`cpu`, `gpu`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The training config. Its `model.vocab_size` is 0: a run sets it from the tokenizer.
    pub fn config(self) -> TrainingConfig {
        let gpu = self == Self::Gpu;
        let d_model = if gpu { 384 } else { 128 };
        let d_ff = 4 * d_model;
        let heads = if gpu { 6 } else { 4 };
        let layers = if gpu { 6 } else { 4 };
        let experts = 8;
        let seq_len = if gpu { 256 } else { 128 };
        let encoder = SwitchEncoderConfig::new(d_model, d_ff, heads, layers, experts)
            .with_norm_first(true)
            .with_dropout(0.1);
        let model = SwitchLmConfig::new(0, seq_len, encoder);
        let config = TrainingConfig::new(model, TokenizerKind::Bpe { vocab_size: 1024 })
            .with_batch_size(if gpu { 64 } else { 32 })
            .with_lr(if gpu { 1e-3 } else { 2e-3 });
        if gpu {
            // Whole passes; a checkpoint every tenth of the run (at most a pass).
            config.with_num_epochs(5)
        } else {
            // A step budget of 500 in 10 epochs of 50 steps: a checkpoint every tenth of the run.
            config.with_num_epochs(10).with_max_steps(Some(500))
        }
    }
}

impl TrainingConfig {
    /// [`Preset::Cpu`]'s config.
    pub fn cpu() -> Self {
        Preset::Cpu.config()
    }

    /// [`Preset::Gpu`]'s config.
    pub fn gpu() -> Self {
        Preset::Gpu.config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_hold_their_documented_values() {
        let cpu = TrainingConfig::cpu();
        let moe = cpu.model.encoder.moe();
        assert_eq!(
            (moe.d_model, moe.d_ff, moe.num_experts, moe.top_k),
            (128, 512, 8, 1)
        );
        assert_eq!(
            (cpu.model.encoder.n_layers, cpu.model.encoder.layer.n_heads),
            (4, 4)
        );
        assert_eq!((cpu.batch_size, cpu.model.max_seq_len), (32, 128));
        assert_eq!(
            (cpu.max_steps, cpu.num_epochs, cpu.lr),
            (Some(500), 10, 2e-3)
        );
        let gpu = TrainingConfig::gpu();
        assert_eq!(gpu.model.encoder.moe().d_model, 384);
        assert_eq!((gpu.max_steps, gpu.num_epochs), (None, 5));
        for preset in Preset::ALL {
            assert_eq!(Preset::from_name(preset.name()), Some(preset));
            let mut config = preset.config();
            config.model.vocab_size = 1024;
            config.validate().expect("a preset is valid");
        }
    }
}
