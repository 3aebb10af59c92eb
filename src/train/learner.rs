//! Training with burn-train's Learner: the step output, its metrics, `TrainStep` /
//! `InferenceStep` for [`TrainModel`] and the logger; the renderers are in
//! [`crate::train::renderer`].

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Transaction;
use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{
    AccuracyInput, Adaptor, ItemLazy, LossInput, Metric, MetricAttributes, MetricDefinition,
    MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::{InferenceStep, TrainOutput, TrainStep};

use crate::backend::conv::ConvBackend;
use crate::backend::conv::TrainBackend;
use crate::data::dataset::FaceBatch;
use crate::evaluate::targets::TargetScores;
use crate::train::step::{clip_grad_norm, unscale_gradients, TrainModel};
use burn::optim::{GradientsParams, Optimizer};

/// What one training or validation step reports to the metrics.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// Total loss `L1 + λ·L2 (+ Center)`, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Margin softmax L1, `[1]`.
    pub classification: Tensor<B, 1>,
    /// Self-grouping loss L2, `[1]` (0 when there is none).
    pub grouping: Tensor<B, 1>,
    /// Cosine to every class, `[batch, C]` (accuracy).
    pub cosine: Tensor<B, 2>,
    /// Identity labels, `[batch]`.
    pub targets: Tensor<B, 1, Int>,
    /// Most probable group per sample, `[batch]` (all 0 for the baseline).
    pub groups: Tensor<B, 1, Int>,
    /// Group label G* of the self-grouping loss per sample, `[batch]`; −1 where there is none
    /// (the baseline, `labels=none`).
    pub labels: Tensor<B, 1, Int>,
    /// Mean over the batch of the largest group probability, `[1]` (0 for the baseline): 1/K
    /// while p is uniform, 1 once every row is one-hot.
    pub confidence: Tensor<B, 1>,
    /// Number of groups K (0 for the baseline).
    pub num_groups: usize,
    /// Verification accuracy on the held-out identities, from the first validation step of
    /// an epoch (see [`crate::evaluate::held_out::VerificationProbe`]); `None` on every other step.
    pub verification: Option<f64>,
    /// The `.bin` validation targets, on the step that measured them.
    pub val: Option<TargetScores>,
}

impl<B: Backend> ItemLazy for StepOutput<B> {
    type ItemSync = StepOutput<burn::backend::Flex>;

