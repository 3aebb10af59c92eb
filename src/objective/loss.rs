//! Losses (SPEC section 2): margin softmax L1, the self-grouping loss L2, optional Center loss,
//! and their sum `L = L1 + λ·L2 (+ λ_c·L_center)`.
//!
//! The margin softmax is the combined form `s·(cos(m1·θ + m2) − m3)` on the target class:
//! ArcFace is `(1, m, 0)`, CosFace `(1, 0, m)`, normalised softmax `(1, 0, 0)` and SphereFace
//! the multiplicative `m1 = m` with its monotonic extension
//! `ψ(θ) = (−1)^k·cos(mθ) − 2k` for `θ ∈ [kπ/m, (k+1)π/m]`.

use std::f64::consts::PI;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::model::GroupFaceOutput;
use crate::util::error::ConfigError;
use crate::util::named_enum;

/// The margin of the classification loss (`margin=arcface|cosface|sphereface|softmax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MarginKind {
    /// Additive angular margin, `cos(θ + m)` (default m = 0.5).
    #[default]
    ArcFace,
    /// Additive cosine margin, `cos θ − m` (default m = 0.35).
    CosFace,
    /// Multiplicative angular margin `ψ(θ)` with integer m (default 4).
    SphereFace,
    /// Normalised softmax, no margin.
    Softmax,
}

named_enum!(
    MarginKind,
    "arcface|cosface|sphereface|softmax",
    ArcFace => "arcface",
    CosFace => "cosface",
    SphereFace => "sphereface",
    Softmax => "softmax"
);

impl MarginKind {
    /// The usual margin of each kind: 0.5, 0.35, 4, 0.
    pub fn default_margin(self) -> f64 {
        match self {
            Self::ArcFace => 0.5,
            Self::CosFace => 0.35,
            Self::SphereFace => 4.0,
            Self::Softmax => 0.0,
        }
    }
}

/// Configuration of a [`MarginSoftmax`] classifier.
#[derive(Config, Debug, PartialEq)]
pub struct MarginSoftmaxConfig {
    /// Number of identities C.
    pub classes: usize,
    /// Width of the embedding it classifies.
    pub width: usize,
    /// Margin kind.
    #[config(default = "MarginKind::ArcFace")]
    pub kind: MarginKind,
    /// The margin m; `None` takes the kind's default.
    #[config(default = "None")]
    pub margin: Option<f64>,
    /// Scale s of the logits.
    #[config(default = 64.0)]
    pub scale: f64,
    /// Apply ArcFace's margin without its gradient, as current insightface does. Off by default:
    /// the paper's ArcFace uses the exact gradient.
    #[config(default = false)]
    pub straight_through: bool,
    /// Partial FC (An et al. 2022; arcface_torch's `sample_rate`): the share of the class
    /// centres each training step is computed against: every class of the batch plus random
    /// others up to `⌊rate·C⌋`. 1.0 is the full classifier.
    #[config(default = 1.0)]
    pub sample_rate: f64,
}

impl MarginSoftmaxConfig {
    /// The margin in use (`margin`, or the kind's default).
    pub fn m(&self) -> f64 {
        self.margin.unwrap_or(self.kind.default_margin())
    }

    /// The combined-margin triple `(m1, m2, m3)`.
    pub fn combined(&self) -> (f64, f64, f64) {
        let m = self.m();
        match self.kind {
            MarginKind::ArcFace => (1.0, m, 0.0),
            MarginKind::CosFace => (1.0, 0.0, m),
            MarginKind::SphereFace => (m, 0.0, 0.0),
            MarginKind::Softmax => (1.0, 0.0, 0.0),
        }
    }

