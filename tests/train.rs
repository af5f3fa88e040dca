//! The training run end to end on a generated play (tests/common's `play_text`): Learner, metrics, checkpoints,
//! routing CSV, resume, tokenizer round trip and generation from the artifact directory.

mod common;

use std::path::{Path, PathBuf};

use burn::config::Config;
use common::*;
use switch_moe::data::TextTokenizer;
use switch_moe::generate::{SamplingConfig, generate};
use switch_moe::train::{
    TokenizerKind, TrainOptions, TrainingConfig, epoch_metric, load_trained, train,
};
use switch_moe::{SwitchEncoderConfig, SwitchLmConfig};

const EXPERTS: usize = 4;

fn tiny_config(d_model: usize) -> TrainingConfig {
    let encoder = SwitchEncoderConfig::new(d_model, 2 * d_model, 2, 2, EXPERTS)
        .with_norm_first(true)
        .with_dropout(0.0)
        .map_moe(|m| m.with_expert_dropout(0.0));
    TrainingConfig::new(SwitchLmConfig::new(0, 32, encoder), TokenizerKind::Char)
        .with_batch_size(8)
        .with_num_epochs(2)
        .with_max_steps(Some(60))
        .with_lr(1e-2)
        .with_warmup_steps(5)
}

fn options(dir: &Path, data: &Path) -> TrainOptions {
    TrainOptions {
        artifact_dir: dir.join("run"),
        data: Some(data.to_path_buf()),
        tokenizer_file: None,
        resume: false,
        plain_progress: Some(true),
        epoch_limit: None,
    }
}

