//! One training run with everything recorded: a plain loop (not the Learner) so that routing can
//! be logged at every step, experts can get their own learning rate, and a diverging run stops
//! cleanly with its history kept.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::init::HostRng;
use crate::train::{WarmupCosineLr, WarmupStableDecayLr};
use crate::{EncoderBlock, RoutingMode, RoutingStats, SwitchLm, SwitchLmConfig};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::cli::Corpus;
use super::eval::{
    ByteCounts, DomainCounts, evaluate, evaluate_all, evaluate_mixed, objective_step,
    probe_routing, to_f64,
};

/// Everything that defines a run besides the corpus.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Label in tables, legends and file names.
    pub name: String,
    /// The model.
    pub model: SwitchLmConfig,
    /// Seed of initialisation, jitter, dropout and batch sampling.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per batch.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, linear warm-up then cosine to 10%).
    pub lr: f64,
    /// Experts' learning rate as a multiple of `lr` (1.0: the same).
    pub expert_lr_ratio: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Validate every this many steps.
    pub eval_every: usize,
    /// Validation windows (evenly spaced over the validation split, the same for every eval).
    pub eval_windows: usize,
    /// Record routing fractions averaged over this many steps.
    pub log_every: usize,
    /// `Some(c)`: constant learning rate after the warm-up, then a linear cooldown to 0 over
    /// the last fraction c of the steps (curves of different runs compare step by step until
    /// the cooldown); `None`: cosine to 10%.
    pub cooldown: Option<f64>,
    /// Zero the sparse layers' expert output weights and freeze the experts: the same function
    /// as a model without those FFNs (the headroom probe's "FFNs removed" arm).
    pub remove_sparse_ffn: bool,
    /// Draw training windows from the domains in these proportions instead of uniformly from
    /// the concatenated training text (multi-domain corpora only).
    pub mixture: Option<Mixture>,
    /// What the model learns: next-token prediction (causal) or masked tokens (bidirectional).
    pub objective: Objective,
    /// Switch the sparse layers to expert choice after building the model (bidirectional
    /// objectives only: the library refuses it in a causal LM, where it would leak the future).
    pub expert_choice: bool,
    /// `Some(s)`: re-draw **every** weight matrix (attention, dense FFNs, head, routers,
    /// experts; not the embeddings, norms or biases) from the truncated normal of std
    /// √(s / fan_in), as the Switch paper's Table 3 does; `None`: the library's initialisation
    /// (router and experts at the config's scale, other layers Burn's defaults).
    pub init_all: Option<f64>,
    /// `Some(s)`: after step s every router stops learning (its parameters leave the graph);
    /// the experts and the rest of the model go on.
    pub freeze_router_at: Option<usize>,
    /// Also measure each domain's test cross-entropy at the eval capacity factor in
    /// domain-mixed batches ([`DomainEval::test_ce_mixed`]; multi-domain corpora only).
    pub eval_mixed: bool,
}

/// Re-draws every weight matrix from the paper's truncated normal (see [`RunSpec::init_all`]).
struct ScaledInit<'a, B: Backend> {
    scale: f64,
    path: Vec<String>,
    device: &'a B::Device,
}

impl<B: Backend> burn::module::ModuleMapper<B> for ScaledInit<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let in_embedding = self.path.iter().any(|p| p.contains("embedding"));
        let is_bias = self
            .path
            .last()
            .is_some_and(|p| p == "bias" || p.starts_with("b_"));
        if D < 2 || in_embedding || is_bias {
            return param;
        }
        let (scale, device) = (self.scale, self.device);
        param.map(|w| {
            // Linear weights are [in, out]; expert weights [E, in, out]: fan-in is dims[D − 2].
            let dims = w.dims();
            let init = crate::init::truncated_normal::<B, D>(dims, scale, dims[D - 2], device);
            let init = init.cast(w.dtype());
            if w.is_require_grad() {
                init.require_grad()
            } else {
                init
            }
        })
    }
}

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Next-token prediction with causal attention ([`SwitchLm::forward_step`]).
    Causal,
    /// Masked-token prediction with bidirectional attention: each position shows the mask token
    /// (the last id of the vocabulary) with probability `rate`, and only those positions are
    /// scored. The model's embeddings, encoder, norm and head are used without the causal mask.
    Masked {
        /// Share of the positions masked.
        rate: f64,
    },
}

