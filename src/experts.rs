//! The experts: E independent position-wise feed-forward networks stored as stacked weights, so
//! that all of them run as one batched matmul per weight (Fedus et al. 2021, §2.1; each expert is
//! the Transformer FFN act(x·W₁ + b₁)·W₂ + b₂).
//!
//! Gated experts (SwiGLU, Shazeer 2020, arXiv 2002.05202; the experts of Mixtral, Qwen2-MoE, OLMoE
//! and DeepSeek) add a third weight W₃: (SiLU(x·W₁) ⊙ x·W₃)·W₂. Hugging Face names W₁, W₃, W₂
//! `w1`, `w3`, `w2` (Mixtral) or `gate_proj`, `up_proj`, `down_proj` (Qwen2-MoE).

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::nn::activation::ActivationConfig;
use burn::tensor::activation::{gelu, relu, sigmoid, silu};
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::expert_matmul::expert_matmul;

/// The activation of the experts' hidden layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertActivation {
    /// max(0, x)
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// SwiGLU: SiLU(x·W₁) ⊙ (x·W₃), with the experts' third weight W₃ ([`Experts::w_up`]).
    SwiGlu,
    /// gpt-oss's clamped SwiGLU: with g = min(x·W₁ + b₁, limit) and
    /// u = clamp(x·W₃ + b₃, −limit, limit), the hidden layer is (u + 1) ⊙ g ⊙ σ(α·g)
    /// (α = 1.702, limit = 7 in gpt-oss; not SiLU, whose α is 1).
    ClampedSwiGlu {
        /// α inside the sigmoid.
        alpha: f64,
        /// The clamp: g at most `limit`, u within ±`limit`.
        limit: f64,
    },
}

impl ExpertActivation {
    /// Maps burn's `ActivationConfig`; only `Relu`, `Gelu` and `SwiGlu` (gated experts, its
    /// sizes checked by the config) have a stacked implementation.
    pub fn from_config(config: &ActivationConfig) -> Option<Self> {
        match config {
            ActivationConfig::Relu => Some(Self::Relu),
            ActivationConfig::Gelu => Some(Self::Gelu),
            ActivationConfig::SwiGlu(_) => Some(Self::SwiGlu),
            _ => None,
        }
    }

    /// Whether the experts have the gated third weight W₃.
    pub fn is_gated(&self) -> bool {
        matches!(self, Self::SwiGlu | Self::ClampedSwiGlu { .. })
    }

    /// Applies the (gate's) non-linearity element-wise: ReLU, GELU, or SiLU for SwiGLU. For the
    /// clamped SwiGLU, σ(α·min(x, limit))·min(x, limit) (the gate half of [`Self::hidden`]).
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Relu => relu(x),
            Self::Gelu => gelu(x),
            Self::SwiGlu => silu(x),
            Self::ClampedSwiGlu { alpha, limit } => {
                let g = x.clamp_max(*limit);
                g.clone() * sigmoid(g.mul_scalar(*alpha))
            }
        }
    }

    /// The hidden layer from the gate pre-activation `x·W₁ + b₁` and, for gated experts, the up
    /// projection `x·W₃ + b₃`: act(gate), act(gate) ⊙ up, or (clamp(up) + 1) ⊙ act(gate).
    pub fn hidden<B: Backend, const D: usize>(
        &self,
        gate: Tensor<B, D>,
        up: Option<Tensor<B, D>>,
    ) -> Tensor<B, D> {
        let act = self.forward(gate);
        match (self, up) {
            (Self::ClampedSwiGlu { limit, .. }, Some(up)) => {
                act * (up.clamp(-*limit, *limit) + 1.0)
            }
            (_, Some(up)) => act * up,
            (_, None) => act,
        }
    }
}

/// E expert FFNs with stacked weights. Built by
/// [`SwitchFeedForwardConfig::init_experts`](crate::SwitchFeedForwardConfig::init_experts).
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
    /// Gated experts only: the linear ("up") projections W₃ `[E, d, f]`; the hidden layer is
    /// act(x·W₁) ⊙ (x·W₃).
    pub w_up: Option<Param<Tensor<B, 3>>>,
    /// Gated experts with biases only: the up projections' biases b₃ `[E, f]` (gpt-oss).
    pub b_up: Option<Param<Tensor<B, 2>>>,
    /// Hidden activation.
    pub activation: ExpertActivation,
    /// Expert dropout on the hidden activations (training only).
    pub dropout: Dropout,
}

impl<B: Backend> Experts<B> {
    /// Number of experts E.
    pub fn num_experts(&self) -> usize {
        self.w_in.shape().dims::<3>()[0]
    }

    /// Runs expert e on row block e of the input: act(x·W₁ + b₁)·W₂ + b₂, two batched matmuls
    /// (gated: (act(x·W₁ + b₁) ⊙ (x·W₃ + b₃))·W₂ + b₂, three; see [`ExpertActivation::hidden`]),
    /// each through [`expert_matmul`], whose backward transposes no weight.
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
        let mut gate = expert_matmul(x.clone(), self.w_in.val()); // [E, C, f]
        if let Some(b) = &self.b_in {
            gate = gate + b.val().unsqueeze_dim::<3>(1); // + [E, 1, f]
        }
        let up = self.w_up.as_ref().map(|w_up| {
            let up = expert_matmul(x, w_up.val()); // [E, C, f]
            match &self.b_up {
                Some(b) => up + b.val().unsqueeze_dim::<3>(1), // + [E, 1, f]
                None => up,
            }
        });
        let h = self.activation.hidden(gate, up); // [E, C, f]
        let h = crate::noise::dropout(h, self.dropout.prob); // [E, C, f]
        let mut y = expert_matmul(h, self.w_out.val()); // [E, C, d]
        if let Some(b) = &self.b_out {
            y = y + b.val().unsqueeze_dim::<3>(1); // + [E, 1, d]
        }
        y
    }
}

