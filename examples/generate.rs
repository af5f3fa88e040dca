//! Sample text from a model trained by the `train` example.
//!
//! ```sh
//! cargo run --release --example generate -- --artifact-dir artifacts/<run> --prompt "ROMEO:"
//! ```
//!
//! The program is [`switch_moe::cli::generate`] (compiled once in the library); in your own
//! program call `switch_moe::train::load_trained` and `switch_moe::generate::generate`.

fn main() -> std::process::ExitCode {
    switch_moe::cli::generate::main()
}
