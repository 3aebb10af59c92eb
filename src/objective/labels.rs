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
//!
//! The subtraction can happen in one of three spaces ([`LabelSpace`], `label_space=`). The
//! paper prints it on probabilities (`prob`). A softmax moves a group's probability in
//! proportion to the probability itself, so a group the GDN favours also varies the most from
//! sample to sample and keeps winning the argmax after its mean is taken away: on a stream of
//! skewed softmax outputs it keeps a share close to its mean probability, and near one half
//! once it dominates (`tests/integration/math.rs`, the label-balance tests). On log-probabilities (`log`)
//! the softmax's normaliser is one constant per row, which no argmax sees, so taking away
//! E[log p] cancels a skew of the logits exactly. What it leaves is the spread: a group whose
//! logits vary more wins more argmaxes, so `zlog` (the default) also divides by each group's
//! standard deviation over the window. The book's chapter on the group labels has the
//! derivation and the training runs that chose the default.

use std::collections::VecDeque;
use std::fmt;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use burn::tensor::activation::log_softmax;

use crate::data::dataset::StepKey;
use crate::model::GroupOutput;
use crate::util::named_enum;

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

/// Where self-distributed labeling takes away the expectation (`label_space=prob|log|zlog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LabelSpace {
    /// `argmax_k p_k − E[p_k]`: the paper's formula as printed.
    Prob,
    /// `argmax_k log p_k − E[log p_k]`: the expectation taken away from log-probabilities.
    Log,
    /// `argmax_k (log p_k − E[log p_k]) / std[log p_k]`: log-probabilities standardised per
    /// group over the window, so that a group whose scores spread more than the others' does
    /// not win more argmaxes for it (the default; the book's group-labels chapter has the
    /// measurements that chose it).
    #[default]
    Zlog,
}

named_enum!(LabelSpace, "prob|log|zlog", Prob => "prob", Log => "log", Zlog => "zlog");

impl LabelSpace {
    /// The per-sample scores whose expectation the labeler takes away.
    ///
    /// # Shapes
    /// - output: `[batch, K]`, `p` for `prob`, `log p` (from the logits, so finite where `p`
    ///   underflows to 0) for `log` and `zlog`
    pub fn scores<B: Backend>(self, groups: &GroupOutput<B>) -> Tensor<B, 2> {
        match self {
            Self::Prob => groups.probs.clone(),
            Self::Log | Self::Zlog => log_softmax(groups.logits.clone(), 1),
        }
    }

    /// Whether the window also keeps the mean square of the scores (rows of `2K` values:
    /// the K means, then the K mean squares).
    fn keeps_spread(self) -> bool {
        self == Self::Zlog
    }
}

/// Makes group labels from group probabilities, keeping the window of batch means that
/// estimates E[p]. One labeler lives for a whole training run.
///
/// The window is kept on the host (K floats per batch), so the labeler does not depend on the
/// backend and its state can be saved with a checkpoint ([`history`](Self::history)).
///
/// Data-parallel replicas share one labeler. Their calls for one optimiser step arrive in
/// whichever order their threads finish, so [`labels_for_step`](Self::labels_for_step) makes
/// the order irrelevant: every replica of a step labels with the window of the earlier steps
/// plus its own batch, and the step's batch means join the window together, in a fixed order,
/// when the next step begins.
#[derive(Clone, PartialEq)]
pub struct GroupLabeler {
    method: LabelMethod,
    space: LabelSpace,
    window: usize,
    history: VecDeque<Vec<f32>>,
    /// The batch means of the step in progress, with its key; not yet in `history`.
    pending: Option<(StepKey, Vec<Vec<f32>>)>,
}

impl GroupLabeler {
    /// A labeler with an empty history. `window` below 1 is taken as 1.
    pub fn new(method: LabelMethod, window: usize) -> Self {
        Self {
            method,
            space: LabelSpace::default(),
            window: window.max(1),
            history: VecDeque::new(),
            pending: None,
        }
    }

    /// The same labeler taking the expectation away in `space`.
    pub fn with_space(mut self, space: LabelSpace) -> Self {
        self.space = space;
        self
    }