    fn sync(self) -> Self::ItemSync {
        let [loss, classification, grouping, cosine, targets, groups, labels, confidence] =
            Transaction::default()
                .register(self.loss)
                .register(self.classification)
                .register(self.grouping)
                .register(self.cosine)
                .register(self.targets)
                .register(self.groups)
                .register(self.labels)
                .register(self.confidence)
                .execute()
                .try_into()
                .expect("eight tensors registered");
        let device = Default::default();
        StepOutput {
            loss: Tensor::from_data(loss, &device),
            classification: Tensor::from_data(classification, &device),
            grouping: Tensor::from_data(grouping, &device),
            cosine: Tensor::from_data(cosine, &device),
            targets: Tensor::from_data(targets, &device),
            groups: Tensor::from_data(groups, &device),
            labels: Tensor::from_data(labels, &device),
            confidence: Tensor::from_data(confidence, &device),
            num_groups: self.num_groups,
            verification: self.verification,
            val: self.val,
        }
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for StepOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

impl<B: Backend> Adaptor<AccuracyInput<B>> for StepOutput<B> {
    fn adapt(&self) -> AccuracyInput<B> {
        AccuracyInput::new(self.cosine.clone(), self.targets.clone())
    }
}

/// The inputs of the GroupFace-specific metrics, read on the host.
#[derive(Debug, Clone)]
pub struct GroupFaceMetricInput {
    /// L1 of the batch.
    pub classification: f64,
    /// L2 of the batch.
    pub grouping: f64,
    /// Samples per group in the batch (empty for the baseline).
    pub counts: Vec<usize>,
    /// Samples per group label G* in the batch (empty without labels).
    pub label_counts: Vec<usize>,
    /// Mean largest group probability of the batch.
    pub confidence: f64,
    /// Batch size.
    pub batch: usize,
    /// Held-out verification accuracy, on the step that computed it.
    pub verification: Option<f64>,
    /// The `.bin` validation targets, on the step that measured them.
    pub val: Option<TargetScores>,
}

impl<B: Backend> Adaptor<GroupFaceMetricInput> for StepOutput<B> {
    fn adapt(&self) -> GroupFaceMetricInput {
        let scalar =
            |t: &Tensor<B, 1>| t.clone().into_data().iter::<f64>().next().unwrap_or(f64::NAN);
        let batch = self.targets.dims()[0];
        let histogram = |groups: &Tensor<B, 1, Int>| {
            let mut counts = vec![0usize; self.num_groups];
            for g in groups.clone().into_data().iter::<i64>() {
                if let Some(c) = usize::try_from(g).ok().and_then(|g| counts.get_mut(g)) {
                    *c += 1;
                }
            }
            counts
        };
        let counts = histogram(&self.groups);
        let mut label_counts = histogram(&self.labels);
        if label_counts.iter().all(|&c| c == 0) {
            label_counts.clear();
        }
        GroupFaceMetricInput {
            classification: scalar(&self.classification),
            grouping: scalar(&self.grouping),
            counts,
            label_counts,
            confidence: scalar(&self.confidence),
            batch,
            verification: self.verification,
            val: self.val.clone(),
        }
    }
}

/// Which GroupFace quantity a [`GroupFaceMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFaceQuantity {
    /// The margin softmax L1.
    ClassificationLoss,
    /// The self-grouping loss L2.
    GroupingLoss,
    /// Share of the epoch's samples in the most used group (1/K when uniform, 1 at collapse).
    LargestGroupShare,
    /// Entropy of the epoch's group histogram, in bits (log2 K when uniform, 0 at collapse).
    GroupEntropy,
    /// Share of the epoch's samples with the most frequent group label G* (naive and
    /// self-distributed labels): what the self-grouping loss teaches the GDN.
    LargestLabelShare,
    /// Entropy of the epoch's histogram of group labels G*, in bits.
    LabelEntropy,
    /// Mean over the samples of the largest group probability (1/K uniform, 1 one-hot): how
    /// saturated p is, where subtracting E[p] can no longer move an argmax.
    GroupConfidence,
    /// insightface's 10-fold verification accuracy on held-out identities (validation only):
    /// computed once per epoch, so the epoch's value is that one figure.
    VerificationAccuracy,
}

/// A numeric metric over [`GroupFaceMetricInput`]. Group usage accumulates the histogram over
/// the epoch, so a collapse shows as the share rising to 1 and the entropy falling to 0.
#[derive(Clone)]
pub struct GroupFaceMetric {
    quantity: GroupFaceQuantity,
    name: MetricName,
    state: NumericMetricState,
    counts: Vec<usize>,
    last: Option<f64>,
}

impl GroupFaceMetric {
    /// A metric for `quantity`.
    pub fn new(quantity: GroupFaceQuantity) -> Self {
        let name = match quantity {
            GroupFaceQuantity::ClassificationLoss => "L1 (margin softmax)",
            GroupFaceQuantity::GroupingLoss => "L2 (self-grouping)",
            GroupFaceQuantity::LargestGroupShare => "Largest group share",
            GroupFaceQuantity::GroupEntropy => "Group entropy (bits)",
            GroupFaceQuantity::LargestLabelShare => "Largest label share",
            GroupFaceQuantity::LabelEntropy => "Label entropy (bits)",
            GroupFaceQuantity::GroupConfidence => "Group confidence",
            GroupFaceQuantity::VerificationAccuracy => "Verification accuracy",
        };
        Self {
            quantity,
            name: Arc::new(name.to_string()),
            state: Default::default(),
            counts: Vec::new(),
            last: None,
        }
    }
}

/// Share of the largest group and entropy (bits) of a histogram; `None` when it is empty.
pub fn group_usage(counts: &[usize]) -> Option<(f64, f64)> {
    let total: usize = counts.iter().sum();
    let largest = *counts.iter().max()?;
    if total == 0 {
        return None;
    }
    let bits = crate::analysis::groups::entropy(counts) / std::f64::consts::LN_2;
    Some((largest as f64 / total as f64, bits))
}

impl Metric for GroupFaceMetric {
    type Input = GroupFaceMetricInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        let higher_is_better = matches!(
            self.quantity,
            GroupFaceQuantity::GroupEntropy
                | GroupFaceQuantity::LabelEntropy
                | GroupFaceQuantity::VerificationAccuracy
        );
        NumericAttributes { unit: None, higher_is_better }.into()
    }

