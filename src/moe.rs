//! The Switch feed-forward block (Fedus et al. 2021, §2.1–2.2, Fig. 2): flatten the tokens, route
//! each to its top-k experts, dispatch within capacity, run all experts as batched matmuls, and
//! combine their outputs weighted by the router gates.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param, RunningState};
use burn::nn::activation::ActivationConfig;
use burn::nn::{DropoutConfig, Linear, SwiGluConfig};
use burn::tensor::{Bool, DType, FloatDType, Tensor, backend::Backend};

use crate::balance::GlobalBalance;
use crate::dispatch::{Capacity, DispatchPlan, DropPolicy, SlotPlan, expert_capacity};
use crate::error::{Error, check};
use crate::expert_choice::ExpertChoicePlan;
use crate::experts::{ExpertActivation, Experts};
use crate::init::truncated_normal;
use crate::replay::RoutingReplay;
use crate::router::{Router, RouterScore};
use crate::shared::SharedExperts;
use crate::stats::{BalanceTokens, MoeStats, RoutingCounts};

/// Configuration of a [`SwitchFeedForward`] block: **every** MoE setting of the crate, declared,
/// documented and validated here once. The layer and encoder configs hold one of these
/// ([`SwitchEncoderLayerConfig::moe`](crate::SwitchEncoderLayerConfig::moe)); the router and the
/// experts are built from it ([`init_router`](Self::init_router), [`init_experts`](Self::init_experts)).
#[derive(Config, Debug)]
pub struct SwitchFeedForwardConfig {
    /// Model width d.
    pub d_model: usize,
    /// Hidden width f of each expert.
    pub d_ff: usize,
    /// Number of experts E.
    pub num_experts: usize,
    /// Experts per token k. Default 1: Switch routing (paper §2.1); 2 is GShard-style top-2.
    #[config(default = 1)]
    pub top_k: usize,
    /// Capacity factor in training: C = ⌈factor · T · k / E⌉. Default 1.25 (paper Table 1).
    #[config(default = 1.25)]
    pub capacity_factor: f64,
    /// Capacity factor in inference. Default 2.0 (paper §2.2 uses a higher factor at eval).
    #[config(default = 2.0)]
    pub eval_capacity_factor: f64,
    /// Size each expert's buffer by the largest load, so no token is dropped. Reads one scalar
    /// from the device per forward. Default false.
    #[config(default = false)]
    pub dropless: bool,
    /// Multiplicative router-input jitter ε: the router input is multiplied by U[1−ε, 1+ε] in
    /// training only. Default 0.01 (paper §2.4, Table 9: input jitter was the best noise).
    #[config(default = 0.01)]
    pub jitter: f64,
    /// Expert activation: `Relu` (default, T5/Switch), `Gelu`, or `SwiGlu` for gated experts
    /// (SiLU(x·W₁) ⊙ x·W₃)·W₂ as in Mixtral and Qwen2-MoE (its `SwiGluConfig` must read
    /// `d_input = d_model`, `d_output = d_ff`, no bias; [`with_swiglu`](Self::with_swiglu) sets
    /// it). No other is accepted. In a [`SwitchEncoder`](crate::SwitchEncoder) the dense layers
    /// use it too, so an encoder takes Relu or Gelu only.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Expert biases b₁, b₂. Default false, as in T5/Switch.
    #[config(default = false)]
    pub bias: bool,
    /// Expert dropout on the experts' hidden activations, training only. Default 0.1 (paper
    /// Table 4; 0.4 is the paper's choice for fine-tuning).
    #[config(default = 0.1)]
    pub expert_dropout: f64,
    /// Initialisation scale s of router and experts: truncated normal with std √(s / fan_in).
    /// Default 0.1 (paper §2.4).
    #[config(default = 0.1)]
    pub init_scale: f64,
    /// For top-k > 1: renormalise a token's k gates to sum 1. Default true. (Sigmoid scores are
    /// always renormalised.)
    #[config(default = true)]
    pub normalize_gates: bool,
    /// Router scores: `Softmax` (default, Switch) or `Sigmoid` (DeepSeek-V3; see
    /// [`crate::router`]).
    #[config(default = "RouterScore::Softmax")]
    pub router_score: RouterScore,
    /// Auxiliary-loss-free balancing rate u (Wang et al. 2024, arXiv 2408.15664): a per-expert
    /// bias added to the scores for selection only, updated by ±u after every training forward
    /// toward balance. Default 0 (off); 1e-3 is the paper's choice. Token choice only.
    #[config(default = 0.0)]
    pub expert_bias_rate: f64,
    /// `TokenChoice` (default: each token picks its top-k experts) or `ExpertChoice` (each
    /// expert picks its top-C tokens; balanced by construction, **not causal**: see
    /// [`crate::expert_choice`]).
    #[config(default = "RoutingMode::TokenChoice")]
    pub routing: RoutingMode,
    /// Always-on shared expert FFNs of width `d_ff`, added to the routed output (DeepSeekMoE,
    /// Qwen2-MoE). Default 0.
    #[config(default = 0)]
    pub num_shared_experts: usize,
    /// Scale the shared experts' output by σ(x·w_s), w_s a d → 1 linear map (Qwen2-MoE).
    /// Default false. Needs `num_shared_experts` ≥ 1.
    #[config(default = false)]
    pub shared_gate: bool,
    /// Which assignments an overflowing expert drops: `Position` (default, the paper's token
    /// order) or `Probability` (batch-prioritised: lowest router probability first).
    #[config(default = "DropPolicy::Position")]
    pub drop_policy: DropPolicy,
    /// Router logits and softmax in float32 whatever the model's float type (default true: the
    /// paper's selective precision, §2.4). `false` computes them in the model's type, the
    /// paper's Table 2 ablation; only differs on f16/bf16 backends.
    #[config(default = true)]
    pub router_f32: bool,
    /// Over which tokens the load-balancing loss takes its fractions fᵢ and Pᵢ: `Batch` (the
    /// forward call's tokens, the Switch paper's and the default), `Sequence` (each sequence
    /// apart, the losses averaged: DeepSeek-V3's complementary sequence-wise loss) or `Global`
    /// (fᵢ over every token of the optimiser step, across the devices of a data-parallel run:
    /// Megatron-Core's `global_aux_loss`; see [`crate::balance`]). Padding is excluded in each.
    /// Token choice only.
    #[config(default = "BalanceScope::Batch")]
    pub balance_scope: BalanceScope,
    /// A bias on the router logits, x·Wᵣ + b (gpt-oss). Default false (Switch has none).
    #[config(default = false)]
    pub router_bias: bool,
    /// Group-limited routing (DeepSeek-V3, §2.1.2): the experts form `n_group` equal groups, a
    /// group is scored by the sum of its two highest selection scores, and only the best
    /// `topk_group` groups' experts may be chosen. Default 1 (no groups). E must be a multiple.
    #[config(default = 1)]
    pub n_group: usize,
    /// How many of the `n_group` groups a token may choose from. Default 1 (with one group: all).
    #[config(default = 1)]
    pub topk_group: usize,
    /// The gates are multiplied by this after normalisation (DeepSeek-V3's
    /// `routed_scaling_factor`, 2.5 there). Default 1.0.
    #[config(default = 1.0)]
    pub routed_scaling_factor: f64,
    /// Renormalise a top-1 gate too (it becomes exactly 1; with `normalize_gates`): upcycling's
    /// exact start, where the MoE equals the dense FFN it was made from. Default false (Switch's
    /// top-1 gate is the router probability, how the router learns).
    #[config(default = false)]
    pub normalize_top1: bool,
    /// Keep a per-expert selection bias even when `expert_bias_rate` is 0: a frozen bias, as an
    /// imported DeepSeek-V3 checkpoint's `e_score_correction_bias`. Default false.
    #[config(default = false)]
    pub selection_bias: bool,
    /// Debug: choose experts without the router, to measure speed without its imbalance —
    /// `RoundRobin` (token t's j-th choice is expert (t + j) mod E), `Random` (uniform), or `Off`
    /// (the default). The gates are the router's scores of those experts; the balance losses are
    /// zero (Megatron's `moe_router_force_load_balancing`, torchtitan's `_debug_force_load_balance`).
    #[config(default = "ForcedRouting::Off")]
    pub forced_routing: ForcedRouting,
    /// Gated experts only: gpt-oss's clamped SwiGLU instead of SiLU's
    /// ([`ExpertActivation::ClampedSwiGlu`]). Default `None` (Mixtral's, Qwen's SwiGLU).
    #[config(default = "None")]
    pub glu_clamp: Option<GluClamp>,
}

