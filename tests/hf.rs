//! Hugging Face interop against `transformers` itself: the fixtures in tests/fixtures/hf were
//! written by benches/peers/hf_fixtures.py (torch 2.9.0, transformers 4.57.1) from random-weight
//! `SwitchTransformersSparseMLP`, `MixtralSparseMoeBlock` and `Qwen2MoeSparseMoeBlock` blocks,
//! with an input batch and HF's outputs and router logits in eval mode.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use common::*;
use switch_moe::hf::{HfCheckpoint, HfExport, HfFormat};
use switch_moe::{Error, SwitchFeedForward, SwitchFeedForwardConfig};

const D: usize = 16;
const F: usize = 32;
const E: usize = 4;

/// `tests/fixtures/hf/{name}.safetensors`, or under `$SWITCH_MOE_HF_FIXTURES` (a test binary
/// carried to another machine: benches/gpu.sh).
fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCH_MOE_HF_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf"),
        PathBuf::from,
    );
    dir.join(format!("{name}.safetensors"))
}

/// (name, format, prefix, config) of each fixture.
fn cases() -> Vec<(
    &'static str,
    HfFormat,
    &'static str,
    SwitchFeedForwardConfig,
)> {
    vec![
        (
            "switch",
            HfFormat::SwitchTransformers,
            "encoder.block.1.layer.1.mlp",
            // HF's expert_capacity = 10 = all tokens: drops nothing; C = ⌈4·10/4⌉ = 10 here.
            HfFormat::SwitchTransformers
                .config(D, F, E, 1)
                .with_eval_capacity_factor(E as f64),
        ),
        (
            "mixtral",
            HfFormat::Mixtral,
            "model.layers.0.block_sparse_moe",
            HfFormat::Mixtral.config(D, F, E, 2),
        ),
        (
            "qwen2_moe",
            HfFormat::Qwen2Moe,
            "model.layers.0.mlp",
            // shared_expert_intermediate_size 64 = 2 · moe_intermediate_size.
            HfFormat::Qwen2Moe
                .config(D, F, E, 2)
                .with_num_shared_experts(2),
        ),
    ]
}

