//! Measuring a model: the objective of a batch, validation and test cross-entropy (with the
//! eval capacity factor or dropless, in domain-homogeneous or mixed batches), routing probes per
//! domain and per byte, and samples with their repetition rate.

use crate::data::LmBatcher;
use crate::init::HostRng;
use crate::{CombinedMoeStats, LmBatch, LmOutput, MoeStats, RoutingStats, SwitchLm};
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::cli::Corpus;
use super::run::{Objective, RunSpec};

/// First-choice counts `[layer][domain][expert]`.
pub type DomainCounts = Vec<Vec<Vec<f64>>>;
/// First-choice counts per current input byte, `[layer][byte][domain][expert]`.
pub type ByteCounts = Vec<Vec<Vec<Vec<f64>>>>;

/// Tokens per domain in the end-of-run routing probe.
pub const PROBE_TOKENS: usize = 32_768;

/// A batch of the windows of `seq + 1` tokens starting at `starts`, through the library's batcher.
pub fn batch<B: Backend>(
    tokens: &[u32],
    starts: &[usize],
    seq: usize,
    device: &B::Device,
) -> LmBatch<B> {
    let windows = starts
        .iter()
        .map(|&s| tokens[s..s + seq + 1].to_vec())
        .collect();
    LmBatcher.batch(windows, device)
}

/// One forward pass of `spec`'s objective over the windows at `starts`. For the masked objective
/// `salt` picks the masks (training: fresh per step; evaluation: 0, the same masks at every
/// evaluation).
pub fn objective_step<B: Backend>(
    model: &SwitchLm<B>,
    spec: &RunSpec,
    tokens: &[u32],
    starts: &[usize],
    salt: u64,
    device: &B::Device,
) -> LmOutput<B> {
    match spec.objective {
        Objective::Causal => {
            let seq = spec.model.max_seq_len;
            model.forward_step(batch::<B>(tokens, starts, seq, device))
        }
        Objective::Masked { rate } => {
            let (ce, moe, _) = masked_step(model, spec, tokens, starts, salt, rate, device);
            let loss = ce.clone() + moe.weighted_loss(model.loss_weights());
            LmOutput {
                loss,
                cross_entropy: ce,
                moe,
                num_tokens: starts.len() * spec.model.max_seq_len,
            }
        }
    }
}

/// The masked objective over the windows at `starts`: the mean cross-entropy of the masked
/// positions `[1]`, the sparse layers' stats, and each window's mean `[B]`.
fn masked_step<B: Backend>(
    model: &SwitchLm<B>,
    spec: &RunSpec,
    tokens: &[u32],
    starts: &[usize],
    salt: u64,
    rate: f64,
    device: &B::Device,
) -> (Tensor<B, 1>, crate::CombinedMoeStats<B>, Tensor<B, 1>) {
    let b = starts.len();
    let (inputs, targets, scored) = masked(spec, tokens, starts, salt, rate, device);
    let (logits, stats) = model.forward_bidirectional(inputs); // [B, S, V]
    let nll = SwitchLm::token_nll(logits, targets) * scored.clone(); // [B, S]
    let counts = scored.clone().sum_dim(1).reshape([b]).clamp_min(1.0); // [B]
    let per_window = nll.clone().sum_dim(1).reshape([b]) / counts; // [B]
    let ce = nll.sum() / scored.sum().clamp_min(1.0); // [1]
    (ce, MoeStats::combine(stats), per_window)
}

/// Each window's mean cross-entropy (scored positions only for the masked objective): what a
/// caller attributes to the window's label (its domain, say).
pub fn window_losses<B: Backend>(
    model: &SwitchLm<B>,
    spec: &RunSpec,
    tokens: &[u32],
    starts: &[usize],
    device: &B::Device,
) -> Vec<f64> {
    let per_window = match spec.objective {
        Objective::Causal => {
            let seq = spec.model.max_seq_len;
            let batch = batch::<B>(tokens, starts, seq, device);
            let (logits, _) = model.forward(batch.inputs); // [B, S, V]
            SwitchLm::token_nll(logits, batch.targets)
                .mean_dim(1)
                .reshape([starts.len()]) // [B]
        }
        Objective::Masked { rate } => masked_step(model, spec, tokens, starts, 0, rate, device).2,
    };
    to_f64(per_window)
}

