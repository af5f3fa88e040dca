//! Builds the multi-domain corpus of the round-2 experiments, byte for byte reproducibly, from
//! text every machine that built this project has:
//!
//! | domain | source |
//! |---|---|
//! | `shakespeare` | tiny-shakespeare (`--shakespeare`, default `../shared/data/tinyshakespeare.txt` or `$SWITCH_MOE_DATA`), in chunks of 40 lines |
//! | `rust` | `.rs` files of the crates.io packages pinned in Cargo.lock, read from cargo's download cache (`~/.cargo/registry/cache/*/NAME-VERSION.crate`; `cargo fetch` fills it): each package's files in path order until it gave 20 kB, at most 13 MB in all |
//! | `prose` | the same packages' Markdown files (READMEs, guides, changelogs) |
//!
//! A check (the default) reads exactly the packages the committed manifest lists, so a cache
//! that holds more (a plain `cargo fetch` downloads other platforms' crates too) builds the same
//! corpus, and names any listed package the cache lacks. `--write-manifest` takes every package
//! of Cargo.lock in the cache and lists those it skipped.
//!
//! Every document (a file, or a chunk of Shakespeare) of 200 B to 128 kB and valid UTF-8 is kept
//! and goes to one split by the SHA-256 of its name: 5% test, 5% validation, 90% training; so
//! every split of every domain comes from the same distribution. The output is
//! `OUT/DOMAIN/{train,valid,test}.txt`, documents separated by a blank line (default OUT:
//! `~/.cache/switch-moe/multidomain`).
//!
//! The manifest committed in `experiments/data/` lists every document (domain, split, source,
//! bytes, SHA-256) and every output file's SHA-256; a build compares itself with it and names
//! the first document that differs. `--write-manifest` writes it instead.
//!
//! ```sh
//! cargo fetch    # every crate of Cargo.lock into the download cache (once, needs the network)
//! cargo run --release --features experiments --example build_corpus
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Parser;
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(
    about = "Build the multi-domain corpus (shakespeare, rust, prose) and check it against the manifest"
)]
struct Args {
    /// Output directory (default: ~/.cache/switch-moe/multidomain).
    #[arg(long)]
    out: Option<PathBuf>,
    /// tiny-shakespeare (default: $SWITCH_MOE_DATA, else ../shared/data/tinyshakespeare.txt).
    #[arg(long)]
    shakespeare: Option<PathBuf>,
    /// Write the manifest instead of checking against it.
    #[arg(long)]
    write_manifest: bool,
}

const MANIFEST: &str = "experiments/data/multidomain.tsv";
const OUTPUTS: &str = "experiments/data/multidomain-outputs.tsv";
const MIN_DOC: usize = 200;
const MAX_DOC: usize = 128 * 1024;
const RUST_PER_CRATE: usize = 20_000;
const RUST_TOTAL: usize = 13_000_000;
const SPLITS: [&str; 3] = ["train", "valid", "test"];

struct Doc {
    domain: &'static str,
    source: String,
    text: String,
}

impl Doc {
    fn sha(&self) -> String {
        hex(&Sha256::digest(self.text.as_bytes()))
    }

    /// 5% test, 5% valid, 90% train, by the hash of the document's name.
    fn split(&self) -> &'static str {
        let h = Sha256::digest(format!("{}/{}", self.domain, self.source).as_bytes());
        match h[0] % 20 {
            0 => "test",
            1 => "valid",
            _ => "train",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

/// (name, version) of every crates.io package in Cargo.lock, in its order.
fn locked_packages() -> Vec<(String, String)> {
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_else(|e| {
        fail(&format!(
            "cannot read Cargo.lock (run from the repository root): {e}"
        ))
    });
    let mut out = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(String::from)
            })
        };
        if field("source").is_some_and(|s| s.starts_with("registry+"))
            && let (Some(n), Some(v)) = (field("name"), field("version"))
        {
            out.push((n, v));
        }
    }
    out
}

