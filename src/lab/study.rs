//! A study: arms × seeds, one row of metrics per run in `final.csv`, written after every run so
//! that an interrupted study resumes where it stopped (finished runs are skipped) and its report
//! can be redrawn from the file alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::cli::fail;

/// The metrics of one run, in the order of the study's columns.
pub type Metrics = Vec<(&'static str, f64)>;

/// One row of `final.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The arm.
    pub arm: String,
    /// The seed.
    pub seed: u64,
    /// Metric → value.
    pub values: BTreeMap<String, f64>,
}

impl Row {
    /// The value of `metric` (NaN when absent).
    pub fn get(&self, metric: &str) -> f64 {
        self.values.get(metric).copied().unwrap_or(f64::NAN)
    }
}

/// Reads `out/final.csv` (no rows when it does not exist).
pub fn read_final(out: &Path) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(out.join("final.csv")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() != header.len() || header.len() < 2 {
                return None;
            }
            let values = header[2..]
                .iter()
                .zip(&cols[2..])
                .map(|(h, v)| (h.to_string(), v.parse().unwrap_or(f64::NAN)))
                .collect();
            Some(Row {
                arm: cols[0].to_string(),
                seed: cols[1].parse().ok()?,
                values,
            })
        })
        .collect()
}

fn write_final(out: &Path, rows: &[Row]) {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for key in row.values.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let mut csv = format!("arm,seed,{}\n", columns.join(","));
    for row in rows {
        let values: Vec<String> = columns
            .iter()
            .map(|c| format!("{:.6}", row.get(c)))
            .collect();
        let _ = writeln!(csv, "{},{},{}", row.arm, row.seed, values.join(","));
    }
    let file = out.join("final.csv");
    crate::atomic_file::write_atomic(&file, csv.as_bytes())
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", file.display())));
}

/// Runs every (seed, arm) pair not yet in `out/final.csv`, seed by seed (so that a partial study
/// has whole seeds first), calling `run(arm, seed)` for its metrics and rewriting the file after
/// each run. Returns every row of the file.
pub fn run_study(
    out: &Path,
    arms: &[String],
    seeds: &[u64],
    mut run: impl FnMut(&str, u64) -> Metrics,
) -> Vec<Row> {
    let mut rows = read_final(out);
    let done: BTreeSet<(String, u64)> = rows.iter().map(|r| (r.arm.clone(), r.seed)).collect();
    for &seed in seeds {
        for arm in arms {
            if done.contains(&(arm.clone(), seed)) {
                eprintln!("{arm} seed {seed}: in final.csv already, skipped");
                continue;
            }
            let metrics = run(arm, seed);
            rows.push(Row {
                arm: arm.clone(),
                seed,
                values: metrics
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
            write_final(out, &rows);
        }
    }
    rows
}

/// The values of `metric` for `arm`, by seed.
pub fn by_seed(rows: &[Row], arm: &str, metric: &str) -> BTreeMap<u64, f64> {
    rows.iter()
        .filter(|r| r.arm == arm)
        .map(|r| (r.seed, r.get(metric)))
        .collect()
}

/// Paired differences `a − b` of `metric` over the seeds both arms ran.
pub fn paired_diffs(rows: &[Row], a: &str, b: &str, metric: &str) -> Vec<f64> {
    let (xa, xb) = (by_seed(rows, a, metric), by_seed(rows, b, metric));
    xa.iter()
        .filter_map(|(s, va)| xb.get(s).map(|vb| va - vb))
        .collect()
}

/// The mean of `metric` over `arm`'s seeds.
pub fn mean_of(rows: &[Row], arm: &str, metric: &str) -> f64 {
    let v = by_seed(rows, arm, metric);
    v.values().sum::<f64>() / v.len().max(1) as f64
}
