//! What training optimises: the model together with the trainable parts of its loss.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::Interrupter;

use crate::backend::conv::ConvBackend;
use crate::model::{GroupFace, GroupFaceConfig, GroupFaceOutput};
use crate::objective::labels::{GroupLabeler, LabelMethod, LabelSpace};
use crate::objective::loss::{ClassSample, Criterion, CriterionConfig, LossTerms};

/// The model and its criterion (class weights W, optional class centres) as one module, so one
/// optimiser and one checkpoint cover both, plus the group labeler whose E[p] window the
/// training steps share.
#[derive(Module, Debug)]
pub struct TrainModel<B: Backend> {
    /// GroupFace or the baseline.
    pub model: GroupFace<B>,
    /// Margin softmax and optional Center loss.
    pub criterion: Criterion<B>,
    /// Group labels for the self-grouping loss; shared by clones of the model.
    #[module(skip)]
    pub labeler: Arc<Mutex<GroupLabeler>>,
    /// The step counter, the non-finite-loss guard, gradient clipping and the data-parallel
    /// loss scale; shared by clones of the model (one per device).
    #[module(skip)]
    pub guard: Arc<StepGuard>,
    /// Verification on held-out identities, run by the first validation step of each epoch
    /// for the dashboard's "Verification accuracy"; shared by clones of the model.
    #[module(skip)]
    pub probe: Option<Arc<crate::evaluate::held_out::VerificationProbe>>,
    /// Seed of the Partial FC draws (with the step's epoch and position, so a resumed run
    /// draws what the uninterrupted one drew).
    #[module(skip)]
    pub sample_seed: u64,
    /// The `.bin` validation targets (`val=`), measured at each epoch's end and every
    /// `val_every` steps; shared by clones of the model.
    #[module(skip)]
    pub targets: Option<Arc<crate::evaluate::targets::ValTargets>>,
    /// The float types of the step (`precision=`): under `bf16`/`f16` the images are cast to
    /// the low type before the backbone (see [`crate::backend::Precision`]).
    #[module(skip)]
    pub precision: crate::backend::Precision,
}

impl<B: Backend> TrainModel<B> {
    /// Builds both parts and a labeler with an empty window.
    pub fn new(
        model: &GroupFaceConfig,
        criterion: &CriterionConfig,
        labels: LabelMethod,
        label_window: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            model: model.init(device),
            criterion: criterion.init(device),
            labeler: Arc::new(Mutex::new(GroupLabeler::new(labels, label_window))),
            guard: Arc::new(StepGuard::default()),
            probe: None,
            sample_seed: 0,
            targets: None,
            precision: crate::backend::Precision::F32,
        }
    }

    /// The same model stepping in `precision` (mixed `bf16`/`f16`, or `f32`).
    pub fn with_precision(mut self, precision: crate::backend::Precision) -> Self {
        self.precision = precision;
        self
    }

    /// `images` in the type the backbone computes in under this model's precision.
    pub fn step_images(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.precision.compute_dtype() {
            Some(dtype) => images.cast(dtype),
            None => images,
        }
    }

    /// The same model drawing its Partial FC samples from `seed`.
    pub fn with_sample_seed(mut self, seed: u64) -> Self {
        self.sample_seed = seed;
        self
    }

    /// The Partial FC sample of a training batch, or `None` for the full classifier
    /// (`sample_rate=1`, and validation, whose loss and accuracy are over every class).
    /// Reads the labels back to the host: one small transfer per step.
    pub fn class_sample(
        &self,
        labels: &Tensor<B, 1, Int>,
        step: Option<crate::data::dataset::StepKey>,
    ) -> Option<ClassSample> {
        let margin = &self.criterion.margin;
        let (epoch, position) = step?;
        if margin.sample_rate >= 1.0 {
            return None;
        }
        let host: Vec<i64> = labels.to_data().iter::<i64>().collect();
        let seed = crate::data::rng::hash3(self.sample_seed, epoch as u64, position as u64);
        Some(ClassSample::draw(&host, margin.weight.dims()[0], margin.sample_rate, seed))
    }

    /// The same model with its labeler taking the expectation away in `space`.
    pub fn with_label_space(self, space: LabelSpace) -> Self {
        {
            let mut labeler = self.labeler.lock().expect("labeler lock");
            *labeler = labeler.clone().with_space(space);
        }
        self
    }
}

