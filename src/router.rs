//! The Switch router (Fedus et al. 2021, §2.1 eq. 1 and §2.4 "Selective precision").
//!
//! p(x) = softmax(x·Wᵣ) over the E experts; each token goes to its top-k experts, and the expert
//! outputs are weighted by the router probabilities ("gates"), which is how the router learns.
//! The router runs in float32 whatever the model's float type: the paper's selective precision,
//! which keeps the exponentials of the softmax stable in bf16/f16 models. Multiplicative jitter
//! U[1−ε, 1+ε] on the router input during training explores routing (paper Table 9, §2.4).
//!
//! After Switch:
//! - **Sigmoid scores** (DeepSeek-V3, arXiv 2412.19437 §2.1.2): s = σ(x·Wᵣ); top-k on s; the gates
//!   are the chosen s normalised over the k (k > 1); the balance loss and statistics use
//!   s / Σⱼ sⱼ, a distribution over experts like softmax's.
//! - **Auxiliary-loss-free balancing** (Wang et al. 2024, arXiv 2408.15664): a per-expert bias b
//!   is added to the scores for the *selection* only (the gates stay unbiased). After each
//!   training forward, bᵢ += u·sign(mean(c) − cᵢ) with cᵢ the real tokens' assignments to expert
//!   i, then b −= mean(b). b is module state ([`RunningState`]): saved in every record, never
//!   trained. With rate 0 and `selection_bias` it is a frozen bias (an imported
//!   `e_score_correction_bias`).
//! - **Group-limited routing** (DeepSeek-V3 §2.1.2): experts in `n_group` groups; a group's score
//!   is the sum of its two highest selection scores; only the `topk_group` best groups' experts
//!   stay eligible (the others' selection scores become 0, as Hugging Face's implementation
//!   masks them), then the top-k is taken.
//! - **Routed scaling** (DeepSeek-V3): the gates, after normalisation, times a constant.
//! - A **router bias** on the logits (gpt-oss): x·Wᵣ + b.
//!
//! Precision: with `float32` (the default) the input and weights are cast to f32 before the
//! logits, and softmax or sigmoid run in f32; without it they run in the model's float type and
//! only the results are cast to f32.

use burn::config::Config;
use burn::module::{Module, RunningState};

use crate::moe::ForcedRouting;
use crate::replay::RoutingReplay;
use burn::nn::Linear;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{DType, Distribution, FloatDType, Int, Tensor, backend::Backend};

/// How router logits become scores.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum RouterScore {
    /// softmax over the experts (Switch, GShard, Mixtral). The default.
    Softmax,
    /// An independent sigmoid per expert (DeepSeek-V3); the k chosen scores are normalised to
    /// sum 1 when k > 1.
    Sigmoid,
}

/// The router: a linear map d → E (bias-free unless `router_bias`), in f32 unless `router_f32` is
/// off, then softmax or sigmoid scores (`router_score`) and the top-k choice.
/// Built by [`SwitchFeedForwardConfig::init_router`](crate::SwitchFeedForwardConfig::init_router).
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// Router weights Wᵣ `[d, E]`, no bias, stored in the model's float type.
    pub gate: Linear<B>,
    /// Experts chosen per token k.
    pub top_k: usize,
    /// Multiplicative input jitter ε (training only).
    pub jitter: f64,
    /// Renormalise the k gates to sum to 1 (k > 1; sigmoid scores always are).
    pub normalize_gates: bool,
    /// Softmax or sigmoid scores.
    pub score: RouterScore,
    /// Aux-loss-free balancing: the per-expert selection bias b `[E]`, f32, state not parameter
    /// (None when `expert_bias_rate` is 0).
    pub expert_bias: Option<RunningState<Tensor<B, 1>>>,
    /// The bias update rate u (0: no bias).
    pub expert_bias_rate: f64,
    /// Compute logits and scores in f32 (the paper's selective precision; default). `false`
    /// computes them in the model's float type and only then casts them to f32: the paper's
    /// "bfloat16 router" ablation (Table 2), for experiments.
    pub float32: bool,
    /// Expert groups for group-limited selection (1: none).
    pub n_group: usize,
    /// Groups a token may choose from.
    pub topk_group: usize,
    /// Factor on the gates after normalisation (1: none).
    pub scaling: f64,
    /// Renormalise a top-1 gate to 1 as well (with `normalize_gates`).
    pub normalize_top1: bool,
    /// Experts chosen without the router (debug; `Off` normally).
    pub forced: ForcedRouting,
    /// Record or replay the experts this router chooses ([`crate::replay`]).
    pub replay: RoutingReplay,
}