/// cargo's download cache of crates.io (`$CARGO_HOME/registry/cache/index.crates.io-*`).
fn crate_cache() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| fail("neither CARGO_HOME nor HOME is set"));
    let cache = home.join("registry/cache");
    std::fs::read_dir(&cache)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("index.crates.io-"))
                })
                .min()
        })
        .unwrap_or_else(|| {
            fail(&format!(
                "no crates.io cache under {}: run `cargo fetch`",
                cache.display()
            ))
        })
}

/// The `.rs` and `.md` files of one `.crate` (a gzipped tar), sorted by path.
fn crate_files(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| {
        fail(&format!(
            "cannot open {}: {e}; run `cargo fetch` to download every crate of Cargo.lock",
            path.display()
        ))
    });
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = Vec::new();
    let entries = archive
        .entries()
        .unwrap_or_else(|e| fail(&format!("{}: not a crate archive: {e}", path.display())));
    for entry in entries {
        let mut entry = entry.unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !(name.ends_with(".rs") || name.ends_with(".md")) || entry.size() as usize > MAX_DOC {
            continue;
        }
        let mut bytes = Vec::new();
        if entry.read_to_end(&mut bytes).is_ok() {
            files.push((name, bytes));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn shakespeare_docs(path: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read {}: {e} (pass --shakespeare FILE)",
            path.display()
        ))
    });
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(40)
        .enumerate()
        .map(|(i, chunk)| Doc {
            domain: "shakespeare",
            source: format!(
                "tinyshakespeare.txt#lines{}-{}",
                i * 40 + 1,
                i * 40 + chunk.len()
            ),
            text: chunk.join("\n"),
        })
        .collect()
}

/// The packages (`NAME-VERSION`) the committed manifest's crate documents come from.
fn manifest_packages() -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(MANIFEST).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let domain = cols.next()?;
                let source = cols.nth(1)?;
                (domain != "shakespeare")
                    .then(|| source.split('/').next().unwrap_or("").to_string())
            })
            .collect(),
    )
}

/// The crate documents, from the packages of Cargo.lock; with `only`, from those packages alone
/// (what the manifest lists: a cache that holds more, e.g. other platforms' crates after a
/// plain `cargo fetch`, builds the same corpus), and every one of them must be in the cache.
fn crate_docs(only: Option<&BTreeSet<String>>) -> Vec<Doc> {
    let cache = crate_cache();
    let packages = locked_packages();
    let (mut docs, mut rust_total, mut missing) = (Vec::new(), 0usize, Vec::new());
    for (i, (name, version)) in packages.iter().enumerate() {
        if i % 100 == 0 {
            eprintln!("reading crates: {i}/{} ({name} {version})", packages.len());
        }
        if only.is_some_and(|set| !set.contains(&format!("{name}-{version}"))) {
            continue;
        }
        let archive = cache.join(format!("{name}-{version}.crate"));
        if !archive.exists() {
            // Another platform's dependency (cargo downloads only what it builds here); a
            // machine that lacks one the manifest lists is told so by the check.
            missing.push(format!("{name}-{version}"));
            continue;
        }
        let mut rust_here = 0usize;
        for (path, bytes) in crate_files(&archive) {
            let Ok(text) = String::from_utf8(bytes) else {
                continue;
            };
            if text.len() < MIN_DOC {
                continue;
            }
            let rust = path.ends_with(".rs");
            if rust && (rust_here >= RUST_PER_CRATE || rust_total >= RUST_TOTAL) {
                continue;
            }
            if rust {
                rust_here += text.len();
                rust_total += text.len();
            }
            docs.push(Doc {
                domain: if rust { "rust" } else { "prose" },
                source: path,
                text,
            });
        }
    }
    if only.is_some() && !missing.is_empty() {
        fail(&format!(
            "{} package(s) of the manifest are not in {}: {}; run `cargo fetch`",
            missing.len(),
            cache.display(),
            missing.join(", ")
        ));
    }
    if !missing.is_empty() {
        eprintln!(
            "{} of {} packages of Cargo.lock are not in {} (other platforms' dependencies), \
             skipped: {}",
            missing.len(),
            packages.len(),
            cache.display(),
            missing.join(", ")
        );
    }
    docs
}

