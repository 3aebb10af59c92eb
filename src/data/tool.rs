//! What the `data` binary does: write synthetic faces, pack folders, inspect any source, and
//! measure decoding speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::error::{DataError, Result};
use super::folder::{load_rgb, ImageFolder};
use super::recordio::{pack_folder, PackStats, RecordReader};
use super::synth::{SynthConfig, SynthFaces};
use super::verification_bin::VerificationSet;

/// What `data info` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    /// `folder`, `rec` or `bin`.
    pub format: &'static str,
    /// The path inspected.
    pub path: String,
    /// Identities (for a `.bin`: pairs).
    pub identities: usize,
    /// Images, every one decoded.
    pub images: usize,
    /// Histogram of image sizes: (width, height, count).
    pub sizes: Vec<(u32, u32, usize)>,
    /// Positive pairs, for a `.bin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_pairs: Option<usize>,
}

fn count_size(sizes: &mut Vec<(u32, u32, usize)>, w: u32, h: u32) {
    match sizes.iter_mut().find(|(sw, sh, _)| *sw == w && *sh == h) {
        Some(entry) => entry.2 += 1,
        None => sizes.push((w, h, 1)),
    }
}

/// Decodes every image of a folder, a `.rec` (with its `.idx`) or a `.bin` and counts them.
pub fn info(path: &Path) -> Result<SourceInfo> {
    std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let name = path.display().to_string();
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let mut sizes = Vec::new();
    match extension.as_deref() {
        _ if path.is_dir() => {
            let folder = ImageFolder::open(path)?;
            for (file, _) in folder.items() {
                let bytes = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
                let image = image::load_from_memory(&bytes).map_err(|e| DataError::Image {
                    path: file.clone(),
                    record: None,
                    source: e,
                })?;
                count_size(&mut sizes, image.width(), image.height());
            }
            Ok(SourceInfo {
                format: "folder",
                path: name,
                identities: folder.num_classes(),
                images: folder.len(),
                sizes,
                same_pairs: None,
            })
        }
        Some("rec") => {
            let reader = RecordReader::open(path)?;
            let mut labels = std::collections::BTreeSet::new();
            for i in 0..reader.len() {
                let (image, label) = reader.get_image(i, None)?;
                count_size(&mut sizes, image.width(), image.height());
                labels.insert(label);
            }
            Ok(SourceInfo {
                format: "rec",
                path: name,
                identities: reader.num_classes().unwrap_or(labels.len()),
                images: reader.len(),
                sizes,
                same_pairs: None,
            })
        }
        Some("bin") => {
            let set = VerificationSet::read(path)?;
            for i in 0..set.images.len() {
                let image = set.decode(i, None)?;
                count_size(&mut sizes, image.width(), image.height());
            }
            Ok(SourceInfo {
                format: "bin",
                path: name,
                identities: set.len(),
                images: set.images.len(),
                sizes,
                same_pairs: Some(set.issame.iter().filter(|s| **s).count()),
            })
        }
        _ => Err(DataError::Corrupt {
            path: path.to_path_buf(),
            record: None,
            what: "expected an image folder, a .rec file (with its .idx) or a .bin file".into(),
        }),
    }
}

/// Writes synthetic faces to `out` (one folder per identity plus `attributes.csv`).
pub fn synth(config: SynthConfig, out: &Path) -> Result<usize> {
    let faces = SynthFaces::new(config)?;
    faces.write_folder(out)?;
    Ok(faces.len())
}

/// Packs an image folder into `out` (`.rec`) and its `.idx`.
pub fn pack(src: &Path, out: &Path) -> Result<PackStats> {
    pack_folder(src, out)
}

/// One figure of the decoding benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// What was measured.
    pub source: &'static str,
    /// Image side.
    pub side: u32,
    /// Images processed.
    pub images: usize,
    /// Images per second, one thread.
    pub images_per_second: f64,
}

fn timed(
    source: &'static str,
    side: u32,
    images: usize,
    f: impl FnOnce() -> Result<()>,
) -> Result<Throughput> {
    let start = Instant::now();
    f()?;
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Throughput { source, side, images, images_per_second: images as f64 / seconds })
}

/// Measures synthetic generation, folder decoding and `.rec` decoding on one thread, using a
/// scratch directory `work` that it fills with `identities x per_identity` images.
pub fn bench(
    side: u32,
    identities: usize,
    per_identity: usize,
    work: &Path,
) -> Result<Vec<Throughput>> {
    let config =
        SynthConfig { identities, images_per_identity: per_identity, side, ..Default::default() };
    let faces = SynthFaces::new(config)?;
    let n = faces.len();
    let mut results = vec![timed("synthetic generation", side, n, || {
        for i in 0..n {
            std::hint::black_box(faces.get(i));
        }
        Ok(())
    })?];
    let folder_dir: PathBuf = work.join("folder");
    faces.write_folder(&folder_dir)?;
    let folder = ImageFolder::open(&folder_dir)?;
    results.push(timed("folder decoding (png)", side, folder.len(), || {
        for (path, _) in folder.items() {
            std::hint::black_box(load_rgb(path, side)?);
        }
        Ok(())
    })?);
    let rec = work.join("faces.rec");
    pack_folder(&folder_dir, &rec)?;
    let reader = RecordReader::open(&rec)?;
    results.push(timed("rec decoding (png payloads)", side, reader.len(), || {
        for i in 0..reader.len() {
            std::hint::black_box(reader.get_image(i, Some(side))?);
        }
        Ok(())
    })?);
    Ok(results)
}
