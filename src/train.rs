//! A training run: configuration, data, Learner with the TUI dashboard, and the run directory.

use burn::data::dataset::transform::SelectionDataset;
use burn::data::dataset::Dataset;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::SgdConfig;
use burn::prelude::*;
use burn::record::{FileRecorder, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::{Device as DeviceIds, DeviceId};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Learner, LearnerSummary, MultiDeviceOptim, SupervisedTraining,
    TrainingStrategy,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{BackendJob, BackendKind};
use crate::cluster::{CollectiveStrategy, NodeLaunch};
use crate::conv::TrainBackend;
use crate::data::dataset::{ErrorLog, FaceItem, SynthDataset};
use crate::data::loader::{EpochLoader, MissingHook};
use crate::data::source::{FaceSource, SourceSplit};
use crate::data::synth::SynthConfig;
use crate::error::ConfigError;
use crate::evaluate::{evaluate_held_out, HeldOut, RunReport, SynthEvalConfig, VerificationProbe};
use crate::labels::{LabelMethod, LabelSpace};
use crate::learner::{GroupFaceMetric, GroupFaceQuantity};
use crate::learner::{QuietRenderer, ResumedMetricLogger};
use crate::loss::CriterionConfig;
use crate::model::GroupFaceConfig;
use crate::schedule::{Schedule, ScheduleKind, ScheduleSpec};
use crate::training::{StepGuard, TrainModel};

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
    /// [`crate::interop::load_into`].
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
    /// every epoch (`crate::cluster`): the global batch is `nodes * devices * batch`.
    #[config(default = 1)]
    pub nodes: usize,
}

impl TrainConfig {
    /// Checks every field, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        self.criterion.validate()?;
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
        if self.nodes > 1 && self.devices > 1 {
            return Err(ConfigError::new(
                "devices",
                "1 when nodes > 1 (one replica per process; run a process per GPU instead)",
                self.devices.to_string(),
            ));
        }
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
        self.eval.validate()?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new(
                "weight_decay",
                "a value >= 0",
                self.weight_decay.to_string(),
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
        let momentum = (self.momentum > 0.0)
            .then(|| MomentumConfig::new().with_momentum(self.momentum).with_dampening(0.0));
        let decay =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        SgdConfig::new().with_momentum(momentum).with_weight_decay(decay)
    }
}

/// How models and checkpoints are stored: named MessagePack at full precision (burn's compact
/// recorder halves the precision, so a resumed or re-evaluated run would not match).
pub type RunRecorder = burn::record::NamedMpkFileRecorder<burn::record::FullPrecisionSettings>;

/// [`RunRecorder`] writing through a temporary file, an fsync and a rename, so a run killed
/// while a checkpoint is written leaves the previous checkpoints and no truncated file.
/// Burn's checkpointer writes `checkpoint/{model,optim,scheduler}-{epoch}.mpk` with it.
#[derive(Debug, Clone, Default)]
pub struct AtomicRecorder(RunRecorder);

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = burn::record::FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: serde::Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let target = file.with_extension("mpk");
        crate::util::fs::write_atomic_with(&target, |tmp| {
            Recorder::<B>::save_item(&self.0, item, tmp.to_path_buf())
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(|e| RecorderError::Unknown(e.to_string()))
    }

    fn load_item<I: serde::de::DeserializeOwned>(
        &self,
        file: &mut PathBuf,
    ) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.0, file)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// The epochs whose checkpoint is complete in `dir/checkpoint` (model, optimiser, scheduler
/// and group-label window all present), in increasing order.
pub fn complete_checkpoints(dir: &Path) -> Vec<usize> {
    let checkpoints = dir.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&checkpoints) else {
        return Vec::new();
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|e| {
            e.ok()?.file_name().to_str()?.strip_prefix("model-")?.strip_suffix(".mpk")?.parse().ok()
        })
        .filter(|epoch: &usize| {
            ["optim", "scheduler"]
                .iter()
                .all(|part| checkpoints.join(format!("{part}-{epoch}.mpk")).is_file())
                && checkpoints.join(format!("labels-{epoch}.json")).is_file()
        })
        .collect();
    epochs.sort_unstable();
    epochs
}

/// The newest epoch whose checkpoint is complete in `dir/checkpoint`
/// ([`complete_checkpoints`]).
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    complete_checkpoints(dir).last().copied()
}

