//! Sampling text from a [`SwitchLm`]: temperature and top-k sampling, one token at a time with a
//! key/value cache ([`SwitchLm::decode`]): a step feeds only the newest token, whose query
//! attends to the cached keys and values and which runs on its chosen experts only.
//!
//! **Context rule.** The model sees at most `max_seq_len` tokens (its position table). One cache
//! serves while the context fits; when the next step would exceed the window, the context
//! restarts from the last `max_seq_len / 2` tokens (at least 1): the cache is rebuilt from them in
//! one pass (as a prompt) and decoding continues. Positions are absolute, so a sliding window
//! would need the whole cache recomputed at every step; halving keeps the rebuilds to one per
//! `max_seq_len / 2` tokens, at the price of a context between `max_seq_len / 2` and
//! `max_seq_len` tokens long.
//!
//! **No token is dropped.** Sampling runs on a dropless copy of the model ([`SwitchLm::dropless`]):
//! the prompt pass routes every token without capacity limits, and a single-token step could
//! not drop its token anyway.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::data::TextTokenizer;
use crate::error::{Error, Result};
use crate::init::HostRng;
use crate::lm::SwitchLm;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Tokens to generate after the prompt.
    pub length: usize,
    /// Softmax temperature (> 0); lower is more conservative.
    pub temperature: f64,
    /// Sample among the k most likely tokens only (`None`: all).
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            length: 200,
            temperature: 0.8,
            top_k: Some(40),
            seed: 0,
        }
    }
}

/// Continues `prompt` by `config.length` sampled tokens and returns prompt + continuation.
///
/// It decodes with a key/value cache on a dropless copy of `model`; the context rule (at most
/// `max_seq_len` tokens, restarting from the last `max_seq_len / 2`) is in the
/// [module docs](self).
///
/// Run it on an inference model (`model.valid()` or one loaded with
/// [`load_trained`](crate::train::load_trained)) so that no jitter or dropout applies.
pub fn generate<B: Backend>(
    model: &SwitchLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    config: &SamplingConfig,
    device: &B::Device,
) -> Result<String> {
    check(config)?;
    let mut tokens = tokenizer.encode(prompt)?;
    if tokens.is_empty() {
        // An empty prompt starts from the first token of the vocabulary order: a newline or space
        // for the tokenizers trained here is the most natural start.
        tokens.push(
            tokenizer
                .encode("\n")
                .ok()
                .and_then(|t| t.first().copied())
                .unwrap_or(0),
        );
    }
    let tokens = generate_ids(model, &tokens, config, device)?;
    tokenizer.decode(&tokens)
}

/// Continues the token ids `prompt` (at least one) by `config.length` sampled ids and returns
/// prompt + continuation: [`generate`] without a tokenizer (same decoding, same context rule).
///
/// # Errors
/// An invalid `config` (temperature ≤ 0, top-k of 0) or an empty prompt, as [`Error::Config`].
pub fn generate_ids<B: Backend>(
    model: &SwitchLm<B>,
    prompt: &[u32],
    config: &SamplingConfig,
    device: &B::Device,
) -> Result<Vec<u32>> {
    check(config)?;
    if prompt.is_empty() {
        return Err(Error::config(
            "generate_ids",
            "prompt",
            "[]",
            "needs at least one token to continue",
        ));
    }
    let mut tokens = prompt.to_vec();
    // Read every parameter before copying: a clone of a lazy (never used) burn-nn parameter
    // would draw new random weights instead of sharing the model's.
    model.visit(&mut Materialize);
    let model = model.clone().dropless();
    let keep = (model.max_seq_len / 2).max(1);
    let mut start = 0; // the context is tokens[start..]
    let mut cache = model.new_decode_cache();
    let mut rng = HostRng::new(config.seed);
    for _ in 0..config.length {
        if tokens.len() - start > model.max_seq_len {
            start = tokens.len() - keep;
            cache = model.new_decode_cache();
        }
        // The tokens not in the cache yet: the whole window after a (re)start, else the newest.
        let pending: Vec<i64> = tokens[start + cache.len()..]
            .iter()
            .map(|t| *t as i64)
            .collect();
        let n = pending.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(pending, [1, n]), device);
        let last = model.decode(input, &mut cache); // [1, V]
        let vocab = last.dims()[1];
        let last: Vec<f32> = last
            .reshape([vocab]) // [V]
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| Error::Data(format!("cannot read logits: {e:?}")))?;
        tokens.push(sample(&last, config, &mut rng) as u32);
    }
    Ok(tokens)
}

/// Refuses settings that cannot sample: a temperature ≤ 0 or a top-k of 0.
fn check(config: &SamplingConfig) -> Result<()> {
    if !(config.temperature.is_finite() && config.temperature > 0.0) {
        return Err(Error::config(
            "SamplingConfig",
            "temperature",
            config.temperature,
            "must be a positive number",
        ));
    }
    if config.top_k == Some(0) {
        return Err(Error::config(
            "SamplingConfig",
            "top_k",
            "Some(0)",
            "must be at least 1 (None samples from every token)",
        ));
    }
    Ok(())
}

/// Initialises every lazy parameter in place (reading it is enough).
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Draws a token from `softmax(logits / temperature)` restricted to the top k.
fn sample(logits: &[f32], config: &SamplingConfig, rng: &mut HostRng) -> usize {
    // Most likely first, ties to the lower id: a total order, so that selecting the top k
    // first (linear time) and sorting only them gives the full sort's first k.
    let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = config.top_k.unwrap_or(logits.len()).min(logits.len());
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, desc);
        order.truncate(k);
    }
    order.sort_by(desc);
    let max = logits[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|i| ((logits[*i] as f64 - max) / config.temperature).exp())
        .collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (i, w) in order.iter().zip(&weights) {
        u -= w;
        if u <= 0.0 {
            return *i;
        }
    }
    order[order.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(top_k: Option<usize>, temperature: f64) -> SamplingConfig {
        SamplingConfig {
            length: 1,
            temperature,
            top_k,
            seed: 0,
        }
    }

    #[test]
    fn top_one_is_the_argmax_ties_to_the_lower_id() {
        let logits = [0.5, 2.0, -1.0, 2.0, 1.9];
        let mut rng = HostRng::new(1);
        for _ in 0..20 {
            assert_eq!(sample(&logits, &config(Some(1), 1.0), &mut rng), 1);
        }
    }

    /// Top-3 of five logits at temperature 1: the draws follow softmax over the three best
    /// (by hand: e^2, e^1.5, e^1 over their sum = 0.506, 0.307, 0.186), never the others.
    #[test]
    fn top_k_draws_follow_the_renormalised_softmax() {
        let logits = [1.0, -3.0, 2.0, 0.0, 1.5];
        let mut rng = HostRng::new(7);
        let mut counts = [0usize; 5];
        let n = 20_000;
        for _ in 0..n {
            counts[sample(&logits, &config(Some(3), 1.0), &mut rng)] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0, "{counts:?}");
        for (id, want) in [(2, 0.506), (4, 0.307), (0, 0.186)] {
            let got = counts[id] as f64 / n as f64;
            assert!((got - want).abs() < 0.015, "id {id}: {got} vs {want}");
        }
    }
}
