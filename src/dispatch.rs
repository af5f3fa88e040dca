//! Capacity, slot assignment, dispatch and combine: the token shuffling of a Switch layer without
//! loops over experts or tokens and without host reads (Fedus et al. 2021, §2.2 "Expert capacity").
//!
//! Each expert processes at most C = ⌈capacity_factor · T · k / E⌉ (token, choice) assignments.
//! Assignments claim slots in priority order: every token's first choice before any second choice
//! (as in GShard), and within one choice rank in token order, as in the paper. Assignments past an
//! expert's capacity are *dropped*: they contribute exactly zero and the layer's residual connection
//! carries the token. Padding tokens are never routed, so they neither fill slots nor count.
//!
//! The plan is built from integer tensors on the device:
//! 1. `assign[r, e]` = 1 if assignment r (choice-major: r = j·T + t) goes to expert e    `[k·T, E]`
//! 2. its slot: `cumsum(assign, 0) · assign` summed over e, minus 1                      `[k·T]`
//! 3. kept = routed and slot < C; its row in the expert buffer is e·C + slot, a dropped one
//!    reads a zero row E·C                                                               `[k·T]`
//! 4. the inverse map (which token fills buffer row e·C + c) by a scatter-add into zeros, exact
//!    because kept rows are unique                                                       `[E·C]`
//!
//! Dispatch is then one `select` (gather) of token rows, combine one `select` of expert-output rows
//! weighted by the gates: both differentiable, with the backward a scatter-add.
//!
//! With [`DropPolicy::Probability`] (batch-prioritised routing, Riquelme et al. 2021 "Scaling
//! Vision with Sparse Mixture of Experts" §3.1; Megatron-LM's `probs` drop policy) the slots of an
//! overflowing expert go to its assignments of highest router probability instead: step 2 becomes
//! an `argtopk` of C over each expert's column of assignments (scores of other experts' assignments
//! at −1), and the inverse map is read off its result.

use burn::config::Config;
use burn::tensor::{BasicOps, Bool, IndexingUpdateOp, Int, Tensor, backend::Backend};

/// Which assignments an overflowing expert drops.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum DropPolicy {
    /// Earlier tokens first, every first choice before any second choice (the Switch paper's
    /// order). The default.
    Position,
    /// The assignments of highest router probability first (batch-prioritised routing): a token
    /// the router is unsure about is dropped before a confident one.
    Probability,
}

/// How many slots each expert gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    /// A fixed number of slots C per expert.
    Fixed(usize),
    /// As many slots as the most loaded expert needs: nothing is dropped. Costs one host read.
    Dropless,
}

/// C = ⌈factor · T · k / E⌉, at least 1 and at most T (no expert can be chosen by more than T
/// assignments, since a token picks distinct experts). T counts every position of the batch,
/// padding included: it is known without reading the mask, which keeps the forward free of host reads.
pub fn expert_capacity(num_tokens: usize, top_k: usize, num_experts: usize, factor: f64) -> usize {
    let c = (factor * (num_tokens * top_k) as f64 / num_experts as f64).ceil();
    (c as usize).clamp(1, num_tokens.max(1))
}

/// Where every (token, choice) goes, and which token fills every expert slot.
#[derive(Debug, Clone)]
pub struct DispatchPlan<B: Backend> {
    /// Slots per expert C.
    pub capacity: usize,
    /// Number of experts E.
    pub num_experts: usize,
    /// For each expert-buffer row e·C + c: 1 + the token that fills it, 0 for an empty slot `[E·C]`.
    pub src_rows: Tensor<B, 1, Int>,
    /// For each assignment (choice j, token t): its expert-buffer row e·C + slot, or E·C when it
    /// was dropped or the token is padding `[k, T]`.
    pub combine_rows: Tensor<B, 2, Int>,
    /// Whether assignment (j, t) got a slot `[k, T]`.
    pub kept: Tensor<B, 2, Bool>,
    /// First-choice assignments of real tokens per expert, before capacity `[E]`.
    pub first_choice_counts: Tensor<B, 1, Int>,
    /// All k assignments of real tokens per expert, before capacity `[E]` (what aux-loss-free
    /// balancing counts).
    pub assignment_counts: Tensor<B, 1, Int>,
    /// Real tokens none of whose assignments got a slot: they skip the experts entirely `[1]`.
    pub num_skipped: Tensor<B, 1, Int>,
    /// Each token's first-choice expert, before capacity `[T]` (padding tokens included).
    pub first_choice: Tensor<B, 1, Int>,
    /// Assignments of each token that got a slot `[T]`: 0 for a skipped or padding token.
    pub kept_per_token: Tensor<B, 1, Int>,
    /// Assignments of real tokens, k per token `[1]`.
    pub num_routed: Tensor<B, 1, Int>,
    /// Assignments that got a slot `[1]`.
    pub num_kept: Tensor<B, 1, Int>,
}

