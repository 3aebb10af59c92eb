//! The configuration of a training run: its keys, their validation, and `config.json`
//! (written whole, read back with the fields added since older runs filled in).

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::SgdConfig;
use burn::prelude::*;
use std::path::Path;

use crate::backend::Precision;
use crate::data::synth::SynthConfig;
use crate::evaluate::held_out::SynthEvalConfig;
use crate::model::GroupFaceConfig;
use crate::objective::labels::{LabelMethod, LabelSpace};
use crate::objective::loss::CriterionConfig;
use crate::train::schedule::{Schedule, ScheduleKind, ScheduleSpec};
use crate::util::error::ConfigError;

/// The base learning rate for a global batch of `images` (all replicas together), at
/// arcface_torch's rate per image: its configs train from scratch at 0.1 "for a batch size of
/// 512" (SGD, momentum 0.9), so 0.0125 at 64. The rate is scaled linearly with the batch, the
/// usual rule for SGD (Goyal et al., 2017). The book's group-labels chapter shows what the
/// 0.1 at batch 64 that earlier versions used did: GDN probabilities saturate in the first
/// epoch and the groups collapse, and both arms lose about 1.3 points of verification.
pub fn reference_lr(images: usize) -> f64 {
    0.1 * images as f64 / 512.0
}

/// The paper's fine-tuning rate (0.005 for its batch of 1,024) scaled linearly to a global
/// batch of `images`.
pub fn paper_finetune_lr(images: usize) -> f64 {
    0.005 * images as f64 / 1024.0
}

/// Everything that defines a training run; saved as `config.json` in the run directory so the
/// run can be repeated with `config=FILE`.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// The model.
    pub model: GroupFaceConfig,
    /// The loss (its `classes` and `width` are set from the data and the model).
    pub criterion: CriterionConfig,
    /// How group labels are made.
    #[config(default = "LabelMethod::SelfDistributed")]
    pub labels: LabelMethod,
    /// Batches in the E[p] window of self-distributed labeling. Eight: the window must be a
    /// small part of an epoch to follow the GDN (the book's group-labels chapter: at the tiny
    /// preset's 28 steps an epoch a window of 32 lags it and leaves 0.10-0.11 of the labels in
    /// one of 32 groups, 8 keeps them under 3/K), and 8 batches still average thousands of
    /// images at full scale.
    #[config(default = 8)]
    pub label_window: usize,
    /// Where self-distributed labeling takes away the expectation (`label_space=`).
    #[config(default = "LabelSpace::Zlog")]
    pub label_space: LabelSpace,
    /// The synthetic faces trained on (with `data_path`, only its `side` is used).
    pub data: SynthConfig,
    /// An image folder (one subfolder per identity) or insightface `.rec` to train on instead
    /// of synthetic faces (the CLI's `data=`). Its identities are split into classes and
    /// `eval.identities` held-out ones; see [`crate::data::source::FaceSource::split`].
    #[config(default = "None")]
    pub data_path: Option<String>,
    /// Images of each identity held out for validation (the rest train).
    #[config(default = 2)]
    pub valid_images_per_identity: usize,
    /// Epochs.
    #[config(default = 3)]
    pub epochs: usize,
    /// Images per batch on each device, at least 2 (BatchNorm normalises over them).
    #[config(default = 64)]
    pub batch: usize,
    /// Base learning rate.
    #[config(default = 0.1)]
    pub lr: f64,
    /// How the rate moves after the warm-up.
    #[config(default = "ScheduleKind::Constant")]
    pub schedule: ScheduleKind,
    /// Linear warm-up, in epochs (fractions allowed).
    #[config(default = 0.0)]
    pub warmup: f64,
    /// Epochs at which `schedule=step` multiplies the rate by `step_factor`.
    #[config(default = "Vec::new()")]
    pub step_epochs: Vec<usize>,
    /// Factor of each step of `schedule=step`.
    #[config(default = 0.1)]
    pub step_factor: f64,
    /// SGD momentum.
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Weight decay.
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Seed of the weights, the shuffle and the flips.
    #[config(default = 0)]
    pub seed: u64,
    /// Data loader worker threads.
    #[config(default = 1)]
    pub workers: usize,
    /// What this run starts from (the paper's two-stage recipe: a softmax-pretrained network,
    /// then GroupFace): a finished run directory, whose backbone is copied (the trunk always,
    /// the FC when the output widths agree), or a checkpoint file, an insightface
    /// arcface_torch IResNet state dict (`.pth`/`.pt`) or safetensors, loaded by
    /// [`crate::model::interop::load_into`].
    #[config(default = "None")]
    pub init: Option<String>,
    /// Verification on held-out identities, every epoch and after training.
    #[config(default = "SynthEvalConfig::new()")]
    pub eval: SynthEvalConfig,
    /// Limit of the global L2 norm of the model's gradients (insightface uses 5); 0: off.
    #[config(default = 0.0)]
    pub clip_grad_norm: f64,
    /// Data-parallel replicas: each takes `batch` images of a step, so the global batch is
    /// `devices * batch`; their gradients are averaged.
    #[config(default = 1)]
    pub devices: usize,
    /// Processes (machines) of a data-parallel run, each training one replica on its shard of
    /// every epoch (`crate::train::cluster`): the global batch is `nodes * devices * batch`.
    #[config(default = 1)]
    pub nodes: usize,
    /// Validation targets (arcface_torch's `val_targets`): insightface `.bin` verification
    /// sets measured during training, each named after its file's stem
    /// ([`crate::evaluate::targets`]).
    #[config(default = "Vec::new()")]
    pub val: Vec<String>,
    /// Measure the targets every this many optimiser steps as well as at each epoch's end;
    /// 0: at each epoch's end only.
    #[config(default = 0)]
    pub val_every: usize,
    /// Float types of the training steps: `f32`, or mixed precision with the backbone in
    /// `bf16`, or in `f16` with dynamic loss scaling ([`crate::backend::Precision`]).
    /// Evaluation runs in f32.
    #[config(default = "Precision::F32")]
    pub precision: Precision,
}

