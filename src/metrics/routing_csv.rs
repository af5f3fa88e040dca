//! Per-epoch routing detail for plots: one CSV row per (epoch, split, layer, expert) with the
//! token fraction and the mean router probability, token-weighted over the epoch's batches, and
//! the expert's aux-loss-free selection bias at the epoch's end (0 when that balancing is off).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use burn::train::metric::{Metric, MetricMetadata, MetricName, SerializedEntry};

use crate::atomic_file::write_atomic;
use crate::routing_stats::RoutingStats;

/// File name of the routing CSV inside the artifact directory.
pub const ROUTING_CSV: &str = "routing.csv";
const HEADER: &str = "epoch,split,layer,expert,token_fraction,router_prob_mean,expert_bias";

/// A text metric that accumulates routing statistics over an epoch and appends them to
/// `routing.csv` when the Learner ends the epoch. Its input is [`RoutingStats`], so any model
/// that adapts its output to it can register one per split.
#[derive(Clone)]
pub struct RoutingCsvMetric {
    path: PathBuf,
    split: &'static str,
    name: MetricName,
    /// Sparse-layer indices in the model (the `layer` column).
    layer_ids: Vec<usize>,
    epoch: usize,
    fraction_sums: Vec<Vec<f64>>,
    prob_sums: Vec<Vec<f64>>,
    last_bias: Vec<Vec<f64>>,
    weight: f64,
}

impl RoutingCsvMetric {
    /// Appends to `path` for `split` ("train" or "valid"); `layer_ids` are the sparse layers'
    /// positions in the encoder.
    pub fn new(path: PathBuf, split: &'static str, layer_ids: Vec<usize>) -> Self {
        Self {
            path,
            split,
            name: Arc::new(format!("Routing CSV ({split})")),
            layer_ids,
            epoch: 0,
            fraction_sums: Vec::new(),
            prob_sums: Vec::new(),
            last_bias: Vec::new(),
            weight: 0.0,
        }
    }

    fn write_epoch(&self) -> std::io::Result<()> {
        // The whole file is rewritten through a temporary file and a rename, so a kill never
        // leaves half a row (and a resumed run appends after the last complete epoch).
        let mut text = std::fs::read_to_string(&self.path).unwrap_or_default();
        if text.is_empty() {
            text = format!("{HEADER}\n");
        }
        let mut file = Vec::new();
        for (l, (fractions, probs)) in self.fraction_sums.iter().zip(&self.prob_sums).enumerate() {
            let layer = self.layer_ids.get(l).copied().unwrap_or(l);
            for (e, (f, p)) in fractions.iter().zip(probs).enumerate() {
                let bias = self
                    .last_bias
                    .get(l)
                    .and_then(|b| b.get(e))
                    .copied()
                    .unwrap_or(0.0);
                writeln!(
                    file,
                    "{},{},{layer},{e},{:.6},{:.6},{bias:.6}",
                    self.epoch,
                    self.split,
                    f / self.weight,
                    p / self.weight
                )?;
            }
        }
        text.push_str(&String::from_utf8_lossy(&file));
        write_atomic(&self.path, text.as_bytes())
    }
}

fn accumulate(sums: &mut Vec<Vec<f64>>, values: &[Vec<f64>], w: f64) {
    if sums.len() != values.len() {
        *sums = values.iter().map(|v| vec![0.0; v.len()]).collect();
    }
    for (s, v) in sums.iter_mut().zip(values) {
        s.iter_mut().zip(v).for_each(|(s, v)| *s += w * v);
    }
}

impl Metric for RoutingCsvMetric {
    type Input = RoutingStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &RoutingStats, metadata: &MetricMetadata) -> SerializedEntry {
        self.epoch = metadata.global_progress.items_processed;
        let w = item.num_tokens as f64;
        let fractions: Vec<Vec<f64>> = item
            .layers
            .iter()
            .map(|l| l.token_fractions.clone())
            .collect();
        let probs: Vec<Vec<f64>> = item
            .layers
            .iter()
            .map(|l| l.router_prob_mean.clone())
            .collect();
        accumulate(&mut self.fraction_sums, &fractions, w);
        accumulate(&mut self.prob_sums, &probs, w);
        self.weight += w;
        self.last_bias = item.layers.iter().map(|l| l.expert_bias.clone()).collect();
        let text = format!("{} tokens routed this epoch", self.weight as u64);
        SerializedEntry::new(text.clone(), text)
    }

    fn clear(&mut self) {
        if self.weight > 0.0 && self.write_epoch().is_err() {
            // The metric thread has nowhere to report to; a missing CSV is noticed by its reader.
        }
        self.fraction_sums.clear();
        self.prob_sums.clear();
        self.last_bias.clear();
        self.weight = 0.0;
    }
}