/// The router's decision for a flat batch of T tokens.
///
/// `logits` and `probs` are float32 whatever the model's type; `gates` too (callers cast them to
/// the model dtype when they weight expert outputs).
#[derive(Debug, Clone)]
pub struct Routing<B: Backend> {
    /// Router logits x·Wᵣ `[T, E]`, f32.
    pub logits: Tensor<B, 2>,
    /// Router probabilities `[T, E]`, f32, each row summing to 1: softmax(logits), or for sigmoid
    /// scores s / Σⱼ sⱼ. The balance loss and statistics use these.
    pub probs: Tensor<B, 2>,
    /// Chosen experts, best first `[T, k]`.
    pub expert_ids: Tensor<B, 2, Int>,
    /// Unbiased scores of the chosen experts `[T, k]`, f32 (softmax probabilities, or sigmoid
    /// scores); renormalised to sum to 1 when k > 1 and (`normalize_gates` or sigmoid scores).
    pub gates: Tensor<B, 2>,
}

impl<B: Backend> Router<B> {
    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.gate.weight.shape().dims::<2>()[1]
    }

    /// Logits, raw scores and normalised probabilities of a flat batch of tokens, all f32.
    ///
    /// Training (an autodiff backend) applies the multiplicative jitter; inference does not.
    ///
    /// # Shapes
    /// - x: `[T, d]` in the model's float type
    /// - output: (logits, scores, probs), each `[T, E]`; scores = probs for softmax
    pub fn scores(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
        let device = x.device();
        let [_, d] = x.dims();
        let [d_w, _] = self.gate.weight.shape().dims::<2>();
        assert_eq!(d, d_w, "Router: input width {d} != router d_model {d_w}");

        let mut weight = self.gate.weight.val(); // [d, E]
        let mut x = x;
        if self.float32 {
            x = x.cast(FloatDType::F32); // [T, d] f32
            weight = weight.cast(FloatDType::F32); // [d, E] f32
        }
        if self.jitter > 0.0 && B::ad_enabled(&device) {
            let eps = self.jitter;
            x = x.clone() * crate::noise::uniform_like(&x, 1.0 - eps, 1.0 + eps);
        }
        let mut logits = x.matmul(weight); // [T, E]
        if let Some(bias) = &self.gate.bias {
            let bias = bias.val().cast(FloatDType::from(logits.dtype())); // [E]
            logits = logits + bias.unsqueeze::<2>(); // [T, E] + [1, E]
        }
        let (logits, scores, probs) = match self.score {
            RouterScore::Softmax => {
                let probs = softmax(logits.clone(), 1); // [T, E]
                (logits, probs.clone(), probs)
            }
            RouterScore::Sigmoid => {
                let scores = sigmoid(logits.clone()); // [T, E]
                let probs = scores.clone() / scores.clone().sum_dim(1); // [T, E], rows sum to 1
                (logits, scores, probs)
            }
        };
        // Everything after the router reads f32 (a no-op when computed in f32).
        (
            logits.cast(FloatDType::F32),
            scores.cast(FloatDType::F32),
            probs.cast(FloatDType::F32),
        )
    }

    /// Routes a flat batch of tokens to their top-k experts (token choice).
    ///
    /// The selection ranks score + expert bias (when aux-loss-free balancing is on), limited to
    /// the best expert groups when `n_group` > 1; the gates are the unbiased scores of the
    /// chosen experts, renormalised over the k (with `normalize_gates`, k > 1 or
    /// `normalize_top1`) and scaled by `scaling`. The top-k is k rounds of `argmax` with the
    /// chosen experts masked out: it needs no sort (which reads to the host on most backends)
    /// and works for every k ≤ E. A replaying router ([`crate::replay`]) takes the recorded
    /// experts instead of selecting; a recording one keeps its choice.
    ///
    /// # Shapes
    /// - x: `[T, d]` in the model's float type
    /// - output: see [`Routing`] (`[T, E]` logits/probs, `[T, k]` ids/gates)
    pub fn forward(&self, x: Tensor<B, 2>) -> Routing<B> {
        let (logits, scores, probs) = self.scores(x);
        let [t, num_experts] = scores.dims();
        let device = scores.device();
        let expert_ids = match (self.replay.replayed(&device), self.forced) {
            (Some(ids), _) => ids, // [T, k], recorded by an earlier forward
            (None, ForcedRouting::Off) => {
                let mut selection = scores.clone().detach(); // [T, E]
                if let Some(bias) = &self.expert_bias {
                    // Replicas on several devices share the state: read it onto ours.
                    let bias = bias
                        .value_sync()
                        .to_device(&device)
                        .cast(FloatDType::F32)
                        .reshape([1, num_experts]); // [1, E]
                    selection = selection + bias; // [T, E]
                }
                if self.n_group > 1 {
                    selection = limit_to_groups(selection, self.n_group, self.topk_group); // [T, E]
                }
                top_k_ids(selection, self.top_k, num_experts) // [T, k]
            }
            (None, forced) => forced_ids::<B>(forced, t, self.top_k, num_experts, &device), // [T, k]
        };
        self.replay.record(&expert_ids);
        let gates = scores.gather(1, expert_ids.clone()); // [T, k], unbiased
        let normalize = self.normalize_gates && (self.top_k > 1 || self.normalize_top1);
        let mut gates = if normalize {
            let sum = gates.clone().sum_dim(1); // [T, 1]
            match self.score {
                RouterScore::Softmax => gates / sum,
                // Hugging Face's DeepSeek-V3 adds 1e-20: sigmoid scores may all be tiny.
                RouterScore::Sigmoid => gates / (sum + 1e-20),
            }
        } else {
            gates
        };
        if self.scaling != 1.0 {
            gates = gates.mul_scalar(self.scaling);
        }
        Routing {
            logits,
            probs,
            expert_ids,
            gates,
        }
    }

    /// The aux-loss-free bias update (Wang et al. 2024, Algorithm 1): bᵢ += u·sign(mean(c) − cᵢ),
    /// then b −= mean(b). Does nothing without a bias. The new value is stored in the module's
    /// [`RunningState`] (shared by every clone of this router, and saved in its record).
    ///
    /// Burn's `RunningState` keeps one pending value per thread; readers here use `value_sync`,
    /// which folds the pending values in (their mean, when several threads — devices — updated
    /// since the last read), so a single-device run always selects with the newest bias.
    ///
    /// # Shapes
    /// - counts: `[E]`, the real tokens' assignments per expert (all k choices, before capacity)
    pub fn update_expert_bias(&self, counts: Tensor<B, 1>) {
        let Some(bias) = &self.expert_bias else {
            return;
        };
        let counts = counts.detach().cast(FloatDType::F32); // [E]
        let mean = counts.clone().mean(); // [1]
        let step = (mean - counts).sign().mul_scalar(self.expert_bias_rate); // [E]
        let current = bias.value_sync().to_device(&step.device()).detach();
        let updated = current.cast(FloatDType::F32) + step; // [E]
        let centred = updated.clone() - updated.mean(); // [E]
        bias.update(centred);
    }

    /// The current selection bias `[E]`, f32 (zeros when aux-loss-free balancing is off).
    pub fn expert_bias(&self) -> Tensor<B, 1> {
        match &self.expert_bias {
            Some(bias) => bias
                .value_sync()
                .to_device(&self.gate.weight.device())
                .detach()
                .cast(FloatDType::F32),
            None => {
                let device = self.gate.weight.device();
                Tensor::zeros([self.num_experts()], (&device, DType::F32))
            }
        }
    }
}