    fn update(&mut self, item: &Self::Input, _metadata: &MetricMetadata) -> SerializedEntry {
        if self.quantity == GroupFaceQuantity::VerificationAccuracy {
            // Weight 1 on the step that measured it and 0 on the others, so burn-train's
            // weighted epoch mean is exactly the epoch's measurement.
            let (value, weight) = match item.verification {
                Some(v) => {
                    self.last = Some(v);
                    (v, 1)
                }
                None => (self.last.unwrap_or(0.0), 0),
            };
            return self.state.update(value, weight, FormatOptions::new(self.name()).precision(4));
        }
        let value = match self.quantity {
            GroupFaceQuantity::ClassificationLoss => item.classification,
            GroupFaceQuantity::GroupingLoss => item.grouping,
            GroupFaceQuantity::GroupConfidence => item.confidence,
            GroupFaceQuantity::LargestGroupShare
            | GroupFaceQuantity::GroupEntropy
            | GroupFaceQuantity::LargestLabelShare
            | GroupFaceQuantity::LabelEntropy => {
                let of_labels = matches!(
                    self.quantity,
                    GroupFaceQuantity::LargestLabelShare | GroupFaceQuantity::LabelEntropy
                );
                let counts = if of_labels { &item.label_counts } else { &item.counts };
                if self.counts.len() != counts.len() {
                    self.counts = vec![0; counts.len()];
                }
                for (total, c) in self.counts.iter_mut().zip(counts) {
                    *total += c;
                }
                let (share, entropy) = group_usage(&self.counts).unwrap_or((f64::NAN, f64::NAN));
                match self.quantity {
                    GroupFaceQuantity::LargestGroupShare | GroupFaceQuantity::LargestLabelShare => {
                        share
                    }
                    _ => entropy,
                }
            }
            GroupFaceQuantity::VerificationAccuracy => unreachable!("handled above"),
        };
        // A loss of exactly 0 comes out of the negated log-likelihood as −0.0, which the
        // summary would print as "-0.000e0"; adding +0.0 turns it into 0 and changes nothing else.
        let value = value + 0.0;
        // Weight 1 per batch, as burn-train's LossMetric does, so the losses average alike.
        self.state.update(value, 1, FormatOptions::new(self.name()).precision(3))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.counts.clear();
        self.last = None;
    }
}

impl Numeric for GroupFaceMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// The accuracy of one `.bin` validation target (`Verification <name>`), or its best so far
/// in the run (`Verification <name> best`), from the steps that measured it.
#[derive(Clone)]
pub struct TargetMetric {
    index: usize,
    best: bool,
    name: MetricName,
    state: NumericMetricState,
    last: Option<f64>,
}

impl TargetMetric {
    /// The metric of target `index` of the run's `val=` list, named `name`
    /// ([`crate::evaluate::targets::metric_names`]): its accuracy, or with `best` its best so
    /// far.
    pub fn new(index: usize, name: String, best: bool) -> Self {
        Self { index, best, name: Arc::new(name), state: Default::default(), last: None }
    }
}

impl Metric for TargetMetric {
    type Input = GroupFaceMetricInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes { unit: None, higher_is_better: true }.into()
    }

    fn update(&mut self, item: &Self::Input, _metadata: &MetricMetadata) -> SerializedEntry {
        // As the held-out verification: weight 1 on a measuring step and 0 on the others, so
        // the epoch's value is the mean of its measurements (one at the epoch's end).
        let measured = item.val.as_ref().and_then(|scores| {
            let values = if self.best { &scores.best } else { &scores.accuracy };
            values.get(self.index).copied()
        });
        let (value, weight) = match measured {
            Some(v) => {
                self.last = Some(v);
                (v, 1)
            }
            None => (self.last.unwrap_or(0.0), 0),
        };
        self.state.update(value, weight, FormatOptions::new(self.name()).precision(4))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.last = None;
    }
}

impl Numeric for TargetMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

