//! Plain progress lines for when stdout is not a terminal (CI, pipes, log files), where the
//! burn-train dashboard cannot draw: a line at the first step, every few percent of an epoch and
//! at least every half minute, with speed and the time left; one line per validation.
//!
//! burn-train hands a renderer each batch's value of a metric (with its token count); the lines
//! show token-weighted means over the batches since the previous line (training) or over the whole
//! validation epoch, which is the value checkpoint selection and early stopping use.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};

use super::human::{duration, si};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Metrics shown on each line, in order, when registered.
const SHOWN: [&str; 6] = [
    "Loss",
    "Perplexity",
    "Load Balancing Loss",
    "Max Expert Load",
    "Dropped Fraction",
    "Learning Rate",
];

/// The longest silence between two training lines.
const MAX_SILENCE: Duration = Duration::from_secs(30);

/// Token-weighted means of the metrics over a span of batches.
#[derive(Default)]
struct Means {
    /// Per metric: Σ value·count, Σ count, the latest value.
    sums: HashMap<String, (f64, f64, f64)>,
}

impl Means {
    fn add(&mut self, name: &str, entry: &NumericEntry) {
        let (value, count) = match entry {
            NumericEntry::Value(v) => (*v, 1.0),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (*aggregated_value, *count as f64),
        };
        let sum = self.sums.entry(name.to_string()).or_default();
        sum.0 += value * count;
        sum.1 += count;
        sum.2 = value;
    }

    /// The mean of `name` (the latest value for the learning rate, which is a setting); the
    /// perplexity is exp of the mean loss, as the run's summary computes it.
    fn get(&self, name: &str) -> Option<f64> {
        if name == "Perplexity" && self.sums.contains_key(name) && self.sums.contains_key("Loss") {
            return self.get("Loss").map(f64::exp);
        }
        let (sum, count, last) = self.sums.get(name)?;
        if name == "Learning Rate" || *count == 0.0 {
            return Some(*last);
        }
        Some(sum / count)
    }

    /// The tokens (counts) behind the loss.
    fn tokens(&self) -> f64 {
        self.sums.get("Loss").map_or(0.0, |s| s.1)
    }