/// Writes the group-label window as it stands at the end of `epoch` (the state that epoch's
/// checkpoint needs to continue exactly), and removes label files of checkpoints that Burn has
/// since deleted.
fn save_labels(dir: &Path, epoch: usize, history: &[Vec<f32>]) -> Result<(), String> {
    let checkpoints = dir.join("checkpoint");
    std::fs::create_dir_all(&checkpoints)
        .map_err(|e| format!("cannot create {}: {e}", checkpoints.display()))?;
    let json = serde_json::to_vec(history).map_err(|e| e.to_string())?;
    write_atomically(&checkpoints.join(format!("labels-{epoch}.json")), &json)?;
    if let Ok(entries) = std::fs::read_dir(&checkpoints) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(old) = name.to_str().and_then(|n| {
                n.strip_prefix("labels-")?.strip_suffix(".json")?.parse::<usize>().ok()
            }) else {
                continue;
            };
            if old + 1 < epoch && !checkpoints.join(format!("model-{old}.mpk")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Reads the label window saved with the checkpoint of `epoch`.
fn load_labels(dir: &Path, epoch: usize) -> Result<Vec<Vec<f32>>, String> {
    let path = dir.join("checkpoint").join(format!("labels-{epoch}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: expected a list of group-probability rows: {e}", path.display()))
}

/// A training run on one backend: the configuration and where it writes.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory (`config.json`, metrics, checkpoints, `model.mpk`, `report.json`).
    pub out: PathBuf,
    /// No dashboard (runs inside an ablation).
    pub quiet: bool,
    /// Continue the run in `out` from its newest complete checkpoint (from the start when it
    /// has none); `out/config.json` must hold the same configuration.
    pub resume: bool,
    /// This process's place in a run of `config.nodes > 1` processes; `None` for one process.
    pub node: Option<NodeLaunch>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The held-out evaluation (also in `report.json`).
    pub report: RunReport,
    /// Wall time of training, seconds.
    pub train_seconds: f64,
    /// Wall time of the evaluation, seconds.
    pub eval_seconds: f64,
    /// The run had finished before this call (`resume=true` on a finished run): nothing was
    /// trained or written, the report is the saved one and both times are 0.
    pub earlier: bool,
}

/// Trains on the backend `kind` (device `index` for GPUs), then evaluates on held-out
/// identities. Not generic, so that the Learner is compiled once, here, for every binary.
pub fn train(kind: BackendKind, index: usize, run: TrainRun) -> Result<TrainOutcome, String> {
    crate::backend::run(kind, index, run)?
}

/// Metric names as the Learner logs them, in the order of `metrics.csv`.
const CSV_METRICS: [&str; 11] = [
    "Loss",
    "Accuracy",
    "L1 (margin softmax)",
    "L2 (self-grouping)",
    "Largest group share",
    "Group entropy (bits)",
    "Largest label share",
    "Label entropy (bits)",
    "Group confidence",
    "Learning Rate",
    "Verification accuracy",
];

fn split_indices(config: &TrainConfig) -> (Vec<usize>, Vec<usize>) {
    let per = config.data.images_per_identity;
    let held = config.valid_images_per_identity;
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for identity in 0..config.data.identities {
        for index in 0..per {
            let flat = identity * per + index;
            if index + held >= per {
                valid.push(flat);
            } else {
                train.push(flat);
            }
        }
    }
    (train, valid)
}

/// A run's data: what it trains and validates on and its held-out identities.
pub struct TrainData {
    /// Training images with their classes.
    pub train: Arc<dyn Dataset<FaceItem>>,
    /// Validation images (of the trained classes) with their classes.
    pub valid: Arc<dyn Dataset<FaceItem>>,
    /// Number of classes.
    pub classes: usize,
    /// Identities never trained on, for verification.
    pub held_out: HeldOut,
    /// Decode errors of a folder or `.rec` (none for synthetic faces).
    pub errors: Option<ErrorLog>,
}

impl std::fmt::Debug for TrainData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainData")
            .field("train", &self.train.len())
            .field("valid", &self.valid.len())
            .field("classes", &self.classes)
            .field("held_out", &self.held_out)
            .finish()
    }
}

