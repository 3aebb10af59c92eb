//! Learning-rate schedules: the paper's constant rate and insightface's from-scratch recipes
//! (linear warm-up, then linear decay to zero or step decay).
//!
//! The schedule is a pure function of the iteration, so resuming from a checkpoint only needs
//! the iteration counter, which is what the scheduler's record holds.

use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::util::error::ConfigError;
use crate::util::named_enum;

/// How the learning rate moves after the warm-up (`schedule=constant|linear|step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// The base rate throughout (the paper's fine-tuning stage).
    #[default]
    Constant,
    /// Linear decay to 0 at the last iteration (insightface's PolyScheduler, power 1).
    Linear,
    /// Multiplied by `step_factor` at each epoch of `step_epochs`.
    Step,
}

named_enum!(
    ScheduleKind,
    "constant|linear|step",
    Constant => "constant",
    Linear => "linear",
    Step => "step"
);

/// A schedule over `total` iterations of `per_epoch` iterations each.
///
/// Iteration `t` (0-based, the one about to run) gets
/// - warm-up (`t < warmup`): `lr · (t + 1) / warmup`;
/// - `constant`: `lr`;
/// - `linear`: `lr · (1 − (t − warmup) / (total − warmup))`;
/// - `step`: `lr · step_factor^(number of step epochs e with t ≥ e · per_epoch)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Base learning rate.
    pub lr: f64,
    /// The shape after the warm-up.
    pub kind: ScheduleKind,
    /// Warm-up iterations.
    pub warmup: usize,
    /// All iterations of the run.
    pub total: usize,
    /// Iterations per epoch (for step decay).
    pub per_epoch: usize,
    /// Factor of each step.
    pub step_factor: f64,
}

/// The learning-rate schedule of a run, stepping once per optimiser update.
#[derive(Debug, Clone)]
pub struct Schedule {
    spec: ScheduleSpec,
    step_epochs: Vec<usize>,
    iteration: usize,
}

impl Schedule {
    /// A schedule starting at iteration 0.
    pub fn new(spec: ScheduleSpec, step_epochs: Vec<usize>) -> Result<Self, ConfigError> {
        if !(spec.lr.is_finite() && spec.lr > 0.0) {
            return Err(ConfigError::new("lr", "a positive learning rate", spec.lr.to_string()));
        }
        if spec.total == 0 || spec.per_epoch == 0 {
            return Err(ConfigError::new(
                "epochs",
                "at least one iteration",
                format!("{} iterations", spec.total),
            ));
        }
        if spec.warmup >= spec.total && spec.kind == ScheduleKind::Linear {
            return Err(ConfigError::new(
                "warmup",
                format!("fewer warm-up iterations than the {} of the run", spec.total),
                spec.warmup.to_string(),
            ));
        }
        if !(spec.step_factor.is_finite() && spec.step_factor > 0.0) {
            return Err(ConfigError::new(
                "step_factor",
                "a positive factor",
                spec.step_factor.to_string(),
            ));
        }
        Ok(Self { spec, step_epochs, iteration: 0 })
    }

    /// The rate of iteration `t` (0-based), without moving the schedule.
    // ANCHOR: rate_at
    pub fn rate_at(&self, t: usize) -> f64 {
        let s = &self.spec;
        if t < s.warmup {
            return s.lr * (t + 1) as f64 / s.warmup as f64;
        }
        match s.kind {
            ScheduleKind::Constant => s.lr,
            ScheduleKind::Linear => {
                let span = (s.total - s.warmup) as f64;
                let done = (t - s.warmup) as f64;
                (s.lr * (1.0 - done / span)).max(0.0)
            }
            ScheduleKind::Step => {
                let passed = self.step_epochs.iter().filter(|&&e| t >= e * s.per_epoch).count();
                s.lr * s.step_factor.powi(passed as i32)
            }
        }
    }
    // ANCHOR_END: rate_at
}

impl LrScheduler for Schedule {
    // The iteration counter is all the state there is.
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let rate = self.rate_at(self.iteration);
        self.iteration += 1;
        rate
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ScheduleKind, warmup: usize) -> ScheduleSpec {
        ScheduleSpec { lr: 0.1, kind, warmup, total: 10, per_epoch: 4, step_factor: 0.1 }
    }

    #[test]
    fn warmup_then_linear_decay() {
        let mut s = Schedule::new(spec(ScheduleKind::Linear, 2), vec![]).unwrap();
        let rates: Vec<f64> = (0..10).map(|_| s.step()).collect();
        // warm-up: 0.1·1/2, 0.1·2/2; then 0.1·(1 − k/8) for k = 0..7.
        let expected = [0.05, 0.1, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125];
        for (r, e) in rates.iter().zip(expected) {
            assert!((r - e).abs() < 1e-12, "{rates:?}");
        }
    }

    #[test]
    fn step_decay_at_epochs() {
        let s = Schedule::new(spec(ScheduleKind::Step, 0), vec![1, 2]).unwrap();
        // per_epoch 4: epoch 0 → 0.1, epoch 1 → 0.01, epoch 2 on → 0.001.
        let rates: Vec<f64> = (0..10).map(|t| s.rate_at(t)).collect();
        for (t, r) in rates.iter().enumerate() {
            let e = 0.1 * 0.1f64.powi((t / 4).min(2) as i32);
            assert!((r - e).abs() < 1e-15, "t={t}: {r} vs {e}");
        }
    }

    #[test]
    fn record_resumes_the_sequence() {
        let mut a = Schedule::new(spec(ScheduleKind::Linear, 3), vec![]).unwrap();
        let first: Vec<f64> = (0..4).map(|_| a.step()).collect();
        let record = LrScheduler::to_record::<burn::backend::Flex>(&a);
        let b = Schedule::new(spec(ScheduleKind::Linear, 3), vec![]).unwrap();
        let mut b = LrScheduler::load_record::<burn::backend::Flex>(b, record);
        assert_eq!(first.len(), 4);
        for _ in 0..6 {
            assert_eq!(a.step(), b.step());
        }
    }

    #[test]
    fn bad_specs_are_named() {
        let err = Schedule::new(spec(ScheduleKind::Linear, 10), vec![]).unwrap_err();
        assert_eq!(err.key, "warmup");
        let mut bad = spec(ScheduleKind::Constant, 0);
        bad.lr = 0.0;
        assert_eq!(Schedule::new(bad, vec![]).unwrap_err().key, "lr");
    }
}
