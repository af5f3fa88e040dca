//! Flags every experiment takes, and the corpus they load.

use std::path::PathBuf;

use crate::data::{TextTokenizer, load_corpus};

/// Common flags of the experiment programs.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Corpus file or directory (default: $SWITCH_MOE_DATA, else tiny-shakespeare downloaded to
    /// ~/.cache/switch-moe).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where the CSVs and PNGs go (default: experiments/results/<experiment>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `cpu` (default): the small setting sized for ≤ 30 minutes on a 2-core CPU with ndarray;
    /// `gpu`: a 4× wider model and longer runs, for a GPU backend (--features wgpu / cuda).
    #[arg(long, default_value = "cpu")]
    pub scale: Scale,
    /// Override the number of optimiser steps of every run (e.g. a quick smoke test).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seeds to repeat the runs with (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
}

/// Size presets.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small: for the 2-core CPU machine.
    Cpu,
    /// Bigger: for a GPU.
    Gpu,
}

impl Scale {
    /// The model and budget shared by experiments 1–3:
    /// `(d_model, d_ff, layers, seq_len, batch, steps)`.
    pub fn standard_size(self) -> (usize, usize, usize, usize, usize, usize) {
        match self {
            Scale::Cpu => (64, 256, 4, 64, 32, 500),
            Scale::Gpu => (256, 1024, 6, 256, 32, 4000),
        }
    }
}

impl CommonArgs {
    /// The output directory, created.
    pub fn out_dir(&self, experiment: &str) -> PathBuf {
        let dir = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("experiments/results").join(experiment));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            fail(&format!("cannot create {}: {e}", dir.display()));
        }
        dir
    }

    /// The seeds, or `default`.
    pub fn seeds_or(&self, default: &[u64]) -> Vec<u64> {
        self.seeds.clone().unwrap_or_else(|| default.to_vec())
    }
}

/// A character-level corpus split 90/10 (contiguous, so the validation text is unseen).
pub struct Corpus {
    /// Training token ids.
    pub train: Vec<u32>,
    /// Validation token ids.
    pub valid: Vec<u32>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Per-domain held-out splits of a multi-domain corpus (empty otherwise).
    pub domains: Vec<DomainSplits>,
}

/// One domain's validation and test tokens.
pub struct DomainSplits {
    /// The domain's name (`shakespeare`, `rust`, `prose`).
    pub name: String,
    /// Where its training split lies in [`Corpus::train`].
    pub train: std::ops::Range<usize>,
    /// Validation tokens.
    pub valid: Vec<u32>,
    /// Test tokens.
    pub test: Vec<u32>,
}

/// The multi-domain corpus of `experiments/build_corpus.rs` (`dir`, default
/// `~/.cache/switch-moe/multidomain`), byte-level (vocabulary 256): training on the domains'
/// concatenated training splits (so each domain weighs by its size), validation curves on the
/// concatenated validation splits, and each domain's validation and test splits apart.
pub fn load_multidomain(dir: Option<&std::path::Path>) -> Corpus {
    let dir = dir.map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        home.join(".cache/switch-moe/multidomain")
    });
    let read = |domain: &str, split: &str| -> Vec<u32> {
        let file = dir.join(domain).join(format!("{split}.txt"));
        match std::fs::read(&file) {
            Ok(bytes) => bytes.into_iter().map(u32::from).collect(),
            Err(e) => fail(&format!(
                "cannot read {}: {e}; build the corpus first: cargo run --release --features \
                 experiments --example build_corpus",
                file.display()
            )),
        }
    };
    let (mut train, mut valid, mut domains) = (Vec::new(), Vec::new(), Vec::new());
    for name in ["shakespeare", "rust", "prose"] {
        let start = train.len();
        train.extend(read(name, "train"));
        let v = read(name, "valid");
        valid.extend(v.iter().copied());
        domains.push(DomainSplits {
            name: name.to_string(),
            train: start..train.len(),
            valid: v,
            test: read(name, "test"),
        });
    }
    eprintln!(
        "multi-domain corpus {}: {} train / {} valid bytes; test {}",
        dir.display(),
        train.len(),
        valid.len(),
        domains
            .iter()
            .map(|d| format!("{} {}", d.name, d.test.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Corpus {
        train,
        valid,
        vocab_size: 256,
        domains,
    }
}

/// Loads the corpus, optionally keeping only its first `max_chars` characters (a small corpus is
/// what some experiments need), and tokenises it by character.
pub fn load_char_corpus(args: &CommonArgs, max_chars: Option<usize>) -> Corpus {
    let (text, path) = load_corpus(args.data.as_deref()).unwrap_or_else(|e| fail(&e.to_string()));
    let text: String = match max_chars {
        Some(n) => text.chars().take(n).collect(),
        None => text,
    };
    let tokenizer = TextTokenizer::char_level(&text);
    let ids = tokenizer
        .encode(&text)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let (train, valid) = crate::data::split_tokens(&ids, 0.1);
    eprintln!(
        "corpus {}: {} chars, vocab {}, {} train / {} valid tokens",
        path.display(),
        text.chars().count(),
        tokenizer.vocab_size(),
        train.len(),
        valid.len()
    );
    Corpus {
        train,
        valid,
        vocab_size: tokenizer.vocab_size(),
        domains: Vec::new(),
    }
}

/// The arms a program runs: those `--arms` names (each checked against `known`), else
/// `default`, in order.
pub fn select_arms(requested: Option<&[String]>, known: &[&str], default: &[&str]) -> Vec<String> {
    let Some(requested) = requested else {
        return default.iter().map(|s| s.to_string()).collect();
    };
    if let Some(bad) = requested.iter().find(|a| !known.contains(&a.as_str())) {
        fail(&format!("--arms: unknown arm {bad}; one of {known:?}"));
    }
    requested.to_vec()
}

/// Prints one `error:` paragraph and exits with status 1.
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