    fn line(&self) -> String {
        SHOWN
            .iter()
            .filter_map(|name| {
                let v = self.get(name)?;
                Some(format!("{name} {}", value(name, v)))
            })
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// The run's shape, for speed and time left.
#[derive(Clone, Copy)]
struct RunShape {
    steps_per_epoch: usize,
    tokens_per_step: usize,
    /// Data-parallel devices: burn-train counts each device's shard as an iteration.
    devices: usize,
}

/// Prints progress as plain lines on stdout.
///
/// A training line: `[train] epoch 1/2  step 50/500 (10%)  1.9 steps/s  7.8k tok/s  ETA 3m58s
/// Loss 5.1234 ...` (speed and ETA with [`with_run`](Self::with_run); the speed is the mean since
/// the first step of this run, validation included, so the ETA covers the validations to come).
/// A validation line: `[valid] epoch 1/2  mean over 49.4k tokens: Loss 4.8765 ...`.
pub struct PlainRenderer {
    names: HashMap<MetricId, String>,
    train: Means,
    valid: Means,
    lines_per_epoch: usize,
    last_bucket: Option<(usize, usize)>,
    shape: Option<RunShape>,
    /// When the renderer was made (just before the Learner starts).
    created: Instant,
    /// When the first step of this run was seen, and its global step number.
    first_step: Option<(Instant, usize)>,
    last_line: Option<Instant>,
}

impl PlainRenderer {
    /// About `lines_per_epoch` training lines per epoch (more when steps are slow).
    pub fn new(lines_per_epoch: usize) -> Self {
        Self {
            names: HashMap::new(),
            train: Means::default(),
            valid: Means::default(),
            lines_per_epoch: lines_per_epoch.max(1),
            last_bucket: None,
            shape: None,
            created: Instant::now(),
            first_step: None,
            last_line: None,
        }
    }

    /// Adds steps/s, tokens/s and the time left to the training lines: the run has
    /// `steps_per_epoch` optimiser steps per epoch of `tokens_per_step` tokens each (all
    /// devices' shards together).
    pub fn with_run(mut self, steps_per_epoch: usize, tokens_per_step: usize) -> Self {
        self.shape = Some(RunShape {
            steps_per_epoch: steps_per_epoch.max(1),
            tokens_per_step,
            devices: 1,
        });
        self
    }

    /// The run trains on `devices` devices in data parallel: burn-train reports each device's
    /// shard as an iteration, the lines count optimiser steps (one per `devices` shards).
    pub fn with_devices(mut self, devices: usize) -> Self {
        if let Some(shape) = &mut self.shape {
            shape.devices = devices.max(1);
        }
        self
    }

    fn name(&self, state: &MetricState) -> Option<(String, NumericEntry)> {
        match state {
            MetricState::Numeric(entry, numeric) => {
                Some((self.names.get(&entry.metric_id)?.clone(), numeric.clone()))
            }
            MetricState::Generic(_) => None,
        }
    }

    /// `step 50/500 (10%)  1.9 steps/s  7.8k tok/s  ETA 3m58s`, or the epoch's percentage
    /// without a run shape.
    fn speed(&mut self, item: &TrainingProgress, items_percent: usize) -> String {
        let iteration = item.iteration.unwrap_or(0);
        let Some(shape) = self.shape else {
            return format!("{items_percent:>3}%  iter {iteration}");
        };
        let epoch = item.global_progress.items_processed.max(1);
        let step = (epoch - 1) * shape.steps_per_epoch + iteration.div_ceil(shape.devices);
        let total = item.global_progress.items_total * shape.steps_per_epoch;
        let now = Instant::now();
        let (start, first) = *self.first_step.get_or_insert((now, step));
        let mut text = format!("step {step}/{total} ({}%)", step * 100 / total.max(1));
        let elapsed = now.duration_since(start).as_secs_f64();
        if step > first && elapsed > 0.0 {
            let rate = (step - first) as f64 / elapsed;
            let eta = total.saturating_sub(step) as f64 / rate;
            text += &format!(
                "  {}  {} tok/s  ETA {}",
                steps_per_second(rate),
                si(rate * shape.tokens_per_step as f64),
                duration(eta)
            );
        } else {
            let since = now.duration_since(self.created).as_secs_f64();
            text += &format!("  first step after {}", duration(since));
        }
        text
    }
}

/// `1.92 steps/s`, or `4.0 s/step` when slower than one step per second.
fn steps_per_second(rate: f64) -> String {
    if rate >= 1.0 {
        format!("{rate:.2} steps/s")
    } else {
        format!("{:.1} s/step", 1.0 / rate)
    }
}

/// A metric's value with about five significant digits (the learning rate in e-notation).
fn value(name: &str, v: f64) -> String {
    match v.abs() {
        _ if name == "Learning Rate" => format!("{v:.2e}"),
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.3}"),
        _ => format!("{v:.4}"),
    }
}

impl MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: MetricState) {
        if let Some((name, entry)) = self.name(&state) {
            self.train.add(&name, &entry);
        }
    }

    fn update_valid(&mut self, state: MetricState) {
        if let Some((name, entry)) = self.name(&state) {
            self.valid.add(&name, &entry);
        }
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(progress) = &item.progress else {
            return;
        };
        let epoch = item.global_progress.items_processed;
        let total = progress.items_total.max(1);
        let bucket = progress.items_processed * self.lines_per_epoch / total;
        let first = self.last_line.is_none();
        let silent_too_long = self.last_line.is_some_and(|t| t.elapsed() >= MAX_SILENCE);
        let new_bucket = self.last_bucket != Some((epoch, bucket));
        let epoch_end = progress.items_processed >= total;
        if !(first || new_bucket || silent_too_long || epoch_end) {
            return;
        }
        self.last_bucket = Some((epoch, bucket));
        self.last_line = Some(Instant::now());
        let speed = self.speed(&item, progress.items_processed * 100 / total);
        println!(
            "[train] epoch {epoch}/{}  {speed}  {}",
            item.global_progress.items_total,
            self.train.line()
        );
        self.train = Means::default();
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(progress) = item.progress else {
            return;
        };
        if progress.items_processed >= progress.items_total {
            println!(
                "[valid] epoch {}/{}  mean over {} tokens: {}",
                item.global_progress.items_processed,
                item.global_progress.items_total,
                si(self.valid.tokens()),
                self.valid.line()
            );
            self.valid = Means::default();
        }
    }
}

impl MetricsRendererEvaluation for PlainRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for PlainRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_are_token_weighted() {
        let mut m = Means::default();
        let batch = |v: f64, n: usize| NumericEntry::Aggregated {
            aggregated_value: v,
            count: n,
        };
        m.add("Loss", &batch(2.0, 100));
        m.add("Loss", &batch(4.0, 300));
        m.add("Learning Rate", &NumericEntry::Value(1e-3));
        m.add("Learning Rate", &NumericEntry::Value(2e-3));
        assert_eq!(m.get("Loss"), Some(3.5));
        assert_eq!(m.tokens(), 400.0);
        assert_eq!(m.get("Learning Rate"), Some(2e-3), "the latest, not a mean");
        assert_eq!(m.line(), "Loss 3.5000  Learning Rate 2.00e-3");
        // The perplexity shown is exp of the mean loss, not the mean of the batches' values.
        m.add("Perplexity", &batch(2f64.exp(), 100));
        m.add("Perplexity", &batch(4f64.exp(), 300));
        assert_eq!(m.get("Perplexity"), Some(3.5f64.exp()));
    }

    #[test]
    fn formats() {
        assert_eq!(value("Perplexity", 1204.61), "1205");
        assert_eq!(value("Perplexity", 303.538), "303.5");
        assert_eq!(value("Loss", 5.71481), "5.7148");
        assert_eq!(steps_per_second(1.923), "1.92 steps/s");
        assert_eq!(steps_per_second(0.25), "4.0 s/step");
    }
}
