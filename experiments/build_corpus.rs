//! Builds the multi-domain corpus of the round-2 experiments, byte for byte reproducibly, from
//! text every machine that built this project has:
//!
//! | domain | source |
//! |---|---|
//! | `shakespeare` | tiny-shakespeare (`--shakespeare`, default `../shared/data/tinyshakespeare.txt` or `$SWITCH_MOE_DATA`), in chunks of 40 lines |
//! | `rust` | `.rs` files of the crates.io packages pinned in Cargo.lock, read from cargo's download cache (`~/.cargo/registry/cache/*/NAME-VERSION.crate`; `cargo fetch` fills it): each package's files in path order until it gave 20 kB of new text, at most 13 MB in all |
//! | `prose` | the same packages' Markdown files (READMEs, guides, changelogs) |
//!
//! The packages are exactly those the committed manifest lists, both when checking (the
//! default) and with `--write-manifest`, so a cache that holds more (a plain `cargo fetch`
//! downloads other platforms' crates too) builds the same corpus, and a listed package the cache
//! lacks is named. `--all-packages` takes every package of Cargo.lock in the cache instead (after
//! Cargo.lock changed) and lists those it skipped.
//!
//! Every document (a file, or a chunk of Shakespeare) of 200 B to 128 kB and valid UTF-8 is
//! read, in that order (Shakespeare, then the packages in Cargo.lock's order, each package's
//! files in path order); then, so that no text of a test or validation split is also in training:
//!
//! - **Duplicates are kept once**, the first read: a document whose text is the same as one
//!   kept before (the same SHA-256: one README in several crates of a workspace, a file
//!   unchanged between two versions of a crate), or nearly the same (a Jaccard similarity of
//!   their sets of word 8-grams, shingles of whitespace-separated words, at least 0.8: a
//!   license or code of conduct with another name in it, a file with a line changed between
//!   versions), is dropped. Near-duplicates are found exactly, not sampled: prefix filtering
//!   names the candidates, whose full shingle sets are then compared. Dropping rather than
//!   grouping them keeps a test split of 5% from being a tenth one boilerplate text in ten
//!   copies; a second copy that is 80% the same adds little to training. A dropped document is
//!   listed in the manifest with split `duplicate` and does not count towards the 20 kB and
//!   13 MB of Rust.
//! - **Versions of a file are kept in one split**: the same path in two versions of one package
//!   (`syn-1.0.109/src/lib.rs`, `syn-2.0.87/src/lib.rs`) that differ by more than that are both
//!   kept (their differences are real text, and which one to keep would be arbitrary), in one
//!   group. A group is what these pairs and the dropped duplicates (with what they duplicate)
//!   connect.
//! - **Splits go by content**: a group (a lone document is a group of one) goes to test (5%),
//!   validation (5%) or training (90%) by the first 8 bytes of the SHA-256 of its canonical text
//!   (the text of its kept member with the smallest SHA-256) modulo 20, so all versions of a
//!   file land together and every split of every domain comes from the same distribution.
//!
//! The output is `OUT/DOMAIN/{train,valid,test}.txt`, documents separated by a blank line
//! (default OUT: `~/.cache/switch-moe/multidomain`).
//!
//! The manifest committed in `experiments/data/` lists every document read (domain, split,
//! source, bytes, SHA-256, and its group: the source of the group's canonical document, `-` when
//! it is alone) and every output file's SHA-256. After building, a check reads the manifest the
//! build made and fails, naming the two documents, if one text is kept twice, a group spans two
//! splits, or two versions of one file (same crate name and path, told from the sources alone)
//! are in two splits; `--check-leaks FILE` runs that check alone on any manifest (an older one
//! too). Then a build compares itself with the committed manifest and names the first document
//! that differs; `--write-manifest` writes it instead.
//!
//! ```sh
//! cargo fetch    # every crate of Cargo.lock into the download cache (once, needs the network)
//! cargo run --release --features experiments --example build_corpus
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// Read every package of Cargo.lock in the cache, not only the manifest's.
    #[arg(long)]
    all_packages: bool,
    /// Only check a manifest (e.g. an older one) for texts in two splits, then exit.
    #[arg(long, value_name = "FILE")]
    check_leaks: Option<PathBuf>,
}

