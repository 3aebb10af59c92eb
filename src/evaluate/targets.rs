//! Validation targets during training, as arcface_torch's `val_targets`: insightface `.bin`
//! verification sets (lfw, cfp_fp, agedb_30, ...) scored with the 10-fold protocol while the
//! model trains, each under the name of its file's stem, with the best accuracy so far.
//!
//! A run measures them at the end of every epoch (its first validation step, like the
//! held-out probe) and, with `val_every=N`, also every N optimiser steps. Every measurement is
//! a row of the run's `val_targets.csv`; the dashboard and `metrics.csv` get them as the
//! metrics `Verification <name>` and `Verification <name> best`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::backend::conv::ConvBackend;
use crate::data::verification_bin::VerificationSet;
use crate::evaluate::embed::embed_pixels;
use crate::evaluate::held_out::plain_verification;
use crate::model::{GroupFace, GroupMode};

/// One `.bin` set, decoded once at the model's input side.
pub struct ValTarget {
    /// The file's stem: the metric's and the column's name.
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    images: Vec<Vec<u8>>,
    side: usize,
    pairs: Vec<(usize, usize, bool)>,
}

impl std::fmt::Debug for ValTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValTarget")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("pairs", &self.pairs.len())
            .finish()
    }
}

impl ValTarget {
    /// Reads and decodes `path` (an insightface `.bin`) at `side` pixels. Errors name the
    /// file and, for an image that does not decode, its index.
    pub fn load(path: &Path, side: usize) -> Result<Self, String> {
        let name = target_name(path)?;
        let set =
            VerificationSet::read(path).map_err(|e| format!("val={}: {e}", path.display()))?;
        if set.is_empty() {
            return Err(format!("val={}: the set holds no pairs", path.display()));
        }
        let images = (0..2 * set.len())
            .map(|i| set.decode(i, Some(side as u32)).map(|image| image.into_raw()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("val={}: {e}", path.display()))?;
        let pairs =
            (0..set.len()).map(|i| (2 * i, 2 * i + 1, set.pair(i).is_some_and(|p| p.2))).collect();
        Ok(Self { name, path: path.to_path_buf(), images, side, pairs })
    }

    /// Pairs in the set.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the set has no pairs (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// insightface's 10-fold accuracy of plain cosine similarity on the flip-summed
    /// embeddings, what `eval data=FILE.bin` reports (NaN when the protocol cannot be computed:
    /// embeddings that are not finite), and the set's XNorm (the mean norm of the
    /// un-normalised embeddings of every image and view, as insightface's training callback
    /// logs beside the accuracy).
    pub fn accuracy<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        batch: usize,
        mode: Option<GroupMode>,
        device: &B::Device,
    ) -> (f64, f64) {
        let images = self.images.iter().map(|v| v.as_slice());
        let embeddings = embed_pixels(model, images, self.side, batch, mode, device);
        let accuracy =
            plain_verification(&embeddings, &self.pairs).map_or(f64::NAN, |r| r.accuracy);
        (accuracy, embeddings.xnorm().unwrap_or(f64::NAN))
    }
}

/// The name of a target: its file's stem, which must be a plain word (letters, digits, `_`,
/// `-`), since it becomes a column of `metrics.csv`.
pub fn target_name(path: &Path) -> Result<String, String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let plain =
        !stem.is_empty() && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        return Err(format!(
            "val={}: expected a file whose stem is a plain name (letters, digits, _ and -), \
             which names its metric",
            path.display()
        ));
    }
    Ok(stem.to_string())
}

/// The two metrics of the target named `name`, as the dashboard shows them and
/// `metrics.csv` lists them: its accuracy and its best so far.
pub fn metric_names(name: &str) -> [String; 2] {
    [format!("Verification {name}"), format!("Verification {name} best")]
}

/// Checks a list of targets before anything is read: each a `.bin` path with a plain stem,
/// no two with the same stem.
pub fn check_target_paths(paths: &[String]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for path in paths {
        let name = target_name(Path::new(path))?;
        if !seen.insert(name.clone()) {
            return Err(format!(
                "val={path}: a second target named `{name}`; the names (file stems) must differ"
            ));
        }
    }
    Ok(())
}

