//! Burn datasets over every source, identity-disjoint splits, and the batcher.
//!
//! Each source implements burn-dataset's `Dataset`, returning decoded [`FaceItem`]s, so that
//! Burn's data loader decodes on its worker threads. A decode failure inside `get` cannot be
//! returned through the `Dataset` trait; it is recorded in the dataset's [`ErrorLog`] (and the
//! item is replaced by nothing), and the trainer checks the log after every epoch and stops
//! with the error naming the file and record. Nothing is skipped silently.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use image::RgbImage;

use super::error::{DataError, Result};
use super::folder::ImageFolder;
use super::recordio::RecordReader;
use super::rng::{hash3, SplitMix64};
use super::synth::{SynthConfig, SynthFaces};

/// One decoded face: `side x side` RGB pixels and the identity label.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceItem {
    /// Row-major RGB bytes, `side * side * 3`.
    pub pixels: Vec<u8>,
    /// Image side in pixels.
    pub side: usize,
    /// Identity label, `0..identities`.
    pub label: usize,
    /// Position of the item in its dataset (drives the deterministic flip).
    pub index: usize,
}

impl FaceItem {
    /// The item of a decoded image, its side taken from the image.
    pub(crate) fn from_image(image: RgbImage, label: usize, index: usize) -> Self {
        let side = image.width() as usize;
        Self { pixels: image.into_raw(), side, label, index }
    }
}

/// Decode errors met inside `Dataset::get`, shared between the loader's worker threads.
#[derive(Debug, Clone, Default)]
pub struct ErrorLog(Arc<Mutex<Vec<String>>>);

impl ErrorLog {
    /// Records an error.
    pub fn push(&self, error: &DataError) {
        if let Ok(mut log) = self.0.lock() {
            log.push(error.to_string());
        }
    }

    /// The first recorded error, if any, as an `Err` to propagate.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self.0.lock() {
            Ok(log) => match log.first() {
                Some(first) => Err(format!("{first} ({} decode error(s) in all)", log.len())),
                None => Ok(()),
            },
            Err(_) => Err("a data loader thread panicked".into()),
        }
    }
}

/// Synthetic faces as a Burn dataset (identity-major order).
#[derive(Debug, Clone)]
pub struct SynthDataset {
    faces: Arc<SynthFaces>,
    identities: Range<usize>,
}

impl SynthDataset {
    /// All identities of `config`.
    pub fn new(config: SynthConfig) -> Result<Self> {
        let faces = SynthFaces::new(config)?;
        let n = faces.num_identities();
        Ok(Self { faces: Arc::new(faces), identities: 0..n })
    }

    /// A contiguous range of identities, relabelled from 0 (for identity-disjoint splits).
    pub fn identities(&self, range: Range<usize>) -> Self {
        let start = self.identities.start + range.start;
        let end = (self.identities.start + range.end).min(self.identities.end);
        Self { faces: self.faces.clone(), identities: start..end.max(start) }
    }

    /// Number of identities in this view.
    pub fn num_identities(&self) -> usize {
        self.identities.len()
    }

    /// The generator behind this view.
    pub fn faces(&self) -> &SynthFaces {
        &self.faces
    }

    /// Global identity of a label of this view.
    pub fn identity_of(&self, label: usize) -> usize {
        self.identities.start + label
    }
}

impl Dataset<FaceItem> for SynthDataset {
    fn get(&self, index: usize) -> Option<FaceItem> {
        let per = self.faces.images_per_identity();
        let label = index / per;
        if label >= self.identities.len() {
            return None;
        }
        let image = self.faces.image(self.identities.start + label, index % per);
        Some(FaceItem::from_image(image, label, index))
    }

    fn len(&self) -> usize {
        self.identities.len() * self.faces.images_per_identity()
    }
}

/// An image folder (one subfolder per identity) as a Burn dataset.
#[derive(Debug, Clone)]
pub struct FolderDataset {
    folder: Arc<ImageFolder>,
    side: u32,
    errors: ErrorLog,
}

impl FolderDataset {
    /// Scans `root`; images are resized to `side` when needed.
    pub fn open(root: impl AsRef<Path>, side: u32) -> Result<Self> {
        Ok(Self { folder: Arc::new(ImageFolder::open(root)?), side, errors: ErrorLog::default() })
    }

