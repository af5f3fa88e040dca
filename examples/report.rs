//! Draw a training run's report: PNGs and one report.html in its artifact directory.
//!
//! ```sh
//! cargo run --release --example report -- --artifact-dir artifacts/<run>
//! ```
//!
//! The program is [`switch_moe::cli::report`]; in your own program call
//! `switch_moe::report::write_report`.

fn main() -> std::process::ExitCode {
    switch_moe::cli::report::main()
}
