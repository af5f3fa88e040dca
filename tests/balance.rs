//! The balance loss's scope: per sequence against a hand computation on two sequences with
//! padding, and global over two data-parallel shards against the batch loss of their
//! concatenation.

mod common;

use burn::module::Param;
use common::*;
use switch_moe::{BalanceScope, SwitchFeedForward, SwitchFeedForwardConfig};

/// E = 2, d = 2, an identity router (logits = x), no jitter, room for every token.
fn identity_block<Bk: burn::tensor::backend::Backend>(
    scope: BalanceScope,
    device: &Bk::Device,
) -> SwitchFeedForward<Bk> {
    let mut moe = SwitchFeedForwardConfig::new(2, 4, 2)
        .with_jitter(0.0)
        .with_expert_dropout(0.0)
        .with_capacity_factor(2.0)
        .with_eval_capacity_factor(2.0)
        .with_balance_scope(scope)
        .init::<Bk>(device);
    moe.router.gate.weight = Param::from_tensor(tensor(vec![1.0, 0.0, 0.0, 1.0], [2, 2], device));
    moe
}

fn softmax2(a: f64, b: f64) -> (f64, f64) {
    let (ea, eb) = (a.exp(), b.exp());
    (ea / (ea + eb), eb / (ea + eb))
}

#[test]
fn sequence_scope_by_hand_with_padding() {
    let device = device();
    // Sequence 0: x = (2, 0), (0, 1), (1, 0). Sequence 1: (0, 3), (1, 1), and a padding token.
    let x = vec![2.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 3.0, 1.0, 1.0, 5.0, 0.0];
    let pad = bool_tensor::<B, 2>(
        vec![false, false, false, false, false, true],
        [2, 3],
        &device,
    );
    let aux = |scope| {
        let moe = identity_block::<B>(scope, &device);
        let (_, stats) = moe.forward(tensor(x.clone(), [2, 3, 2], &device), Some(pad.clone()));
        host(stats.aux_loss)[0] as f64
    };
    // By hand. Sequence 0: p = softmax(x); first choices 0, 1, 0 → f = (2/3, 1/3), P = the
    // mean p; loss 2 · Σ f·P. Sequence 1 (padding left out): first choices 1, and 0 for the tie
    // (1, 1) (the lower expert) → f = (1/2, 1/2): loss 2 · ½ · (P₀ + P₁) = 1.
    let p: Vec<(f64, f64)> = [(2.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.0, 3.0), (1.0, 1.0)]
        .iter()
        .map(|(a, b)| softmax2(*a, *b))
        .collect();
    let mean = |r: std::ops::Range<usize>| {
        let n = r.len() as f64;
        let (a, b) = p[r].iter().fold((0.0, 0.0), |s, q| (s.0 + q.0, s.1 + q.1));
        (a / n, b / n)
    };
    let (p0, p1) = mean(0..3);
    let seq0 = 2.0 * (2.0 / 3.0 * p0 + 1.0 / 3.0 * p1);
    let (q0, q1) = mean(3..5);
    let seq1 = 2.0 * (0.5 * q0 + 0.5 * q1);
    assert!((seq1 - 1.0).abs() < 1e-12);
    let want = (seq0 + seq1) / 2.0; // 1.0423…
    let got = aux(BalanceScope::Sequence);
    assert!((got - want).abs() < 1e-5, "sequence scope {got} vs {want}");
    // The batch scope over the five real tokens: first choices 0, 1, 0, 1, 0.
    let (b0, b1) = mean(0..5);
    let batch = 2.0 * (0.6 * b0 + 0.4 * b1); // 0.9943…
    let got = aux(BalanceScope::Batch);
    assert!((got - batch).abs() < 1e-5, "batch scope {got} vs {batch}");
    assert!((want - batch).abs() > 0.01, "the two scopes differ here");
}

#[test]
fn global_scope_on_two_shards_equals_batch_on_their_concatenation() {
    let device = device();
    let (s, d) = (6, 2);
    let mut rng = Rng::new(7);
    let shards: Vec<Vec<f32>> = (0..2).map(|_| rng.normals(s * d, 1.5)).collect();
    // Training mode (autodiff backend) with the exchange between two replicas.
    let global = identity_block::<AB>(BalanceScope::Global, &device);
    global.global_balance.set_parties(2);
    let shard_aux: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .map(|x| {
                let replica = global.clone();
                #[allow(clippy::clone_on_copy)] // not Copy on every backend (wgpu)
                let device = device.clone();
                scope.spawn(move || {
                    let (_, stats) = replica.forward(tensor(x.clone(), [1, s, d], &device), None);
                    host(stats.aux_loss)[0] as f64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(global.global_balance.fallbacks(), 0);
    // The same weights with the batch scope on both shards at once.
    let mut batch = identity_block::<AB>(BalanceScope::Batch, &device);
    batch.router = global.router.clone();
    batch.experts = global.experts.clone();
    let all: Vec<f32> = shards.concat();
    let (_, stats) = batch.forward(tensor(all, [2, s, d], &device), None);
    let want = host(stats.aux_loss)[0] as f64;
    let mean = (shard_aux[0] + shard_aux[1]) / 2.0;
    assert!(
        (mean - want).abs() < 1e-5,
        "global over 2 shards {mean} ({shard_aux:?}) vs batch of both {want}"
    );
    // Each shard alone (no exchange) differs: the exchange mattered.
    let alone = identity_block::<AB>(BalanceScope::Global, &device);
    let (_, stats) = alone.forward(tensor(shards[0].clone(), [1, s, d], &device), None);
    assert!((host(stats.aux_loss)[0] as f64 - shard_aux[0]).abs() > 1e-4);
}
