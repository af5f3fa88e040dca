//! The training noise's statistics (`switch_moe::noise`): dropout keeps 1 − p of the elements,
//! scaled by 1 / (1 − p), and only in training; jitter is uniform on [1 − ε, 1 + ε] (the upper end reached only by f32 rounding); draws are
//! independent across calls, differ across seeds and repeat for the same seed. Bounds are 5
//! standard errors of the hand-computed expectations (binomial or uniform), so a correct
//! generator fails with probability below 1e-6 per check, and a biased or repeated one fails.
//! On burn-ndarray this exercises the crate's counter-based generator; on the other backends
//! Burn's own.

mod common;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::*;
use switch_moe::noise::{dropout, uniform_like};

const N: usize = 1 << 20;

/// The backend's generator is one per process and every test here reseeds it: each test holds
/// this lock for its whole run, so that another test's reseeding cannot land between two draws
/// (on LibTorch that made two "independent" masks identical).
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ones(n: usize) -> Tensor<AB, 1> {
    Tensor::ones([n], &device())
}

#[test]
fn dropout_keeps_one_minus_p_scaled_and_only_in_training() {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    for p in [0.1, 0.5] {
        AB::seed(&device(), 3);
        let y = host(dropout(ones(N), p));
        let scale = (1.0 / (1.0 - p)) as f32;
        let kept = y.iter().filter(|v| **v != 0.0).count() as f64 / N as f64;
        let se = (p * (1.0 - p) / N as f64).sqrt();
        assert!(
            (kept - (1.0 - p)).abs() < 5.0 * se + 2e-5,
            "p {p}: kept {kept}"
        );
        assert!(
            y.iter()
                .all(|v| *v == 0.0 || (v - scale).abs() <= 1e-6 * scale),
            "p {p}: kept values are 1/(1-p)"
        );
        // Mean preserved: E[y] = 1.
        let mean = y.iter().map(|v| *v as f64).sum::<f64>() / N as f64;
        assert!(
            (mean - 1.0).abs() < 5.0 * se / (1.0 - p) + 1e-4,
            "p {p}: mean {mean}"
        );
    }
    // Inference (no autodiff) and p = 0 leave the input as it is.
    let x = Tensor::<B, 1>::ones([1000], &device());
    assert_eq!(host(dropout(x, 0.5)), vec![1.0; 1000]);
    assert_eq!(host(dropout(ones(1000), 0.0)), vec![1.0; 1000]);
}

#[test]
fn dropout_masks_are_independent_across_calls_and_positions() {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let p = 0.25;
    AB::seed(&device(), 11);
    let a: Vec<bool> = host(dropout(ones(N), p))
        .iter()
        .map(|v| *v == 0.0)
        .collect();
    let b: Vec<bool> = host(dropout(ones(N), p))
        .iter()
        .map(|v| *v == 0.0)
        .collect();
    // Two calls: both dropped with probability p².
    let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count() as f64 / N as f64;
    let se = (p * p * (1.0 - p * p) / N as f64).sqrt();
    assert!((both - p * p).abs() < 5.0 * se, "both dropped {both}");
    // Neighbouring positions (the same 64-bit draw serves four): independent too.
    let pairs = a.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (N - 1) as f64;
    assert!((pairs - p * p).abs() < 5.0 * se * 2.0, "neighbours {pairs}");
    // Same seed: the same mask; another seed: another one.
    let mask = |seed: u64| {
        AB::seed(&device(), seed);
        host(dropout(ones(4096), p))
    };
    assert_eq!(mask(5), mask(5));
    let (m5, m6) = (mask(5), mask(6));
    let differ = m5.iter().zip(&m6).filter(|(x, y)| x != y).count();
    // Expected 2·p·(1−p)·4096 = 1536 positions.
    assert!(differ > 1200, "seeds 5 and 6 differ at {differ} of 4096");
}

#[test]
fn jitter_is_uniform_on_its_range() {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let eps = 0.01;
    AB::seed(&device(), 2);
    let x = ones(N);
    let u = host(uniform_like(&x, 1.0 - eps, 1.0 + eps));
    assert!(
        u.iter()
            .all(|v| *v >= (1.0 - eps) as f32 && *v <= (1.0 + eps) as f32),
        "range (the upper end only through f32 rounding)"
    );
    // Uniform on [a, b): mean (a + b)/2, variance (b − a)²/12.
    let n = N as f64;
    let mean = u.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = u.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    let want_var = (2.0 * eps).powi(2) / 12.0;
    assert!(
        (mean - 1.0).abs() < 5.0 * (want_var / n).sqrt(),
        "mean {mean}"
    );
    // The variance of the sample variance of a uniform: (b − a)⁴/180/n.
    let se_var = ((2.0 * eps).powi(4) / 180.0 / n).sqrt();
    assert!(
        (var - want_var).abs() < 5.0 * se_var,
        "var {var} vs {want_var}"
    );
    // Ten equal bins hold a tenth each.
    let mut bins = [0usize; 10];
    for v in &u {
        let b = (((*v as f64) - (1.0 - eps)) / (2.0 * eps) * 10.0) as usize;
        bins[b.min(9)] += 1;
    }
    let se_bin = (0.1 * 0.9 / n).sqrt();
    for (i, c) in bins.iter().enumerate() {
        let f = *c as f64 / n;
        assert!((f - 0.1).abs() < 5.0 * se_bin, "bin {i}: {f}");
    }
    // Independent of the next call: the correlation of two draws is about 0.
    let w = host(uniform_like(&x, 1.0 - eps, 1.0 + eps));
    let cov = u
        .iter()
        .zip(&w)
        .map(|(a, b)| (*a as f64 - 1.0) * (*b as f64 - 1.0))
        .sum::<f64>()
        / n;
    assert!(
        (cov / want_var).abs() < 5.0 / n.sqrt(),
        "correlation {}",
        cov / want_var
    );
}