impl<B: ConvBackend> TrainModel<B> {
    /// One step's loss terms and metric inputs. `update_window` is false for validation, which
    /// labels groups with the current E[p] estimate without moving it.
    pub fn step_output(&self, batch: FaceBatch<B>, update_window: bool) -> StepOutput<B> {
        let step = batch.step;
        let output = self.model.forward(self.step_images(batch.images));
        let group_labels = output.groups.as_ref().and_then(|groups| {
            let mut labeler = self.labeler.lock().expect("labeler lock");
            let scores = labeler.space().scores(groups);
            if update_window {
                match step {
                    Some(step) => labeler.labels_for_step(step, scores),
                    None => labeler.labels(scores),
                }
            } else {
                labeler.peek_labels(scores)
            }
        });
        let device = batch.labels.device();
        let batch_size = batch.labels.dims()[0];
        let labels = match &group_labels {
            Some(labels) => labels.clone(),
            None => Tensor::full([batch_size], -1, &device),
        };
        let sample = if update_window { self.class_sample(&batch.labels, step) } else { None };
        let terms =
            self.criterion.forward(&output, batch.labels.clone(), group_labels, sample.as_ref());
        let (groups, num_groups, confidence) = match &output.groups {
            Some(g) => (
                g.probs.clone().argmax(1).reshape([batch_size]),
                g.probs.dims()[1],
                g.probs.clone().detach().max_dim(1).mean(),
            ),
            None => (Tensor::zeros([batch_size], &device), 0, Tensor::zeros([1], &device)),
        };
        StepOutput {
            loss: terms.total,
            grouping: terms.grouping.unwrap_or_else(|| Tensor::zeros([1], &device)),
            classification: terms.classification,
            cosine: terms.cosine,
            targets: terms.targets,
            groups,
            labels,
            confidence,
            num_groups,
            verification: None,
            val: None,
        }
    }
}

impl<B: TrainBackend> TrainStep for TrainModel<B> {
    type Input = FaceBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: FaceBatch<B>) -> TrainOutput<StepOutput<B>> {
        let position = batch.step;
        // `val_every`: the model as this step finds it is the model after the steps before
        // it, so step s measures after s − 1 updates (an epoch's last update is measured by
        // the end-of-epoch measurement instead).
        let val = match (&self.targets, position) {
            (Some(targets), Some(key)) => {
                let (step, epoch) = self.guard.place(key);
                let done = step - 1;
                (!done.is_multiple_of(self.guard.per_epoch()))
                    .then(|| {
                        let device = batch.images.device();
                        targets.at_step(&self.model.valid(), epoch, done, &device)
                    })
                    .flatten()
            }
            _ => None,
        };
        let output = StepOutput { val, ..self.step_output(batch, true) };
        // One read of three scalars per step; the metrics read them anyway.
        let [total, l1, l2] = Transaction::default()
            .register(output.loss.clone())
            .register(output.classification.clone())
            .register(output.grouping.clone())
            .execute()
            .try_into()
            .expect("three tensors registered");
        let scalar = |d: burn::tensor::TensorData| d.iter::<f32>().next().unwrap_or(f32::NAN);
        if !self.guard.check([scalar(total), scalar(l1), scalar(l2)], position) {
            // No gradients: the optimiser leaves every weight as it was, and the Learner
            // stops before the epoch's checkpoint.
            return TrainOutput { grads: GradientsParams::new(), item: output };
        }
        let replicas = self.guard.replicas();
        let loss = if replicas > 1 {
            output.loss.clone().div_scalar(replicas as f64)
        } else {
            output.loss.clone()
        };
        // Whether the loss is scaled is the scaler's presence, not its value: a scale that has
        // halved down to 1 must still be checked and grown.
        let scaler = self.guard.loss_scaler();
        let loss = match &scaler {
            Some(scaler) => loss.mul_scalar(scaler.scale),
            None => loss,
        };
        let mut grads = GradientsParams::from_grads(loss.backward(), self);
        if let Some(scaler) = scaler {
            let finite = unscale_gradients(self, &mut grads, scaler.scale);
            if !self.guard.record_scaled_step(finite) {
                // f16 overflowed at this scale: the step is skipped, as GradScaler skips
                // `optimizer.step()`, and the next one runs at half the scale.
                return TrainOutput { grads: GradientsParams::new(), item: output };
            }
        }
        let max_norm = self.guard.clip_grad_norm();
        if max_norm > 0.0 {
            // Like insightface, which clips its backbone and not the class weights.
            clip_grad_norm(&self.model, &mut grads, max_norm);
        }
        TrainOutput { grads, item: output }
    }
}

