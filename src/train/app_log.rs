//! The run's `experiment.log` (Rust's `log`/`tracing` records of burn and this crate), written
//! without burn-train's panic hook.
//!
//! burn-train's own installer sets a process-wide tracing subscriber and a panic hook that points
//! every later panic at *its* run's log file. The subscriber can be set once per process, so in a
//! process with several runs (a test binary, an experiment program) the first run's hook named its
//! directory for another run's failure. This installer keeps one subscriber for the process whose
//! writer follows the newest run: each run that starts redirects the records to its own
//! `experiment.log`, and no panic hook is installed (a program reports its own errors). When runs
//! overlap in one process, the records go to the newest run's file.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use burn::train::ApplicationLoggerInstaller;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The log file of the newest run in this process.
static CURRENT: Mutex<Option<File>> = Mutex::new(None);
/// Whether this process's subscriber was set (by us or someone else), once.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Writes records to the newest run's `experiment.log`.
#[derive(Clone, Copy)]
struct NewestRun;

impl Write for NewestRun {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match CURRENT.lock().as_deref_mut() {
            Ok(Some(file)) => file.write(buf),
            _ => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match CURRENT.lock().as_deref_mut() {
            Ok(Some(file)) => file.flush(),
            _ => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for NewestRun {
    type Writer = NewestRun;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Sends the process's log records to `path` from now on (see the module docs).
pub struct RunLogInstaller {
    path: PathBuf,
}

impl RunLogInstaller {
    /// Records go to `path` (a run's `experiment.log`).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl ApplicationLoggerInstaller for RunLogInstaller {
    fn install(&self) -> Result<(), String> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        if let Ok(mut current) = CURRENT.lock() {
            *current = Some(file);
        }
        let installed = INSTALLED.get_or_init(|| {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(NewestRun)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
                // wgpu logs every adapter detail at INFO.
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    !(m.module_path().is_some_and(|p| p.starts_with("wgpu"))
                        && *m.level() >= tracing_subscriber::filter::LevelFilter::INFO)
                }));
            tracing_subscriber::registry()
                .with(layer)
                .try_init()
                .is_ok()
        });
        if *installed {
            Ok(())
        } else {
            Err("another tracing subscriber is set in this process".into())
        }
    }
}
