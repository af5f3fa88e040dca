//! How fast a training step of a run's model goes on a device, measured rather than assumed: a
//! few optimiser steps (forward, backward, AdamW) on batches of the run's shape. A program uses it
//! to tell a user, before a long run, that another backend on the same machine would be faster
//! (wgpu on a software Vulkan driver is about ten times slower than ndarray on the same cores).
//!
//! The first step is timed apart: on wgpu and cuda it compiles every kernel of the model (minutes
//! on a software driver), which later steps of the same process reuse — so a calibration on the
//! training device is not wasted: the run's own first step is then fast.

use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::config::TrainingConfig;
use crate::lm::{LmBatch, SwitchLm};

/// Step times of a calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTiming {
    /// The first step (kernel compilation and autotuning on GPU backends, allocator warm-up).
    pub first: Duration,
    /// The mean of the steps after the first.
    pub per_step: Duration,
    /// Steps measured after the first.
    pub steps: usize,
}

impl StepTiming {
    /// Estimated time of `steps` training steps (the first step's extra cost included once).
    pub fn estimate(&self, steps: usize) -> Duration {
        let extra = self.first.saturating_sub(self.per_step);
        self.per_step * steps as u32 + extra
    }
}

/// Times `1 + steps` optimiser steps of `config`'s model on `device`, with a vocabulary of
/// `vocab_size` (a run's tokenizer decides it; the preset's size is close enough to time) and
/// batches of the config's shape filled with arbitrary token ids. The model and optimiser state
/// are dropped afterwards. Each step ends with a read of the loss, so asynchronous backends are
/// timed to completion.
///
/// # Panics
/// With the config's `init` message if the model config is invalid (validate it first).
pub fn time_steps<B: AutodiffBackend>(
    config: &TrainingConfig,
    vocab_size: usize,
    device: &B::Device,
    steps: usize,
) -> StepTiming {
    let mut model_config = config.model.clone();
    model_config.vocab_size = vocab_size.max(2);
    let mut model: SwitchLm<B> = model_config.init(device);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, SwitchLm<B>>();
    let (batch, seq) = (config.batch_size, config.seq_len());
    let ids = |offset: usize| {
        let data: Vec<i64> = (0..batch * seq)
            .map(|i| ((i * 7919 + offset) % model_config.vocab_size) as i64)
            .collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(data, [batch, seq]), device)
    };
    let mut step = |model: SwitchLm<B>| {
        let start = Instant::now();
        let batch = LmBatch {
            inputs: ids(0),
            targets: ids(1),
        };
        let output = model.forward_step(batch);
        let grads = GradientsParams::from_grads(output.loss.backward(), &model);
        let model = optimizer.step(config.lr, model, grads);
        // A host read of the loss: the step has run when it returns.
        let _: f32 = output.loss.into_scalar().elem();
        (model, start.elapsed())
    };
    let (next, first) = step(model);
    model = next;
    let mut total = Duration::ZERO;
    for _ in 0..steps {
        let (next, took) = step(model);
        model = next;
        total += took;
    }
    let _ = model.valid(); // drop the autodiff state with the model
    StepTiming {
        first,
        per_step: if steps == 0 {
            first
        } else {
            total / steps as u32
        },
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SwitchEncoderConfig, SwitchLmConfig};

    #[test]
    fn estimates_scale_with_the_steps_and_count_the_first_once() {
        let timing = StepTiming {
            first: Duration::from_secs(10),
            per_step: Duration::from_secs(2),
            steps: 3,
        };
        assert_eq!(timing.estimate(5), Duration::from_secs(18));

        let encoder = SwitchEncoderConfig::new(8, 16, 2, 2, 2);
        let config = TrainingConfig::new(
            SwitchLmConfig::new(0, 4, encoder),
            super::super::TokenizerKind::Char,
        )
        .with_batch_size(2);
        let measured =
            time_steps::<crate::backend::TestAutodiffBackend>(&config, 11, &Default::default(), 2);
        assert_eq!(measured.steps, 2);
        assert!(measured.per_step > Duration::ZERO && measured.first > Duration::ZERO);
    }
}
