//! A training run: configuration, data, Learner with the TUI dashboard, and the run directory.

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::transform::SelectionDataset;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::SgdConfig;
use burn::prelude::*;
use burn::record::CompactRecorder;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use std::path::{Path, PathBuf};

use crate::backend::BackendJob;
use crate::data::dataset::{FaceBatcher, FaceItem, SynthDataset};
use crate::data::synth::SynthConfig;
use crate::error::ConfigError;
use crate::labels::LabelMethod;
use crate::learner::{GroupFaceMetric, GroupFaceQuantity};
use crate::loss::CriterionConfig;
use crate::model::GroupFaceConfig;
use crate::training::TrainModel;

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
    /// Batches in the E[p] window of self-distributed labeling.
    #[config(default = 32)]
    pub label_window: usize,
    /// The synthetic faces trained on.
    pub data: SynthConfig,
    /// Images of each identity held out for validation (the rest train).
    #[config(default = 2)]
    pub valid_images_per_identity: usize,
    /// Epochs.
    #[config(default = 3)]
    pub epochs: usize,
    /// Images per batch.
    #[config(default = 64)]
    pub batch: usize,
    /// Learning rate (constant).
    #[config(default = 0.1)]
    pub lr: f64,
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
        if self.criterion.margin.classes != self.data.identities {
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
        if self.valid_images_per_identity >= self.data.images_per_identity {
            return Err(ConfigError::new(
                "valid_images_per_identity",
                format!("fewer than images_per_identity ({})", self.data.images_per_identity),
                self.valid_images_per_identity.to_string(),
            ));
        }
        for (key, value) in
            [("epochs", self.epochs), ("batch", self.batch), ("workers", self.workers)]
        {
            if value == 0 {
                return Err(ConfigError::new(key, "an integer > 0", "0"));
            }
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
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new(
                "weight_decay",
                "a value >= 0",
                self.weight_decay.to_string(),
            ));
        }
        Ok(())
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

/// A training run on one backend: the configuration and where it writes.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory (`config.json`, metrics, checkpoints, `model.mpk`).
    pub out: PathBuf,
}

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

impl BackendJob for TrainRun {
    type Output = Result<PathBuf, String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<PathBuf, String> {
        let config = self.config;
        config.validate().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.out)
            .map_err(|e| format!("cannot create run directory {}: {e}", self.out.display()))?;
        save_config(&config, &self.out)?;
        B::seed(&device, config.seed);

        let faces = SynthDataset::new(config.data.clone()).map_err(|e| e.to_string())?;
        let (train_idx, valid_idx) = split_indices(&config);
        let train = SelectionDataset::<SynthDataset, FaceItem>::from_indices_checked(
            faces.clone(),
            train_idx,
        );
        let valid =
            SelectionDataset::<SynthDataset, FaceItem>::from_indices_checked(faces, valid_idx);
        let train_loader = DataLoaderBuilder::new(FaceBatcher::new(true, config.seed))
            .batch_size(config.batch)
            .shuffle(config.seed)
            .num_workers(config.workers)
            .build(train);
        let valid_loader = DataLoaderBuilder::new(FaceBatcher::new(false, config.seed))
            .batch_size(config.batch)
            .num_workers(config.workers)
            .build(valid);

        let model = TrainModel::<B>::new(
            &config.model,
            &config.criterion,
            config.labels,
            config.label_window,
            &device,
        );
        let training = SupervisedTraining::new(&self.out, train_loader, valid_loader)
            .metrics((LossMetric::new(), AccuracyMetric::new()))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::ClassificationLoss))
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::ClassificationLoss))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupingLoss))
            .metric_valid_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupingLoss))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::LargestGroupShare))
            .metric_train_numeric(GroupFaceMetric::new(GroupFaceQuantity::GroupEntropy))
            .metric_train_numeric(LearningRateMetric::new())
            .with_file_checkpointer(CompactRecorder::new())
            .num_epochs(config.epochs)
            .summary();
        let result = training.launch(Learner::new(model, config.optimizer().init(), config.lr));
        let model_path = self.out.join("model");
        result
            .model
            .save_file(&model_path, &CompactRecorder::new())
            .map_err(|e| format!("cannot save the model to {}: {e}", model_path.display()))?;
        let mut renderer = result.renderer;
        renderer.manual_close();
        Ok(self.out)
    }
}

/// Writes `config.json` atomically (temporary file, then rename).
pub fn save_config(config: &TrainConfig, dir: &Path) -> Result<(), String> {
    let path = dir.join("config.json");
    let tmp = dir.join("config.json.tmp");
    config.save(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
