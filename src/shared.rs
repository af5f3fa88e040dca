//! Shared experts (DeepSeekMoE, Dai et al. 2024, arXiv 2401.06066 §3.2; Qwen2-MoE): n always-on
//! expert FFNs that every real token passes through, added to the routed experts' output. They
//! hold the knowledge every token needs, so the routed experts can specialise. Qwen2-MoE scales
//! their sum by a learned gate σ(x·w_s), w_s a d → 1 linear map.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Tensor, backend::Backend};

use crate::experts::Experts;

/// n shared expert FFNs (stacked like the routed ones) and their optional gate.
#[derive(Module, Debug)]
pub struct SharedExperts<B: Backend> {
    /// The n FFNs, weights `[n, d, f]` / `[n, f, d]`.
    pub experts: Experts<B>,
    /// The gate w_s `[d, 1]`, no bias (Qwen2-MoE's `shared_expert_gate`), if enabled.
    pub gate: Option<Linear<B>>,
}

impl<B: Backend> SharedExperts<B> {
    /// Σᵢ FFNᵢ(x), scaled by σ(x·w_s) when gated; rows of padding tokens are exactly zero.
    ///
    /// # Shapes
    /// - x: `[T, d]`
    /// - real: `[T, 1]`, 1 for real tokens, 0 for padding, in x's dtype (`None`: all real)
    /// - output: `[T, d]`
    pub fn forward(&self, x: Tensor<B, 2>, real: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let [t, d] = x.dims();
        let n = self.experts.num_experts();
        let input = x.clone().unsqueeze_dim::<3>(0).repeat_dim(0, n); // [n, T, d]
        let mut y = self.experts.forward(input).sum_dim(0).reshape([t, d]); // [T, d]
        if let Some(gate) = &self.gate {
            y = y * sigmoid(gate.forward(x)); // [T, d] · [T, 1]
        }
        match real {
            Some(real) => y * real, // [T, d] · [T, 1]
            None => y,
        }
    }
}
