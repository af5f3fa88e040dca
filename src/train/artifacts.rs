//! The artifact directory of a run: where each file lives, which checkpoint is newest, whether a
//! run may start or resume there, loading weights with their shapes checked, and reading the
//! epoch values back from burn-train's metric logs.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{DefaultRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::config::TrainingConfig;
use crate::Result as MoeResult;
use crate::data::TextTokenizer;
use crate::error::Error;
use crate::lm::{SwitchLm, SwitchLmConfig};
use crate::metrics::ROUTING_CSV;

/// The files of a run.
#[derive(Debug, Clone)]
pub struct ArtifactDir(pub PathBuf);

impl ArtifactDir {
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.0.join("tokenizer.json")
    }
    /// The Learner's checkpoint directory.
    pub fn checkpoints(&self) -> PathBuf {
        self.0.join("checkpoint")
    }
    /// The final model, without extension (the recorder adds `.mpk`).
    pub fn model(&self) -> PathBuf {
        self.0.join("model")
    }
    /// `model.txt`: the model's modules and parameter counts, as burn prints them.
    pub fn model_summary(&self) -> PathBuf {
        self.0.join("model.txt")
    }
    /// `routing.csv`.
    pub fn routing_csv(&self) -> PathBuf {
        self.0.join(ROUTING_CSV)
    }

    /// The epoch of the newest `checkpoint/model-<epoch>.mpk`.
    pub fn last_checkpoint(&self) -> Option<usize> {
        std::fs::read_dir(self.checkpoints())
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("model-")?
                    .strip_suffix(".mpk")?
                    .parse()
                    .ok()
            })
            .max()
    }

    /// The checkpointed model of `epoch`, without extension.
    pub fn checkpoint_model(&self, epoch: usize) -> PathBuf {
        self.checkpoints().join(format!("model-{epoch}"))
    }

    /// Whether the directory already holds a run (a config or checkpoints).
    pub fn holds_run(&self) -> bool {
        self.config().exists() || self.checkpoints().exists()
    }
}

/// The token-weighted epoch value of a logged metric, e.g. `epoch_metric(dir, "valid", 2, "Loss")`:
/// the mean of the batch values in `<split>/epoch-<epoch>/<name>.log`, each weighted by its count
/// (tokens). This is the value checkpoint selection and early stopping use.
pub fn epoch_metric(dir: &Path, split: &str, epoch: usize, name: &str) -> Option<f64> {
    let file = dir
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{}.log", name.replace(' ', "_")));
    let text = std::fs::read_to_string(file).ok()?;
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let mut parts = line.split(',');
        let value: f64 = parts.next()?.parse().ok()?;
        let n: f64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1.0);
        sum += value * n;
        count += n;
    }
    (count > 0.0).then(|| sum / count)
}

/// Where a run starts: `None` for a fresh run in a directory that holds none, or the checkpoint
/// epoch to resume from after checking that the directory holds a run of the same model and a
/// checkpoint whose tensors fit it. Nothing is written.
pub(crate) fn check_start<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    resume: bool,
    device: &B::Device,
) -> MoeResult<Option<usize>> {
    if !resume {
        if dir.holds_run() {
            return Err(Error::Checkpoint(format!(
                "artifact directory {} already holds a run: pass --resume to continue it, or \
                 choose another --artifact-dir",
                dir.0.display()
            )));
        }
        return Ok(None);
    }
    let epoch = dir.last_checkpoint().ok_or_else(|| {
        Error::Checkpoint(format!(
            "--resume: {} holds no checkpoint (checkpoint/model-<epoch>.mpk): train without \
             --resume first, or point --artifact-dir at a run that saved one",
            dir.0.display()
        ))
    })?;
    let saved = TrainingConfig::load(dir.config()).map_err(|e| {
        Error::Checkpoint(format!(
            "--resume: cannot read {} ({e}): the artifact directory is incomplete",
            dir.config().display()
        ))
    })?;
    if saved.model.to_string() != config.model.to_string() {
        return Err(Error::Checkpoint(format!(
            "--resume: the model settings differ from the run in {} (its config.json): resume \
             with the same model flags, or start a new --artifact-dir",
            dir.0.display()
        )));
    }
    if epoch >= config.num_epochs {
        return Err(Error::config(
            "TrainingConfig",
            "num_epochs",
            config.num_epochs,
            format!(
                "the run in {} already finished epoch {epoch}: resume with more than {epoch} \
                 epochs",
                dir.0.display()
            ),
        ));
    }
    load_checked::<B>(&config.model, &dir.checkpoint_model(epoch), device)?;
    Ok(Some(epoch))
}

/// Collects parameter shapes.
struct Shapes(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.shape().dims::<D>().to_vec());
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.0.push(param.shape().dims::<D>().to_vec());
    }
}

/// Loads a model record, checking every tensor's shape against `config`.
pub(crate) fn load_checked<B: Backend>(
    config: &SwitchLmConfig,
    file: &Path,
    device: &B::Device,
) -> MoeResult<SwitchLm<B>> {
    let fresh: SwitchLm<B> = config.init(device);
    let mismatch = |detail: String| {
        Error::Checkpoint(format!(
            "checkpoint {} does not fit the model of config.json ({detail}): it comes from a \
             different configuration; start a new --artifact-dir",
            file.display()
        ))
    };
    let record: <SwitchLm<B> as Module<B>>::Record =
        Recorder::<B>::load(&DefaultRecorder::new(), file.to_path_buf(), device)
            .map_err(|e| mismatch(e.to_string()))?;
    let loaded = fresh.clone().load_record(record);
    let (mut want, mut got) = (Shapes(Vec::new()), Shapes(Vec::new()));
    fresh.visit(&mut want);
    loaded.visit(&mut got);
    if want.0 != got.0 {
        return Err(mismatch("tensor shapes differ".into()));
    }
    Ok(loaded)
}

/// Rebuilds a trained model and its tokenizer from an artifact directory: `config.json`,
/// `tokenizer.json` and `model.mpk` (or, while training runs, the newest checkpoint).
pub fn load_trained<B: Backend>(
    artifact_dir: &Path,
    device: &B::Device,
) -> MoeResult<(SwitchLm<B>, TextTokenizer, TrainingConfig)> {
    let dir = ArtifactDir(artifact_dir.to_path_buf());
    let config = TrainingConfig::load(dir.config()).map_err(|e| {
        Error::Checkpoint(format!(
            "cannot read {} ({e}): --artifact-dir must be a directory written by the train example",
            dir.config().display()
        ))
    })?;
    let tokenizer = TextTokenizer::load(&dir.tokenizer())?;
    let weights = if dir.model().with_extension("mpk").exists() {
        dir.model()
    } else {
        let epoch = dir.last_checkpoint().ok_or_else(|| {
            Error::Checkpoint(format!(
                "{} holds neither model.mpk nor a checkpoint: train first",
                dir.0.display()
            ))
        })?;
        dir.checkpoint_model(epoch)
    };
    let model = load_checked::<B>(&config.model, &weights, device)?;
    Ok((model, tokenizer, config))
}
