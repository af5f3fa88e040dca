//! The artifact directory of a run: where each file lives, which checkpoint is newest, whether a
//! run may start or resume there, loading weights with their shapes checked, and reading the
//! epoch values back from burn-train's metric logs.

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{DefaultRecorder, FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::atomic::CrashSafeRecorder;
use super::config::TrainingConfig;
use super::plan::{TrainPlan, TrainSummary};
use crate::Result as MoeResult;
use crate::atomic_file::write_atomic;
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

    /// The epochs of every `checkpoint/model-<epoch>.mpk`, ascending.
    pub fn checkpoint_epochs(&self) -> Vec<usize> {
        let Ok(entries) = std::fs::read_dir(self.checkpoints()) else {
            return Vec::new();
        };
        let mut epochs: Vec<usize> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("model-")?
                    .strip_suffix(".mpk")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        epochs
    }

    /// Renames every checkpoint file of epoch `first` or later (`model-<e>.mpk`,
    /// `optim-<e>.mpk`, …) to `<name>.<suffix>`, so that a resume no longer sees it; returns
    /// the new names. Errors are skipped: a file left in place is still listed by nothing else.
    pub fn set_aside_from(&self, first: usize, suffix: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.checkpoints()) else {
            return Vec::new();
        };
        let mut moved = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let epoch = name
                .strip_suffix(".mpk")
                .and_then(|stem| stem.rsplit_once('-'))
                .and_then(|(_, e)| e.parse::<usize>().ok());
            if epoch.is_some_and(|e| e >= first) {
                let to = entry.path().with_file_name(format!("{name}.{suffix}"));
                if std::fs::rename(entry.path(), &to).is_ok() {
                    moved.push(to);
                }
            }
        }
        moved.sort();
        moved
    }

    /// The epoch of the newest `checkpoint/model-<epoch>.mpk`.
    pub fn last_checkpoint(&self) -> Option<usize> {
        self.checkpoint_epochs().last().copied()
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
    // A line a killed run cut short does not parse and is skipped.
    for line in text.lines() {
        let mut parts = line.split(',');
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let n: f64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1.0);
        sum += value * n;
        count += n;
    }
    (count > 0.0).then(|| sum / count)
}

/// How a run starts, from [`check_start`].
pub(crate) struct Start {
    /// The checkpoint epoch to resume from (None: a fresh start).
    pub resume_from: Option<usize>,
    /// One-line notes for the user (a damaged checkpoint skipped, a run started over).
    pub notices: Vec<String>,
}

/// Checks whether a run may start in `dir`, and from where. Nothing is written or deleted.
///
/// - A fresh run needs a directory without a run; a directory with the same run's `config.json`
///   and `tokenizer.json` but no checkpoint (a run killed before its first checkpoint) is
///   started over, with a notice.
/// - A resumed run needs the same model config; it continues from the newest checkpoint whose
///   model, optimiser and scheduler files all load (the model's tensor shapes checked), and says
///   in a notice which damaged ones it skipped. Without any checkpoint it starts the run over
///   from the saved config and tokenizer, with a notice.
pub(crate) fn check_start<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    resume: bool,
    device: &B::Device,
) -> MoeResult<Start> {
    let mut notices = Vec::new();
    let removed = crate::atomic_file::remove_stale_temporaries(&dir.0)
        + crate::atomic_file::remove_stale_temporaries(&dir.checkpoints());
    if removed > 0 {
        notices.push(format!(
            "removed {removed} partial file(s) that a killed run left in {}",
            dir.0.display()
        ));
    }
    let epochs = dir.checkpoint_epochs();
    if !resume {
        if !dir.holds_run() {
            return Ok(Start {
                resume_from: None,
                notices,
            });
        }
        if !epochs.is_empty() || !same_model(dir, config)? {
            return Err(Error::Checkpoint(format!(
                "artifact directory {} already holds a run: resume it \
                 (`TrainOptions::resume`), or choose another `TrainOptions::artifact_dir`",
                dir.0.display()
            )));
        }
        notices.push(format!(
            "{} holds this run without a checkpoint (it stopped before the first one): starting \
             it over",
            dir.0.display()
        ));
        return Ok(Start {
            resume_from: None,
            notices,
        });
    }
    if !dir.config().exists() {
        return Err(Error::Checkpoint(format!(
            "`TrainOptions::resume`: {} holds no run (no config.json): train without resuming \
             first, or point `TrainOptions::artifact_dir` at an earlier run",
            dir.0.display()
        )));
    }
    if !same_model(dir, config)? {
        return Err(Error::Checkpoint(format!(
            "`TrainOptions::resume`: the model settings differ from the run in {} (its \
             config.json): resume with the same model settings, or start a new \
             `TrainOptions::artifact_dir`",
            dir.0.display()
        )));
    }
    for &epoch in epochs.iter().rev() {
        match intact_checkpoint::<B>(dir, epoch) {
            Ok(()) => {
                // Intact files whose tensors do not fit this model: another configuration's
                // checkpoint, an error rather than something to skip.
                let mut model = config.model.clone();
                if model.vocab_size == 0 {
                    model.vocab_size = TrainingConfig::load(dir.config())
                        .map(|c| c.model.vocab_size)
                        .unwrap_or(0);
                }
                load_checked::<B>(&model, &dir.checkpoint_model(epoch), device)?;
                return Ok(Start {
                    resume_from: Some(epoch),
                    notices,
                });
            }
            Err(why) => notices.push(format!(
                "checkpoint of epoch {epoch} is damaged ({why}); trying the one before"
            )),
        }
    }
    notices.push(format!(
        "`TrainOptions::resume`: {} holds no intact checkpoint (the run stopped before its \
         first): starting it over from its config.json and tokenizer.json",
        dir.0.display()
    ));
    Ok(Start {
        resume_from: None,
        notices,
    })
}