impl<B: ConvBackend> TrainModel<B> {
    /// Forward pass and loss terms of one batch.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, side, side]`
    /// - `classes`: `[batch]`
    pub fn forward_loss(
        &self,
        images: Tensor<B, 4>,
        classes: Tensor<B, 1, Int>,
        labeler: &mut GroupLabeler,
    ) -> (GroupFaceOutput<B>, LossTerms<B>) {
        let output = self.model.forward(self.step_images(images));
        let group_labels = output
            .groups
            .as_ref()
            .and_then(|groups| labeler.labels(labeler.space().scores(groups)));
        let terms = self.criterion.forward(&output, classes, group_labels, None);
        (output, terms)
    }
}

/// Where a training step found a loss that is not finite.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// Optimiser step, counted from 1 over the whole run (a resumed run continues the count).
    pub step: usize,
    /// Epoch (from 1) and batch within it (from 1).
    pub epoch: usize,
    /// Batch within the epoch, from 1.
    pub batch: usize,
    /// The first term that is not finite: `L1 (margin softmax)`, `L2 (self-grouping)` or,
    /// when both are finite, `the Center loss` (the only other part of the total).
    pub term: &'static str,
    /// Total loss, L1 and L2 of the step.
    pub values: [f32; 3],
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [total, l1, l2] = self.values;
        write!(
            f,
            "step {} (epoch {}, batch {}): {} is not finite (total {total}, L1 {l1}, L2 {l2})",
            self.step, self.epoch, self.batch, self.term
        )
    }
}

/// What the training steps of one run share: a step counter, the guard that stops training
/// at the first loss that is not finite, the gradient-norm limit and the loss scale of
/// data-parallel replicas.
pub struct StepGuard {
    steps: AtomicUsize,
    per_epoch: usize,
    clip_grad_norm: f64,
    replicas: usize,
    failure: Mutex<Option<NonFinite>>,
    stopped: Mutex<Option<String>>,
    interrupter: Option<Interrupter>,
    scaler: Option<Mutex<LossScaler>>,
}

impl std::fmt::Debug for StepGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGuard")
            .field("steps", &self.steps.load(Ordering::Relaxed))
            .field("per_epoch", &self.per_epoch)
            .field("clip_grad_norm", &self.clip_grad_norm)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl Default for StepGuard {
    /// A guard of one replica with no clipping and no interrupter (the benchmark's step):
    /// derived, it would count zero replicas and divide by them at the first step.
    fn default() -> Self {
        Self {
            steps: AtomicUsize::new(0),
            per_epoch: 1,
            clip_grad_norm: 0.0,
            replicas: 1,
            failure: Mutex::new(None),
            stopped: Mutex::new(None),
            interrupter: None,
            scaler: None,
        }
    }
}

impl StepGuard {
    /// A guard for a run of `per_epoch` optimiser steps per epoch that has already taken
    /// `done` steps (a resumed run), clipping the global gradient norm at `clip_grad_norm`
    /// (0: off) and scaling each replica's loss by `1 / replicas`, so that the gradients Burn
    /// sums over devices are those of the mean loss over the global batch. The interrupter
    /// stops the Learner after a non-finite loss.
    pub fn new(
        per_epoch: usize,
        done: usize,
        clip_grad_norm: f64,
        replicas: usize,
        interrupter: Interrupter,
    ) -> Self {
        Self {
            steps: AtomicUsize::new(done * replicas.max(1)),
            per_epoch: per_epoch.max(1),
            clip_grad_norm,
            replicas: replicas.max(1),
            failure: Mutex::new(None),
            stopped: Mutex::new(None),
            interrupter: Some(interrupter),
            scaler: None,
        }
    }

    /// The same guard scaling the loss of f16 steps with `scaler` (one replica: the skip of
    /// an overflowing step is decided per replica, so `precision=f16` trains on one).
    pub fn with_loss_scaler(mut self, scaler: LossScaler) -> Self {
        self.scaler = Some(Mutex::new(scaler));
        self
    }

    /// The loss scaler's state, when the run scales its loss.
    pub fn loss_scaler(&self) -> Option<LossScaler> {
        self.scaler.as_ref().and_then(|s| s.lock().ok().map(|s| s.clone()))
    }

    /// The factor this step's loss is multiplied by before the backward pass (1 without
    /// loss scaling).
    pub fn loss_scale(&self) -> f64 {
        self.loss_scaler().map_or(1.0, |s| s.scale)
    }

