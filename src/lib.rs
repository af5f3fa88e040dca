//! # switch-moe
//!
//! A trainable Switch Transformer / Mixture-of-Experts layer for every [Burn](https://burn.dev)
//! backend (Fedus, Zoph, Shazeer 2021, "Switch Transformers", arXiv 2101.03961).
//!
//! The feed-forward block of a Transformer layer becomes E expert FFNs and a router that sends
//! each token to its top-1 (or top-k) expert: parameters grow with E while the compute per token
//! stays that of one FFN. The pieces, top to bottom:
//!
//! - [`SwitchEncoder`]: a stack whose every `moe_every`-th layer is sparse;
//! - [`SwitchEncoderLayer`]: attention + [`SwitchFeedForward`], burn-nn semantics;
//! - [`SwitchFeedForward`]: [`Router`] → dispatch ([`dispatch`]) → [`Experts`] → combine;
//! - [`MoeStats`]: the load-balancing loss, router z-loss and routing statistics each sparse layer
//!   returns; the training code weights them (α = 0.01, β = 0.001) and adds them to its loss.
//!
//! The forward has no loop over experts or tokens and reads nothing back from the device (except
//! one scalar in dropless mode).
//!
//! ## Shapes
//! | symbol | meaning |
//! |---|---|
//! | B | batch size |
//! | S | sequence length |
//! | T | tokens in a forward call, B·S (padding included) |
//! | E | experts |
//! | k | experts per token (top-k) |
//! | C | capacity: slots per expert |
//! | d | model width `d_model` |
//! | f | expert hidden width `d_ff` |
//! | L | layers |
#![warn(missing_docs)]

pub mod atomic_file;
#[cfg(any(
    feature = "ndarray",
    feature = "wgpu",
    feature = "tch",
    feature = "cuda"
))]
pub mod backend;
mod backend_caps;
pub mod balance;
#[cfg(all(
    feature = "train",
    any(
        feature = "ndarray",
        feature = "wgpu",
        feature = "tch",
        feature = "cuda"
    )
))]
pub mod cli;
#[cfg(feature = "train")]
pub mod data;
pub mod decode;
pub mod dispatch;
pub mod encoder;
pub mod error;
pub mod expert_choice;
pub mod expert_matmul;
pub mod experts;
#[cfg(feature = "train")]
pub mod generate;
#[cfg(feature = "hf")]
pub mod hf;
#[cfg(feature = "ndarray")]
pub(crate) mod host;
pub mod init;
#[cfg(feature = "experiments")]
pub mod lab;
pub mod layer;
pub mod lm;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod moe;
pub mod noise;
pub mod replay;
#[cfg(feature = "train")]
pub mod report;
pub mod router;
pub mod routing_stats;
pub mod shared;
pub mod stats;
#[cfg(feature = "train")]
pub mod train;
pub mod upcycle;

/// The README's code blocks, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use balance::GlobalBalance;
pub use decode::DecodeCache;
pub use dispatch::{Capacity, DispatchPlan, DropPolicy, SlotPlan};
pub use encoder::{
    EncoderBlock, RoutingReplays, SwitchEncoder, SwitchEncoderAutoregressiveCache,
    SwitchEncoderConfig, SwitchEncoderInput,
};
pub use error::{Error, Result};
pub use expert_choice::ExpertChoicePlan;
pub use experts::{ExpertActivation, Experts};
pub use layer::{
    SwitchEncoderLayer, SwitchEncoderLayerAutoregressiveCache, SwitchEncoderLayerConfig,
};
pub use lm::{LmBatch, LmOutput, SwitchLm, SwitchLmConfig};
#[cfg(feature = "metrics")]
pub use metrics::{RoutingCsvMetric, RoutingMetric, RoutingMetricKind, routing_metrics};
pub use moe::{
    BalanceScope, ForcedRouting, GluClamp, RoutingMode, SwitchFeedForward, SwitchFeedForwardConfig,
};
pub use replay::{ReplayMode, RoutingReplay};
pub use router::{Router, RouterScore, Routing};
pub use routing_stats::{LayerRoutingStats, RoutingStats};
pub use shared::SharedExperts;
pub use stats::{BalanceTokens, CombinedMoeStats, MoeLossWeights, MoeStats, RoutingCounts};
pub use upcycle::{Upcycle, UpcycleMode};
