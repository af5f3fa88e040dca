//! Router replay: record the experts each token was sent to in one forward, and send the tokens
//! to the same experts in a later forward instead of asking the router again (Megatron-LM's
//! `moe_enable_routing_replay`, DeepSpeed's expert replay).
//!
//! Why: RL fine-tuning of MoE models computes the policy's log-probabilities twice — while
//! sampling and while training — and a router that picks other experts the second time makes the
//! two disagree, which destabilises training (arXiv 2510.11370); activation recompute likewise
//! needs the backward pass to route as the forward did.
//!
//! Each [`Router`](crate::Router) holds a [`RoutingReplay`], shared by its clones (the model's
//! `valid()` copy, a data-parallel replica): [`start_recording`](RoutingReplay::start_recording)
//! makes every later forward push its experts `[T, k]` (a host copy: the one host read recording
//! costs); [`start_replaying`](RoutingReplay::start_replaying) makes the following forwards take
//! the recorded experts in the same order. A model's routers are reached together through
//! [`SwitchLm::routing_replays`](crate::SwitchLm::routing_replays) (or the encoder's).
//!
//! **Gradients in a replayed forward.** The router still runs: its logits, scores and
//! probabilities are computed from the current weights (with jitter in training), the gates are
//! its current scores of the *recorded* experts (renormalised and scaled as configured), and the
//! balance and z losses use its current probabilities with the recorded first choices. So the
//! router keeps learning through the gates of the experts that were used, and the balance loss
//! still pulls it toward balance; only the discrete choice is frozen. Capacity and drops are
//! recomputed for the replayed experts (a dropless or high-capacity layer replays exactly).

use std::sync::{Arc, Mutex};

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

/// What a router does with its choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayMode {
    /// Route normally, record nothing (the default).
    #[default]
    Off,
    /// Route normally and record every forward's experts.
    Record,
    /// Take the recorded experts, forward by forward, in order.
    Replay,
}

#[derive(Debug, Default)]
struct State {
    mode: ReplayMode,
    recorded: Vec<TensorData>,
    cursor: usize,
}

/// One router's record of its choices, shared by the router's clones (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct RoutingReplay(Arc<Mutex<State>>);

impl RoutingReplay {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// Clears the record; every later forward appends its experts `[T, k]`.
    pub fn start_recording(&self) {
        self.with(|s| {
            s.mode = ReplayMode::Record;
            s.recorded.clear();
            s.cursor = 0;
        });
    }

    /// Later forwards take the recorded experts, the first recorded forward first.
    pub fn start_replaying(&self) {
        self.with(|s| {
            s.mode = ReplayMode::Replay;
            s.cursor = 0;
        });
    }

    /// Back to normal routing; the record stays.
    pub fn stop(&self) {
        self.with(|s| s.mode = ReplayMode::Off);
    }

    /// The current mode.
    pub fn mode(&self) -> ReplayMode {
        self.with(|s| s.mode)
    }

    /// The recorded experts of each forward, `[T, k]` each (ids as i64).
    pub fn recorded(&self) -> Vec<TensorData> {
        self.with(|s| s.recorded.clone())
    }

    /// Replaces the record (e.g. one kept from another process), without changing the mode.
    pub fn set_recorded(&self, recorded: Vec<TensorData>) {
        self.with(|s| {
            s.recorded = recorded;
            s.cursor = 0;
        });
    }

    /// Records `ids` when recording.
    ///
    /// # Shapes
    /// - ids: `[T, k]`
    pub(crate) fn record<B: Backend>(&self, ids: &Tensor<B, 2, Int>) {
        if self.mode() == ReplayMode::Record {
            // HOST SYNC: recording keeps the choices on the host (they outlive the device graph).
            let data = ids.clone().into_data().convert::<i64>();
            self.with(|s| s.recorded.push(data));
        }
    }

    /// The next recorded experts when replaying.
    ///
    /// # Panics
    /// When replaying past the end of the record: more forwards than were recorded.
    ///
    /// # Shapes
    /// - output: `[T, k]`
    pub(crate) fn replayed<B: Backend>(&self, device: &B::Device) -> Option<Tensor<B, 2, Int>> {
        let data = self.with(|s| {
            if s.mode != ReplayMode::Replay {
                return None;
            }
            let data = s.recorded.get(s.cursor).cloned().unwrap_or_else(|| {
                panic!(
                    "router replay: forward {} has no record ({} forwards were recorded)",
                    s.cursor + 1,
                    s.recorded.len()
                )
            });
            s.cursor += 1;
            Some(data)
        })?;
        Some(Tensor::from_data(data, device))
    }
}
