//! What the experiment programs share: the corpus, a training loop that records every step, and
//! the plots. Each program in `experiments/` is a list of [`run::RunSpec`]s with a reason for each
//! value, run by [`run::train_run`] and summarised by its own tables and PNGs.

#![allow(dead_code)] // each program uses part of the shared code

pub mod cli;
pub mod plot;
pub mod run;
pub mod stats;
