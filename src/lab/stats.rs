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

/// Two-sided p-value of a paired t test of `diffs` against 0 (NaN for fewer than 2 values).
pub fn paired_p(diffs: &[f64]) -> f64 {
    let n = diffs.len();
    if n < 2 {
        return f64::NAN;
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    if var == 0.0 {
        return if mean == 0.0 { 1.0 } else { 0.0 };
    }
    let t = mean / (var / n as f64).sqrt();
    student_t_two_sided(t, (n - 1) as f64)
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2).
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz's
/// method; the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    // Continued fraction for I_x(a, b) · a / front.
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = if d.abs() < tiny { tiny } else { d };
    d = 1.0 / d;
    let mut f = d;
    for m in 1..300 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            f *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; |error| < 1e-13 over the range used here).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Holm's step-down adjustment of `p` (each test's family-wise adjusted p-value, in the input
/// order): sort ascending, multiply the i-th smallest by (m − i), take running maxima, cap at 1.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut adjusted = vec![f64::NAN; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Conditional mutual information I(X; Y | Z) in nats from counts `[z][y][x]` (plug-in
/// estimate: biased upward on finite samples — compare with a reference router's value).
pub fn conditional_mi(counts: &[Vec<Vec<f64>>]) -> f64 {
    let total: f64 = counts.iter().flatten().flatten().sum();
    if total <= 0.0 {
        return f64::NAN;
    }
    counts
        .iter()
        .map(|table| {
            let n: f64 = table.iter().flatten().sum();
            if n <= 0.0 {
                return 0.0;
            }
            let rows: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
            let cols = table.first().map_or(0, Vec::len);
            let col: Vec<f64> = (0..cols)
                .map(|j| table.iter().map(|r| r[j]).sum())
                .collect();
            let mut mi = 0.0;
            for (i, row) in table.iter().enumerate() {
                for (j, c) in row.iter().enumerate() {
                    if *c > 0.0 {
                        mi += c / n * (c * n / (rows[i] * col[j])).ln();
                    }
                }
            }
            n / total * mi
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn student_t_and_holm_against_tables() {
        // t = 2.776 with 4 df is the 95% two-sided quantile: p = 0.05.
        assert!((student_t_two_sided(2.776, 4.0) - 0.05).abs() < 1e-3);
        // t = 4.303 with 2 df: p = 0.05; t = 0: p = 1.
        assert!((student_t_two_sided(4.303, 2.0) - 0.05).abs() < 1e-3);
        assert!((student_t_two_sided(0.0, 7.0) - 1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        // Holm on (0.01, 0.04, 0.03): 0.03, 0.06, 0.06.
        let h = holm(&[0.01, 0.04, 0.03]);
        for (a, b) in h.iter().zip([0.03, 0.06, 0.06]) {
            assert!((a - b).abs() < 1e-12, "{h:?}");
        }
    }

    #[test]
    fn conditional_mi_by_hand() {
        // Given z, x copies y in one table and ignores it in the other (equal weights):
        // I = ½ ln 2 + ½ · 0.
        let copy = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let ignore = [[1.0, 1.0], [1.0, 1.0]];
        let i = conditional_mi(&[
            copy,
            ignore
                .iter()
                .map(|r| r.iter().map(|v| v / 2.0).collect())
                .collect(),
        ]);
        assert!((i - 0.5 * 2f64.ln()).abs() < 1e-12, "{i}");
    }
}
