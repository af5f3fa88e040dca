//! The Switch feed-forward block (Fedus et al. 2021, §2.1–2.2, Fig. 2): flatten the tokens, route
//! each to its top-k experts, dispatch within capacity, run all experts as batched matmuls, and
//! combine their outputs weighted by the router gates.

use burn::config::Config;
use burn::module::Module;
use burn::nn::activation::ActivationConfig;
use burn::tensor::{Bool, FloatDType, Tensor, backend::Backend};

use crate::dispatch::{Capacity, DispatchPlan, expert_capacity};
use crate::error::Error;
use crate::experts::{Experts, ExpertsConfig};
use crate::router::{Router, RouterConfig};
use crate::stats::MoeStats;

/// Configuration of a [`SwitchFeedForward`] block.
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
    /// Multiplicative router-input jitter ε, training only. Default 0.01 (paper §2.4).
    #[config(default = 0.01)]
    pub jitter: f64,
    /// Expert activation: `Relu` (default, T5/Switch) or `Gelu`.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Expert biases. Default false, as in T5/Switch.
    #[config(default = false)]
    pub bias: bool,
    /// Expert dropout on the hidden activations, training only. Default 0.1 (paper Table 4).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Initialisation scale s for router and experts (std √(s / fan_in)). Default 0.1 (paper §2.4).
    #[config(default = 0.1)]
    pub init_scale: f64,
    /// For top-k > 1: renormalise a token's k gates to sum 1. Default true.
    #[config(default = true)]
    pub normalize_gates: bool,
}

/// A Switch (mixture-of-experts) feed-forward block: a drop-in for burn-nn's
/// `PositionWiseFeedForward` whose forward also returns the routing losses and statistics.
#[derive(Module, Debug)]
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
    /// The router part of this config.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig::new(self.d_model, self.num_experts)
            .with_top_k(self.top_k)
            .with_jitter(self.jitter)
            .with_init_scale(self.init_scale)
            .with_normalize_gates(self.normalize_gates)
    }

    /// The experts part of this config.
    pub fn experts_config(&self) -> ExpertsConfig {
        ExpertsConfig::new(self.d_model, self.d_ff, self.num_experts)
            .with_activation(self.activation.clone())
            .with_bias(self.bias)
            .with_dropout(self.dropout)
            .with_init_scale(self.init_scale)
    }

    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "SwitchFeedForwardConfig";
        let rename = |e: Error| e.within(C, &[]);
        self.router_config().validate().map_err(rename)?;
        self.experts_config().validate().map_err(rename)?;
        for (field, value) in [
            ("capacity_factor", self.capacity_factor),
            ("eval_capacity_factor", self.eval_capacity_factor),
        ] {
            crate::error::check::positive_f64(C, field, value)?;
        }
        Ok(())
    }

    /// Builds the block. Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwitchFeedForward<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        SwitchFeedForward {
            router: self.router_config().init(device),
            experts: self.experts_config().init(device),
            capacity_factor: self.capacity_factor,
            eval_capacity_factor: self.eval_capacity_factor,
            dropless: self.dropless,
        }
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
