//! Watching a run of **any** model with Switch layers: a non-finite loss stops it; an expert that
//! stays dead or a collapsing router raises a one-line alarm and, with [`CollapsePolicy::Stop`],
//! stops it too.
//!
//! [`RunGuard`] is a burn-train text metric on the training split. Its input is [`GuardInput`] —
//! the step's loss and its [`RoutingStats`] — so a model's step output needs one
//! `Adaptor<GuardInput>` impl beside its `Adaptor<RoutingStats>` (examples/embed.rs does it).
//! The metric thread sees every step; when something is wrong the guard records an [`Alarm`],
//! prints a warning line on stderr, and for a stop asks the Learner's `Interrupter` to end the
//! run. The Learner then leaves the epoch without checkpointing it, so the newest checkpoint on
//! disk is the last good one; the caller reads [`Alarms::stop`] when the Learner returns (the
//! language-model trainer turns it into an error that names that checkpoint). The metric thread
//! runs a few steps behind the training loop, so a stopped run may have taken a few more
//! (discarded) steps.

use std::sync::{Arc, Mutex};

use burn::config::Config;
use burn::train::Interrupter;
use burn::train::metric::{Metric, MetricMetadata, MetricName, SerializedEntry};

use crate::routing_stats::{RoutingStats, collapse_load, is_dead_expert};

/// What the guard reads from a training step (on the host, after the step's one read).
#[derive(Debug, Clone, Default)]
pub struct GuardInput {
    /// The step's training objective (task loss + weighted routing losses): NaN or infinite
    /// stops the run.
    pub loss: f64,
    /// The step's routing: its losses are checked too, its token fractions feed the dead-expert
    /// and collapse alarms.
    pub routing: RoutingStats,
}

/// What a collapse alarm does.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum CollapsePolicy {
    /// Print a one-line warning and train on. The default.
    Warn,
    /// Print it and stop the run like a non-finite loss: the last good checkpoint stays intact.
    Stop,
}

/// When the router counts as unhealthy.
#[derive(Config, Debug, PartialEq)]
pub struct HealthConfig {
    /// An expert is dead in a step when it gets less than 1% of its fair share (1/E) of the
    /// step's tokens; an alarm is raised once it has been dead this many consecutive training
    /// steps. Default 50.
    #[config(default = 50)]
    pub dead_expert_steps: usize,
    /// Alarm when a layer's max expert load (E · max fraction: 1 is balance, E collapse) reaches
    /// this value. None (default): halfway between balance and collapse, 1 + (E − 1) / 2.
    pub max_load_alarm: Option<f64>,
    /// What a collapse alarm does. Default `Warn`.
    #[config(default = "CollapsePolicy::Warn")]
    pub on_collapse: CollapsePolicy,
}

/// Why a run was flagged.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmKind {
    /// The loss (or one of its parts) was NaN or infinite.
    NonFinite {
        /// Which value: "loss", "load-balancing loss" or "router z-loss".
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// An expert received < 1% of its fair share for `steps` consecutive steps.
    DeadExpert {
        /// Sparse layer (index among the sparse layers).
        layer: usize,
        /// The expert.
        expert: usize,
        /// Consecutive dead steps.
        steps: usize,
    },
    /// A layer's max expert load reached the threshold.
    Overload {
        /// Sparse layer (index among the sparse layers).
        layer: usize,
        /// E · max fraction.
        load: f64,
        /// The threshold.
        threshold: f64,
    },
}

/// An alarm and where it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// What went wrong.
    pub kind: AlarmKind,
    /// The training epoch (1-based).
    pub epoch: usize,
    /// The training step within the run (1-based, across epochs).
    pub step: usize,
    /// Whether it stopped the run.
    pub stopped: bool,
}

