//! What a report reads back from an artifact directory: burn-train's per-batch metric logs
//! (`train/epoch-<n>/<Metric>.log`, one `value,count` line per batch), the validation epochs'
//! token-weighted means, `routing.csv` and the guard's alarms (the `Router Health` log). A run
//! that is still training or was interrupted reads as far as its files go.

use std::path::Path;

use crate::error::{Error, Result};
use crate::train::{TrainingConfig, epoch_metric};

/// The training metrics drawn per step (mean over sparse layers where per layer).
pub const STEP_METRICS: [&str; 8] = [
    "Loss",
    "Load Balancing Loss",
    "Router Z Loss",
    "Dropped Fraction",
    "Skipped Fraction",
    "Router Entropy",
    "Max Expert Load",
    "Learning Rate",
];

/// One row of `routing.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRow {
    /// Epoch (1-based).
    pub epoch: usize,
    /// `train` or `valid`.
    pub split: String,
    /// The sparse layer's position in the encoder (0-based).
    pub layer: usize,
    /// Expert.
    pub expert: usize,
    /// Token fraction over the epoch.
    pub token_fraction: f64,
    /// Mean router probability over the epoch.
    pub router_prob_mean: f64,
    /// Selection bias at the epoch's end (0 when aux-loss-free balancing is off).
    pub expert_bias: f64,
}

/// An alarm the run guard logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAlarm {
    /// Training step (1-based, across epochs) of the batch it was raised at.
    pub step: usize,
    /// The alarm's text.
    pub text: String,
}

/// A run as its artifact directory records it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's config (`config.json`).
    pub config: TrainingConfig,
    /// Epochs with training logs, 1..=epochs.
    pub epochs: usize,
    /// Training steps (batches) logged in each epoch.
    pub steps_per_epoch: Vec<usize>,
    /// Per [`STEP_METRICS`] name: the value of each training step, in order (NaN where a batch's
    /// line is missing or cut short).
    pub train: Vec<(String, Vec<f64>)>,
    /// Per metric: the token-weighted mean of each validation epoch (epoch, value).
    pub valid: Vec<(String, Vec<(usize, f64)>)>,
    /// `routing.csv`'s rows.
    pub routing: Vec<RoutingRow>,
    /// The guard's alarms, in order.
    pub alarms: Vec<LoggedAlarm>,
}

impl RunRecord {
    /// Reads the run in `dir`. Fails when there is no run (no `config.json`) or no training log
    /// yet.
    pub fn read(dir: &Path) -> Result<Self> {
        let config_file = dir.join("config.json");
        if !config_file.exists() {
            return Err(Error::Checkpoint(format!(
                "{} holds no run (no config.json): name the artifact directory of a training run",
                dir.display()
            )));
        }
        let config = TrainingConfig::read(&config_file)?;
        let mut steps_per_epoch = Vec::new();
        let mut train: Vec<(String, Vec<f64>)> = STEP_METRICS
            .iter()
            .map(|m| (m.to_string(), Vec::new()))
            .collect();
        let mut alarms = Vec::new();
        for epoch in 1.. {
            let epoch_dir = dir.join("train").join(format!("epoch-{epoch}"));
            let Some(loss) = log_values(&epoch_dir, "Loss") else {
                break;
            };
            let first_step = steps_per_epoch.iter().sum::<usize>();
            for (name, values) in train.iter_mut() {
                let mut epoch_values = log_values(&epoch_dir, name).unwrap_or_default();
                epoch_values.resize(loss.len(), f64::NAN);
                values.extend(epoch_values);
            }
            let health =
                std::fs::read_to_string(epoch_dir.join("Router_Health.log")).unwrap_or_default();
            for (i, line) in health.lines().enumerate() {
                let text = line.trim();
                if !text.is_empty() && text != "ok" && text != "stopped" {
                    alarms.push(LoggedAlarm {
                        step: first_step + i + 1,
                        text: text.replace(';', ","),
                    });
                }
            }
            steps_per_epoch.push(loss.len());
        }
        if steps_per_epoch.is_empty() {
            return Err(Error::Checkpoint(format!(
                "the run in {} has not logged a training step yet",
                dir.display()
            )));
        }
        let epochs = steps_per_epoch.len();
        let valid = STEP_METRICS
            .iter()
            .filter(|m| **m != "Learning Rate")
            .map(|m| {
                let values = (1..=epochs)
                    .filter_map(|e| epoch_metric(dir, "valid", e, m).map(|v| (e, v)))
                    .collect();
                (m.to_string(), values)
            })
            .collect();
        Ok(Self {
            config,
            epochs,
            steps_per_epoch,
            train,
            valid,
            routing: read_routing_csv(&dir.join(crate::metrics::ROUTING_CSV))?,
            alarms,
        })
    }