/// gpt-oss's clamped SwiGLU constants ([`SwitchFeedForwardConfig::glu_clamp`]).
#[derive(Config, Debug, PartialEq)]
pub struct GluClamp {
    /// α inside the sigmoid (gpt-oss: 1.702).
    #[config(default = 1.702)]
    pub alpha: f64,
    /// The clamp of the gate (above) and the up projection (both sides) (gpt-oss: 7).
    #[config(default = 7.0)]
    pub limit: f64,
}

/// Over which tokens the load-balancing loss's fractions are taken
/// ([`SwitchFeedForwardConfig::balance_scope`]).
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum BalanceScope {
    /// The forward call's tokens (micro-batch): every batch is asked to be balanced.
    Batch,
    /// Each sequence apart, the losses averaged over the sequences (DeepSeek-V3).
    Sequence,
    /// Every token of the optimiser step, across data-parallel devices (Megatron-Core).
    Global,
}

/// Experts chosen without the router, for speed measurements
/// ([`SwitchFeedForwardConfig::forced_routing`]).
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum ForcedRouting {
    /// The router chooses (the default).
    Off,
    /// Token t's j-th choice is expert (t + j) mod E: exactly balanced.
    RoundRobin,
    /// Uniform random experts (distinct for one token when k > 1 only by chance).
    Random,
}