/// A domain mixture for the training batches.
#[derive(Debug, Clone)]
pub struct Mixture {
    /// (domain index in [`Corpus::domains`], probability); the probabilities sum to 1.
    pub weights: Vec<(usize, f64)>,
    /// `true`: every batch comes from one domain, drawn with these probabilities
    /// (domain-homogeneous batches); `false`: every window draws its own domain (mixed batches).
    pub homogeneous: bool,
}

impl Mixture {
    /// The domain of a draw `u` in [0, 1).
    fn pick(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for &(d, w) in &self.weights {
            acc += w;
            if u < acc {
                return d;
            }
        }
        self.weights.last().map_or(0, |w| w.0)
    }
}

impl RunSpec {
    /// The learning rate at `step` (1-based): the library's schedules.
    pub fn lr_at(&self, step: usize) -> f64 {
        match self.cooldown {
            None => WarmupCosineLr::new(self.lr, self.lr * 0.1, self.warmup_steps, self.steps)
                .lr_at(step),
            Some(c) => {
                WarmupStableDecayLr::new(self.lr, self.warmup_steps, c, self.steps).lr_at(step)
            }
        }
    }

    /// The last step before the cooldown (the whole run without one).
    pub fn constant_until(&self) -> usize {
        match self.cooldown {
            Some(c) => {
                WarmupStableDecayLr::new(self.lr, self.warmup_steps, c, self.steps).stable_until()
            }
            None => self.steps,
        }
    }
}

/// A domain's cross-entropy on its full held-out splits at the end of a run.
#[derive(Debug, Clone)]
pub struct DomainEval {
    /// The domain.
    pub name: String,
    /// Cross-entropy on the whole test split (nats per token) at the eval capacity factor, in
    /// batches of this domain alone (round 2's measure).
    pub test_ce: f64,
    /// The same without capacity limits (dropless): what the model knows, whatever the batch.
    pub test_ce_dropless: f64,
    /// At the eval capacity factor in domain-mixed batches ([`RunSpec::eval_mixed`]).
    pub test_ce_mixed: Option<f64>,
    /// Tokens evaluated.
    pub tokens: usize,
}

/// The state at one validation point.
#[derive(Debug, Clone)]
pub struct Point {
    /// Optimiser steps done.
    pub step: usize,
    /// Passes over the training tokens.
    pub epoch: f64,
    /// Mean training cross-entropy since the previous point.
    pub train_ce: f64,
    /// Validation cross-entropy (eval mode: no dropout or jitter, eval capacity factor).
    pub valid_ce: f64,
    /// Mean load-balancing loss since the previous point (1.0 = uniform).
    pub aux: f64,
    /// Mean router z-loss since the previous point.
    pub z: f64,
    /// Mean dropped-token fraction since the previous point.
    pub dropped: f64,
    /// Mean router entropy (nats) since the previous point.
    pub entropy: f64,
    /// E · max fraction of the busiest expert (1.0 = balanced), mean since the previous point.
    pub max_load: f64,
    /// Mean Frobenius norm of one expert's weights (w_in and w_out together), per sparse layer.
    pub expert_norm: Vec<f64>,
}

/// Per-expert token fractions of one sparse layer, averaged over `log_every` steps.
#[derive(Debug, Clone)]
pub struct RoutingRow {
    /// Last step of the window.
    pub step: usize,
    /// Sparse layer index (0-based among the sparse layers).
    pub layer: usize,
    /// Fraction of first choices per expert (sums to 1).
    pub fractions: Vec<f64>,
}

