//! Helpers shared by the integration tests: deterministic host data and host read-back.
#![allow(dead_code)]

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

pub use switch_moe::backend::{TestAutodiffBackend, TestBackend};

pub type B = TestBackend;
pub type AB = TestAutodiffBackend;

pub fn device() -> <B as burn::tensor::backend::BackendTypes>::Device {
    switch_moe::backend::default_device()
}

/// Deterministic test data: the crate's seedable host generator plus a vector helper.
pub struct Rng(switch_moe::init::HostRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(switch_moe::init::HostRng::new(seed))
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        self.0.uniform()
    }

    /// `n` normals with standard deviation `std`.
    pub fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.0.normal() * std) as f32).collect()
    }
}

pub fn tensor<Bk: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &Bk::Device,
) -> Tensor<Bk, D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn bool_tensor<Bk: Backend, const D: usize>(
    data: Vec<bool>,
    shape: [usize; D],
    device: &Bk::Device,
) -> Tensor<Bk, D, Bool> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

pub fn host_int<Bk: Backend, const D: usize>(t: Tensor<Bk, D, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("int data")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An example binary that `cargo test` builds next to the test binaries.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(std::path::Path::parent).unwrap();
    profile_dir.join("examples").join(name)
}

/// A block for gradient checks: no jitter, no expert dropout, capacity for every token (nothing
/// dropped, so routing is smooth between jumps), the paper's init at scale 1.
pub fn no_drop_config(d: usize, f: usize, e: usize) -> switch_moe::SwitchFeedForwardConfig {
    switch_moe::SwitchFeedForwardConfig::new(d, f, e)
        .with_jitter(0.0)
        .with_expert_dropout(0.0)
        .with_capacity_factor(e as f64)
        .with_eval_capacity_factor(e as f64)
        .with_init_scale(1.0)
}

/// The corpus the tests train on, which they write themselves so that a fresh clone passes
/// `cargo test` with nothing beside it and no download: a deterministic play of about `chars` characters (cut at a line end) from `seed`: scenes of
/// speakers ("ROMEO:", "First Citizen:", ...) saying sentences drawn from a small grammar. It has
/// what the tests need of tiny-shakespeare — a skewed vocabulary, recurring names and phrases
/// a small model learns within a few dozen steps, and the letters of the samples' prompts —
/// at no size at all.
pub fn play_text(chars: usize, seed: u64) -> String {
    const SPEAKERS: [&str; 10] = [
        "ROMEO",
        "JULIET",
        "First Citizen",
        "Second Citizen",
        "MENENIUS",
        "KING HENRY",
        "QUEEN MARGARET",
        "NURSE",
        "FRIAR LAURENCE",
        "CORIOLANUS",
    ];
    const SUBJECTS: [&str; 12] = [
        "The king",
        "My lord",
        "The people",
        "Our state",
        "This night",
        "Thy father",
        "The crown",
        "Good friar",
        "The city",
        "My heart",
        "Your grace",
        "The senate",
    ];
    const VERBS: [&str; 12] = [
        "hath sworn",
        "shall bear",
        "doth love",
        "will speak",
        "must yield",
        "cannot know",
        "hath lost",
        "shall find",
        "doth fear",
        "would see",
        "may keep",
        "hath given",
    ];
    const OBJECTS: [&str; 12] = [
        "the crown",
        "our bread",
        "thy name",
        "the gates",
        "my sword",
        "his honour",
        "the truth",
        "her hand",
        "the war",
        "this grief",
        "their corn",
        "the field",
    ];
    const TAILS: [&str; 8] = [
        "",
        " to-night",
        " for Rome",
        " in peace",
        " with joy",
        " at last",
        " for ever",
        " before we proceed",
    ];
    const ENDS: [&str; 4] = [".", ".", "!", "?"];
    let mut rng = switch_moe::init::HostRng::new(seed);
    // Zipf-like picks: index i with weight 1 / (i + 1), so a few words dominate as in real text.
    let mut pick = |n: usize| -> usize {
        let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
        let mut u = rng.uniform() * total;
        for i in 0..n {
            u -= 1.0 / (i + 1) as f64;
            if u <= 0.0 {
                return i;
            }
        }
        n - 1
    };
    let mut text = String::with_capacity(chars + 200);
    while text.len() < chars {
        text += SPEAKERS[pick(SPEAKERS.len())];
        text += ":\n";
        for _ in 0..1 + pick(4) {
            let sentence = format!(
                "{} {} {}{}{}",
                SUBJECTS[pick(SUBJECTS.len())],
                VERBS[pick(VERBS.len())],
                OBJECTS[pick(OBJECTS.len())],
                TAILS[pick(TAILS.len())],
                ENDS[pick(ENDS.len())],
            );
            text += &sentence;
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

/// An empty scratch directory `<tmp>/switch-moe-<group>/<name>` (emptied first).
pub fn scratch_in(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("switch-moe-{group}"))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A play of about `chars` characters ([`play_text`]) in `dir/corpus.txt`.
pub fn corpus_slice(dir: &std::path::Path, chars: usize) -> std::path::PathBuf {
    let file = dir.join("corpus.txt");
    std::fs::write(&file, play_text(chars, 1)).unwrap();
    file
}

/// Options of a test run in `dir` on `data`: plain progress, fresh (not resumed), every epoch.
#[cfg(feature = "train")]
pub fn train_options(
    dir: &std::path::Path,
    data: &std::path::Path,
) -> switch_moe::train::TrainOptions {
    switch_moe::train::TrainOptions {
        artifact_dir: dir.to_path_buf(),
        data: Some(data.to_path_buf()),
        tokenizer_file: None,
        resume: false,
        plain_progress: Some(true),
        epoch_limit: None,
    }
}

/// A tiny character-level model's flags for the `train` program (plain progress), for the tests
/// that run the programs.
pub const TINY_TRAIN: [&str; 16] = [
    "--d-model",
    "16",
    "--d-ff",
    "32",
    "--layers",
    "2",
    "--heads",
    "2",
    "--experts",
    "4",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--plain",
    "--char",
];

/// The stderr of a program run that must fail cleanly: a non-zero exit and no panic trace.
pub fn failure_stderr(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic trace: {stderr}");
    stderr
}
