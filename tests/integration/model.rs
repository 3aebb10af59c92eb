//! Model structure: shapes of every mode x combine x groups, probabilities, soft = hard on
//! one-hot probabilities, and parameter counts against the configuration-only summary.

use crate::common;

use burn::module::{AutodiffModule, Param};
use burn::prelude::*;
use common::*;
use groupface::backend::conv::TrainBackend;
use groupface::model::summary::{trainable_params, ModelSummary};
use groupface::model::{Combine, GroupFace, GroupFaceConfig, GroupFaceOutput, GroupMode};

const BATCH: usize = 3;

fn check_shapes<B: Backend>(out: &GroupFaceOutput<B>, config: &GroupFaceConfig, training: bool) {
    let d = config.embedding;
    let k = config.groups;
    assert_eq!(out.embedding.dims(), [BATCH, config.output_width()], "{config}");
    assert_eq!(out.instance.dims(), [BATCH, d]);
    match &out.groups {
        None => assert_eq!(k, 0, "only the baseline has no group outputs"),
        Some(g) => {
            assert_eq!(g.logits.dims(), [BATCH, k]);
            assert_eq!(g.probs.dims(), [BATCH, k]);
            assert_eq!(g.feature.dims(), [BATCH, config.gdn_feature]);
            assert_eq!(g.aggregate.dims(), [BATCH, d]);
            // Hard inference computes only the selected group's FC.
            let skipped = config.mode == GroupMode::Hard && !training;
            match &g.representations {
                Some(r) => {
                    assert!(!skipped, "hard inference must not compute all groups");
                    assert_eq!(r.dims(), [BATCH, k, d]);
                }
                None => assert!(skipped, "representations missing in {:?}", config.mode),
            }
            // p(G|x) sums to 1 over the group axis for every sample.
            let sums = values(g.probs.clone().sum_dim(1));
            assert_close(&sums, &[1.0; BATCH], 1e-5, "sum_k p(G_k|x)");
        }
    }
    if config.combine == Combine::Concat && k > 0 {
        // concat stacks [v_x ; v_x^G]: the first half is v_x itself.
        let first = out.embedding.clone().slice([0..BATCH, 0..d]);
        assert_close(&values(first), &values(out.instance.clone()), 0.0, "concat first half");
    }
}

fn shapes_every_combination<B: TrainBackend>(device: &B::Device) {
    for groups in [0, 1, 4, 32] {
        for mode in [GroupMode::Soft, GroupMode::Hard] {
            for combine in [Combine::Sum, Combine::Concat] {
                let config = GroupFaceConfig::tiny(groups).with_mode(mode).with_combine(combine);
                config.validate().unwrap();
                let model: GroupFace<B> = config.init(device);
                let side = config.backbone.input_side;
                let out = model.forward(images::<B>(BATCH, side, device));
                check_shapes(&out, &config, true);
                let inference = model.valid();
                let out = inference.forward(images(BATCH, side, device));
                check_shapes(&out, &config, false);
            }
        }
    }
}

#[test]
fn shapes_for_every_mode_combine_and_group_count() {
    on_cpu_backends!(shapes_every_combination);
}

fn concat_doubles_width<B: TrainBackend>(device: &B::Device) {
    let sum = GroupFaceConfig::tiny(4);
    let concat = GroupFaceConfig::tiny(4).with_combine(Combine::Concat);
    assert_eq!(concat.output_width(), 2 * sum.output_width());
    let model: GroupFace<B> = concat.init(device);
    let out = model.forward(images(BATCH, 32, device));
    assert_eq!(out.embedding.dims()[1], 2 * sum.embedding);
}

#[test]
fn concat_doubles_the_embedding_width() {
    on_cpu_backends!(concat_doubles_width);
}

/// Forces the GDN to put all mass on `group`: zero classifier weights and a bias of 100 on it,
/// so softmax gives exactly 1.0 there in f32 (e^-100 underflows against 1).
fn force_group<B: Backend>(model: GroupFace<B>, group: usize, device: &B::Device) -> GroupFace<B> {
    let mut model = model;
    let head = model.head.as_mut().unwrap();
    let [f, k] = head.gdn.classifier.weight.dims();
    head.gdn.classifier.weight = Param::from_tensor(Tensor::zeros([f, k], device));
    let mut bias = vec![0.0f32; k];
    bias[group] = 100.0;
    head.gdn.classifier.bias =
        Some(Param::from_tensor(Tensor::from_data(TensorData::new(bias, [k]), device)));
    model
}

