//! What training optimises: the model together with the trainable parts of its loss.

use std::sync::{Arc, Mutex};

use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::labels::{GroupLabeler, LabelMethod};
use crate::loss::{Criterion, CriterionConfig, LossTerms};
use crate::model::{GroupFace, GroupFaceConfig, GroupFaceOutput};

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
        }
    }

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
        let output = self.model.forward(images);
        let group_labels =
            output.groups.as_ref().and_then(|groups| labeler.labels(groups.probs.clone()));
        let terms = self.criterion.forward(&output, classes, group_labels);
        (output, terms)
    }
}

/// One plain SGD step (forward, backward, update); the building block of the benchmark.
pub fn sgd_step<B: AutodiffBackend, O: Optimizer<TrainModel<B>, B>>(
    model: TrainModel<B>,
    optimizer: &mut O,
    images: Tensor<B, 4>,
    classes: Tensor<B, 1, Int>,
    labeler: &mut GroupLabeler,
    lr: f64,
) -> (TrainModel<B>, f32) {
    let (_, terms) = model.forward_loss(images, classes, labeler);
    let loss = terms.total.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(terms.total.backward(), &model);
    (optimizer.step(lr, model, grads), loss)
}

/// The paper's optimiser: SGD with momentum 0.9 and weight decay 5e-4. Dampening is 0 as in
/// PyTorch (Burn's default is 0.1).
pub fn paper_sgd() -> SgdConfig {
    let momentum =
        burn::optim::momentum::MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
    SgdConfig::new()
        .with_momentum(Some(momentum))
        .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(5e-4)))
}
