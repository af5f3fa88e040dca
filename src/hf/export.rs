//! Writing Hugging Face sparse blocks: [`HfExport`] splits our stacked experts into HF's
//! per-expert tensors (or gpt-oss's fused, interleaved ones, dense) under HF's names and saves
//! them through burn-store's safetensors writer.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};
use burn_store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore};

use super::HfFormat;
use crate::error::{Error, Result};
use crate::experts::Experts;
use crate::moe::SwitchFeedForward;

/// One expert in HF's layout: `w1` (`[d, f]` as burn stores a `Linear`), `w3` if gated, `w2`.
#[derive(Module, Debug)]
struct HfExpert<B: Backend> {
    w1: Linear<B>,
    w3: Option<Linear<B>>,
    w2: Linear<B>,
}

/// gpt-oss's fused experts, `x @ W` layout (not `Linear`s, so the adapter does not transpose
/// them): `gate_up_proj` `[E, d, 2f]` (gate and up columns interleaved), `down_proj` `[E, f, d]`.
#[derive(Module, Debug)]
struct FusedExperts<B: Backend> {
    gate_up_proj: Param<Tensor<B, 3>>,
    gate_up_proj_bias: Param<Tensor<B, 2>>,
    down_proj: Param<Tensor<B, 3>>,
    down_proj_bias: Param<Tensor<B, 2>>,
}

/// One sparse block in HF's layout, saved through burn-store with key remapping.
#[derive(Module, Debug)]
struct HfBlock<B: Backend> {
    gate: Linear<B>,
    e_score_correction_bias: Option<Param<Tensor<B, 1>>>,
    experts: Vec<HfExpert<B>>,
    fused: Option<FusedExperts<B>>,
    shared_expert: Option<HfExpert<B>>,
    shared_expert_gate: Option<Linear<B>>,
}

/// The blocks of one file.
#[derive(Module, Debug)]
struct HfFile<B: Backend> {
    blocks: Vec<HfBlock<B>>,
}

fn linear<B: Backend>(weight: Tensor<B, 2>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(weight),
        bias: None,
    }
}

/// Expert `i` of a stack, as an [`HfExpert`].
fn hf_expert<B: Backend>(x: &Experts<B>, i: usize) -> HfExpert<B> {
    let [_, d, f] = x.w_in.shape().dims::<3>();
    let take = |w: Tensor<B, 3>, a: usize, b: usize| w.slice(i..i + 1).reshape([a, b]);
    HfExpert {
        w1: linear(take(x.w_in.val(), d, f)),
        w3: x.w_up.as_ref().map(|w| linear(take(w.val(), d, f))),
        w2: linear(take(x.w_out.val(), f, d)),
    }
}

/// A gated stack with biases in gpt-oss's fused layout: column 2j of `gate_up_proj` is W₁'s
/// column j, column 2j + 1 is W₃'s.
fn fused_experts<B: Backend>(x: &Experts<B>) -> Option<FusedExperts<B>> {
    let [e, d, f] = x.w_in.shape().dims::<3>();
    let (w_up, b_in, b_up, b_out) = (
        x.w_up.as_ref()?,
        x.b_in.as_ref()?,
        x.b_up.as_ref()?,
        x.b_out.as_ref()?,
    );
    let gate_up = Tensor::stack::<4>(vec![x.w_in.val(), w_up.val()], 3).reshape([e, d, 2 * f]); // [E, d, 2f]
    let gate_up_bias = Tensor::stack::<3>(vec![b_in.val(), b_up.val()], 2).reshape([e, 2 * f]); // [E, 2f]
    Some(FusedExperts {
        gate_up_proj: Param::from_tensor(gate_up),
        gate_up_proj_bias: Param::from_tensor(gate_up_bias),
        down_proj: Param::from_tensor(x.w_out.val()),
        down_proj_bias: Param::from_tensor(b_out.val()),
    })
}

/// A stack of n experts of width f as one expert of width n·f.
fn merged_expert<B: Backend>(x: &Experts<B>) -> HfExpert<B> {
    let [n, d, f] = x.w_in.shape().dims::<3>();
    let wide = |w: Tensor<B, 3>| w.swap_dims(0, 1).reshape([d, n * f]); // [d, n·f]
    HfExpert {
        w1: linear(wide(x.w_in.val())),
        w3: x.w_up.as_ref().map(|w| linear(wide(w.val()))),
        w2: linear(x.w_out.val().reshape([n * f, d])),
    }
}

/// Saves [`SwitchFeedForward`] blocks under HF names into one safetensors file (written by
/// burn-store's [`SafetensorsStore`], with its key remapping and the Burn → PyTorch adapter that
/// transposes linear weights to `[out, in]`; metadata `format = pt`, as `from_pretrained`
/// expects).
pub struct HfExport<B: Backend> {
    format: HfFormat,
    blocks: Vec<(String, HfBlock<B>)>,
    problems: Vec<String>,
}

