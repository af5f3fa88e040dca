//! Hugging Face interop: the sparse MLP blocks of `SwitchTransformers`, `Mixtral` and `Qwen2-MoE`
//! checkpoints (safetensors) loaded into [`SwitchFeedForward`] blocks, and ours saved under
//! their names, through burn-store 0.21's [`SafetensorsStore`].
//!
//! Hugging Face stores every expert as its own `nn.Linear` weights (`[out, in]`); we stack them
//! into `[E, d, f]` / `[E, f, d]` on import and split them again on export.
//!
//! | format | router | expert i (ours: W₁, W₃, W₂) | shared expert |
//! |---|---|---|---|
//! | [`SwitchTransformers`](HfFormat::SwitchTransformers) | `router.classifier.weight` `[E, d]` | `experts.expert_{i}.wi`, –, `wo` | – |
//! | [`Mixtral`](HfFormat::Mixtral) | `gate.weight` | `experts.{i}.w1`, `w3`, `w2` | – |
//! | [`Qwen2Moe`](HfFormat::Qwen2Moe) | `gate.weight` | `experts.{i}.gate_proj`, `up_proj`, `down_proj` | `shared_expert.{gate,up,down}_proj`, `shared_expert_gate` `[1, d]` |
//!
//! Names are relative to a block prefix such as `model.layers.3.block_sparse_moe` (Mixtral),
//! `model.layers.3.mlp` (Qwen2-MoE) or `encoder.block.1.layer.1.mlp` (SwitchTransformers).
//!
//! **Semantics.** [`HfFormat::config`] builds the config whose forward is HF's in inference:
//! softmax router in f32, then top-k; Switch's top-1 gate is the unnormalised probability;
//! Mixtral renormalises the k gates, Qwen2-MoE does so when `norm_topk_prob` (set
//! `normalize_gates`); Mixtral and Qwen2-MoE never drop tokens (`dropless`). Qwen2-MoE adds
//! σ(x·w_s)·shared_expert(x); one shared expert of width S is n = S / d_ff of ours (the hidden
//! units split into n blocks give the same sum). Switch Transformers' capacity is a fixed
//! `expert_capacity` per sequence where ours is a factor over the flat batch: outputs agree
//! whenever neither drops a token.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! use switch_moe::hf::{HfCheckpoint, HfExport, HfFormat};
//! # fn main() -> switch_moe::Result<()> {
//! let device = Default::default();
//! let config = HfFormat::Mixtral.config(4096, 14336, 8, 2);
//! let mut ckpt = HfCheckpoint::open("model-00001-of-00019.safetensors")?;
//! let block = ckpt.load_block::<NdArray>(&config, "model.layers.0.block_sparse_moe", HfFormat::Mixtral, &device)?;
//! HfExport::new(HfFormat::Mixtral)
//!     .block("model.layers.0.block_sparse_moe", &block)
//!     .save("layer0.safetensors")?;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use burn_store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, ModuleStore, SafetensorsStore,
};

use crate::error::{Error, Result};
use crate::experts::Experts;
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};
use crate::router::RouterScore;

/// Which Hugging Face model family a sparse block's tensors are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfFormat {
    /// `SwitchTransformersSparseMLP`: top-1, ReLU experts `wi`/`wo`, router `router.classifier`.
    SwitchTransformers,
    /// `MixtralSparseMoeBlock`: top-k (2), SwiGLU experts `w1`/`w3`/`w2`, router `gate`.
    Mixtral,
    /// `Qwen2MoeSparseMoeBlock`: top-k, SwiGLU experts `gate_proj`/`up_proj`/`down_proj`, a gated
    /// shared expert.
    Qwen2Moe,
}

/// The HF names of one expert's three (or two) weights.
struct ExpertNames {
    w_in: &'static str,
    w_up: Option<&'static str>,
    w_out: &'static str,
}