impl<B: Backend> Experts<B> {
    /// Runs each token through its chosen experts only, gathering those experts' weights
    /// (`[T·k, d, f]`) instead of the batched `[E, C, d]` layout: for a handful of tokens
    /// (decoding), where the batched layout would run every expert on mostly empty slots. The
    /// same arithmetic as [`forward`](Self::forward) row by row; no dropout (inference).
    ///
    /// # Shapes
    /// - x: `[T, d]`
    /// - expert_ids: `[T, k]`
    /// - output: `[T, k, d]`, row (t, j) = expert `expert_ids[t, j]` applied to token t
    pub fn forward_chosen(&self, x: Tensor<B, 2>, expert_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [t, d] = x.dims();
        let [_, k] = expert_ids.dims();
        let [_, _, f] = self.w_in.shape().dims::<3>();
        #[cfg(feature = "ndarray")]
        if let Some(y) = self.forward_chosen_host(&x, expert_ids.clone()) {
            return y.reshape([t, k, d]);
        }
        let ids = expert_ids.reshape([t * k]); // [T·k]
        let rows = x
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, k)
            .reshape([t * k, 1, d]); // [T·k, 1, d]
        let bias = |b: &Param<Tensor<B, 2>>, n: usize| {
            b.val().select(0, ids.clone()).reshape([t * k, 1, n]) // [T·k, 1, n]
        };
        let mut gate = rows.clone().matmul(self.w_in.val().select(0, ids.clone())); // [T·k, 1, f]
        if let Some(b) = &self.b_in {
            gate = gate + bias(b, f);
        }
        let up = self.w_up.as_ref().map(|w_up| {
            let up = rows.matmul(w_up.val().select(0, ids.clone())); // [T·k, 1, f]
            match &self.b_up {
                Some(b) => up + bias(b, f),
                None => up,
            }
        });
        let h = self.activation.hidden(gate, up); // [T·k, 1, f]
        let mut y = h.matmul(self.w_out.val().select(0, ids.clone())); // [T·k, 1, d]
        if let Some(b) = &self.b_out {
            y = y + bias(b, d);
        }
        y.reshape([t, k, d])
    }
}

#[cfg(feature = "ndarray")]
impl<B: Backend> Experts<B> {
    /// [`forward_chosen`](Self::forward_chosen) through the host kernels ([`crate::host`]) on
    /// plain `NdArray`: the expert ids read on the host (free there), each chosen expert's
    /// weights read in place. `[T·k, d]`, or `None` where the kernels do not serve.
    fn forward_chosen_host(
        &self,
        x: &Tensor<B, 2>,
        expert_ids: Tensor<B, 2, Int>,
    ) -> Option<Tensor<B, 2>> {
        use crate::host;
        let ids = host::ids(expert_ids)?; // T·k, token-major
        let val2 = |b: &Option<Param<Tensor<B, 2>>>| b.as_ref().map(|b| b.val());
        let gate = host::expert_linear(x, &ids, &self.w_in.val(), val2(&self.b_in).as_ref())?; // [T·k, f]
        let up = match &self.w_up {
            Some(w_up) => Some(host::expert_linear(
                x,
                &ids,
                &w_up.val(),
                val2(&self.b_up).as_ref(),
            )?),
            None => None,
        }; // [T·k, f]
        let h = self.activation.hidden(gate, up); // [T·k, f]
        host::expert_linear(&h, &ids, &self.w_out.val(), val2(&self.b_out).as_ref()) // [T·k, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::tensor::TensorData;

    fn t3(v: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    #[test]
    fn each_expert_runs_its_own_ffn_by_hand() {
        // E = 2, d = 2, f = 2, C = 1; ReLU, no dropout. Expert 0: W₁ = I, W₂ = 2·I; expert 1:
        // W₁ = −I, W₂ = I. Input x = (1, −3) in both slots.
        let mut experts = crate::SwitchFeedForwardConfig::new(2, 2, 2)
            .with_expert_dropout(0.0)
            .init_experts::<B>(&Default::default());
        experts.w_in = Param::from_tensor(t3(vec![1., 0., 0., 1., -1., 0., 0., -1.], [2, 2, 2]));
        experts.w_out = Param::from_tensor(t3(vec![2., 0., 0., 2., 1., 0., 0., 1.], [2, 2, 2]));
        let y: Vec<f32> = experts
            .forward(t3(vec![1., -3., 1., -3.], [2, 1, 2]))
            .into_data()
            .to_vec()
            .unwrap();
        // Expert 0: relu(1, −3) = (1, 0), ×2 = (2, 0). Expert 1: relu(−1, 3) = (0, 3).
        assert_eq!(y, vec![2., 0., 0., 3.]);
        assert!(!ExpertActivation::Relu.is_gated() && ExpertActivation::SwiGlu.is_gated());
    }
}