    /// The scanned folder.
    pub fn folder(&self) -> &ImageFolder {
        &self.folder
    }

    /// Decode errors met so far.
    pub fn errors(&self) -> &ErrorLog {
        &self.errors
    }
}

impl Dataset<FaceItem> for FolderDataset {
    fn get(&self, index: usize) -> Option<FaceItem> {
        match self.folder.load(index, self.side) {
            Ok((image, label)) => Some(FaceItem::from_image(image, label, index)),
            Err(error) => {
                self.errors.push(&error);
                None
            }
        }
    }

    fn len(&self) -> usize {
        self.folder.len()
    }
}

/// An insightface `.rec`/`.idx` pair as a Burn dataset.
#[derive(Debug, Clone)]
pub struct RecordDataset {
    reader: Arc<RecordReader>,
    side: u32,
    errors: ErrorLog,
}

impl RecordDataset {
    /// Opens `FILE.rec` and its `FILE.idx`; images are resized to `side` when needed.
    pub fn open(rec: impl AsRef<Path>, side: u32) -> Result<Self> {
        Ok(Self { reader: Arc::new(RecordReader::open(rec)?), side, errors: ErrorLog::default() })
    }

    /// The reader.
    pub fn reader(&self) -> &RecordReader {
        &self.reader
    }

    /// Decode errors met so far.
    pub fn errors(&self) -> &ErrorLog {
        &self.errors
    }
}

impl Dataset<FaceItem> for RecordDataset {
    fn get(&self, index: usize) -> Option<FaceItem> {
        match self.reader.get_image(index, Some(self.side)) {
            Ok((image, label)) => Some(FaceItem::from_image(image, label, index)),
            Err(error) => {
                self.errors.push(&error);
                None
            }
        }
    }

    fn len(&self) -> usize {
        self.reader.len()
    }
}

/// Splits identities `0..identities` into (train, evaluation) sets, disjoint, deterministic
/// from `seed`: a seeded shuffle, then the first `round(identities · eval_fraction)` (at least
/// one when the fraction is positive) go to evaluation. Both lists are sorted.
pub fn split_identities(
    identities: usize,
    eval_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&eval_fraction) {
        return Err(DataError::InvalidConfig {
            field: "eval_fraction",
            what: format!("expected a fraction in [0, 1), found {eval_fraction}"),
        });
    }
    let mut order: Vec<usize> = (0..identities).collect();
    let mut rng = SplitMix64::new(hash3(seed, 0x5EED_5917, identities as u64));
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut n_eval = (identities as f64 * eval_fraction).round() as usize;
    if eval_fraction > 0.0 && identities > 1 {
        n_eval = n_eval.clamp(1, identities - 1);
    }
    let mut eval = order[..n_eval].to_vec();
    let mut train = order[n_eval..].to_vec();
    eval.sort_unstable();
    train.sort_unstable();
    Ok((train, eval))
}

/// A batch for the model.
#[derive(Debug, Clone)]
pub struct FaceBatch<B: Backend> {
    /// `[batch, 3, side, side]`, pixels `(x/255 − 0.5)/0.5`.
    pub images: Tensor<B, 4>,
    /// `[batch]` identity labels.
    pub labels: Tensor<B, 1, Int>,
    /// The optimiser step a training batch belongs to, `(epoch, batch position)`: the
    /// replicas' batches of one step share it, which keeps the shared group-label window
    /// independent of their order (the group labeler's `labels_for_step`).
    /// `None` outside the training loader.
    pub step: Option<StepKey>,
}

/// Which optimiser step a training batch belongs to: `(epoch, batch position in the epoch)`.
/// The batches of one step on several replicas share it.
pub type StepKey = (usize, usize);

/// Turns [`FaceItem`]s into a [`FaceBatch`]: normalisation to [-1, 1] and, for training, a
/// random horizontal flip.
///
/// The flip of an item is drawn from `(seed, item.index, draw)` where `draw` counts the
/// batches this batcher has made, so runs with one loader worker are reproducible.
#[derive(Debug, Clone)]
pub struct FaceBatcher {
    flip: bool,
    seed: u64,
    draws: Arc<AtomicU64>,
}