impl HfFormat {
    /// A config whose inference forward is this family's: widths, E and k as given; no expert
    /// biases; router without jitter except Switch's 0.01; Mixtral and Qwen2-MoE gated (SwiGLU)
    /// and dropless, Mixtral renormalising the k gates, Qwen2-MoE not (its `norm_topk_prob =
    /// false` default; change with `with_normalize_gates`) and with one gated shared expert of
    /// width `d_ff` (for `shared_expert_intermediate_size` S = n·d_ff, `with_num_shared_experts(n)`).
    ///
    /// # Panics
    /// Never; an invalid width is reported by `validate` / `init`.
    pub fn config(
        &self,
        d_model: usize,
        d_ff: usize,
        num_experts: usize,
        top_k: usize,
    ) -> SwitchFeedForwardConfig {
        let base = SwitchFeedForwardConfig::new(d_model, d_ff, num_experts)
            .with_top_k(top_k)
            .with_bias(false)
            .with_router_score(RouterScore::Softmax);
        match self {
            Self::SwitchTransformers => base.with_jitter(0.01),
            Self::Mixtral => base
                .with_swiglu()
                .with_jitter(0.0)
                .with_expert_dropout(0.0)
                .with_dropless(true)
                .with_normalize_gates(true),
            Self::Qwen2Moe => base
                .with_swiglu()
                .with_jitter(0.0)
                .with_expert_dropout(0.0)
                .with_dropless(true)
                .with_normalize_gates(false)
                .with_num_shared_experts(1)
                .with_shared_gate(true),
        }
    }

    fn router_name(&self) -> &'static str {
        match self {
            Self::SwitchTransformers => "router.classifier.weight",
            Self::Mixtral | Self::Qwen2Moe => "gate.weight",
        }
    }

    fn expert_prefix(&self, i: usize) -> String {
        match self {
            Self::SwitchTransformers => format!("experts.expert_{i}"),
            Self::Mixtral | Self::Qwen2Moe => format!("experts.{i}"),
        }
    }

    fn expert_names(&self) -> ExpertNames {
        match self {
            Self::SwitchTransformers => ExpertNames {
                w_in: "wi",
                w_up: None,
                w_out: "wo",
            },
            Self::Mixtral => ExpertNames {
                w_in: "w1",
                w_up: Some("w3"),
                w_out: "w2",
            },
            Self::Qwen2Moe => ExpertNames {
                w_in: "gate_proj",
                w_up: Some("up_proj"),
                w_out: "down_proj",
            },
        }
    }

    fn gated(&self) -> bool {
        self.expert_names().w_up.is_some()
    }

    fn has_shared(&self) -> bool {
        *self == Self::Qwen2Moe
    }

    /// Why `block` cannot hold this format's sparse block (either direction), if it cannot:
    /// plain vs gated experts, expert biases, sigmoid scores, shared experts in a format
    /// without them, or Qwen2-MoE's shared expert without its gate.
    fn block_problem<B: Backend>(&self, block: &SwitchFeedForward<B>) -> Option<String> {
        let x = &block.experts;
        let gated = x.w_up.is_some();
        if gated != self.gated() {
            Some(format!(
                "{self:?} experts are {}, the block's are {}: build it with HfFormat::{self:?}.config(..)",
                if self.gated() {
                    "gated (SwiGLU)"
                } else {
                    "plain (ReLU)"
                },
                if gated { "gated" } else { "plain" },
            ))
        } else if x.b_in.is_some() || x.b_out.is_some() {
            Some(format!(
                "{self:?} experts have no biases; the block has (set bias = false)"
            ))
        } else if block.router.score != RouterScore::Softmax {
            Some(format!(
                "{self:?} routes by softmax; the block uses sigmoid scores"
            ))
        } else if block.shared.is_some() && !self.has_shared() {
            Some(format!(
                "{self:?} has no shared experts; the block has (num_shared_experts = 0)"
            ))
        } else if block.shared.as_ref().is_some_and(|s| s.gate.is_none()) {
            Some("Qwen2-MoE gates its shared expert: set shared_gate = true".to_string())
        } else {
            None
        }
    }
}

