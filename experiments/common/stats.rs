//! Small statistics shared by the experiment reports.

/// Two-sided 95% Student t quantile for n − 1 degrees of freedom.
pub fn t95(n: usize) -> f64 {
    match n {
        0..=1 => f64::NAN,
        2 => 12.706,
        3 => 4.303,
        4 => 3.182,
        5 => 2.776,
        6 => 2.571,
        _ => 2.447,
    }
}

/// Mean and 95% CI half-width of paired differences.
pub fn paired(diffs: &[f64]) -> (f64, f64) {
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t95(n) * (var / n as f64).sqrt())
}

/// Normalised mutual information between the rows (domains) and columns (experts) of a count
/// table: I(D; X) / ((H(D) + H(X)) / 2), in [0, 1]; 0 when routing ignores the domain, 1 when
/// each domain has experts of its own and uses all of them alike.
pub fn nmi(counts: &[Vec<f64>]) -> f64 {
    let total: f64 = counts.iter().flatten().sum();
    if total <= 0.0 {
        return f64::NAN;
    }
    let rows: Vec<f64> = counts
        .iter()
        .map(|r| r.iter().sum::<f64>() / total)
        .collect();
    let cols_n = counts.first().map_or(0, Vec::len);
    let cols: Vec<f64> = (0..cols_n)
        .map(|j| counts.iter().map(|r| r[j]).sum::<f64>() / total)
        .collect();
    let h = |p: &[f64]| -> f64 { p.iter().filter(|v| **v > 0.0).map(|v| -v * v.ln()).sum() };
    let mut mi = 0.0;
    for (i, row) in counts.iter().enumerate() {
        for (j, c) in row.iter().enumerate() {
            let p = c / total;
            if p > 0.0 {
                mi += p * (p / (rows[i] * cols[j])).ln();
            }
        }
    }
    let denom = (h(&rows) + h(&cols)) / 2.0;
    if denom <= 0.0 { 0.0 } else { mi / denom }
}
