//! Reading Hugging Face sparse blocks: [`HfCheckpoint`] maps a safetensors file (burn-store) and
//! loads the block under a prefix into a [`SwitchFeedForward`], stacking the experts' `[out, in]`
//! weights into `[E, d, f]` / `[E, f, d]` (or splitting gpt-oss's fused, interleaved ones, and
//! dequantising MXFP4), shapes checked before anything is replaced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param, RunningState};
use burn::tensor::{DType, FloatDType, Tensor, TensorData, backend::Backend};
use burn_store::{ModuleStore, SafetensorsStore};

use super::{HfFormat, join, mxfp4};
use crate::error::{Error, Result};
use crate::experts::Experts;
use crate::moe::{SwitchFeedForward, SwitchFeedForwardConfig};

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

    /// Tensor `name` as stored.
    fn raw(&mut self, name: &str) -> Result<TensorData> {
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
        snapshot
            .to_data()
            .map_err(|e| Error::hf(&path, format!("tensor {name}: cannot read: {e}")))
    }

    /// Tensor `name` as f32 (from any float dtype).
    fn data(&mut self, name: &str) -> Result<TensorData> {
        let data = self.raw(name)?;
        match data.dtype {
            DType::F32 => Ok(data),
            DType::F64 | DType::F16 | DType::BF16 => Ok(data.convert::<f32>()),
            other => Err(Error::hf(
                &self.path,
                format!("tensor {name}: dtype {other:?}, expected a float type"),
            )),
        }
    }

    /// U8 tensor `name` (MXFP4 blocks and scales) with the shape `shape`.
    fn bytes(&mut self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let data = self.raw(name)?;
        if data.dtype != DType::U8 {
            return Err(Error::hf(
                &self.path,
                format!("tensor {name}: dtype {:?}, expected U8 (MXFP4)", data.dtype),
            ));
        }
        self.check_shape(name, &data.shape, shape, "")?;
        data.to_vec::<u8>()
            .map_err(|e| Error::hf(&self.path, format!("tensor {name}: cannot read: {e:?}")))
    }

    fn check_shape(&self, name: &str, got: &[usize], want: &[usize], how: &str) -> Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(Error::hf(
                &self.path,
                format!(
                    "tensor {name}: shape {got:?} does not fit the config, which expects \
                     {want:?}{how}"
                ),
            ))
        }
    }

    /// Float tensor `name` with the shape `shape`.
    fn shaped<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.data(name)?;
        self.check_shape(name, &data.shape, &shape, "")?;
        Ok(Tensor::from_data(data, device))
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
        self.check_shape(
            name,
            &data.shape,
            &out_in,
            " ([out, in] as nn.Linear stores it)",
        )?;
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

    /// Replaces the router, expert and shared-expert weights of `block` (and the router bias,
    /// the selection bias and the expert biases of the formats that have them) with the tensors
    /// under `prefix`, keeping each parameter's id and dtype (an f16 block stays f16). Routing
    /// settings (k, gate normalisation, groups, capacity) are the block's own: build it with
    /// [`HfFormat::config`] or [`HfFormat::from_config_json`].
    ///
    /// # Errors
    /// [`Error::Hf`] naming the tensor when one is missing or its shape does not fit the block,
    /// and naming the setting when the block cannot hold this format: gated vs plain experts,
    /// the activation, biases, the router's scores, more experts in the file than the block has,
    /// or a shared expert present on one side only. The block is left unchanged on error.
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
        let router_bias = match format.router_bias_name() {
            Some(name) => Some(self.shaped::<B, 1>(&join(prefix, name), [e], &device)?), // [E]
            None => None,
        };
        let selection_bias = match format.selection_bias_name() {
            Some(name) => Some(self.shaped::<B, 1>(&join(prefix, name), [e], &device)?), // [E]
            None => None,
        };
        let routed = if format.fused() {
            self.fused::<B>(prefix, e, d, f, &device)?
        } else {
            let experts: Vec<String> = (0..e)
                .map(|i| join(prefix, &format.expert_prefix(i)))
                .collect();
            self.stacked::<B>(&experts, format, d, f, &device)?
        };

        let shared = match (&block.shared, format.shared()) {
            (Some(shared), Some(names)) => {
                let n = shared.experts.num_experts();
                let name = join(prefix, names.name);
                let wide = self.stacked::<B>(&[name], format, d, n * f, &device)?;
                // One expert of width n·f → n experts of width f: split the hidden units.
                let split = Loaded {
                    w_in: wide.w_in.reshape([d, n, f]).swap_dims(0, 1), // [n, d, f]
                    w_up: wide.w_up.map(|u| u.reshape([d, n, f]).swap_dims(0, 1)), // [n, d, f]
                    w_out: wide.w_out.reshape([n, f, d]),               // [n, f, d]
                    biases: None,
                };
                let gate = match names.gate {
                    Some(gate) => Some(self.linear::<B>(&join(prefix, gate), [1, d], &device)?), // [d, 1]
                    None => None,
                };
                Some((split, gate))
            }
            _ => None,
        };

        // Every tensor read and checked: only now touch the block.
        replace(&mut block.router.gate.weight, router);
        if let (Some(p), Some(b)) = (block.router.gate.bias.as_mut(), router_bias) {
            replace(p, b);
        }
        if let (Some(state), Some(b)) = (block.router.expert_bias.as_mut(), selection_bias) {
            // A new state (same id): clones of the block made before keep their own bias.
            let id = state.clone().into_record().id;
            *state = RunningState::with_id(id, b.cast(FloatDType::F32));
        }
        set_experts(&mut block.experts, routed);
        if let (Some(target), Some((split, gate))) = (block.shared.as_mut(), shared) {
            set_experts(&mut target.experts, split);
            if let (Some(g), Some(w)) = (target.gate.as_mut(), gate) {
                replace(&mut g.weight, w);
            }
        }
        Ok(())
    }

    /// Reads the experts named `names[i]` and stacks them: `[n, d, f]`, optional `[n, d, f]`,
    /// `[n, f, d]`; each a single expert when `names` has one entry (the shared expert, `n`=1
    /// with hidden width `f`, returned as `[d, f]`-shaped blocks reshaped by the caller).
    fn stacked<B: Backend>(
        &mut self,
        names: &[String],
        format: HfFormat,
        d: usize,
        f: usize,
        device: &B::Device,
    ) -> Result<Loaded<B>> {
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
        Ok(Loaded {
            w_in: Tensor::stack(w_in, 0),
            w_up: (!w_up.is_empty()).then(|| Tensor::stack(w_up, 0)),
            w_out: Tensor::stack(w_out, 0),
            biases: None,
        })
    }

    /// gpt-oss's fused experts: `gate_up_proj` `[E, d, 2f]` (gate = even columns, up = odd),
    /// `down_proj` `[E, f, d]`, dense or MXFP4, and their biases.
    fn fused<B: Backend>(
        &mut self,
        prefix: &str,
        e: usize,
        d: usize,
        f: usize,
        device: &B::Device,
    ) -> Result<Loaded<B>> {
        let gate_up =
            self.dense_or_mxfp4::<B>(prefix, "experts.gate_up_proj", [e, d, 2 * f], device)?; // [E, d, 2f]
        let down = self.dense_or_mxfp4::<B>(prefix, "experts.down_proj", [e, f, d], device)?; // [E, f, d]
        let gate_up_bias = self.shaped::<B, 2>(
            &join(prefix, "experts.gate_up_proj_bias"),
            [e, 2 * f],
            device,
        )?; // [E, 2f]
        let down_bias =
            self.shaped::<B, 2>(&join(prefix, "experts.down_proj_bias"), [e, d], device)?; // [E, d]

        let pairs = gate_up.reshape([e, d, f, 2]); // [E, d, f, (gate, up)]
        let half =
            |w: Tensor<B, 4>, j: usize| w.slice([0..e, 0..d, 0..f, j..j + 1]).reshape([e, d, f]);
        let bias_pairs = gate_up_bias.reshape([e, f, 2]); // [E, f, (gate, up)]
        let bias_half = |b: Tensor<B, 3>, j: usize| b.slice([0..e, 0..f, j..j + 1]).reshape([e, f]);
        Ok(Loaded {
            w_in: half(pairs.clone(), 0),
            w_up: Some(half(pairs, 1)),
            w_out: down,
            biases: Some([
                bias_half(bias_pairs.clone(), 0),
                bias_half(bias_pairs, 1),
                down_bias,
            ]),
        })
    }

    /// gpt-oss's `[E, in, out]` parameter `name`: the dense tensor if the file has it, else its
    /// MXFP4 `name_blocks` `[E, out, in/32, 16]` and `name_scales` `[E, out, in/32]`, dequantised.
    fn dense_or_mxfp4<B: Backend>(
        &mut self,
        prefix: &str,
        name: &str,
        [e, i, o]: [usize; 3],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let dense = join(prefix, name);
        let blocks = format!("{dense}_blocks");
        if self.keys.contains(&dense) || !self.keys.contains(&blocks) {
            return self.shaped::<B, 3>(&dense, [e, i, o], device);
        }
        if i % 32 != 0 {
            return Err(Error::hf(
                &self.path,
                format!(
                    "tensor {blocks}: MXFP4 packs 32 input features per group; the config's \
                     input width {i} is not a multiple of 32"
                ),
            ));
        }
        let g = i / 32;
        let packed = self.bytes(&blocks, &[e, o, g, 16])?;
        let scales = self.bytes(&format!("{dense}_scales"), &[e, o, g])?;
        let values = mxfp4::dequantize(&packed, &scales, e, o, g); // [E, in, out]
        Ok(Tensor::from_data(
            TensorData::new(values, [e, i, o]),
            device,
        ))
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
        if format.selection_bias_name().is_some() && block.router.expert_bias.is_none() {
            return Err(Error::hf(
                &self.path,
                format!(
                    "{format:?} selects experts with a bias (gate.e_score_correction_bias); the \
                     block has none (set selection_bias = true)"
                ),
            ));
        }
        if !format.fused() {
            let ids = self.expert_ids(prefix, format);
            if let Some(&last) = ids.last()
                && last >= e
            {
                return Err(Error::hf(
                    &self.path,
                    format!(
                        "tensor {}: the file has experts 0..={last} under {prefix:?}, the block \
                         has num_experts = {e}",
                        join(prefix, &format.expert_prefix(last))
                    ),
                ));
            }
        }
        let in_file = |name: &str| {
            let head = join(prefix, name);
            self.keys.iter().any(|k| {
                k.strip_prefix(&head)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
        };
        let shared_in_file = match format.shared() {
            Some(names) => in_file(names.name),
            // A file of another family: say so rather than ignore its shared experts.
            None => ["shared_expert", "shared_experts"]
                .into_iter()
                .find(|n| in_file(n))
                .is_some(),
        };
        match (&block.shared, shared_in_file) {
            (Some(_), false) => Err(Error::hf(
                &self.path,
                format!(
                    "the block has shared experts but the file has no {}",
                    join(
                        prefix,
                        &format!("{}.*", format.shared().map_or("shared_expert", |s| s.name))
                    )
                ),
            )),
            (None, true) => Err(Error::hf(
                &self.path,
                match format.shared() {
                    Some(names) => format!(
                        "tensor {}: the file has shared experts, the block none (set \
                         num_shared_experts = their width / d_ff)",
                        join(prefix, names.name)
                    ),
                    None => format!(
                        "the file has shared experts under {prefix:?}, which {format:?} blocks do \
                         not have: is it a Qwen2Moe or DeepseekV3 checkpoint?"
                    ),
                },
            )),
            _ => Ok(()),
        }
    }
}

/// Experts read from a file: W₁ `[n, d, f]`, W₃ `[n, d, f]` if gated, W₂ `[n, f, d]`, and the
/// biases b₁, b₃ `[n, f]`, b₂ `[n, d]` of a format that has them.
struct Loaded<B: Backend> {
    w_in: Tensor<B, 3>,
    w_up: Option<Tensor<B, 3>>,
    w_out: Tensor<B, 3>,
    biases: Option<[Tensor<B, 2>; 3]>,
}

/// Replaces a parameter's value, keeping its id and dtype.
fn replace<B: Backend, const D: usize>(param: &mut Param<Tensor<B, D>>, value: Tensor<B, D>) {
    let dtype = param.val().dtype();
    let mut new = Param::from_tensor(value.cast(dtype));
    new.id = param.id;
    *param = new;
}

fn set_experts<B: Backend>(experts: &mut Experts<B>, loaded: Loaded<B>) {
    replace(&mut experts.w_in, loaded.w_in);
    replace(&mut experts.w_out, loaded.w_out);
    if let (Some(p), Some(w)) = (experts.w_up.as_mut(), loaded.w_up) {
        replace(p, w);
    }
    if let Some([b_in, b_up, b_out]) = loaded.biases {
        for (p, b) in [
            (experts.b_in.as_mut(), b_in),
            (experts.b_up.as_mut(), b_up),
            (experts.b_out.as_mut(), b_out),
        ] {
            if let Some(p) = p {
                replace(p, b);
            }
        }
    }
}