fn open_source(config: &TrainConfig, path: &str) -> Result<(FaceSource, SourceSplit), String> {
    let source = FaceSource::open(path, config.data.side).map_err(|e| e.to_string())?;
    let split = source
        .split(
            config.eval.identities,
            config.eval.images_per_identity,
            config.valid_images_per_identity,
            config.eval.seed,
        )
        .map_err(|e| e.to_string())?;
    Ok((source, split))
}

/// Number of classes a run of `config` trains: the synthetic identities, or the identities
/// of its folder or `.rec` that are not held out (this opens the data).
pub fn data_classes(config: &TrainConfig) -> Result<usize, String> {
    match &config.data_path {
        None => Ok(config.data.identities),
        Some(path) => Ok(open_source(config, path)?.1.classes),
    }
}

/// The held-out identities a run of `config` is evaluated on.
pub fn held_out(config: &TrainConfig) -> Result<HeldOut, String> {
    match &config.data_path {
        None => HeldOut::synthetic(&config.data, &config.eval),
        Some(path) => {
            let (source, split) = open_source(config, path)?;
            HeldOut::from_source(&source, &split, &config.eval)
        }
    }
}

/// Opens the data of a run of `config` and splits it; a folder's or `.rec`'s number of
/// classes must be `criterion.margin.classes`.
pub fn open_data(config: &TrainConfig) -> Result<TrainData, String> {
    let Some(path) = &config.data_path else {
        let faces = SynthDataset::new(config.data.clone()).map_err(|e| e.to_string())?;
        let (train_idx, valid_idx) = split_indices(config);
        let train: Arc<dyn Dataset<FaceItem>> =
            Arc::new(SelectionDataset::<SynthDataset, FaceItem>::from_indices_checked(
                faces.clone(),
                train_idx,
            ));
        let valid: Arc<dyn Dataset<FaceItem>> = Arc::new(
            SelectionDataset::<SynthDataset, FaceItem>::from_indices_checked(faces, valid_idx),
        );
        let held_out = HeldOut::synthetic(&config.data, &config.eval)?;
        return Ok(TrainData {
            train,
            valid,
            classes: config.data.identities,
            held_out,
            errors: None,
        });
    };
    let (source, split) = open_source(config, path)?;
    if split.classes != config.criterion.margin.classes {
        return Err(ConfigError::new(
            "criterion.margin.classes",
            format!(
                "the {} identities of {path} that are not held out for verification",
                split.classes
            ),
            config.criterion.margin.classes.to_string(),
        )
        .to_string());
    }
    let held_out = HeldOut::from_source(&source, &split, &config.eval)?;
    Ok(TrainData {
        train: source.selection(split.train),
        valid: source.selection(split.valid),
        classes: split.classes,
        held_out,
        errors: Some(source.errors().clone()),
    })
}