const MANIFEST: &str = "experiments/data/multidomain.tsv";
const OUTPUTS: &str = "experiments/data/multidomain-outputs.tsv";
const MIN_DOC: usize = 200;
const MAX_DOC: usize = 128 * 1024;
const RUST_PER_CRATE: usize = 20_000;
const RUST_TOTAL: usize = 13_000_000;
const SPLITS: [&str; 3] = ["train", "valid", "test"];
/// The manifest's split of a dropped duplicate (exact or near), which goes to no output.
const DUPLICATE: &str = "duplicate";
/// Near-duplicate texts: Jaccard similarity of their word `SHINGLE`-gram sets at least
/// `NEAR_NUM / NEAR_DEN` (0.8), in integers so that the prefix filter is exact.
const SHINGLE: usize = 8;
const NEAR_NUM: usize = 4;
const NEAR_DEN: usize = 5;

struct Doc {
    domain: &'static str,
    /// The crate's name (without version); empty for Shakespeare.
    package: String,
    /// `NAME-VERSION/PATH` for a crate's file, `tinyshakespeare.txt#linesA-B` for a chunk.
    source: String,
    text: String,
    sha: [u8; 32],
    /// The earlier kept document with the same or nearly the same text: this one is dropped.
    duplicate_of: Option<usize>,
}

impl Doc {
    /// The path inside the crate (`src/lib.rs`), the same in every version of a package.
    fn file(&self) -> &str {
        self.source.split_once('/').map_or("", |(_, f)| f)
    }
}

/// Every document read, in reading order, each compared as it comes with those kept before it.
#[derive(Default)]
struct Corpus {
    docs: Vec<Doc>,
    /// Kept documents by the SHA-256 of their text.
    by_sha: HashMap<[u8; 32], usize>,
    /// Each document's shingle set (empty for a dropped one).
    shingles: Vec<Vec<u64>>,
    /// Shingle → the kept documents that have it in their prefix (see `near_duplicate_of`).
    prefixes: HashMap<u64, Vec<usize>>,
}

impl Corpus {
    /// Adds a document; true if it is kept (its text is new), false if it is dropped as an exact
    /// or near duplicate of one kept before.
    fn add(&mut self, domain: &'static str, package: &str, source: String, text: String) -> bool {
        let sha: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let i = self.docs.len();
        let (duplicate_of, set) = match self.by_sha.get(&sha) {
            Some(&j) => (Some(j), Vec::new()),
            None => {
                let set = shingles(&text);
                match self.near_duplicate_of(domain, &set) {
                    Some(j) => (Some(j), Vec::new()),
                    None => (None, set),
                }
            }
        };
        if duplicate_of.is_none() {
            self.by_sha.insert(sha, i);
            for &h in &set[..prefix_len(set.len())] {
                self.prefixes.entry(h).or_default().push(i);
            }
        }
        self.shingles.push(set);
        self.docs.push(Doc {
            domain,
            package: package.to_string(),
            source,
            text,
            sha,
            duplicate_of,
        });
        duplicate_of.is_none()
    }

    /// The first kept document of the domain whose shingle set has a Jaccard similarity of at
    /// least 0.8 with `set`. Exact, not sampled: two sets with Jaccard ≥ t share one of the
    /// |A| − ⌈t·|A|⌉ + 1 smallest hashes of each (prefix filtering), so only documents that
    /// share a prefix shingle are compared in full.
    fn near_duplicate_of(&self, domain: &str, set: &[u64]) -> Option<usize> {
        let candidates: BTreeSet<usize> = set[..prefix_len(set.len())]
            .iter()
            .filter_map(|h| self.prefixes.get(h))
            .flatten()
            .copied()
            .collect();
        candidates
            .into_iter()
            .find(|&j| self.docs[j].domain == domain && similar(&self.shingles[j], set))
    }
}