impl<B: Backend> std::fmt::Debug for HfExport<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfExport")
            .field("format", &self.format)
            .field(
                "blocks",
                &self.blocks.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<B: Backend> HfExport<B> {
    /// An empty export in `format`.
    pub fn new(format: HfFormat) -> Self {
        Self {
            format,
            blocks: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Adds `block` under `prefix` (e.g. `model.layers.0.block_sparse_moe`). A block this
    /// format cannot represent is reported by [`save`](Self::save).
    pub fn block(mut self, prefix: &str, block: &SwitchFeedForward<B>) -> Self {
        let x = &block.experts;
        let format = self.format;
        let problem = format
            .block_problem(block)
            .or_else(|| selection_bias_problem(format, block))
            .map(|p| format!("{prefix}: {p}"));
        match problem {
            Some(p) => self.problems.push(p),
            None => {
                let router = &block.router.gate;
                let hf = HfBlock {
                    gate: Linear {
                        weight: Param::from_tensor(router.weight.val()),
                        bias: router.bias.as_ref().map(|b| Param::from_tensor(b.val())),
                    },
                    e_score_correction_bias: format
                        .selection_bias_name()
                        .map(|_| Param::from_tensor(block.router.expert_bias())),
                    experts: if format.fused() {
                        Vec::new()
                    } else {
                        (0..x.num_experts()).map(|i| hf_expert(x, i)).collect()
                    },
                    fused: if format.fused() {
                        fused_experts(x)
                    } else {
                        None
                    },
                    shared_expert: block.shared.as_ref().map(|s| merged_expert(&s.experts)),
                    shared_expert_gate: block
                        .shared
                        .as_ref()
                        .and_then(|s| s.gate.as_ref())
                        .map(|g| linear(g.weight.val())),
                };
                self.blocks
                    .push((prefix.trim_end_matches('.').to_string(), hf));
            }
        }
        self
    }

    /// The remapping from the export module's paths (`blocks.{j}.experts.{i}.w1.weight`) to
    /// HF's names.
    fn remapper(&self) -> std::result::Result<KeyRemapper, String> {
        let mut r = KeyRemapper::new();
        let add = |r: KeyRemapper, from: String, to: String| {
            r.add_pattern(from, to).map_err(|e| e.to_string())
        };
        let (expert, names) = match self.format {
            HfFormat::SwitchTransformers => ("experts.expert_${i}.", self.format.expert_names()),
            _ => ("experts.${i}.", self.format.expert_names()),
        };
        for (ours, theirs) in [
            ("w1", Some(names.w_in)),
            ("w3", names.w_up),
            ("w2", Some(names.w_out)),
        ] {
            let Some(theirs) = theirs else { continue };
            r = add(
                r,
                format!(r"\.experts\.(?P<i>\d+)\.{ours}\."),
                format!(".{expert}{theirs}."),
            )?;
            r = add(
                r,
                format!(r"\.shared_expert\.{ours}\."),
                format!(".shared_expert.{theirs}."),
            )?;
        }
        if let Some(shared) = self.format.shared() {
            r = add(r, r"\.shared_expert\.".into(), format!(".{}.", shared.name))?;
        }
        let router = self.format.router_name().trim_end_matches(".weight");
        r = add(r, r"\.gate\.weight$".into(), format!(".{router}.weight"))?;
        r = add(r, r"\.gate\.bias$".into(), format!(".{router}.bias"))?;
        r = add(
            r,
            r"\.e_score_correction_bias$".into(),
            ".gate.e_score_correction_bias".into(),
        )?;
        r = add(r, r"\.fused\.".into(), ".experts.".into())?;
        for (j, (prefix, _)) in self.blocks.iter().enumerate() {
            let to = if prefix.is_empty() {
                String::new()
            } else {
                format!("{}.", prefix.replace('$', "$$"))
            };
            r = add(r, format!(r"^blocks\.{j}\."), to)?;
        }
        Ok(r)
    }

    /// Writes the file, replacing an existing one.
    ///
    /// # Errors
    /// [`Error::Hf`] when a block cannot be represented in this format (names the block) or the
    /// file cannot be written.
    pub fn save(self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if !self.problems.is_empty() {
            return Err(Error::hf(path, self.problems.join("; ")));
        }
        let remapper = self
            .remapper()
            .map_err(|e| Error::hf(path, format!("bad block prefix: {e}")))?;
        let file = HfFile {
            blocks: self.blocks.into_iter().map(|(_, b)| b).collect(),
        };
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .metadata("format", "pt")
            .with_to_adapter(BurnToPyTorchAdapter)
            .remap(remapper);
        file.save_into(&mut store)
            .map_err(|e| Error::hf(path, format!("cannot write: {e}")))
    }
}

/// A format without a selection bias cannot carry a block whose bias is not zero: HF would
/// route differently. Reads the bias to the host (export is a host operation anyway).
fn selection_bias_problem<B: Backend>(
    format: HfFormat,
    block: &SwitchFeedForward<B>,
) -> Option<String> {
    if format.selection_bias_name().is_some() || block.router.expert_bias.is_none() {
        return None;
    }
    let bias = block
        .router
        .expert_bias()
        .into_data()
        .to_vec::<f32>()
        .ok()?;
    bias.iter().any(|b| *b != 0.0).then(|| {
        format!(
            "{format:?} has no selection bias; the block's (expert_bias_rate or selection_bias) \
             is not zero and would be lost (export as DeepseekV3, or train without it)"
        )
    })
}
