//! The Learner's train and inference steps for [`SwitchLm`], and the host-side copy of a step's
//! output that the metrics read.

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::lm::{LmBatch, LmOutput, SwitchLm};
use crate::metrics::GuardInput;
use crate::routing_stats::RoutingStats;

/// A step's losses and routing statistics on the host (read with one transaction).
#[derive(Debug, Clone, Default)]
pub struct LmStats {
    /// Total objective ce + α·aux + β·z.
    pub loss: f64,
    /// Cross-entropy, nats per token.
    pub cross_entropy: f64,
    /// Tokens in the batch (the weight of this step in epoch averages).
    pub num_tokens: usize,
    /// The sparse layers' routing: what the crate's [`routing_metrics`](crate::routing_metrics)
    /// and routing CSV read, exactly as for any other model.
    pub routing: RoutingStats,
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmStats;

    fn sync(self) -> LmStats {
        let scalars = Tensor::cat(vec![self.loss, self.cross_entropy], 0); // [2]
        let (routing, extra) = RoutingStats::read_with(&self.moe, vec![scalars]);
        let scalar = |i: usize| extra[0].get(i).copied().unwrap_or(f64::NAN);
        LmStats {
            loss: scalar(0),
            cross_entropy: scalar(1),
            num_tokens: self.num_tokens,
            routing,
        }
    }
}

impl Adaptor<RoutingStats> for LmStats {
    fn adapt(&self) -> RoutingStats {
        self.routing.clone()
    }
}

impl Adaptor<GuardInput> for LmStats {
    fn adapt(&self) -> GuardInput {
        GuardInput {
            loss: self.loss,
            routing: self.routing.clone(),
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