/// The record of a run.
#[derive(Debug, Clone)]
pub struct RunLog {
    /// The spec it ran.
    pub spec: RunSpec,
    /// Validation points in step order.
    pub points: Vec<Point>,
    /// Routing fractions over time.
    pub routing: Vec<RoutingRow>,
    /// Training tokens per second (forward, backward and optimiser; evals excluded).
    pub tokens_per_s: f64,
    /// Wall time of the run including evals.
    pub wall_s: f64,
    /// The step at which the loss became non-finite, if it did.
    pub diverged_at: Option<usize>,
    /// Parameters in the model.
    pub num_params: usize,
    /// Per-domain test cross-entropy at the end (multi-domain corpora only).
    pub final_eval: Vec<DomainEval>,
    /// Largest E · max_i f_i of any sparse layer in any training batch (1.0 = balanced).
    pub peak_load: f64,
    /// Per training domain (index in `Corpus::domains`): (tokens routed, tokens no expert
    /// processed), summed over the sparse layers and the run (mixture runs only).
    pub domain_drops: Vec<(usize, f64, f64)>,
    /// First-choice counts `[layer][domain][expert]` of the trained model in eval mode on the
    /// first `PROBE_TOKENS` tokens of each domain's test split (multi-domain corpora only).
    pub domain_routing: DomainCounts,
    /// The same per current input byte, `[layer][byte][domain][expert]`.
    pub byte_routing: ByteCounts,
}

impl RunLog {
    /// The last validation loss.
    pub fn final_valid(&self) -> f64 {
        self.points.last().map_or(f64::NAN, |p| p.valid_ce)
    }

    /// The best validation loss and its step (what early stopping on validation loss keeps).
    pub fn best_valid(&self) -> (f64, usize) {
        self.points
            .iter()
            .filter(|p| p.valid_ce.is_finite())
            .map(|p| (p.valid_ce, p.step))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((f64::NAN, 0))
    }

    /// The first step whose validation loss is at or below `target`.
    pub fn first_step_reaching(&self, target: f64) -> Option<usize> {
        self.points
            .iter()
            .find(|p| p.valid_ce <= target)
            .map(|p| p.step)
    }

    /// Writes `<name>.csv` (one row per validation point) and `<name>_routing.csv`.
    pub fn write_csv(&self, dir: &Path) -> std::io::Result<()> {
        let mut f = std::fs::File::create(dir.join(format!("{}.csv", self.spec.name)))?;
        writeln!(
            f,
            "step,epoch,train_ce,valid_ce,aux,z,dropped,entropy,max_load,expert_norm"
        )?;
        for p in &self.points {
            let norms: Vec<String> = p.expert_norm.iter().map(|n| format!("{n:.4}")).collect();
            writeln!(
                f,
                "{},{:.4},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.4},{}",
                p.step,
                p.epoch,
                p.train_ce,
                p.valid_ce,
                p.aux,
                p.z,
                p.dropped,
                p.entropy,
                p.max_load,
                norms.join(";")
            )?;
        }
        let mut f = std::fs::File::create(dir.join(format!("{}_routing.csv", self.spec.name)))?;
        writeln!(f, "step,layer,expert,fraction")?;
        for r in &self.routing {
            for (e, v) in r.fractions.iter().enumerate() {
                writeln!(f, "{},{},{e},{v:.5}", r.step, r.layer)?;
            }
        }
        Ok(())
    }
}

/// The expert weight parameters (w_in, w_out, w_up and biases) of every sparse layer.
fn expert_param_ids<B: Backend>(model: &SwitchLm<B>) -> Vec<ParamId> {
    let mut ids = Vec::new();
    for layer in &model.encoder.layers {
        if let EncoderBlock::Sparse(l) = layer {
            let x = &l.moe.experts;
            ids.push(x.w_in.id);
            ids.push(x.w_out.id);
            ids.extend(x.w_up.iter().map(|p| p.id));
            ids.extend(x.b_in.iter().map(|p| p.id));
            ids.extend(x.b_out.iter().map(|p| p.id));
        }
    }
    ids
}

/// Mean Frobenius norm of one expert's weights, per sparse layer.
fn expert_norms<B: Backend>(model: &SwitchLm<B>) -> Vec<f64> {
    model
        .encoder
        .layers
        .iter()
        .filter_map(|layer| match layer {
            EncoderBlock::Sparse(l) => {
                let x = &l.moe.experts;
                let e = x.num_experts() as f64;
                let sq = x.w_in.val().powi_scalar(2).sum() + x.w_out.val().powi_scalar(2).sum();
                Some(to_f64(sq)[0] / e)
            }
            EncoderBlock::Dense(_) => None,
        })
        .map(f64::sqrt)
        .collect()
}