/// SGD as PyTorch runs it: dampening 0 (Burn's default is 0.1), no momentum or decay term
/// where the value is 0. The paper's is `sgd(0.9, 5e-4)`, [`TrainConfig`]'s defaults.
pub fn sgd(momentum: f64, weight_decay: f64) -> SgdConfig {
    let momentum =
        (momentum > 0.0).then(|| MomentumConfig::new().with_momentum(momentum).with_dampening(0.0));
    let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
    SgdConfig::new().with_momentum(momentum).with_weight_decay(decay)
}

impl TrainConfig {
    /// Checks every field, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        self.criterion.validate()?;
        self.check_agreement()?;
        self.check_data()?;
        self.check_steps()?;
        self.check_schedule()?;
        self.eval.validate()?;
        crate::evaluate::targets::check_target_paths(&self.val)
            .map_err(|e| ConfigError::new("val", "`.bin` files with different plain stems", e))?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new(
                "weight_decay",
                "a value >= 0",
                self.weight_decay.to_string(),
            ));
        }
        Ok(())
    }

    /// The metric names of the `val=` targets, as the Learner logs them and `metrics.csv`
    /// lists them ([`crate::evaluate::targets::metric_names`] of each; the names were checked
    /// by [`TrainConfig::validate`]).
    pub fn val_metric_names(&self) -> Vec<String> {
        use crate::evaluate::targets::{metric_names, target_name};
        let names = self.val.iter().filter_map(|p| target_name(std::path::Path::new(p)).ok());
        names.flat_map(|name| metric_names(&name)).collect()
    }

    /// The model, the margin head and the data agree on widths, classes and image side.
    fn check_agreement(&self) -> Result<(), ConfigError> {
        if self.criterion.margin.width != self.model.output_width() {
            return Err(ConfigError::new(
                "criterion.margin.width",
                format!("the model's embedding width {}", self.model.output_width()),
                self.criterion.margin.width.to_string(),
            ));
        }
        // A folder's or .rec's classes are checked against the data when it is opened.
        if self.data_path.is_none() && self.criterion.margin.classes != self.data.identities {
            return Err(ConfigError::new(
                "criterion.margin.classes",
                format!("the number of identities {}", self.data.identities),
                self.criterion.margin.classes.to_string(),
            ));
        }
        if self.data.side as usize != self.model.backbone.input_side {
            return Err(ConfigError::new(
                "data.side",
                format!("the model's input side {}", self.model.backbone.input_side),
                self.data.side.to_string(),
            ));
        }
        Ok(())
    }

    /// The synthetic data, its validation split and the data path.
    fn check_data(&self) -> Result<(), ConfigError> {
        self.data
            .validate()
            .map_err(|e| ConfigError::new("data", "a valid synthetic dataset", e.to_string()))?;
        if self.data_path.is_none()
            && self.valid_images_per_identity >= self.data.images_per_identity
        {
            return Err(ConfigError::new(
                "valid_images_per_identity",
                format!("fewer than images_per_identity ({})", self.data.images_per_identity),
                self.valid_images_per_identity.to_string(),
            ));
        }
        if self.data_path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::new("data_path", "a folder or a .rec file", "\"\""));
        }
        Ok(())
    }

    /// Batch, replicas and gradient clipping: what every step needs.
    fn check_steps(&self) -> Result<(), ConfigError> {
        if !(self.clip_grad_norm.is_finite() && self.clip_grad_norm >= 0.0) {
            return Err(ConfigError::new(
                "clip_grad_norm",
                "a norm >= 0 (0: off)",
                self.clip_grad_norm.to_string(),
            ));
        }
        for (key, value) in [
            ("epochs", self.epochs),
            ("batch", self.batch),
            ("workers", self.workers),
            ("devices", self.devices),
            ("nodes", self.nodes),
            ("label_window", self.label_window),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "an integer > 0", "0"));
            }
        }
        if self.batch < 2 {
            // One image leaves BatchNorm no batch variance: every output would be its shift.
            return Err(ConfigError::new(
                "batch",
                "at least 2 images per device (BatchNorm normalises over the batch; PyTorch \
                 refuses one image in training too)",
                self.batch.to_string(),
            ));
        }
        match self.precision {
            Precision::Bf16Pure => {
                return Err(ConfigError::new(
                    "precision",
                    "f32|bf16|f16 (bf16-pure keeps the weights in bfloat16, where SGD updates \
                     below its resolution are lost; only `bench` takes it)",
                    "bf16-pure",
                ))
            }
            Precision::F16 if self.devices * self.nodes > 1 => {
                return Err(ConfigError::new(
                    "precision",
                    "bf16 or f32 with more than one replica (f16's loss scaling skips an \
                     overflowing step per replica, which would apply the other replicas' \
                     gradients alone)",
                    "f16",
                ))
            }
            _ => {}
        }
        if self.nodes > 1 && self.devices > 1 {
            return Err(ConfigError::new(
                "devices",
                "1 when nodes > 1 (one replica per process; run a process per GPU instead)",
                self.devices.to_string(),
            ));
        }
        Ok(())
    }

    /// The learning rate, momentum, warmup and step schedule.
    fn check_schedule(&self) -> Result<(), ConfigError> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::new("lr", "a positive learning rate", self.lr.to_string()));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ConfigError::new(
                "momentum",
                "a value in [0, 1)",
                self.momentum.to_string(),
            ));
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err(ConfigError::new("warmup", "epochs >= 0", self.warmup.to_string()));
        }
        if self.warmup >= self.epochs as f64 && self.schedule == ScheduleKind::Linear {
            return Err(ConfigError::new(
                "warmup",
                format!("fewer epochs than the run's {}", self.epochs),
                self.warmup.to_string(),
            ));
        }
        if let Some(&e) = self.step_epochs.iter().find(|&&e| e == 0 || e >= self.epochs) {
            return Err(ConfigError::new(
                "step_epochs",
                format!("epochs in 1..{}", self.epochs),
                e.to_string(),
            ));
        }
        Ok(())
    }

    /// Training images each replica takes in an epoch of `train_images`: an equal share for
    /// each of the `nodes * devices` replicas (rounded down, so that every optimiser step has
    /// a batch of the same size on every replica), less one where the share would end in a
    /// batch of one image. BatchNorm has no variance over one image, which is why `batch=1` is
    /// refused; the left-out positions are the end of each epoch's shuffled order, other
    /// images every epoch.
    pub fn images_per_replica(&self, train_images: usize) -> usize {
        let share = train_images / (self.nodes.max(1) * self.devices.max(1));
        if share > 1 && share % self.batch.max(1) == 1 {
            share - 1
        } else {
            share
        }
    }

    /// Optimiser steps per epoch over `train_images` images: one per global batch of
    /// `nodes * devices * batch` images, over each replica's
    /// [`images_per_replica`](Self::images_per_replica).
    pub fn steps_per_epoch(&self, train_images: usize) -> usize {
        self.images_per_replica(train_images).div_ceil(self.batch.max(1))
    }

    /// The learning-rate schedule over the run's optimiser steps, for an epoch of
    /// `train_images` images.
    pub fn schedule(&self, train_images: usize) -> Result<Schedule, ConfigError> {
        if train_images > 0 && self.images_per_replica(train_images) == 0 {
            // More replicas than images: name the key that asked for them, not `epochs`.
            let (key, replicas) =
                if self.nodes > 1 { ("nodes", self.nodes) } else { ("devices", self.devices) };
            return Err(ConfigError::new(
                key,
                format!("a training image for each replica ({train_images} images)"),
                replicas.to_string(),
            ));
        }
        let per_epoch = self.steps_per_epoch(train_images);
        let spec = ScheduleSpec {
            lr: self.lr,
            kind: self.schedule,
            warmup: (self.warmup * per_epoch as f64).round() as usize,
            total: per_epoch * self.epochs,
            per_epoch,
            step_factor: self.step_factor,
        };
        Schedule::new(spec, self.step_epochs.clone())
    }

    /// SGD as configured, with PyTorch's dampening of 0.
    pub fn optimizer(&self) -> SgdConfig {
        sgd(self.momentum, self.weight_decay)
    }
}