/// The masked objective's inputs `[B, S]` (each position shows the mask token, the vocabulary's
/// last id, with probability `rate`), targets `[B, S]` and which positions are scored `[B, S]`.
fn masked<B: Backend>(
    spec: &RunSpec,
    tokens: &[u32],
    starts: &[usize],
    salt: u64,
    rate: f64,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let seq = spec.model.max_seq_len;
    let mask_id = (spec.model.vocab_size - 1) as i64;
    let (mut inputs, mut targets, mut scored) = (Vec::new(), Vec::new(), Vec::new());
    for &start in starts {
        let mut rng = HostRng::new(salt ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for &t in &tokens[start..start + seq] {
            let masked = rng.unit() < rate;
            inputs.push(if masked { mask_id } else { t as i64 });
            targets.push(t as i64);
            scored.push(if masked { 1.0f32 } else { 0.0 });
        }
    }
    let b = starts.len();
    let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [b, seq]), device);
    let scored = Tensor::<B, 2>::from_data(TensorData::new(scored, [b, seq]), device);
    (int(inputs), int(targets), scored)
}

/// Host values of a float tensor.
pub fn to_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec()
        .expect("host copy of a float tensor")
}

/// Mean validation cross-entropy over the fixed windows.
pub fn evaluate<B: Backend>(
    model: &SwitchLm<B>,
    corpus: &Corpus,
    spec: &RunSpec,
    device: &B::Device,
) -> f64 {
    let seq = spec.model.max_seq_len;
    let n = spec.eval_windows.min((corpus.valid.len() - 1) / seq).max(1);
    let stride = (corpus.valid.len() - seq - 1) / n.max(1);
    let starts: Vec<usize> = (0..n).map(|i| i * stride).collect();
    mean_ce(model, spec, &corpus.valid, &starts, spec.batch_size, device)
}

/// Cross-entropy over every token of `tokens` that has a full window: non-overlapping windows
/// of the model's length, each token predicted once; the token-weighted mean.
pub fn evaluate_all<B: Backend>(
    model: &SwitchLm<B>,
    tokens: &[u32],
    spec: &RunSpec,
    device: &B::Device,
) -> f64 {
    let seq = spec.model.max_seq_len;
    let n = (tokens.len().saturating_sub(1)) / seq;
    let starts: Vec<usize> = (0..n).map(|i| i * seq).collect();
    mean_ce(model, spec, tokens, &starts, spec.batch_size * 4, device)
}

/// Mean cross-entropy of the windows of `seq` tokens at `starts`, in batches of `batch`.
fn mean_ce<B: Backend>(
    model: &SwitchLm<B>,
    spec: &RunSpec,
    tokens: &[u32],
    starts: &[usize],
    batch_size: usize,
    device: &B::Device,
) -> f64 {
    let mut total = 0.0;
    for chunk in starts.chunks(batch_size) {
        let out = objective_step(model, spec, tokens, chunk, 0, device);
        total += to_f64(out.cross_entropy)[0] * chunk.len() as f64;
    }
    total / starts.len().max(1) as f64
}

/// Each domain's test cross-entropy at the eval capacity factor with the domains **mixed** in
/// every batch, as a user's evaluation batches are: the windows of all test splits interleaved
/// (window i of each domain in turn, the smaller splits running out first), in batches of the
/// test batch size; each window's loss counted for its domain.
pub fn evaluate_mixed<B: Backend>(
    model: &SwitchLm<B>,
    corpus: &Corpus,
    spec: &RunSpec,
    device: &B::Device,
) -> Vec<f64> {
    let seq = spec.model.max_seq_len;
    // (domain, start) of every test window, interleaved over the domains.
    let per_domain: Vec<usize> = corpus
        .domains
        .iter()
        .map(|d| d.test.len().saturating_sub(1) / seq)
        .collect();
    let longest = per_domain.iter().copied().max().unwrap_or(0);
    let windows: Vec<(usize, usize)> = (0..longest)
        .flat_map(|i| {
            per_domain
                .iter()
                .enumerate()
                .filter(move |(_, n)| i < **n)
                .map(move |(d, _)| (d, i * seq))
        })
        .collect();
    let mut sums = vec![(0.0, 0usize); corpus.domains.len()];
    for chunk in windows.chunks(spec.batch_size * 4) {
        // Concatenate the chunk's windows into one token buffer so one batch holds them all.
        let mut buffer = Vec::with_capacity(chunk.len() * (seq + 1));
        let mut starts = Vec::with_capacity(chunk.len());
        for &(d, s) in chunk {
            starts.push(buffer.len());
            buffer.extend_from_slice(&corpus.domains[d].test[s..s + seq + 1]);
        }
        let per_window = window_losses(model, spec, &buffer, &starts, device);
        for (&(d, _), ce) in chunk.iter().zip(per_window) {
            sums[d].0 += ce;
            sums[d].1 += 1;
        }
    }
    sums.iter().map(|(s, n)| s / (*n).max(1) as f64).collect()
}