    /// Checks every field; the error names the key and what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.classes < 2 {
            return Err(ConfigError::new(
                "classes",
                "at least 2 identities",
                self.classes.to_string(),
            ));
        }
        if self.width == 0 {
            return Err(ConfigError::new("width", "a positive width", "0"));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(ConfigError::new("s", "a positive scale", self.scale.to_string()));
        }
        let m = self.m();
        let ok = match self.kind {
            MarginKind::ArcFace => (0.0..PI / 2.0).contains(&m),
            MarginKind::CosFace => (0.0..1.0).contains(&m),
            MarginKind::SphereFace => m >= 1.0 && m.fract() == 0.0 && m <= 10.0,
            MarginKind::Softmax => m == 0.0,
        };
        if !ok {
            let expected = match self.kind {
                MarginKind::ArcFace => "an angle in [0, π/2) for arcface",
                MarginKind::CosFace => "a cosine margin in [0, 1) for cosface",
                MarginKind::SphereFace => "an integer multiplier 1..=10 for sphereface",
                MarginKind::Softmax => "0 for softmax (no margin)",
            };
            return Err(ConfigError::new("m", expected, m.to_string()));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(ConfigError::new(
                "sample_rate",
                "a share of the class centres in (0, 1]",
                self.sample_rate.to_string(),
            ));
        }
        if self.straight_through && self.kind != MarginKind::ArcFace {
            return Err(ConfigError::new(
                "straight_through",
                "false unless margin=arcface",
                "true",
            ));
        }
        Ok(())
    }

    /// Builds the classifier with Xavier-normal class weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MarginSoftmax<B> {
        let std = (2.0 / (self.classes + self.width) as f64).sqrt();
        let weight = burn::module::Initializer::Normal { mean: 0.0, std }
            .init([self.classes, self.width], device);
        let (m1, m2, m3) = self.combined();
        MarginSoftmax {
            weight,
            kind: self.kind,
            m1,
            m2,
            m3,
            scale: self.scale,
            straight_through: self.straight_through,
            sample_rate: self.sample_rate,
        }
    }
}

/// The class centres one Partial FC step is computed against: `index` holds every class of
/// the batch and random others, ascending; `labels` are the batch's labels as positions in
/// `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSample {
    /// Sampled class indices, ascending, no repeats.
    pub index: Vec<i64>,
    /// The batch's labels as positions in `index`.
    pub labels: Vec<i64>,
}

impl ClassSample {
    /// How many centres a step uses at `rate` of `classes` (arcface_torch's
    /// `int(sample_rate * num_local)`), before the batch's own classes are added.
    pub fn size(rate: f64, classes: usize) -> usize {
        ((rate * classes as f64) as usize).clamp(1, classes)
    }

    /// Every class, in order: the full classifier written as a sample.
    pub fn all(labels: &[i64], classes: usize) -> Self {
        Self { index: (0..classes as i64).collect(), labels: labels.to_vec() }
    }

    /// The batch's classes plus `size(rate, classes) − positives` others drawn uniformly
    /// without repeats (Floyd's algorithm, O(drawn) time and memory, so a 10⁶-class step does
    /// not allocate per class). arcface_torch draws the same distribution with a
    /// `topk` over `rand(C)`; the draws differ, the law is the same.
    ///
    /// # Panics
    /// If a label is outside `0..classes` (the data loader's labels are checked when read).
    pub fn draw(labels: &[i64], classes: usize, rate: f64, seed: u64) -> Self {
        let mut positives = labels.to_vec();
        positives.sort_unstable();
        positives.dedup();
        assert!(
            positives.first().is_none_or(|&c| c >= 0)
                && positives.last().is_none_or(|&c| (c as usize) < classes),
            "a label outside 0..{classes}"
        );
        let others = classes - positives.len();
        let wanted = Self::size(rate, classes).max(positives.len()) - positives.len();
        // Floyd: for j in n−k..n, take t = below(j+1), or j itself when t is taken already.
        let mut rng = crate::data::rng::SplitMix64::new(seed);
        let mut taken = std::collections::HashSet::with_capacity(wanted);
        for j in others - wanted..others {
            let t = rng.below(j + 1);
            if !taken.insert(t) {
                taken.insert(j);
            }
        }
        // The r-th class that is not a positive, for ascending r.
        let mut ranks: Vec<usize> = taken.into_iter().collect();
        ranks.sort_unstable();
        let mut negatives = Vec::with_capacity(ranks.len());
        let mut passed = 0;
        for rank in ranks {
            while passed < positives.len() && positives[passed] as usize <= rank + passed {
                passed += 1;
            }
            negatives.push((rank + passed) as i64);
        }
        let mut index = positives;
        index.extend(negatives);
        index.sort_unstable();
        let labels = labels
            .iter()
            .map(|label| index.binary_search(label).expect("a positive is sampled") as i64)
            .collect();
        Self { index, labels }
    }
}

