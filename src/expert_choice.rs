//! Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing",
//! arXiv 2202.09368, §3.1): instead of each token picking its top-k experts, each expert picks its
//! top-C tokens by router probability, C = ⌈capacity_factor · T / E⌉.
//!
//! Every expert processes exactly C tokens (fewer only when the batch has fewer than C real
//! tokens), so the load is balanced by construction and no auxiliary loss is needed; a token may
//! be taken by 0..E experts, and one taken by none passes through the layer's residual alone.
//! Its output is Σ over the experts e that took it of P[t, e] · expert_e(x_t).
//!
//! **Not causal.** An expert's choice ranks every token of the batch, so whether token t is
//! processed depends on the tokens after it: in a causal language model the layer would leak
//! the future. [`SwitchLm`](crate::SwitchLm) refuses it; use it in bidirectional encoders.
//!
//! The plan, on the device without host reads:
//! 1. score `[E, T]` = the probabilities transposed (by an index `select`), padding at −1;
//! 2. the C best tokens of each expert by `argtopk` (all T when C = T; see
//!    [`top_columns`](crate::dispatch) for the ndarray fallback)                          `[E, C]`
//! 3. a slot is valid when its score is a real probability; its buffer row reads 1 + token;
//! 4. gates = P[token, e] for valid slots, 0 otherwise (differentiable through P)         `[E·C]`
//! 5. combine: the gate-weighted expert outputs are scatter-added (`select_assign`) into their
//!    tokens' rows.

use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, backend::Backend};

use crate::dispatch::{SlotPlan, top_columns};

/// Where every expert's C slots come from, and their gates.
#[derive(Debug, Clone)]
pub struct ExpertChoicePlan<B: Backend> {
    /// Tokens per expert C.
    pub capacity: usize,
    /// Number of experts E.
    pub num_experts: usize,
    /// For each expert-buffer row e·C + c: 1 + the token that fills it, 0 for an empty slot
    /// (only when there are fewer real tokens than C) `[E·C]`.
    pub src_rows: Tensor<B, 1, Int>,
    /// Router probability of each slot's (token, expert) pair, 0 for an empty slot `[E·C]`, f32.
    pub gates: Tensor<B, 1>,
    /// Tokens each expert took `[E]`.
    pub tokens_per_expert: Tensor<B, 1, Int>,
    /// Real tokens that no expert took `[1]`.
    pub num_skipped: Tensor<B, 1, Int>,
    /// Each token's most probable expert `[T]` (padding tokens included).
    pub preferred_expert: Tensor<B, 1, Int>,
    /// Experts that took each token `[T]`, 0..E (0 for padding).
    pub experts_per_token: Tensor<B, 1, Int>,
}

impl<B: Backend> SlotPlan<B> for ExpertChoicePlan<B> {
    fn num_experts(&self) -> usize {
        self.num_experts
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn src_rows(&self) -> Tensor<B, 1, Int> {
        self.src_rows.clone()
    }
}

impl<B: Backend> ExpertChoicePlan<B> {
    /// Lets each of the E experts take its `capacity` most probable tokens.
    ///
    /// # Shapes
    /// - probs: `[T, E]`, f32, router probabilities (rows sum to 1)
    /// - real: `[T]`, true for tokens that may be taken (`None`: all)
    pub fn new(probs: Tensor<B, 2>, real: Option<Tensor<B, 1, Bool>>, capacity: usize) -> Self {
        let device = probs.device();
        let [t, e] = probs.dims();
        let c = capacity.clamp(1, t.max(1));
        // Index of P[t, e] in the flat [T·E] probabilities, laid out expert-major: row e·T + t.
        let flat_index = Tensor::<B, 1, Int>::arange(0..(t * e) as i64, &device)
            .reshape([e, t])
            .remainder_scalar(t as i64)
            .mul_scalar(e as i64)
            + Tensor::<B, 1, Int>::arange(0..e as i64, &device).reshape([e, 1]); // [E, T], t·E + e
        let flat_probs = probs.clone().reshape([t * e]); // [T·E]
        let mut score = flat_probs
            .clone()
            .detach()
            .select(0, flat_index.clone().reshape([e * t]))
            .reshape([e, t]); // [E, T]
        if let Some(real) = &real {
            let padding = real.clone().bool_not().reshape([1, t]).repeat_dim(0, e); // [E, T]
            score = score.mask_fill(padding, -1.0);
        }
        let top = if c < t {
            top_columns(score.clone(), c) // [E, C], token indices
        } else {
            Tensor::<B, 1, Int>::arange(0..t as i64, &device)
                .reshape([1, t])
                .repeat_dim(0, e) // [E, T]: every expert takes every token
        };
        let valid = score.gather(1, top.clone()).greater_elem(-0.5); // [E, C]
        let valid_int = valid.clone().int(); // [E, C]
        let src_rows = ((top.clone() + 1) * valid_int.clone()).reshape([e * c]); // [E·C]
        let pair = flat_index.gather(1, top).reshape([e * c]); // [E·C], t·E + e of each slot
        let gates = flat_probs.select(0, pair) * valid.float().reshape([e * c]); // [E·C]

        let tokens_per_expert = valid_int.clone().sum_dim(1).reshape([e]); // [E]
        let taken = Tensor::<B, 1, Int>::zeros([t + 1], &device)
            .scatter(
                0,
                src_rows.clone(),
                valid_int.reshape([e * c]),
                IndexingUpdateOp::Add,
            )
            .slice(1..t + 1); // [T], experts per token
        let untaken = taken.clone().equal_elem(0).int(); // [T]
        let preferred_expert = probs.detach().argmax(1).reshape([t]); // [T]
        let num_skipped = match real {
            Some(real) => (untaken * real.int()).sum(),
            None => untaken.sum(),
        }; // [1]
        Self {
            capacity: c,
            num_experts: e,
            src_rows,
            gates,
            tokens_per_expert,
            num_skipped,
            preferred_expert,
            experts_per_token: taken,
        }
    }

    /// Sums each token's gate-weighted expert outputs; a token no expert took gets exact zero.
    ///
    /// # Shapes
    /// - expert_out: `[E, C, d]`
    /// - gates: `[E·C]` in the dtype of `expert_out` (this plan's `gates`, cast)
    /// - output: `[T, d]`
    pub fn combine(
        &self,
        expert_out: Tensor<B, 3>,
        gates: Tensor<B, 1>,
        num_tokens: usize,
    ) -> Tensor<B, 2> {
        let [e, c, d] = expert_out.dims();
        let weighted = expert_out.reshape([e * c, d]) * gates.reshape([e * c, 1]); // [E·C, d]
        Tensor::<B, 2>::zeros([num_tokens + 1, d], (&weighted.device(), weighted.dtype()))
            .select_assign(0, self.src_rows.clone(), weighted, IndexingUpdateOp::Add)
            .slice(1..num_tokens + 1) // [T, d]; row 0 collected the empty slots
    }
}