impl<B: Backend> DispatchPlan<B> {
    /// Plans the dispatch of T tokens with k choices each, slots claimed in position order
    /// ([`DropPolicy::Position`]).
    ///
    /// # Shapes
    /// - expert_ids: `[T, k]`, values in 0..E, best choice first
    /// - real: `[T]`, true for tokens to route (`None`: all)
    pub fn new(
        expert_ids: Tensor<B, 2, Int>,
        real: Option<Tensor<B, 1, Bool>>,
        num_experts: usize,
        capacity: Capacity,
    ) -> Self {
        let [t, k] = expert_ids.dims();
        let e = num_experts;
        let device = expert_ids.device();
        let Assignments {
            ids,
            assign,
            routed,
            capacity,
        } = assignments(expert_ids, real, e, capacity);

        // Slot of each assignment within its expert: how many assignments of the same expert come
        // before it in priority order.
        let slot = (assign.clone().cumsum(0) * assign.clone())
            .sum_dim(1)
            .reshape([k * t])
            - 1; // [k·T]
        let kept = slot.clone().lower_elem(capacity as i64).int() * routed.clone(); // [k·T], 0/1
        let dropped_or_pad = kept.clone().equal_elem(0); // [k·T]
        let empty_row = (e * capacity) as i64;
        let rows = (ids * capacity as i64 + slot).mask_fill(dropped_or_pad, empty_row); // [k·T]

        // Inverse map: buffer row -> 1 + token. Kept rows are unique, so the add is an assignment;
        // dropped and padding assignments all land in the spare last row, which is cut off.
        let tokens = Tensor::<B, 1, Int>::arange(1..t as i64 + 1, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, k)
            .reshape([k * t]); // [k·T], 1 + t
        let src_rows = Tensor::<B, 1, Int>::zeros([e * capacity + 1], &device)
            .scatter(0, rows.clone(), tokens, IndexingUpdateOp::Add)
            .slice(0..e * capacity); // [E·C]

        Self::assemble(assign, routed, kept, rows, src_rows, capacity, [k, t, e])
    }