/// Margin softmax against an L2-normalised, bias-free class-weight matrix W (`[C, width]`).
#[derive(Module, Debug)]
pub struct MarginSoftmax<B: Backend> {
    /// Class weights `[C, width]`, normalised row-wise in the forward pass.
    pub weight: Param<Tensor<B, 2>>,
    /// Margin kind.
    #[module(skip)]
    pub kind: MarginKind,
    /// Multiplicative angular margin m1.
    pub m1: f64,
    /// Additive angular margin m2.
    pub m2: f64,
    /// Additive cosine margin m3.
    pub m3: f64,
    /// Logit scale s.
    pub scale: f64,
    /// Straight-through ArcFace margin.
    pub straight_through: bool,
    /// Partial FC's share of centres per training step (1: all).
    pub sample_rate: f64,
}

/// What the margin softmax computes.
#[derive(Debug, Clone)]
pub struct MarginOutput<B: Backend> {
    /// Mean cross-entropy over the batch, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Scaled logits with the margin on the target class, `[batch, C]`.
    pub logits: Tensor<B, 2>,
    /// Plain cosine similarities to every class, `[batch, C]` (for accuracy).
    pub cosine: Tensor<B, 2>,
    /// The labels as columns of `cosine`, `[batch]`: the labels themselves, or their positions
    /// in a Partial FC sample.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> MarginSoftmax<B> {
    /// # Shapes
    /// - `embedding`: `[batch, width]` (need not be normalised)
    /// - `labels`: `[batch]` identity indices `< C`
    pub fn forward(&self, embedding: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> MarginOutput<B> {
        self.forward_against(embedding, self.weight.val(), labels)
    }

    /// Partial FC: the loss against the sampled centres only. The rows of W outside the
    /// sample get an exactly zero gradient (what arcface_torch's `weight[index]` gives), and
    /// the logits, `cosine` and softmax are `[batch, S]` instead of `[batch, C]`.
    ///
    /// # Shapes
    /// - `embedding`: `[batch, width]`; `sample.labels`: `batch` positions in `sample.index`
    /// - output `logits` and `cosine`: `[batch, S]` with `S = sample.index.len()`
    pub fn forward_sampled(
        &self,
        embedding: Tensor<B, 2>,
        sample: &ClassSample,
    ) -> MarginOutput<B> {
        let device = embedding.device();
        let [batch, _] = embedding.dims();
        let index = TensorData::new(sample.index.clone(), [sample.index.len()]);
        let labels = TensorData::new(sample.labels.clone(), [batch]);
        let weight = self.weight.val().select(0, Tensor::from_data(index, &device));
        self.forward_against(embedding, weight, Tensor::from_data(labels, &device))
    }

    /// The margin softmax of `embedding` against the rows of `weight` (`[C', width]`), with
    /// `labels` in `0..C'`.
    fn forward_against(
        &self,
        embedding: Tensor<B, 2>,
        weight: Tensor<B, 2>,
        labels: Tensor<B, 1, Int>,
    ) -> MarginOutput<B> {
        let [batch, _] = embedding.dims();
        let classes = weight.dims()[0];
        let x = l2_normalize(embedding);
        let w = l2_normalize(weight);
        let cosine = x.matmul(w.transpose()).clamp(-1.0, 1.0);
        let index = labels.clone().reshape([batch, 1]);
        let target = cosine.clone().gather(1, index);
        let margined = self.target_logit(target.clone());
        let one_hot = labels.clone().one_hot::<2>(classes).float();
        // Only the target column changes, so its gradient is exactly d(margined)/d(target).
        let logits = (cosine.clone() + one_hot * (margined - target)) * self.scale;
        let loss = cross_entropy(logits.clone(), labels.clone());
        MarginOutput { loss, logits, cosine, targets: labels }
    }

    /// `cos(m1·θ + m2) − m3` of the target cosines, `[batch, 1]` to `[batch, 1]`.
    pub fn target_logit(&self, target: Tensor<B, 2>) -> Tensor<B, 2> {
        let value = if self.m1 > 1.0 {
            sphereface_psi(target.clone(), self.m1 as usize)
        } else if self.m2 > 0.0 {
            arcface_target(target.clone(), self.m2)
        } else {
            target.clone()
        };
        let value = value - self.m3;
        if self.straight_through {
            // The value carries the margin, the gradient is that of the plain cosine.
            target.clone() + (value - target).detach()
        } else {
            value
        }
    }
}

/// `cos(θ + m)` with the exact gradient, and `cos θ − m·sin m` where `θ + m > π`, so the logit
/// keeps decreasing in θ (insightface's "th/mm" rule).
// ANCHOR: arcface_target
pub fn arcface_target<B: Backend>(cosine: Tensor<B, 2>, m: f64) -> Tensor<B, 2> {
    let (cos_m, sin_m) = (m.cos(), m.sin());
    let threshold = (PI - m).cos();
    let fallback = (PI - m).sin() * m;
    // Clamping away from 0 keeps the sqrt's gradient finite at |cos θ| = 1.
    let sine = (cosine.clone().powi_scalar(2).neg() + 1.0).clamp_min(1e-12).sqrt();
    let phi = cosine.clone() * cos_m - sine * sin_m;
    let beyond = cosine.clone().lower_equal_elem(threshold);
    phi.mask_where(beyond, cosine - fallback)
}
// ANCHOR_END: arcface_target

/// SphereFace's `ψ(θ) = (−1)^k·cos(mθ) − 2k`, `k = ⌊mθ/π⌋`, with `cos(mθ)` as the Chebyshev
/// polynomial `T_m(cos θ)` so the gradient flows through the cosine, not through `acos`.
pub fn sphereface_psi<B: Backend>(cosine: Tensor<B, 2>, m: usize) -> Tensor<B, 2> {
    let theta = cosine.clone().detach().clamp(-1.0, 1.0).acos();
    let k = (theta * (m as f64 / PI)).floor().clamp(0.0, (m - 1) as f64);
    // (−1)^k = 1 − 2·(k mod 2)
    let sign = k.clone().remainder_scalar(2.0) * -2.0 + 1.0;
    let mut previous = cosine.ones_like();
    let mut current = cosine.clone();
    for _ in 1..m {
        let next = cosine.clone() * current.clone() * 2.0 - previous;
        previous = current;
        current = next;
    }
    sign * current - k * 2.0
}

/// Row-wise L2 normalisation with a small floor on the norm.
///
/// # Shapes
/// - `x`: `[rows, width]` -> `[rows, width]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Mean cross-entropy of `logits` (`[batch, C]`) against `labels` (`[batch]`), `[1]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let batch = logits.dims()[0];
    let log_p = log_softmax(logits, 1);
    log_p.gather(1, labels.reshape([batch, 1])).mean().neg()
}