/// The keys (dotted paths, leaves only) in which two configurations differ; empty when they
/// are the same run.
pub fn config_differences(ours: &TrainConfig, theirs: &TrainConfig) -> Result<Vec<String>, String> {
    let ours = serde_json::to_value(ours).map_err(|e| e.to_string())?;
    let theirs = serde_json::to_value(theirs).map_err(|e| e.to_string())?;
    if ours == theirs {
        return Ok(Vec::new());
    }
    Ok(config_key_paths(&ours)
        .into_iter()
        .filter(|k| {
            let pointer = format!("/{}", k.replace('.', "/"));
            ours.pointer(&pointer) != theirs.pointer(&pointer)
                && !ours.pointer(&pointer).is_some_and(|v| v.is_object())
        })
        .collect())
}

/// Writes `config.json` whole ([`crate::util::fs::write_atomic_with`]).
pub fn save_config(config: &TrainConfig, dir: &Path) -> Result<(), String> {
    let path = dir.join("config.json");
    crate::util::fs::write_atomic_with(&path, |tmp| config.save(tmp))
        .map_err(|e| format!("cannot write {e}"))
}

/// Fields added to [`TrainConfig`] (or a config inside it) after run directories were first
/// written, each with the value that older runs behaved as. Burn's `Config` derive rejects a
/// file that lacks a field, so [`read_config`] inserts these before parsing: without them every
/// added field would orphan every earlier run. `config_keys_are_migrated` in `tests/integration/math.rs`
/// fails when a field is added without an entry here.
pub const ADDED_CONFIG_FIELDS: &[(&[&str], &str)] = &[
    (&["eval", "distractors"], "200"),
    (&["clip_grad_norm"], "0.0"),
    (&["devices"], "1"),
    (&["data_path"], "null"),
    (&["nodes"], "1"),
    (&["label_space"], "\"prob\""),
    (&["criterion", "margin", "sample_rate"], "1.0"),
    (&["val"], "[]"),
    (&["val_every"], "0"),
    (&["precision"], "\"f32\""),
];

/// Reads a run's `config.json`, filling in [`ADDED_CONFIG_FIELDS`] that an older file lacks.
/// Any other missing or malformed field is an error naming the file.
pub fn read_config(path: &Path) -> Result<TrainConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    for (keys, default) in ADDED_CONFIG_FIELDS {
        let (last, parents) = keys.split_last().expect("a key path is not empty");
        let parent = format!("/{}", parents.join("/"));
        let parent = if parents.is_empty() { "" } else { parent.as_str() };
        if let Some(object) = value.pointer_mut(parent).and_then(|v| v.as_object_mut()) {
            if !object.contains_key(*last) {
                let default = serde_json::from_str(default).expect("migration defaults are JSON");
                object.insert((*last).to_string(), default);
            }
        }
    }
    serde_json::from_value(value)
        .map_err(|e| format!("{}: not a training config: {e}", path.display()))
}

/// Every key path of a JSON document's objects, `a.b.c`, sorted; the shape [`read_config`]'s
/// migrations must keep up with.
pub fn config_key_paths(value: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(object) = value.as_object() {
            for (key, child) in object {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                walk(child, &path, out);
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out
}