/// 5% test, 5% valid, 90% train, by a group's canonical SHA-256 (its first 8 bytes modulo 20).
fn split_of(sha: &[u8; 32]) -> &'static str {
    let head = u64::from_be_bytes(sha[..8].try_into().expect("8 bytes"));
    match head % 20 {
        0 => "test",
        1 => "valid",
        _ => "train",
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

fn shakespeare_docs(path: &Path, corpus: &mut Corpus) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        fail(&format!(
            "cannot read {}: {e} (pass --shakespeare FILE)",
            path.display()
        ))
    });
    let lines: Vec<&str> = text.lines().collect();
    for (i, chunk) in lines.chunks(40).enumerate() {
        let source = format!(
            "tinyshakespeare.txt#lines{}-{}",
            i * 40 + 1,
            i * 40 + chunk.len()
        );
        corpus.add("shakespeare", "", source, chunk.join("\n"));
    }
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
/// A dropped duplicate is listed but counts towards neither cap on Rust.
fn crate_docs(only: Option<&BTreeSet<String>>, corpus: &mut Corpus) {
    let cache = crate_cache();
    let packages = locked_packages();
    let (mut rust_total, mut missing) = (0usize, Vec::new());
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
            let len = text.len();
            let domain = if rust { "rust" } else { "prose" };
            if corpus.add(domain, name, path, text) && rust {
                rust_here += len;
                rust_total += len;
            }
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
}

/// The set of a text's word `SHINGLE`-grams (FNV-1a hashes, sorted); a text of fewer words is
/// one shingle.
fn shingles(text: &str) -> Vec<u64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut set: Vec<u64> = words
        .windows(SHINGLE.min(words.len()).max(1))
        .map(|gram| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in gram.join(" ").bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
            h
        })
        .collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// How many of a set's smallest hashes two sets with Jaccard ≥ `NEAR_NUM / NEAR_DEN` share one
/// of: n − ⌈t·n⌉ + 1 (at most n).
fn prefix_len(n: usize) -> usize {
    (n - (NEAR_NUM * n).div_ceil(NEAR_DEN) + 1).min(n)
}

/// Whether two sorted shingle sets have a Jaccard similarity of at least `NEAR_NUM / NEAR_DEN`.
fn similar(a: &[u64], b: &[u64]) -> bool {
    let (short, long) = (a.len().min(b.len()), a.len().max(b.len()));
    if short * NEAR_DEN < long * NEAR_NUM {
        return false; // Jaccard ≤ short / long
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    common * NEAR_DEN >= union * NEAR_NUM
}

/// Pairs of documents that are the same file of two versions of one package (same crate name,
/// same path in the crate).
fn version_pairs(docs: &[Doc]) -> Vec<(usize, usize)> {
    let mut first: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut pairs = Vec::new();
    for (i, d) in docs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.package.is_empty())
    {
        match first.get(&(d.domain, d.package.as_str(), d.file())) {
            Some(&j) => pairs.push((j, i)),
            None => {
                first.insert((d.domain, d.package.as_str(), d.file()), i);
            }
        }
    }
    pairs
}

/// Union-find: the representative of `i`'s group.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Where each document goes: its split (`duplicate` for a dropped one) and its group's
/// canonical document (`None` when it is alone).
struct Placement {
    split: &'static str,
    group: Option<usize>,
}

/// Groups the documents (a dropped duplicate with the one it duplicates, the versions of a
/// file) and gives each group the split of its canonical text; prints what it found.
fn place(docs: &[Doc]) -> Vec<Placement> {
    let mut parent: Vec<usize> = (0..docs.len()).collect();
    let duplicates = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.duplicate_of.map(|j| (j, i)));
    for (a, b) in duplicates.chain(version_pairs(docs)) {
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        parent[ra.max(rb)] = ra.min(rb);
    }
    // Each group's size, kept documents and canonical (smallest-SHA-256) kept document; a
    // group's first document is kept (a duplicate comes after the one it duplicates).
    let mut groups: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    for (i, d) in docs.iter().enumerate() {
        let g = groups.entry(root(&mut parent, i)).or_insert((0, 0, i));
        g.0 += 1;
        if d.duplicate_of.is_none() {
            g.1 += 1;
            if d.sha < docs[g.2].sha {
                g.2 = i;
            }
        }
    }
    print_dedup(docs, groups.values().filter(|g| g.1 > 1).map(|g| g.1));
    (0..docs.len())
        .map(|i| {
            let (all, _, canonical) = groups[&root(&mut parent, i)];
            Placement {
                split: match docs[i].duplicate_of {
                    Some(_) => DUPLICATE,
                    None => split_of(&docs[canonical].sha),
                },
                group: (all > 1).then_some(canonical),
            }
        })
        .collect()
}

