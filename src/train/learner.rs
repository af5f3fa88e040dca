//! burn-train's Learner assembled for a [`SwitchLm`] run: the loaders, the metrics (the LM's, the
//! routing metrics, the routing CSV, the guard), crash-safe checkpoints, early stopping, the
//! resume-aware logger, the run's application log and the progress output.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::data::dataset::Dataset;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::LearningRateMetric;
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::{
    LearningComponentsMarker, MetricEarlyStoppingStrategy, StoppingCondition, SupervisedTraining,
};

use super::app_log::RunLogInstaller;
use super::artifacts::ArtifactDir;
use super::atomic::CrashSafeRecorder;
use super::config::{EpochPlan, TrainingConfig};
use super::loader::EpochLoader;
use super::logger::ResumeAwareLogger;
use super::metrics::{LmMetric, LmMetricKind};
use super::plan::TrainPlan;
use super::renderer::PlainRenderer;
use super::schedule::WarmupCosineLr;
use super::watch::Watch;
use crate::data::{LmBatcher, TokenWindows};
use crate::lm::{LmBatch, SwitchLm};
use crate::metrics::{RoutingCsvMetric, RunGuard, routing_metrics};

/// burn-train's components of a run: the backend, our schedule and model, optimiser `O`.
pub(crate) type Components<B, O> = LearningComponentsMarker<B, WarmupCosineLr, SwitchLm<B>, O>;

/// What the Learner is assembled from.
pub(crate) struct LearnerSetup<'a, B: AutodiffBackend> {
    /// The run's directory.
    pub dir: &'a ArtifactDir,
    /// The run's config.
    pub config: &'a TrainingConfig,
    /// The plan (epochs, steps, sparse layers, devices).
    pub plan: &'a TrainPlan,
    /// The checkpoint epoch to resume from.
    pub resume_from: Option<usize>,
    /// Plain progress lines instead of the dashboard.
    pub plain: bool,
    /// Batches of the training split (each device's share of a step).
    pub train_loader: Arc<dyn DataLoader<B, LmBatch<B>>>,
    /// Batches of the validation split.
    pub valid_loader: Arc<dyn DataLoader<B::InnerBackend, LmBatch<B::InnerBackend>>>,
    /// Where the guard and the checkpointer report.
    pub watch: &'a Watch,
}

/// burn-train's supervised training with the run's metrics, guard, crash-safe checkpoints, early
/// stopping, logger and progress output.
pub(crate) fn supervised_training<B: AutodiffBackend, O>(
    setup: LearnerSetup<'_, B>,
) -> SupervisedTraining<Components<B, O>>
where
    O: Optimizer<SwitchLm<B>, B> + 'static,
{
    let LearnerSetup {
        dir,
        config,
        plan,
        resume_from,
        plain,
        train_loader,
        valid_loader,
        watch,
    } = setup;
    let mut training = SupervisedTraining::new(&dir.0, train_loader, valid_loader);
    let interrupter = training.interrupter();
    let guard = RunGuard::new(
        config.health.clone(),
        interrupter.clone(),
        watch.alarms.clone(),
    )
    .with_steps_per_epoch(plan.steps_per_epoch)
    .with_devices(plan.devices);
    training = training.metric_train(guard);
    for kind in [LmMetricKind::Loss, LmMetricKind::Perplexity] {
        training = training
            .metric_train_numeric(LmMetric::new(kind))
            .metric_valid_numeric(LmMetric::new(kind));
    }
    for metric in routing_metrics(config.model.encoder.moe().num_experts) {
        training = training
            .metric_train_numeric(metric.clone())
            .metric_valid_numeric(metric);
    }
    let csv = |split| RoutingCsvMetric::new(dir.routing_csv(), split, plan.sparse_layers.clone());
    training = training
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train(csv("train"))
        .metric_valid(csv("valid"))
        .with_file_checkpointer(CrashSafeRecorder::on_failure(
            interrupter,
            watch.write_failure.clone(),
        ))
        .num_epochs(
            plan.epoch_limit
                .unwrap_or(usize::MAX)
                .min(*plan.epochs.end()),
        )
        .with_metric_logger(ResumeAwareLogger::new(&dir.0, *plan.epochs.start()))
        .with_application_logger(Some(Box::new(RunLogInstaller::new(
            dir.0.join("experiment.log"),
        ))));
    if let Some(epoch) = resume_from {
        training = training.checkpoint(epoch);
    }
    if let Some(n_epochs) = config.patience {
        // The Learner's default checkpointing keeps the epoch of lowest validation "Loss" (our
        // cross-entropy metric has that name), so the best weights survive the stop.
        training = training.early_stopping(MetricEarlyStoppingStrategy::new(
            &LmMetric::new(LmMetricKind::Loss),
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
            StoppingCondition::NoImprovementSince { n_epochs },
        ));
    }
    if plain {
        let renderer = PlainRenderer::new(10)
            .with_run(plan.steps_per_epoch, plan.tokens_per_step())
            .with_devices(plan.devices);
        training = training.renderer(renderer);
    }
    training
}

/// The training loader (batches of `batch_size`: the global batch over the devices): each epoch's windows (a budget's random draw, or a slice of the stream
/// of shuffled passes) from (seed, epoch), starting at `first_epoch`; each epoch reseeds the
/// backend's generator (dropout, jitter) likewise.
pub(crate) fn train_loader<B: AutodiffBackend>(
    config: &TrainingConfig,
    epochs: &EpochPlan,
    windows: TokenWindows,
    first_epoch: usize,
    batch_size: usize,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, LmBatch<B>>> {
    let windows: Arc<dyn Dataset<Vec<u32>>> = Arc::new(windows);
    Arc::new(
        EpochLoader::new(windows, Arc::new(LmBatcher), batch_size, device.clone())
            .with_order(epochs.order)
            .with_seed(config.seed)
            .with_first_epoch(first_epoch)
            .with_backend_reseed(true),
    )
}
