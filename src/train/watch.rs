//! The run's side of the guard: what the [`RunGuard`](crate::metrics::RunGuard) and the
//! crash-safe checkpointer report back while burn-train's Learner runs — alarms, and a checkpoint
//! that could not be written — turned into the run's error when the Learner returns, naming the
//! last good checkpoint.

use std::sync::{Arc, Mutex};

use super::artifacts::ArtifactDir;
use crate::Result as MoeResult;
use crate::error::Error;
use crate::metrics::{AlarmKind, Alarms};

/// What the run's guard and checkpointer report back: alarms and a failed checkpoint write.
#[derive(Clone, Default)]
pub(crate) struct Watch {
    pub(crate) alarms: Alarms,
    pub(crate) write_failure: Arc<Mutex<Option<String>>>,
}

impl Watch {
    /// An error when the run was stopped: by a non-finite loss, a collapse alarm with
    /// `on_collapse = Stop`, or a checkpoint that could not be written. It names the last good
    /// checkpoint, which the stop left intact.
    pub(crate) fn check(&self, dir: &ArtifactDir) -> MoeResult<()> {
        // A non-finite loss reaches the guard through burn-train's metric thread, which can lag
        // the training loop: the Learner may already have checkpointed the epoch of the bad
        // step (or a later one) with poisoned weights. Those are set aside, so that the message
        // and a resume name the last checkpoint written before the non-finite step.
        let mut set_aside = String::new();
        if let Some(alarm) = self.alarms.stop()
            && matches!(alarm.kind, AlarmKind::NonFinite { .. })
        {
            let moved = dir.set_aside_from(alarm.epoch, "nonfinite");
            if !moved.is_empty() {
                set_aside = format!(
                    " ({} checkpoint file(s) written at or after the non-finite step renamed to \
                     *.nonfinite)",
                    moved.len()
                );
            }
        }
        let last_good = match dir.last_checkpoint() {
            Some(epoch) => format!(
                "the last good checkpoint is {} (epoch {epoch}): continue with \
                 `TrainOptions::resume`",
                dir.checkpoint_model(epoch).with_extension("mpk").display()
            ),
            None => "no checkpoint was saved yet: `TrainOptions::resume` starts the run over"
                .to_string(),
        };
        if let Some(message) = self.write_failure.lock().ok().and_then(|m| m.clone()) {
            return Err(Error::Checkpoint(format!(
                "training stopped: {message}; {last_good}"
            )));
        }
        if let Some(alarm) = self.alarms.stop() {
            let hint = match alarm.kind {
                AlarmKind::NonFinite { .. } => " (e.g. with a lower `lr`)",
                _ => "",
            };
            return Err(Error::Checkpoint(format!(
                "training stopped: {alarm}; {last_good}{hint}{set_aside}"
            )));
        }
        Ok(())
    }
}