    /// Plans the dispatch with slots claimed by priority ([`DropPolicy::Probability`]): when an
    /// expert overflows, its assignments of lowest `priority` (the router probability) are
    /// dropped. Assignments of equal priority are kept in an order the backend's `argtopk`
    /// chooses.
    ///
    /// # Shapes
    /// - expert_ids: `[T, k]`, values in 0..E
    /// - priority: `[T, k]`, in [0, 1] (the router gates)
    /// - real: `[T]`, true for tokens to route (`None`: all)
    pub fn by_priority(
        expert_ids: Tensor<B, 2, Int>,
        priority: Tensor<B, 2>,
        real: Option<Tensor<B, 1, Bool>>,
        num_experts: usize,
        capacity: Capacity,
    ) -> Self {
        let [t, k] = expert_ids.dims();
        let e = num_experts;
        let device = expert_ids.device();
        let Assignments {
            assign,
            routed,
            capacity,
            ..
        } = assignments(expert_ids.clone(), real.clone(), e, capacity);
        if capacity >= k * t {
            // No expert can overflow (argtopk also needs C < k·T): every order keeps everything.
            return Self::new(expert_ids, real, e, Capacity::Fixed(capacity));
        }
        // score[e, r]: assignment r's priority if it goes to expert e, else −1.
        let p = choice_major(priority.detach()).reshape([1, k * t]); // [1, k·T]
        let mine = assign.clone().transpose().equal_elem(1); // [E, k·T]
        let score = p.repeat_dim(0, e).mask_fill(mine.bool_not(), -1.0); // [E, k·T]
        let top = top_columns(score.clone(), capacity); // [E, C], assignment indices
        let valid = score.gather(1, top.clone()).greater_elem(-0.5).int(); // [E, C], 1 = a real assignment
        let top = top.reshape([e * capacity]); // [E·C]
        let valid = valid.reshape([e * capacity]); // [E·C]

        // Buffer row -> 1 + token (0: empty slot); token of assignment r is r mod T.
        let src_rows = (top.clone().remainder_scalar(t as i64) + 1) * valid.clone(); // [E·C]
        // Assignment -> 1 + buffer row, by a scatter of the (unique) kept rows; others stay 0.
        let target = top.mask_fill(valid.clone().equal_elem(0), (k * t) as i64); // [E·C]
        let buffer_rows = Tensor::<B, 1, Int>::arange(1..(e * capacity) as i64 + 1, &device); // [E·C]
        let row_plus_one = Tensor::<B, 1, Int>::zeros([k * t + 1], &device)
            .scatter(0, target, buffer_rows, IndexingUpdateOp::Add)
            .slice(0..k * t); // [k·T]
        let kept = row_plus_one.clone().greater_elem(0).int(); // [k·T], 0/1
        let empty_row = (e * capacity) as i64;
        let rows = (row_plus_one - 1).mask_fill(kept.clone().equal_elem(0), empty_row); // [k·T]
        Self::assemble(assign, routed, kept, rows, src_rows, capacity, [k, t, e])
    }

    /// The plan's fields from the per-assignment results.
    ///
    /// # Shapes
    /// - assign `[k·T, E]`, routed `[k·T]`, kept `[k·T]` (0/1), rows `[k·T]`, src_rows `[E·C]`
    fn assemble(
        assign: Tensor<B, 2, Int>,
        routed: Tensor<B, 1, Int>,
        kept: Tensor<B, 1, Int>,
        rows: Tensor<B, 1, Int>,
        src_rows: Tensor<B, 1, Int>,
        capacity: usize,
        [k, t, e]: [usize; 3],
    ) -> Self {
        let first_choice_counts = assign.clone().slice(0..t).sum_dim(0).reshape([e]); // [E]
        // A fresh tensor, not a view of the router's ids (burn-tch aliasing, see choice_major).
        let first_choice = assign.clone().slice(0..t).argmax(1).reshape([t]); // [T]
        let assignment_counts = assign.sum_dim(0).reshape([e]); // [E]
        // A real token is skipped when none of its k assignments was kept.
        let kept_per_token = kept.clone().reshape([k, t]).sum_dim(0).reshape([t]); // [T]
        let real_token = routed.clone().slice(0..t); // [T], 1 real / 0 padding
        let num_skipped = (real_token * kept_per_token.clone().equal_elem(0).int()).sum(); // [1]
        Self {
            capacity,
            num_experts: e,
            src_rows,
            combine_rows: rows.reshape([k, t]),
            kept: kept.clone().equal_elem(1).reshape([k, t]),
            first_choice_counts,
            assignment_counts,
            num_skipped,
            first_choice,
            kept_per_token,
            num_routed: routed.sum(),
            num_kept: kept.sum(),
        }
    }

    /// Weights each kept assignment's expert output by its gate and sums a token's k choices.
    /// A dropped assignment or a padding token contributes exactly zero.
    ///
    /// # Shapes
    /// - expert_out: `[E, C, d]`
    /// - gates: `[T, k]`, in the dtype of `expert_out`
    /// - output: `[T, d]`
    pub fn combine(&self, expert_out: Tensor<B, 3>, gates: Tensor<B, 2>) -> Tensor<B, 2> {
        let [e, c, d] = expert_out.dims();
        let [k, t] = self.combine_rows.dims();
        let zero = Tensor::<B, 2>::zeros([1, d], (&expert_out.device(), expert_out.dtype()));
        let rows = Tensor::cat(vec![expert_out.reshape([e * c, d]), zero], 0); // [E·C + 1, d]
        let picked = rows.select(0, self.combine_rows.clone().reshape([k * t])); // [k·T, d]
        let weighted = picked * choice_major(gates).unsqueeze_dim::<2>(1); // [k·T, d]
        if k == 1 {
            weighted
        } else {
            weighted.reshape([k, t, d]).sum_dim(0).reshape([t, d])
        }
    }
}