/// The self-grouping loss L2: mean cross-entropy between the GDN's softmax and G*.
///
/// # Shapes
/// - `group_logits`: `[batch, K]`
/// - `group_labels`: `[batch]`
pub fn self_grouping_loss<B: Backend>(
    group_logits: Tensor<B, 2>,
    group_labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    cross_entropy(group_logits, group_labels)
}

/// Configuration of a [`CenterLoss`] auxiliary term.
#[derive(Config, Debug)]
pub struct CenterLossConfig {
    /// Number of identities C.
    pub classes: usize,
    /// Embedding width.
    pub width: usize,
}

impl CenterLossConfig {
    /// Builds the loss with zero-initialised centres (learned by gradient descent).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CenterLoss<B> {
        CenterLoss {
            centers: burn::module::Initializer::Zeros.init([self.classes, self.width], device),
        }
    }
}

/// Center loss (Wen et al., ECCV 2016): `½·mean_b ‖x_b − c_{y_b}‖²`.
#[derive(Module, Debug)]
pub struct CenterLoss<B: Backend> {
    /// Class centres `[C, width]`.
    pub centers: Param<Tensor<B, 2>>,
}

impl<B: Backend> CenterLoss<B> {
    /// # Shapes
    /// - `embedding`: `[batch, width]`
    /// - `labels`: `[batch]`
    /// - output: `[1]`
    pub fn forward(&self, embedding: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        let centers = self.centers.val().select(0, labels);
        (embedding - centers).powi_scalar(2).sum_dim(1).mean() * 0.5
    }
}