    /// Where the expectation is taken away; [`LabelSpace::scores`] makes the labeler's input.
    pub fn space(&self) -> LabelSpace {
        self.space
    }

    /// The label method.
    pub fn method(&self) -> LabelMethod {
        self.method
    }

    /// Labels for one batch, updating the E[p] window. `None` when the method is `none`.
    ///
    /// # Shapes
    /// - `scores`: `[batch, K]`, the [`space`](Self::space)'s scores: probabilities (rows
    ///   summing to 1) or log-probabilities (detached here)
    /// - output: `[batch]` group indices
    pub fn labels<B: Backend>(&mut self, scores: Tensor<B, 2>) -> Option<Tensor<B, 1, Int>> {
        self.commit();
        let scores = scores.detach();
        match self.method {
            LabelMethod::None => None,
            LabelMethod::Naive => Some(shifted_argmax(scores, None, None)),
            LabelMethod::SelfDistributed => {
                let width = self.row_width(scores.dims()[1]);
                self.push(self.batch_row(&scores));
                let window = mean_of(self.history.iter(), width);
                Some(self.shifted(scores, &window))
            }
        }
    }

    /// Values in a window row for K groups: K means, and K mean squares where the space
    /// standardises.
    pub fn row_width(&self, k: usize) -> usize {
        if self.space.keeps_spread() {
            2 * k
        } else {
            k
        }
    }

    /// A batch's window row: the mean of its scores, and of their squares where the space
    /// standardises, `[batch, K]` -> K or 2K values.
    fn batch_row<B: Backend>(&self, scores: &Tensor<B, 2>) -> Vec<f32> {
        let mut row = batch_mean(scores);
        if self.space.keeps_spread() {
            row.extend(batch_mean(&scores.clone().powi_scalar(2)));
        }
        row
    }

    /// Labels of `scores` against a window mean row (see [`row_width`](Self::row_width)).
    fn shifted<B: Backend>(&self, scores: Tensor<B, 2>, window: &[f32]) -> Tensor<B, 1, Int> {
        let k = scores.dims()[1];
        if !self.space.keeps_spread() {
            return shifted_argmax(scores, Some(&window[..k]), None);
        }
        // var = E[s²] − E[s]² over the window's (equal-sized) batches, in f64 since log p can
        // be large and the difference small; a floor keeps a group that never varies finite.
        let scale: Vec<f32> = (0..k)
            .map(|g| {
                let (m, sq) = (window[g] as f64, window[k + g] as f64);
                ((sq - m * m).max(0.0) + 1e-12).sqrt() as f32
            })
            .collect();
        shifted_argmax(scores, Some(&window[..k]), Some(&scale))
    }

    /// Labels for one replica's batch of step `step`, the same for any order in which the
    /// replicas of the step call. E[p] is the mean of the window's last `window − 1` batch
    /// means before this step and this batch's own mean, as [`labels`](Self::labels) computes
    /// it on one device; the batch's mean joins the window when a call for another step (or
    /// [`labels`](Self::labels), [`history`](Self::history)) comes.
    ///
    /// # Shapes
    /// - `scores`: `[batch, K]`, as for [`labels`](Self::labels)
    /// - output: `[batch]` group indices
    pub fn labels_for_step<B: Backend>(
        &mut self,
        step: StepKey,
        scores: Tensor<B, 2>,
    ) -> Option<Tensor<B, 1, Int>> {
        if self.method != LabelMethod::SelfDistributed {
            return self.labels(scores);
        }
        if self.pending.as_ref().is_some_and(|(key, _)| *key != step) {
            self.commit();
        }
        let scores = scores.detach();
        let width = self.row_width(scores.dims()[1]);
        let mean = self.batch_row(&scores);
        // A window of another K says nothing about these groups (`push` drops it).
        let earlier = if self.history.back().is_some_and(|last| last.len() == width) {
            self.history.len().min(self.window - 1)
        } else {
            0
        };
        let rows = self.history.iter().skip(self.history.len() - earlier).chain([&mean]);
        let window = mean_of(rows, width);
        self.pending.get_or_insert_with(|| (step, Vec::new())).1.push(mean);
        Some(self.shifted(scores, &window))
    }

