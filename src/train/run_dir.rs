//! The run directory: checkpoints written whole, the label windows beside them, the checks
//! that keep a run from mixing with another, and loading a finished run (or a checkpoint file
//! of a given architecture) for evaluation.

use burn::prelude::*;
use burn::record::{FileRecorder, Recorder, RecorderError};
use burn::train::LearnerSummary;
use std::path::{Path, PathBuf};

use crate::model::GroupFace;
use crate::train::config::{config_differences, read_config, save_config, TrainConfig};
use crate::util::fs::write_atomically;

/// The configuration and trained model of a finished run directory.
pub fn load_run<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(crate::train::config::TrainConfig, GroupFace<B>), String> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(format!("{}: not a run directory (no config.json)", dir.display()));
    }
    let config = crate::train::config::read_config(&config_path)?;
    let model_path = dir.join("model.mpk");
    if !model_path.exists() {
        return Err(format!(
            "{}: the run has no model.mpk (unfinished, or trained elsewhere)",
            dir.display()
        ));
    }
    let model = crate::train::step::TrainModel::<B>::new(
        &config.model,
        &config.criterion,
        config.labels,
        config.label_window,
        device,
    )
    .load_file(dir.join("model"), &crate::train::run_dir::RunRecorder::new(), device)
    .map_err(|e| format!("cannot load {}: {e}", model_path.display()))?;
    Ok((config, model.model))
}

/// A trained run directory, or with `checkpoint` a PyTorch/safetensors checkpoint of that
/// architecture; returns the run's config (runs only), the architecture and the model.
/// A checkpoint that leaves any layer untrained is refused: its outputs would mean nothing.
#[allow(clippy::type_complexity)]
pub fn load_model<B: Backend>(
    run: &Path,
    checkpoint: Option<&crate::model::GroupFaceConfig>,
    device: &B::Device,
) -> Result<
    (Option<crate::train::config::TrainConfig>, crate::model::GroupFaceConfig, GroupFace<B>),
    String,
> {
    match checkpoint {
        None => {
            let (config, model) = load_run::<B>(run, device)?;
            let architecture = config.model.clone();
            Ok((Some(config), architecture, model))
        }
        Some(architecture) => {
            architecture.validate().map_err(|e| e.to_string())?;
            let fresh = architecture.init::<B>(device);
            let (model, report) = crate::model::interop::load_into(fresh, architecture, run)
                .map_err(|e| e.to_string())?;
            if !report.fresh.is_empty() {
                return Err(format!(
                    "{}: {}; untrained layers give meaningless outputs (for an insightface \
                     checkpoint use groups=0 and the embedding= of its fc)",
                    run.display(),
                    report.describe()
                ));
            }
            Ok((None, architecture.clone(), model))
        }
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
pub(crate) fn save_labels(dir: &Path, epoch: usize, history: &[Vec<f32>]) -> Result<(), String> {
    save_epoch_json(dir, "labels-", epoch, history)
}

/// Reads the label window saved with the checkpoint of `epoch`.
pub(crate) fn load_labels(dir: &Path, epoch: usize) -> Result<Vec<Vec<f32>>, String> {
    load_epoch_json(dir, "labels-", epoch, "", "a list of group-probability rows")
}

/// Saves the f16 loss scaler's state beside the checkpoint of `epoch`
/// (`checkpoint/loss-scale-{epoch}.json`), so a resumed run continues at its scale.
pub(crate) fn save_loss_scale(
    dir: &Path,
    epoch: usize,
    scaler: &crate::train::step::LossScaler,
) -> Result<(), String> {
    save_epoch_json(dir, "loss-scale-", epoch, scaler)
}

/// Reads the loss scaler's state saved with the checkpoint of `epoch`.
pub(crate) fn load_loss_scale(
    dir: &Path,
    epoch: usize,
) -> Result<crate::train::step::LossScaler, String> {
    load_epoch_json(
        dir,
        "loss-scale-",
        epoch,
        " (precision=f16 resumes at its loss scale)",
        "the loss scaler's state {scale, good_steps, skipped, growth_interval}",
    )
}

/// Writes `value` as `checkpoint/{prefix}{epoch}.json`, the state beside a checkpoint that
/// Burn's record does not hold, and prunes the `{prefix}` files no resume can need.
fn save_epoch_json<T: serde::Serialize + ?Sized>(
    dir: &Path,
    prefix: &str,
    epoch: usize,
    value: &T,
) -> Result<(), String> {
    let checkpoints = dir.join("checkpoint");
    std::fs::create_dir_all(&checkpoints)
        .map_err(|e| format!("cannot create {}: {e}", checkpoints.display()))?;
    let json = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    write_atomically(&checkpoints.join(format!("{prefix}{epoch}.json")), &json)?;
    prune_epoch_files(&checkpoints, prefix, epoch);
    Ok(())
}

/// Reads `checkpoint/{prefix}{epoch}.json`; an error names the file, with `why` after the
/// name when it cannot be read and `expected` when it does not parse.
fn load_epoch_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    prefix: &str,
    epoch: usize,
    why: &str,
    expected: &str,
) -> Result<T, String> {
    let path = dir.join("checkpoint").join(format!("{prefix}{epoch}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}{why}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: expected {expected}: {e}", path.display()))
}

/// Removes `{prefix}{e}.json` of epochs `e < epoch − 1` whose model checkpoint Burn's
/// checkpointer has already removed: no resume can need them.
fn prune_epoch_files(checkpoints: &Path, prefix: &str, epoch: usize) {
    let Ok(entries) = std::fs::read_dir(checkpoints) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(old) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.strip_suffix(".json")?.parse::<usize>().ok())
        else {
            continue;
        };
        if old + 1 < epoch && !checkpoints.join(format!("model-{old}.mpk")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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

/// Creates the run directory or, with `resume`, checks that it holds this configuration.
/// Returns the epoch of the checkpoint to resume from. Without `resume` the directory must be
/// empty or a start of this same run ([`check_fresh_run_dir`]), so an earlier run is never
/// overwritten or mixed with this one by accident.
pub(crate) fn prepare_run_dir(
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

/// Writes `metrics.csv`: one row per epoch and split with every logged metric (epoch means;
/// the held-out verification accuracy is measured once per validation epoch).
pub(crate) fn write_metrics_csv(dir: &Path, epochs: usize, extra: &[String]) -> Result<(), String> {
    let names: Vec<&str> =
        CSV_METRICS.iter().copied().chain(extra.iter().map(String::as_str)).collect();
    let summary = LearnerSummary::new(dir, &names)?;
    let mut csv = String::from("epoch,split");
    for &name in &names {
        csv.push(',');
        csv.push_str(&name.to_lowercase().replace([' ', '(', ')'], "_").replace("__", "_"));
    }
    csv.push('\n');
    for (split, metrics) in [("train", &summary.metrics.train), ("valid", &summary.metrics.valid)] {
        for epoch in 1..=epochs {
            csv.push_str(&format!("{epoch},{split}"));
            for &name in &names {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::SynthConfig;
    use crate::model::GroupFaceConfig;
    use crate::objective::loss::{CriterionConfig, MarginSoftmaxConfig};
    use crate::util::test_util::temp_dir;

    fn tiny() -> TrainConfig {
        let model = GroupFaceConfig::tiny(4);
        let criterion = CriterionConfig::new(MarginSoftmaxConfig::new(8, model.output_width()));
        let data = SynthConfig { identities: 8, side: 32, ..Default::default() };
        TrainConfig::new(model, criterion, data)
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
