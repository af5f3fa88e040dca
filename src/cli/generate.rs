//! `cargo run --release --example generate`: samples text from a model the `train` program saved.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::Backend;
use clap::Parser;

use crate::Error;
use crate::generate::{SamplingConfig, generate};
use crate::train::{TrainedWeights, load_trained};

/// Sample text from a language model trained by the train example.
///
/// Loads config.json, tokenizer.json and model.mpk (or, while a run is still training or after
/// it was interrupted, its newest checkpoint, which it names) from --artifact-dir and prints
/// --prompt followed by --length generated tokens, drawn one at a time from the model's
/// next-token distribution (softmax at --temperature, restricted to the --top-k most likely
/// tokens). The same --seed gives the same text.
#[derive(Parser, Debug)]
#[command(name = "generate", version)]
pub struct Args {
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

fn run<B: Backend>(args: Args, device: B::Device) -> Result<(), Error> {
    if !args.artifact_dir.join("config.json").exists() {
        return Err(Error::Flag {
            flag: "--artifact-dir",
            message: format!(
                "{} holds no run (no config.json): pass the artifact directory of a train run",
                args.artifact_dir.display()
            ),
        });
    }
    let (model, tokenizer, _) = load_trained::<B>(&args.artifact_dir, &device)?;
    // Which weights: on stderr, so that stdout holds the text alone.
    match TrainedWeights::find(&args.artifact_dir)? {
        TrainedWeights::Final(file) => eprintln!("loaded {}", file.display()),
        TrainedWeights::Checkpoint { file, epoch } => eprintln!(
            "loaded {} (epoch {epoch}): the run has no model.mpk yet — it is still training or \
             was interrupted — so its newest checkpoint is used",
            file.display()
        ),
    }
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

/// The `generate` program.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run::<crate::backend::SelectedBackend>(args, crate::backend::default_device()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Config {
            field,
            value,
            reason,
            ..
        }) if matches!(field, "temperature" | "top_k") => {
            let flag = field.replace('_', "-");
            eprintln!("error: invalid value for --{flag}: {value} ({reason}); see --help");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", super::in_flags(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