    /// The batch means of the step in progress, which this process's replicas added
    /// through [`labels_for_step`](Self::labels_for_step) and which are not yet in the window.
    /// The processes of a multi-process run exchange them and [`settle`](Self::settle) with
    /// the means of all, so that every process keeps the window of the whole global batch.
    pub fn step_means(&self) -> &[Vec<f32>] {
        self.pending.as_ref().map_or(&[], |(_, rows)| rows.as_slice())
    }

    /// Ends the step in progress with `means` in place of its own batch means: the batch
    /// means of every replica of the step, in any order (they join the window sorted, as
    /// in a step of several replicas in one process).
    pub fn settle(&mut self, means: Vec<Vec<f32>>) {
        self.pending = None;
        self.push_sorted(means);
    }

    /// Moves the pending step's batch means into the window.
    fn commit(&mut self) {
        if let Some((_, rows)) = self.pending.take() {
            self.push_sorted(rows);
        }
    }

    /// Pushes `rows` in ascending order of their values, so the window does not depend on
    /// which replica finished first.
    fn push_sorted(&mut self, mut rows: Vec<Vec<f32>>) {
        rows.sort_by(|a, b| {
            let mut order = a.iter().zip(b).map(|(x, y)| x.total_cmp(y));
            order.find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        });
        for mean in rows {
            self.push(mean);
        }
    }

    fn push(&mut self, mean: Vec<f32>) {
        if self.history.back().is_some_and(|last| last.len() != mean.len()) {
            // A different number of groups: the old window says nothing about these groups.
            self.history.clear();
        }
        self.history.push_back(mean);
        while self.history.len() > self.window {
            self.history.pop_front();
        }
    }

    /// Labels for one batch with the current E[p] estimate, leaving the window unchanged (for
    /// validation). Before the first training batch, the batch's own mean stands in for E[p].
    pub fn peek_labels<B: Backend>(&self, scores: Tensor<B, 2>) -> Option<Tensor<B, 1, Int>> {
        let scores = scores.detach();
        match self.method {
            LabelMethod::None => None,
            LabelMethod::Naive => Some(shifted_argmax(scores, None, None)),
            LabelMethod::SelfDistributed => {
                let width = self.row_width(scores.dims()[1]);
                let history = self.history();
                let window = match history.first() {
                    Some(first) if first.len() == width => mean_of(history.iter(), width),
                    _ => self.batch_row(&scores),
                };
                Some(self.shifted(scores, &window))
            }
        }
    }

    /// Pushes this batch's window row (mean scores; and their mean squares for `zlog`) and
    /// returns the current estimate of E[scores], `[K]`.
    pub fn update<B: Backend>(&mut self, scores: Tensor<B, 2>) -> Tensor<B, 1> {
        self.commit();
        let device = scores.device();
        self.push(self.batch_row(&scores.detach()));
        self.expected(&device).expect("history holds the batch just pushed")
    }

    /// The current estimate of E[p], or `None` before the first batch.
    /// A finished step's batch means count (validation and checkpoints come between steps).
    pub fn expected<B: Backend>(&self, device: &B::Device) -> Option<Tensor<B, 1>> {
        let history = self.history();
        let width = history.first()?.len();
        let k = if self.space.keeps_spread() { width / 2 } else { width };
        let mean = mean_of(history.iter(), width)[..k].to_vec();
        Some(Tensor::from_data(TensorData::new(mean, [k]), device))
    }

    /// The window's batch means, oldest first, for checkpoints; those of the last step count.
    pub fn history(&self) -> Vec<Vec<f32>> {
        let mut settled = self.clone();
        settled.commit();
        settled.history.into_iter().collect()
    }

    /// Restores the window from [`history`](Self::history), keeping the newest `window` rows.
    pub fn restore(&mut self, history: &[Vec<f32>]) {
        let skip = history.len().saturating_sub(self.window);
        self.history = history[skip..].iter().cloned().collect();
        self.pending = None;
    }
}

/// The element-wise mean of `rows` (each of length `k`), summed in `f64` in the given order.
fn mean_of<'a>(rows: impl Iterator<Item = &'a Vec<f32>>, k: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; k];
    let mut n = 0usize;
    for row in rows {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += *v as f64;
        }
        n += 1;
    }
    sum.iter().map(|s| (s / n as f64) as f32).collect()
}