#[test]
fn learner_trains_checkpoints_logs_routing_and_resumes() {
    let dir = scratch_in("tests", "learner");
    let data = corpus_slice(&dir, 40_000);
    let opts = options(&dir, &data);
    let summary = train::<AB>(tiny_config(32), &opts, device()).expect("training runs");
    let run = &opts.artifact_dir;

    assert_eq!(summary.epochs, 1..=2);
    assert_eq!(summary.valid_loss.len(), 2);
    assert!(
        summary.valid_loss[1] < summary.valid_loss[0],
        "validation loss should fall: {:?}",
        summary.valid_loss
    );
    // Below the uniform guess ln(V) after training.
    assert!(summary.valid_loss[1] < (summary.vocab_size as f64).ln());

    for split in ["train", "valid"] {
        for epoch in 1..=2 {
            let sum: f64 = (0..EXPERTS)
                .map(|e| epoch_metric(run, split, epoch, &format!("Expert {e} fraction")).unwrap())
                .sum();
            assert!(
                (sum - 1.0).abs() <= 1e-4,
                "{split} epoch {epoch}: fractions sum to {sum}"
            );
        }
    }
    for file in [
        "config.json",
        "tokenizer.json",
        "model.mpk",
        "checkpoint/model-2.mpk",
        "checkpoint/optim-2.mpk",
        "checkpoint/scheduler-2.mpk",
    ] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let csv = std::fs::read_to_string(run.join("routing.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "epoch,split,layer,expert,token_fraction,router_prob_mean,expert_bias"
    );
    // 2 epochs x 2 splits x 1 sparse layer x 4 experts.
    assert_eq!(rows.len(), 1 + 2 * 2 * EXPERTS, "{csv}");
    for (epoch, split) in [(1, "train"), (1, "valid"), (2, "train"), (2, "valid")] {
        let fractions: f64 = rows[1..]
            .iter()
            .map(|r| r.split(',').collect::<Vec<_>>())
            .filter(|c| c[0] == epoch.to_string() && c[1] == split)
            .map(|c| {
                assert_eq!(c[2], "1", "layer 1 is the sparse one");
                c[4].parse::<f64>().unwrap()
            })
            .sum();
        assert!(
            (fractions - 1.0).abs() < 1e-4,
            "epoch {epoch} {split}: {fractions}"
        );
    }

    // Resume: a third epoch continues from checkpoint 2, leaving epoch 1's logs alone.
    let epoch1_log = std::fs::read_to_string(run.join("train/epoch-1/Loss.log")).unwrap();
    let resumed = TrainOptions {
        resume: true,
        ..opts.clone()
    };
    let config = TrainingConfig::load(run.join("config.json"))
        .unwrap()
        .with_num_epochs(3);
    let summary = train::<AB>(config, &resumed, device()).expect("resume runs");
    assert_eq!(summary.epochs, 3..=3);
    assert!(run.join("checkpoint/model-3.mpk").exists());
    assert!(epoch_metric(run, "valid", 3, "Loss").is_some());
    assert_eq!(
        std::fs::read_to_string(run.join("train/epoch-1/Loss.log")).unwrap(),
        epoch1_log,
        "resuming must not overwrite earlier epochs' logs"
    );
    let csv = std::fs::read_to_string(run.join("routing.csv")).unwrap();
    assert_eq!(
        csv.lines().filter(|r| r.starts_with("3,")).count(),
        2 * EXPERTS
    );

    // Generation from the directory alone.
    let (model, tokenizer, _) = load_trained::<B>(run, &device()).unwrap();
    let sampling = SamplingConfig {
        length: 25,
        ..SamplingConfig::default()
    };
    let text = generate(&model, &tokenizer, "ROMEO:", &sampling, &device()).unwrap();
    assert_eq!(text.chars().count(), "ROMEO:".len() + 25, "{text:?}");
    assert!(text.starts_with("ROMEO:"));
}

#[test]
fn bpe_tokenizer_round_trips_and_saves() {
    let text = play_text(30_000, 1);
    let tokenizer = TextTokenizer::train_bpe(&text, 400).unwrap();
    assert_eq!(tokenizer.vocab_size(), 400);
    let sample = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  Odd  spacing!";
    let ids = tokenizer.encode(sample).unwrap();
    assert!(ids.len() < sample.len(), "BPE merges shorten the sequence");
    assert_eq!(tokenizer.decode(&ids).unwrap(), sample);
    assert_eq!(
        tokenizer.decode(&tokenizer.encode(&text).unwrap()).unwrap(),
        text
    );

    let dir = scratch_in("tests", "bpe");
    tokenizer.save(&dir.join("tokenizer.json")).unwrap();
    let loaded = TextTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(loaded.encode(sample).unwrap(), ids);

    let chars = TextTokenizer::char_level("abca\n");
    assert_eq!(chars.vocab_size(), 4);
    assert_eq!(chars.encode("cab\n").unwrap(), vec![3, 1, 2, 0]);
    chars.save(&dir.join("chars.json")).unwrap();
    let loaded = TextTokenizer::load(&dir.join("chars.json")).unwrap();
    assert_eq!(loaded.decode(&[3, 1, 2, 0]).unwrap(), "cab\n");
}

/// Early stopping through the Learner: on a corpus whose validation tail contradicts its training
/// head, the validation loss stops improving early; training must stop `patience` epochs after
/// the best epoch and `model.mpk` must hold the best epoch's weights, not the last ones.
#[test]
fn early_stopping_keeps_the_best_epoch() {
    let dir = scratch_in("tests", "early_stopping");
    // Training text: "ab" repeated; validation text: "ba" repeated with 'c's, which the model
    // learns to mispredict more confidently every epoch.
    let text = format!("{}{}", "ab".repeat(2700), "bcacba".repeat(100));
    let data = dir.join("corpus.txt");
    std::fs::write(&data, &text).unwrap();
    let opts = options(&dir, &data);
    let epochs = 8;
    let config = tiny_config(16)
        .with_num_epochs(epochs)
        .with_max_steps(Some(8 * epochs))
        .with_patience(Some(1));
    let summary = train::<AB>(config, &opts, device()).expect("training runs");

    let losses = &summary.valid_loss;
    let (best_i, best) = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    let best_epoch = summary.epochs.start() + best_i;
    assert!(
        *summary.epochs.end() < epochs,
        "validation loss {losses:?} should have stopped the run before epoch {epochs}"
    );
    assert_eq!(
        *summary.epochs.end(),
        best_epoch + 1,
        "patience 1: one epoch without improvement after the best ({best:.4}); losses {losses:?}"
    );
    assert_eq!(summary.saved_epoch, best_epoch);

    // model.mpk equals the best epoch's checkpoint, and differs from the last epoch's.
    let read = |path: PathBuf| std::fs::read(path).expect("model file");
    let run = &opts.artifact_dir;
    let saved = read(run.join("model.mpk"));
    let best_ckpt = read(
        run.join("checkpoint")
            .join(format!("model-{best_epoch}.mpk")),
    );
    let last_ckpt = read(
        run.join("checkpoint")
            .join(format!("model-{}.mpk", summary.epochs.end())),
    );
    assert!(
        saved == best_ckpt,
        "model.mpk is not the best epoch's checkpoint"
    );
    assert!(
        saved != last_ckpt,
        "model.mpk holds the last epoch's weights"
    );
}

/// The aux-loss-free expert bias of the sparse layer in a saved model record.
fn saved_bias(run: &Path, config: &TrainingConfig, file: &str) -> Vec<f32> {
    use burn::module::Module;
    use burn::record::{DefaultRecorder, Recorder};
    let mut model_config = config.model.clone();
    model_config.vocab_size = TrainingConfig::load(run.join("config.json"))
        .unwrap()
        .model
        .vocab_size;
    let fresh: switch_moe::SwitchLm<B> = model_config.init(&device());
    let record = Recorder::<B>::load(&DefaultRecorder::new(), run.join(file), &device()).unwrap();
    let model = fresh.load_record(record);
    let sparse = model
        .encoder
        .layers
        .iter()
        .find_map(|l| match l {
            switch_moe::EncoderBlock::Sparse(s) => Some(s),
            _ => None,
        })
        .unwrap();
    host(sparse.moe.router.expert_bias())
}

#[test]
fn expert_bias_is_checkpointed_and_resumed() {
    let dir = scratch_in("tests", "bias");
    let data = corpus_slice(&dir, 20_000);
    let opts = options(&dir, &data);
    let u = 0.05;
    let mut config = tiny_config(16).with_max_steps(Some(20));
    // A confident router (large init scale) needs a large bias to balance, so the bias drifts
    // far from zero over the 20 steps instead of oscillating within ±u.
    config.model.encoder = config
        .model
        .encoder
        .map_moe(|m| m.with_expert_bias_rate(u).with_init_scale(10.0));
    config.model.aux_coef = 0.0; // balance by the bias alone
    train::<AB>(config.clone(), &opts, device()).expect("training runs");
    let run = &opts.artifact_dir;
    let b2 = saved_bias(run, &config, "checkpoint/model-2");
    let max = b2.iter().fold(0f32, |m, b| m.max(b.abs()));
    assert!(
        max > 3.0 * u as f32,
        "the bias moved during training: {b2:?}"
    );
    assert!(b2.iter().sum::<f32>().abs() < 1e-5, "re-centred: {b2:?}");
    let csv = std::fs::read_to_string(run.join("routing.csv")).unwrap();
    let last_train: Vec<f32> = csv
        .lines()
        .filter(|r| r.starts_with("2,train,"))
        .map(|r| r.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(last_train.len(), EXPERTS);
    assert!(
        last_train
            .iter()
            .zip(&b2)
            .all(|(c, b)| (c - b).abs() < 1e-5),
        "routing.csv's bias column {last_train:?} vs the checkpoint {b2:?}"
    );

    // Resume for one more epoch of a single step: the bias moves by at most 2u per entry from
    // the saved one (a resume from zero could not reach it).
    let resumed = TrainOptions {
        resume: true,
        ..opts.clone()
    };
    let config3 = TrainingConfig::load(run.join("config.json"))
        .unwrap()
        .with_num_epochs(3)
        .with_max_steps(Some(3));
    train::<AB>(config3, &resumed, device()).expect("resume runs");
    let b3 = saved_bias(run, &config, "checkpoint/model-3");
    for (a, b) in b3.iter().zip(&b2) {
        assert!((a - b).abs() <= 2.0 * u as f32 + 1e-6, "{b3:?} vs {b2:?}");
    }
    assert_ne!(b3, b2, "the resumed run kept updating the bias");
}