    /// Tells the loss scaler whether this step's unscaled gradients were finite; returns
    /// whether the optimiser may apply them. Without a scaler every step may.
    pub fn record_scaled_step(&self, finite: bool) -> bool {
        match &self.scaler {
            Some(scaler) => scaler.lock().map(|mut s| s.update(finite)).unwrap_or(false),
            None => true,
        }
    }

    /// The first non-finite loss met, if any.
    pub fn failure(&self) -> Option<NonFinite> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the Learner for a reason outside the loss (an image that cannot be read): no
    /// later step is applied. The first reason is kept.
    pub fn stop(&self, reason: String) {
        if let Ok(mut slot) = self.stopped.lock() {
            if slot.is_none() {
                if let Some(interrupter) = &self.interrupter {
                    interrupter.stop(Some(&reason));
                }
                *slot = Some(reason);
            }
        }
    }

    /// Optimiser steps counted so far (every replica's call counts once per step).
    pub fn steps_done(&self) -> usize {
        self.steps.load(Ordering::SeqCst) / self.replicas
    }

    /// Optimiser steps per epoch.
    pub fn per_epoch(&self) -> usize {
        self.per_epoch
    }

    /// The global step (from 1) and epoch (from 1) of the batch at `(epoch, position)`.
    pub fn place(&self, (epoch, position): crate::data::dataset::StepKey) -> (usize, usize) {
        (epoch.saturating_sub(1) * self.per_epoch + position + 1, epoch.max(1))
    }

    /// Why [`StepGuard::stop`] stopped the run, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }

    /// Counts the step and checks its loss terms `[total, L1, L2]`. On the first non-finite
    /// value it records where, stops the Learner, and returns false: the caller must not
    /// apply this step's gradients. It also returns false for every step after
    /// [`StepGuard::stop`]. `batch` is the batch's `(epoch, position)` when the loader knows
    /// it ([`crate::data::dataset::FaceBatch::step`]).
    pub fn check(&self, values: [f32; 3], batch: Option<crate::data::dataset::StepKey>) -> bool {
        // Replica steps of one optimiser step share its number. The batch's own position
        // places it without assuming how calls arrive; the count of calls is the fallback for
        // batches that carry no position (a plain `FaceBatcher`).
        let counted = self.steps.fetch_add(1, Ordering::SeqCst) / self.replicas + 1;
        let step = batch.map_or(counted, |(epoch, position)| {
            epoch.saturating_sub(1) * self.per_epoch + position + 1
        });
        if self.stop_reason().is_some() {
            return false;
        }
        if values.iter().all(|v| v.is_finite()) {
            return true;
        }
        let term = if !values[1].is_finite() {
            "L1 (margin softmax)"
        } else if !values[2].is_finite() {
            "L2 (self-grouping)"
        } else {
            "the Center loss"
        };
        let failure = NonFinite {
            step,
            epoch: (step - 1) / self.per_epoch + 1,
            batch: (step - 1) % self.per_epoch + 1,
            term,
            values,
        };
        if let Ok(mut slot) = self.failure.lock() {
            if slot.is_none() {
                *slot = Some(failure.clone());
            }
        }
        if let Some(interrupter) = &self.interrupter {
            interrupter.stop(Some(&failure.to_string()));
        }
        false
    }

    /// The limit of the global gradient norm (0: no clipping).
    pub fn clip_grad_norm(&self) -> f64 {
        self.clip_grad_norm
    }

    /// Number of data-parallel replicas (1 on one device).
    pub fn replicas(&self) -> usize {
        self.replicas.max(1)
    }
}

/// Dynamic loss scaling for f16 training, as PyTorch's `torch.amp.GradScaler` does it: the loss
/// is multiplied by `scale` before the backward pass, so that small gradients survive f16
/// (whose smallest normal number is 6.1e-5); the gradients are divided by it again before
/// clipping and the optimiser. A step whose gradients overflow (inf or NaN after unscaling) is
/// skipped, weights and momentum untouched, and the scale halves; after `growth_interval`
/// applied steps in a row it doubles. PyTorch's defaults: 2^16, ×2, ×0.5, 2000 steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// The factor of the next step's loss.
    pub scale: f64,
    /// Applied steps in a row since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped for overflow so far.
    pub skipped: usize,
    /// Applied steps in a row after which the scale doubles.
    pub growth_interval: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self { scale: 65536.0, good_steps: 0, skipped: 0, growth_interval: 2000 }
    }
}