/// What one measurement found, in the order of the targets.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetScores {
    /// Accuracy of each target.
    pub accuracy: Vec<f64>,
    /// Best accuracy of each target so far in the run, this one included.
    pub best: Vec<f64>,
}

/// The targets of a run and when to measure them; shared by the clones of the model (one per
/// device), which is why it measures a step at most once.
pub struct ValTargets {
    targets: Vec<ValTarget>,
    every: usize,
    batch: usize,
    mode: Option<GroupMode>,
    due: AtomicBool,
    last_step: AtomicUsize,
    best: Mutex<Vec<f64>>,
    log: PathBuf,
}

impl std::fmt::Debug for ValTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValTargets")
            .field("targets", &self.targets)
            .field("every", &self.every)
            .finish()
    }
}

/// The header of `val_targets.csv`.
const LOG_HEADER: &str = "epoch,step,target,accuracy,best,xnorm\n";

impl ValTargets {
    /// Loads `paths` at `side` pixels, to be measured every `every` steps (0: once per epoch)
    /// in batches of `batch`, logging to `log`. A resumed run passes the epoch of its
    /// checkpoint: the log keeps that epoch's rows and before (later ones belong to the
    /// killed epoch, trained again), and the best so far is taken from them.
    pub fn load(
        paths: &[String],
        side: usize,
        every: usize,
        batch: usize,
        mode: Option<GroupMode>,
        log: PathBuf,
        resumed_from: Option<usize>,
    ) -> Result<Self, String> {
        check_target_paths(paths)?;
        let targets = paths
            .iter()
            .map(|p| ValTarget::load(Path::new(p), side))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let (kept, best) = restore_log(&log, &names, resumed_from.unwrap_or(0))?;
        crate::util::fs::write_atomically(&log, kept.as_bytes())?;
        Ok(Self {
            targets,
            every,
            batch: batch.max(1),
            mode,
            due: AtomicBool::new(false),
            last_step: AtomicUsize::new(usize::MAX),
            best: Mutex::new(best),
            log,
        })
    }

    /// The targets' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    /// Marks the end-of-epoch measurement due (at the start of each training epoch).
    pub fn arm(&self) {
        self.due.store(true, Ordering::SeqCst);
    }

    /// The end-of-epoch measurement, once per [`ValTargets::arm`].
    pub fn at_epoch_end<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        epoch: usize,
        step: usize,
        device: &B::Device,
    ) -> Option<TargetScores> {
        self.due.swap(false, Ordering::SeqCst).then(|| self.measure(model, epoch, step, device))
    }

    /// The measurement of global step `step` (counted from 1) when `val_every` asks for one
    /// there; a step shared by several replicas is measured once.
    pub fn at_step<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        epoch: usize,
        step: usize,
        device: &B::Device,
    ) -> Option<TargetScores> {
        if self.every == 0 || !step.is_multiple_of(self.every) {
            return None;
        }
        (self.last_step.swap(step, Ordering::SeqCst) != step)
            .then(|| self.measure(model, epoch, step, device))
    }

    fn measure<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        epoch: usize,
        step: usize,
        device: &B::Device,
    ) -> TargetScores {
        let (accuracy, xnorm): (Vec<f64>, Vec<f64>) =
            self.targets.iter().map(|t| t.accuracy(model, self.batch, self.mode, device)).unzip();
        let mut best = self.best.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = String::new();
        for (i, target) in self.targets.iter().enumerate() {
            // NaN never becomes the best.
            if accuracy[i] > best[i] || best[i].is_nan() {
                best[i] = accuracy[i];
            }
            rows.push_str(&format!(
                "{epoch},{step},{},{},{},{}\n",
                target.name, accuracy[i], best[i], xnorm[i]
            ));
        }
        if let Err(e) = append(&self.log, &rows) {
            eprintln!("error: {e}");
        }
        TargetScores { accuracy, best: best.clone() }
    }
}

/// Appends `rows` to the log; the log is small and read back only on resume.
fn append(log: &Path, rows: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    file.write_all(rows.as_bytes()).map_err(|e| format!("cannot write {}: {e}", log.display()))
}