/// One optimiser step as burn-train's Learner runs it, less its metrics: the model's
/// [`TrainStep`] (forward, guard, backward, clipping), then the optimiser. The benchmark times
/// this, so that its figures are those of a training run.
pub fn learner_step<B: TrainBackend, O: Optimizer<TrainModel<B>, B>>(
    model: TrainModel<B>,
    optimizer: &mut O,
    batch: FaceBatch<B>,
    lr: f64,
) -> (TrainModel<B>, StepOutput<B>) {
    let output = TrainStep::step(&model, batch);
    (optimizer.step(lr, model, output.grads), output.item)
}

impl<B: ConvBackend> InferenceStep for TrainModel<B> {
    type Input = FaceBatch<B>;
    type Output = StepOutput<B>;

    fn step(&self, batch: FaceBatch<B>) -> StepOutput<B> {
        let device = batch.images.device();
        let mut output = self.step_output(batch, false);
        if let Some(probe) = self.probe.as_ref().filter(|p| p.take_due()) {
            output.verification = probe.accuracy(&self.model, &device);
        }
        if let Some(targets) = &self.targets {
            let step = self.guard.steps_done();
            let epoch = step.div_ceil(self.guard.per_epoch());
            output.val = targets.at_epoch_end(&self.model, epoch, step, &device);
        }
        output
    }
}

/// burn-train's file metric logger, with a resumed run's first epoch logged under its own
/// number.
///
/// burn-train 0.21's metric store numbers the epochs it logs from 1 in every process (it
/// starts each split at epoch 1 and moves to `n + 1` when epoch `n` ends), whatever checkpoint
/// the Learner resumed from. Resumed from the checkpoint of epoch `k`, the first epoch it
/// trains, `k + 1`, arrives here as epoch 1: written to `train/epoch-1`, it would replace the
/// killed run's epoch 1, and `epoch-(k + 1)` would stay empty, so `metrics.csv` and burn-train's
/// summary would lose two epochs. From the end of epoch `k + 1` on the store's numbers are
/// right again. Reads name the real epoch and pass through unchanged.
pub struct ResumedMetricLogger {
    inner: FileMetricLogger,
    resumed_from: usize,
}

impl ResumedMetricLogger {
    /// The logger of the run directory `dir`, resumed from the checkpoint of epoch
    /// `resumed_from` (0: a fresh run, logged as burn-train logs it).
    pub fn new(dir: impl AsRef<std::path::Path>, resumed_from: usize) -> Self {
        Self { inner: FileMetricLogger::new(dir), resumed_from }
    }

    /// The epoch that burn-train's `epoch` is.
    pub fn epoch(&self, epoch: usize) -> usize {
        if epoch == 1 {
            self.resumed_from + 1
        } else {
            epoch
        }
    }
}

impl MetricLogger for ResumedMetricLogger {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let epoch = self.epoch(epoch);
        self.inner.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.inner.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.inner.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.inner.log_epoch_summary(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataloader::Progress;

    #[test]
    fn a_loss_of_exactly_zero_is_logged_as_positive_zero() {
        // The negated mean log-likelihood of a one-hot prediction is −0.0.
        let metadata = MetricMetadata {
            progress: Progress::new(1, 1),
            global_progress: Progress::new(1, 1),
            iteration: Some(1),
            lr: None,
        };
        let input = GroupFaceMetricInput {
            classification: 1.5,
            grouping: -0.0,
            counts: vec![],
            label_counts: vec![],
            confidence: 0.0,
            batch: 4,
            verification: None,
            val: None,
        };
        let mut metric = GroupFaceMetric::new(GroupFaceQuantity::GroupingLoss);
        metric.update(&input, &metadata);
        let value = metric.value().current();
        assert!(value == 0.0 && value.is_sign_positive(), "{value:?}");
        let mut metric = GroupFaceMetric::new(GroupFaceQuantity::ClassificationLoss);
        metric.update(&input, &metadata);
        assert_eq!(metric.value().current(), 1.5);
    }
}