/// Routing probes of the trained model in eval mode on the first [`PROBE_TOKENS`] tokens of each
/// domain's test split, in domain-homogeneous batches, from each token's first choice before
/// capacity (token choice) or its most probable expert (expert choice), so batch composition does
/// not matter: counts `[layer][domain][expert]`, and `[layer][byte][domain][expert]` (the
/// current input byte) for the conditional measure of specialisation.
pub fn probe_routing<B: Backend>(
    model: &SwitchLm<B>,
    corpus: &Corpus,
    spec: &RunSpec,
    device: &B::Device,
) -> (DomainCounts, ByteCounts) {
    let seq = spec.model.max_seq_len;
    let domains = corpus.domains.len();
    let (mut counts, mut by_byte) = (Vec::new(), Vec::new());
    for (d, domain) in corpus.domains.iter().enumerate() {
        let n = (PROBE_TOKENS / seq).min((domain.test.len() - 1) / seq);
        let starts: Vec<usize> = (0..n).map(|i| i * seq).collect();
        for chunk in starts.chunks(spec.batch_size * 4) {
            let out = objective_step(model, spec, &domain.test, chunk, 0, device);
            let experts = out.moe.layers[0].num_experts();
            let (_, firsts) = read_first_choices(&out.moe);
            if counts.is_empty() {
                counts = vec![vec![vec![0.0; experts]; domains]; firsts.len()];
                by_byte = vec![vec![vec![vec![0.0; experts]; domains]; 256]; firsts.len()];
            }
            let bytes: Vec<usize> = chunk
                .iter()
                .flat_map(|&s| domain.test[s..s + seq].iter().map(|b| *b as usize % 256))
                .collect();
            for (l, layer) in firsts.iter().enumerate() {
                for (t, e) in layer.iter().enumerate() {
                    counts[l][d][*e as usize] += 1.0;
                    by_byte[l][bytes[t]][d][*e as usize] += 1.0;
                }
            }
        }
    }
    (counts, by_byte)
}

/// The step's routing statistics and, per sparse layer, each token's first-choice expert
/// (`MoeStats::token_expert` as host values), read in one transaction.
pub fn read_first_choices<B: Backend>(moe: &CombinedMoeStats<B>) -> (RoutingStats, Vec<Vec<f64>>) {
    let firsts = moe
        .layers
        .iter()
        .map(|l| l.token_expert.clone().float())
        .collect();
    RoutingStats::read_with(moe, firsts)
}

/// `length` tokens sampled after `prompt` by the library's cached, dropless decoding
/// (`crate::generate::generate_ids`: softmax at temperature 0.8 over the 40 most likely).
pub fn sample<B: Backend>(
    model: &SwitchLm<B>,
    prompt: &[u32],
    length: usize,
    seed: u64,
    device: &B::Device,
) -> Vec<u32> {
    let sampling = crate::generate::SamplingConfig {
        length,
        seed,
        ..Default::default()
    };
    crate::generate::generate_ids(model, prompt, &sampling, device)
        .expect("sampling settings are valid")
}

/// The share of the token n-grams of `tokens` that occurred earlier in it (0 for text without
/// repeats; a degenerate loop approaches 1): the repetition measure of generated samples.
pub fn repeated_ngram_rate(tokens: &[u32], n: usize) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut repeated) = (0usize, 0usize);
    for gram in tokens.windows(n) {
        total += 1;
        if !seen.insert(gram) {
            repeated += 1;
        }
    }
    repeated as f64 / total.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ngrams_by_hand() {
        // "abcabc": 4-grams abca, bcab, cabc: none repeats.
        assert_eq!(repeated_ngram_rate(&[1, 2, 3, 1, 2, 3], 4), 0.0);
        // "aaaaa": 4-grams aaaa ×2: the second repeats → 1/2.
        assert_eq!(repeated_ngram_rate(&[7, 7, 7, 7, 7], 4), 0.5);
    }
}