impl LossScaler {
    /// Moves the scale after a step; returns whether the step's gradients may be applied.
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

/// Divides every gradient of `module`'s parameters by `scale` and returns whether all of them
/// are finite: the sum of every gradient's sum is (an inf or NaN anywhere makes it inf or NaN),
/// so one scalar is read back per step.
pub fn unscale_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    scale: f64,
) -> bool {
    struct Unscale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: f64,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unscale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let g = g.mul_scalar(self.factor);
                let sum = g.clone().sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + sum,
                    None => sum,
                });
                self.grads.register(param.id, g);
            }
        }
    }
    let mut unscale = Unscale::<B> { grads, factor: 1.0 / scale, total: None };
    module.visit(&mut unscale);
    unscale.total.is_none_or(|total| total.into_scalar().elem::<f64>().is_finite())
}

/// Scales the gradients of `module`'s parameters so that their global L2 norm
/// `sqrt(sum_p ||g_p||^2)` is at most `max`, as `torch.nn.utils.clip_grad_norm_` does
/// (factor `max / (norm + 1e-6)`, applied only when it is below 1). Returns the norm before
/// clipping. Gradients of parameters outside `module` are left alone.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max: f64,
) -> f64 {
    struct SquaredNorm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let squares = g.powi_scalar(2).sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + squares,
                    None => squares,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut norm = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut norm);
    let Some(total) = norm.total else { return 0.0 };
    let norm = (total.into_scalar().elem::<f64>()).sqrt();
    let factor = max / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_loss_is_placed_by_its_batch() {
        // 3 steps an epoch, 2 replicas. Batch position 1 of epoch 2 is step (2 − 1)·3 + 1 + 1
        // = 5, whatever the count of earlier calls says: here one call, which alone would
        // make it step 1.
        let guard = StepGuard::new(3, 0, 0.0, 2, Interrupter::new());
        assert!(!guard.check([f32::NAN, 1.0, f32::NAN], Some((2, 1))));
        let failure = guard.failure().expect("recorded");
        assert_eq!((failure.step, failure.epoch, failure.batch), (5, 2, 2));
        assert_eq!(failure.term, "L2 (self-grouping)");
        // Without a position the count decides: calls 0 and 1 are step 1 with 2 replicas.
        let guard = StepGuard::new(3, 0, 0.0, 2, Interrupter::new());
        assert!(guard.check([1.0, 1.0, 0.0], None));
        assert!(!guard.check([f32::INFINITY, f32::INFINITY, 0.0], None));
        assert_eq!(guard.failure().map(|f| f.step), Some(1));
    }

    #[test]
    fn the_loss_scale_halves_at_an_overflow_and_doubles_after_the_interval() {
        // PyTorch's GradScaler with growth_interval 3: 2^16 → (overflow) 2^15 → 3 good steps →
        // 2^16; the counter restarts at each change, and only the overflow is skipped.
        let mut scaler = LossScaler { growth_interval: 3, ..LossScaler::default() };
        assert!(!scaler.update(false));
        assert_eq!((scaler.scale, scaler.good_steps, scaler.skipped), (32768.0, 0, 1));
        assert!(scaler.update(true) && scaler.update(true));
        assert_eq!((scaler.scale, scaler.good_steps), (32768.0, 2));
        assert!(scaler.update(true));
        assert_eq!((scaler.scale, scaler.good_steps), (65536.0, 0));
        assert!(scaler.update(true));
        assert!(!scaler.update(false));
        assert_eq!((scaler.scale, scaler.good_steps, scaler.skipped), (32768.0, 0, 2));
        // A guard without a scaler applies every step at scale 1.
        let guard = StepGuard::default();
        assert_eq!(guard.loss_scale(), 1.0);
        assert!(guard.record_scaled_step(false));
        let guard = StepGuard::default().with_loss_scaler(LossScaler::default());
        assert_eq!(guard.loss_scale(), 65536.0);
        assert!(!guard.record_scaled_step(false));
        assert_eq!(guard.loss_scale(), 32768.0);
    }

    #[test]
    fn the_default_guard_counts_steps_of_one_replica() {
        // The benchmark's guard: no positions, one replica, so call n is step n. A derived
        // Default divided by zero replicas here.
        let guard = StepGuard::default();
        assert!(guard.check([1.0, 1.0, 0.0], None));
        assert!(guard.check([1.0, 1.0, 0.0], None));
        assert!(!guard.check([f32::NAN, f32::NAN, 0.0], None));
        assert_eq!(guard.failure().map(|f| f.step), Some(3));
        assert_eq!(guard.replicas(), 1);
    }
}
