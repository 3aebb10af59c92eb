//! A run's data: the embedded synthetic faces or a folder / `.rec`, split by identity into
//! training, validation and held-out evaluation.

use burn::data::dataset::transform::SelectionDataset;
use burn::data::dataset::Dataset;
use std::sync::Arc;

use crate::data::dataset::{ErrorLog, FaceItem, SynthDataset};
use crate::data::source::{FaceSource, SourceSplit};
use crate::evaluate::held_out::HeldOut;
use crate::train::config::TrainConfig;
use crate::util::error::ConfigError;

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