/// The experts of the k largest values of each row, best first; ties go to the lower expert
/// index.
///
/// # Shapes
/// - values: `[T, E]` (scores, possibly biased: any finite values)
/// - output: `[T, k]`
fn top_k_ids<B: Backend>(values: Tensor<B, 2>, k: usize, num_experts: usize) -> Tensor<B, 2, Int> {
    let device = values.device();
    let experts = Tensor::<B, 1, Int>::arange(0..num_experts as i64, &device).unsqueeze::<2>(); // [1, E]
    let mut remaining = values; // [T, E]
    let mut ids = Vec::with_capacity(k);
    for round in 0..k {
        let id = remaining.clone().argmax(1); // [T, 1]
        if round + 1 < k {
            // Far below any score or bias: removes the chosen expert from later rounds.
            let chosen = id.clone().equal(experts.clone()); // [T, E]
            remaining = remaining.mask_fill(chosen, -1e30);
        }
        ids.push(id);
    }
    Tensor::cat(ids, 1) // [T, k]
}

/// Group-limited selection scores (DeepSeek-V3): the experts form `groups` equal groups; each
/// group is scored by the sum of its two highest values; the experts outside the `keep` best
/// groups get 0 (as Hugging Face masks them; below every positive score, above none of the
/// negative ones).
///
/// # Shapes
/// - values: `[T, E]`, E a multiple of `groups` with at least 2 experts per group
/// - output: `[T, E]`
fn limit_to_groups<B: Backend>(values: Tensor<B, 2>, groups: usize, keep: usize) -> Tensor<B, 2> {
    let [t, e] = values.dims();
    let per = e / groups;
    let device = values.device();
    let grouped = values.clone().reshape([t, groups, per]); // [T, G, E/G]
    let first = grouped.clone().max_dim(2); // [T, G, 1]
    let at_first = grouped.clone().argmax(2); // [T, G, 1]
    let slots = Tensor::<B, 1, Int>::arange(0..per as i64, &device).reshape([1, 1, per]); // [1, 1, E/G]
    let without_first = grouped.mask_fill(at_first.equal(slots), -1e30); // [T, G, E/G]
    let second = without_first.max_dim(2); // [T, G, 1]
    let group_scores = (first + second).reshape([t, groups]); // [T, G]
    let best = top_k_ids(group_scores, keep, groups); // [T, keep]
    let all_groups = Tensor::<B, 1, Int>::arange(0..groups as i64, &device).reshape([1, 1, groups]); // [1, 1, G]
    let kept = best
        .unsqueeze_dim::<3>(2)
        .equal(all_groups)
        .int()
        .sum_dim(1) // [T, 1, G]: 1 for a kept group
        .reshape([t, groups, 1])
        .repeat_dim(2, per)
        .reshape([t, e]); // [T, E]
    values.mask_fill(kept.equal_elem(0), 0.0)
}

