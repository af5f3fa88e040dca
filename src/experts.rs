//! The experts: E independent position-wise feed-forward networks stored as stacked weights, so
//! that all of them run as one batched matmul per weight (Fedus et al. 2021, §2.1; each expert is
//! the Transformer FFN act(x·W₁ + b₁)·W₂ + b₂).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::activation::ActivationConfig;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{Error, check};
use crate::init::truncated_normal;

/// Configuration of [`Experts`].
#[derive(Config, Debug)]
pub struct ExpertsConfig {
    /// Model width d.
    pub d_model: usize,
    /// Hidden width f of each expert.
    pub d_ff: usize,
    /// Number of experts E.
    pub num_experts: usize,
    /// Activation: only `Relu` (default, as in T5/Switch) and `Gelu` are accepted.
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Biases b₁, b₂. Default false, as in T5 and the Switch Transformer.
    #[config(default = false)]
    pub bias: bool,
    /// Expert dropout on the hidden activations, training only. Default 0.1 (paper §2.4; 0.4 is
    /// the paper's choice for fine-tuning, Table 4).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Initialisation scale s: truncated normal with std √(s / fan_in). Default 0.1 (paper §2.4).
    #[config(default = 0.1)]
    pub init_scale: f64,
}

/// The activation of the experts' hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertActivation {
    /// max(0, x)
    Relu,
    /// Exact (erf) GELU.
    Gelu,
}

impl ExpertActivation {
    /// Maps burn's `ActivationConfig`; only `Relu` and `Gelu` have a stacked implementation.
    pub fn from_config(config: &ActivationConfig) -> Option<Self> {
        match config {
            ActivationConfig::Relu => Some(Self::Relu),
            ActivationConfig::Gelu => Some(Self::Gelu),
            _ => None,
        }
    }

    /// Applies the activation element-wise.
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Relu => relu(x),
            Self::Gelu => gelu(x),
        }
    }
}

/// E expert FFNs with stacked weights.
#[derive(Module, Debug)]
pub struct Experts<B: Backend> {
    /// Input projections W₁ `[E, d, f]`.
    pub w_in: Param<Tensor<B, 3>>,
    /// Output projections W₂ `[E, f, d]`.
    pub w_out: Param<Tensor<B, 3>>,
    /// Input biases b₁ `[E, f]`, if enabled.
    pub b_in: Option<Param<Tensor<B, 2>>>,
    /// Output biases b₂ `[E, d]`, if enabled.
    pub b_out: Option<Param<Tensor<B, 2>>>,
    /// Hidden activation.
    pub activation: ExpertActivation,
    /// Expert dropout on the hidden activations (training only).
    pub dropout: Dropout,
}

pub(crate) fn validate_activation(
    config: &'static str,
    activation: &ActivationConfig,
) -> crate::Result<()> {
    match ExpertActivation::from_config(activation) {
        Some(_) => Ok(()),
        None => Err(Error::config(
            config,
            "activation",
            format!("{activation:?}"),
            "only ActivationConfig::Relu and ActivationConfig::Gelu are supported",
        )),
    }
}

impl ExpertsConfig {
    /// Checks every field; the error names the field and its value.
    pub fn validate(&self) -> crate::Result<()> {
        const C: &str = "ExpertsConfig";
        check::positive(C, "d_model", self.d_model)?;
        check::positive(C, "d_ff", self.d_ff)?;
        check::positive(C, "num_experts", self.num_experts)?;
        validate_activation(C, &self.activation)?;
        check::probability(C, "dropout", self.dropout)?;
        check::positive_f64(C, "init_scale", self.init_scale)
    }

    /// Builds the experts with the paper's truncated-normal initialisation (biases start at 0).
    /// Panics with the [`validate`](Self::validate) message on a bad config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Experts<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
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
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl<B: Backend> Experts<B> {
    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.w_in.shape().dims::<3>()[0]
    }

    /// Runs expert e on row block e of the input: act(x·W₁ + b₁)·W₂ + b₂, two batched matmuls.
    ///
    /// A zero input row gives act(b₁)·W₂ + b₂ (zero without biases); callers that must ignore
    /// empty slots do not read them back.
    ///
    /// # Shapes
    /// - x: `[E, C, d]`
    /// - output: `[E, C, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [e, _, d] = x.dims();
        let [e_w, d_w, _] = self.w_in.shape().dims::<3>();
        assert!(
            e == e_w && d == d_w,
            "Experts: input [E={e}, C, d={d}] does not match weights [E={e_w}, d={d_w}, f]"
        );
        let mut h = x.matmul(self.w_in.val()); // [E, C, f]
        if let Some(b) = &self.b_in {
            h = h + b.val().unsqueeze_dim::<3>(1); // + [E, 1, f]
        }
        let h = self.dropout.forward(self.activation.forward(h)); // [E, C, f]
        let mut y = h.matmul(self.w_out.val()); // [E, C, d]
        if let Some(b) = &self.b_out {
            y = y + b.val().unsqueeze_dim::<3>(1); // + [E, 1, d]
        }
        y
    }
}
