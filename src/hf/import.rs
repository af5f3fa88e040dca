//! Reading Hugging Face sparse blocks: [`HfCheckpoint`] maps a safetensors file (burn-store) and
//! loads the block under a prefix into a [`SwitchFeedForward`], stacking the experts' `[out, in]`
//! weights into `[E, d, f]` / `[E, f, d]`, shapes checked before anything is replaced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use burn_store::{ModuleStore, SafetensorsStore};

use super::{HfFormat, join};
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
