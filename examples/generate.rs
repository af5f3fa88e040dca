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

/// Sample text from a Switch language model saved by the train example.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
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
