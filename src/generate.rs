//! Sampling text from a [`SwitchLm`]: temperature and top-k sampling, one token at a time over
//! the last `max_seq_len` tokens (no key/value cache: fine for the small models trained here).

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
/// Run it on an inference model (`model.valid()` or one loaded with
/// [`load_trained`](crate::train::load_trained)) so that no jitter or dropout applies.
pub fn generate<B: Backend>(
    model: &SwitchLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    config: &SamplingConfig,
    device: &B::Device,
) -> Result<String> {
    if !(config.temperature.is_finite() && config.temperature > 0.0) {
        return Err(Error::Flag {
            flag: "--temperature",
            message: format!("{} must be a positive number", config.temperature),
        });
    }
    if config.top_k == Some(0) {
        return Err(Error::Flag {
            flag: "--top-k",
            message: "must be at least 1".into(),
        });
    }
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
    let mut rng = HostRng::new(config.seed);
    for _ in 0..config.length {
        let start = tokens.len().saturating_sub(model.max_seq_len);
        let window: Vec<i64> = tokens[start..].iter().map(|t| *t as i64).collect();
        let s = window.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(window, [1, s]), device);
        let (logits, _) = model.forward(input); // [1, s, V]
        let vocab = logits.dims()[2];
        let last = logits.slice([0..1, s - 1..s, 0..vocab]).reshape([vocab]); // [V]
        let last: Vec<f32> = last
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| Error::Data(format!("cannot read logits: {e:?}")))?;
        tokens.push(sample(&last, config, &mut rng) as u32);
    }
    tokenizer.decode(&tokens)
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