/// Where Burn runs the steps: one device, or `devices` replicas with the optimiser on the
/// first. CPU backends have one device, which every replica shares; GPU replicas take the
/// device indices that follow the given one.
fn execution_strategy<B: AutodiffBackend>(
    device: &B::Device,
    devices: usize,
) -> ExecutionStrategy<B> {
    if devices <= 1 {
        return ExecutionStrategy::single(device.clone());
    }
    let first = DeviceIds::to_id(device);
    let list = (0..devices as u16)
        .map(|k| {
            <B::Device as DeviceIds>::from_id(DeviceId {
                type_id: first.type_id,
                index_id: first.index_id + k,
            })
        })
        .collect();
    ExecutionStrategy::multi(list, MultiDeviceOptim::OptimMainDevice)
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

/// Creates the run directory or, with `resume`, checks that it holds this configuration.
/// Returns the epoch of the checkpoint to resume from. Without `resume` the directory must be
/// empty or a start of this same run ([`check_fresh_run_dir`]), so an earlier run is never
/// overwritten or mixed with this one by accident.
fn prepare_run_dir(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
) -> Result<Option<usize>, String> {
    let saved = out.join("config.json");
    if resume {
        // A run killed while it wrote left temporaries beside its files; a run killed before
        // it wrote its configuration left nothing else, and starts as a fresh one.
        for dir in [out.to_path_buf(), out.join("checkpoint")] {
            crate::util::fs::sweep_temporaries(&dir).map_err(|e| e.to_string())?;
        }
        let held = crate::util::fs::contents_summary(out)
            .map_err(|e| format!("cannot read run directory {}: {e}", out.display()))?;
        if held.is_some() {
            let prior = read_config(&saved).map_err(|e| {
                format!("resume=true: {} is not a run to continue: {e}", out.display())
            })?;
            let differing = config_differences(config, &prior)?;
            if !differing.is_empty() {
                return Err(format!(
                    "resume=true: the configuration differs from {} in {}; resume with the \
                     saved configuration (give no model or training keys) or choose another \
                     out=",
                    saved.display(),
                    differing.join(", ")
                ));
            }
            return Ok(last_checkpoint(out));
        }
    }
    check_fresh_run_dir(config, out)?;
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create run directory {}: {e}", out.display()))?;
    save_config(config, out)?;
    Ok(None)
}

/// Refuses to start a run in a directory that holds anything but a start of this same run
/// that stopped before its first checkpoint (nothing of it is worth keeping, so it starts
/// again): another run's files would be mixed with this one's, and its config.json replaced.
/// The `train` binary's `overwrite=true` moves such a directory aside first.
fn check_fresh_run_dir(config: &TrainConfig, out: &Path) -> Result<(), String> {
    let found = crate::util::fs::contents_summary(out)
        .map_err(|e| format!("cannot read run directory {}: {e}", out.display()))?;
    let Some(found) = found else {
        return Ok(());
    };
    // Burn creates `checkpoint/` when training starts; only files in it are worth keeping.
    let holds_checkpoints = std::fs::read_dir(out.join("checkpoint"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    let what = if holds_checkpoints {
        "already holds the checkpoints of a run: resume=true continues it".to_string()
    } else if out.join("model.mpk").exists() {
        "already holds a trained model".to_string()
    } else {
        match read_config(&out.join("config.json")) {
            Ok(prior) => {
                let differing = config_differences(config, &prior)?;
                if differing.is_empty() {
                    return Ok(());
                }
                let differing = differing.join(", ");
                format!("already holds another run (its config.json differs in {differing})")
            }
            Err(_) => format!("already holds {found}, and no run to resume"),
        }
    };
    Err(format!(
        "{} {what}; to start again, choose another out= or give overwrite=true (the old \
         directory is removed once the new run finishes)",
        out.display()
    ))
}

impl BackendJob for TrainRun {
    type Output = Result<TrainOutcome, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<TrainOutcome, String> {
        let config = self.config;
        config.validate().map_err(|e| e.to_string())?;
        match (&self.node, config.nodes) {
            (None, nodes) if nodes > 1 => {
                return Err(format!(
                    "nodes={nodes} needs this process's rank= and master=HOST:PORT, rank 0's \
                     address, which every rank names"
                ))
            }
            (Some(launch), 1) => {
                return Err(format!(
                    "rank={} is for a run of several processes: give nodes= too",
                    launch.rank
                ))
            }
            _ => {}
        }
        // This process's shard of the data, and the rank its errors name.
        let rank = self.node.as_ref().map_or(0, |n| n.rank);
        let mut resume_from = prepare_run_dir(&config, &self.out, self.resume)?;
        // Ranks must train the same configuration; `out` is not part of it.
        let fingerprint = crate::data::rng::fnv1a(
            serde_json::to_string(&config).map_err(|e| e.to_string())?.as_bytes(),
        );
        if let (Some(launch), true) = (&self.node, self.resume) {
            let agreed = crate::cluster::agree_on_checkpoint(
                launch,
                config.nodes,
                fingerprint,
                &complete_checkpoints(&self.out),
            )?;
            if agreed != resume_from {
                eprintln!(
                    "resume: rank {rank} holds checkpoints up to epoch {}; the ranks resume \
                     together from {}",
                    resume_from.unwrap_or(0),
                    agreed.map_or("the start".to_string(), |e| format!("epoch {e}"))
                );
            }
            resume_from = agreed;
        }
        // `report.json` is the last file a run writes: a run that has one is finished, and
        // resuming it must not train its last epoch again or rewrite what it wrote (unless
        // another rank of it needs this one to train that epoch again with it).
        let report_path = self.out.join("report.json");
        let all_finished = self.node.is_none() || resume_from == Some(config.epochs);
        if self.resume && report_path.is_file() && all_finished {
            let report = RunReport::read(&report_path)?;
            eprintln!(
                "resume: {} finished all {} epochs earlier ({}); nothing to do",
                self.out.display(),
                config.epochs,
                report_path.display()
            );
            return Ok(TrainOutcome {
                dir: self.out,
                report,
                train_seconds: 0.0,
                eval_seconds: 0.0,
                earlier: true,
            });
        }
        if !self.quiet {
            if let Some(epoch) = resume_from {
                eprintln!("resume: {} from the checkpoint of epoch {epoch}", self.out.display());
            } else if self.resume {
                eprintln!("resume: {} has no complete checkpoint; starting", self.out.display());
            }
        }
        let done_epochs = resume_from.unwrap_or(0);
        let started = Instant::now();

        let data = open_data(&config)?;
        let per_epoch = config.steps_per_epoch(data.train.len());
        let interrupter = burn::train::Interrupter::new();
        let guard = Arc::new(StepGuard::new(
            per_epoch,
            done_epochs * per_epoch,
            config.clip_grad_norm,
            config.devices,
            interrupter.clone(),
        ));
        let probe = Arc::new(VerificationProbe::new(
            Arc::new(data.held_out.clone()),
            config.batch,
            config.eval.mode,
        ));
        // An image that cannot be read stops the run at once, naming it.
        let on_missing: MissingHook = {
            let guard = guard.clone();
            let errors = data.errors.clone();
            Arc::new(move |epoch: usize| {
                let what = errors
                    .as_ref()
                    .and_then(|e| e.check().err())
                    .unwrap_or_else(|| "an item of the dataset could not be produced".into());
                guard.stop(format!("epoch {epoch}: an image could not be read: {what}"));
            })
        };

        let mut model = seeded_model::<B>(&config, &device);
        if resume_from.is_none() {
            if let Some(init) = &config.init {
                let init = Path::new(init);
                if init.is_dir() {
                    // What is not copied (a head of another width) keeps the seeded model's
                    // weights, drawn from the seed alone under the init lock.
                    let fresh = model.model.backbone.clone();
                    model.model.backbone = load_backbone::<B>(init, &config, fresh, &device)?;
                } else {
                    let (loaded, report) =
                        crate::interop::load_into(model.model, &config.model, init)
                            .map_err(|e| format!("init: {e}"))?;
                    model.model = loaded;
                    if !self.quiet {
                        eprintln!("init: {}: {}", init.display(), report.describe());
                    }
                }
            }
        }
        model.guard = guard.clone();
        model.probe = Some(probe.clone());
        if let Some(epoch) = resume_from {
            let history = load_labels(&self.out, epoch)?;
            model.labeler.lock().map_err(|_| "label window lock poisoned")?.restore(&history);
        }

        // Each epoch starts by saving the label window the previous epoch's checkpoint needs,
        // and by reseeding the backend (dropout), so a resumed epoch draws what it drew before.
        let hook = {
            let labeler = model.labeler.clone();
            let dir = self.out.clone();
            let device = device.clone();
            let seed = config.seed;
            let probe = probe.clone();
            Arc::new(move |epoch: usize| {
                probe.arm();
                if epoch > 1 {
                    let history = labeler.lock().map(|l| l.history()).unwrap_or_default();
                    if let Err(e) = save_labels(&dir, epoch - 1, &history) {
                        eprintln!("error: {e}");
                    }
                }
                let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                B::seed(&device, crate::data::rng::hash3(seed, 0xD0_0047, epoch as u64));
            })
        };
        let train_loader = Arc::new(
            EpochLoader::<B>::new(
                data.train.clone(),
                config.batch,
                true,
                true,
                config.seed,
                config.workers,
                done_epochs + 1,
                device.clone(),
            )
            .with_epoch_hook(hook)
            .with_missing_hook(on_missing.clone())
            .shard(rank, config.nodes)
            // Burn cuts `devices` slices of equal length out of this.
            .take(config.devices.max(1) * config.images_per_replica(data.train.len())),
        );
        let valid_loader = Arc::new(
            EpochLoader::<B::InnerBackend>::new(
                data.valid.clone(),
                config.batch,
                false,
                false,
                config.seed,
                config.workers,
                done_epochs + 1,
                device.clone(),
            )
            .with_missing_hook(on_missing),
        );

        let schedule = config.schedule(data.train.len()).map_err(|e| e.to_string())?;
        let (strategy, collective_failure) = match &self.node {
            Some(launch) => {
                let mut strategy = CollectiveStrategy::<B>::new(
                    device.clone(),
                    config.nodes,
                    launch.clone(),
                    fingerprint,
                );
                let groups = config.model.groups;
                if config.labels == LabelMethod::SelfDistributed && groups > 0 {
                    // A window row holds K values, or 2K where the labels standardise.
                    let width = model.labeler.lock().map_or(groups, |l| l.row_width(groups));
                    strategy = strategy.with_labels(model.labeler.clone(), width);
                }
                let failure = strategy.failure_slot();
                (TrainingStrategy::Custom(Arc::new(strategy)), Some(failure))
            }
            None => {
                (TrainingStrategy::Default(execution_strategy::<B>(&device, config.devices)), None)
            }
        };
        let mut training = SupervisedTraining::new(&self.out, train_loader, valid_loader)
            .metrics((LossMetric::new(), AccuracyMetric::new()))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::ClassificationLoss))
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::ClassificationLoss))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupingLoss))
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupingLoss))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::LargestGroupShare))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupEntropy))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::LargestLabelShare))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::LabelEntropy))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupConfidence))
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupConfidence))
            .metric_train_numeric(LearningRateMetric::new())
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::VerificationAccuracy))
            .with_interrupter(interrupter)
            .with_file_checkpointer(AtomicRecorder::default())
            .with_training_strategy(strategy)
            .num_epochs(config.epochs)
            .summary();
        if let Some(epoch) = resume_from {
            training = training.checkpoint(epoch);
        }
        // In place of burn-train's default file logger (same files), numbering a resumed
        // run's first epoch right.
        training = training
            .with_metric_logger(ResumedMetricLogger::new(&self.out, resume_from.unwrap_or(0)));
        if self.quiet {
            training = training.renderer(QuietRenderer);
        }
        let labeler = model.labeler.clone();
        let result = training.launch(Learner::new(model, config.optimizer().init(), schedule));
        // Closes the dashboard now, so what follows prints on the restored terminal. Dropping
        // it is the way: burn-train 0.21's TUI `manual_close` waits for the user to press q
        // and then s, and a renderer dropped after it panics (its Drop unwraps the thread
        // handle `manual_close` already took).
        let trained = result.model;
        drop(result.renderer);
        let checkpoint = || match last_checkpoint(&self.out) {
            Some(epoch) => format!(
                "the checkpoint of epoch {epoch} in {} is the last good state \
                 (resume=true continues from it)",
                self.out.join("checkpoint").display()
            ),
            None => "no epoch had finished, so there is no checkpoint".to_string(),
        };
        if let Some(reason) = guard.stop_reason() {
            return Err(format!(
                "training stopped in {reason}; that batch and the ones after it were not applied \
                 and no model was written; {}. Repair or remove the file, then run the same \
                 command again{}",
                checkpoint(),
                if last_checkpoint(&self.out).is_some() { " with resume=true" } else { "" }
            ));
        }
        if let Some(reason) = collective_failure.and_then(|f| f.lock().ok().and_then(|r| r.clone()))
        {
            return Err(format!(
                "rank {rank} stopped: {reason}; no model was written; {}",
                checkpoint()
            ));
        }
        if let Some(failure) = guard.failure() {
            let checkpoint = checkpoint();
            return Err(format!(
                "training stopped at {failure}; nothing of that step was applied and no model \
                 was written; {checkpoint}. Try a lower lr (now {}), a longer warmup (now {} \
                 epochs), or clip_grad_norm=5 (now {})",
                config.lr, config.warmup, config.clip_grad_norm
            ));
        }
        // The epoch hook saves each epoch's label window when the next epoch starts; the last
        // epoch has no next, and without its window its checkpoint is not one to resume from.
        let history = labeler.lock().map(|l| l.history()).unwrap_or_default();
        save_labels(&self.out, config.epochs, &history)?;
        let model_path = self.out.join("model");
        save_atomically(&trained, &model_path)?;
        // The same weights for PyTorch (and for `init=`/`eval init=`), with insightface's keys.
        crate::interop::export_safetensors(
            &trained.model,
            &config.model,
            &self.out.join("model.safetensors"),
        )
        .map_err(|e| e.to_string())?;
        let train_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let report = evaluate_held_out(
            &trained.model,
            &data.held_out,
            config.batch,
            config.eval.mode,
            &device,
            Some(&self.out),
        )?;
        let eval_seconds = started.elapsed().as_secs_f64();
        write_metrics_csv(&self.out, config.epochs)?;
        report.write(&self.out).map_err(|e| e.to_string())?;
        Ok(TrainOutcome { dir: self.out, report, train_seconds, eval_seconds, earlier: false })
    }
}

