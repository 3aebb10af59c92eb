//! Training faces from disk: an image folder or an insightface `.rec`, split by identity into
//! the classes trained on, validation images of those classes, and held-out identities that
//! are never trained on (for verification).
//!
//! Every image's identity is known when the source is opened (a folder's subfolders, a
//! `.rec`'s identity records), so the split needs no decoding.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;

use super::dataset::{ErrorLog, FaceItem, FolderDataset, RecordDataset};
use super::error::{DataError, Result};
use super::rng::{hash3, SplitMix64};

#[derive(Debug, Clone)]
enum Inner {
    Folder(FolderDataset),
    Record(RecordDataset),
}

/// An image folder (one subfolder per identity) or a `.rec`/`.idx` pair opened for training.
#[derive(Debug, Clone)]
pub struct FaceSource {
    inner: Inner,
    path: PathBuf,
    side: u32,
    /// Identity of every image, in dataset order.
    labels: Vec<usize>,
    identities: usize,
}

/// How a source's identities and images are used by a training run. Indices are the source's.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSplit {
    /// `(image, class)` of every training image.
    pub train: Vec<(usize, usize)>,
    /// `(image, class)` of the validation images: the last images of each class that has more.
    pub valid: Vec<(usize, usize)>,
    /// Number of classes: the identities not held out.
    pub classes: usize,
    /// Held-out identities (source labels, ascending) with the images used of each.
    pub held_out: Vec<(usize, Vec<usize>)>,
}

impl FaceSource {
    /// Opens `path`: a file ending in `.rec` (with its `.idx` beside it) or a folder with one
    /// subfolder of images per identity. Images are resized to `side` when they differ.
    ///
    /// A `.rec` without identity records (insightface's record 0 header) has its labels read
    /// from every record, which reads the whole file once; they must be dense (`0..C-1`, so
    /// below the number of records), as the identity count is the largest label + 1.
    pub fn open(path: impl AsRef<Path>, side: u32) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let is_rec = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("rec"));
        let (inner, labels) = if is_rec {
            let data = RecordDataset::open(&path, side)?;
            let labels = record_labels(&data)?;
            (Inner::Record(data), labels)
        } else {
            if !path.is_dir() {
                let found = if path.exists() { "a file that is neither" } else { "nothing" };
                return Err(DataError::InvalidConfig {
                    field: "data",
                    what: format!(
                        "expected a folder with one subfolder per identity or a .rec file, \
                         found {found} at {}",
                        path.display()
                    ),
                });
            }
            let data = FolderDataset::open(&path, side)?;
            let labels = data.folder().items().iter().map(|(_, label)| *label).collect();
            (Inner::Folder(data), labels)
        };
        let identities = labels.iter().max().map_or(0, |m| m + 1);
        if labels.is_empty() {
            return Err(DataError::Empty { path, what: "no image to train on".into() });
        }
        Ok(Self { inner, path, side, labels, identities })
    }

    /// Where the source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image (never true after [`FaceSource::open`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of identities (largest label + 1).
    pub fn identities(&self) -> usize {
        self.identities
    }

    /// Identity of every image, in dataset order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Decode errors met by [`FaceSource::dataset`] and its views so far.
    pub fn errors(&self) -> &ErrorLog {
        match &self.inner {
            Inner::Folder(d) => d.errors(),
            Inner::Record(d) => d.errors(),
        }
    }

    /// The whole source as a Burn dataset (a failed decode goes to [`FaceSource::errors`]).
    pub fn dataset(&self) -> Arc<dyn Dataset<FaceItem>> {
        match &self.inner {
            Inner::Folder(d) => Arc::new(d.clone()),
            Inner::Record(d) => Arc::new(d.clone()),
        }
    }

    /// Decodes image `index`, with an error naming the file or record when it cannot.
    pub fn load(&self, index: usize) -> Result<FaceItem> {
        let (image, label) = match &self.inner {
            Inner::Folder(d) => d.folder().load(index, self.side)?,
            Inner::Record(d) => d.reader().get_image(index, Some(self.side))?,
        };
        Ok(FaceItem::from_image(image, label, index))
    }

    /// Images `items[i].0` with labels `items[i].1`, as a dataset.
    pub fn selection(&self, items: Vec<(usize, usize)>) -> Arc<dyn Dataset<FaceItem>> {
        Arc::new(Selection { source: self.dataset(), items: Arc::new(items) })
    }

    /// Splits the identities: `held_out` of those with at least `held_out_images` images are
    /// drawn with `seed` and never trained on (their first `held_out_images` images are used);
    /// the others, in label order, become classes `0..classes`. Each class keeps its last
    /// `valid_per_identity` images for validation when it has more than that; the rest train.
    ///
    /// Errors name the key to change: too few identities with enough images to hold out, or
    /// no validation image at all.
    pub fn split(
        &self,
        held_out: usize,
        held_out_images: usize,
        valid_per_identity: usize,
        seed: u64,
    ) -> Result<SourceSplit> {
        let mut images: Vec<Vec<usize>> = vec![Vec::new(); self.identities];
        for (index, &label) in self.labels.iter().enumerate() {
            images[label].push(index);
        }
        let mut eligible: Vec<usize> =
            (0..self.identities).filter(|&id| images[id].len() >= held_out_images).collect();
        if eligible.len() < held_out || self.identities - held_out < 2 {
            return Err(DataError::InvalidConfig {
                field: "eval.identities",
                what: format!(
                    "expected at most {} held-out identities: {} has {} identities, {} of them \
                     with at least eval.images_per_identity = {held_out_images} images, and \
                     at least 2 must remain to train on; found {held_out}",
                    eligible.len().min(self.identities.saturating_sub(2)),
                    self.path.display(),
                    self.identities,
                    eligible.len(),
                ),
            });
        }
        let mut rng = SplitMix64::new(hash3(seed, 0x4E1D0, self.identities as u64));
        for i in (1..eligible.len()).rev() {
            let j = rng.below(i + 1);
            eligible.swap(i, j);
        }
        let mut held: Vec<usize> = eligible[..held_out].to_vec();
        held.sort_unstable();
        let mut is_held = vec![false; self.identities];
        for &id in &held {
            is_held[id] = true;
        }
        let (mut train, mut valid) = (Vec::new(), Vec::new());
        let mut classes = 0;
        for (id, list) in images.iter().enumerate() {
            if is_held[id] || list.is_empty() {
                continue;
            }
            let keep = if list.len() > valid_per_identity { valid_per_identity } else { 0 };
            let (head, tail) = list.split_at(list.len() - keep);
            train.extend(head.iter().map(|&i| (i, classes)));
            valid.extend(tail.iter().map(|&i| (i, classes)));
            classes += 1;
        }
        if valid.is_empty() {
            return Err(DataError::InvalidConfig {
                field: "valid_images_per_identity",
                what: format!(
                    "no identity of {} has more than {valid_per_identity} images, so none is \
                     left for validation; lower valid_images_per_identity",
                    self.path.display()
                ),
            });
        }
        let held_out =
            held.into_iter().map(|id| (id, images[id][..held_out_images].to_vec())).collect();
        Ok(SourceSplit { train, valid, classes, held_out })
    }
}

