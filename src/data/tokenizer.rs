//! Tokenizers: a byte-level BPE trained on the training text (through Hugging Face `tokenizers`),
//! or characters. Both save to and load from `tokenizer.json`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::error::{Error, Result};
pub use kind::TokenizerKind;

/// In a module of its own: burn's `Config` derive names `Result`, which this file's alias shadows.
mod kind {
    use burn::config::Config;

    /// How a run gets its tokenizer (a field of the run's config).
    #[derive(Config, Debug, PartialEq)]
    pub enum TokenizerKind {
        /// Byte-level BPE trained on the training split.
        Bpe {
            /// Vocabulary size (256 bytes + merges).
            vocab_size: usize,
        },
        /// One token per character of the corpus.
        Char,
        /// Loaded from a `tokenizer.json` (`TrainOptions::tokenizer_file`).
        File,
    }
}

/// A text ↔ token-id mapping.
#[derive(Debug, Clone)]
pub enum TextTokenizer {
    /// Byte-level BPE: any text encodes, merges learnt from the corpus.
    Bpe(Box<Tokenizer>),
    /// One token per character seen in the corpus.
    Char(CharTokenizer),
}

/// A character-level vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CharTokenizer {
    /// The characters, sorted; a character's id is its index.
    pub switch_moe_char_vocab: Vec<char>,
    #[serde(skip)]
    index: HashMap<char, u32>,
}

impl CharTokenizer {
    /// The vocabulary of `text`.
    pub fn from_text(text: &str) -> Self {
        let chars: BTreeSet<char> = text.chars().collect();
        Self::from_chars(chars.into_iter().collect())
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as u32))
            .collect();
        Self {
            switch_moe_char_vocab: chars,
            index,
        }
    }
}

impl TextTokenizer {
    /// Trains a byte-level BPE with `vocab_size` tokens (256 bytes + merges) on `text`.
    pub fn train_bpe(text: &str, vocab_size: usize) -> Result<Self> {
        if vocab_size < 257 {
            return Err(Error::config(
                "TokenizerKind::Bpe",
                "vocab_size",
                vocab_size,
                "too small for a byte-level BPE (256 byte tokens + merges): use at least 257, or \
                 a character-level tokenizer (`TokenizerKind::Char`)",
            ));
        }
        let mut tokenizer = Tokenizer::new(BPE::default());
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .show_progress(false)
            .build()
            .into();
        tokenizer
            .train(&mut trainer, text.split_inclusive('\n'))
            .map_err(|e| Error::Tokenizer(format!("BPE training failed: {e}")))?;
        Ok(Self::Bpe(Box::new(tokenizer)))
    }

    /// A character-level tokenizer over the characters of `text`.
    pub fn char_level(text: &str) -> Self {
        Self::Char(CharTokenizer::from_text(text))
    }

    /// Loads a `tokenizer.json` written by [`save`](Self::save) (or any Hugging Face tokenizer).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Tokenizer(format!(
                "cannot read tokenizer {} ({e}): `TrainOptions::tokenizer_file` must name an \
                 existing tokenizer.json",
                path.display()
            ))
        })?;
        if let Ok(chars) = serde_json::from_slice::<CharTokenizer>(&bytes) {
            return Ok(Self::Char(CharTokenizer::from_chars(
                chars.switch_moe_char_vocab,
            )));
        }
        Tokenizer::from_bytes(&bytes)
            .map(|t| Self::Bpe(Box::new(t)))
            .map_err(|e| {
                Error::Tokenizer(format!(
                    "{} is not a readable tokenizer.json ({e}): pass a file saved by switch-moe or \
                     Hugging Face tokenizers as `TrainOptions::tokenizer_file`, or leave it out to \
                     train one",
                    path.display()
                ))
            })
    }

    /// Writes the tokenizer as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail =
            |e: String| Error::Tokenizer(format!("cannot save tokenizer {}: {e}", path.display()));
        // Written atomically (temporary file, fsync, rename): a kill never leaves half a file.
        let json = match self {
            Self::Bpe(t) => t
                .to_string(false)
                .map_err(|e| fail(e.to_string()))?
                .into_bytes(),
            Self::Char(c) => serde_json::to_vec(c).map_err(|e| fail(e.to_string()))?,
        };
        crate::atomic_file::write_atomic(path, &json).map_err(|e| fail(e.to_string()))
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bpe(t) => t.get_vocab_size(true),
            Self::Char(c) => c.switch_moe_char_vocab.len(),
        }
    }

    /// Text → ids. A character-level tokenizer rejects characters it has not seen.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::Bpe(t) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(format!("cannot encode text: {e}"))),
            Self::Char(c) => text
                .chars()
                .map(|ch| {
                    c.index.get(&ch).copied().ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "character {ch:?} is not in the character vocabulary of this model"
                        ))
                    })
                })
                .collect(),
        }
    }

    /// Ids → text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Self::Bpe(t) => t
                .decode(ids, false)
                .map_err(|e| Error::Tokenizer(format!("cannot decode ids: {e}"))),
            Self::Char(c) => ids
                .iter()
                .map(|id| {
                    c.switch_moe_char_vocab
                        .get(*id as usize)
                        .copied()
                        .ok_or_else(|| {
                            Error::Tokenizer(format!("token id {id} is outside the vocabulary"))
                        })
                })
                .collect(),
        }
    }
}
