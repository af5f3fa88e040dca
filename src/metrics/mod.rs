//! burn-train metrics for **any** model with Switch layers (feature `metrics`).
//!
//! Every metric here takes [`RoutingStats`](crate::RoutingStats) as its input, so a model's
//! step output needs only `impl Adaptor<RoutingStats> for MyOutputSync` (burn's
//! `Adaptor<LossInput<B>>` pattern) to show them all on the Learner's dashboard and in its logs:
//!
//! ```ignore
//! for metric in switch_moe::routing_metrics(num_experts) {
//!     training = training.metric_train_numeric(metric.clone()).metric_valid_numeric(metric);
//! }
//! ```
//!
//! Each value is weighted by the step's real tokens, so an epoch value is the token-weighted mean
//! over its batches (burn-train's aggregate of the logged `value,count` lines).

//!
//! [`RunGuard`] watches a run for a non-finite loss, dead experts and a collapsing router; its
//! input, [`GuardInput`], is the step's loss beside its [`RoutingStats`](crate::RoutingStats).

mod guard;
mod routing;
mod routing_csv;

pub use guard::{Alarm, AlarmKind, Alarms, CollapsePolicy, GuardInput, HealthConfig, RunGuard};
pub use routing::{RoutingMetric, RoutingMetricKind, routing_metrics};
pub use routing_csv::{ROUTING_CSV, RoutingCsvMetric};