/// The label of every image record of a `.rec`: from the identity records when the file has
/// them, else read from each record.
fn record_labels(data: &RecordDataset) -> Result<Vec<usize>> {
    let reader = data.reader();
    let ranges = reader.identities();
    if !ranges.is_empty() {
        // Ranges sorted by their start, so each image's identity is a binary search: MS1MV2
        // has 5.8 million images in 85,742 identities.
        let mut sorted: Vec<(usize, usize, usize)> =
            ranges.iter().enumerate().map(|(label, r)| (r.start, r.end, label)).collect();
        sorted.sort_unstable();
        let mut labels = Vec::with_capacity(reader.len());
        for (index, &key) in reader.image_keys().iter().enumerate() {
            let at = sorted.partition_point(|&(start, _, _)| start <= key);
            let found = at.checked_sub(1).map(|i| sorted[i]).filter(|&(_, end, _)| key < end);
            let Some((_, _, label)) = found else {
                return Err(DataError::corrupt(
                    reader.rec_path(),
                    Some(key),
                    format!("image {index} (record {key}) is in no identity's record range"),
                ));
            };
            labels.push(label);
        }
        return Ok(labels);
    }
    (0..reader.len()).map(|index| reader.get(index).map(|(label, _)| label)).collect()
}

/// Some images of a source under new labels.
struct Selection {
    source: Arc<dyn Dataset<FaceItem>>,
    items: Arc<Vec<(usize, usize)>>,
}