/// Serialises seeding and weight initialisation across threads: the backend's generator is
/// global, so two runs drawing from it at once (an ablation's parallel jobs) would interleave
/// their draws and neither would be reproducible.
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The run's model with weights drawn from `config.seed` alone.
fn seeded_model<B: AutodiffBackend>(config: &TrainConfig, device: &B::Device) -> TrainModel<B> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, config.seed);
    let model = TrainModel::<B>::new(
        &config.model,
        &config.criterion,
        config.labels,
        config.label_window,
        device,
    )
    .with_label_space(config.label_space);
    // Parameters are initialised lazily, on first use; draw them all now, under the lock.
    let record = model.clone().into_record();
    model.load_record(record)
}

/// Saves a module as `<path>.mpk` whole ([`crate::util::fs::write_atomic_with`]), so a crash
/// never leaves a truncated model behind.
pub fn save_atomically<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<(), String> {
    let target = path.with_extension("mpk");
    crate::util::fs::write_atomic_with(&target, |tmp| {
        module
            .clone()
            .save_file(tmp.to_path_buf(), &RunRecorder::new())
            .map_err(|e| std::io::Error::other(format!("cannot save the model: {e}")))
    })
    .map_err(|e| format!("cannot write {e}"))
}

/// The backbone of the finished run in `dir`, fitted to `config`'s model: the convolutional
/// trunk always, the FC and its BatchNorm when the output widths agree; the rest stays as in
/// `fresh`, this run's seeded backbone.
fn load_backbone<B: Backend>(
    dir: &Path,
    config: &TrainConfig,
    mut fresh: crate::backbone::IResNet<B>,
    device: &B::Device,
) -> Result<crate::backbone::IResNet<B>, String> {
    let prior_config = read_config(&dir.join("config.json")).map_err(|e| format!("init: {e}"))?;
    let prior_backbone = prior_config.model.backbone_config();
    let ours = config.model.backbone_config();
    if prior_backbone.blocks != ours.blocks
        || prior_backbone.widths != ours.widths
        || prior_backbone.stem_width != ours.stem_width
        || prior_backbone.input_side != ours.input_side
    {
        return Err(format!(
            "init: the backbone of {} (blocks {:?}, widths {:?}, stem {}, input {}) differs from \
             this run's (blocks {:?}, widths {:?}, stem {}, input {})",
            dir.display(),
            prior_backbone.blocks,
            prior_backbone.widths,
            prior_backbone.stem_width,
            prior_backbone.input_side,
            ours.blocks,
            ours.widths,
            ours.stem_width,
            ours.input_side
        ));
    }
    let prior = TrainModel::<B>::new(
        &prior_config.model,
        &prior_config.criterion,
        prior_config.labels,
        prior_config.label_window,
        device,
    )
    .load_file(dir.join("model"), &RunRecorder::new(), device)
    .map_err(|e| format!("init: cannot load {}: {e}", dir.join("model.mpk").display()))?;
    let prior = prior.model.backbone;
    let same_head = prior_backbone.output_width == ours.output_width;
    fresh.stem = prior.stem;
    fresh.stem_bn = prior.stem_bn;
    fresh.stem_act = prior.stem_act;
    fresh.blocks = prior.blocks;
    fresh.out_bn = prior.out_bn;
    if same_head {
        fresh.fc = prior.fc;
        fresh.features = prior.features;
    }
    Ok(fresh)
}

