//! Embedding `SwitchEncoderLayer` in your own Burn model and training it with burn-train's
//! Learner: the per-expert token fractions and the routing losses appear on the dashboard (and in
//! the metric logs) through one `Adaptor<RoutingStats>` impl, and the run guard (a NaN loss stops
//! the run; dead experts and a collapsing router raise alarms) through one `Adaptor<GuardInput>`
//! impl — nothing is copied from this crate.
//!
//! The model is a small sequence classifier on synthetic data (each class draws its tokens mostly
//! from its own quarter of the vocabulary): embedding → `SwitchEncoderLayer` → mean pool → linear.
//! Its loss adds the layer's weighted load-balancing and z-losses to the cross-entropy.
//!
//! ```sh
//! cargo run --release --example embed                   # ndarray
//! cargo run --release --features wgpu --example embed   # wgpu
//! cargo run --release --example embed -- --epochs 5 --artifact-dir /tmp/embed
//! ```

use std::path::PathBuf;

use burn::backend::Flex;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::AdamConfig;
use burn::record::DefaultRecorder;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn::train::metric::{
    AccuracyInput, AccuracyMetric, Adaptor, ItemLazy, LossInput, LossMetric,
};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use clap::Parser;
use switch_moe::init::HostRng;
use switch_moe::metrics::{Alarms, GuardInput, HealthConfig, RunGuard};
use switch_moe::{
    CombinedMoeStats, MoeLossWeights, MoeStats, RoutingStats, SwitchEncoderLayer,
    SwitchEncoderLayerConfig, routing_metrics,
};

const VOCAB: usize = 32;
const CLASSES: usize = 4;
const SEQ: usize = 16;

/// Demo: a SwitchEncoderLayer inside your own Burn model, trained with burn-train's Learner.
///
/// Trains a small sequence classifier (embedding → SwitchEncoderLayer → mean pool → linear) on
/// synthetic data in which each class draws its tokens mostly from its own part of the
/// vocabulary, and shows the per-expert token fractions and routing losses beside loss and
/// accuracy in burn-train's dashboard and metric logs. examples/embed.rs is the code to copy:
/// one Adaptor<RoutingStats> impl brings the routing metrics to any model.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Epochs (each a pass over the synthetic training set).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Training sequences per epoch.
    #[arg(long, default_value_t = 2048)]
    train_items: usize,
    /// Validation sequences.
    #[arg(long, default_value_t = 512)]
    valid_items: usize,
    /// Experts in the Switch layer.
    #[arg(long, default_value_t = 4)]
    experts: usize,
    /// Where burn-train writes checkpoints and metric logs.
    #[arg(long, default_value = "artifacts/embed")]
    artifact_dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// The user's model: a SwitchEncoderLayer where a TransformerEncoderLayer would go.