/// Who chooses: tokens their experts, or experts their tokens.
#[derive(Config, Debug, PartialEq, Eq)]
pub enum RoutingMode {
    /// Each token picks its top-k experts within capacity (Switch, GShard). The default.
    TokenChoice,
    /// Each expert picks its top-C tokens by router probability (Zhou et al. 2022). Perfectly
    /// balanced; a token may get 0..E experts; sees the whole batch, so it is not causal.
    ExpertChoice,
}

/// A Switch (mixture-of-experts) feed-forward block: router → dispatch → experts → combine.
///
/// It takes the place of burn-nn's `PositionWiseFeedForward` in a Transformer layer, but it is not
/// a drop-in: its input is 3-D (`[B, S, d]`), it takes an optional padding mask (padding is not
/// routed), and it returns the routing losses and statistics ([`MoeStats`]) beside the output,
/// which the training loss must weight and add ([`MoeLossWeights`](crate::MoeLossWeights)).
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct SwitchFeedForward<B: Backend> {
    /// The router (f32 logits, jitter, top-k).
    pub router: Router<B>,
    /// The E experts, stacked.
    pub experts: Experts<B>,
    /// Capacity factor in training.
    pub capacity_factor: f64,
    /// Capacity factor in inference.
    pub eval_capacity_factor: f64,
    /// Dropless routing (one host read per forward).
    pub dropless: bool,
    /// Token choice or expert choice.
    pub routing: RoutingMode,
    /// Which assignments an overflowing expert drops (token choice).
    pub drop_policy: DropPolicy,
    /// The always-on shared experts, if any.
    pub shared: Option<SharedExperts<B>>,
    /// Over which tokens the balance loss is taken.
    pub balance_scope: BalanceScope,
    /// The exchange of counts between data-parallel replicas (`Global` scope; see
    /// [`crate::balance`]), shared by this block's clones.
    pub global_balance: GlobalBalance,
}

