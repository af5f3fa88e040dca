//! The Learner's train and inference steps for [`SwitchLm`], and the host-side copy of a step's
//! output that the metrics read.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, Transaction};
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::lm::{LmBatch, LmOutput, SwitchLm};

/// A step's losses and routing statistics on the host (read with one transaction).
#[derive(Debug, Clone, Default)]
pub struct LmStats {
    /// Total objective ce + α·aux + β·z.
    pub loss: f64,
    /// Cross-entropy, nats per token.
    pub cross_entropy: f64,
    /// Mean load-balancing loss over sparse layers.
    pub aux_loss: f64,
    /// Mean router z-loss over sparse layers.
    pub z_loss: f64,
    /// Token fraction per sparse layer and expert `[L][E]`.
    pub token_fractions: Vec<Vec<f64>>,
    /// Mean router probability per sparse layer and expert `[L][E]`.
    pub router_prob_mean: Vec<Vec<f64>>,
    /// Dropped fraction per sparse layer `[L]`.
    pub dropped_fraction: Vec<f64>,
    /// Mean router entropy per sparse layer `[L]`.
    pub router_entropy: Vec<f64>,
    /// Tokens in the batch (the weight of this step in epoch averages).
    pub num_tokens: usize,
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmStats;

    fn sync(self) -> LmStats {
        let scalars = Tensor::cat(
            vec![
                self.loss.clone(),
                self.cross_entropy.clone(),
                self.moe.aux_loss.clone(),
                self.moe.z_loss.clone(),
            ],
            0,
        ); // [4]
        let data = Transaction::default()
            .register(scalars)
            .register(self.moe.token_fractions()) // [L, E]
            .register(self.moe.router_prob_mean()) // [L, E]
            .register(self.moe.dropped_fraction()) // [L]
            .register(self.moe.router_entropy()) // [L]
            .execute();
        let values: Vec<Vec<f64>> = data
            .into_iter()
            .map(|d| d.convert::<f64>().to_vec::<f64>().unwrap_or_default())
            .collect();
        let layers = self.moe.layers.len();
        let rows = |v: &[f64]| -> Vec<Vec<f64>> {
            let e = v.len() / layers.max(1);
            v.chunks(e.max(1)).map(<[f64]>::to_vec).collect()
        };
        let scalar = |i: usize| values[0].get(i).copied().unwrap_or(f64::NAN);
        LmStats {
            loss: scalar(0),
            cross_entropy: scalar(1),
            aux_loss: scalar(2),
            z_loss: scalar(3),
            token_fractions: rows(&values[1]),
            router_prob_mean: rows(&values[2]),
            dropped_fraction: values[3].clone(),
            router_entropy: values[4].clone(),
            num_tokens: self.num_tokens,
        }
    }
}

impl Adaptor<LmStats> for LmStats {
    fn adapt(&self) -> LmStats {
        self.clone()
    }
}

impl<B: AutodiffBackend> TrainStep for SwitchLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let output = self.forward_step(batch);
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output.detach())
    }
}

impl<B: Backend> InferenceStep for SwitchLm<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        self.forward_step(batch)
    }
}
