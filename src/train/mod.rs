//! Training a [`SwitchLm`](crate::SwitchLm) with burn-train's Learner: the train/inference steps,
//! routing metrics, the learning-rate schedule, progress output and the run itself.

pub mod atomic;
mod guard;
mod loader;
mod logger;
mod metrics;
mod renderer;
mod run;
mod schedule;
mod step;

pub use guard::{Alarm, AlarmKind, Alarms, CollapsePolicy, HealthConfig, RunGuard};
pub use loader::{EpochLoader, EpochOrder, epoch_seed};
pub use logger::ResumeAwareLogger;
pub use metrics::{LmMetric, LmMetricKind};
pub use renderer::PlainRenderer;
pub use run::{
    ArtifactDir, TokenizerKind, TrainOptions, TrainSummary, TrainingConfig, epoch_metric,
    load_trained, train,
};
pub use schedule::WarmupCosineLr;
pub use step::LmStats;