/// The batch's window starts in `corpus.train`, and each window's domain (0 without a mixture).
fn draw_windows(spec: &RunSpec, corpus: &Corpus, rng: &mut HostRng) -> (Vec<usize>, Vec<usize>) {
    let seq = spec.model.max_seq_len;
    let Some(mixture) = &spec.mixture else {
        let starts = (0..spec.batch_size)
            .map(|_| rng.below(corpus.train.len() - seq - 1))
            .collect();
        return (starts, vec![0; spec.batch_size]);
    };
    let batch_domain = mixture.pick(rng.unit());
    let labels: Vec<usize> = (0..spec.batch_size)
        .map(|_| {
            if mixture.homogeneous {
                batch_domain
            } else {
                mixture.pick(rng.unit())
            }
        })
        .collect();
    let starts = labels
        .iter()
        .map(|&d| {
            let range = &corpus.domains[d].train;
            range.start + rng.below(range.len() - seq - 1)
        })
        .collect();
    (starts, labels)
}

/// Trains `spec` on `corpus` and records it. Progress goes to stderr, one line per validation.
pub fn train_run<B: AutodiffBackend>(
    spec: &RunSpec,
    corpus: &Corpus,
    device: &B::Device,
) -> RunLog {
    train_run_with::<B>(spec, corpus, device, &mut |_, _, _| {})
}

/// The model of `spec`, with its experiment-only changes (every weight re-drawn, expert choice,
/// the sparse FFNs removed).
fn build_model<B: AutodiffBackend>(spec: &RunSpec, device: &B::Device) -> SwitchLm<B> {
    B::seed(device, spec.seed);
    let mut model: SwitchLm<B> = spec.model.init(device);
    if let Some(scale) = spec.init_all {
        model = model.map(&mut ScaledInit {
            scale,
            path: Vec::new(),
            device,
        });
    }
    for layer in model.encoder.layers.iter_mut() {
        let EncoderBlock::Sparse(l) = layer else {
            continue;
        };
        if spec.expert_choice {
            l.moe.routing = RoutingMode::ExpertChoice;
        }
        if spec.remove_sparse_ffn {
            let w = l.moe.experts.w_out.val();
            l.moe.experts.w_out = Param::from_tensor(w.zeros_like());
            l.moe.experts = l.moe.experts.clone().no_grad();
        }
    }
    model
}

/// What a run accumulates between validation points and over the whole run.
struct Recorder {
    acc: Accumulator,
    route_acc: Vec<Vec<f64>>,
    route_n: usize,
    routing: Vec<RoutingRow>,
    peak_load: f64,
    /// Per domain: (tokens routed, tokens no expert processed).
    domain_drops: Vec<(f64, f64)>,
}

impl Recorder {
    fn new(domains: usize) -> Self {
        Self {
            acc: Accumulator::default(),
            route_acc: Vec::new(),
            route_n: 0,
            routing: Vec::new(),
            peak_load: 0.0,
            domain_drops: vec![(0.0, 0.0); domains.max(1)],
        }
    }

    /// Adds a training step: its cross-entropy and routing, and (with a mixture) each window's
    /// tokens that no expert processed, counted for the window's domain.
    fn step(
        &mut self,
        ce: f64,
        stats: &RoutingStats,
        used: &[Vec<f64>],
        labels: &[usize],
        seq: usize,
    ) {
        for used in used {
            for (w, label) in labels.iter().enumerate() {
                let tokens = &used[w * seq..(w + 1) * seq];
                let row = &mut self.domain_drops[*label];
                row.0 += seq as f64;
                row.1 += tokens.iter().filter(|u| **u == 0.0).count() as f64;
            }
        }
        let loads = stats.layers.iter().map(|l| l.max_expert_load());
        self.peak_load = loads.fold(self.peak_load, f64::max);
        self.acc.add(
            ce,
            stats.aux_loss,
            stats.z_loss,
            stats.layer_mean(|l| l.dropped_fraction),
            stats.layer_mean(|l| l.router_entropy),
            stats.layer_mean(|l| l.max_expert_load()),
        );
        if self.route_acc.is_empty() {
            self.route_acc = vec![vec![0.0; stats.num_experts()]; stats.layers.len()];
        }
        for (sums, layer) in self.route_acc.iter_mut().zip(&stats.layers) {
            sums.iter_mut()
                .zip(&layer.token_fractions)
                .for_each(|(s, f)| *s += f);
        }
        self.route_n += 1;
    }