fn load(
    name: &str,
    format: HfFormat,
    prefix: &str,
    config: &SwitchFeedForwardConfig,
) -> SwitchFeedForward<B> {
    let mut ckpt = HfCheckpoint::open(fixture(name)).expect("fixture opens");
    ckpt.load_block::<B>(config, prefix, format, &device())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn imported_blocks_match_transformers_outputs_and_router_logits() {
    let device = device();
    for (name, format, prefix, config) in cases() {
        let moe = load(name, format, prefix, &config);
        let mut io = HfCheckpoint::open(fixture(&format!("{name}_io"))).unwrap();
        let x: Tensor<B, 3> = io.tensor("input", &device).unwrap(); // [2, 5, d]
        let want_y: Tensor<B, 3> = io.tensor("output", &device).unwrap();
        let want_logits: Tensor<B, 2> = io.tensor("router_logits", &device).unwrap(); // [10, E]

        let (y, stats) = moe.forward(x.clone(), None);
        let dy = max_abs_diff(&host(y), &host(want_y));
        let logits = moe.router.forward(x.reshape([10, D])).logits;
        let dl = max_abs_diff(&host(logits), &host(want_logits));
        println!("{name}: max |Δ output| {dy:.2e}, max |Δ router logits| {dl:.2e}");
        assert!(
            dy <= 1e-5,
            "{name}: output differs from transformers by {dy}"
        );
        assert!(
            dl <= 1e-5,
            "{name}: router logits differ from transformers by {dl}"
        );
        assert_eq!(
            host(stats.dropped_fraction)[0],
            0.0,
            "{name}: the parity setting must drop nothing"
        );
    }
}

#[test]
fn export_writes_transformers_names_shapes_and_values() {
    let device = device();
    let dir = tempfile_dir("export");
    for (name, format, prefix, config) in cases() {
        let moe = load(name, format, prefix, &config);
        let out = dir.join(format!("{name}.safetensors"));
        HfExport::new(format)
            .block(prefix, &moe)
            .save(&out)
            .unwrap();

        let mut theirs = HfCheckpoint::open(fixture(name)).unwrap();
        let mut ours = HfCheckpoint::open(&out).unwrap();
        let names: Vec<String> = theirs.names().map(String::from).collect();
        assert_eq!(
            ours.names().map(String::from).collect::<Vec<_>>(),
            names,
            "{name}: exported tensor names"
        );
        for n in &names {
            let a: Tensor<B, 2> = theirs.tensor(n, &device).unwrap();
            let b: Tensor<B, 2> = ours.tensor(n, &device).unwrap();
            assert_eq!(a.dims(), b.dims(), "{name}: shape of {n}");
            assert_eq!(
                max_abs_diff(&host(a), &host(b)),
                0.0,
                "{name}: values of {n}"
            );
        }
        // Two blocks into one file, as a checkpoint holds every layer.
        let two = dir.join(format!("{name}_two.safetensors"));
        HfExport::new(format)
            .block("model.layers.0.x", &moe)
            .block("model.layers.1.x", &moe)
            .save(&two)
            .unwrap();
        let ckpt = HfCheckpoint::open(&two).unwrap();
        assert_eq!(ckpt.names().count(), 2 * names.len(), "{name}: two blocks");
        assert!(
            ckpt.names().all(|n| n.starts_with("model.layers.")),
            "{name}"
        );
    }
}

fn tempfile_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switch-moe-hf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error message of loading `name` into `config` under `prefix`.
fn load_error(
    name: &str,
    format: HfFormat,
    prefix: &str,
    config: SwitchFeedForwardConfig,
) -> String {
    let mut ckpt = HfCheckpoint::open(fixture(name)).unwrap();
    match ckpt.load_block::<B>(&config, prefix, format, &device()) {
        Ok(_) => panic!("{name}: loading {config:?} should fail"),
        Err(e) => {
            assert!(
                matches!(e, Error::Hf { .. } | Error::Config { .. }),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

#[test]
fn bad_files_and_configs_give_errors_naming_the_tensor() {
    let p = "model.layers.0.block_sparse_moe";
    let mixtral = |e, f| HfFormat::Mixtral.config(D, f, e, 2);

    // More experts in the block than in the file: the first missing tensor is named.
    let msg = load_error("mixtral", HfFormat::Mixtral, p, mixtral(5, F));
    assert!(
        msg.contains("model.layers.0.block_sparse_moe.gate.weight") && msg.contains("[5, 16]"),
        "{msg}"
    );

    // Fewer: the file's extra expert is named.
    let msg = load_error("mixtral", HfFormat::Mixtral, p, mixtral(3, F));
    assert!(
        msg.contains("experts.3") && msg.contains("num_experts = 3"),
        "{msg}"
    );

    // A width that does not fit.
    let msg = load_error("mixtral", HfFormat::Mixtral, p, mixtral(E, 24));
    assert!(
        msg.contains("experts.0.w1.weight") && msg.contains("[32, 16]") && msg.contains("[24, 16]"),
        "{msg}"
    );

    // Wrong prefix: the missing tensor is named with a hint.
    let msg = load_error(
        "mixtral",
        HfFormat::Mixtral,
        "model.layers.7.block_sparse_moe",
        mixtral(E, F),
    );
    assert!(
        msg.contains("model.layers.7.block_sparse_moe.gate.weight is missing"),
        "{msg}"
    );

    // Plain experts against a gated file, and the reverse.
    let plain = SwitchFeedForwardConfig::new(D, F, E).with_top_k(2);
    let msg = load_error("mixtral", HfFormat::Mixtral, p, plain);
    assert!(msg.contains("gated"), "{msg}");
    let msg = load_error(
        "switch",
        HfFormat::SwitchTransformers,
        "encoder.block.1.layer.1.mlp",
        HfFormat::Mixtral.config(D, F, E, 1),
    );
    assert!(msg.contains("gated"), "{msg}");

    // A shared expert on one side only, and a shared width that does not fit.
    let qp = "model.layers.0.mlp";
    let msg = load_error(
        "qwen2_moe",
        HfFormat::Qwen2Moe,
        qp,
        HfFormat::Qwen2Moe
            .config(D, F, E, 2)
            .with_num_shared_experts(0)
            .with_shared_gate(false),
    );
    assert!(msg.contains("shared expert"), "{msg}");
    let msg = load_error(
        "qwen2_moe",
        HfFormat::Qwen2Moe,
        qp,
        HfFormat::Qwen2Moe.config(D, F, E, 2),
    );
    assert!(
        msg.contains("shared_expert.gate_proj.weight") && msg.contains("[64, 16]"),
        "{msg}"
    );

    // Not a file, not safetensors.
    let missing = HfCheckpoint::open("/nonexistent/x.safetensors")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no such file"), "{missing}");
    let junk = tempfile_dir("junk").join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let msg = HfCheckpoint::open(&junk).unwrap_err().to_string();
    assert!(msg.contains("not a readable safetensors file"), "{msg}");
}

#[test]
fn a_failed_load_leaves_the_block_unchanged() {
    let config = HfFormat::Qwen2Moe
        .config(D, F, E, 2)
        .with_num_shared_experts(2);
    let mut moe = config.init::<B>(&device());
    let before = host(moe.router.gate.weight.val());
    let mut ckpt = HfCheckpoint::open(fixture("qwen2_moe")).unwrap();
    // The routed experts fit; the shared expert's prefix is wrong → error after reading some.
    let err = ckpt
        .load_into(&mut moe, "model.layers.0.mlp", HfFormat::Mixtral)
        .unwrap_err();
    assert!(
        err.to_string().contains("has no shared experts") || err.to_string().contains("missing"),
        "{err}"
    );
    assert_eq!(host(moe.router.gate.weight.val()), before);
}

#[test]
fn export_refuses_blocks_the_format_cannot_hold() {
    let moe = SwitchFeedForwardConfig::new(D, F, E).init::<B>(&device());
    let out = tempfile_dir("refuse").join("x.safetensors");
    let msg = HfExport::new(HfFormat::Mixtral)
        .block("m", &moe)
        .save(&out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("m: Mixtral experts are gated"), "{msg}");
    let shared = HfFormat::Qwen2Moe.config(D, F, E, 2).init::<B>(&device());
    let msg = HfExport::new(HfFormat::Mixtral)
        .block("m", &shared)
        .save(&out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no shared experts"), "{msg}");
    assert!(!out.exists(), "nothing written on error");
}
