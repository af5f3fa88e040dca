//! Data-parallel training through burn-train's `ExecutionStrategy::MultiDevice` (two copies of
//! the CPU device: the multi-device code path — split loaders, one thread per device, gradients
//! summed on the first — without a second device).
//!
//! - a 2-device run and a 1-device run with the same global batch end within the seed spread of
//!   the 1-device runs (two seeds);
//! - the metrics cover both devices' tokens: the epoch's logged token counts are the plan's
//!   steps × global batch × window, in twice as many step entries; the E expert fractions sum
//!   to 1, in the metric logs and in routing.csv;
//! - the aux-loss-free expert bias trains and is saved once, with the model;
//! - a global batch that does not split over the devices is refused, naming the field.
#![cfg(not(any(feature = "wgpu", feature = "cuda")))]

mod common;

use std::path::Path;

use common::*;
use switch_moe::train::{
    TokenizerKind, TrainingConfig, epoch_metric, load_trained, train_data_parallel,
};
use switch_moe::{EncoderBlock, Error, SwitchEncoderConfig, SwitchLmConfig};

const BATCH: usize = 8;
const SEQ: usize = 16;
const STEPS_PER_EPOCH: usize = 12;
const E: usize = 4;

fn config(seed: u64) -> TrainingConfig {
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, E)
        .with_norm_first(true)
        .map_moe(|m| m.with_expert_bias_rate(1e-2));
    TrainingConfig::new(SwitchLmConfig::new(0, SEQ, encoder), TokenizerKind::Char)
        .with_batch_size(BATCH)
        .with_max_steps(Some(2 * STEPS_PER_EPOCH))
        .with_checkpoint_every(Some(STEPS_PER_EPOCH))
        .with_lr(5e-3)
        .with_warmup_steps(2)
        .with_seed(seed)
}

/// The final validation loss of a run on `n` copies of the device.
fn run(dir: &Path, data: &Path, seed: u64, n: usize) -> f64 {
    let summary = train_data_parallel::<AB>(
        config(seed),
        &train_options(dir, data),
        vec![device(); n],
        |plan| {
            assert_eq!(plan.devices, n);
            assert_eq!(
                plan.steps_per_epoch, STEPS_PER_EPOCH,
                "the global batch sets the plan"
            );
        },
    )
    .expect("training runs");
    *summary.valid_loss.last().unwrap()
}

/// Lines and summed counts (tokens) of a metric log.
fn log_counts(dir: &Path, split: &str, epoch: usize, name: &str) -> (usize, f64) {
    let file = dir
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{name}.log"));
    let text = std::fs::read_to_string(&file).unwrap();
    let counts: Vec<f64> = text
        .lines()
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    (counts.len(), counts.iter().sum())
}

#[test]
fn two_devices_train_like_one_and_metrics_cover_both() {
    let root = scratch_in("multi", "runs");
    let data = corpus_slice(&root, 20_000);
    let one_a = run(&root.join("one-a"), &data, 1, 1);
    let one_b = run(&root.join("one-b"), &data, 2, 1);
    let two_dir = root.join("two-a");
    let two_a = run(&two_dir, &data, 1, 2);
    let spread = (one_a - one_b).abs();
    let gap = (two_a - one_a).abs();
    println!(
        "final validation loss: 1 device {one_a:.4} (seed 1), {one_b:.4} (seed 2); 2 devices \
         {two_a:.4} (seed 1); |2 − 1| = {gap:.4}, seed spread {spread:.4}"
    );
    assert!(
        gap <= 2.0 * spread + 0.02,
        "2 devices {two_a:.4} vs 1 device {one_a:.4}: gap {gap:.4} beyond the seed spread {spread:.4}"
    );

    // Every device's tokens reach the metrics: 2 entries per step of BATCH/2 windows each.
    for epoch in 1..=2 {
        let (lines, tokens) = log_counts(&two_dir, "train", epoch, "Loss");
        assert_eq!(
            lines,
            2 * STEPS_PER_EPOCH,
            "epoch {epoch}: one entry per device and step"
        );
        assert_eq!(
            tokens as usize,
            STEPS_PER_EPOCH * BATCH * SEQ,
            "epoch {epoch}: tokens"
        );
        for split in ["train", "valid"] {
            let sum: f64 = (0..E)
                .map(|i| {
                    epoch_metric(&two_dir, split, epoch, &format!("Expert {i} fraction")).unwrap()
                })
                .sum();
            assert!(
                (sum - 1.0).abs() < 1e-4,
                "{split} epoch {epoch}: fractions sum to {sum}"
            );
        }
    }
    let csv = std::fs::read_to_string(two_dir.join("routing.csv")).unwrap();
    let mut sums = std::collections::BTreeMap::<(String, String, String), f64>::new();
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        *sums
            .entry((f[0].into(), f[1].into(), f[2].into()))
            .or_default() += f[4].parse::<f64>().unwrap();
    }
    assert_eq!(sums.len(), 2 * 2, "2 epochs × 2 splits × 1 sparse layer");
    for (key, sum) in sums {
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "routing.csv {key:?}: fractions sum to {sum}"
        );
    }

    // The expert bias trained on both devices' counts and was saved once, with the model.
    let (model, _, _) = load_trained::<B>(&two_dir, &device()).unwrap();
    let biases: Vec<Vec<f32>> = model
        .encoder
        .layers
        .iter()
        .filter_map(|l| match l {
            EncoderBlock::Sparse(s) => Some(host(s.moe.router.expert_bias())),
            EncoderBlock::Dense(_) => None,
        })
        .collect();
    assert_eq!(biases.len(), 1);
    let bias = &biases[0];
    assert!(
        bias.iter().any(|b| *b != 0.0),
        "the bias never moved: {bias:?}"
    );
    assert!(
        bias.iter().sum::<f32>().abs() < 1e-5,
        "the bias is centred: {bias:?}"
    );
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused() {
    let root = scratch_in("multi", "uneven");
    let data = corpus_slice(&root, 20_000);
    let err = train_data_parallel::<AB>(
        config(1).with_batch_size(9),
        &train_options(&root.join("run"), &data),
        vec![device(); 2],
        |_| panic!("no plan for a refused run"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "batch_size",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("2 devices"), "{err}");
    assert!(!root.join("run").exists(), "nothing written");
}