/// The mean of a batch's scores over the batch, `[batch, K]` -> K values.
pub fn batch_mean<B: Backend>(scores: &Tensor<B, 2>) -> Vec<f32> {
    scores.clone().mean_dim(0).into_data().iter::<f32>().collect()
}

/// `G* = argmax_k (s_k − E_k) / σ_k` of each row of `scores` (`E` = 0 without `expected`,
/// `σ` = 1 without `scale`), on the host in `f64`.
///
/// The paper's `(1/K)·(p − E) + 1/K` has the same argmax; it is not formed here because adding
/// 1/K in `f32` rounds away differences below about 1e-9 and turns them into ties. Ties (rows
/// equal to E, or identical saturated rows) go round the tied groups by row: row `i` takes the
/// `(i mod m)`-th of its `m` tied groups. An argmax that always took the first tied group would
/// put every undecided sample into group 0 and make a collapse out of no information.
///
/// # Shapes
/// - `scores`: `[batch, K]`
/// - `expected`, `scale`: K values
/// - output: `[batch]` group indices, on the device of `scores`
pub fn shifted_argmax<B: Backend>(
    scores: Tensor<B, 2>,
    expected: Option<&[f32]>,
    scale: Option<&[f32]>,
) -> Tensor<B, 1, Int> {
    let [batch, k] = scores.dims();
    let device = scores.device();
    let values: Vec<f32> = scores.into_data().iter::<f32>().collect();
    let labels: Vec<i64> = values
        .chunks(k.max(1))
        .enumerate()
        .map(|(row, v)| {
            let shifted: Vec<f64> = (0..k)
                .map(|g| {
                    (v[g] as f64 - expected.map_or(0.0, |e| e[g] as f64))
                        / scale.map_or(1.0, |s| s[g] as f64)
                })
                .collect();
            let best = shifted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let tied: Vec<usize> = (0..k).filter(|&g| shifted[g] == best).collect();
            // A NaN row has no maximum; group 0 keeps its label defined (the loss is NaN anyway).
            tied.get(row % tied.len().max(1)).copied().unwrap_or(0) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(labels, [batch]), &device)
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
            "GroupLabeler({}, {} space, window {}, {} batches held)",
            self.method,
            self.space,
            self.window,
            self.history.len()
        )
    }
}

