//! Group labels for the self-grouping loss (SPEC section 2).
//!
//! Naive labeling takes the most probable group. Self-distributed labeling first subtracts the
//! expected probability of each group, so that groups which the GDN favours for every sample
//! stop winning every argmax and the samples spread over all groups:
//!
//! `p̃(G_k|x) = (1/K)·(p(G_k|x) − E[p(G_k|x)]) + 1/K`, `G*(x) = argmax_k p̃(G_k|x)`.
//!
//! E[p] is the mean of the per-batch mean probability vectors over the most recent
//! `label_window` batches, the current one included, always on detached probabilities.

use std::collections::VecDeque;
use std::fmt;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::named_enum;

/// How group labels G* are made (`labels=none|naive|self-distributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LabelMethod {
    /// No self-grouping loss: the GDN learns only through L1 (soft mode).
    None,
    /// G* = argmax p.
    Naive,
    /// G* = argmax of the probabilities re-centred on their expectation (the paper's).
    #[default]
    SelfDistributed,
}

named_enum!(
    LabelMethod,
    "none|naive|self-distributed",
    None => "none",
    Naive => "naive",
    SelfDistributed => "self-distributed"
);

/// Makes group labels from group probabilities, keeping the window of batch means that
/// estimates E[p]. One labeler lives for a whole training run.
///
/// The window is kept on the host (K floats per batch), so the labeler does not depend on the
/// backend and its state can be saved with a checkpoint ([`history`](Self::history)).
#[derive(Clone, PartialEq)]
pub struct GroupLabeler {
    method: LabelMethod,
    window: usize,
    history: VecDeque<Vec<f32>>,
}

impl GroupLabeler {
    /// A labeler with an empty history. `window` below 1 is taken as 1.
    pub fn new(method: LabelMethod, window: usize) -> Self {
        Self { method, window: window.max(1), history: VecDeque::new() }
    }

    /// The label method.
    pub fn method(&self) -> LabelMethod {
        self.method
    }

    /// Labels for one batch, updating the E[p] window. `None` when the method is `none`.
    ///
    /// # Shapes
    /// - `probs`: `[batch, K]`, rows summing to 1 (detached here)
    /// - output: `[batch]` group indices
    pub fn labels<B: Backend>(&mut self, probs: Tensor<B, 2>) -> Option<Tensor<B, 1, Int>> {
        let probs = probs.detach();
        let batch = probs.dims()[0];
        match self.method {
            LabelMethod::None => None,
            LabelMethod::Naive => Some(probs.argmax(1).reshape([batch])),
            LabelMethod::SelfDistributed => {
                let expected = self.update(probs.clone());
                let shifted = self_distributed(probs, expected);
                Some(shifted.argmax(1).reshape([batch]))
            }
        }
    }

    /// Labels for one batch with the current E[p] estimate, leaving the window unchanged (for
    /// validation). Before the first training batch, the batch's own mean stands in for E[p].
    pub fn peek_labels<B: Backend>(&self, probs: Tensor<B, 2>) -> Option<Tensor<B, 1, Int>> {
        let probs = probs.detach();
        let batch = probs.dims()[0];
        match self.method {
            LabelMethod::None => None,
            LabelMethod::Naive => Some(probs.argmax(1).reshape([batch])),
            LabelMethod::SelfDistributed => {
                let k = probs.dims()[1];
                let expected = match self.expected(&probs.device()) {
                    Some(e) if e.dims()[0] == k => e,
                    _ => probs.clone().mean_dim(0).reshape([k]),
                };
                Some(self_distributed(probs, expected).argmax(1).reshape([batch]))
            }
        }
    }

    /// Pushes this batch's mean probabilities and returns the current estimate of E[p], `[K]`.
    pub fn update<B: Backend>(&mut self, probs: Tensor<B, 2>) -> Tensor<B, 1> {
        let device = probs.device();
        let mean: Vec<f32> = probs.detach().mean_dim(0).into_data().iter::<f32>().collect();
        if self.history.back().is_some_and(|last| last.len() != mean.len()) {
            // A different number of groups: the old window says nothing about these groups.
            self.history.clear();
        }
        self.history.push_back(mean);
        while self.history.len() > self.window {
            self.history.pop_front();
        }
        self.expected(&device).expect("history holds the batch just pushed")
    }

    /// The current estimate of E[p], or `None` before the first batch.
    pub fn expected<B: Backend>(&self, device: &B::Device) -> Option<Tensor<B, 1>> {
        let k = self.history.front()?.len();
        let mut sum = vec![0.0f64; k];
        for row in &self.history {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += *v as f64;
            }
        }
        let n = self.history.len() as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        Some(Tensor::from_data(TensorData::new(mean, [k]), device))
    }

    /// The window's batch means, oldest first, for checkpoints.
    pub fn history(&self) -> Vec<Vec<f32>> {
        self.history.iter().cloned().collect()
    }

    /// Restores the window from [`history`](Self::history), keeping the newest `window` rows.
    pub fn restore(&mut self, history: &[Vec<f32>]) {
        let skip = history.len().saturating_sub(self.window);
        self.history = history[skip..].iter().cloned().collect();
    }
}

/// `p̃ = (1/K)·(p − E[p]) + 1/K`, row by row.
///
/// # Shapes
/// - `probs`: `[batch, K]`
/// - `expected`: `[K]`
/// - output: `[batch, K]`
// ANCHOR: self_distributed
pub fn self_distributed<B: Backend>(probs: Tensor<B, 2>, expected: Tensor<B, 1>) -> Tensor<B, 2> {
    let k = probs.dims()[1] as f32;
    (probs - expected.unsqueeze_dim(0)) / k + 1.0 / k
}
// ANCHOR_END: self_distributed

impl fmt::Debug for GroupLabeler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GroupLabeler({}, window {}, {} batches held)",
            self.method,
            self.window,
            self.history.len()
        )
    }
}

impl fmt::Display for GroupLabeler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (window {})", self.method, self.window)
    }
}