    /// The training values of `metric` (one per step).
    pub fn train_values(&self, metric: &str) -> &[f64] {
        self.train
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The validation epochs' values of `metric`.
    pub fn valid_values(&self, metric: &str) -> &[(usize, f64)] {
        self.valid
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The step at which `epoch` ended (its last training step, 1-based across epochs).
    pub fn epoch_end_step(&self, epoch: usize) -> usize {
        self.steps_per_epoch.iter().take(epoch).sum()
    }

    /// The token-weighted training mean of `metric` over `epoch`'s steps (unweighted: every
    /// batch of a run has the same number of tokens).
    pub fn train_epoch_mean(&self, metric: &str, epoch: usize) -> Option<f64> {
        let end = self.epoch_end_step(epoch);
        let start = end - self.steps_per_epoch.get(epoch - 1)?;
        let values: Vec<f64> = self.train_values(metric)[start..end]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// The sparse layers in `routing.csv`, ascending.
    pub fn sparse_layers(&self) -> Vec<usize> {
        let mut layers: Vec<usize> = self.routing.iter().map(|r| r.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        layers
    }

    /// `[epoch][expert]` token fractions of one sparse layer and split, with each row's epoch:
    /// the matrix a routing heatmap draws.
    pub fn routing_matrix(&self, layer: usize, split: &str) -> (Vec<usize>, Vec<Vec<f64>>) {
        self.matrix(layer, split, |r| r.token_fraction)
    }

    /// `[epoch][expert]` selection biases of one sparse layer (training split).
    pub fn bias_matrix(&self, layer: usize) -> (Vec<usize>, Vec<Vec<f64>>) {
        self.matrix(layer, "train", |r| r.expert_bias)
    }

    fn matrix(
        &self,
        layer: usize,
        split: &str,
        value: impl Fn(&RoutingRow) -> f64,
    ) -> (Vec<usize>, Vec<Vec<f64>>) {
        let rows: Vec<&RoutingRow> = self
            .routing
            .iter()
            .filter(|r| r.layer == layer && r.split == split)
            .collect();
        let mut epochs: Vec<usize> = rows.iter().map(|r| r.epoch).collect();
        epochs.sort_unstable();
        epochs.dedup();
        let experts = rows.iter().map(|r| r.expert + 1).max().unwrap_or(0);
        let matrix = epochs
            .iter()
            .map(|e| {
                let mut row = vec![0.0; experts];
                for r in rows.iter().filter(|r| r.epoch == *e) {
                    row[r.expert] = value(r);
                }
                row
            })
            .collect();
        (epochs, matrix)
    }
}

/// The values of a metric log (`<dir>/<Metric_Name>.log`, `value,count` per line; a line that does
/// not parse, e.g. cut short by a kill, reads as NaN). `None` when the file does not exist.
fn log_values(dir: &Path, metric: &str) -> Option<Vec<f64>> {
    let text =
        std::fs::read_to_string(dir.join(format!("{}.log", metric.replace(' ', "_")))).ok()?;
    Some(
        text.lines()
            .map(|line| {
                line.split(',')
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(f64::NAN)
            })
            .collect(),
    )
}

/// `routing.csv`'s rows (none when the file does not exist yet).
pub fn read_routing_csv(path: &Path) -> Result<Vec<RoutingRow>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let bad = |n: usize, line: &str| {
        Error::Data(format!(
            "{} line {n} is not a routing row: {line:?}",
            path.display()
        ))
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != 7 {
            return Err(bad(i + 1, line));
        }
        let int = |c: &str| c.parse::<usize>().map_err(|_| bad(i + 1, line));
        let float = |c: &str| c.parse::<f64>().map_err(|_| bad(i + 1, line));
        rows.push(RoutingRow {
            epoch: int(cols[0])?,
            split: cols[1].to_string(),
            layer: int(cols[2])?,
            expert: int(cols[3])?,
            token_fraction: float(cols[4])?,
            router_prob_mean: float(cols[5])?,
            expert_bias: float(cols[6])?,
        });
    }
    Ok(rows)
}
