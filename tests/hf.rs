//! Hugging Face interop against `transformers` itself: the fixtures in tests/fixtures/hf were
//! written by benches/peers/hf_fixtures.py (torch 2.9.0, transformers 4.57.1) from random-weight
//! `SwitchTransformersSparseMLP`, `MixtralSparseMoeBlock`, `Qwen2MoeSparseMoeBlock`,
//! `Qwen3MoeSparseMoeBlock`, `OlmoeSparseMoeBlock`, `DeepseekV3MoE` and `GptOssMLP` blocks (the
//! last one also packed as MXFP4, the Hub's layout), with an input batch and HF's outputs, router
//! logits and (DeepSeek-V3, gpt-oss) routing weights in eval mode.

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

/// One fixture: its file name, format, block prefix, the config that reproduces HF's forward,
/// and that model's `config.json` keys (written here by hand from the fixture script).
struct Case {
    name: &'static str,
    format: HfFormat,
    prefix: &'static str,
    config: SwitchFeedForwardConfig,
    config_json: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "switch",
            format: HfFormat::SwitchTransformers,
            prefix: "encoder.block.1.layer.1.mlp",
            // HF's expert_capacity = 10 = all tokens: drops nothing; C = ⌈4·10/4⌉ = 10 here.
            config: HfFormat::SwitchTransformers
                .config(D, F, E, 1)
                .with_eval_capacity_factor(E as f64),
            config_json: r#"{"model_type": "switch_transformers", "d_model": 16, "d_ff": 32,
                "num_experts": 4, "expert_capacity": 10, "router_jitter_noise": 0.01}"#,
        },
        Case {
            name: "mixtral",
            format: HfFormat::Mixtral,
            prefix: "model.layers.0.block_sparse_moe",
            config: HfFormat::Mixtral.config(D, F, E, 2),
            config_json: r#"{"model_type": "mixtral", "hidden_size": 16,
                "intermediate_size": 32, "num_local_experts": 4, "num_experts_per_tok": 2}"#,
        },
        Case {
            name: "qwen2_moe",
            format: HfFormat::Qwen2Moe,
            prefix: "model.layers.0.mlp",
            // shared_expert_intermediate_size 64 = 2 · moe_intermediate_size.
            config: HfFormat::Qwen2Moe
                .config(D, F, E, 2)
                .with_num_shared_experts(2),
            config_json: r#"{"model_type": "qwen2_moe", "hidden_size": 16,
                "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
                "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": false}"#,
        },
        Case {
            name: "qwen3_moe",
            format: HfFormat::Qwen3Moe,
            prefix: "model.layers.0.mlp",
            config: HfFormat::Qwen3Moe.config(D, F, 8, 3),
            config_json: r#"{"model_type": "qwen3_moe", "hidden_size": 16,
                "moe_intermediate_size": 32, "intermediate_size": 64, "num_experts": 8,
                "num_experts_per_tok": 3, "norm_topk_prob": true, "decoder_sparse_step": 1}"#,
        },
        Case {
            name: "olmoe",
            format: HfFormat::Olmoe,
            prefix: "model.layers.0.mlp",
            config: HfFormat::Olmoe.config(D, F, 8, 2),
            config_json: r#"{"model_type": "olmoe", "hidden_size": 16, "intermediate_size": 32,
                "num_experts": 8, "num_experts_per_tok": 2}"#,
        },
        Case {
            name: "deepseek_v3",
            format: HfFormat::DeepseekV3,
            prefix: "model.layers.3.mlp",
            config: HfFormat::DeepseekV3
                .config(D, F, 16, 4)
                .with_n_group(4)
                .with_topk_group(2)
                .with_num_shared_experts(2),
            config_json: r#"{"model_type": "deepseek_v3", "hidden_size": 16,
                "moe_intermediate_size": 32, "n_routed_experts": 16, "num_experts_per_tok": 4,
                "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
                "norm_topk_prob": true, "n_shared_experts": 2, "first_k_dense_replace": 3}"#,
        },
        Case {
            name: "gpt_oss",
            format: HfFormat::GptOss,
            prefix: "model.layers.0.mlp",
            config: HfFormat::GptOss.config(D, F, 8, 4),
            config_json: r#"{"model_type": "gpt_oss", "hidden_size": 16, "intermediate_size": 32,
                "num_local_experts": 8, "num_experts_per_tok": 4, "swiglu_limit": 7.0}"#,
        },
        Case {
            name: "gpt_oss_mxfp4",
            format: HfFormat::GptOss,
            prefix: "model.layers.0.mlp",
            config: HfFormat::GptOss.config(64, 64, 4, 2),
            config_json: r#"{"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 64,
                "num_local_experts": 4, "num_experts_per_tok": 2,
                "quantization_config": {"quant_method": "mxfp4"}}"#,
        },
    ]
}

