//! The book's "Extending the library" chapter includes its code from here, so that the code
//! it shows compiles and is checked: a new margin written with the combined-margin fields, and
//! a new backbone shape.

use crate::common;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use common::*;
use groupface::backend::conv::TrainBackend;
use groupface::model::summary::ModelSummary;
use groupface::model::GroupFaceConfig;
use groupface::objective::loss::{MarginSoftmax, MarginSoftmaxConfig};

// ANCHOR: combined_margin
/// insightface's "combined" margin `cos(m1·θ + m2) − m3` with `(m1, m2, m3) = (1, 0.3, 0.2)`:
/// ArcFace's angular margin and CosFace's cosine margin at once. Every margin of the library is
/// this form; a new one only sets the three numbers.
fn combined_margin<B: Backend>(
    classes: usize,
    width: usize,
    device: &B::Device,
) -> MarginSoftmax<B> {
    let mut margin = MarginSoftmaxConfig::new(classes, width).init::<B>(device);
    margin.m1 = 1.0;
    margin.m2 = 0.3;
    margin.m3 = 0.2;
    margin
}
// ANCHOR_END: combined_margin

fn combined<B: AutodiffBackend>(device: &B::Device) {
    let margin = combined_margin::<B>(4, 8, device);
    // cos θ = 0.6, sin θ = 0.8:
    // cos(θ + 0.3) − 0.2 = 0.6·cos 0.3 − 0.8·sin 0.3 − 0.2
    //                    = 0.6·0.9553365 − 0.8·0.2955202 − 0.2 = 0.1367857
    let target = matrix::<B>(&[&[0.6]], device);
    assert_close(&values(margin.target_logit(target)), &[0.1367857], 1e-6, "combined margin");
}

#[test]
fn a_combined_margin_is_three_numbers() {
    on_cpu_backends!(combined);
}

// ANCHOR: custom_backbone
/// A deeper CPU preset: ResNet-34's block counts (3, 4, 6, 3) at the tiny preset's widths and
/// 32-pixel input. Any depth, width, input side or embedding width is a configuration, checked
/// by `validate` before use.
fn deep_tiny(groups: usize) -> GroupFaceConfig {
    let mut config = GroupFaceConfig::tiny(groups);
    config.backbone.blocks = vec![3, 4, 6, 3];
    config
}
// ANCHOR_END: custom_backbone

fn deep<B: TrainBackend>(device: &B::Device) {
    let config = deep_tiny(4);
    config.validate().expect("a valid configuration");
    let model = config.init::<B>(device);
    let output = model.forward(images::<B>(2, 32, device));
    assert_eq!(output.embedding.dims(), [2, config.output_width()]);
    assert_eq!(output.groups.expect("GroupFace has groups").probs.dims(), [2, 4]);
    // 16 blocks instead of 4: more parameters and more FLOPs than the tiny preset.
    let (deep, tiny) = (ModelSummary::of(&config), ModelSummary::of(&GroupFaceConfig::tiny(4)));
    assert!(deep.params > tiny.params && deep.gflops > tiny.gflops);
}

#[test]
fn a_new_backbone_shape_is_a_configuration() {
    on_cpu_backends!(deep);
}
