//! `cargo run --release --example report -- --artifact-dir DIR`: draws a run's report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::report::{Report, write_report};

/// Draw the report of a training run: PNGs of the loss, the routing of every sparse layer
/// (heatmaps of each expert's token fraction per epoch), drops, router entropy, z-loss and max
/// expert load, with the alarms marked, and one report.html that embeds them with a short text
/// (best epoch, final values, alarms, advice for each problem it sees). Works on a finished run
/// and on one still training or interrupted.
#[derive(Parser, Debug)]
#[command(name = "report", version)]
pub struct Args {
    /// The run's artifact directory (written by the train example).
    #[arg(long)]
    artifact_dir: PathBuf,
}

/// Draws the report of the run in `dir` and says where it is and what it found, on stdout; a
/// failure is one `warning:` line on stderr (the run itself is not affected).
pub fn draw_and_tell(dir: &Path) {
    match write_report(dir) {
        Ok(report) => tell(&report, dir),
        Err(e) => eprintln!("warning: no report drawn: {e}"),
    }
}

/// Where the report is and what it flagged.
fn tell(report: &Report, dir: &Path) {
    println!(
        "report: {} ({} figures in {})",
        report.html.display(),
        report.figures.len(),
        dir.join("report").display()
    );
    for finding in &report.findings {
        println!("  flagged: {}", finding.headline());
        println!("  advice:  {}", finding.advice());
    }
}

/// The `report` program.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match write_report(&args.artifact_dir) {
        Ok(report) => {
            tell(&report, &args.artifact_dir);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