#[derive(Module, Debug)]
struct Classifier<B: Backend> {
    embedding: Embedding<B>,
    encoder: SwitchEncoderLayer<B>,
    head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    fn new(num_experts: usize, device: &B::Device) -> Self {
        let (d_model, d_ff, heads) = (32, 64, 4);
        Self {
            embedding: EmbeddingConfig::new(VOCAB, d_model).init(device),
            encoder: SwitchEncoderLayerConfig::new(d_model, d_ff, heads, num_experts)
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

    /// Cross-entropy + α·aux + β·z, with burn's classification output and the routing stats.
    fn forward_step(&self, batch: ClassBatch<B>) -> ClassifierOutput<B> {
        let (logits, stats) = self.forward(batch.tokens);
        let task = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.labels.clone());
        let moe = MoeStats::combine(vec![stats]);
        let loss = task + moe.weighted_loss(MoeLossWeights::default());
        ClassifierOutput {
            class: ClassificationOutput::new(loss, logits, batch.labels),
            moe,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The step output, and the one adaptor that brings the routing metrics.

/// burn's classification output plus the Switch layer's stats (device tensors).
struct ClassifierOutput<B: Backend> {
    class: ClassificationOutput<B>,
    moe: CombinedMoeStats<B>,
}

/// The same on the host, read by the metric thread.
struct ClassifierOutputSync {
    class: ClassificationOutput<Flex>,
    routing: RoutingStats,
}

impl<B: Backend> ItemLazy for ClassifierOutput<B> {
    type ItemSync = ClassifierOutputSync;

    fn sync(self) -> ClassifierOutputSync {
        ClassifierOutputSync {
            class: self.class.sync(),
            routing: RoutingStats::read(&self.moe), // one device transaction
        }
    }
}

impl Adaptor<RoutingStats> for ClassifierOutputSync {
    fn adapt(&self) -> RoutingStats {
        self.routing.clone()
    }
}

/// What the run guard checks: the loss (NaN or infinite stops the run) and the routing.
impl Adaptor<GuardInput> for ClassifierOutputSync {
    fn adapt(&self) -> GuardInput {
        GuardInput {
            loss: self.class.loss.clone().into_scalar().elem(),
            routing: self.routing.clone(),
        }
    }
}

impl Adaptor<LossInput<Flex>> for ClassifierOutputSync {
    fn adapt(&self) -> LossInput<Flex> {
        self.class.adapt()
    }
}

impl Adaptor<AccuracyInput<Flex>> for ClassifierOutputSync {
    fn adapt(&self) -> AccuracyInput<Flex> {
        self.class.adapt()
    }
}

impl<B: AutodiffBackend> TrainStep for Classifier<B> {
    type Input = ClassBatch<B>;
    type Output = ClassifierOutput<B>;

    fn step(&self, batch: ClassBatch<B>) -> TrainOutput<ClassifierOutput<B>> {
        let output = self.forward_step(batch);
        let grads = output.class.loss.backward();
        let detached = ClassifierOutput {
            class: ClassificationOutput::new(
                output.class.loss.detach(),
                output.class.output.detach(),
                output.class.targets,
            ),
            moe: output.moe.detach(),
        };
        TrainOutput::new(self, grads, detached)
    }
}

impl<B: Backend> InferenceStep for Classifier<B> {
    type Input = ClassBatch<B>;
    type Output = ClassifierOutput<B>;

    fn step(&self, batch: ClassBatch<B>) -> ClassifierOutput<B> {
        self.forward_step(batch)
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic data: class c draws 80% of its tokens from vocabulary quarter c, the rest uniformly.

#[derive(Debug, Clone)]
struct ClassItem {
    tokens: Vec<i64>,
    label: i64,
}

#[derive(Debug, Clone)]
struct ClassBatch<B: Backend> {
    tokens: Tensor<B, 2, Int>,
    labels: Tensor<B, 1, Int>,
}

#[derive(Clone)]
struct ClassBatcher;

impl<B: Backend> Batcher<B, ClassItem, ClassBatch<B>> for ClassBatcher {
    fn batch(&self, items: Vec<ClassItem>, device: &B::Device) -> ClassBatch<B> {
        let n = items.len();
        let tokens: Vec<i64> = items.iter().flat_map(|i| i.tokens.clone()).collect();
        let labels: Vec<i64> = items.iter().map(|i| i.label).collect();
        ClassBatch {
            tokens: Tensor::from_data(TensorData::new(tokens, [n, SEQ]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

fn synthetic(n: usize, seed: u64) -> InMemDataset<ClassItem> {
    let mut rng = HostRng::new(seed);
    let quarter = VOCAB / CLASSES;
    let items = (0..n)
        .map(|_| {
            let class = (rng.next_u64() % CLASSES as u64) as usize;
            let tokens = (0..SEQ)
                .map(|_| {
                    if rng.uniform() < 0.8 {
                        (class * quarter) as i64 + (rng.next_u64() % quarter as u64) as i64
                    } else {
                        (rng.next_u64() % VOCAB as u64) as i64
                    }
                })
                .collect();
            ClassItem {
                tokens,
                label: class as i64,
            }
        })
        .collect();
    InMemDataset::new(items)
}

// ---------------------------------------------------------------------------------------------
// The Learner run: burn's loss and accuracy, plus the crate's routing metrics.

fn run<B: AutodiffBackend>(args: &Args, device: B::Device) {
    B::seed(&device, 0);
    let train = DataLoaderBuilder::new(ClassBatcher)
        .batch_size(32)
        .shuffle(0)
        .build(synthetic(args.train_items, 1));
    let valid = DataLoaderBuilder::<B::InnerBackend, _, _>::new(ClassBatcher)
        .batch_size(64)
        .build(synthetic(args.valid_items, 2));

    let mut training = SupervisedTraining::new(&args.artifact_dir, train, valid)
        .metric_train_numeric(LossMetric::<Flex>::new())
        .metric_valid_numeric(LossMetric::<Flex>::new())
        .metric_train_numeric(AccuracyMetric::<Flex>::new())
        .metric_valid_numeric(AccuracyMetric::<Flex>::new());
    for metric in routing_metrics(args.experts) {
        training = training
            .metric_train_numeric(metric.clone())
            .metric_valid_numeric(metric);
    }
    // The guard: a non-finite loss stops the run through the Learner's interrupter; an expert
    // dead for 50 steps or a max expert load at 1 + (E − 1)/2 prints a warning (or stops, with
    // `CollapsePolicy::Stop`). The alarms are read back when the Learner returns.
    let alarms = Alarms::default();
    let guard = RunGuard::new(HealthConfig::new(), training.interrupter(), alarms.clone());
    training = training.metric_train(guard);
    let training = training
        .with_file_checkpointer(DefaultRecorder::new())
        .num_epochs(args.epochs)
        .summary();

    let model = Classifier::<B>::new(args.experts, &device);
    println!("{model}");
    // `result.model` is the trained model, already in inference mode (`.valid()`).
    let _result = training.launch(Learner::new(model, AdamConfig::new().init(), 3e-3));
    if let Some(alarm) = alarms.stop() {
        eprintln!("error: training stopped: {alarm}");
        std::process::exit(1);
    }
    println!(
        "router alarms: {}; metric logs and checkpoints: {}",
        alarms.all().len(),
        args.artifact_dir.display()
    );
}

fn main() {
    let args = Args::parse();
    println!("backend: {}", switch_moe::backend::NAME);
    run::<switch_moe::backend::SelectedAutodiff>(&args, switch_moe::backend::default_device());
}
