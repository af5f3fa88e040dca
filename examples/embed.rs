//! Embedding `SwitchEncoderLayer` in your own Burn model.
//!
//! A small sequence classifier on synthetic data: each class draws its tokens mostly from its own
//! quarter of the vocabulary. The model is embedding → `SwitchEncoderLayer` → mean pool → linear,
//! and its loss adds the layer's load-balancing and z-losses to the cross-entropy. It trains with
//! a plain loop and prints the loss, accuracy and per-expert token fractions.
//!
//! ```sh
//! cargo run --release --example embed                  # ndarray
//! cargo run --release --features wgpu --example embed  # wgpu
//! ```

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use switch_moe::init::HostRng;
use switch_moe::{MoeStats, SwitchEncoderLayer, SwitchEncoderLayerConfig};

const VOCAB: usize = 32;
const CLASSES: usize = 4;
const SEQ: usize = 16;
const BATCH: usize = 32;
const STEPS: usize = 300;
const AUX_COEF: f64 = 0.01; // α, Switch paper §2.2
const Z_COEF: f64 = 0.001; // β, ST-MoE §3.1

/// A user's model that holds a Switch layer like any other module.
#[derive(Module, Debug)]
struct Classifier<B: Backend> {
    embedding: Embedding<B>,
    encoder: SwitchEncoderLayer<B>,
    head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    fn new(device: &B::Device) -> Self {
        let d_model = 32;
        Self {
            embedding: EmbeddingConfig::new(VOCAB, d_model).init(device),
            encoder: SwitchEncoderLayerConfig::new(d_model, 64, 4, 4)
                .with_norm_first(true)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(d_model, CLASSES).init(device),
        }
    }

    /// tokens `[B, S]` -> class logits `[B, classes]` and the Switch layer's stats.
    fn forward(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 2>, MoeStats<B>) {
        let x = self.embedding.forward(tokens); // [B, S, d]
        let (x, stats) = self.encoder.forward(x, None, None); // [B, S, d]
        let pooled = x.mean_dim(1).squeeze_dim::<2>(1); // [B, d]
        (self.head.forward(pooled), stats)
    }
}

/// A batch: class c draws 80% of its tokens from vocabulary quarter c, the rest uniformly.
fn batch<B: Backend>(
    rng: &mut HostRng,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>) {
    let mut tokens = Vec::with_capacity(BATCH * SEQ);
    let mut labels = Vec::with_capacity(BATCH);
    let quarter = VOCAB / CLASSES;
    for _ in 0..BATCH {
        let class = (rng.next_u64() % CLASSES as u64) as usize;
        labels.push(class as i64);
        for _ in 0..SEQ {
            let token = if rng.uniform() < 0.8 {
                class * quarter + (rng.next_u64() % quarter as u64) as usize
            } else {
                (rng.next_u64() % VOCAB as u64) as usize
            };
            tokens.push(token as i64);
        }
    }
    (
        Tensor::from_data(TensorData::new(tokens, [BATCH, SEQ]), device),
        Tensor::from_data(TensorData::new(labels, [BATCH]), device),
    )
}

fn accuracy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> f64 {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let correct: i64 = predicted.equal(labels).int().sum().into_scalar().elem();
    correct as f64 / BATCH as f64
}

fn run<B: AutodiffBackend>(device: B::Device) {
    B::seed(&device, 0);
    let mut rng = HostRng::new(0);
    let mut model = Classifier::<B>::new(&device);
    let mut optim = AdamConfig::new().init();
    let ce = CrossEntropyLossConfig::new().init(&device);

    println!("step   loss    aux    z      acc   expert fractions");
    for step in 1..=STEPS {
        let (tokens, labels) = batch::<B>(&mut rng, &device);
        let (logits, stats) = model.forward(tokens);
        let task = ce.forward(logits.clone(), labels.clone());
        let loss = task.clone()
            + stats.aux_loss.clone().mul_scalar(AUX_COEF)
            + stats.z_loss.clone().mul_scalar(Z_COEF);
        if step % 50 == 0 || step == 1 {
            let fractions: Vec<f32> = stats
                .token_fractions()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            println!(
                "{step:>4}  {:.4}  {:.3}  {:.3}  {:.2}  {}",
                task.clone().into_scalar().elem::<f64>(),
                stats.aux_loss.clone().into_scalar().elem::<f64>(),
                stats.z_loss.clone().into_scalar().elem::<f64>(),
                accuracy(logits, labels),
                fractions
                    .iter()
                    .map(|f| format!("{f:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }

    // Held-out accuracy in inference mode (no dropout, no jitter, eval capacity).
    let eval = model.valid();
    let (tokens, labels) = batch::<B::InnerBackend>(&mut HostRng::new(12345), &device);
    let (logits, _) = eval.forward(tokens);
    println!("held-out accuracy: {:.2}", accuracy(logits, labels));
}

fn main() {
    println!("backend: {}", switch_moe::backend::NAME);
    run::<switch_moe::backend::SelectedAutodiff>(switch_moe::backend::default_device());
}
