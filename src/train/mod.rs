//! Training a [`SwitchLm`](crate::SwitchLm) with burn-train's Learner: the run's config, its
//! artifact directory, the train/inference steps, metrics, the learning-rate schedule, progress
//! output and the run itself.

mod app_log;
mod artifacts;
pub mod atomic;
mod calibrate;
mod config;
pub(crate) mod human;
mod learner;
mod loader;
mod logger;
mod metrics;
mod plan;
mod preflight;
mod preset;
mod renderer;
mod run;
mod schedule;
mod step;
mod watch;

pub use crate::metrics::{Alarm, AlarmKind, Alarms, CollapsePolicy, HealthConfig, RunGuard};
pub use app_log::RunLogInstaller;
pub use artifacts::{ArtifactDir, TrainedWeights, epoch_metric, load_trained};
pub use calibrate::{StepTiming, time_steps};
pub use config::{TokenizerKind, TrainingConfig};
pub use loader::{EpochLoader, EpochOrder, epoch_seed};
pub use logger::ResumeAwareLogger;
pub use metrics::{LmMetric, LmMetricKind};
pub use plan::{TrainOptions, TrainPlan, TrainSummary};
pub use preset::Preset;
pub use renderer::PlainRenderer;
pub use run::{train, train_data_parallel, train_with_plan};
pub use schedule::{WarmupCosineLr, WarmupStableDecayLr};
pub use step::LmStats;