impl SwitchFeedForwardConfig {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchFeedForwardConfig";
        check::positive(C, "d_model", self.d_model)?;
        check::positive(C, "d_ff", self.d_ff)?;
        check::positive(C, "num_experts", self.num_experts)?;
        check::positive(C, "top_k", self.top_k)?;
        if self.top_k > self.num_experts {
            return Err(Error::config(
                C,
                "top_k",
                self.top_k,
                format!("must not exceed num_experts = {}", self.num_experts),
            ));
        }
        for (field, value) in [
            ("capacity_factor", self.capacity_factor),
            ("eval_capacity_factor", self.eval_capacity_factor),
            ("init_scale", self.init_scale),
        ] {
            check::positive_f64(C, field, value)?;
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return Err(Error::config(
                C,
                "jitter",
                self.jitter,
                "must lie in [0, 1)",
            ));
        }
        match &self.activation {
            ActivationConfig::SwiGlu(glu)
                if glu.d_input != self.d_model || glu.d_output != self.d_ff || glu.bias =>
            {
                return Err(Error::config(
                    C,
                    "activation",
                    format!(
                        "SwiGlu(d_input {}, d_output {}, bias {})",
                        glu.d_input, glu.d_output, glu.bias
                    ),
                    format!(
                        "gated experts need SwiGluConfig::new(d_model = {}, d_ff = {}) without \
                         bias (or call with_swiglu())",
                        self.d_model, self.d_ff
                    ),
                ));
            }
            other if ExpertActivation::from_config(other).is_none() => {
                return Err(Error::config(
                    C,
                    "activation",
                    format!("{other:?}"),
                    "only ActivationConfig::Relu, Gelu and SwiGlu are supported",
                ));
            }
            _ => {}
        }
        check::probability(C, "expert_dropout", self.expert_dropout)?;
        if !(self.expert_bias_rate.is_finite() && self.expert_bias_rate >= 0.0) {
            return Err(Error::config(
                C,
                "expert_bias_rate",
                self.expert_bias_rate,
                "must be finite and ≥ 0 (0 turns aux-loss-free balancing off; 1e-3 is typical)",
            ));
        }
        if self.routing == RoutingMode::ExpertChoice {
            if self.expert_bias_rate > 0.0 {
                return Err(Error::config(
                    C,
                    "expert_bias_rate",
                    self.expert_bias_rate,
                    "applies to token-choice routing; expert choice is balanced by construction",
                ));
            }
            if self.dropless {
                return Err(Error::config(
                    C,
                    "dropless",
                    true,
                    "applies to token-choice routing; expert choice takes a fixed C tokens per expert",
                ));
            }
        }
        self.validate_routing()?;
        if self.shared_gate && self.num_shared_experts == 0 {
            return Err(Error::config(
                C,
                "shared_gate",
                true,
                "gates the shared experts: set num_shared_experts ≥ 1",
            ));
        }
        Ok(())
    }

    /// The checks of the routing options after Switch: groups, scaling, balance scope, forced
    /// routing, the clamped SwiGLU.
    fn validate_routing(&self) -> crate::Result<()> {
        const C: &str = "SwitchFeedForwardConfig";
        let e = self.num_experts;
        check::positive(C, "n_group", self.n_group)?;
        if self.n_group > 1 {
            if !e.is_multiple_of(self.n_group) || e / self.n_group < 2 {
                return Err(Error::config(
                    C,
                    "n_group",
                    self.n_group,
                    format!(
                        "must divide num_experts = {e} into groups of at least 2 experts (a \
                         group is scored by its two best)"
                    ),
                ));
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return Err(Error::config(
                    C,
                    "topk_group",
                    self.topk_group,
                    format!("must lie in 1..={} (n_group)", self.n_group),
                ));
            }
            if self.topk_group * (e / self.n_group) < self.top_k {
                return Err(Error::config(
                    C,
                    "topk_group",
                    self.topk_group,
                    format!(
                        "the {} kept groups hold fewer than top_k = {} experts",
                        self.topk_group, self.top_k
                    ),
                ));
            }
        }
        check::positive_f64(C, "routed_scaling_factor", self.routed_scaling_factor)?;
        let token_choice = self.routing == RoutingMode::TokenChoice;
        if !token_choice && self.balance_scope != BalanceScope::Batch {
            return Err(Error::config(
                C,
                "balance_scope",
                format!("{:?}", self.balance_scope),
                "applies to token-choice routing; expert choice is balanced by construction",
            ));
        }
        if !token_choice && self.forced_routing != ForcedRouting::Off {
            return Err(Error::config(
                C,
                "forced_routing",
                format!("{:?}", self.forced_routing),
                "applies to token-choice routing",
            ));
        }
        if let Some(clamp) = &self.glu_clamp {
            if !matches!(self.activation, ActivationConfig::SwiGlu(_)) {
                return Err(Error::config(
                    C,
                    "glu_clamp",
                    format!("{clamp:?}"),
                    "clamps gated experts: set activation to SwiGlu (with_swiglu())",
                ));
            }
            check::positive_f64(C, "glu_clamp.limit", clamp.limit)?;
        }
        Ok(())
    }

    /// Gated SwiGLU experts, (SiLU(x·W₁) ⊙ x·W₃)·W₂ (Mixtral, Qwen2-MoE): sets `activation` to
    /// `SwiGlu` with this config's `d_model` and `d_ff`. Set the widths first.
    pub fn with_swiglu(self) -> Self {
        let glu = SwiGluConfig::new(self.d_model, self.d_ff);
        self.with_activation(ActivationConfig::SwiGlu(glu))
    }

    /// Builds the block. Panics with the [`validate`](Self::validate) message on a bad config.
    ///
    /// On burn-ndarray the first call in a process also tunes glibc to keep freed large blocks
    /// (`backend::keep_freed_memory`; opt out with the environment variable
    /// `SWITCH_MOE_SYSTEM_MALLOC`): without it every weight-sized buffer of a training step is a
    /// fresh mmap.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchFeedForward<B> {
        self.assert_valid();
        // On burn-ndarray, glibc's large-block settings, once per process (opt out:
        // SWITCH_MOE_SYSTEM_MALLOC; see backend::keep_freed_memory).
        crate::backend_caps::tune_allocator_for::<B>();
        SwitchFeedForward {
            router: self.init_router(device),
            experts: self.init_experts(device),
            capacity_factor: self.capacity_factor,
            eval_capacity_factor: self.eval_capacity_factor,
            dropless: self.dropless,
            routing: self.routing.clone(),
            drop_policy: self.drop_policy.clone(),
            balance_scope: self.balance_scope,
            global_balance: GlobalBalance::default(),
            shared: (self.num_shared_experts > 0).then(|| SharedExperts {
                experts: self.stacked_experts(self.num_shared_experts, device),
                gate: self.shared_gate.then(|| Linear {
                    weight: Param::from_tensor(truncated_normal::<B, 2>(
                        [self.d_model, 1],
                        self.init_scale,
                        self.d_model,
                        device,
                    )), // [d, 1]
                    bias: None,
                }),
            }),
        }
    }

    /// Builds the router alone: weights `[d, E]` from the paper's truncated normal
    /// (std √(init_scale / d)), with `top_k`, `jitter` and `normalize_gates`.
    /// Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init_router<B: Backend>(&self, device: &B::Device) -> Router<B> {
        self.assert_valid();
        let weight = truncated_normal::<B, 2>(
            [self.d_model, self.num_experts],
            self.init_scale,
            self.d_model,
            device,
        ); // [d, E]
        Router {
            gate: Linear {
                weight: Param::from_tensor(weight),
                bias: self
                    .router_bias
                    .then(|| Param::from_tensor(Tensor::zeros([self.num_experts], device))),
            },
            top_k: self.top_k,
            jitter: self.jitter,
            normalize_gates: self.normalize_gates,
            score: self.router_score.clone(),
            expert_bias: (self.expert_bias_rate > 0.0 || self.selection_bias).then(|| {
                // f32 whatever the model's float type: ±1e-3 steps vanish in f16.
                RunningState::new(Tensor::zeros([self.num_experts], (device, DType::F32)))
            }),
            expert_bias_rate: self.expert_bias_rate,
            float32: self.router_f32,
            n_group: self.n_group,
            topk_group: self.topk_group,
            scaling: self.routed_scaling_factor,
            normalize_top1: self.normalize_top1,
            forced: self.forced_routing,
            replay: RoutingReplay::default(),
        }
    }

    /// Builds the experts alone: `w_in` `[E, d, f]` and `w_out` `[E, f, d]` from the paper's
    /// truncated normal (std √(init_scale / fan_in)), biases at 0 when `bias`.
    /// Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init_experts<B: Backend>(&self, device: &B::Device) -> Experts<B> {
        self.assert_valid();
        self.stacked_experts(self.num_experts, device)
    }

    /// `e` expert FFNs with this config's widths, activation, biases, dropout and init.
    fn stacked_experts<B: Backend>(&self, e: usize, device: &B::Device) -> Experts<B> {
        let (d, f) = (self.d_model, self.d_ff);
        let w_in = truncated_normal::<B, 3>([e, d, f], self.init_scale, d, device); // [E, d, f]
        let w_out = truncated_normal::<B, 3>([e, f, d], self.init_scale, f, device); // [E, f, d]
        let bias = |n: usize| Param::from_tensor(Tensor::<B, 2>::zeros([e, n], device));
        let activation = match (
            ExpertActivation::from_config(&self.activation).expect("validated above"),
            &self.glu_clamp,
        ) {
            (ExpertActivation::SwiGlu, Some(clamp)) => ExpertActivation::ClampedSwiGlu {
                alpha: clamp.alpha,
                limit: clamp.limit,
            },
            (activation, _) => activation,
        };
        let w_up = activation.is_gated().then(|| {
            Param::from_tensor(truncated_normal::<B, 3>(
                [e, d, f],
                self.init_scale,
                d,
                device,
            ))
        }); // [E, d, f]
        Experts {
            w_in: Param::from_tensor(w_in),
            w_out: Param::from_tensor(w_out),
            b_in: self.bias.then(|| bias(f)),
            b_out: self.bias.then(|| bias(d)),
            b_up: (self.bias && w_up.is_some()).then(|| bias(f)),
            w_up,
            activation,
            dropout: DropoutConfig::new(self.expert_dropout).init(),
        }
    }

    fn assert_valid(&self) {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
    }
}