/// Prints how many documents were dropped and how many groups of kept ones (their sizes).
fn print_dedup(docs: &[Doc], kept_groups: impl Iterator<Item = usize>) {
    let dropped = |exact: bool| {
        let d: Vec<&Doc> = docs
            .iter()
            .filter(|d| {
                d.duplicate_of
                    .is_some_and(|j| (docs[j].sha == d.sha) == exact)
            })
            .collect();
        let bytes: usize = d.iter().map(|d| d.text.len()).sum();
        format!("{} ({:.2} MB)", d.len(), bytes as f64 / 1e6)
    };
    let sizes: Vec<usize> = kept_groups.collect();
    println!(
        "dropped: {} exact duplicates, {} near duplicates (Jaccard ≥ 0.8)\n\
         kept together in one split: {} groups of versions of a file, {} documents",
        dropped(true),
        dropped(false),
        sizes.len(),
        sizes.iter().sum::<usize>()
    );
}

/// The manifest: one line per document read, in reading order.
fn manifest_text(docs: &[Doc], placed: &[Placement]) -> String {
    let mut manifest = String::from("domain\tsplit\tsource\tbytes\tsha256\tgroup\n");
    for (doc, p) in docs.iter().zip(placed) {
        let _ = writeln!(
            manifest,
            "{}\t{}\t{}\t{}\t{}\t{}",
            doc.domain,
            p.split,
            doc.source,
            doc.text.len(),
            hex(&doc.sha),
            p.group.map_or("-", |g| docs[g].source.as_str())
        );
    }
    manifest
}

/// Writes `OUT/DOMAIN/SPLIT.txt` and prints their sizes; returns the outputs' summary (file,
/// documents, bytes, SHA-256).
fn write_outputs(out: &Path, docs: &[Doc], placed: &[Placement]) -> String {
    // domain/split → (documents, text)
    let mut outputs: BTreeMap<(&str, &str), (usize, String)> = BTreeMap::new();
    for (doc, p) in docs
        .iter()
        .zip(placed)
        .filter(|(_, p)| p.split != DUPLICATE)
    {
        let (n, text) = outputs.entry((doc.domain, p.split)).or_default();
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&doc.text);
        *n += 1;
    }
    let mut summary = String::from("file\tdocuments\tbytes\tsha256\n");
    let mut total = 0usize;
    for ((domain, split), (n, text)) in &outputs {
        let dir = out.join(domain);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));
        let file = dir.join(format!("{split}.txt"));
        std::fs::write(&file, text)
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", file.display())));
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
                let b = outputs.get(&(domain, *s)).map_or(0, |o| o.1.len());
                format!("{s} {:.2} MB", b as f64 / 1e6)
            })
            .collect();
        println!("{domain:<12} {}", sizes.join(", "));
    }
    println!(
        "total        {:.2} MB in {} documents, written to {}",
        total as f64 / 1e6,
        outputs.values().map(|o| o.0).sum::<usize>(),
        out.display()
    );
    summary
}

