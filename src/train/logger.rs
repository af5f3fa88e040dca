//! burn-train's file metric logger, made correct after a resume.
//!
//! In burn-train 0.21 the event store numbers the first epoch it sees 1, also when the Learner
//! resumes from checkpoint k; the first resumed epoch's logs then land in `epoch-1/`, truncating
//! the real epoch 1's files (later epochs are numbered from the Learner's summaries and are right).
//! This wrapper files that first epoch under its true number k + 1.

use std::path::Path;

use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, NumericEntry};

/// A [`FileMetricLogger`] whose first logged epoch is `first_epoch`.
pub struct ResumeAwareLogger {
    inner: FileMetricLogger,
    first_epoch: usize,
}

impl ResumeAwareLogger {
    /// Logs under `directory`; the run's first epoch is `first_epoch` (1 for a fresh run).
    pub fn new(directory: &Path, first_epoch: usize) -> Self {
        Self {
            inner: FileMetricLogger::new(directory),
            first_epoch,
        }
    }
}

impl MetricLogger for ResumeAwareLogger {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let epoch = if epoch == 1 { self.first_epoch } else { epoch };
        self.inner.log(update, epoch, split)
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.inner.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.inner.log_metric_definition(definition)
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.inner.log_epoch_summary(summary)
    }
}