    /// Closes a routing window at `step`: the mean fractions since the last one.
    fn routing_row(&mut self, step: usize) {
        for (l, row) in self.route_acc.iter_mut().enumerate() {
            self.routing.push(RoutingRow {
                step,
                layer: l,
                fractions: row.iter().map(|v| v / self.route_n as f64).collect(),
            });
            row.iter_mut().for_each(|v| *v = 0.0);
        }
        self.route_n = 0;
    }
}

/// The optimisers of a run: one for everything, and one for the experts when they learn at
/// their own rate ([`RunSpec::expert_lr_ratio`]).
struct Optimisers<B: AutodiffBackend, O> {
    all: O,
    experts: O,
    expert_ids: Vec<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend, O: Optimizer<SwitchLm<B>, B>> Optimisers<B, O> {
    fn step(
        &mut self,
        spec: &RunSpec,
        lr: f64,
        model: SwitchLm<B>,
        mut grads: B::Gradients,
    ) -> SwitchLm<B> {
        if spec.expert_lr_ratio == 1.0 {
            let grads = GradientsParams::from_grads(grads, &model);
            return self.all.step(lr, model, grads);
        }
        let expert_grads = GradientsParams::from_params(&mut grads, &model, &self.expert_ids);
        let rest = GradientsParams::from_grads(grads, &model);
        let model = self.all.step(lr, model, rest);
        self.experts
            .step(lr * spec.expert_lr_ratio, model, expert_grads)
    }
}

/// What a program measures at each validation point: `(step, valid_ce, model)`.
pub type EvalHook<'a, B> =
    dyn FnMut(usize, f64, &SwitchLm<<B as AutodiffBackend>::InnerBackend>) + 'a;

/// [`train_run`], calling `on_eval(step, valid_ce, model)` at every validation point with the
/// validation loss and the model in evaluation mode, for measurements a program adds.
// Over 100 lines on purpose: the training loop with its validation points, checkpoints and resume in one
// place, as a reader of a study expects to find it.
pub fn train_run_with<B: AutodiffBackend>(
    spec: &RunSpec,
    corpus: &Corpus,
    device: &B::Device,
    on_eval: &mut EvalHook<'_, B>,
) -> RunLog {
    let mut model = build_model::<B>(spec, device);
    let num_params = model.num_params();
    let seq = spec.model.max_seq_len;
    let optim_config = AdamWConfig::new()
        .with_weight_decay(spec.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)));
    let mut optim = Optimisers {
        all: optim_config.init::<B, SwitchLm<B>>(),
        experts: optim_config.init::<B, SwitchLm<B>>(),
        expert_ids: expert_param_ids(&model),
        _b: std::marker::PhantomData,
    };
    let mut rng = HostRng::new(spec.seed ^ 0x5EED);
    let tokens_per_step = spec.batch_size * seq;
    let mut rec = Recorder::new(corpus.domains.len());
    let mut points = Vec::new();
    let (mut train_time, mut diverged_at) = (0.0, None);
    let started = Instant::now();

    for step in 1..=spec.steps {
        if spec.freeze_router_at == Some(step - 1) {
            freeze_routers(&mut model);
            eprintln!("[{}] step {step}: routers frozen", spec.name);
        }
        let t0 = Instant::now();
        let (starts, labels) = draw_windows(spec, corpus, &mut rng);
        let salt = rng.next_u64();
        let out = objective_step(&model, spec, &corpus.train, &starts, salt, device);
        let grads = out.loss.backward();
        model = optim.step(spec, spec.lr_at(step), model, grads);
        // The step's numbers on the host, in one transaction (what the Learner's metrics read);
        // with a mixture also each token's experts-used count per sparse layer.
        let mut extra = vec![out.cross_entropy];
        if spec.mixture.is_some() {
            let used = out
                .moe
                .layers
                .iter()
                .map(|l| l.token_experts_used.clone().float());
            extra.extend(used);
        }
        let (stats, extra) = RoutingStats::read_with(&out.moe, extra);
        let ce = extra[0][0];
        train_time += t0.elapsed().as_secs_f64();
        if !ce.is_finite() {
            diverged_at = Some(step);
            eprintln!(
                "[{}] step {step}: loss is {ce}, the run diverged; stopping",
                spec.name
            );
            break;
        }
        rec.step(ce, &stats, &extra[1..], &labels, seq);
        if step % spec.log_every == 0 || step == spec.steps {
            rec.routing_row(step);
        }
        if step % spec.eval_every == 0 || step == spec.steps {
            let valid_model = model.valid();
            let valid_ce = evaluate(&valid_model, corpus, spec, device);
            on_eval(step, valid_ce, &valid_model);
            let epoch = (step * tokens_per_step) as f64 / corpus.train.len() as f64;
            let point = rec.acc.point(step, epoch, valid_ce, expert_norms(&model));
            let rate = (step * tokens_per_step) as f64 / train_time;
            log_point(spec, &point, rate, started.elapsed().as_secs_f64());
            points.push(point);
            rec.acc = Accumulator::default();
        }
    }
    let steps_done = diverged_at.map_or(spec.steps, |s| s - 1);
    let finished = diverged_at.is_none();
    let valid_model = model.valid();
    let final_eval = if finished {
        final_evals(&valid_model, corpus, spec, device)
    } else {
        Vec::new()
    };
    let (domain_routing, byte_routing) = if finished && !corpus.domains.is_empty() {
        probe_routing(&valid_model, corpus, spec, device)
    } else {
        (Vec::new(), Vec::new())
    };
    let domain_drops = match &spec.mixture {
        Some(m) => m
            .weights
            .iter()
            .map(|&(d, _)| (d, rec.domain_drops[d].0, rec.domain_drops[d].1))
            .collect(),
        None => Vec::new(),
    };
    RunLog {
        final_eval,
        peak_load: rec.peak_load,
        domain_drops,
        domain_routing,
        byte_routing,
        spec: spec.clone(),
        points,
        routing: rec.routing,
        tokens_per_s: (steps_done * tokens_per_step) as f64 / train_time.max(1e-9),
        wall_s: started.elapsed().as_secs_f64(),
        diverged_at,
        num_params,
    }
}

