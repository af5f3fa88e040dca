//! The learning-rate schedules: linear warm-up then cosine decay ([`WarmupCosineLr`], the train
//! program's, as in GPT-style training), and warm-up, constant, then a linear cooldown
//! ([`WarmupStableDecayLr`], the experiments', whose curves compare step by step until the
//! cooldown). burn 0.21's composed scheduler multiplies schedules instead of running them one
//! after the other, hence these.

use burn::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// lr(t) = base·t/warmup for t ≤ warmup, then min + (base − min)·(1 + cos(π·progress))/2 until
/// `total_steps`, and `min_lr` after.
#[derive(Debug, Clone)]
pub struct WarmupCosineLr {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Steps until the end of the cosine.
    pub total_steps: usize,
    /// Steps taken so far.
    pub step: usize,
}

impl WarmupCosineLr {
    /// A schedule at step 0.
    pub fn new(base_lr: f64, min_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self {
            base_lr,
            min_lr,
            warmup_steps,
            total_steps,
            step: 0,
        }
    }

    /// The learning rate of step `t` (1-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        if t <= self.warmup_steps {
            return self.base_lr * t as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((t - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr
            + (self.base_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosineLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        self.step += 1;
        self.lr_at(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

/// Warm-up, stable, decay: lr(t) = base·t/warmup for t ≤ warmup, then `base` until the last
/// `cooldown_steps`, over which it falls linearly to 0 (reaching 0 at `total_steps`).
#[derive(Debug, Clone)]
pub struct WarmupStableDecayLr {
    /// The learning rate of the stable phase.
    pub base_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Steps of the final linear decay.
    pub cooldown_steps: usize,
    /// The run's steps.
    pub total_steps: usize,
}

impl WarmupStableDecayLr {
    /// The schedule of a run of `total_steps` whose last `cooldown` fraction decays.
    pub fn new(base_lr: f64, warmup_steps: usize, cooldown: f64, total_steps: usize) -> Self {
        let cooldown_steps = ((total_steps as f64 * cooldown).round() as usize).max(1);
        Self {
            base_lr,
            warmup_steps,
            cooldown_steps,
            total_steps,
        }
    }

    /// The last step before the decay.
    pub fn stable_until(&self) -> usize {
        self.total_steps.saturating_sub(self.cooldown_steps)
    }

    /// The learning rate of step `t` (1-based).
    pub fn lr_at(&self, t: usize) -> f64 {
        let warm = self.warmup_steps.max(1);
        if t <= warm {
            self.base_lr * t as f64 / warm as f64
        } else if t > self.stable_until() {
            self.base_lr * self.total_steps.saturating_sub(t) as f64 / self.cooldown_steps as f64
        } else {
            self.base_lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_stable_decay_by_hand() {
        // 20 steps, 2 of warm-up, the last 10% (2 steps) decaying.
        let s = WarmupStableDecayLr::new(1.0, 2, 0.1, 20);
        assert_eq!((s.lr_at(1), s.lr_at(2), s.lr_at(10)), (0.5, 1.0, 1.0));
        assert_eq!(s.stable_until(), 18);
        assert_eq!((s.lr_at(18), s.lr_at(19), s.lr_at(20)), (1.0, 0.5, 0.0));
    }

    #[test]
    fn warmup_then_cosine_by_hand() {
        let s = WarmupCosineLr::new(1.0, 0.1, 4, 14);
        assert_eq!(s.lr_at(1), 0.25);
        assert_eq!(s.lr_at(4), 1.0);
        // Half-way through the cosine (t = 9): 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55.
        assert!((s.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(14) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-12);
    }
}
