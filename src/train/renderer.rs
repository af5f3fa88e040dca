//! Plain progress lines for when stdout is not a terminal (CI, pipes, log files), where the
//! burn-train dashboard cannot draw: a line every few percent of an epoch and one per validation.

use std::collections::HashMap;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
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

/// Prints progress as plain lines on stdout.
pub struct PlainRenderer {
    names: HashMap<MetricId, String>,
    train: HashMap<String, f64>,
    valid: HashMap<String, f64>,
    lines_per_epoch: usize,
    last_bucket: Option<(usize, usize)>,
}

impl PlainRenderer {
    /// About `lines_per_epoch` training lines per epoch.
    pub fn new(lines_per_epoch: usize) -> Self {
        Self {
            names: HashMap::new(),
            train: HashMap::new(),
            valid: HashMap::new(),
            lines_per_epoch: lines_per_epoch.max(1),
            last_bucket: None,
        }
    }

    fn record(&self, values: &mut HashMap<String, f64>, state: MetricState) {
        if let MetricState::Numeric(entry, numeric) = state {
            let value = match numeric {
                NumericEntry::Value(v) => v,
                NumericEntry::Aggregated {
                    aggregated_value, ..
                } => aggregated_value,
            };
            if let Some(name) = self.names.get(&entry.metric_id) {
                values.insert(name.clone(), value);
            }
        }
    }

    fn line(values: &HashMap<String, f64>) -> String {
        SHOWN
            .iter()
            .filter_map(|name| values.get(*name).map(|v| format!("{name} {v:.4}")))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

impl MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: MetricState) {
        let mut values = std::mem::take(&mut self.train);
        self.record(&mut values, state);
        self.train = values;
    }

    fn update_valid(&mut self, state: MetricState) {
        let mut values = std::mem::take(&mut self.valid);
        self.record(&mut values, state);
        self.valid = values;
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(progress) = item.progress else {
            return;
        };
        let epoch = item.global_progress.items_processed;
        let total = progress.items_total.max(1);
        let bucket = progress.items_processed * self.lines_per_epoch / total;
        if self.last_bucket == Some((epoch, bucket)) && progress.items_processed < total {
            return;
        }
        self.last_bucket = Some((epoch, bucket));
        println!(
            "[train] epoch {epoch}/{} {:>3}%  iter {}  {}",
            item.global_progress.items_total,
            progress.items_processed * 100 / total,
            item.iteration.unwrap_or(0),
            Self::line(&self.train)
        );
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(progress) = item.progress else {
            return;
        };
        if progress.items_processed >= progress.items_total {
            println!(
                "[valid] epoch {}/{}  {}",
                item.global_progress.items_processed,
                item.global_progress.items_total,
                Self::line(&self.valid)
            );
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