/// Configuration of the whole training criterion.
#[derive(Config, Debug, PartialEq)]
pub struct CriterionConfig {
    /// The margin softmax L1.
    pub margin: MarginSoftmaxConfig,
    /// Weight λ of the self-grouping loss.
    #[config(default = 0.1)]
    pub lambda: f64,
    /// Weight of the Center loss; 0 turns it off.
    #[config(default = 0.0)]
    pub center_weight: f64,
}

impl CriterionConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.margin.validate()?;
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(ConfigError::new(
                "lambda",
                "a finite weight >= 0",
                self.lambda.to_string(),
            ));
        }
        if !(self.center_weight.is_finite() && self.center_weight >= 0.0) {
            return Err(ConfigError::new(
                "center_loss",
                "a finite weight >= 0",
                self.center_weight.to_string(),
            ));
        }
        Ok(())
    }

    /// Builds the criterion.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Criterion<B> {
        Criterion {
            margin: self.margin.init(device),
            center: (self.center_weight > 0.0).then(|| {
                CenterLossConfig::new(self.margin.classes, self.margin.width).init(device)
            }),
            lambda: self.lambda,
            center_weight: self.center_weight,
        }
    }
}

/// The trainable parts of the loss: the class weights and optional class centres.
#[derive(Module, Debug)]
pub struct Criterion<B: Backend> {
    /// Margin softmax L1.
    pub margin: MarginSoftmax<B>,
    /// Optional Center loss.
    pub center: Option<CenterLoss<B>>,
    /// λ of L2.
    pub lambda: f64,
    /// Weight of the Center loss.
    pub center_weight: f64,
}