impl Dataset<FaceItem> for Selection {
    fn get(&self, index: usize) -> Option<FaceItem> {
        let &(image, label) = self.items.get(index)?;
        self.source.get(image).map(|item| FaceItem { label, ..item })
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::SynthConfig;

    fn folder(identities: usize, per: usize) -> (PathBuf, FaceSource) {
        let dir = std::env::temp_dir()
            .join(format!("gf-source-{}-{identities}-{per}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config =
            SynthConfig { identities, images_per_identity: per, side: 16, ..Default::default() };
        crate::data::synth::SynthFaces::new(config).unwrap().write_folder(&dir, true).unwrap();
        let source = FaceSource::open(&dir, 16).unwrap();
        (dir, source)
    }

    #[test]
    fn split_holds_out_whole_identities_and_keeps_the_last_images_for_validation() {
        let (dir, source) = folder(6, 4);
        assert_eq!((source.len(), source.identities()), (24, 6));
        let split = source.split(2, 3, 1, 7).unwrap();
        assert_eq!(split.classes, 4);
        assert_eq!(split.train.len(), 4 * 3);
        assert_eq!(split.valid.len(), 4);
        let held: Vec<usize> = split.held_out.iter().map(|(id, _)| *id).collect();
        for (id, images) in &split.held_out {
            assert_eq!(images.len(), 3);
            assert!(images.iter().all(|&i| source.labels()[i] == *id));
        }
        // No image of a held-out identity trains or validates; classes are dense.
        for &(image, class) in split.train.iter().chain(&split.valid) {
            assert!(!held.contains(&source.labels()[image]));
            assert!(class < 4);
        }
        // Validation takes each class's last image (identity-major source order).
        assert!(split.valid.iter().all(|&(image, _)| image % 4 == 3));
        // The same seed draws the same identities; the selection relabels.
        assert_eq!(split, source.split(2, 3, 1, 7).unwrap());
        let train = source.selection(split.train.clone());
        let item = train.get(0).unwrap();
        assert_eq!(item.label, split.train[0].1);
        assert_eq!(item.index, split.train[0].0);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Writes `dir/plain.rec` and its `.idx`: one 44-byte record (8 + 24 + 11 bytes, padded)
    /// per label, without identity records (record 0 has flag 0).
    fn write_plain_rec(dir: &Path, labels: &[f32]) -> PathBuf {
        use crate::data::recordio::{encode_record, pack_payload, RecordHeader};
        let (mut rec, mut idx) = (Vec::new(), String::new());
        for (key, &label) in labels.iter().enumerate() {
            idx.push_str(&format!("{key}\t{}\n", rec.len()));
            let h = RecordHeader { flag: 0, label, id: key as u64, id2: 0 };
            rec.extend(encode_record(&pack_payload(&h, &[], b"image bytes")).unwrap().0);
        }
        std::fs::write(dir.join("plain.rec"), rec).unwrap();
        std::fs::write(dir.join("plain.idx"), idx).unwrap();
        dir.join("plain.rec")
    }

    #[test]
    fn plain_rec_labels_must_be_dense() {
        let dir = std::env::temp_dir().join(format!("gf-source-plain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let source = FaceSource::open(write_plain_rec(&dir, &[0.0, 1.0, 1.0]), 16).unwrap();
        assert_eq!((source.labels(), source.identities()), (&[0, 1, 1][..], 2));
        // one label of 1e9 would size the class table to a billion identities
        match FaceSource::open(write_plain_rec(&dir, &[0.0, 1.0, 1.0e9]), 16) {
            Err(DataError::LabelOutOfRange { record: Some(2), what, path }) => {
                assert_eq!(path, dir.join("plain.rec"));
                let expected = "label 1000000000 of the record at byte offset 88";
                assert!(what.contains(expected) && what.contains("below the 3 records"), "{what}");
            }
            other => panic!("expected LabelOutOfRange for record 2, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn split_errors_name_the_key() {
        let (dir, source) = folder(4, 2);
        let err = source.split(3, 2, 1, 0).unwrap_err().to_string();
        assert!(err.contains("eval.identities"), "{err}");
        let err = source.split(1, 5, 1, 0).unwrap_err().to_string();
        assert!(err.contains("eval.identities") && err.contains("0 of them"), "{err}");
        let err = source.split(1, 2, 2, 0).unwrap_err().to_string();
        assert!(err.contains("valid_images_per_identity"), "{err}");
        let err = FaceSource::open(dir.join("missing"), 16).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