/// Whether `dir`'s config.json describes the same model as `config`.
fn same_model(dir: &ArtifactDir, config: &TrainingConfig) -> MoeResult<bool> {
    let saved = TrainingConfig::load(dir.config()).map_err(|e| {
        Error::Checkpoint(format!(
            "cannot read {} ({e}): the artifact directory is damaged; choose another \
             `TrainOptions::artifact_dir`",
            dir.config().display()
        ))
    })?;
    // A fresh run's vocabulary size comes from its tokenizer (0 until then).
    let mut mine = config.model.clone();
    if mine.vocab_size == 0 {
        mine.vocab_size = saved.model.vocab_size;
    }
    Ok(saved.model.to_string() == mine.to_string())
}

/// Reads a checkpoint's model, optimiser and scheduler files through as msgpack: a file a kill
/// or a full disk cut short does not parse. The error says which file is unusable.
fn intact_checkpoint<B: Backend>(dir: &ArtifactDir, epoch: usize) -> Result<(), String> {
    for name in ["model", "optim", "scheduler"] {
        let file = dir.checkpoints().join(format!("{name}-{epoch}.mpk"));
        let mut bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        Recorder::<B>::load_item::<serde::de::IgnoredAny>(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
            &mut bytes,
        )
        .map_err(|e| format!("{} does not parse: {e}", file.display()))?;
    }
    Ok(())
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
             different configuration; start a new `TrainOptions::artifact_dir`",
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

/// Which weights [`load_trained`] reads from an artifact directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrainedWeights {
    /// `model.mpk`, written when the run finished.
    Final(PathBuf),
    /// The newest checkpoint, while the run is training or after it was interrupted.
    Checkpoint {
        /// `checkpoint/model-<epoch>.mpk`.
        file: PathBuf,
        /// Its epoch.
        epoch: usize,
    },
}

impl TrainedWeights {
    /// `model.mpk` if the run finished, else its newest checkpoint.
    pub fn find(artifact_dir: &Path) -> MoeResult<Self> {
        let dir = ArtifactDir(artifact_dir.to_path_buf());
        let model = dir.model().with_extension("mpk");
        if model.exists() {
            return Ok(Self::Final(model));
        }
        let epoch = dir.last_checkpoint().ok_or_else(|| {
            Error::Checkpoint(format!(
                "{} holds neither model.mpk nor a checkpoint: train first",
                dir.0.display()
            ))
        })?;
        Ok(Self::Checkpoint {
            file: dir.checkpoint_model(epoch).with_extension("mpk"),
            epoch,
        })
    }

    /// The file, with its `.mpk` extension.
    pub fn file(&self) -> &Path {
        match self {
            Self::Final(file) | Self::Checkpoint { file, .. } => file,
        }
    }
}

