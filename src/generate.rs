//! Sampling text from a [`SwitchLm`]: temperature and top-k sampling, one token at a time with a
//! key/value cache ([`SwitchLm::forward_autoregressive_inference`]): a step runs only the newest
//! position through the projections, norms and feed-forward blocks instead of the whole window.
//!
//! **Context rule.** The model sees at most `max_seq_len` tokens (its position table). One cache
//! serves while the context fits; when the next step would exceed the window, the context
//! restarts from the last `max_seq_len / 2` tokens (at least 1): the cache is rebuilt from them in
//! one pass and decoding continues. Positions are absolute, so a sliding window would need the
//! whole cache recomputed at every step; halving keeps the rebuilds to one per `max_seq_len / 2`
//! tokens, at the price of a context between `max_seq_len / 2` and `max_seq_len` tokens long.
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
    let mut cache = model.new_autoregressive_cache();
    let mut rng = HostRng::new(config.seed);
    for _ in 0..config.length {
        if tokens.len() - start > model.max_seq_len {
            start = tokens.len() - keep;
            cache = model.new_autoregressive_cache();
        }
        let window: Vec<i64> = tokens[start..].iter().map(|t| *t as i64).collect();
        let s = window.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(window, [1, s]), device);
        let last = model.forward_autoregressive_inference(input, &mut cache); // [1, V]
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
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    order.truncate(config.top_k.unwrap_or(logits.len()).min(logits.len()));
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
