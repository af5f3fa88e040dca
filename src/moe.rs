//! The Switch feed-forward block (Fedus et al. 2021, §2.1–2.2, Fig. 2): flatten the tokens, route
//! each to its top-k experts, dispatch within capacity, run all experts as batched matmuls, and
//! combine their outputs weighted by the router gates.

use burn::config::Config;
use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::nn::activation::ActivationConfig;
use burn::nn::{DropoutConfig, Linear};
use burn::tensor::{Bool, FloatDType, Tensor, backend::Backend};

use crate::dispatch::{Capacity, DispatchPlan, expert_capacity};
use crate::error::{Error, check};
use crate::experts::{ExpertActivation, Experts};
use crate::init::truncated_normal;
use crate::router::Router;
use crate::stats::MoeStats;

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
    /// Expert activation: `Relu` (default, T5/Switch) or `Gelu`; no other is accepted. In a
    /// [`SwitchEncoder`](crate::SwitchEncoder) the dense layers use it too.
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
    /// For top-k > 1: renormalise a token's k gates to sum 1. Default true.
    #[config(default = true)]
    pub normalize_gates: bool,
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
        if ExpertActivation::from_config(&self.activation).is_none() {
            return Err(Error::config(
                C,
                "activation",
                format!("{:?}", self.activation),
                "only ActivationConfig::Relu and ActivationConfig::Gelu are supported",
            ));
        }
        check::probability(C, "expert_dropout", self.expert_dropout)
    }

    /// Builds the block. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchFeedForward<B> {
        self.assert_valid();
        SwitchFeedForward {
            router: self.init_router(device),
            experts: self.init_experts(device),
            capacity_factor: self.capacity_factor,
            eval_capacity_factor: self.eval_capacity_factor,
            dropless: self.dropless,
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
                bias: None,
            },
            top_k: self.top_k,
            jitter: self.jitter,
            normalize_gates: self.normalize_gates,
        }
    }

    /// Builds the experts alone: `w_in` `[E, d, f]` and `w_out` `[E, f, d]` from the paper's
    /// truncated normal (std √(init_scale / fan_in)), biases at 0 when `bias`.
    /// Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init_experts<B: Backend>(&self, device: &B::Device) -> Experts<B> {
        self.assert_valid();
        let (e, d, f) = (self.num_experts, self.d_model, self.d_ff);
        let w_in = truncated_normal::<B, 3>([e, d, f], self.init_scale, d, device); // [E, d, f]
        let w_out = truncated_normal::<B, 3>([e, f, d], self.init_scale, f, device); // [E, f, d]
        let bias = |n: usize| Param::from_tensor(Tensor::<B, 2>::zeros([e, n], device));
        Experts {
            w_in: Param::from_tensor(w_in),
            w_out: Param::from_tensor(w_out),
            b_in: self.bias.then(|| bias(f)),
            b_out: self.bias.then(|| bias(d)),
            activation: ExpertActivation::from_config(&self.activation).expect("validated above"),
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
            .add("activation", &format!("{:?}", self.experts.activation))
            .optional()
    }
}

impl<B: Backend> SwitchFeedForward<B> {
    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.experts.num_experts()
    }

    /// The capacity rule of a forward call: training (autodiff backend) uses `capacity_factor`,
    /// inference `eval_capacity_factor`.
    pub fn capacity(&self, num_tokens: usize, training: bool) -> Capacity {
        if self.dropless {
            return Capacity::Dropless;
        }
        let factor = if training {
            self.capacity_factor
        } else {
            self.eval_capacity_factor
        };
        Capacity::Fixed(expert_capacity(
            num_tokens,
            self.router.top_k,
            self.num_experts(),
            factor,
        ))
    }

    /// Routes every token to its top-k experts and returns the gate-weighted expert outputs with
    /// the layer's losses and statistics.
    ///
    /// Tokens dropped for lack of capacity, and padding tokens, get an exact zero (the enclosing
    /// residual connection carries them). No host read happens, except one scalar in dropless mode.
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
        let model_dtype = FloatDType::from(x.dtype());
        let tokens = x.reshape([t, d]); // [T, d]
        let real = mask_pad.map(|m| m.reshape([t]).bool_not()); // [T]

        let routing = self.router.forward(tokens.clone());
        let capacity = self.capacity(t, B::ad_enabled(&device));
        let plan = DispatchPlan::new(
            routing.expert_ids.clone(),
            real.clone(),
            self.num_experts(),
            capacity,
        );

        let expert_in = plan.dispatch(tokens); // [E, C, d]
        let expert_out = self.experts.forward(expert_in); // [E, C, d]
        let gates = routing.gates.clone().cast(model_dtype); // [T, k]
        let y = plan.combine(expert_out, gates); // [T, d]

        let stats = MoeStats::new(&routing, &plan, real, model_dtype);
        (y.reshape([batch, seq, d]), stats)
    }
}
