//! From corpus text to the token ids of a run's two splits: a contiguous split (the validation
//! text is unseen), the tokenizer (the run's saved one, a given file, or one trained on the
//! training split), and both splits encoded, each checked to hold a window and to fit the model's
//! vocabulary.

use std::path::Path;

use super::tokenizer::{TextTokenizer, TokenizerKind};
use crate::error::{Error, Result};

/// Splits text at a character boundary: the head for training, the last `valid_fraction` for
/// validation.
pub fn split_text(text: &str, valid_fraction: f64) -> (&str, &str) {
    let target = ((text.len() as f64) * (1.0 - valid_fraction)) as usize;
    let cut = (target..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text.split_at(cut)
}

/// Where a run's tokenizer comes from.
#[derive(Debug, Clone, Copy)]
pub enum TokenizerSource<'a> {
    /// A `tokenizer.json`: a resumed run's own, or a file the caller names.
    File(&'a Path),
    /// Made for this run: a BPE trained on the training text, or the characters of the corpus.
    Make(&'a TokenizerKind),
}

impl TokenizerSource<'_> {
    /// The tokenizer. A BPE learns from `train_text` only; a character vocabulary takes every
    /// character of `whole_text`, so that validation has no unknown character.
    pub fn tokenizer(self, train_text: &str, whole_text: &str) -> Result<TextTokenizer> {
        match self {
            Self::File(path) => TextTokenizer::load(path),
            Self::Make(TokenizerKind::Bpe { vocab_size }) => {
                TextTokenizer::train_bpe(train_text, *vocab_size)
            }
            Self::Make(TokenizerKind::Char | TokenizerKind::File) => {
                Ok(TextTokenizer::char_level(whole_text))
            }
        }
    }
}

/// Encodes both splits; each must hold one window of `seq_len + 1` tokens, and every id must be
/// below `vocab_size`.
pub fn encode_splits(
    tokenizer: &TextTokenizer,
    (train_text, valid_text): (&str, &str),
    seq_len: usize,
    vocab_size: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let train = tokenizer.encode(train_text)?;
    let valid = tokenizer.encode(valid_text)?;
    for (split, n) in [("training", train.len()), ("validation", valid.len())] {
        if n < seq_len + 1 {
            return Err(Error::Data(format!(
                "the corpus is too short: its {split} split has {n} tokens, one window needs {} \
                 (`max_seq_len` {seq_len} + 1); use a longer corpus (`TrainOptions::data`) or a \
                 smaller `max_seq_len`",
                seq_len + 1
            )));
        }
    }
    if let Some(id) = train
        .iter()
        .chain(&valid)
        .find(|t| **t as usize >= vocab_size)
    {
        return Err(Error::Tokenizer(format!(
            "token id {id} is outside the model's vocabulary of {vocab_size}: the tokenizer does \
             not belong to this model"
        )));
    }
    Ok((train, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_contiguous_and_cuts_at_a_character_boundary() {
        // 10 bytes, 10% validation: the cut falls at byte 9.
        assert_eq!(split_text("abcdefghij", 0.1), ("abcdefghi", "j"));
        // "é" is two bytes: a cut inside it moves to the next boundary.
        let text = "aaaaaaaéb"; // 10 bytes, é at bytes 7..9
        let (head, tail) = split_text(text, 0.25); // target byte 7.5 → 7
        assert_eq!(format!("{head}{tail}"), text);
        assert!(text.is_char_boundary(head.len()));
    }

    #[test]
    fn encoded_splits_need_a_window_and_known_ids() {
        let chars = TextTokenizer::char_level("abc");
        let (train, valid) = encode_splits(&chars, ("abcabc", "cba"), 2, 3).unwrap();
        assert_eq!((train.len(), valid.len()), (6, 3));
        let short = encode_splits(&chars, ("abcabc", "cb"), 2, 3).unwrap_err();
        assert!(
            short.to_string().contains("validation split has 2 tokens"),
            "{short}"
        );
        let foreign = encode_splits(&chars, ("abcabc", "cba"), 2, 2).unwrap_err();
        assert!(foreign.to_string().contains("token id 2"), "{foreign}");
    }
}
