//! The `train`, `generate` and `embed` programs as a user meets them: `--help` says what each
//! does (train's lists both presets), a run starts with one block saying what it will do and
//! shows progress with speed and time left; bad input gives a one-paragraph error that names the
//! file or flag, a non-zero exit code, no panic, and nothing in the artifact directory
//! overwritten.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use switch_moe::train::{TokenizerKind, TrainingConfig, train};
use switch_moe::{SwitchEncoderConfig, SwitchLmConfig};

/// Tiny model flags and 2 steps, so that a run that wrongly starts stays short.
fn tiny_flags() -> Vec<&'static str> {
    [&TINY_TRAIN[..], &["--max-steps", "2"]].concat()
}

/// Runs `train` with tiny settings plus `args`; returns stderr after checking the failure shape.
fn train_fails(args: &[&str], must_mention: &[&str]) -> String {
    train_fails_with(&tiny_flags(), args, must_mention)
}

fn train_fails_with(base: &[&str], args: &[&str], must_mention: &[&str]) -> String {
    let out = Command::new(example("train"))
        .args(base)
        .args(args)
        .output()
        .expect("the train example is built by cargo test");
    let stderr = failure_stderr(&out);
    assert!(
        stderr.starts_with("error: "),
        "one error paragraph expected: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one paragraph: {stderr}"
    );
    for needle in must_mention {
        assert!(
            stderr.contains(needle),
            "error should mention {needle:?}: {stderr}"
        );
    }
    stderr
}

fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn help(program: &str) -> String {
    let out = Command::new(example(program))
        .arg("--help")
        .output()
        .expect("the examples are built by cargo test");
    assert!(out.status.success(), "{program} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_says_what_each_program_does_and_lists_the_presets() {
    let train = help("train");
    assert!(train.contains("language model"), "{train}");
    let row = |name: &str| {
        train
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} row in the presets table:\n{train}"))
            .to_string()
    };
    // cpu and gpu values side by side.
    for (name, cpu, gpu) in [
        ("d_model", "128", "384"),
        ("d_ff", "512", "1536"),
        ("layers", "4", "6"),
        ("heads", "4", "6"),
        ("experts", "8", "8"),
        ("seq len", "128", "256"),
        ("batch", "32", "64"),
        ("steps", "500", "5 passes"),
        ("lr", "2e-3", "1e-3"),
    ] {
        let line = row(name);
        let (at_cpu, at_gpu) = (line.find(cpu), line.rfind(gpu));
        assert!(
            matches!((at_cpu, at_gpu), (Some(c), Some(g)) if c < g || cpu == gpu),
            "{name}: expected cpu {cpu} then gpu {gpu} in {line:?}"
        );
    }
    // What an epoch is under a step budget.
    assert!(train.contains("one pass"), "{train}");
    assert!(help("generate").contains("Sample text"));
    assert!(help("embed").contains("SwitchEncoderLayer"));
}