impl<B: Backend> ModuleDisplay for SwitchFeedForward<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [_, d_model, d_ff] = self.experts.w_in.shape().dims::<3>();
        content
            .add("d_model", &d_model)
            .add("d_ff", &d_ff)
            .add("num_experts", &self.num_experts())
            .add("top_k", &self.router.top_k)
            .add("capacity_factor", &self.capacity_factor)
            .add("eval_capacity_factor", &self.eval_capacity_factor)
            .add("dropless", &self.dropless)
            .add("routing", &format!("{:?}", self.routing))
            .add("score", &format!("{:?}", self.router.score))
            .add("drop_policy", &format!("{:?}", self.drop_policy))
            .add("expert_bias_rate", &self.router.expert_bias_rate)
            .add("router_f32", &self.router.float32)
            .add("balance_scope", &format!("{:?}", self.balance_scope))
            .add(
                "shared_experts",
                &self.shared.as_ref().map_or(0, |s| s.experts.num_experts()),
            )
            .add("activation", &format!("{:?}", self.experts.activation))
            .optional()
    }
}

impl<B: Backend> SwitchFeedForward<B> {
    /// The tokens the balance loss is taken over: the call's, each sequence's, or (`Global` in
    /// training with several replicas) every replica's first-choice counts, exchanged through
    /// [`GlobalBalance`].
    fn balance_tokens(
        &self,
        counts: &RoutingCounts<B>,
        sequences: usize,
        training: bool,
    ) -> BalanceTokens<B> {
        match self.balance_scope {
            BalanceScope::Batch => BalanceTokens::Batch,
            BalanceScope::Sequence => BalanceTokens::Sequence { sequences },
            BalanceScope::Global if !training || self.global_balance.parties() == 1 => {
                BalanceTokens::Batch
            }
            BalanceScope::Global => {
                // HOST SYNC: E counts per layer meet the other replicas' on the host.
                let local: Vec<f64> = counts
                    .per_expert
                    .clone()
                    .into_data()
                    .convert::<f64>()
                    .to_vec()
                    .unwrap_or_default();
                let sum = self.global_balance.exchange(local);
                let device = counts.per_expert.device();
                let sum = Tensor::<B, 1>::from_data(
                    burn::tensor::TensorData::new(
                        sum.iter().map(|v| *v as f32).collect(),
                        [sum.len()],
                    ),
                    (&device, DType::F32),
                ); // [E]
                BalanceTokens::Counts(sum)
            }
        }
    }

    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.experts.num_experts()
    }

    /// The capacity rule of a forward call: training (autodiff backend) uses `capacity_factor`,
    /// inference `eval_capacity_factor`. Token choice: C = ⌈factor · T · k / E⌉; expert choice:
    /// C = ⌈factor · T / E⌉ tokens per expert.
    pub fn capacity(&self, num_tokens: usize, training: bool) -> Capacity {
        let factor = if training {
            self.capacity_factor
        } else {
            self.eval_capacity_factor
        };
        match self.routing {
            RoutingMode::ExpertChoice => {
                Capacity::Fixed(expert_capacity(num_tokens, 1, self.num_experts(), factor))
            }
            RoutingMode::TokenChoice if self.dropless => Capacity::Dropless,
            RoutingMode::TokenChoice => Capacity::Fixed(expert_capacity(
                num_tokens,
                self.router.top_k,
                self.num_experts(),
                factor,
            )),
        }
    }

    /// Routes the tokens to the experts and returns the gate-weighted expert outputs (plus the
    /// shared experts' output, if any) with the layer's losses and statistics.
    ///
    /// Token choice: each token goes to its top-k experts within capacity (dropped assignments
    /// contribute exact zero; the enclosing residual connection carries the token). Expert choice:
    /// each expert takes its C most probable tokens (see [`crate::expert_choice`]; not causal).
    /// Padding tokens get an exact zero either way. In training with aux-loss-free balancing, the
    /// router's expert bias is updated from this call's counts. No host read happens, except one
    /// scalar in dropless mode.
    ///
    /// # Shapes
    /// - x: `[B, S, d]`
    /// - mask_pad: `[B, S]`, true at padding positions
    /// - output: `[B, S, d]`, stats over the real tokens (see [`MoeStats`])
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask_pad: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, MoeStats<B>) {
        let [batch, seq, d] = x.dims();
        let t = batch * seq;
        assert!(
            t > 0,
            "SwitchFeedForward: empty input [B={batch}, S={seq}, d={d}]"
        );
        if let Some(mask) = &mask_pad {
            assert_eq!(
                mask.dims(),
                [batch, seq],
                "SwitchFeedForward: mask_pad shape does not match input [B, S]"
            );
        }
        let device = x.device();
        let training = B::ad_enabled(&device);
        let model_dtype = FloatDType::from(x.dtype());
        let tokens = x.reshape([t, d]); // [T, d]
        let real = mask_pad.map(|m| m.reshape([t]).bool_not()); // [T]
        let capacity = self.capacity(t, training);

        // Each routing mode: its expert outputs combined `[T, d]`, the router's logits and
        // probabilities `[T, E]` (f32), and what its plan counted; the stats come from those.
        let (mut y, logits, probs, counts) = match self.routing {
            RoutingMode::TokenChoice => {
                let routing = self.router.forward(tokens.clone());
                let plan = match self.drop_policy {
                    DropPolicy::Position => DispatchPlan::new(
                        routing.expert_ids.clone(),
                        real.clone(),
                        self.num_experts(),
                        capacity,
                    ),
                    DropPolicy::Probability => DispatchPlan::by_priority(
                        routing.expert_ids.clone(),
                        routing.gates.clone(),
                        real.clone(),
                        self.num_experts(),
                        capacity,
                    ),
                };
                let expert_out = self.experts.forward(plan.dispatch(tokens.clone())); // [E, C, d]
                let gates = routing.gates.clone().cast(model_dtype); // [T, k]
                let y = plan.combine(expert_out, gates); // [T, d]
                if training {
                    let counts = plan.assignment_counts.clone().float(); // [E]
                    self.router.update_expert_bias(counts);
                }
                let counts = RoutingCounts::from(&plan);
                (y, routing.logits, routing.probs, counts)
            }
            RoutingMode::ExpertChoice => {
                let (logits, _, probs) = self.router.scores(tokens.clone());
                let Capacity::Fixed(c) = capacity else {
                    unreachable!("expert choice has a fixed capacity")
                };
                let plan = ExpertChoicePlan::new(probs.clone(), real.clone(), c);
                let expert_out = self.experts.forward(plan.dispatch(tokens.clone())); // [E, C, d]
                let gates = plan.gates.clone().cast(model_dtype); // [E·C]
                let y = plan.combine(expert_out, gates, t); // [T, d]
                (y, logits, probs, RoutingCounts::from(&plan))
            }
        };
        let balance = self.balance_tokens(&counts, batch, training);
        let mut stats = MoeStats::with_balance(
            logits,
            probs,
            counts,
            self.router.expert_bias(),
            real.clone(),
            model_dtype,
            balance,
        );
        if self.router.forced != ForcedRouting::Off {
            // Forced routing measures speed: no balance to learn.
            stats.aux_loss = stats.aux_loss.zeros_like();
            stats.z_loss = stats.z_loss.zeros_like();
        }
        if let Some(shared) = &self.shared {
            let real = real.map(|r| r.float().cast(model_dtype).reshape([t, 1])); // [T, 1]
            y = y + shared.forward(tokens, real); // [T, d]
        }
        (y.reshape([batch, seq, d]), stats)
    }
}

