//! Data for language-model training: the corpus, the tokenizer and the token windows.

mod corpus;
mod dataset;
mod prepare;
mod tokenizer;

pub use corpus::{
    DATA_ENV, TINY_SHAKESPEARE_SHA256, TINY_SHAKESPEARE_URL, default_cache_dir, download_verified,
    load_corpus, read_text_path,
};
pub use dataset::{LmBatcher, TokenWindows, split_tokens};
pub use prepare::{TokenizerSource, encode_splits, split_text};
pub use tokenizer::{CharTokenizer, TextTokenizer, TokenizerKind};