/// Experts chosen without the router: round-robin (token t's j-th choice (t + j) mod E) or
/// uniform random (a random r per token, choices (r + j) mod E, distinct).
///
/// # Shapes
/// - output: `[T, k]`
fn forced_ids<B: Backend>(
    forced: ForcedRouting,
    t: usize,
    k: usize,
    e: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let start = match forced {
        ForcedRouting::Random => {
            Tensor::<B, 1>::random([t], Distribution::Uniform(0.0, e as f64), device)
                .int()
                .clamp(0, e as i64 - 1)
        } // [T]
        _ => Tensor::<B, 1, Int>::arange(0..t as i64, device), // [T]
    };
    let offsets = Tensor::<B, 1, Int>::arange(0..k as i64, device).reshape([1, k]); // [1, k]
    (start.reshape([t, 1]) + offsets).remainder_scalar(e as i64) // [T, k]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::tensor::TensorData;

    fn ids(values: Vec<f32>, t: usize, e: usize, k: usize) -> Vec<i64> {
        let device = Default::default();
        let v = Tensor::<B, 2>::from_data(TensorData::new(values, [t, e]), &device);
        top_k_ids(v, k, e)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap()
    }

    #[test]
    fn top_k_is_best_first_and_ties_go_to_the_lower_expert() {
        // Row 0: a clear order 2 > 0 > 1 > 3. Row 1: experts 1 and 3 tie for first, 0 and 2 for
        // third: the lower index wins each tie.
        let values = vec![0.3, 0.1, 0.5, 0.05, 0.2, 0.4, 0.0, 0.4];
        assert_eq!(ids(values.clone(), 2, 4, 3), vec![2, 0, 1, 1, 3, 0]);
        assert_eq!(ids(values, 2, 4, 1), vec![2, 1]);
        // All equal: experts in index order.
        assert_eq!(ids(vec![0.25; 4], 1, 4, 4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn sigmoid_gates_are_the_chosen_scores_normalised() {
        let device = Default::default();
        let router: Router<B> = crate::SwitchFeedForwardConfig::new(2, 4, 3)
            .with_top_k(2)
            .with_jitter(0.0)
            .with_router_score(RouterScore::Sigmoid)
            .init_router(&device);
        let mut router = router;
        // Identity-like weights: logits = (x0, x1, 0).
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, 0., 0., 0., 1., 0.], [2, 3]),
            &device,
        );
        router.gate.weight = burn::module::Param::from_tensor(w);
        let x = Tensor::<B, 2>::from_data(TensorData::new(vec![2.0f32, -1.0], [1, 2]), &device);
        let routing = router.forward(x);
        // σ(2) = 0.8808, σ(0) = 0.5, σ(−1) = 0.2689: experts 0 then 2; gates 0.8808/1.3808, 0.5/1.3808.
        let gates: Vec<f32> = routing.gates.into_data().to_vec().unwrap();
        let ids: Vec<i64> = routing
            .expert_ids
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(ids, vec![0, 2]);
        let (s2, s0) = (1.0 / (1.0 + (-2.0f64).exp()), 0.5);
        assert!((gates[0] as f64 - s2 / (s2 + s0)).abs() < 1e-6, "{gates:?}");
        assert!((gates[1] as f64 - s0 / (s2 + s0)).abs() < 1e-6, "{gates:?}");
    }
}