impl std::fmt::Display for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (step, epoch) = (self.step, self.epoch);
        match &self.kind {
            AlarmKind::NonFinite { what, value } => {
                write!(f, "the {what} is {value} at step {step} (epoch {epoch})")
            }
            AlarmKind::DeadExpert {
                layer,
                expert,
                steps,
            } => write!(
                f,
                "expert {expert} of sparse layer {layer} has received < 1% of its fair share of \
                 tokens for {steps} steps (step {step}, epoch {epoch}): a dead expert"
            ),
            AlarmKind::Overload {
                layer,
                load,
                threshold,
            } => write!(
                f,
                "sparse layer {layer}'s max expert load is {load:.2} ≥ {threshold:.2} at step \
                 {step} (epoch {epoch}): the router is collapsing"
            ),
        }
    }
}

/// The alarms of a run, shared between the metric thread and the trainer.
#[derive(Debug, Clone, Default)]
pub struct Alarms(Arc<Mutex<Vec<Alarm>>>);

impl Alarms {
    /// The alarm that stopped the run, if one did.
    pub fn stop(&self) -> Option<Alarm> {
        self.all().into_iter().find(|a| a.stopped)
    }

    /// Every alarm so far, in order.
    pub fn all(&self) -> Vec<Alarm> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn push(&self, alarm: Alarm) {
        if let Ok(mut v) = self.0.lock() {
            v.push(alarm);
        }
    }
}

/// The guard metric (train split only).
#[derive(Clone)]
pub struct RunGuard {
    config: HealthConfig,
    interrupter: Interrupter,
    alarms: Alarms,
    /// Consecutive dead steps per sparse layer and expert.
    dead_for: Vec<Vec<usize>>,
    /// Layers and experts already reported (one alarm each until they recover).
    reported: Vec<Vec<bool>>,
    overloaded: Vec<bool>,
    stopped: bool,
    steps_per_epoch: usize,
    devices: usize,
    name: MetricName,
}

impl RunGuard {
    /// A guard that stops the run through `interrupter` and records into `alarms`.
    pub fn new(config: HealthConfig, interrupter: Interrupter, alarms: Alarms) -> Self {
        Self {
            config,
            interrupter,
            alarms,
            dead_for: Vec::new(),
            reported: Vec::new(),
            overloaded: Vec::new(),
            stopped: false,
            steps_per_epoch: 0,
            devices: 1,
            name: Arc::new("Router Health".to_string()),
        }
    }

    /// Steps per epoch, so that alarms name the step of the run rather than of the epoch.
    pub fn with_steps_per_epoch(mut self, steps: usize) -> Self {
        self.steps_per_epoch = steps;
        self
    }

    /// Data-parallel devices: burn-train counts each device's shard as an iteration; alarms
    /// name the optimiser step (one per `devices` shards).
    pub fn with_devices(mut self, devices: usize) -> Self {
        self.devices = devices.max(1);
        self
    }

    fn raise(&mut self, kind: AlarmKind, metadata: &MetricMetadata, stop: bool) -> String {
        let epoch = metadata.global_progress.items_processed;
        let alarm = Alarm {
            kind,
            epoch,
            step: epoch.saturating_sub(1) * self.steps_per_epoch
                + metadata.iteration.unwrap_or(0).div_ceil(self.devices),
            stopped: stop && !self.stopped,
        };
        let line = alarm.to_string();
        // The trainer reports a warning at once, one line on stderr whatever the renderer (the
        // dashboard shows the metric's text too); a stop is reported once, by the error the
        // trainer returns when the Learner has ended.
        if !stop {
            eprintln!("warning: {line}");
        }
        if stop && !self.stopped {
            self.stopped = true;
            self.interrupter.stop(Some(&line));
        }
        self.alarms.push(alarm);
        line
    }
}

