//! Train a Switch Transformer language model with burn-train's Learner.
//!
//! ```sh
//! cargo run --release --example train                      # ndarray (CPU), tiny-shakespeare
//! cargo run --release --features wgpu --example train      # wgpu (preset from the adapter)
//! cargo run --release --example train -- --data my.txt --max-steps 200
//! cargo run --release --example train -- --config artifacts/<run>/config.json --max-steps 10
//! cargo run --release --example train -- --resume --artifact-dir artifacts/<run> --epochs 3
//! cargo run --release --example train -- --help            # every flag, grouped; both presets
//! ```
//!
//! The program is [`switch_moe::cli::train`], compiled once in the library for the backend the
//! features select, so that this example and `generate` and `report` link in seconds after the
//! first build. In your own program, call the library: `switch_moe::train::train` with a
//! `TrainingConfig` (e.g. `TrainingConfig::cpu()`).

fn main() -> std::process::ExitCode {
    switch_moe::cli::train::main()
}