/// Writes `metrics.csv`: one row per epoch and split with every logged metric (epoch means;
/// the held-out verification accuracy is measured once per validation epoch).
fn write_metrics_csv(dir: &Path, epochs: usize) -> Result<(), String> {
    let summary = LearnerSummary::new(dir, &CSV_METRICS)?;
    let mut csv = String::from("epoch,split");
    for name in CSV_METRICS {
        csv.push(',');
        csv.push_str(&name.to_lowercase().replace([' ', '(', ')'], "_").replace("__", "_"));
    }
    csv.push('\n');
    for (split, metrics) in [("train", &summary.metrics.train), ("valid", &summary.metrics.valid)] {
        for epoch in 1..=epochs {
            csv.push_str(&format!("{epoch},{split}"));
            for name in CSV_METRICS {
                let value = metrics
                    .iter()
                    .find(|m| m.name == name)
                    .and_then(|m| m.entries.iter().find(|e| e.step == epoch))
                    .map(|e| e.value);
                csv.push(',');
                if let Some(v) = value {
                    csv.push_str(&format!("{v}"));
                }
            }
            csv.push('\n');
        }
    }
    write_atomically(&dir.join("metrics.csv"), csv.as_bytes())
}

/// Writes `bytes` to `path` whole ([`crate::util::fs::write_atomic`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::util::fs::write_atomic(path, bytes).map_err(|e| format!("cannot write {e}"))
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
/// added field would orphan every earlier run. `config_keys_are_migrated` in `tests/math.rs`
/// fails when a field is added without an entry here.
pub const ADDED_CONFIG_FIELDS: &[(&[&str], &str)] = &[
    (&["eval", "distractors"], "200"),
    (&["clip_grad_norm"], "0.0"),
    (&["devices"], "1"),
    (&["data_path"], "null"),
    (&["nodes"], "1"),
    (&["label_space"], "\"prob\""),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::MarginSoftmaxConfig;

    fn tiny() -> TrainConfig {
        let model = GroupFaceConfig::tiny(4);
        let criterion = CriterionConfig::new(MarginSoftmaxConfig::new(8, model.output_width()));
        let data = SynthConfig { identities: 8, side: 32, ..Default::default() };
        TrainConfig::new(model, criterion, data)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("groupface-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every refusal names the directory and both ways on.
    fn refused(config: &TrainConfig, out: &Path) -> String {
        let err = prepare_run_dir(config, out, false).unwrap_err();
        assert!(err.contains(&out.display().to_string()), "{err}");
        assert!(err.contains("overwrite=true") && err.contains("another out="), "{err}");
        err
    }

    #[test]
    fn a_fresh_run_refuses_a_directory_it_would_mix_with() {
        let dir = temp_dir("fresh");
        let out = dir.join("run");
        // Nothing there (the ablation's new run directories), then this same run stopped
        // before its first checkpoint: both start.
        assert_eq!(prepare_run_dir(&tiny(), &out, false).unwrap(), None);
        assert!(out.join("config.json").is_file());
        assert_eq!(prepare_run_dir(&tiny(), &out, false).unwrap(), None);
        // The ablation resumes a run directory that has a config.json and no checkpoint.
        assert_eq!(prepare_run_dir(&tiny(), &out, true).unwrap(), None);

        let err = refused(&tiny().with_lr(0.05), &out);
        assert!(err.contains("config.json differs in lr"), "{err}");
        assert_eq!(read_config(&out.join("config.json")).unwrap().lr, tiny().lr, "left as it was");

        std::fs::create_dir_all(out.join("checkpoint")).unwrap();
        std::fs::write(out.join("checkpoint/model-1.mpk"), b"").unwrap();
        assert!(refused(&tiny(), &out).contains("resume=true continues it"));

        // A folder of something else entirely.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        assert!(refused(&tiny(), &other).contains("notes.txt, and no run to resume"));
        assert_eq!(std::fs::read_to_string(other.join("notes.txt")).unwrap(), "mine");

        // overwrite=true: the train binary moves the old directory aside, the run starts in
        // its place, and the old one is removed when the run finishes.
        let old = crate::util::fs::move_aside(&other).unwrap().unwrap();
        assert_eq!(prepare_run_dir(&tiny(), &other, false).unwrap(), None);
        assert!(other.join("config.json").is_file() && !other.join("notes.txt").exists());
        assert!(old.join("notes.txt").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
