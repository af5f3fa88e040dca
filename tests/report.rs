//! The run report: drawn from a run this test trains, its PNGs are valid images of the sizes the
//! plots draw, the routing heatmap's values are routing.csv's (parsed here, independently), the
//! page embeds every figure; and the findings flag what a hand-made run record shows, each with
//! the README's advice.

mod common;

use std::path::Path;

use common::*;
use switch_moe::report::{Finding, LoggedAlarm, RoutingRow, RunRecord, findings, write_report};
use switch_moe::train::{TokenizerKind, TrainingConfig, train};
use switch_moe::{SwitchEncoderConfig, SwitchLmConfig};

const EXPERTS: usize = 4;

/// (width, height) from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "{}: first chunk", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn tiny_config() -> TrainingConfig {
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, EXPERTS)
        .with_norm_first(true)
        .with_dropout(0.0);
    TrainingConfig::new(SwitchLmConfig::new(0, 16, encoder), TokenizerKind::Char)
        .with_batch_size(4)
        .with_num_epochs(3)
        .with_max_steps(Some(12))
        .with_lr(1e-2)
        .with_warmup_steps(2)
}

#[test]
fn a_trained_run_is_drawn_from_its_files() {
    let dir = scratch_in("report", "run");
    let data = corpus_slice(&dir, 8_000);
    let options = train_options(&dir.join("run"), &data);
    train::<AB>(tiny_config(), &options, device()).expect("training runs");
    let run_dir = &options.artifact_dir;

    let report = write_report(run_dir).expect("the report is drawn");
    assert_eq!(report.html, run_dir.join("report.html"));
    let names: Vec<String> = report
        .figures
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "loss.png",
        "drops.png",
        "entropy.png",
        "z_loss.png",
        "load.png",
        "routing_layer1.png",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for figure in &report.figures {
        let (w, h) = png_size(figure);
        if figure.ends_with("routing_layer1.png") {
            // Two heatmap panels (train, valid) of 420 pixels, the colour bar, one row.
            assert_eq!((w, h), (2 * 420 + 110, 60 + 260), "{}", figure.display());
        } else {
            // A 900-pixel plot and a legend column of 120 to 380 pixels, 600 high.
            assert!(
                (1020..=1280).contains(&w) && h == 600,
                "{}: {w}×{h}",
                figure.display()
            );
        }
    }
    let html = std::fs::read_to_string(&report.html).unwrap();
    for name in &names {
        assert!(
            html.contains(&format!("src=\"report/{name}\"")),
            "{name} embedded"
        );
    }
    assert!(html.contains("Best validation loss"), "{html}");

    // The heatmap's matrix is routing.csv's train fractions, parsed here without the library.
    let csv = std::fs::read_to_string(run_dir.join("routing.csv")).unwrap();
    let mut by_epoch: Vec<Vec<f64>> = vec![vec![f64::NAN; EXPERTS]; 3];
    for line in csv.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        if c[1] == "train" && c[2] == "1" {
            let epoch: usize = c[0].parse().unwrap();
            let expert: usize = c[3].parse().unwrap();
            by_epoch[epoch - 1][expert] = c[4].parse().unwrap();
        }
    }
    let run = RunRecord::read(run_dir).unwrap();
    let (epochs, matrix) = run.routing_matrix(1, "train");
    assert_eq!(epochs, vec![1, 2, 3]);
    assert_eq!(matrix, by_epoch);
    assert_eq!(run.steps_per_epoch, vec![4, 4, 4]);
    assert_eq!(run.train_values("Loss").len(), 12);
}

/// A run record with one sparse layer whose routing and validation are given.
fn record(last_fractions: [f64; 4], valid_loss: &[f64], valid_dropped: f64) -> RunRecord {
    let mut config = tiny_config();
    config.model.vocab_size = 10;
    let epochs = valid_loss.len();
    let routing = (1..=epochs)
        .flat_map(|epoch| {
            (0..EXPERTS).map(move |expert| RoutingRow {
                epoch,
                split: "train".into(),
                layer: 1,
                expert,
                token_fraction: if epoch == epochs {
                    last_fractions[expert]
                } else {
                    0.25
                },
                router_prob_mean: 0.25,
                expert_bias: 0.0,
            })
        })
        .collect();
    // The training loss falls by 0.1 per epoch (one step per epoch).
    let train_loss: Vec<f64> = (0..epochs).map(|e| 3.0 - 0.1 * e as f64).collect();
    RunRecord {
        config,
        epochs,
        steps_per_epoch: vec![1; epochs],
        train: vec![("Loss".into(), train_loss)],
        valid: vec![
            (
                "Loss".into(),
                valid_loss
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i + 1, *v))
                    .collect(),
            ),
            ("Dropped Fraction".into(), vec![(epochs, valid_dropped)]),
        ],
        routing,
        alarms: Vec::new(),
    }
}

#[test]
fn findings_flag_collapse_dead_experts_eval_drops_and_overfitting() {
    // Healthy: balanced, no drops, validation loss still falling.
    let healthy = record([0.25; 4], &[3.0, 2.9, 2.8], 0.0);
    assert_eq!(findings(&healthy), vec![]);

    // Collapse: E · max f = 4 · 0.7 = 2.8 ≥ 1 + 3/2 = 2.5; expert 3 has 0.001 < 0.01/4 = 0.0025.
    let collapsed = record([0.7, 0.2, 0.099, 0.001], &[3.0, 2.9, 2.8], 0.0);
    let found = findings(&collapsed);
    assert!(
        found.iter().any(
            |f| matches!(f, Finding::Collapse { layer: 1, load, threshold }
            if (load - 2.8).abs() < 1e-12 && (threshold - 2.5).abs() < 1e-12)
        ),
        "{found:?}"
    );
    assert!(
        found.contains(&Finding::DeadExperts {
            layer: 1,
            experts: vec![3]
        }),
        "{found:?}"
    );
    // 0.003 is not dead (≥ 0.0025): the boundary of the 1% rule.
    let near = record([0.3, 0.3, 0.397, 0.003], &[3.0, 2.9, 2.8], 0.0);
    assert!(
        !findings(&near)
            .iter()
            .any(|f| matches!(f, Finding::DeadExperts { .. })),
        "{:?}",
        findings(&near)
    );

    // Drops at the eval capacity above 1%.
    let drops = record([0.25; 4], &[3.0, 2.9, 2.8], 0.05);
    assert!(
        findings(&drops)
            .iter()
            .any(|f| matches!(f, Finding::EvalDrops { fraction, .. } if *fraction == 0.05))
    );

    // Over-fitting: best at epoch 2 (2.5), then 2.6 while the training loss fell.
    let over = record([0.25; 4], &[3.0, 2.5, 2.6], 0.0);
    assert_eq!(
        findings(&over),
        vec![Finding::Overfitting {
            best_epoch: 2,
            best: 2.5,
            last: 2.6
        }]
    );

    // A non-finite loss alarm.
    let mut nan = record([0.25; 4], &[3.0], 0.0);
    nan.alarms.push(LoggedAlarm {
        step: 1,
        text: "the loss is NaN at step 1 (epoch 1)".into(),
    });
    assert!(matches!(findings(&nan)[0], Finding::NonFinite { .. }));

    // Every advice the report gives is the README's.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for finding in findings(&collapsed)
        .into_iter()
        .chain(findings(&drops))
        .chain(findings(&over))
        .chain(findings(&nan))
    {
        assert!(
            readme.contains(finding.advice()),
            "README lacks the advice: {}",
            finding.advice()
        );
    }
}