/// `prefix.name`, or `name` for an empty prefix.
fn join(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_end_matches('.');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A safetensors file opened for reading (memory-mapped by burn-store; tensors are read one at
/// a time, so a multi-gigabyte shard costs only the blocks loaded from it).
pub struct HfCheckpoint {
    path: PathBuf,
    store: SafetensorsStore,
    keys: BTreeSet<String>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.keys.len())
            .finish()
    }
}

impl HfCheckpoint {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// [`Error::Hf`] when the file is missing or not a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(Error::hf(&path, "no such file"));
        }
        let mut store = SafetensorsStore::from_file(&path);
        let keys = store
            .keys()
            .map_err(|e| Error::hf(&path, format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect();
        Ok(Self { path, store, keys })
    }

    /// The file's tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// Reads tensor `name` (any float dtype of the file: F32, F16, BF16, F64) into the
    /// backend's default float type.
    ///
    /// # Errors
    /// [`Error::Hf`] naming the tensor when it is missing, not `D`-dimensional or unreadable.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.data(name)?;
        if data.shape.len() != D {
            return Err(Error::hf(
                &self.path,
                format!(
                    "tensor {name}: has shape {:?}, expected {D} dimensions",
                    data.shape
                ),
            ));
        }
        Ok(Tensor::from_data(data, device))
    }

    fn data(&mut self, name: &str) -> Result<TensorData> {
        let path = self.path.clone();
        if !self.keys.contains(name) {
            return Err(Error::hf(
                &path,
                format!("tensor {name} is missing{}", self.hint(name)),
            ));
        }
        let snapshot = self
            .store
            .get_snapshot(name)
            .map_err(|e| Error::hf(&path, format!("tensor {name}: {e}")))?
            .ok_or_else(|| Error::hf(&path, format!("tensor {name} is missing")))?;
        let data = snapshot
            .to_data()
            .map_err(|e| Error::hf(&path, format!("tensor {name}: cannot read: {e}")))?;
        match data.dtype {
            DType::F32 => Ok(data),
            DType::F64 | DType::F16 | DType::BF16 => Ok(data.convert::<f32>()),
            other => Err(Error::hf(
                &path,
                format!("tensor {name}: dtype {other:?}, expected a float type"),
            )),
        }
    }

    /// ", the file has … under …" for a missing name: how many tensors share its block prefix.
    fn hint(&self, name: &str) -> String {
        let parent = name.rsplitn(3, '.').nth(2).unwrap_or("");
        let near: Vec<&String> = self
            .keys
            .iter()
            .filter(|k| !parent.is_empty() && k.starts_with(parent))
            .take(4)
            .collect();
        if near.is_empty() {
            format!(
                " (the file has {} tensors, none under {parent:?}: check the block prefix and \
                 the format)",
                self.keys.len()
            )
        } else {
            format!(" (the file has e.g. {near:?})")
        }
    }

    /// Reads a `[out, in]` weight, checks its shape, and returns it as `[in, out]`.
    fn linear<B: Backend>(
        &mut self,
        name: &str,
        out_in: [usize; 2],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let data = self.data(name)?;
        if data.shape.as_slice() != out_in {
            return Err(Error::hf(
                &self.path,
                format!(
                    "tensor {name}: shape {:?} does not fit the config, which expects {out_in:?} \
                     ([out, in] as nn.Linear stores it)",
                    data.shape
                ),
            ));
        }
        Ok(Tensor::<B, 2>::from_data(data, device).transpose())
    }

    /// The expert indices present under `prefix` in this format.
    fn expert_ids(&self, prefix: &str, format: HfFormat) -> BTreeSet<usize> {
        let head = join(
            prefix,
            match format {
                HfFormat::SwitchTransformers => "experts.expert_",
                _ => "experts.",
            },
        );
        self.keys
            .iter()
            .filter_map(|k| k.strip_prefix(&head))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect()
    }

    /// Builds a block from `config` and loads the sparse block under `prefix` into it (see
    /// [`load_into`](Self::load_into)).
    ///
    /// # Errors
    /// As [`load_into`](Self::load_into); an invalid config is [`Error::Config`].
    pub fn load_block<B: Backend>(
        &mut self,
        config: &SwitchFeedForwardConfig,
        prefix: &str,
        format: HfFormat,
        device: &B::Device,
    ) -> Result<SwitchFeedForward<B>> {
        config.validate()?;
        let mut block = config.init(device);
        self.load_into(&mut block, prefix, format)?;
        Ok(block)
    }

    /// Replaces the router, expert and shared-expert weights of `block` with the tensors under
    /// `prefix`, keeping each parameter's id and dtype (an f16 block stays f16). Routing
    /// settings (k, gate normalisation, capacity) are the block's own: build it with
    /// [`HfFormat::config`].
    ///
    /// # Errors
    /// [`Error::Hf`] naming the tensor when one is missing or its shape does not fit the block,
    /// and naming the setting when the block cannot hold this format: gated vs plain experts,
    /// biases, sigmoid scores, more experts in the file than the block has, or a shared expert
    /// present on one side only. The block is left unchanged on error.
    pub fn load_into<B: Backend>(
        &mut self,
        block: &mut SwitchFeedForward<B>,
        prefix: &str,
        format: HfFormat,
    ) -> Result<()> {
        let device = block.experts.w_in.device();
        let [e, d, f] = block.experts.w_in.shape().dims::<3>();
        self.check_block(block, prefix, format, e)?;

        let router = self.linear::<B>(&join(prefix, format.router_name()), [e, d], &device)?; // [d, E]
        let experts: Vec<String> = (0..e)
            .map(|i| join(prefix, &format.expert_prefix(i)))
            .collect();
        let (w_in, w_up, w_out) = self.stacked::<B>(&experts, format, d, f, &device)?;

        let shared = match &block.shared {
            Some(shared) => {
                let n = shared.experts.num_experts();
                let name = join(prefix, "shared_expert");
                let (s_in, s_up, s_out) = self.stacked::<B>(&[name], format, d, n * f, &device)?;
                // One expert of width n·f → n experts of width f: split the hidden units.
                let s_in = s_in.reshape([d, n, f]).swap_dims(0, 1); // [n, d, f]
                let s_up = s_up.map(|u| u.reshape([d, n, f]).swap_dims(0, 1)); // [n, d, f]
                let s_out = s_out.reshape([n, f, d]); // [n, f, d]
                let gate = match &shared.gate {
                    Some(_) => Some(self.linear::<B>(
                        &join(prefix, "shared_expert_gate.weight"),
                        [1, d],
                        &device,
                    )?), // [d, 1]
                    None => None,
                };
                Some((s_in, s_up, s_out, gate))
            }
            None => None,
        };

        // Every tensor read and checked: only now touch the block.
        replace(&mut block.router.gate.weight, router);
        set_experts(&mut block.experts, w_in, w_up, w_out);
        if let (Some(target), Some((s_in, s_up, s_out, gate))) = (block.shared.as_mut(), shared) {
            set_experts(&mut target.experts, s_in, s_up, s_out);
            if let (Some(g), Some(w)) = (target.gate.as_mut(), gate) {
                replace(&mut g.weight, w);
            }
        }
        Ok(())
    }

    /// Reads the experts named `names[i]` and stacks them: `[n, d, f]`, optional `[n, d, f]`,
    /// `[n, f, d]`; each a single expert when `names` has one entry (the shared expert, `n`=1
    /// with hidden width `f`, returned as `[d, f]`-shaped blocks reshaped by the caller).
    #[allow(clippy::type_complexity)]
    fn stacked<B: Backend>(
        &mut self,
        names: &[String],
        format: HfFormat,
        d: usize,
        f: usize,
        device: &B::Device,
    ) -> Result<(Tensor<B, 3>, Option<Tensor<B, 3>>, Tensor<B, 3>)> {
        let n = format.expert_names();
        let (mut w_in, mut w_up, mut w_out) = (Vec::new(), Vec::new(), Vec::new());
        for expert in names {
            let name = |w: &str| join(expert, &format!("{w}.weight"));
            w_in.push(self.linear::<B>(&name(n.w_in), [f, d], device)?); // [d, f]
            if let Some(up) = n.w_up {
                w_up.push(self.linear::<B>(&name(up), [f, d], device)?); // [d, f]
            }
            w_out.push(self.linear::<B>(&name(n.w_out), [d, f], device)?); // [f, d]
        }
        let w_up = (!w_up.is_empty()).then(|| Tensor::stack(w_up, 0));
        Ok((Tensor::stack(w_in, 0), w_up, Tensor::stack(w_out, 0)))
    }

    fn check_block<B: Backend>(
        &self,
        block: &SwitchFeedForward<B>,
        prefix: &str,
        format: HfFormat,
        e: usize,
    ) -> Result<()> {
        if let Some(problem) = format.block_problem(block) {
            return Err(Error::hf(&self.path, problem));
        }
        let ids = self.expert_ids(prefix, format);
        if let Some(&last) = ids.last()
            && last >= e
        {
            return Err(Error::hf(
                &self.path,
                format!(
                    "tensor {}: the file has experts 0..={last} under {prefix:?}, the block has \
                     num_experts = {e}",
                    join(prefix, &format.expert_prefix(last))
                ),
            ));
        }
        let shared_in_file = self
            .keys
            .contains(&join(prefix, "shared_expert_gate.weight"))
            || self
                .keys
                .iter()
                .any(|k| k.starts_with(&join(prefix, "shared_expert.")));
        match (&block.shared, shared_in_file) {
            (Some(_), false) => Err(Error::hf(
                &self.path,
                format!(
                    "the block has shared experts but the file has no {}",
                    join(prefix, "shared_expert.*")
                ),
            )),
            (None, true) => Err(Error::hf(
                &self.path,
                format!(
                    "tensor {}: the file has a shared expert, the block none (set \
                     num_shared_experts = shared_expert_intermediate_size / d_ff)",
                    join(prefix, "shared_expert")
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Replaces a parameter's value, keeping its id and dtype.
fn replace<B: Backend, const D: usize>(param: &mut Param<Tensor<B, D>>, value: Tensor<B, D>) {
    let dtype = param.val().dtype();
    let mut new = Param::from_tensor(value.cast(dtype));
    new.id = param.id;
    *param = new;
}

fn set_experts<B: Backend>(
    experts: &mut Experts<B>,
    w_in: Tensor<B, 3>,
    w_up: Option<Tensor<B, 3>>,
    w_out: Tensor<B, 3>,
) {
    replace(&mut experts.w_in, w_in);
    replace(&mut experts.w_out, w_out);
    if let (Some(p), Some(w)) = (experts.w_up.as_mut(), w_up) {
        replace(p, w);
    }
}

/// One expert in HF's layout: `w1` (`[d, f]` as burn stores a `Linear`), `w3` if gated, `w2`.
#[derive(Module, Debug)]
struct HfExpert<B: Backend> {
    w1: Linear<B>,
    w3: Option<Linear<B>>,
    w2: Linear<B>,
}

/// One sparse block in HF's layout, saved through burn-store with key remapping.
#[derive(Module, Debug)]
struct HfBlock<B: Backend> {
    gate: Linear<B>,
    experts: Vec<HfExpert<B>>,
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
            .map(|p| format!("{prefix}: {p}"));
        match problem {
            Some(p) => self.problems.push(p),
            None => {
                let hf = HfBlock {
                    gate: linear(block.router.gate.weight.val()),
                    experts: (0..x.num_experts()).map(|i| hf_expert(x, i)).collect(),
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
        r = add(
            r,
            r"\.gate\.weight$".to_string(),
            format!(".{}", self.format.router_name()),
        )?;
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
