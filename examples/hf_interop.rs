//! Hugging Face interop, both directions: loads the sparse blocks of the committed fixtures
//! (SwitchTransformers, Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3, gpt-oss dense and
//! MXFP4, written by transformers 4.57.1), runs them on the fixtures' inputs, and saves them back
//! under HF's names into OUT_DIR (gpt-oss's MXFP4 block as dense `experts.*_proj`).
//!
//! ```text
//! cargo run --example hf_interop -- target/hf-export
//! PY="$(benches/peers/setup.sh | tail -n 1)"
//! "$PY" benches/peers/hf_fixtures.py tests/fixtures/hf --check target/hf-export   # HF loads ours
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Tensor;
use switch_moe::backend::{TestBackend as B, describe_device};
use switch_moe::hf::{HfCheckpoint, HfExport, HfFormat};

fn main() -> ExitCode {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("target/hf-export".into()));
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out: &std::path::Path) -> switch_moe::Result<()> {
    let device = Default::default();
    println!("backend: {:?}", describe_device(&device));
    std::fs::create_dir_all(out).map_err(|e| switch_moe::Error::Io {
        action: "cannot create",
        path: out.to_path_buf(),
        source: std::sync::Arc::new(e),
    })?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let (d, f, e) = (16, 32, 4);
    let blocks = [
        (
            "switch",
            HfFormat::SwitchTransformers,
            "encoder.block.1.layer.1.mlp",
            HfFormat::SwitchTransformers
                .config(d, f, e, 1)
                .with_eval_capacity_factor(e as f64),
        ),
        (
            "mixtral",
            HfFormat::Mixtral,
            "model.layers.0.block_sparse_moe",
            HfFormat::Mixtral.config(d, f, e, 2),
        ),
        (
            "qwen2_moe",
            HfFormat::Qwen2Moe,
            "model.layers.0.mlp",
            HfFormat::Qwen2Moe
                .config(d, f, e, 2)
                .with_num_shared_experts(2),
        ),
        (
            "qwen3_moe",
            HfFormat::Qwen3Moe,
            "model.layers.0.mlp",
            HfFormat::Qwen3Moe.config(d, f, 8, 3),
        ),
        (
            "olmoe",
            HfFormat::Olmoe,
            "model.layers.0.mlp",
            HfFormat::Olmoe.config(d, f, 8, 2),
        ),
        (
            "deepseek_v3",
            HfFormat::DeepseekV3,
            "model.layers.3.mlp",
            HfFormat::DeepseekV3
                .config(d, f, 16, 4)
                .with_n_group(4)
                .with_topk_group(2)
                .with_num_shared_experts(2),
        ),
        (
            "gpt_oss",
            HfFormat::GptOss,
            "model.layers.0.mlp",
            HfFormat::GptOss.config(d, f, 8, 4),
        ),
        (
            "gpt_oss_mxfp4",
            HfFormat::GptOss,
            "model.layers.0.mlp",
            HfFormat::GptOss.config(64, 64, 4, 2),
        ),
    ];
    for (name, format, prefix, config) in blocks {
        let mut ckpt = HfCheckpoint::open(fixtures.join(format!("{name}.safetensors")))?;
        let block = ckpt.load_block::<B>(&config, prefix, format, &device)?;
        let mut io = HfCheckpoint::open(fixtures.join(format!("{name}_io.safetensors")))?;
        let x: Tensor<B, 3> = io.tensor("input", &device)?;
        let want: Tensor<B, 3> = io.tensor("output", &device)?;
        let (y, _) = block.forward(x, None);
        let diff: f32 = (y - want).abs().max().into_scalar();
        let path = out.join(format!("{name}.safetensors"));
        HfExport::new(format).block(prefix, &block).save(&path)?;
        println!(
            "{name}: loaded {} tensors under {prefix}; max |ours − transformers| = {diff:.2e}; saved {}",
            ckpt.names().count(),
            path.display()
        );
    }
    Ok(())
}