impl<B: Backend> SwitchFeedForward<B> {
    /// Whether [`forward_few`](Self::forward_few) computes exactly what
    /// [`forward`](Self::forward) would for `num_tokens` tokens in inference: token choice, and
    /// no token can be dropped (one token always fits; more only in a dropless layer).
    pub fn can_forward_few(&self, num_tokens: usize) -> bool {
        self.routing == RoutingMode::TokenChoice && (num_tokens == 1 || self.dropless)
    }

    /// Inference for a handful of tokens (decoding): each token runs through its k chosen
    /// experts only ([`Experts::forward_chosen`]), weighted by its gates, plus the shared
    /// experts. No capacity, no statistics, no host read. Equal to [`forward`](Self::forward)
    /// when [`can_forward_few`](Self::can_forward_few) holds; with more tokens it is the
    /// dropless forward. The cost is k·(d·f) weights gathered per token, so it pays only while
    /// T·k is small against E·C.
    ///
    /// # Shapes
    /// - x: `[T, d]`
    /// - output: `[T, d]`
    pub fn forward_few(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [t, d] = x.dims();
        let model_dtype = FloatDType::from(x.dtype());
        let routing = self.router.forward(x.clone());
        let k = routing.expert_ids.dims()[1];
        let out = self.experts.forward_chosen(x.clone(), routing.expert_ids); // [T, k, d]
        let gates = routing.gates.cast(model_dtype).reshape([t, k, 1]); // [T, k, 1]
        let mut y = (out * gates).sum_dim(1).reshape([t, d]); // [T, d]
        if let Some(shared) = &self.shared {
            y = y + shared.forward(x, None); // [T, d]
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend;

    #[test]
    fn printing_shows_the_routing_options() {
        let device = Default::default();
        let moe: SwitchFeedForward<TestBackend> = SwitchFeedForwardConfig::new(8, 16, 4)
            .with_router_score(RouterScore::Sigmoid)
            .with_num_shared_experts(1)
            .with_expert_bias_rate(1e-3)
            .init(&device);
        let text = moe.to_string();
        for needle in [
            "score: Sigmoid",
            "shared_experts: 1",
            "expert_bias_rate: 0.001",
            "routing: TokenChoice",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }
    }

    #[test]
    fn capacity_rounds_up_and_stays_within_the_tokens() {
        let device = Default::default();
        let moe: SwitchFeedForward<TestBackend> = SwitchFeedForwardConfig::new(4, 8, 4)
            .with_top_k(2)
            .with_capacity_factor(1.25)
            .with_eval_capacity_factor(2.0)
            .init(&device);
        // ⌈1.25 · 10 · 2 / 4⌉ = ⌈6.25⌉ = 7 in training; ⌈2 · 10 · 2 / 4⌉ = 10 in inference.
        assert_eq!(moe.capacity(10, true), Capacity::Fixed(7));
        assert_eq!(moe.capacity(10, false), Capacity::Fixed(10));
        // Never more than T (a token picks distinct experts), never less than 1.
        assert_eq!(moe.capacity(3, false), Capacity::Fixed(3));
        assert_eq!(crate::dispatch::expert_capacity(1, 1, 64, 0.5), 1);
        let dropless = SwitchFeedForwardConfig::new(4, 8, 4)
            .with_dropless(true)
            .init::<TestBackend>(&device);
        assert_eq!(dropless.capacity(10, true), Capacity::Dropless);
    }
}
