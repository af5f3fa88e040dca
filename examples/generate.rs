//! Sample text from a model trained by the `train` example.
//!
//! ```sh
//! cargo run --release --example generate -- --artifact-dir artifacts/<run> --prompt "ROMEO:"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::Backend;
use clap::Parser;
use switch_moe::generate::{SamplingConfig, generate};
use switch_moe::train::load_trained;

/// Sample text from a language model trained by the train example.
///
/// Loads config.json, tokenizer.json and model.mpk (or, while a run is still training, its newest
/// checkpoint) from --artifact-dir and prints --prompt followed by --length generated tokens,
/// drawn one at a time from the model's next-token distribution (softmax at --temperature,
/// restricted to the --top-k most likely tokens). The same --seed gives the same text.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The run's artifact directory (config.json, tokenizer.json, model.mpk or checkpoints).
    #[arg(long)]
    artifact_dir: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "ROMEO:")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    length: usize,
    /// Softmax temperature (> 0); lower is more conservative.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn run<B: Backend>(args: Args, device: B::Device) -> Result<(), switch_moe::Error> {
    let (model, tokenizer, _) = load_trained::<B>(&args.artifact_dir, &device)?;
    let sampling = SamplingConfig {
        length: args.length,
        temperature: args.temperature,
        top_k: (args.top_k > 0).then_some(args.top_k),
        seed: args.seed,
    };
    println!(
        "{}",
        generate(&model, &tokenizer, &args.prompt, &sampling, &device)?
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run::<switch_moe::backend::SelectedBackend>(args, switch_moe::backend::default_device()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