/// The loss terms of one batch, each `[1]`.
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    /// `L1 + λ·L2 + λ_c·L_center`.
    pub total: Tensor<B, 1>,
    /// The margin softmax L1.
    pub classification: Tensor<B, 1>,
    /// The self-grouping loss L2, when group labels were given.
    pub grouping: Option<Tensor<B, 1>>,
    /// The Center loss, when enabled.
    pub center: Option<Tensor<B, 1>>,
    /// Plain cosine similarities to every class, `[batch, C]`, or to the sampled ones,
    /// `[batch, S]`, under Partial FC.
    pub cosine: Tensor<B, 2>,
    /// The batch's labels as columns of `cosine`, `[batch]`: the labels themselves, or their
    /// positions in the sample.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend> Criterion<B> {
    /// The total loss of one batch. `group_labels` come from a
    /// [`GroupLabeler`](crate::objective::labels::GroupLabeler); `None` means no self-grouping
    /// loss. `sample` restricts the margin softmax to a Partial FC sample drawn for `classes`
    /// (the Center loss still sees every class of the batch).
    pub fn forward(
        &self,
        output: &GroupFaceOutput<B>,
        classes: Tensor<B, 1, Int>,
        group_labels: Option<Tensor<B, 1, Int>>,
        sample: Option<&ClassSample>,
    ) -> LossTerms<B> {
        let margin = match sample {
            Some(sample) => self.margin.forward_sampled(output.embedding.clone(), sample),
            None => self.margin.forward(output.embedding.clone(), classes.clone()),
        };
        let mut total = margin.loss.clone();
        let grouping = match (&output.groups, group_labels) {
            (Some(groups), Some(labels)) => {
                let l2 = self_grouping_loss(groups.logits.clone(), labels);
                total = total + l2.clone() * self.lambda;
                Some(l2)
            }
            _ => None,
        };
        let center = self.center.as_ref().map(|center| {
            let lc = center.forward(output.embedding.clone(), classes);
            total = total.clone() + lc.clone() * self.center_weight;
            lc
        });
        LossTerms {
            total,
            classification: margin.loss,
            grouping,
            center,
            cosine: margin.cosine,
            targets: margin.targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class of the batch, `⌊rate·C⌋` in all (never fewer than the batch's classes),
    /// ascending without repeats, the labels mapped to their positions; the same seed draws
    /// the same sample.
    #[test]
    fn a_sample_holds_the_batch_and_has_the_asked_size() {
        let labels = [7i64, 3, 7, 12, 0];
        for (rate, size) in [(0.5, 10), (0.25, 5), (0.1, 4), (0.05, 4), (1.0, 20)] {
            let sample = ClassSample::draw(&labels, 20, rate, 9);
            assert_eq!(sample.index.len(), size, "rate {rate}");
            assert!(sample.index.windows(2).all(|w| w[0] < w[1]), "{:?}", sample.index);
            assert!(sample.index.iter().all(|&c| (0..20).contains(&c)));
            for (label, position) in labels.iter().zip(&sample.labels) {
                assert_eq!(sample.index[*position as usize], *label);
            }
            assert_eq!(sample, ClassSample::draw(&labels, 20, rate, 9));
        }
        assert_ne!(ClassSample::draw(&labels, 20, 0.5, 1), ClassSample::draw(&labels, 20, 0.5, 2));
    }

    /// The law of the other classes: uniform without repeats. With C = 10, positives {3, 7}
    /// and rate 0.5 (5 centres), 3 of the 8 others are drawn, so each is in a sample with
    /// probability 3/8; over 4000 draws its count is Binomial(4000, 0.375): mean 1500,
    /// standard deviation √(4000·0.375·0.625) = 30.6. Bounds of ±5 sd (±153).
    #[test]
    fn the_other_classes_are_drawn_uniformly() {
        let mut counts = [0usize; 10];
        for seed in 0..4000 {
            for c in ClassSample::draw(&[3, 7, 3], 10, 0.5, seed).index {
                counts[c as usize] += 1;
            }
        }
        assert_eq!((counts[3], counts[7]), (4000, 4000));
        for (class, &count) in counts.iter().enumerate().filter(|(c, _)| ![3, 7].contains(c)) {
            assert!((1347..=1653).contains(&count), "class {class}: {count} of 4000");
        }
    }

    #[test]
    fn a_rate_outside_zero_to_one_is_refused_by_name() {
        for rate in [0.0, -0.1, 1.5, f64::NAN] {
            let error = MarginSoftmaxConfig::new(10, 4).with_sample_rate(rate).validate();
            assert!(format!("{}", error.unwrap_err()).contains("sample_rate"), "rate {rate}");
        }
    }
}