/// Rebuilds a trained model and its tokenizer from an artifact directory: `config.json`,
/// `tokenizer.json` and the weights [`TrainedWeights::find`] names (`model.mpk`, or while
/// training runs the newest checkpoint).
pub fn load_trained<B: Backend>(
    artifact_dir: &Path,
    device: &B::Device,
) -> MoeResult<(SwitchLm<B>, TextTokenizer, TrainingConfig)> {
    let dir = ArtifactDir(artifact_dir.to_path_buf());
    if !dir.config().exists() {
        return Err(Error::Checkpoint(format!(
            "{} holds no run (no config.json): name the artifact directory of a training run",
            dir.0.display()
        )));
    }
    let config = TrainingConfig::read(&dir.config())?;
    let tokenizer = TextTokenizer::load(&dir.tokenizer())?;
    let weights = TrainedWeights::find(artifact_dir)?;
    let model = load_checked::<B>(&config.model, &weights.file().with_extension(""), device)?;
    Ok((model, tokenizer, config))
}

/// `config.json`, `tokenizer.json` and `model.txt` (the model's modules, as burn prints them) of
/// a fresh run.
pub(crate) fn write_run_files<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    tokenizer: &TextTokenizer,
    model: &SwitchLm<B>,
) -> MoeResult<()> {
    std::fs::create_dir_all(&dir.0).map_err(|e| Error::io("cannot create", &dir.0, e))?;
    // Each written atomically: a kill leaves the old file or the new one, never half of one.
    write_atomic(&dir.config(), config.to_string().as_bytes())
        .map_err(|e| Error::io("cannot write", dir.config(), e))?;
    tokenizer.save(&dir.tokenizer())?;
    write_atomic(&dir.model_summary(), format!("{model}\n").as_bytes())
        .map_err(|e| Error::io("cannot write", dir.model_summary(), e))
}

/// Finds the epochs actually trained (early stopping may end the run before `num_epochs`) and
/// saves `model.mpk`: the last weights, or with `patience` the best epoch's checkpoint.
pub(crate) fn save_final_model<B: Backend>(
    dir: &ArtifactDir,
    config: &TrainingConfig,
    plan: &TrainPlan,
    last_model: SwitchLm<B>,
    device: &B::Device,
) -> MoeResult<TrainSummary> {
    let first_epoch = *plan.epochs.start();
    let last_epoch = plan
        .epochs
        .clone()
        .take_while(|e| epoch_metric(&dir.0, "valid", *e, "Loss").is_some())
        .last()
        .unwrap_or(first_epoch);
    let epochs = first_epoch..=last_epoch;
    let valid_loss: Vec<f64> = epochs
        .clone()
        .filter_map(|e| epoch_metric(&dir.0, "valid", e, "Loss"))
        .collect();
    let best_epoch = epochs
        .clone()
        .zip(&valid_loss)
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(e, _)| e);
    let save_err = |e: burn::record::RecorderError| {
        Error::Checkpoint(format!("cannot save the model to {}: {e}", dir.0.display()))
    };
    let saved_epoch = match best_epoch {
        Some(best) if config.patience.is_some() && best != last_epoch => {
            load_checked::<B>(&config.model, &dir.checkpoint_model(best), device)?
                .save_file(dir.model(), &CrashSafeRecorder::new())
                .map_err(save_err)?;
            best
        }
        _ => {
            last_model
                .save_file(dir.model(), &CrashSafeRecorder::new())
                .map_err(save_err)?;
            last_epoch
        }
    };
    Ok(TrainSummary {
        artifact_dir: dir.0.clone(),
        epochs,
        valid_loss,
        saved_epoch,
        vocab_size: config.model.vocab_size,
        num_params: plan.num_params,
        split_tokens: plan.split_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::ArtifactDir;

    #[test]
    fn set_aside_hides_the_checkpoints_of_an_epoch_and_later_from_resume() {
        let root = std::env::temp_dir().join(format!("switch-moe-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = ArtifactDir(root.clone());
        std::fs::create_dir_all(dir.checkpoints()).unwrap();
        for name in [
            "model-1.mpk",
            "optim-1.mpk",
            "model-2.mpk",
            "optim-2.mpk",
            "model-3.mpk",
            "scheduler-3.mpk",
            "notes.txt",
        ] {
            std::fs::write(dir.checkpoints().join(name), b"x").unwrap();
        }
        assert_eq!(dir.last_checkpoint(), Some(3));
        let moved = dir.set_aside_from(2, "nonfinite");
        let names: Vec<String> = moved
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "model-2.mpk.nonfinite",
                "model-3.mpk.nonfinite",
                "optim-2.mpk.nonfinite",
                "scheduler-3.mpk.nonfinite"
            ]
        );
        assert_eq!(dir.checkpoint_epochs(), vec![1]);
        assert!(dir.checkpoints().join("optim-1.mpk").exists());
        assert!(dir.checkpoints().join("notes.txt").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
