//! The experiment harness (feature `experiments`): what the programs in `experiments/` share —
//! the corpora, a training loop that records every step, the measurements (test splits with and
//! without capacity, in homogeneous or mixed batches, routing probes, samples) and the plots.
//! Each program is a list of [`run::RunSpec`]s with a reason for each value, run by
//! [`run::train_run`] and summarised by its own tables and PNGs; a study of your own can be
//! written the same way.

pub mod cli;
pub mod eval;
pub mod plot;
pub mod run;
pub mod stats;
pub mod study;