impl Metric for RunGuard {
    type Input = GuardInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &GuardInput, metadata: &MetricMetadata) -> SerializedEntry {
        let mut status = String::from("ok");
        if self.stopped {
            return SerializedEntry::new("stopped".into(), "stopped".into());
        }
        let r = &item.routing;
        for (what, value) in [
            ("loss", item.loss),
            ("load-balancing loss", r.aux_loss),
            ("router z-loss", r.z_loss),
        ] {
            if !value.is_finite() {
                let line = self.raise(AlarmKind::NonFinite { what, value }, metadata, true);
                return SerializedEntry::new(line.clone(), line.replace(',', ";"));
            }
        }
        let layers = r.layers.len();
        let e = r.num_experts();
        if self.dead_for.len() != layers {
            self.dead_for = vec![vec![0; e]; layers];
            self.reported = vec![vec![false; e]; layers];
            self.overloaded = vec![false; layers];
        }
        let stop = self.config.on_collapse == CollapsePolicy::Stop;
        let threshold = self
            .config
            .max_load_alarm
            .unwrap_or_else(|| collapse_load(e));
        for (l, layer) in r.layers.iter().enumerate() {
            for (x, f) in layer.token_fractions.iter().enumerate() {
                let dead = is_dead_expert(*f, e);
                self.dead_for[l][x] = if dead { self.dead_for[l][x] + 1 } else { 0 };
                if !dead {
                    self.reported[l][x] = false;
                } else if self.dead_for[l][x] >= self.config.dead_expert_steps
                    && !self.reported[l][x]
                {
                    self.reported[l][x] = true;
                    let kind = AlarmKind::DeadExpert {
                        layer: l,
                        expert: x,
                        steps: self.dead_for[l][x],
                    };
                    status = self.raise(kind, metadata, stop);
                }
            }
            let load = layer.max_expert_load();
            if e > 1 && load >= threshold {
                if !self.overloaded[l] {
                    self.overloaded[l] = true;
                    let kind = AlarmKind::Overload {
                        layer: l,
                        load,
                        threshold,
                    };
                    status = self.raise(kind, metadata, stop);
                }
            } else {
                self.overloaded[l] = false;
            }
        }
        SerializedEntry::new(status.clone(), status.replace(',', ";"))
    }

    fn clear(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing_stats::LayerRoutingStats;

    fn step(iteration: usize) -> MetricMetadata {
        let progress = burn::data::dataloader::Progress {
            items_processed: iteration,
            items_total: 100,
        };
        MetricMetadata {
            progress,
            global_progress: burn::data::dataloader::Progress {
                items_processed: 1,
                items_total: 1,
            },
            iteration: Some(iteration),
            lr: None,
        }
    }

    /// A step of a model with one sparse layer of 4 experts whose token fractions are given.
    fn input(loss: f64, fractions: [f64; 4]) -> GuardInput {
        GuardInput {
            loss,
            routing: RoutingStats {
                aux_loss: 1.0,
                z_loss: 0.1,
                num_tokens: 100,
                layers: vec![LayerRoutingStats {
                    tokens_per_expert: fractions.iter().map(|f| f * 100.0).collect(),
                    token_fractions: fractions.to_vec(),
                    ..LayerRoutingStats::default()
                }],
            },
        }
    }

    #[test]
    fn any_models_steps_raise_the_alarms() {
        let config = HealthConfig::new().with_dead_expert_steps(3);
        let alarms = Alarms::default();
        let mut guard = RunGuard::new(config, Interrupter::new(), alarms.clone());
        // Expert 3 gets 0.1% (< 1% of its fair 25%) for 3 steps: one dead-expert alarm at step 3.
        for i in 1..=4 {
            guard.update(&input(2.0, [0.4, 0.3, 0.299, 0.001]), &step(i));
        }
        let all = alarms.all();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(
            all[0].kind,
            AlarmKind::DeadExpert {
                layer: 0,
                expert: 3,
                steps: 3
            }
        );
        assert_eq!(all[0].step, 3);
        // Max load 4 · 0.7 = 2.8 ≥ 2.5 (halfway to collapse): an overload alarm.
        guard.update(&input(2.0, [0.7, 0.1, 0.1, 0.1]), &step(5));
        assert!(matches!(alarms.all()[1].kind, AlarmKind::Overload { .. }));
        assert!(alarms.stop().is_none(), "warnings do not stop the run");
        // A NaN loss stops it.
        guard.update(&input(f64::NAN, [0.25; 4]), &step(6));
        let stop = alarms.stop().expect("a non-finite loss stops the run");
        assert!(matches!(
            stop.kind,
            AlarmKind::NonFinite { what: "loss", .. }
        ));
    }
}
