//! A model defined outside the crate (examples/embed.rs: a classifier holding a
//! `SwitchEncoderLayer`) trains with burn-train's Learner and gets the routing metrics through
//! `Adaptor<RoutingStats>` alone: its per-expert fraction logs exist for train and valid, and the
//! E epoch values sum to 1.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example binaries that `cargo test` builds next to the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples").join(name)
}

/// burn-train's epoch value of a logged numeric metric: Σ value·count / Σ count over its lines.
fn epoch_value(dir: &Path, split: &str, epoch: usize, name: &str) -> f64 {
    let file = dir
        .join(split)
        .join(format!("epoch-{epoch}"))
        .join(format!("{}.log", name.replace(' ', "_")));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let (value, n) = line.split_once(',').expect("value,count lines");
        let n: f64 = n.parse().unwrap();
        sum += value.parse::<f64>().unwrap() * n;
        count += n;
    }
    assert!(count > 0.0, "{} is empty", file.display());
    sum / count
}

#[test]
fn a_user_model_gets_expert_fractions_in_the_learner() {
    let dir = std::env::temp_dir().join("switch-moe-embed-test");
    let _ = std::fs::remove_dir_all(&dir);
    let experts = 4;
    let out = Command::new(example("embed"))
        .args([
            "--epochs",
            "2",
            "--train-items",
            "256",
            "--valid-items",
            "128",
        ])
        .args(["--experts", &experts.to_string()])
        .arg("--artifact-dir")
        .arg(&dir)
        .output()
        .expect("the embed example is built by cargo test");
    assert!(
        out.status.success(),
        "embed failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for split in ["train", "valid"] {
        for epoch in 1..=2 {
            let fractions: Vec<f64> = (0..experts)
                .map(|e| epoch_value(&dir, split, epoch, &format!("Expert {e} fraction")))
                .collect();
            let sum: f64 = fractions.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-4,
                "{split} epoch {epoch}: fractions {fractions:?} sum to {sum}"
            );
            for name in ["Load Balancing Loss", "Max Expert Load", "Loss", "Accuracy"] {
                let v = epoch_value(&dir, split, epoch, name);
                assert!(v.is_finite(), "{split} epoch {epoch}: {name} = {v}");
            }
            // With 4 experts the load-balancing loss lies in [1, 4] and the max load in [1, 4].
            let aux = epoch_value(&dir, split, epoch, "Load Balancing Loss");
            assert!((0.99..=4.01).contains(&aux), "aux {aux}");
        }
    }
    assert!(dir.join("checkpoint").exists(), "the Learner checkpointed");
    // The run guard watched every training step of the user's model (its text log: one line
    // per step, "ok" or an alarm), and the program read the alarms back.
    let health = std::fs::read_to_string(dir.join("train/epoch-1/Router_Health.log"))
        .expect("the guard's log");
    assert_eq!(
        health.lines().count(),
        256 / 32,
        "one entry per step: {health}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("router alarms: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