/// Takes every router out of the graph (its parameters stop learning).
fn freeze_routers<B: AutodiffBackend>(model: &mut SwitchLm<B>) {
    for layer in model.encoder.layers.iter_mut() {
        if let EncoderBlock::Sparse(l) = layer {
            l.moe.router = l.moe.router.clone().no_grad();
        }
    }
}

/// A validation point's line on stderr.
fn log_point(spec: &RunSpec, p: &Point, tokens_per_s: f64, elapsed: f64) {
    eprintln!(
        "[{}] step {}/{} epoch {:.2}: train {:.4} valid {:.4} aux {:.3} drop {:.3} H {:.3} \
         load {:.2} ({tokens_per_s:.0} tok/s, {elapsed:.0} s)",
        spec.name,
        p.step,
        spec.steps,
        p.epoch,
        p.train_ce,
        p.valid_ce,
        p.aux,
        p.dropped,
        p.entropy,
        p.max_load,
    );
}

/// Each domain's test cross-entropy: at the eval capacity factor in domain-homogeneous batches,
/// dropless, and (with [`RunSpec::eval_mixed`]) at the eval capacity factor in mixed batches.
fn final_evals<B: Backend>(
    model: &SwitchLm<B>,
    corpus: &Corpus,
    spec: &RunSpec,
    device: &B::Device,
) -> Vec<DomainEval> {
    let dropless = model.clone().dropless();
    let mixed = spec
        .eval_mixed
        .then(|| evaluate_mixed(model, corpus, spec, device));
    corpus
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let t0 = Instant::now();
            let test_ce = evaluate_all(model, &d.test, spec, device);
            let test_ce_dropless = evaluate_all(&dropless, &d.test, spec, device);
            let test_ce_mixed = mixed.as_ref().map(|m| m[i]);
            eprintln!(
                "[{}] test {}: {test_ce:.4} (dropless {test_ce_dropless:.4}, mixed batches \
                 {test_ce_mixed:?}) over {} tokens ({:.0} s)",
                spec.name,
                d.name,
                d.test.len(),
                t0.elapsed().as_secs_f64()
            );
            DomainEval {
                name: d.name.clone(),
                test_ce,
                test_ce_dropless,
                test_ce_mixed,
                tokens: d.test.len(),
            }
        })
        .collect()
}

#[derive(Default)]
struct Accumulator {
    n: usize,
    ce: f64,
    aux: f64,
    z: f64,
    dropped: f64,
    entropy: f64,
    max_load: f64,
}