/// What a routing plan says of the expert buffer `[E, C, d]`: which token fills each slot. Both
/// plans — token choice ([`DispatchPlan`]) and expert choice
/// ([`ExpertChoicePlan`](crate::ExpertChoicePlan)) — fill it the same way, by
/// [`dispatch`](Self::dispatch).
pub trait SlotPlan<B: Backend> {
    /// Experts E.
    fn num_experts(&self) -> usize;
    /// Slots per expert C.
    fn capacity(&self) -> usize;
    /// For each buffer row e·C + c: 1 + the token that fills it, 0 for an empty slot `[E·C]`.
    fn src_rows(&self) -> Tensor<B, 1, Int>;

    /// Gathers each expert's tokens into its C slots; empty slots hold zeros.
    ///
    /// # Shapes
    /// - x: `[T, d]`
    /// - output: `[E, C, d]`
    fn dispatch(&self, x: Tensor<B, 2>) -> Tensor<B, 3> {
        let [_, d] = x.dims();
        let zero = Tensor::<B, 2>::zeros([1, d], (&x.device(), x.dtype())); // [1, d]
        Tensor::cat(vec![zero, x], 0) // [1 + T, d]; row 0 serves empty slots
            .select(0, self.src_rows()) // [E·C, d]
            .reshape([self.num_experts(), self.capacity(), d])
    }
}