/// What in a manifest puts one text in two places, those across splits first: a text kept
/// twice (in two splits, or twice in one), a group in two splits (when the manifest has the
/// group column), two versions of one file in two splits, a dropped duplicate of no kept
/// document. Each names the two documents.
fn leaks(manifest: &str) -> Vec<String> {
    let mut problems: Vec<(bool, String)> = Vec::new(); // (within one split, message)
    // sha256 → (split, source) of the kept document; group → the same for its first member.
    let mut kept: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut groups: HashMap<&str, (&str, &str)> = HashMap::new();
    // (domain, crate name, path in the crate) → the same.
    let mut files: HashMap<(&str, &str, &str), (&str, &str)> = HashMap::new();
    let mut dropped = Vec::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [domain, split, source, _, sha, ..] = cols[..] else {
            problems.push((false, format!("not a manifest line: {line}")));
            continue;
        };
        let group = cols.get(5).copied().filter(|g| *g != "-");
        if split == DUPLICATE {
            dropped.push((source, sha, group));
            continue;
        }
        if let Some(&(s, first)) = kept.get(sha) {
            let place = if s == split {
                "twice in one split"
            } else {
                "in two splits"
            };
            let msg = format!("one text kept {place}: {first} ({s}) and {source} ({split})");
            problems.push((s == split, msg));
        } else {
            kept.insert(sha, (split, source));
        }
        match group.map(|g| (g, groups.get(g))) {
            Some((g, Some(&(s, first)))) if s != split => problems.push((
                false,
                format!("one group in two splits: {first} ({s}) and {source} ({split}), group {g}"),
            )),
            Some((g, None)) => {
                groups.insert(g, (split, source));
            }
            _ => {}
        }
        let Some((package, file)) = source.split_once('/') else {
            continue; // Shakespeare
        };
        match files.get(&(domain, crate_name(package), file)) {
            Some(&(s, first)) if s != split => problems.push((
                false,
                format!("versions of one file in two splits: {first} ({s}) and {source} ({split})"),
            )),
            Some(_) => {}
            None => {
                files.insert((domain, crate_name(package), file), (split, source));
            }
        }
    }
    let kept_sources: HashSet<&str> = kept.values().map(|k| k.1).collect();
    for (source, sha, group) in dropped {
        // The canonical document a group column names is kept; without one, the same text is.
        if !group.map_or(kept.contains_key(sha), |g| kept_sources.contains(g)) {
            problems.push((
                true,
                format!("{source} is dropped as a duplicate of no kept document"),
            ));
        }
    }
    problems.sort_by_key(|p| p.0);
    problems.into_iter().map(|p| p.1).collect()
}

/// The crate name of `NAME-VERSION`: what comes before the first `-` that a version
/// (`DIGITS.DIGITS.DIGIT...`) follows (`md-5-0.10.6` → `md-5`).
fn crate_name(package: &str) -> &str {
    let is_version = |v: &str| {
        let mut parts = v.splitn(3, '.');
        let digits = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        digits(parts.next())
            && digits(parts.next())
            && parts
                .next()
                .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
    };
    package
        .match_indices('-')
        .find(|(i, _)| is_version(&package[i + 1..]))
        .map_or(package, |(i, _)| &package[..i])
}

/// Fails, naming the documents, if the manifest puts one text in two places.
fn check_leaks(manifest: &str, what: &str) {
    let problems = leaks(manifest);
    if problems.is_empty() {
        let near = if manifest.starts_with("domain\tsplit\tsource\tbytes\tsha256\tgroup") {
            "group"
        } else {
            "group (not checked: no group column)"
        };
        println!("leak check of {what}: no text kept twice, no {near} in two splits");
        return;
    }
    for p in problems.iter().take(20) {
        eprintln!("  {p}");
    }
    fail(&format!(
        "leak check of {what}: {} problem(s), the first {} above",
        problems.len(),
        problems.len().min(20)
    ));
}

fn main() {
    let args = Args::parse();
    if let Some(file) = &args.check_leaks {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", file.display())));
        check_leaks(&text, &file.display().to_string());
        return;
    }
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

    let mut corpus = Corpus::default();
    shakespeare_docs(&shakespeare, &mut corpus);
    // The manifest's packages, checking or writing; --all-packages takes what is here.
    let only = if args.all_packages {
        None
    } else {
        manifest_packages()
    };
    crate_docs(only.as_ref(), &mut corpus);
    let placed = place(&corpus.docs);
    let manifest = manifest_text(&corpus.docs, &placed);
    let summary = write_outputs(&out, &corpus.docs, &placed);
    check_leaks(&manifest, "this build");

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