impl Accumulator {
    fn add(&mut self, ce: f64, aux: f64, z: f64, dropped: f64, entropy: f64, max_load: f64) {
        self.n += 1;
        self.ce += ce;
        self.aux += aux;
        self.z += z;
        self.dropped += dropped;
        self.entropy += entropy;
        self.max_load += max_load;
    }

    fn point(&self, step: usize, epoch: f64, valid_ce: f64, expert_norm: Vec<f64>) -> Point {
        let n = self.n.max(1) as f64;
        Point {
            step,
            epoch,
            train_ce: self.ce / n,
            valid_ce,
            aux: self.aux / n,
            z: self.z / n,
            dropped: self.dropped / n,
            entropy: self.entropy / n,
            max_load: self.max_load / n,
            expert_norm,
        }
    }
}

/// A compact model config for the experiments: pre-norm, causal, every other layer sparse.
pub fn lm_config(
    vocab_size: usize,
    seq: usize,
    d_model: usize,
    d_ff: usize,
    n_layers: usize,
    num_experts: usize,
) -> SwitchLmConfig {
    let encoder = crate::SwitchEncoderConfig::new(d_model, d_ff, 4, n_layers, num_experts)
        .with_norm_first(true)
        .with_moe_every(2);
    SwitchLmConfig::new(vocab_size, seq, encoder)
}

/// Each run's (step, or epoch when `by_epoch`; value) points.
fn curves(runs: &[&RunLog], by_epoch: bool, value: impl Fn(&Point) -> f64) -> Vec<Curve> {
    runs.iter()
        .map(|r| {
            r.points
                .iter()
                .map(|p| (if by_epoch { p.epoch } else { p.step as f64 }, value(p)))
                .collect()
        })
        .collect()
}

/// The mean over runs (e.g. seeds) of a per-point quantity, against step (or epoch when
/// `by_epoch`), cut to the shortest run.
pub fn mean_curve(
    runs: &[&RunLog],
    by_epoch: bool,
    value: impl Fn(&Point) -> f64,
) -> Vec<(f64, f64)> {
    mean_and_band(&curves(runs, by_epoch, value)).0
}

/// The lowest and highest value over runs (e.g. seeds) at each point: `(x, low, high)`, cut to
/// the shortest run; the band drawn around a [`mean_curve`].
pub fn seed_band(
    runs: &[&RunLog],
    by_epoch: bool,
    value: impl Fn(&Point) -> f64,
) -> Vec<(f64, f64, f64)> {
    mean_and_band(&curves(runs, by_epoch, value)).1
}

/// (x, y) points in x order.
pub type Curve = Vec<(f64, f64)>;
/// (x, low, high) points in x order.
pub type Band = Vec<(f64, f64, f64)>;

/// The mean of several curves point by point, and their `(x, low, high)` range; x from the
/// first curve, all cut to the shortest.
pub fn mean_and_band(curves: &[Curve]) -> (Curve, Band) {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    let at = |i: usize| curves.iter().map(move |c| c[i].1);
    (0..n)
        .map(|i| {
            let x = curves[0][i].0;
            let mean = at(i).sum::<f64>() / curves.len() as f64;
            let lo = at(i).fold(f64::INFINITY, f64::min);
            let hi = at(i).fold(f64::NEG_INFINITY, f64::max);
            ((x, mean), (x, lo, hi))
        })
        .unzip()
}

/// A spec with the settings all experiments share; each program changes what it studies.
pub fn base_spec(
    name: String,
    model: SwitchLmConfig,
    seed: u64,
    steps: usize,
    batch_size: usize,
) -> RunSpec {
    RunSpec {
        name,
        model,
        seed,
        steps,
        batch_size,
        // Fastest stable lr found for this size; warm-up 5% then cosine to 10%.
        lr: 3e-3,
        cooldown: None,
        remove_sparse_ffn: false,
        mixture: None,
        objective: Objective::Causal,
        expert_choice: false,
        init_all: None,
        freeze_router_at: None,
        expert_lr_ratio: 1.0,
        warmup_steps: (steps / 20).max(1),
        weight_decay: 0.01,
        eval_every: (steps / 20).max(1),
        eval_windows: 128,
        log_every: (steps / 60).max(1),
        eval_mixed: false,
    }
}
