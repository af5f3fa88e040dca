//! The scope of the load-balancing loss, and the exchange that makes it global.
//!
//! The Switch loss E·Σᵢ fᵢ·Pᵢ takes fᵢ (the share of tokens whose first choice is expert i) and
//! Pᵢ (the mean router probability) over some set of tokens ([`BalanceScope`](crate::BalanceScope)):
//!
//! - `Batch`: the tokens of the forward call (a micro-batch) — every batch is pushed toward
//!   balance, which fights experts that specialise on what a batch happens to hold (Qwen's
//!   global-batch study, arXiv 2501.11873);
//! - `Sequence`: each sequence apart, the sequences' losses averaged (DeepSeek-V3's
//!   complementary sequence-wise loss, arXiv 2412.19437 eq. 17–20, with Switch's first-choice
//!   fᵢ);
//! - `Global`: fᵢ over every token of the optimiser step — all data-parallel devices' shards —
//!   with each shard's own Pᵢ (Megatron-Core's `global_aux_loss`). fᵢ carries no gradient, so
//!   the shards need only exchange E counts per layer: [`GlobalBalance`] does it. With one
//!   device, `Global` is `Batch`.
//!
//! **The exchange.** Each sparse layer with `Global` scope holds a [`GlobalBalance`], shared by
//! its data-parallel replicas (they are clones of one model). A trainer that runs N replicas in
//! N threads — burn-train's `MultiDevice` strategy does, one thread per device, one shard per
//! step each — sets the party count with [`GlobalBalance::set_parties`]; in each training
//! forward every replica then reads its counts to the host (a host read of E numbers per layer),
//! adds them to the round, waits for the others and uses the sum. A replica that waits longer
//! than [`GlobalBalance::timeout`] (a shard left without a partner at an epoch's uneven end) uses
//! its own counts for that step and counts the fallback ([`GlobalBalance::fallbacks`]).
//!
//! **Not covered.** Gradient accumulation over micro-batches: burn-train 0.21's accumulation runs
//! the micro-batches one after the other through the same forward, so the first micro-batch's
//! loss is computed before the later ones' counts exist; the counts could only be pooled with a
//! second forward. The train program does not accumulate gradients, so its `Global` covers every
//! token of each optimiser step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A reusable meeting point where N replicas add their per-expert counts (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct GlobalBalance(Arc<Exchange>);

#[derive(Debug, Default)]
struct Exchange {
    parties: AtomicUsize,
    fallbacks: AtomicUsize,
    round: Mutex<Round>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Round {
    /// Counts how many rounds finished; a waiter leaves when it changes.
    generation: u64,
    arrived: usize,
    sum: Vec<f64>,
    /// The last finished round's sum.
    result: Vec<f64>,
}

impl GlobalBalance {
    /// How long a replica waits for the others before it uses its own counts.
    pub fn timeout() -> Duration {
        Duration::from_secs(120)
    }

    /// Sets how many replicas meet at every training forward (1, the default: no exchange).
    pub fn set_parties(&self, parties: usize) {
        self.0.parties.store(parties.max(1), Ordering::SeqCst);
    }

    /// The replicas that meet.
    pub fn parties(&self) -> usize {
        self.0.parties.load(Ordering::SeqCst).max(1)
    }

    /// Rounds in which a replica gave up waiting and used its own counts.
    pub fn fallbacks(&self) -> usize {
        self.0.fallbacks.load(Ordering::SeqCst)
    }

    /// Adds `counts` to this round, waits for the other replicas, and returns the round's sum
    /// (the counts themselves with one party, or after a timeout).
    pub fn exchange(&self, counts: Vec<f64>) -> Vec<f64> {
        let parties = self.parties();
        if parties == 1 {
            return counts;
        }
        let exchange = &self.0;
        let mut round = exchange.round.lock().unwrap_or_else(|e| e.into_inner());
        if round.arrived == 0 {
            round.sum = vec![0.0; counts.len()];
        }
        round.sum.iter_mut().zip(&counts).for_each(|(s, c)| *s += c);
        round.arrived += 1;
        if round.arrived == parties {
            round.result = std::mem::take(&mut round.sum);
            round.arrived = 0;
            round.generation += 1;
            exchange.done.notify_all();
            return round.result.clone();
        }
        let generation = round.generation;
        let (round, timeout) = exchange
            .done
            .wait_timeout_while(round, Self::timeout(), |r| r.generation == generation)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            // Leave the round to the others: take our counts back out of it.
            let mut round = round;
            round.sum.iter_mut().zip(&counts).for_each(|(s, c)| *s -= c);
            round.arrived = round.arrived.saturating_sub(1);
            exchange.fallbacks.fetch_add(1, Ordering::SeqCst);
            return counts;
        }
        round.result.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_get_the_sum_of_their_counts_round_after_round() {
        let balance = GlobalBalance::default();
        assert_eq!(
            balance.exchange(vec![1.0, 2.0]),
            vec![1.0, 2.0],
            "one party"
        );
        balance.set_parties(3);
        for round in 0..4 {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let b = balance.clone();
                    std::thread::spawn(move || b.exchange(vec![i as f64, round as f64]))
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), vec![3.0, 3.0 * round as f64]);
            }
        }
        assert_eq!(balance.fallbacks(), 0);
    }
}