fn load(case: &Case) -> SwitchFeedForward<B> {
    let mut ckpt = HfCheckpoint::open(fixture(case.name)).expect("fixture opens");
    ckpt.load_block::<B>(&case.config, case.prefix, case.format, &device())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// Our routing as HF's dense `[T, E]` weights: the gates scattered to their experts.
fn dense_weights(ids: Vec<i64>, gates: Vec<f32>, k: usize, e: usize) -> Vec<f32> {
    let mut dense = vec![0.0; gates.len() / k * e];
    for (j, (&id, &g)) in ids.iter().zip(&gates).enumerate() {
        dense[j / k * e + id as usize] += g;
    }
    dense
}

/// max |Δ| of the block's output, router logits and (when the io file has them) routing
/// weights against transformers'.
fn parity(case: &Case, moe: &SwitchFeedForward<B>) -> (f32, f32, Option<f32>) {
    let device = device();
    let mut io = HfCheckpoint::open(fixture(&format!("{}_io", case.name))).unwrap();
    let x: Tensor<B, 3> = io.tensor("input", &device).unwrap(); // [2, 5, d]
    let [b, s, d] = x.dims();
    let want_y: Tensor<B, 3> = io.tensor("output", &device).unwrap();
    let want_logits: Tensor<B, 2> = io.tensor("router_logits", &device).unwrap(); // [10, E]

    let (y, stats) = moe.forward(x.clone(), None);
    assert_eq!(
        host(stats.dropped_fraction)[0],
        0.0,
        "{}: the parity setting must drop nothing",
        case.name
    );
    let dy = max_abs_diff(&host(y), &host(want_y));
    let routing = moe.router.forward(x.reshape([b * s, d]));
    let dl = max_abs_diff(&host(routing.logits), &host(want_logits));
    let has_weights = io.names().any(|n| n == "routing_weights");
    let dw = has_weights.then(|| {
        let want: Tensor<B, 2> = io.tensor("routing_weights", &device).unwrap(); // [10, E]
        let [_, e] = want.dims();
        let k = moe.router.top_k;
        let ids = routing
            .expert_ids
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let ours = dense_weights(ids, host(routing.gates), k, e);
        max_abs_diff(&ours, &host(want))
    });
    (dy, dl, dw)
}

#[test]
fn imported_blocks_match_transformers_outputs_router_logits_and_weights() {
    for case in cases() {
        let moe = load(&case);
        let (dy, dl, dw) = parity(&case, &moe);
        println!(
            "{}: max |Δ output| {dy:.2e}, max |Δ router logits| {dl:.2e}, max |Δ routing \
             weights| {}",
            case.name,
            dw.map_or("-".to_string(), |w| format!("{w:.2e}"))
        );
        assert!(
            dy <= 1e-5,
            "{}: output differs from transformers by {dy}",
            case.name
        );
        assert!(dl <= 1e-5, "{}: router logits differ by {dl}", case.name);
        if let Some(dw) = dw {
            assert!(dw <= 1e-5, "{}: routing weights differ by {dw}", case.name);
        }
    }
}

#[test]
fn config_json_gives_the_parity_config() {
    let dir = tempfile_dir("config-json");
    for case in cases() {
        let path = dir.join(format!("{}.json", case.name));
        std::fs::write(&path, case.config_json).unwrap();
        let (format, config) = HfFormat::from_config_json(&path).unwrap();
        assert_eq!(format, case.format, "{}", case.name);
        // Switch's capacity is per sequence in HF: not a config.json key of ours.
        let config = match format {
            HfFormat::SwitchTransformers => config.with_eval_capacity_factor(E as f64),
            _ => config,
        };
        let mut ckpt = HfCheckpoint::open(fixture(case.name)).unwrap();
        let moe = ckpt
            .load_block::<B>(&config, case.prefix, format, &device())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let (dy, dl, dw) = parity(&case, &moe);
        assert!(
            dy <= 1e-5 && dl <= 1e-5 && dw.is_none_or(|w| w <= 1e-5),
            "{}: {dy} {dl} {dw:?}",
            case.name
        );
    }
    // Bad files: the key or the model type is named.
    let bad = |text: &str| {
        let path = dir.join("bad.json");
        std::fs::write(&path, text).unwrap();
        HfFormat::from_config_json(&path).unwrap_err().to_string()
    };
    let msg = bad(r#"{"model_type": "llama", "hidden_size": 16}"#);
    assert!(
        msg.contains("\"llama\" is not one of") && msg.contains("gpt_oss"),
        "{msg}"
    );
    let msg = bad(r#"{"model_type": "mixtral", "hidden_size": 16, "intermediate_size": 32}"#);
    assert!(msg.contains("no \"num_local_experts\""), "{msg}");
    let msg = bad(r#"{"model_type": "olmoe", "hidden_size": "16"}"#);
    assert!(msg.contains("\"hidden_size\" is \"16\""), "{msg}");
    let msg = bad(
        r#"{"model_type": "qwen2_moe", "hidden_size": 16, "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 48, "num_experts": 4, "num_experts_per_tok": 2}"#,
    );
    assert!(msg.contains("48 is not a multiple"), "{msg}");
    let msg = bad("{not json");
    assert!(
        msg.contains("bad.json") && msg.contains("not a JSON config"),
        "{msg}"
    );
}

#[test]
fn export_writes_transformers_names_shapes_and_values() {
    let dir = tempfile_dir("export");
    for case in cases().into_iter().filter(|c| c.name != "gpt_oss_mxfp4") {
        let name = case.name;
        let moe = load(&case);
        let out = dir.join(format!("{name}.safetensors"));
        HfExport::new(case.format)
            .block(case.prefix, &moe)
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
            let (a, b) = (read_any(&mut theirs, n), read_any(&mut ours, n));
            assert_eq!(a.0, b.0, "{name}: shape of {n}");
            assert_eq!(max_abs_diff(&a.1, &b.1), 0.0, "{name}: values of {n}");
        }
        // Two blocks into one file, as a checkpoint holds every layer.
        let two = dir.join(format!("{name}_two.safetensors"));
        HfExport::new(case.format)
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

/// A tensor of 1–3 dimensions: (shape, values).
fn read_any(ckpt: &mut HfCheckpoint, name: &str) -> (Vec<usize>, Vec<f32>) {
    let device = device();
    if let Ok(t) = ckpt.tensor::<B, 1>(name, &device) {
        (t.dims().to_vec(), host(t))
    } else if let Ok(t) = ckpt.tensor::<B, 2>(name, &device) {
        (t.dims().to_vec(), host(t))
    } else {
        let t = ckpt.tensor::<B, 3>(name, &device).unwrap();
        (t.dims().to_vec(), host(t))
    }
}

/// MXFP4 in, dense out: the export holds HF's dense parameter names (a model with
/// `quantization_config` removed loads it), and importing it back gives the same block.
#[test]
fn mxfp4_checkpoints_export_dense_and_round_trip() {
    let device = device();
    let case = cases()
        .into_iter()
        .find(|c| c.name == "gpt_oss_mxfp4")
        .unwrap();
    let moe = load(&case);
    let out = tempfile_dir("mxfp4").join("dense.safetensors");
    HfExport::new(HfFormat::GptOss)
        .block(case.prefix, &moe)
        .save(&out)
        .unwrap();
    let ckpt = HfCheckpoint::open(&out).unwrap();
    let names: Vec<&str> = ckpt.names().collect();
    let p = |n: &str| format!("model.layers.0.mlp.{n}");
    let want = [
        p("experts.down_proj"),
        p("experts.down_proj_bias"),
        p("experts.gate_up_proj"),
        p("experts.gate_up_proj_bias"),
        p("router.bias"),
        p("router.weight"),
    ];
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    let mut again = HfCheckpoint::open(&out).unwrap();
    let back = again
        .load_block::<B>(&case.config, case.prefix, HfFormat::GptOss, &device)
        .unwrap();
    let x = Tensor::<B, 3>::random(
        [2, 5, 64],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let (a, _) = moe.forward(x.clone(), None);
    let (b, _) = back.forward(x, None);
    assert_eq!(max_abs_diff(&host(a), &host(b)), 0.0);
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
    // A trained selection bias cannot go to a family without one.
    let biased = HfFormat::Mixtral
        .config(D, F, E, 2)
        .with_expert_bias_rate(1e-3)
        .init::<B>(&device());
    biased
        .router
        .update_expert_bias(Tensor::from_floats([4.0, 0.0, 0.0, 0.0], &device()));
    let msg = HfExport::new(HfFormat::Mixtral)
        .block("m", &biased)
        .save(&out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("m: Mixtral has no selection bias"), "{msg}");
    // A DeepSeek-V3 block exports its (zero) selection bias; a gpt-oss one needs its biases.
    let plain_gpt = HfFormat::GptOss
        .config(D, F, E, 2)
        .with_bias(false)
        .init::<B>(&device());
    let msg = HfExport::new(HfFormat::GptOss)
        .block("m", &plain_gpt)
        .save(&out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("biases on all three projections"), "{msg}");
    assert!(!out.exists(), "nothing written on error");
}

#[test]
fn new_formats_name_what_does_not_fit() {
    let p = "model.layers.3.mlp";
    let deepseek = HfFormat::DeepseekV3
        .config(D, F, 16, 4)
        .with_n_group(4)
        .with_topk_group(2)
        .with_num_shared_experts(2);
    // No selection bias to hold e_score_correction_bias.
    let msg = load_error(
        "deepseek_v3",
        HfFormat::DeepseekV3,
        p,
        deepseek.clone().with_selection_bias(false),
    );
    assert!(msg.contains("selection_bias = true"), "{msg}");
    // Softmax scores against DeepSeek's sigmoid.
    let msg = load_error(
        "deepseek_v3",
        HfFormat::DeepseekV3,
        p,
        deepseek
            .clone()
            .with_router_score(switch_moe::RouterScore::Softmax),
    );
    assert!(msg.contains("Sigmoid"), "{msg}");
    // The gated shared expert of Qwen2-MoE against DeepSeek's ungated ones.
    let msg = load_error(
        "deepseek_v3",
        HfFormat::DeepseekV3,
        p,
        deepseek.clone().with_shared_gate(true),
    );
    assert!(msg.contains("shared_gate = false"), "{msg}");
    // A DeepSeek file read as Qwen3-MoE: its shared experts are not ignored.
    let msg = load_error(
        "deepseek_v3",
        HfFormat::Qwen3Moe,
        p,
        HfFormat::Qwen3Moe.config(D, F, 16, 4),
    );
    assert!(
        msg.contains("is it a Qwen2Moe or DeepseekV3 checkpoint"),
        "{msg}"
    );
    // gpt-oss: SiLU's SwiGLU instead of the clamped one; a width that does not fit the fused tensor.
    let gp = "model.layers.0.mlp";
    let msg = load_error(
        "gpt_oss",
        HfFormat::GptOss,
        gp,
        HfFormat::GptOss.config(D, F, 8, 4).with_glu_clamp(None),
    );
    assert!(msg.contains("clamped SwiGLU"), "{msg}");
    let msg = load_error(
        "gpt_oss",
        HfFormat::GptOss,
        gp,
        HfFormat::GptOss.config(D, 24, 8, 4),
    );
    assert!(
        msg.contains("experts.gate_up_proj")
            && msg.contains("[8, 16, 64]")
            && msg.contains("[8, 16, 48]"),
        "{msg}"
    );
    // MXFP4 blocks with a width the packing cannot have.
    let msg = load_error(
        "gpt_oss_mxfp4",
        HfFormat::GptOss,
        gp,
        HfFormat::GptOss.config(64, 48, 4, 2),
    );
    assert!(
        msg.contains("gate_up_proj_blocks") && msg.contains("[4, 96, 2, 16]"),
        "{msg}"
    );
}