/// The rows of an existing log up to epoch `keep_through` (none on a fresh run) and the best
/// accuracy of each of `names` in them (NaN where none). A row that does not parse is an
/// error naming the file and line.
fn restore_log(
    log: &Path,
    names: &[&str],
    keep_through: usize,
) -> Result<(String, Vec<f64>), String> {
    let mut kept = String::from(LOG_HEADER);
    let mut best = vec![f64::NAN; names.len()];
    if keep_through == 0 || !log.is_file() {
        return Ok((kept, best));
    }
    let text =
        std::fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    for (number, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            format!(
                "{}:{}: expected `epoch,step,target,accuracy,best,xnorm`, found `{line}`",
                log.display(),
                number + 1
            )
        };
        let fields: Vec<&str> = line.split(',').collect();
        // Logs written before the XNorm column have five fields; their rows keep an empty one.
        let (epoch, target, accuracy, xnorm) = match fields[..] {
            [epoch, _, target, accuracy, _] => (epoch, target, accuracy, None),
            [epoch, _, target, accuracy, _, xnorm] => (epoch, target, accuracy, Some(xnorm)),
            _ => return Err(bad()),
        };
        let epoch: usize = epoch.parse().map_err(|_| bad())?;
        let accuracy: f64 = accuracy.parse().map_err(|_| bad())?;
        if epoch > keep_through {
            continue;
        }
        kept.push_str(line);
        kept.push_str(if xnorm.is_none() { ",\n" } else { "\n" });
        if let Some(i) = names.iter().position(|n| *n == target) {
            if accuracy > best[i] || best[i].is_nan() {
                best[i] = accuracy;
            }
        }
    }
    Ok((kept, best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::test_util::temp_dir;

    #[test]
    fn names_are_stems_and_must_differ() {
        assert_eq!(target_name(Path::new("/data/lfw.bin")).unwrap(), "lfw");
        assert_eq!(target_name(Path::new("agedb_30.bin")).unwrap(), "agedb_30");
        let error = target_name(Path::new("my set.bin")).unwrap_err();
        assert!(error.contains("my set.bin") && error.contains("plain name"), "{error}");
        let error = check_target_paths(&["a/lfw.bin".into(), "b/lfw.bin".into()]).unwrap_err();
        assert!(error.contains("b/lfw.bin") && error.contains("`lfw`"), "{error}");
        check_target_paths(&["a/lfw.bin".into(), "a/cfp_fp.bin".into()]).unwrap();
    }

    /// A resumed run keeps the rows through its checkpoint's epoch and takes the best from
    /// them: rows of epoch 3 (the killed one) go, so the best of `lfw` is 0.8 (epoch 2),
    /// not 0.9.
    #[test]
    fn a_resumed_log_keeps_its_epochs_and_their_best() {
        let dir = temp_dir("val-log");
        let log = dir.join("val_targets.csv");
        let text = format!(
            "{LOG_HEADER}1,4,lfw,0.7,0.7,20.5\n1,4,cfp,0.6,0.6,19.0\n2,8,lfw,0.8,0.8,21.0\n\
             2,8,cfp,0.5,0.6,18.5\n3,12,lfw,0.9,0.9,22.0\n"
        );
        std::fs::write(&log, &text).unwrap();
        let (kept, best) = restore_log(&log, &["lfw", "cfp"], 2).unwrap();
        assert_eq!(kept.lines().count(), 5);
        assert!(!kept.contains("3,12"));
        assert!(kept.contains("2,8,cfp,0.5,0.6,18.5\n"));
        assert_eq!(best, [0.8, 0.6]);
        // A log from before the XNorm column: its rows get an empty one.
        std::fs::write(&log, "epoch,step,target,accuracy,best\n1,4,lfw,0.7,0.7\n").unwrap();
        let (kept, best) = restore_log(&log, &["lfw"], 1).unwrap();
        assert_eq!(kept, format!("{LOG_HEADER}1,4,lfw,0.7,0.7,\n"));
        assert_eq!(best, [0.7]);
        let (fresh, best) = restore_log(&log, &["lfw"], 0).unwrap();
        assert_eq!((fresh.as_str(), best[0].is_nan()), (LOG_HEADER, true));
        std::fs::write(&log, format!("{LOG_HEADER}1,4,lfw,oops,0.7\n")).unwrap();
        let error = restore_log(&log, &["lfw"], 1).unwrap_err();
        assert!(error.contains("val_targets.csv:2") && error.contains("oops"), "{error}");
    }
}