impl fmt::Display for GroupLabeler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} space, window {})", self.method, self.space, self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn batch(rows: &[[f32; 3]]) -> Tensor<Flex, 2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), &Default::default())
    }

    fn ints(t: Option<Tensor<Flex, 1, Int>>) -> Vec<i64> {
        t.expect("self-distributed labels").into_data().iter::<i64>().collect()
    }

    /// Eight batches of K = 3 whose means differ, some rows ties of others.
    fn batches() -> Vec<Tensor<Flex, 2>> {
        (0..8)
            .map(|i| {
                let a = 0.1 + 0.07 * i as f32;
                let b = 0.6 - 0.05 * i as f32;
                batch(&[[a, b, 1.0 - a - b], [b, 0.25, 0.75 - b], [0.3, 0.3, 0.4]])
            })
            .collect()
    }

    #[test]
    fn one_replica_per_step_labels_exactly_as_labels_does() {
        // On one device `labels_for_step` is `labels` with the window's update deferred to the
        // next step: the same labels, and the same window bit for bit, after every batch.
        let mut direct =
            GroupLabeler::new(LabelMethod::SelfDistributed, 3).with_space(LabelSpace::Prob);
        let mut stepped = direct.clone();
        for (i, b) in batches().into_iter().enumerate() {
            let want = ints(direct.labels(b.clone()));
            let got = ints(stepped.labels_for_step((1, i), b));
            assert_eq!(got, want, "batch {i}");
            assert_eq!(stepped.history(), direct.history(), "window after batch {i}");
        }
    }

    #[test]
    fn replicas_of_a_step_label_alike_in_any_order() {
        // Two replicas per step, their calls in one order and then in the other: with a shared
        // window that each call updated at once, the second caller of a step would see the
        // first one's batch, so labels and window would depend on which thread finished first.
        let all = batches();
        let run = |swap: bool| {
            let mut labeler =
                GroupLabeler::new(LabelMethod::SelfDistributed, 3).with_space(LabelSpace::Prob);
            let mut labels = Vec::new();
            for (step, pair) in all.chunks(2).enumerate() {
                let order: Vec<usize> = if swap { vec![1, 0] } else { vec![0, 1] };
                let mut of_step = vec![Vec::new(); 2];
                for r in order {
                    of_step[r] = ints(labeler.labels_for_step((2, step), pair[r].clone()));
                }
                labels.push(of_step);
            }
            (labels, labeler.history())
        };
        let (a, b) = (run(false), run(true));
        assert_eq!(a, b);
        // The window holds the last 3 batch means: one of step 2 and both of step 3.
        assert_eq!(a.1.len(), 3);
    }

    #[test]
    fn processes_that_settle_every_mean_keep_the_window_of_replicas_in_one_process() {
        // Two processes of one replica each (`nodes=2`): each labels its own batch of a step,
        // then settles with both processes' means, in its own order. Labels and windows must
        // be those of one labeler that two replicas per step share (`devices=2`).
        let all = batches();
        let mut shared =
            GroupLabeler::new(LabelMethod::SelfDistributed, 3).with_space(LabelSpace::Prob);
        let mut ranks = [shared.clone(), shared.clone()];
        for (step, pair) in all.chunks(2).enumerate() {
            let mut means = Vec::new();
            for (r, labeler) in ranks.iter_mut().enumerate() {
                let want = ints(shared.labels_for_step((1, step), pair[r].clone()));
                let got = ints(labeler.labels_for_step((1, step), pair[r].clone()));
                assert_eq!(got, want, "step {step}, rank {r}");
                assert_eq!(labeler.step_means().len(), 1);
                means.push(labeler.step_means()[0].clone());
            }
            ranks[0].settle(means.clone());
            means.reverse();
            ranks[1].settle(means);
            assert!(ranks.iter().all(|l| l.step_means().is_empty()));
            assert_eq!(ranks[0].history(), shared.history(), "rank 0 after step {step}");
            assert_eq!(ranks[1].history(), shared.history(), "rank 1 after step {step}");
        }
    }

    #[test]
    fn a_step_labels_with_earlier_steps_and_its_own_batch() {
        // Window 3, K = 3. Step 0 has replica means m0 = (0.5, 0.3, 0.2) and
        // m1 = (0.1, 0.6, 0.3); they join the window in ascending order: [m1, m0].
        // Step 1, a replica with p = (0.2, 0.55, 0.25) (its mean, one row):
        // E = (m1 + m0 + p) / 3 = (0.8, 1.45, 0.75) / 3 = (0.2667, 0.4833, 0.25);
        // p − E = (−0.0667, 0.0667, 0): group 1.
        // Had E also counted the step's other replica q = (0.05, 0.9, 0.05), 4 means:
        // E = (0.85, 2.35, 0.8) / 4 = (0.2125, 0.5875, 0.2), p − E = (−0.0125, −0.0375, 0.05):
        // group 2. The step's own label must not depend on q, whichever came first.
        let mut labeler =
            GroupLabeler::new(LabelMethod::SelfDistributed, 3).with_space(LabelSpace::Prob);
        let _ = labeler.labels_for_step((1, 0), batch(&[[0.5, 0.3, 0.2]]));
        let _ = labeler.labels_for_step((1, 0), batch(&[[0.1, 0.6, 0.3]]));
        let _ = labeler.labels_for_step((1, 1), batch(&[[0.05, 0.9, 0.05]]));
        let label = ints(labeler.labels_for_step((1, 1), batch(&[[0.2, 0.55, 0.25]])));
        assert_eq!(label, vec![1]);
        // The window's last 3 means, step 1's in ascending order: [m0, p, q].
        let history = labeler.history();
        assert_eq!(history.len(), 3);
        assert_eq!(history[0], vec![0.5, 0.3, 0.2]);
        assert_eq!(history[1], vec![0.05, 0.9, 0.05]);
        assert_eq!(history[2], vec![0.2, 0.55, 0.25]);
    }
}