impl<B: Backend> SlotPlan<B> for DispatchPlan<B> {
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

/// The column indices of the `c` largest values of each row, for `c` < the number of columns.
///
/// `argtopk` where the backend has it (LibTorch, CubeCL, Fusion); burn-ndarray 0.21 leaves
/// `float_argtopk` unimplemented, so there a full `argsort_descending` (which Burn runs on the host —
/// where ndarray's data already is) is cut to its first `c` columns. Ties: the backend's order.
///
/// # Shapes
/// - values: `[R, N]`
/// - output: `[R, c]`
pub(crate) fn top_columns<B: Backend>(values: Tensor<B, 2>, c: usize) -> Tensor<B, 2, Int> {
    let [rows, _] = values.dims();
    if crate::backend_caps::is_ndarray::<B>() {
        values.argsort_descending(1).slice([0..rows, 0..c]) // [R, c]
    } else {
        values.argtopk(c, 1) // [R, c]
    }
}

/// The assignments of T tokens with k choices, in choice-major order, and the capacity.
struct Assignments<B: Backend> {
    /// Expert of each assignment `[k·T]`.
    ids: Tensor<B, 1, Int>,
    /// 1 where assignment r goes to expert e and its token is real `[k·T, E]`.
    assign: Tensor<B, 2, Int>,
    /// 1 for a real token's assignment, 0 for padding `[k·T]`.
    routed: Tensor<B, 1, Int>,
    /// Slots per expert C.
    capacity: usize,
}

/// Builds the [`Assignments`] of `expert_ids` `[T, k]` (`real`: `[T]`).
fn assignments<B: Backend>(
    expert_ids: Tensor<B, 2, Int>,
    real: Option<Tensor<B, 1, Bool>>,
    e: usize,
    capacity: Capacity,
) -> Assignments<B> {
    let device = expert_ids.device();
    let [t, k] = expert_ids.dims();
    let ids = choice_major(expert_ids); // [k·T]
    let experts = Tensor::<B, 1, Int>::arange(0..e as i64, &device).unsqueeze::<2>(); // [1, E]
    let mut assign = ids.clone().unsqueeze_dim::<2>(1).equal(experts).int(); // [k·T, E]
    if let Some(real) = real {
        let real = real
            .int()
            .unsqueeze::<2>()
            .repeat_dim(0, k)
            .reshape([k * t, 1]); // [k·T, 1]
        assign = assign * real;
    }
    let routed = assign.clone().sum_dim(1).reshape([k * t]); // [k·T], 1 real / 0 padding
    let capacity = match capacity {
        Capacity::Fixed(c) => c,
        Capacity::Dropless => {
            // HOST SYNC: dropless routing sizes the expert buffer by the largest load, a value
            // only the data knows; one scalar is read per forward.
            let load = assign.clone().sum_dim(0).max().into_scalar(); // most assignments to one expert
            let load: i64 = burn::tensor::ElementConversion::elem(load);
            (load.max(1) as usize).min(t.max(1))
        }
    };
    Assignments {
        ids,
        assign,
        routed,
        capacity,
    }
}

/// Flattens `[T, k]` to `[k·T]` in choice-major order: all first choices in token order, then all
/// second choices, and so on (row j·T + t holds `x[t, j]`).
///
/// Built from column slices, not `swap_dims(0, 1)`: burn-tch 0.21's `swap_dims` returns a view of
/// `x`'s memory under a fresh storage handle, so an in-place op on the result wrote through to `x`
/// (tracel-ai/burn#5375, fixed after 0.21). With k = 1 that overwrote the router's expert ids,
/// which autodiff keeps for the backward of the gate gather. Slices keep the storage shared.
///
/// # Shapes
/// - x: `[T, k]`
/// - output: `[k·T]`
fn choice_major<B: Backend, K: BasicOps<B>>(x: Tensor<B, 2, K>) -> Tensor<B, 1, K> {
    let [t, k] = x.dims();
    let columns = (0..k)
        .map(|j| x.clone().slice([0..t, j..j + 1]).reshape([t]))
        .collect(); // k × [T]
    Tensor::cat(columns, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::tensor::TensorData;

    fn ints<const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().to_vec().unwrap()
    }

    #[test]
    fn slots_follow_priority_order_by_hand() {
        let device = Default::default();
        // T = 4 tokens, k = 2, E = 3, C = 2. First choices 0, 0, 1, 0; second 1, 2, 0, 1.
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![0i64, 1, 0, 2, 1, 0, 0, 1], [4, 2]),
            &device,
        );
        let plan = DispatchPlan::new(ids, None, 3, Capacity::Fixed(2));
        // First choices claim first: expert 0 gets tokens 0, 1 (token 3 dropped), expert 1
        // token 2. Second choices: expert 1 gets token 0 (slot 1), token 3's is dropped (full),
        // expert 2 gets token 1, expert 0 is full for token 2.
        // Rows e·C + slot, 6 = dropped.
        assert_eq!(
            ints(plan.combine_rows.clone()),
            vec![0, 1, 2, 6, 3, 4, 6, 6]
        );
        // Row -> 1 + token: expert 0 [t0, t1], expert 1 [t2, t0], expert 2 [t1, empty].
        assert_eq!(ints(plan.src_rows.clone()), vec![1, 2, 3, 1, 2, 0]);
        assert_eq!(ints(plan.first_choice_counts.clone()), vec![3, 1, 0]);
        assert_eq!(ints(plan.num_routed.clone()), vec![8]);
        assert_eq!(ints(plan.num_kept.clone()), vec![5]);
    }

    #[test]
    fn planning_leaves_the_expert_ids_untouched() {
        // Regression test for burn-tch 0.21 (see `choice_major`): the caller's ids, which autodiff
        // keeps for the gate gather's backward, must survive the row arithmetic of the plan.
        let device = Default::default();
        for (ids, k) in [(vec![2i64, 0, 1, 2, 0], 1), (vec![1i64, 2], 2)] {
            let t = ids.len() / k;
            let tensor =
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [t, k]), &device);
            let plan = DispatchPlan::new(tensor.clone(), None, 3, Capacity::Fixed(4));
            assert_eq!(ints(plan.combine_rows), {
                // Choice-major rows e·C + slot, C = 4.
                let mut seen = [0i64; 3];
                let mut rows = vec![0i64; t * k];
                for j in 0..k {
                    for tok in 0..t {
                        let e = ids[tok * k + j];
                        rows[j * t + tok] = e * 4 + seen[e as usize];
                        seen[e as usize] += 1;
                    }
                }
                rows
            });
            assert_eq!(ints(tensor), ids, "k = {k}: the plan changed its input");
        }
    }
}