fn soft_equals_hard_on_one_hot<B: TrainBackend>(device: &B::Device) {
    let config = GroupFaceConfig::tiny(4);
    let model = force_group(config.init::<B>(device), 2, device);
    let x = images::<B>(BATCH, 32, device);
    // Training path: both compute all groups; soft weights them by the one-hot p.
    let soft = model.forward_mode(x.clone(), GroupMode::Soft);
    let hard = model.forward_mode(x, GroupMode::Hard);
    let probs = values(soft.groups.as_ref().unwrap().probs.clone());
    for (i, p) in probs.iter().enumerate() {
        // e^-100 ≈ 3.7e-44 survives as a subnormal: one-hot to far below any tolerance.
        let expected = if i % 4 == 2 { 1.0 } else { 0.0 };
        assert!((p - expected).abs() < 1e-30, "p must be one-hot, got {p} at {i}");
    }
    assert_close(&values(soft.embedding), &values(hard.embedding), 1e-5, "train soft vs hard");
    // Inference path: hard runs one group FC per sample with that group's BN statistics.
    let model = model.valid();
    let x = images::<B::InnerBackend>(BATCH, 32, device);
    let soft = model.forward_mode(x.clone(), GroupMode::Soft);
    let hard = model.forward_mode(x, GroupMode::Hard);
    assert!(hard.groups.as_ref().unwrap().representations.is_none());
    assert_close(&values(soft.embedding), &values(hard.embedding), 1e-5, "infer soft vs hard");
}

#[test]
fn soft_mode_equals_hard_mode_when_p_is_one_hot() {
    on_cpu_backends!(soft_equals_hard_on_one_hot);
}

fn hard_inference_matches_selected_rows<B: TrainBackend>(device: &B::Device) {
    // With a mix of groups per sample, hard inference must pick each sample's own group.
    let config = GroupFaceConfig::tiny(4).with_mode(GroupMode::Hard);
    let model = config.init::<B>(device).valid();
    let x = images::<B::InnerBackend>(6, 32, device);
    let soft = model.forward_mode(x.clone(), GroupMode::Soft);
    let hard = model.forward_mode(x, GroupMode::Hard);
    let groups = soft.groups.unwrap();
    let selected = groupface::model::argmax_rows(groups.probs.clone());
    let all = groups.representations.unwrap();
    let d = config.embedding;
    for (i, &k) in selected.iter().enumerate() {
        let expected = all.clone().slice([i..i + 1, k..k + 1, 0..d]).reshape([d]);
        let actual = hard.groups.as_ref().unwrap().aggregate.clone().slice([i..i + 1, 0..d]);
        assert_close(&values(actual), &values(expected), 1e-5, &format!("sample {i}"));
    }
}

#[test]
fn hard_inference_selects_each_samples_group() {
    on_cpu_backends!(hard_inference_matches_selected_rows);
}

fn params_match_summary<B: TrainBackend>(device: &B::Device) {
    for config in [
        GroupFaceConfig::tiny(0),
        GroupFaceConfig::tiny(4),
        GroupFaceConfig::tiny(32).with_combine(Combine::Concat),
        GroupFaceConfig::small(8),
    ] {
        let model: GroupFace<B> = config.init(device);
        let summary = ModelSummary::of(&config);
        assert_eq!(trainable_params(&model), summary.params, "{config}");
        // Burn's own count adds the BatchNorm running mean and variance on top.
        assert!(model.num_params() as u64 > summary.params);
    }
}

#[test]
fn parameter_count_of_built_model_matches_the_summary() {
    on_cpu_backends!(params_match_summary);
}

#[test]
fn baseline_is_a_plain_backbone() {
    // groups=0 builds no head; the embedding is the backbone output.
    fn body<B: TrainBackend>(device: &B::Device) {
        let config = GroupFaceConfig::tiny(0);
        let model: GroupFace<B> = config.init(device);
        assert!(model.head.is_none());
        assert_eq!(model.backbone.fc.weight.dims()[1], config.embedding);
        let x = images::<B>(BATCH, 32, device);
        let out = model.forward(x.clone());
        let direct = model.backbone.forward(x);
        assert_close(&values(out.embedding), &values(direct), 0.0, "baseline embedding");
    }
    on_cpu_backends!(body);
}

#[test]
fn invalid_configurations_name_the_key() {
    let err = GroupFaceConfig::tiny(4).with_embedding(0).validate().unwrap_err();
    assert_eq!(err.key, "embedding");
    let mut config = GroupFaceConfig::tiny(4);
    config.backbone.input_side = 40;
    let err = config.validate().unwrap_err();
    assert_eq!(err.key, "backbone.input_side");
    assert!(err.to_string().contains("multiple of 16"), "{err}");
    let mut config = GroupFaceConfig::tiny(4);
    config.backbone.widths.pop();
    assert_eq!(config.validate().unwrap_err().key, "backbone.widths");
}
