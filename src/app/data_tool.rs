//! What the `data` binary does: write synthetic faces, pack folders, inspect any source, and
//! measure decoding speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::app::progress::Bar;
use crate::data::error::{DataError, Result};
use crate::data::folder::{load_rgb, ImageFolder};
use crate::data::recordio::{pack_folder_with, pack_folder_with_progress, PackStats, RecordReader};
use crate::data::synth::{SynthConfig, SynthFaces};
use crate::data::verification_bin::VerificationSet;
use crate::util::progress::Progress;

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

/// Decodes every image of a folder, a `.rec` (with its `.idx`) or a `.bin` and counts them,
/// with a bar on stderr.
pub fn info(path: &Path) -> Result<SourceInfo> {
    let bar = Bar::stderr();
    let info = inspect(path, &bar);
    bar.finish();
    info
}

/// [`info`], each image decoded advancing `progress`.
fn inspect(path: &Path, progress: &dyn Progress) -> Result<SourceInfo> {
    std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let name = path.display().to_string();
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let mut sizes = Vec::new();
    match extension.as_deref() {
        _ if path.is_dir() => {
            let folder = ImageFolder::open(path)?;
            progress.start("decoding images", folder.len() as u64);
            for (file, _) in folder.items() {
                let bytes = std::fs::read(file).map_err(|e| DataError::io(file, e))?;
                let image = image::load_from_memory(&bytes).map_err(|e| DataError::Image {
                    path: file.clone(),
                    record: None,
                    source: e,
                })?;
                count_size(&mut sizes, image.width(), image.height());
                progress.advance(1);
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
            progress.start("decoding images", reader.len() as u64);
            for i in 0..reader.len() {
                let (image, label) = reader.get_image(i, None)?;
                count_size(&mut sizes, image.width(), image.height());
                labels.insert(label);
                progress.advance(1);
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
            progress.start("decoding images", set.images.len() as u64);
            for i in 0..set.images.len() {
                let image = set.decode(i, None)?;
                count_size(&mut sizes, image.width(), image.height());
                progress.advance(1);
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

/// Writes synthetic faces to `out` (one folder per identity plus `attributes.csv`), replacing
/// whatever it held once the new folder is complete.
pub fn synth(config: SynthConfig, out: &Path) -> Result<usize> {
    synth_with(config, out, true)
}

/// [`synth`] as `data synth` runs it: an `out` that holds anything is refused, naming it,
/// unless `overwrite` ([`SynthFaces::write_folder`]). A bar on stderr counts the images.
pub fn synth_with(config: SynthConfig, out: &Path, overwrite: bool) -> Result<usize> {
    let faces = SynthFaces::new(config)?;
    let bar = Bar::stderr();
    let written = faces.write_folder_with_progress(out, overwrite, &bar);
    bar.finish();
    written?;
    Ok(faces.len())
}

/// Packs an image folder into `out` (`.rec`) and its `.idx`, replacing earlier ones once both
/// are complete.
pub fn pack(src: &Path, out: &Path) -> Result<PackStats> {
    pack_with(src, out, true)
}

/// [`pack`] as `data pack` runs it: an existing `.rec` or `.idx` is refused, naming it, unless
/// `overwrite` ([`pack_folder_with`]). A bar on stderr counts the images.
pub fn pack_with(src: &Path, out: &Path, overwrite: bool) -> Result<PackStats> {
    let bar = Bar::stderr();
    let stats = pack_folder_with_progress(src, out, overwrite, &bar);
    bar.finish();
    stats
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
    // A scratch folder: what an earlier bench left there is replaced.
    let folder_dir: PathBuf = work.join("folder");
    faces.write_folder(&folder_dir, true)?;
    let folder = ImageFolder::open(&folder_dir)?;
    results.push(timed("folder decoding (png)", side, folder.len(), || {
        for (path, _) in folder.items() {
            std::hint::black_box(load_rgb(path, side)?);
        }
        Ok(())
    })?);
    let rec = work.join("faces.rec");
    pack_folder_with(&folder_dir, &rec, true)?;
    let reader = RecordReader::open(&rec)?;
    results.push(timed("rec decoding (png payloads)", side, reader.len(), || {
        for i in 0..reader.len() {
            std::hint::black_box(reader.get_image(i, Some(side))?);
        }
        Ok(())
    })?);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::temp_dir;

    fn faces(identities: usize) -> SynthConfig {
        SynthConfig { identities, images_per_identity: 2, side: 16, ..Default::default() }
    }

    #[test]
    fn synth_refuses_a_used_folder_unless_asked_to_overwrite() {
        let dir = temp_dir("synth");
        let out = dir.join("faces");
        assert_eq!(synth_with(faces(3), &out, false).unwrap(), 6);
        let err = synth_with(faces(2), &out, false).unwrap_err().to_string();
        assert!(err.contains(&out.display().to_string()), "{err}");
        assert!(err.contains("overwrite=true"), "{err}");
        assert_eq!(ImageFolder::open(&out).unwrap().num_classes(), 3, "left as it was");
        assert_eq!(synth_with(faces(2), &out, true).unwrap(), 4);
        // 2 identities x 2 images, none of the earlier third identity.
        let folder = ImageFolder::open(&out).unwrap();
        assert_eq!((folder.num_classes(), folder.len()), (2, 4));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `data synth`, `pack` and `info` count every image of their loops.
    #[test]
    fn synth_pack_and_info_report_each_image() {
        use crate::util::progress::Recorded;
        let dir = temp_dir("data-progress");
        let out = dir.join("faces");
        let sink = Recorded::default();
        SynthFaces::new(faces(3)).unwrap().write_folder_with_progress(&out, false, &sink).unwrap();
        assert_eq!(sink.stages(), [("writing synthetic faces".to_string(), 6, 6)]);
        let sink = Recorded::default();
        let rec = dir.join("faces.rec");
        let stats = pack_folder_with_progress(&out, &rec, false, &sink).unwrap();
        assert_eq!(stats.images, 6);
        assert_eq!(sink.stages(), [("packing images".to_string(), 6, 6)]);
        for path in [&out, &rec] {
            let sink = Recorded::default();
            let info = inspect(path, &sink).unwrap();
            assert_eq!((info.images, info.identities), (6, 3));
            assert_eq!(sink.stages(), [("decoding images".to_string(), 6, 6)]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pack_refuses_an_existing_rec_unless_asked_to_overwrite() {
        // Before, a second pack truncated the `.rec` in place and wrote over it.
        let dir = temp_dir("pack");
        let (three, two) = (dir.join("three"), dir.join("two"));
        synth_with(faces(3), &three, false).unwrap();
        synth_with(faces(2), &two, false).unwrap();
        let rec = dir.join("faces.rec");
        assert_eq!(pack_with(&three, &rec, false).unwrap().images, 6);
        let before = std::fs::read(&rec).unwrap();
        let err = pack_with(&two, &rec, false).unwrap_err().to_string();
        assert!(err.contains(&rec.display().to_string()), "{err}");
        assert!(err.contains("overwrite=true"), "{err}");
        assert_eq!(std::fs::read(&rec).unwrap(), before, "left as it was");
        // An `.idx` alone, left by another tool, is not written over either.
        let lone = dir.join("lone.rec");
        std::fs::write(lone.with_extension("idx"), "0\t0\n").unwrap();
        let err = pack_with(&two, &lone, false).unwrap_err().to_string();
        assert!(err.contains("lone.idx"), "{err}");

        let stats = pack_with(&two, &rec, true).unwrap();
        assert_eq!((stats.images, stats.identities), (4, 2));
        let reader = RecordReader::open(&rec).unwrap();
        assert_eq!((reader.len(), reader.num_classes()), (4, Some(2)));
        assert_eq!(stats.bytes, std::fs::metadata(&rec).unwrap().len());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["faces.idx", "faces.rec", "lone.idx", "three", "two"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