#[test]
fn a_run_says_what_it_does_and_shows_speed_and_time_left() {
    let dir = scratch_in("cli-tests", "start-block");
    let data = file_with(
        &dir,
        "corpus.txt",
        "Friends, Romans, countrymen, lend me your ears.\n"
            .repeat(80)
            .as_bytes(),
    );
    let run = dir.join("run");
    let out = Command::new(example("train"))
        .args(tiny_flags())
        .args(["--data", data.to_str().unwrap()])
        .args(["--artifact-dir", run.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The start block, before any progress line.
    let block: String = stdout
        .lines()
        .take_while(|l| !l.starts_with('['))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "backend",
        "device",
        "preset",
        "parameters",
        "2 steps",
        "tokens",
        run.to_str().unwrap(),
    ] {
        assert!(
            block.contains(needle),
            "start block lacks {needle:?}:\n{block}"
        );
    }
    // The last training line has a speed and an ETA; validation shows the epoch's mean.
    let train_line = stdout
        .lines()
        .rfind(|l| l.starts_with("[train]"))
        .unwrap_or_else(|| panic!("no progress line:\n{stdout}"));
    for needle in ["step 2/2", "tok/s", "ETA", "Loss"] {
        assert!(train_line.contains(needle), "{needle:?} in {train_line:?}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("[valid]") && l.contains("mean over") && l.contains("Loss")),
        "{stdout}"
    );
    // The model's module dump is a file, not part of the output.
    assert!(!stdout.contains("token_embedding"), "{stdout}");
    let model_txt = std::fs::read_to_string(run.join("model.txt")).unwrap();
    assert!(model_txt.contains("token_embedding"), "{model_txt}");
}

#[test]
fn missing_corpus_file() {
    let dir = scratch_in("cli-tests", "missing");
    let run = dir.join("run");
    train_fails(
        &[
            "--data",
            "/nonexistent/corpus.txt",
            "--artifact-dir",
            run.to_str().unwrap(),
        ],
        &["/nonexistent/corpus.txt", "--data"],
    );
    assert!(!run.exists(), "nothing is written for a failed start");
}

#[test]
fn empty_corpus() {
    let dir = scratch_in("cli-tests", "empty");
    let data = file_with(&dir, "empty.txt", b"  \n\n");
    train_fails(
        &[
            "--data",
            data.to_str().unwrap(),
            "--artifact-dir",
            dir.join("run").to_str().unwrap(),
        ],
        &["empty.txt", "no text", "--data"],
    );
    assert!(!dir.join("run").exists());
}

#[test]
fn corpus_shorter_than_one_window() {
    let dir = scratch_in("cli-tests", "short");
    let data = file_with(&dir, "short.txt", b"To be, or not to be.");
    train_fails(
        &[
            "--data",
            data.to_str().unwrap(),
            "--artifact-dir",
            dir.join("run").to_str().unwrap(),
        ],
        &["too short", "--seq-len", "--data"],
    );
    assert!(!dir.join("run").exists());
}

#[test]
fn non_utf8_corpus() {
    let dir = scratch_in("cli-tests", "latin1");
    let data = file_with(&dir, "latin1.txt", b"caf\xe9 cr\xe8me\n");
    train_fails(
        &[
            "--data",
            data.to_str().unwrap(),
            "--artifact-dir",
            dir.join("run").to_str().unwrap(),
        ],
        &["latin1.txt", "not UTF-8"],
    );
}

#[test]
fn unreadable_tokenizer() {
    let dir = scratch_in("cli-tests", "tokenizer");
    let data = file_with(
        &dir,
        "corpus.txt",
        "All the world's a stage.\n".repeat(200).as_bytes(),
    );
    let tok = file_with(&dir, "tokenizer.json", b"{ not json");
    let out = Command::new(example("train"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
        ])
        .args([
            "--artifact-dir",
            dir.join("run").to_str().unwrap(),
            "--max-steps",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = failure_stderr(&out);
    assert!(
        stderr.contains("tokenizer.json") && stderr.contains("--tokenizer"),
        "{stderr}"
    );
    assert!(!dir.join("run").exists());
}

#[test]
fn invalid_flag_values_name_the_flag() {
    let dir = scratch_in("cli-tests", "flags");
    let data = file_with(
        &dir,
        "corpus.txt",
        "Now is the winter of our discontent.\n"
            .repeat(100)
            .as_bytes(),
    );
    let run = dir.join("run");
    // `--preset cpu`: without it a GPU gets the gpu preset (d_model 384, where `--heads 3` is
    // valid).
    let base = [
        "--data",
        data.to_str().unwrap(),
        "--artifact-dir",
        run.to_str().unwrap(),
        "--preset",
        "cpu",
    ];
    for (flag, value) in [
        ("--seq-len", "0"),
        ("--heads", "3"),
        ("--experts", "0"),
        ("--top-k", "9"),
        ("--lr", "0"),
        ("--capacity-factor", "0"),
        ("--batch-size", "0"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        // The cpu preset's model: d_model 128, 8 experts.
        train_fails_with(&[], &args, &[flag]);
    }
    let mut args = base.to_vec();
    args.extend(["--vocab-size", "10"]);
    let out = Command::new(example("train")).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--vocab-size"),
        "{stderr}"
    );
    assert!(!run.exists());
}

fn tiny(d_model: usize) -> TrainingConfig {
    let encoder = SwitchEncoderConfig::new(d_model, 2 * d_model, 2, 2, 4).with_norm_first(true);
    TrainingConfig::new(SwitchLmConfig::new(0, 16, encoder), TokenizerKind::Char)
        .with_batch_size(4)
        .with_max_steps(Some(2))
}

fn quick_run(dir: &Path, data: &Path, d_model: usize) -> PathBuf {
    train::<AB>(tiny(d_model), &train_options(dir, data), device()).unwrap();
    dir.to_path_buf()
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in [
        "config.json",
        "tokenizer.json",
        "checkpoint/model-1.mpk",
        "model.mpk",
    ] {
        let p = dir.join(sub);
        files.push((p.clone(), std::fs::read(&p).unwrap()));
    }
    files
}

#[test]
fn resume_errors_and_existing_runs_are_not_overwritten() {
    let dir = scratch_in("cli-tests", "resume");
    let data = file_with(
        &dir,
        "corpus.txt",
        "O Romeo, Romeo! wherefore art thou Romeo?\n"
            .repeat(60)
            .as_bytes(),
    );
    let a = quick_run(&dir.join("a"), &data, 16);
    let b = quick_run(&dir.join("b"), &data, 24);

    // A fresh start into a directory that holds a run.
    let before = snapshot(&a);
    train_fails(
        &[
            "--data",
            data.to_str().unwrap(),
            "--artifact-dir",
            a.to_str().unwrap(),
        ],
        &["already holds a run", "--resume", "--artifact-dir"],
    );
    assert_eq!(snapshot(&a), before, "nothing overwritten");

    // A checkpoint from a different configuration.
    std::fs::copy(
        b.join("checkpoint/model-1.mpk"),
        a.join("checkpoint/model-1.mpk"),
    )
    .unwrap();
    let before = snapshot(&a);
    let out = Command::new(example("train"))
        .args([
            "--resume",
            "--epochs",
            "2",
            "--plain",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--artifact-dir", a.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = failure_stderr(&out);
    assert!(
        stderr.contains("model-1") && stderr.contains("different configuration"),
        "{stderr}"
    );
    assert_eq!(snapshot(&a), before, "nothing overwritten");

    // --resume in a directory without a checkpoint (a run killed before its first one): the
    // run starts over from the saved config, saying so in one line, and completes.
    let empty = dir.join("no-checkpoint");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(b.join("config.json"), empty.join("config.json")).unwrap();
    let out = Command::new(example("train"))
        .args(["--resume", "--plain", "--data", data.to_str().unwrap()])
        .args(["--artifact-dir", empty.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("starting it over").count(),
        1,
        "one line says so:\n{stdout}"
    );
    assert!(empty.join("model.mpk").exists() && empty.join("checkpoint").exists());

    // generate from a directory that is not a run.
    let out = Command::new(example("generate"))
        .args(["--artifact-dir", dir.join("nowhere").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = failure_stderr(&out);
    assert!(stderr.contains("--artifact-dir"), "{stderr}");

    // generate from run b produces the requested length (characters).
    let out = Command::new(example("generate"))
        .args([
            "--artifact-dir",
            b.to_str().unwrap(),
            "--prompt",
            "O Rom",
            "--length",
            "30",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let text = text.strip_suffix('\n').expect("println adds one newline");
    assert_eq!(text.chars().count(), 5 + 30, "{text:?}");
}

/// `train --print-config` with `args`: the resolved config, parsed independently as JSON.
fn printed_config(args: &[&str]) -> serde_json::Value {
    let out = Command::new(example("train"))
        .args(args)
        .arg("--print-config")
        .output()
        .expect("the train example is built by cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn every_setting_has_a_flag_that_reaches_the_config() {
    let base = printed_config(&["--preset", "cpu"]);
    let help = help("train");
    // (flag, value, JSON pointer of the field, the value expected there)
    let cases: [(&str, &str, &str, serde_json::Value); 16] = [
        (
            "--dropout",
            "0.3",
            "/model/encoder/layer/dropout",
            0.3.into(),
        ),
        (
            "--expert-dropout",
            "0.4",
            "/model/encoder/layer/moe/expert_dropout",
            0.4.into(),
        ),
        ("--weight-decay", "0.05", "/weight_decay", 0.05.into()),
        ("--warmup-steps", "7", "/warmup_steps", 7.into()),
        ("--min-lr-ratio", "0.2", "/min_lr_ratio", 0.2.into()),
        ("--grad-clip", "0.5", "/grad_clip", 0.5.into()),
        (
            "--activation",
            "gelu",
            "/model/encoder/layer/moe/activation",
            "Gelu".into(),
        ),
        (
            "--norm",
            "post",
            "/model/encoder/layer/norm_first",
            false.into(),
        ),
        ("--moe-every", "1", "/model/encoder/moe_every", 1.into()),
        (
            "--experts",
            "1",
            "/model/encoder/layer/moe/num_experts",
            1.into(),
        ),
        ("--valid-fraction", "0.2", "/valid_fraction", 0.2.into()),
        ("--lr", "0.004", "/lr", 0.004.into()),
        (
            "--balance-scope",
            "sequence",
            "/model/encoder/layer/moe/balance_scope",
            "Sequence".into(),
        ),
        (
            "--n-group",
            "4",
            "/model/encoder/layer/moe/n_group",
            4.into(),
        ),
        (
            "--routed-scaling-factor",
            "2.5",
            "/model/encoder/layer/moe/routed_scaling_factor",
            2.5.into(),
        ),
        (
            "--forced-routing",
            "round-robin",
            "/model/encoder/layer/moe/forced_routing",
            "RoundRobin".into(),
        ),
    ];
    for (flag, value, pointer, expected) in cases {
        assert!(help.contains(flag), "{flag} is not in --help");
        let config = printed_config(&["--preset", "cpu", flag, value]);
        assert_eq!(config.pointer(pointer), Some(&expected), "{flag} {value}");
        assert_ne!(
            base.pointer(pointer),
            Some(&expected),
            "{flag}: the preset already has it"
        );
    }
    let tied = printed_config(&["--preset", "cpu", "--tie-embeddings", "--router-bias"]);
    assert_eq!(tied.pointer("/model/tie_embeddings"), Some(&true.into()));
    assert_eq!(
        tied.pointer("/model/encoder/layer/moe/router_bias"),
        Some(&true.into())
    );
    // The groups of --help.
    for heading in ["Data:", "Model:", "Routing:", "Optimisation:", "Run:"] {
        assert!(help.contains(heading), "no {heading} group in --help");
    }
}

#[test]
fn a_runs_config_file_reproduces_its_settings_and_typos_are_named() {
    let dir = scratch_in("cli-tests", "config-file");
    let data = file_with(
        &dir,
        "corpus.txt",
        "O Romeo, Romeo! wherefore art thou Romeo?\n"
            .repeat(60)
            .as_bytes(),
    );
    let run = quick_run(&dir.join("run"), &data, 16);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let file = run.join("config.json");
    let file = file.to_str().unwrap();
    assert_eq!(
        printed_config(&["--config", file]),
        saved,
        "the run's own settings"
    );
    // A flag replaces one field of the file.
    let mut expected = saved.clone();
    expected["max_steps"] = 10.into();
    assert_eq!(
        printed_config(&["--config", file, "--max-steps", "10"]),
        expected
    );

    // A hand-written file over the preset, and one with a typo.
    let partial = file_with(&dir, "partial.json", br#"{"lr": 0.01, "batch_size": 8}"#);
    let config = printed_config(&["--preset", "cpu", "--config", partial.to_str().unwrap()]);
    assert_eq!(
        (config["lr"].as_f64(), config["batch_size"].as_u64()),
        (Some(0.01), Some(8))
    );
    assert_eq!(config["model"]["encoder"]["n_layers"], 4, "the preset's");
    let typo = file_with(
        &dir,
        "typo.json",
        br#"{"model": {"encoder": {"n_layer": 3}}}"#,
    );
    let stderr = train_fails(
        &["--config", typo.to_str().unwrap()],
        &["model.encoder.n_layer", "did you mean `n_layers`"],
    );
    assert!(stderr.contains("typo.json"), "{stderr}");
}