impl FaceBatcher {
    /// A batcher for training (random flips) or evaluation (none).
    pub fn new(flip: bool, seed: u64) -> Self {
        Self { flip, seed, draws: Arc::new(AtomicU64::new(0)) }
    }
}

/// Normalises RGB bytes into a CHW float vector: `(x/255 − 0.5)/0.5`, optionally mirrored.
pub fn to_chw(pixels: &[u8], side: usize, mirror: bool, out: &mut Vec<f32>) {
    let plane = side * side;
    let base = out.len();
    out.resize(base + 3 * plane, 0.0);
    for y in 0..side {
        for x in 0..side {
            let src_x = if mirror { side - 1 - x } else { x };
            let src = (y * side + src_x) * 3;
            for c in 0..3 {
                let value = pixels.get(src + c).copied().unwrap_or(0) as f32;
                out[base + c * plane + y * side + x] = (value / 255.0 - 0.5) / 0.5;
            }
        }
    }
}

impl<B: Backend> Batcher<B, FaceItem, FaceBatch<B>> for FaceBatcher {
    fn batch(&self, items: Vec<FaceItem>, device: &B::Device) -> FaceBatch<B> {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        let batch = items.len();
        let side = items.first().map_or(0, |item| item.side);
        let mut pixels = Vec::with_capacity(batch * 3 * side * side);
        let mut labels = Vec::with_capacity(batch);
        for item in &items {
            let mirror = self.flip && hash3(self.seed, item.index as u64, draw) & 1 == 1;
            to_chw(&item.pixels, side, mirror, &mut pixels);
            labels.push(item.label as i64);
        }
        FaceBatch {
            images: Tensor::from_data(TensorData::new(pixels, [batch, 3, side, side]), device),
            labels: Tensor::from_data(TensorData::new(labels, [batch]), device),
            step: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_mirror() {
        // 2x2 image, pixel values 0, 255, 51, 204 in the red channel:
        // (0/255 − 0.5)/0.5 = −1, (255/255 − 0.5)/0.5 = 1, 51 -> −0.6, 204 -> 0.6.
        let mut pixels = vec![0u8; 12];
        for (i, v) in [0u8, 255, 51, 204].iter().enumerate() {
            pixels[i * 3] = *v;
        }
        let mut out = Vec::new();
        to_chw(&pixels, 2, false, &mut out);
        let red: Vec<f32> = out[..4].to_vec();
        for (a, e) in red.iter().zip([-1.0, 1.0, -0.6, 0.6]) {
            assert!((a - e).abs() < 1e-6, "{red:?}");
        }
        let mut out = Vec::new();
        to_chw(&pixels, 2, true, &mut out);
        for (a, e) in out[..4].iter().zip([1.0, -1.0, 0.6, -0.6]) {
            assert!((a - e).abs() < 1e-6, "mirrored {out:?}");
        }
    }

    #[test]
    fn identity_split_is_disjoint_and_deterministic() {
        let (train, eval) = split_identities(100, 0.2, 7).unwrap();
        assert_eq!((train.len(), eval.len()), (80, 20));
        assert!(train.iter().all(|t| !eval.contains(t)));
        assert_eq!(split_identities(100, 0.2, 7).unwrap(), (train.clone(), eval.clone()));
        assert_ne!(split_identities(100, 0.2, 8).unwrap().1, eval);
        assert!(matches!(
            split_identities(10, 1.5, 0),
            Err(DataError::InvalidConfig { field: "eval_fraction", .. })
        ));
    }

    #[test]
    fn synth_dataset_views_relabel_from_zero() {
        let config =
            SynthConfig { identities: 6, images_per_identity: 2, side: 32, ..Default::default() };
        let all = SynthDataset::new(config).unwrap();
        assert_eq!(all.len(), 12);
        let tail = all.identities(4..6);
        assert_eq!(tail.len(), 4);
        let item = tail.get(3).unwrap();
        assert_eq!((item.label, item.side, item.pixels.len()), (1, 32, 32 * 32 * 3));
        // Item 3 of the view is identity 5, image 1 of the generator.
        assert_eq!(item.pixels, all.faces().image(5, 1).into_raw());
        assert!(tail.get(4).is_none());
    }
}
