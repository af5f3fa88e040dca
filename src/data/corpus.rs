//! The training text: a file, every UTF-8 file under a directory, or tiny-shakespeare downloaded
//! once into the user's cache and checked against its sha256.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Environment variable naming the corpus when no path is given (`TrainOptions::data`).
pub const DATA_ENV: &str = "SWITCH_MOE_DATA";
/// Where tiny-shakespeare (Karpathy's char-rnn copy, 1,115,394 bytes) is downloaded from.
pub const TINY_SHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
/// Its sha256.
pub const TINY_SHAKESPEARE_SHA256: &str =
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";

/// `$XDG_CACHE_HOME/switch-moe`, else `$HOME/.cache/switch-moe`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("switch-moe"))
}

/// The corpus text and where it came from.
///
/// Order: `path` (`TrainOptions::data`), then `$SWITCH_MOE_DATA`, then tiny-shakespeare from the
/// cache, downloaded on first use.
pub fn load_corpus(path: Option<&Path>) -> Result<(String, PathBuf)> {
    let chosen = path
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(DATA_ENV).map(PathBuf::from));
    let source = match chosen {
        Some(p) => p,
        None => {
            let dir = default_cache_dir().ok_or_else(|| {
                Error::Data(
                    "no corpus given and no cache directory (neither XDG_CACHE_HOME nor HOME is \
                     set): name a file or directory in `TrainOptions::data`"
                        .into(),
                )
            })?;
            let file = dir.join("tinyshakespeare.txt");
            download_verified(TINY_SHAKESPEARE_URL, &file, TINY_SHAKESPEARE_SHA256)?;
            file
        }
    };
    let text = read_text_path(&source)?;
    Ok((text, source))
}

/// Reads a UTF-8 file, or every regular file under a directory (recursively, in path order,
/// joined by a newline). Fails on a missing path, a file that is not UTF-8, or no text at all.
pub fn read_text_path(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Data(format!(
            "corpus {} cannot be opened ({e}): `TrainOptions::data` must name an existing file \
             or directory",
            path.display()
        ))
    })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut parts = Vec::with_capacity(files.len());
    for file in &files {
        let bytes =
            std::fs::read(file).map_err(|e| Error::io("cannot read corpus file", file, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::Data(format!(
                "corpus file {} is not UTF-8 text (invalid byte at offset {}): convert it to UTF-8 \
                 or leave it out of `TrainOptions::data`",
                file.display(),
                e.utf8_error().valid_up_to()
            ))
        })?;
        parts.push(text);
    }
    let text = parts.join("\n");
    if text.trim().is_empty() {
        return Err(Error::Data(format!(
            "corpus {} holds no text{}: name a non-empty text file in `TrainOptions::data`",
            path.display(),
            if meta.is_dir() {
                " (no non-empty files under it)"
            } else {
                ""
            }
        )));
    }
    Ok(text)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // hidden files and directories (.git, editor swap files)
        }
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() || kind.is_symlink() && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Makes sure `dest` holds the file at `url` with the given sha256: an existing file that matches
/// is kept, otherwise the file is downloaded to a temporary name, checked and moved into place.
pub fn download_verified(url: &str, dest: &Path, sha256: &str) -> Result<()> {
    if let Ok(bytes) = std::fs::read(dest)
        && hex_sha256(&bytes) == sha256
    {
        return Ok(());
    }
    let offline_hint =
        "name a local copy in `TrainOptions::data` or SWITCH_MOE_DATA (a file or a directory)";
    let mut body = Vec::new();
    ureq::get(url)
        .call()
        .map_err(|e| {
            Error::Data(format!(
                "cannot download {url} ({e}); offline? {offline_hint}"
            ))
        })?
        .into_body()
        .into_reader()
        .read_to_end(&mut body)
        .map_err(|e| Error::Data(format!("download of {url} failed ({e}); {offline_hint}")))?;
    let got = hex_sha256(&body);
    if got != sha256 {
        return Err(Error::Data(format!(
            "download of {url} has sha256 {got}, expected {sha256}: the file changed or was \
             corrupted; {offline_hint}"
        )));
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    }
    let tmp = dest.with_extension("part");
    std::fs::write(&tmp, &body).map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| Error::io("cannot move into place", dest, e))?;
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