fn main() {
    let args = Args::parse();
    let out = args.out.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cache/switch-moe/multidomain")
    });
    let shakespeare = args
        .shakespeare
        .clone()
        .or_else(|| std::env::var_os("SWITCH_MOE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data/tinyshakespeare.txt"));

    let mut docs = shakespeare_docs(&shakespeare);
    // Checking builds exactly the manifest's packages; --write-manifest takes what is here.
    let only = if args.write_manifest {
        None
    } else {
        manifest_packages()
    };
    docs.extend(crate_docs(only.as_ref()));

    // Outputs: domain/split → text; the manifest's lines.
    let mut outputs: BTreeMap<(String, &str), String> = BTreeMap::new();
    let mut manifest = String::from("domain\tsplit\tsource\tbytes\tsha256\n");
    for doc in &docs {
        let split = doc.split();
        let text = outputs.entry((doc.domain.to_string(), split)).or_default();
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&doc.text);
        let _ = writeln!(
            manifest,
            "{}\t{split}\t{}\t{}\t{}",
            doc.domain,
            doc.source,
            doc.text.len(),
            doc.sha()
        );
    }
    let mut summary = String::from("file\tdocuments\tbytes\tsha256\n");
    let mut total = 0usize;
    for ((domain, split), text) in &outputs {
        let dir = out.join(domain);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
        let file = dir.join(format!("{split}.txt"));
        std::fs::write(&file, text)
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", file.display())));
        let n = docs
            .iter()
            .filter(|d| d.domain == domain && d.split() == *split)
            .count();
        let _ = writeln!(
            summary,
            "{domain}/{split}.txt\t{n}\t{}\t{}",
            text.len(),
            hex(&Sha256::digest(text.as_bytes()))
        );
        total += text.len();
    }
    for domain in ["shakespeare", "rust", "prose"] {
        let sizes: Vec<String> = SPLITS
            .iter()
            .map(|s| {
                let b = outputs
                    .get(&(domain.to_string(), *s))
                    .map_or(0, String::len);
                format!("{s} {:.2} MB", b as f64 / 1e6)
            })
            .collect();
        println!("{domain:<12} {}", sizes.join(", "));
    }
    println!(
        "total        {:.2} MB in {} documents, written to {}",
        total as f64 / 1e6,
        docs.len(),
        out.display()
    );

    if args.write_manifest {
        std::fs::create_dir_all("experiments/data").unwrap_or_else(|e| fail(&e.to_string()));
        std::fs::write(MANIFEST, &manifest).unwrap_or_else(|e| fail(&e.to_string()));
        std::fs::write(OUTPUTS, &summary).unwrap_or_else(|e| fail(&e.to_string()));
        println!("wrote {MANIFEST} and {OUTPUTS}");
        return;
    }
    let Ok(expected) = std::fs::read_to_string(OUTPUTS) else {
        fail(&format!(
            "no {OUTPUTS} to check against: run from the repository root, or --write-manifest"
        ));
    };
    if expected == summary {
        println!("identical to {OUTPUTS}: every output file's SHA-256 matches");
        return;
    }
    // Name the first document that differs.
    let want = std::fs::read_to_string(MANIFEST).unwrap_or_default();
    let first = want
        .lines()
        .zip(manifest.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("manifest has\n  {a}\nthis build has\n  {b}"))
        .unwrap_or_else(|| "the document lists match; an output differs in order".into());
    fail(&format!("the corpus differs from {OUTPUTS}:\n{first}"));
}
