//! Token windows for next-token prediction and their batcher.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::lm::LmBatch;

/// Splits a token stream into a training head and a validation tail, contiguous, so that the
/// validation text is unseen: the last `round(len · valid_fraction)` tokens. For corpora that are
/// already token ids (the experiments' character and byte corpora); a training run splits the
/// text before it trains its tokenizer ([`split_text`](super::split_text)).
pub fn split_tokens(tokens: &[u32], valid_fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let valid = ((tokens.len() as f64) * valid_fraction).round() as usize;
    let cut = tokens.len() - valid.min(tokens.len());
    (tokens[..cut].to_vec(), tokens[cut..].to_vec())
}

/// Non-overlapping windows of `seq_len + 1` tokens (inputs plus the shifted targets).
#[derive(Debug, Clone)]
pub struct TokenWindows {
    tokens: Arc<Vec<u32>>,
    seq_len: usize,
}

impl TokenWindows {
    /// Windows over `tokens`; the tail shorter than a window is left out.
    pub fn new(tokens: Vec<u32>, seq_len: usize) -> Self {
        Self {
            tokens: Arc::new(tokens),
            seq_len,
        }
    }
}

impl Dataset<Vec<u32>> for TokenWindows {
    fn get(&self, index: usize) -> Option<Vec<u32>> {
        let start = index * self.seq_len;
        self.tokens
            .get(start..start + self.seq_len + 1)
            .map(<[u32]>::to_vec)
    }

    fn len(&self) -> usize {
        self.tokens.len().saturating_sub(1) / self.seq_len
    }
}

/// Stacks windows into an [`LmBatch`].
#[derive(Debug, Clone, Default)]
pub struct LmBatcher;

impl<B: Backend> Batcher<B, Vec<u32>, LmBatch<B>> for LmBatcher {
    fn batch(&self, items: Vec<Vec<u32>>, device: &B::Device) -> LmBatch<B> {
        let b = items.len();
        let s = items.first().map_or(0, |w| w.len() - 1);
        let mut inputs = Vec::with_capacity(b * s);
        let mut targets = Vec::with_capacity(b * s);
        for w in &items {
            inputs.extend(w[..s].iter().map(|t| *t as i64));
            targets.extend(w[1..].iter().map(|t| *t as i64));
        }
        LmBatch {
            inputs: Tensor::<B, 2, Int>::from_data(TensorData::new(inputs, [b, s]), device),
            targets: Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [b, s]), device),
        }
    }
}
