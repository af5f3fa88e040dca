//! Checks before a run builds anything: it has epochs left to train, and its training state fits
//! in the machine's memory.

use super::artifacts::ArtifactDir;
use super::config::{EpochPlan, TrainingConfig};
use crate::Result as MoeResult;
use crate::error::Error;

/// Refuses to resume a run that has already trained all its epochs.
pub(crate) fn check_unfinished(
    dir: &ArtifactDir,
    epochs: &EpochPlan,
    resume_from: Option<usize>,
) -> MoeResult<()> {
    match resume_from {
        Some(done) if done >= epochs.epochs => Err(Error::config(
            "TrainingConfig",
            "num_epochs",
            epochs.epochs,
            format!(
                "the run in {} already finished its {} epochs: raise the step budget or the \
                 epochs to continue it",
                dir.0.display(),
                epochs.epochs
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a model whose training state cannot fit in memory, before allocating it: weights,
/// gradients and AdamW's two moments (4 × 4 bytes per parameter), plus the activations of one
/// step (a rough 16 floats per token and layer, and 3 copies of the logits).
pub(crate) fn check_memory(config: &TrainingConfig) -> MoeResult<()> {
    let params = config.model.num_params() as f64;
    let tokens = (config.batch_size * config.seq_len()) as f64;
    let d = config.model.encoder.moe().d_model as f64;
    let layers = config.model.encoder.n_layers as f64;
    let activations = tokens * (16.0 * d * layers + 3.0 * config.model.vocab_size as f64);
    let needed = 4.0 * (4.0 * params + activations);
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if needed > available as f64 {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(Error::Config {
            config: "SwitchLmConfig",
            field: "encoder",
            value: format!("{:.3e} parameters", params),
            reason: format!(
                "training it needs about {:.1} GiB (weights, gradients and AdamW state: 16 bytes \
                 per parameter, plus activations) but this machine has {:.1} GiB available: use \
                 a smaller d_model, d_ff, number of layers or experts, or a smaller batch",
                gib(needed),
                gib(available as f64)
            ),
        });
    }
    Ok(())
}

/// Memory the system can give this process, in bytes (Linux: `MemAvailable`).
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
