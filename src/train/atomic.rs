//! Crash-safe checkpoints. [`crate::atomic_file::write_atomic`] (temporary file, fsync, rename)
//! writes every file of a run; [`CrashSafeRecorder`] gives burn-train's checkpointer the same
//! guarantee: it is the `FileRecorder` passed to `with_file_checkpointer`, writes the same
//! named-msgpack `.mpk` files as Burn's `DefaultRecorder` (so either can read what the other
//! wrote), and writes them through `write_atomic`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkBytesRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use burn::train::Interrupter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic_file::write_atomic;

/// [`crate::atomic_file::write_atomic`], its one home.
#[deprecated(note = "use switch_moe::atomic_file::write_atomic")]
pub fn write_atomic_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes)
}

/// A `FileRecorder` writing Burn's named-msgpack `.mpk` format (full precision, like
/// `DefaultRecorder`) through `write_atomic`.
///
/// burn-train's checkpointer thread panics when a save fails (a full disk, say). With
/// [`on_failure`](Self::on_failure), a failed save instead records its message, stops the run
/// through the Learner's `Interrupter` and reports success to burn-train: the run ends at the
/// next step, the failed file is not left behind, the earlier checkpoints stay as they were, and
/// the trainer reports the failure as one error.
#[derive(Default, Clone)]
pub struct CrashSafeRecorder {
    bytes: NamedMpkBytesRecorder<FullPrecisionSettings>,
    failure: Option<(Interrupter, Arc<Mutex<Option<String>>>)>,
}

impl std::fmt::Debug for CrashSafeRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashSafeRecorder")
            .field("stops_on_failure", &self.failure.is_some())
            .finish()
    }
}

impl CrashSafeRecorder {
    /// A recorder that returns write failures as errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that turns write failures into a stop of the run (see the type's docs); the
    /// first failure's message lands in `failure`.
    pub fn on_failure(interrupter: Interrupter, failure: Arc<Mutex<Option<String>>>) -> Self {
        Self {
            bytes: NamedMpkBytesRecorder::default(),
            failure: Some((interrupter, failure)),
        }
    }
}

impl<B: Backend> Recorder<B> for CrashSafeRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension(<Self as FileRecorder<B>>::file_extension());
        let bytes = Recorder::<B>::save_item(&self.bytes, item, ())?;
        let Err(e) = write_atomic(&file, &bytes) else {
            return Ok(());
        };
        let message = format!("cannot write {}: {e}", file.display());
        match &self.failure {
            Some((interrupter, slot)) => {
                if let Ok(mut slot) = slot.lock() {
                    slot.get_or_insert(message.clone());
                }
                interrupter.stop(Some(&message));
                Ok(())
            }
            None => Err(RecorderError::Unknown(message)),
        }
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        file.set_extension(<Self as FileRecorder<B>>::file_extension());
        let mut bytes = std::fs::read(&*file)
            .map_err(|e| RecorderError::FileNotFound(format!("{}: {e}", file.display())))?;
        Recorder::<B>::load_item(&self.bytes, &mut bytes)
    }
}

impl<B: Backend> FileRecorder<B> for CrashSafeRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}
