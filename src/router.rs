//! The Switch router (Fedus et al. 2021, §2.1 eq. 1 and §2.4 "Selective precision").
//!
//! p(x) = softmax(x·Wᵣ) over the E experts; each token goes to its top-k experts, and the expert
//! outputs are weighted by the router probabilities ("gates"), which is how the router learns.
//! The router runs in float32 whatever the model's float type: the paper's selective precision,
//! which keeps the exponentials of the softmax stable in bf16/f16 models. Multiplicative jitter
//! U[1−ε, 1+ε] on the router input during training explores routing (paper Table 9, §2.4).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, FloatDType, Int, Tensor, backend::Backend};

/// The router: a bias-free linear map d → E evaluated in f32, followed by softmax and top-k.
/// Built by [`SwitchFeedForwardConfig::init_router`](crate::SwitchFeedForwardConfig::init_router).
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// Router weights Wᵣ `[d, E]`, no bias, stored in the model's float type.
    pub gate: Linear<B>,
    /// Experts chosen per token k.
    pub top_k: usize,
    /// Multiplicative input jitter ε (training only).
    pub jitter: f64,
    /// Renormalise the k gates to sum to 1 (k > 1).
    pub normalize_gates: bool,
}

/// The router's decision for a flat batch of T tokens.
///
/// `logits` and `probs` are float32 whatever the model's type; `gates` too (callers cast them to
/// the model dtype when they weight expert outputs).
#[derive(Debug, Clone)]
pub struct Routing<B: Backend> {
    /// Router logits x·Wᵣ `[T, E]`, f32.
    pub logits: Tensor<B, 2>,
    /// Router probabilities softmax(logits) `[T, E]`, f32.
    pub probs: Tensor<B, 2>,
    /// Chosen experts, best first `[T, k]`.
    pub expert_ids: Tensor<B, 2, Int>,
    /// Probabilities of the chosen experts `[T, k]`, f32; renormalised to sum 1 when
    /// `normalize_gates` and k > 1.
    pub gates: Tensor<B, 2>,
}

impl<B: Backend> Router<B> {
    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.gate.weight.shape().dims::<2>()[1]
    }

    /// Routes a flat batch of tokens.
    ///
    /// Training (an autodiff backend) applies the multiplicative jitter; inference does not.
    /// The top-k is k rounds of `argmax` with the chosen experts masked out: it needs no sort
    /// (which reads to the host on most backends) and works for every k ≤ E.
    ///
    /// # Shapes
    /// - x: `[T, d]` in the model's float type
    /// - output: see [`Routing`] (`[T, E]` logits/probs, `[T, k]` ids/gates)
    pub fn forward(&self, x: Tensor<B, 2>) -> Routing<B> {
        let device = x.device();
        let [_, d] = x.dims();
        let [d_w, num_experts] = self.gate.weight.shape().dims::<2>();
        assert_eq!(d, d_w, "Router: input width {d} != router d_model {d_w}");

        let mut x = x.cast(FloatDType::F32); // [T, d] f32
        if self.jitter > 0.0 && B::ad_enabled(&device) {
            let eps = self.jitter;
            x = x.clone() * x.random_like(Distribution::Uniform(1.0 - eps, 1.0 + eps));
        }
        let weight = self.gate.weight.val().cast(FloatDType::F32); // [d, E] f32
        let logits = x.matmul(weight); // [T, E]
        let probs = softmax(logits.clone(), 1); // [T, E]

        let (expert_ids, gates) = top_k(probs.clone(), self.top_k, num_experts);
        let gates = if self.normalize_gates && self.top_k > 1 {
            let sum = gates.clone().sum_dim(1); // [T, 1]
            gates / sum
        } else {
            gates
        };
        Routing {
            logits,
            probs,
            expert_ids,
            gates,
        }
    }
}

/// The k largest probabilities of each row and their experts, best first; ties go to the lower
/// expert index.
///
/// # Shapes
/// - probs: `[T, E]`, values in [0, 1]
/// - output: ids `[T, k]`, gates `[T, k]`
fn top_k<B: Backend>(
    probs: Tensor<B, 2>,
    k: usize,
    num_experts: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let device = probs.device();
    let experts = Tensor::<B, 1, Int>::arange(0..num_experts as i64, &device).unsqueeze::<2>(); // [1, E]
    let mut remaining = probs.clone().detach(); // [T, E]
    let mut ids = Vec::with_capacity(k);
    for round in 0..k {
        let id = remaining.clone().argmax(1); // [T, 1]
        if round + 1 < k {
            // Probabilities are ≥ 0, so −1 removes the chosen expert from later rounds.
            let chosen = id.clone().equal(experts.clone()); // [T, E]
            remaining = remaining.mask_fill(chosen, -1.0);
        }
        ids.push(id);
    }
    let ids = Tensor::cat(ids, 1); // [T, k]
    let gates = probs.gather(1, ids.clone()); // [T, k]
    (ids, gates)
}
