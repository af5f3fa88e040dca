//! Crash-safe files: every artifact of a run is written to a temporary file in the same
//! directory, flushed to disk (`fsync`), then renamed over its final name, and the directory is
//! flushed too. A kill at any instant leaves either the old or the new complete file, never a
//! truncated one (rename is atomic within a filesystem on POSIX).

use std::io::Write;
use std::path::Path;

/// Test-only hook (not for users): milliseconds to sleep halfway through every artifact write,
/// so that a fault-injection test can kill the process while a file is being written.
const SLOW_WRITE_ENV: &str = "SWITCH_MOE_TEST_SLOW_WRITE_MS";
/// Test-only hook (not for users): after this many successful atomic writes in the process,
/// every further one fails as a full disk would (ENOSPC), to test the run's reaction.
const FULL_DISK_ENV: &str = "SWITCH_MOE_TEST_FULL_DISK_AFTER";

static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn simulated_full_disk() -> std::io::Result<()> {
    let limit = std::env::var(FULL_DISK_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(limit) = limit
        && WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= limit
    {
        return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename,
/// fsync of the directory. Creates the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        simulated_full_disk()?;
        let half = bytes.len() / 2;
        file.write_all(&bytes[..half])?;
        if let Some(ms) = std::env::var(SLOW_WRITE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            file.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        file.write_all(&bytes[half..])?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = dir {
            // Make the rename itself durable; not every platform can open a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files that [`write_atomic`] left in `dir` when a process was killed
/// mid-write (names `.<file>.tmp-<pid>`); returns how many it removed. Only those names are
/// touched.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with('.') && name.contains(".tmp-")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("switch-moe-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("a.json");
        write_atomic(&file, b"first").unwrap();
        write_atomic(&file, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"second, longer");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.json".to_string()]);
        // A temporary left by a killed writer is recognised and removed; the file is not.
        std::fs::write(dir.join(".a.json.tmp-99999"), b"partial").unwrap();
        assert_eq!(remove_stale_temporaries(&dir), 1);
        assert!(file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
