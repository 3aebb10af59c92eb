//! The ablation runner: a grid of settings, one training run and one held-out evaluation per
//! setting and seed, and the tables and plots that compare them with the paper.
//!
//! Runs are keyed by their settings, so a grid that was interrupted continues where it stopped:
//! a run whose `report.json` exists is read back instead of trained again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::app::progress::RunBars;
use crate::backend::BackendKind;
use crate::data::synth::SynthConfig;
use crate::evaluate::held_out::{RunReport, SynthEvalConfig};
use crate::evaluate::similarity::SimilarityKind;
use crate::model::backbone::IResNetConfig;
use crate::model::summary::ModelSummary;
use crate::model::{Combine, GroupFaceConfig, GroupMode};
use crate::objective::labels::{LabelMethod, LabelSpace};
use crate::objective::loss::{CriterionConfig, MarginSoftmaxConfig};
use crate::train::config::{
    config_differences, paper_finetune_lr, read_config, reference_lr, TrainConfig,
};
use crate::train::run::{train_reporting, TrainRun};
use crate::train::schedule::ScheduleKind;
use crate::util::error::ConfigError;
use crate::util::fs::write_atomically;
use crate::util::named_enum;

/// The scale of every run of an ablation (`preset=tiny|small|paper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// CPU minutes: 32x32 synthetic faces, 16..128-wide backbones, 100 identities.
    #[default]
    Tiny,
    /// One GPU: 64x64 faces, half-width backbones, 2,000 identities.
    Small,
    /// The paper's model (112x112, full-width IResNet, K up to 32, D = 512) for CUDA.
    Paper,
}

named_enum!(Preset, "tiny|small|paper", Tiny => "tiny", Small => "small", Paper => "paper");

/// How every arm of an ablation is trained (`recipe=scratch|pretrained`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// From random weights at the preset's learning rate.
    #[default]
    Scratch,
    /// The paper's two stages: the seed's baseline network, trained from scratch (the
    /// pretraining run, shared by every arm), then every arm, the baseline included,
    /// fine-tuned from its trunk for the same epochs at `finetune_lr`.
    Pretrained,
}

named_enum!(Recipe, "scratch|pretrained", Scratch => "scratch", Pretrained => "pretrained");

/// The label space of results written before `label_space` existed: the paper's formula.
fn earlier_label_space() -> LabelSpace {
    LabelSpace::Prob
}

/// One run of the grid: every setting that changes what is trained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSetting {
    /// Backbone depth: `tiny` (one block per stage), or the block counts of `r18`…`r100`.
    pub backbone: String,
    /// Number of groups (0: the ArcFace baseline).
    pub groups: usize,
    /// Soft or hard ensemble.
    pub mode: GroupMode,
    /// Aggregation or concatenation.
    pub combine: Combine,
    /// Group labels of the self-grouping loss.
    pub labels: LabelMethod,
    /// Where self-distributed labels take the expectation away (results written before the
    /// key existed were `prob`).
    #[serde(default = "earlier_label_space")]
    pub label_space: LabelSpace,
    /// Scratch, or fine-tuned from the seed's pretraining run.
    #[serde(default)]
    pub recipe: Recipe,
    /// Training identities, where the grid sweeps them (`identities=` a list); the preset's
    /// when `None`.
    #[serde(default)]
    pub identities: Option<usize>,
    /// Seed of weights, shuffle and flips.
    pub seed: u64,
}

impl RunSetting {
    /// A directory name that identifies the run; the baseline has no group settings.
    pub fn id(&self) -> String {
        let size = self.identities.map_or(String::new(), |n| format!("n{n}-"));
        let recipe = match self.recipe {
            Recipe::Scratch => "",
            Recipe::Pretrained => "-pretrained",
        };
        if self.groups == 0 {
            format!("{size}{}-baseline{recipe}-seed{}", self.backbone, self.seed)
        } else {
            format!(
                "{size}{}-groups{}-{}-{}-{}{recipe}-seed{}",
                self.backbone,
                self.groups,
                self.mode,
                self.combine,
                self.labels_text(),
                self.seed
            )
        }
    }

    /// The label method, with the space of self-distributed labels where it is not the
    /// default (`self-distributed-prob`, `self-distributed-log`).
    pub fn labels_text(&self) -> String {
        match (self.labels, self.label_space) {
            (LabelMethod::SelfDistributed, space) if space != LabelSpace::default() => {
                format!("{}-{space}", self.labels)
            }
            (labels, _) => labels.to_string(),
        }
    }

    /// The run this one is fine-tuned from under the pretrained recipe: the seed's baseline,
    /// trained from scratch; `None` for a scratch run.
    pub fn pretraining(&self) -> Option<RunSetting> {
        (self.recipe == Recipe::Pretrained).then(|| RunSetting {
            groups: 0,
            mode: GroupMode::Soft,
            combine: Combine::Sum,
            labels: LabelMethod::None,
            label_space: LabelSpace::default(),
            recipe: Recipe::Scratch,
            ..self.clone()
        })
    }

    /// The settings without the seed: the row of the summary this run belongs to.
    pub fn row_key(&self) -> String {
        let mut s = self.clone();
        s.seed = 0;
        s.id().trim_end_matches("-seed0").to_string()
    }
}

/// The grid of an ablation.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Scale of every run.
    pub preset: Preset,
    /// Backbone depths.
    pub backbones: Vec<String>,
    /// Group counts; 0 (the baseline) is always added.
    pub groups: Vec<usize>,
    /// Ensemble modes.
    pub modes: Vec<GroupMode>,
    /// Combinations.
    pub combines: Vec<Combine>,
    /// Label methods.
    pub labels: Vec<LabelMethod>,
    /// Spaces of self-distributed labeling (one run each; the other methods ignore it).
    pub label_spaces: Vec<LabelSpace>,
    /// Scratch or the two-stage recipe.
    pub recipe: Recipe,
    /// Base learning rate of the fine-tuning stage of the pretrained recipe (the paper's
    /// 0.005 at batch 1,024, scaled to the preset's batch, when `None`).
    pub finetune_lr: Option<f64>,
    /// Similarities scored at evaluation (no retraining).
    pub similarities: Vec<SimilarityKind>,
    /// Seeds 0..seeds.
    pub seeds: u64,
    /// Epochs of every run (the preset's when `None`).
    pub epochs: Option<usize>,
    /// Batches in the E[p] window of every run's self-distributed labels (`TrainConfig`'s
    /// default when `None`).
    pub label_window: Option<usize>,
    /// Training identities: the preset's when empty, every run's when one, and one sweep
    /// point each (a dimension of the grid, named in the run ids) when several.
    pub identities: Vec<usize>,
    /// Images per training identity (the preset's when `None`).
    pub images_per_identity: Option<usize>,
    /// Held-out evaluation (the preset's when `None`).
    pub eval: Option<SynthEvalConfig>,
}

/// Expands `a..b` into the powers of two from `a` to `b` and `x,y,z` into a list.
pub fn parse_groups(value: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = || {
        ConfigError::new(
            "groups",
            "a list like 0,4,32 or a range of powers of two like 4..32",
            value,
        )
    };
    let mut out = Vec::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once("..") {
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            if a == 0 || !a.is_power_of_two() || !b.is_power_of_two() || a > b {
                return Err(bad());
            }
            let mut k = a;
            while k <= b {
                out.push(k);
                k *= 2;
            }
        } else {
            out.push(part.trim().parse().map_err(|_| bad())?);
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

impl Grid {
    /// Every run, baseline rows first, in a stable order.
    pub fn runs(&self) -> Vec<RunSetting> {
        let mut groups: Vec<usize> = vec![0];
        groups.extend(self.groups.iter().copied().filter(|&g| g > 0));
        groups.dedup();
        let sizes: Vec<Option<usize>> = if self.identities.len() > 1 {
            self.identities.iter().map(|&n| Some(n)).collect()
        } else {
            vec![None]
        };
        let spaces = if self.label_spaces.is_empty() {
            vec![LabelSpace::default()]
        } else {
            self.label_spaces.clone()
        };
        let mut runs = Vec::new();
        for &identities in &sizes {
            for backbone in &self.backbones {
                for &g in &groups {
                    let none = LabelSpace::default();
                    let variants: Vec<(GroupMode, Combine, LabelMethod, LabelSpace)> = if g == 0 {
                        vec![(GroupMode::Soft, Combine::Sum, LabelMethod::None, none)]
                    } else {
                        let mut v = Vec::new();
                        for &m in &self.modes {
                            for &c in &self.combines {
                                for &l in &self.labels {
                                    if l == LabelMethod::SelfDistributed {
                                        v.extend(spaces.iter().map(|&space| (m, c, l, space)));
                                    } else {
                                        v.push((m, c, l, none));
                                    }
                                }
                            }
                        }
                        v
                    };
                    for (mode, combine, labels, label_space) in variants {
                        for seed in 0..self.seeds {
                            runs.push(RunSetting {
                                backbone: backbone.clone(),
                                groups: g,
                                mode,
                                combine,
                                labels,
                                label_space,
                                recipe: self.recipe,
                                identities,
                                seed,
                            });
                        }
                    }
                }
            }
        }
        runs
    }

    /// The training identities of a run: its sweep point, else the grid's preset's.
    pub fn identities_of(&self, run: &RunSetting) -> usize {
        self.config(run).map_or(0, |c| c.data.identities)
    }

    /// The pretraining runs of the grid's runs (none under the scratch recipe), each once.
    pub fn pretraining_runs(&self) -> Vec<RunSetting> {
        let mut out: Vec<RunSetting> = Vec::new();
        for run in self.runs().iter().filter_map(RunSetting::pretraining) {
            if !out.contains(&run) {
                out.push(run);
            }
        }
        out
    }

    /// The training configuration of one run.
    pub fn config(&self, run: &RunSetting) -> Result<TrainConfig, ConfigError> {
        let blocks = |name: &str| -> Result<Vec<usize>, ConfigError> {
            match name {
                "tiny" => Ok(vec![1, 1, 1, 1]),
                other => IResNetConfig::by_name(other).map(|c| c.blocks).ok_or_else(|| {
                    ConfigError::new("backbone", "tiny|r18|r34|r50|r100", other.to_string())
                }),
            }
        };
        let (mut model, data, epochs, batch, lr, eval) = match self.preset {
            Preset::Tiny => {
                let mut model = GroupFaceConfig::tiny(run.groups);
                model.backbone.blocks = blocks(&run.backbone)?;
                let data = SynthConfig {
                    identities: 100,
                    images_per_identity: 20,
                    side: 32,
                    ..SynthConfig::default()
                };
                (model, data, 3, 64, reference_lr(64), SynthEvalConfig::new())
            }
            Preset::Small => {
                let mut model = GroupFaceConfig::small(run.groups);
                model.backbone.blocks = blocks(&run.backbone)?;
                let data = SynthConfig {
                    identities: 2000,
                    images_per_identity: 30,
                    side: 64,
                    ..SynthConfig::default()
                };
                let eval = SynthEvalConfig::new().with_identities(500).with_pairs(6000);
                (model, data, 10, 128, reference_lr(128), eval)
            }
            Preset::Paper => {
                let backbone = match run.backbone.as_str() {
                    "tiny" => IResNetConfig::r100(),
                    other => IResNetConfig::by_name(other).ok_or_else(|| {
                        ConfigError::new("backbone", "r18|r34|r50|r100", other.to_string())
                    })?,
                };
                let model = GroupFaceConfig::paper(backbone, run.groups);
                let data = SynthConfig {
                    identities: 10_000,
                    images_per_identity: 50,
                    side: 112,
                    ..SynthConfig::default()
                };
                let eval = SynthEvalConfig::new().with_identities(1000).with_pairs(6000);
                (model, data, 20, 128, reference_lr(128), eval)
            }
        };
        model.mode = run.mode;
        model.combine = run.combine;
        let mut data = data;
        if let Some(n) = run.identities.or(self.identities.first().copied()) {
            data.identities = n;
        }
        if let Some(n) = self.images_per_identity {
            data.images_per_identity = n;
        }
        let eval = self.eval.clone().unwrap_or(eval);
        let margin = MarginSoftmaxConfig::new(data.identities, model.output_width());
        let criterion = CriterionConfig::new(margin);
        let lr = match run.recipe {
            Recipe::Scratch => lr,
            Recipe::Pretrained => self.finetune_lr.unwrap_or_else(|| paper_finetune_lr(batch)),
        };
        let config = TrainConfig::new(model, criterion, data)
            .with_labels(run.labels)
            .with_label_space(run.label_space)
            .with_epochs(self.epochs.unwrap_or(epochs))
            .with_batch(batch)
            .with_lr(lr)
            .with_schedule(ScheduleKind::Linear)
            .with_seed(run.seed)
            .with_eval(eval);
        let config = match self.label_window {
            Some(window) => config.with_label_window(window),
            None => config,
        };
        if let Some(rate) = self.finetune_lr.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(ConfigError::new(
                "finetune_lr",
                "a positive learning rate",
                rate.to_string(),
            ));
        }
        config.validate()?;
        Ok(config)
    }
}

/// One finished run: its settings, its report and its cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The settings.
    pub setting: RunSetting,
    /// The held-out evaluation.
    pub report: RunReport,
    /// Training wall time (seconds), as measured when the run was trained.
    pub train_seconds: f64,
    /// Trainable parameters of the model.
    pub params: u64,
    /// Inference GFLOPs of one image.
    pub gflops: f64,
    /// Share of the most frequent group label G* in the last training epoch (`metrics.csv`'s
    /// `largest_label_share`); `None` without labels or for results written before it.
    #[serde(default)]
    pub label_share: Option<f64>,
}

/// The FAR columns of the tables: the lowest the tiny preset's 124,750 negative pairs support.
pub const TABLE_FARS: [f64; 2] = [1e-3, 1e-4];

/// A metric of a run under one similarity.
fn metric(result: &RunResult, similarity: SimilarityKind, name: &str) -> Option<f64> {
    let report = match similarity {
        SimilarityKind::Plain => &result.report.plain,
        SimilarityKind::GroupAware => result.report.group_aware.as_ref()?,
    };
    match name {
        "accuracy" => Some(report.verification.accuracy),
        far => report.tar_at_far.get(far).map(|t| t.tar),
    }
}

/// The paper's IJB-B TAR@FAR=1e-6 (r100, MS1MV2) for a row that differs from the paper's
/// GroupFace (K = 32, soft, sum, self-distributed, plain similarity) in at most one setting.
// ANCHOR: paper_value
pub fn paper_value(setting: &RunSetting, similarity: SimilarityKind) -> Option<f64> {
    if setting.backbone != "r100" && setting.backbone != "tiny" {
        return None;
    }
    if setting.groups == 0 {
        return (similarity == SimilarityKind::Plain).then_some(0.3828);
    }
    let mut changes = Vec::new();
    if setting.groups != 32 {
        changes.push(match setting.groups {
            4 => Some(0.4395),
            16 => Some(0.4435),
            _ => None,
        });
    }
    if setting.mode == GroupMode::Hard {
        changes.push(Some(0.4439));
    }
    if setting.combine == Combine::Concat {
        changes.push(Some(0.4745));
    }
    match setting.labels {
        LabelMethod::None => changes.push(Some(0.4468)),
        LabelMethod::Naive => changes.push(Some(0.4535)),
        LabelMethod::SelfDistributed => {}
    }
    if similarity == SimilarityKind::GroupAware {
        changes.push(Some(0.5212));
    }
    match changes.as_slice() {
        [] => Some(0.4678),
        [one] => *one,
        _ => None,
    }
}
// ANCHOR_END: paper_value

/// Mean and population standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Runs (or reads back) every run of `grid` under `runs_dir/<run id>/`, `jobs` at a time,
/// printing one line per run, with a bar on stderr for each run in flight (none where stderr
/// is not a terminal). Ablations that share a `runs_dir` share their common runs (the
/// baseline, K = 32). The first failure stops new runs from starting and is returned.
pub fn run_grid(
    grid: &Grid,
    runs_dir: &Path,
    backend: BackendKind,
    device: usize,
    jobs: usize,
) -> Result<Vec<RunResult>, String> {
    let pretraining = grid.pretraining_runs();
    if !pretraining.is_empty() {
        run_settings(grid, &pretraining, "pretraining", runs_dir, backend, device, jobs)?;
    }
    run_settings(grid, &grid.runs(), "run", runs_dir, backend, device, jobs)
}

/// Runs (or reads back) `runs`, `jobs` at a time; `what` names them in the progress lines.
fn run_settings(
    grid: &Grid,
    runs: &[RunSetting],
    what: &str,
    runs_dir: &Path,
    backend: BackendKind,
    device: usize,
    jobs: usize,
) -> Result<Vec<RunResult>, String> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<RunResult, String>>>> =
        runs.iter().map(|_| Mutex::new(None)).collect();
    // A bar per run in flight; its line goes to stdout when it ends, as before.
    let bars = RunBars::stderr(what, runs.len());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, runs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= runs.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let result = run_one(grid, &runs[i], runs_dir, backend, device, &bars);
                match &result {
                    Ok((_, line)) => {
                        bars.finished(&format!("[{what} {}/{}] {line}", i + 1, runs.len()))
                    }
                    Err(_) => failed.store(true, Ordering::SeqCst),
                }
                *slots[i].lock().expect("result slot") = Some(result.map(|(r, _)| r));
            });
        }
    });
    bars.finish();
    let mut results = Vec::with_capacity(runs.len());
    for (slot, setting) in slots.into_iter().zip(runs) {
        match slot.into_inner().expect("result slot") {
            Some(Ok(result)) => results.push(result),
            Some(Err(e)) => return Err(format!("{what} {}: {e}", setting.id())),
            // Not started because another run failed; that failure is reported above.
            None => {}
        }
    }
    if results.len() != runs.len() {
        return Err(format!("a {what} failed; see above"));
    }
    Ok(results)
}

/// The training configuration of `setting` as [`run_grid`] trains it under `runs_dir`: the
/// grid's, starting from the pretraining run's directory under the pretrained recipe.
pub fn run_config(
    grid: &Grid,
    setting: &RunSetting,
    runs_dir: &Path,
) -> Result<TrainConfig, String> {
    let config = grid.config(setting).map_err(|e| e.to_string())?;
    Ok(match setting.pretraining() {
        Some(pre) => config.with_init(Some(runs_dir.join(pre.id()).display().to_string())),
        None => config,
    })
}

/// The last training epoch's `largest_label_share` in a run's `metrics.csv`, if it has one.
fn last_label_share(dir: &Path) -> Option<f64> {
    let table = crate::train::curves::MetricsTable::read(&dir.join("metrics.csv")).ok()?;
    let shares = table.series("train", "largest_label_share");
    shares.into_iter().map(|(_, share)| share).rfind(|v| v.is_finite())
}

/// One run of the grid, or its earlier result; with the line to print. A run that trains has
/// a bar in `bars` while it does.
fn run_one(
    grid: &Grid,
    setting: &RunSetting,
    runs_dir: &Path,
    backend: BackendKind,
    device: usize,
    bars: &RunBars,
) -> Result<(RunResult, String), String> {
    let dir = runs_dir.join(setting.id());
    let config = run_config(grid, setting, runs_dir)?;
    let summary = ModelSummary::of(&config.model);
    let result_path = dir.join("result.json");
    if result_path.exists() {
        let text = std::fs::read_to_string(&result_path)
            .map_err(|e| format!("cannot read {}: {e}", result_path.display()))?;
        let result: RunResult = serde_json::from_str(&text).map_err(|e| {
            format!("{}: not a run result ({e}); delete it to rerun", result_path.display())
        })?;
        if result.setting != *setting {
            return Err(format!(
                "{} holds another run's result; delete it to rerun",
                result_path.display()
            ));
        }
        // The id names the grid's dimensions, not grid-wide keys (epochs, images, eval): a
        // run trained under other values is another run.
        let saved = read_config(&dir.join("config.json"))?;
        let differing = config_differences(&config, &saved)?;
        if !differing.is_empty() {
            return Err(format!(
                "{} was trained with other settings ({}); delete it to rerun, or choose \
                 another runs=",
                dir.display(),
                differing.join(", ")
            ));
        }
        return Ok((result, format!("{} (done earlier)", setting.id())));
    }
    let started = Instant::now();
    // A run killed part-way (its directory has a config but no result) continues from its
    // last checkpoint.
    let resume = dir.join("config.json").is_file();
    let bar = bars.run(&setting.id());
    let outcome = train_reporting(
        backend,
        device,
        TrainRun { config, out: dir.clone(), quiet: true, resume, node: None },
        bar.clone(),
    );
    bars.end(&bar);
    let outcome = outcome?;
    let result = RunResult {
        setting: setting.clone(),
        report: outcome.report,
        train_seconds: outcome.train_seconds,
        params: summary.params,
        gflops: summary.gflops,
        label_share: last_label_share(&dir),
    };
    let json = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    write_atomically(&result_path, json.as_bytes())?;
    let line = format!(
        "{}: verification {:.2}% in {:.0} s",
        setting.id(),
        100.0 * result.report.plain.verification.accuracy,
        started.elapsed().as_secs_f64()
    );
    Ok((result, line))
}

fn far_key(far: f64) -> String {
    crate::protocol::roc::far_key(far)
}

/// `runs.csv`: one row per run and similarity, every setting and metric.
pub fn runs_csv(grid: &Grid, results: &[RunResult]) -> String {
    let mut csv = String::from(
        "backbone,identities,recipe,groups,mode,combine,labels,label_space,similarity,seed,\
         accuracy,accuracy_std",
    );
    for far in TABLE_FARS {
        let _ = write!(csv, ",tar_at_far_{}", far_key(far));
    }
    csv.push_str(
        ",largest_group_share,group_entropy_bits,largest_label_share,mean_nmi,params,gflops,\
         train_seconds\n",
    );
    for r in results {
        for &sim in &grid.similarities {
            let report = match sim {
                SimilarityKind::Plain => &r.report.plain,
                SimilarityKind::GroupAware => match &r.report.group_aware {
                    Some(report) => report,
                    None => continue,
                },
            };
            let s = &r.setting;
            let dash = |v: String| if s.groups == 0 { "-".to_string() } else { v };
            let identities = grid.identities_of(s);
            let space = match s.labels {
                LabelMethod::SelfDistributed => s.label_space.to_string(),
                _ => "-".to_string(),
            };
            let _ = write!(
                csv,
                "{},{identities},{},{},{},{},{},{space},{},{},{},{}",
                s.backbone,
                s.recipe,
                s.groups,
                dash(s.mode.to_string()),
                dash(s.combine.to_string()),
                dash(s.labels.to_string()),
                sim,
                s.seed,
                report.verification.accuracy,
                report.verification.std
            );
            for far in TABLE_FARS {
                let v = report.tar_at_far.get(&far_key(far)).map(|t| t.tar.to_string());
                let _ = write!(csv, ",{}", v.unwrap_or_default());
            }
            let (share, entropy, nmi) = match &r.report.groups {
                Some(g) => (
                    g.largest_share.to_string(),
                    g.entropy_bits.to_string(),
                    (g.nmi.values().map(|n| n.nmi).sum::<f64>() / g.nmi.len().max(1) as f64)
                        .to_string(),
                ),
                None => Default::default(),
            };
            let label_share = r.label_share.map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                csv,
                ",{share},{entropy},{label_share},{nmi},{},{},{:.1}",
                r.params, r.gflops, r.train_seconds
            );
        }
    }
    csv
}

/// A summary row: the settings (without seed) and similarity, with the runs behind it.
struct Row<'a> {
    setting: &'a RunSetting,
    similarity: SimilarityKind,
    runs: Vec<&'a RunResult>,
}

fn rows<'a>(grid: &Grid, results: &'a [RunResult]) -> Vec<Row<'a>> {
    let mut order: Vec<(String, SimilarityKind)> = Vec::new();
    let mut rows: BTreeMap<(String, String), Row<'a>> = BTreeMap::new();
    for r in results {
        for &sim in &grid.similarities {
            if sim == SimilarityKind::GroupAware && r.setting.groups == 0 {
                continue;
            }
            let key = (r.setting.row_key(), sim.to_string());
            if !rows.contains_key(&key) {
                order.push((r.setting.row_key(), sim));
            }
            rows.entry(key)
                .or_insert_with(|| Row { setting: &r.setting, similarity: sim, runs: Vec::new() })
                .runs
                .push(r);
        }
    }
    order.into_iter().filter_map(|(k, sim)| rows.remove(&(k, sim.to_string()))).collect()
}

fn mean_std_text(values: &[f64], scale: f64, digits: usize) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let (m, s) = mean_std(values);
    format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale)
}

/// `summary.md`: one row per setting and similarity, mean ± std over seeds, with the paper's
/// number for the same row.
pub fn summary_markdown(grid: &Grid, results: &[RunResult], command: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Ablation ({} preset, {} recipe, {} seed(s))\n",
        grid.preset, grid.recipe, grid.seeds
    );
    let _ = writeln!(md, "Command: `{command}`\n");
    md.push_str(
        "| backbone | identities | groups | mode | combine | labels | similarity | verification \
         acc. (%) |",
    );
    for far in TABLE_FARS {
        let _ = write!(md, " TAR@FAR={} |", far_key(far));
    }
    md.push_str(
        " largest group share (held out) | largest label share (last epoch) | GFLOPs | paper \
         IJB-B TAR@1e-6 |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|");
    for _ in TABLE_FARS {
        md.push_str("---|");
    }
    md.push_str("---|---|---|---|\n");
    for row in rows(grid, results) {
        let s = row.setting;
        let dash = |v: String| if s.groups == 0 { "-".to_string() } else { v };
        let acc: Vec<f64> =
            row.runs.iter().filter_map(|r| metric(r, row.similarity, "accuracy")).collect();
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.backbone,
            grid.identities_of(s),
            s.groups,
            dash(s.mode.to_string()),
            dash(s.combine.to_string()),
            dash(s.labels_text()),
            row.similarity,
            mean_std_text(&acc, 100.0, 2)
        );
        for far in TABLE_FARS {
            let v: Vec<f64> =
                row.runs.iter().filter_map(|r| metric(r, row.similarity, &far_key(far))).collect();
            let _ = write!(md, " {} |", mean_std_text(&v, 1.0, 4));
        }
        let shares: Vec<f64> = row
            .runs
            .iter()
            .filter_map(|r| r.report.groups.as_ref().map(|g| g.largest_share))
            .collect();
        let label_shares: Vec<f64> = row.runs.iter().filter_map(|r| r.label_share).collect();
        let paper = paper_value(s, row.similarity).map_or("-".to_string(), |v| format!("{v:.4}"));
        let _ = writeln!(
            md,
            " {} | {} | {:.4} | {} |",
            if shares.is_empty() { "-".into() } else { mean_std_text(&shares, 1.0, 3) },
            if label_shares.is_empty() { "-".into() } else { mean_std_text(&label_shares, 1.0, 3) },
            row.runs[0].gflops,
            paper
        );
    }
    if grid.identities.len() > 1 {
        md.push_str(&gap_markdown(grid, results));
    }
    md.push_str(
        "\nOurs: synthetic faces held out from training (identities never seen), insightface's \
         10-fold verification protocol and TAR@FAR over every pair of held-out images; mean ± \
         population std over seeds. Paper: IJB-B TAR@FAR=1e-6 with ResNet-100 on MS1MV2 (SPEC \
         section 6), for the row that differs from the paper's GroupFace in at most one \
         setting. The two are not the same measurement: compare directions, not values.\n",
    );
    md
}

/// One GroupFace row's gap to the baseline at one training-set size: the differences of
/// matched seeds (same seed, same size), for accuracy and for TAR at the table's lowest FAR.
pub struct Gap {
    /// The GroupFace row (its id without size and seed).
    pub row: String,
    /// Training identities.
    pub identities: usize,
    /// GroupFace minus baseline verification accuracy, one value per seed.
    pub accuracy: Vec<f64>,
    /// GroupFace minus baseline TAR at FAR = the last of [`TABLE_FARS`], one value per seed.
    pub tar: Vec<f64>,
    /// The baseline's and GroupFace's accuracies, per seed (for the spread of each arm).
    pub arms: (Vec<f64>, Vec<f64>),
}

/// The gaps of every GroupFace row at every size (plain similarity), in the grid's order.
pub fn gaps(grid: &Grid, results: &[RunResult]) -> Vec<Gap> {
    let far = far_key(TABLE_FARS[TABLE_FARS.len() - 1]);
    let key = |s: &RunSetting| {
        let mut s = s.clone();
        s.identities = None;
        s.row_key()
    };
    let mut out: Vec<Gap> = Vec::new();
    for r in results.iter().filter(|r| r.setting.groups > 0) {
        let s = &r.setting;
        let Some(base) = results.iter().find(|b| {
            b.setting.groups == 0
                && b.setting.seed == s.seed
                && b.setting.identities == s.identities
                && b.setting.backbone == s.backbone
                && b.setting.recipe == s.recipe
        }) else {
            continue;
        };
        let identities = grid.identities_of(s);
        let row = key(s);
        let index = match out.iter().position(|g| g.row == row && g.identities == identities) {
            Some(i) => i,
            None => {
                out.push(Gap {
                    row,
                    identities,
                    accuracy: Vec::new(),
                    tar: Vec::new(),
                    arms: (Vec::new(), Vec::new()),
                });
                out.len() - 1
            }
        };
        let gap = &mut out[index];
        let (a, b) = (&r.report.plain, &base.report.plain);
        gap.accuracy.push(a.verification.accuracy - b.verification.accuracy);
        if let (Some(x), Some(y)) = (a.tar_at_far.get(&far), b.tar_at_far.get(&far)) {
            gap.tar.push(x.tar - y.tar);
        }
        gap.arms.0.push(b.verification.accuracy);
        gap.arms.1.push(a.verification.accuracy);
    }
    out
}

/// The summary's section on the gap against the training-set size.
fn gap_markdown(grid: &Grid, results: &[RunResult]) -> String {
    let far = far_key(TABLE_FARS[TABLE_FARS.len() - 1]);
    let mut md = String::from(
        "\n## GroupFace minus baseline against training identities\n\nDifferences of matched \
         seeds (plain similarity), mean ± population std over seeds; \"exceeds\" when the mean \
         gap is larger than twice the larger of the two arms' seed spreads.\n\n",
    );
    let _ = writeln!(
        md,
        "| GroupFace row | identities | accuracy gap (points) | TAR@FAR={far} gap | baseline \
         acc. (%) | GroupFace acc. (%) | exceeds 2 spreads |"
    );
    md.push_str("|---|---|---|---|---|---|---|\n");
    for gap in gaps(grid, results) {
        let (mean, _) = mean_std(&gap.accuracy);
        let spread = mean_std(&gap.arms.0).1.max(mean_std(&gap.arms.1).1);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            gap.row,
            gap.identities,
            mean_std_text(&gap.accuracy, 100.0, 2),
            mean_std_text(&gap.tar, 1.0, 4),
            mean_std_text(&gap.arms.0, 100.0, 2),
            mean_std_text(&gap.arms.1, 100.0, 2),
            if mean.abs() > 2.0 * spread { "yes" } else { "no" }
        );
    }
    md
}

/// Writes `runs.csv`, `summary.md` and the plots into `out`, and returns the summary.
pub fn write_outputs(
    grid: &Grid,
    results: &[RunResult],
    out: &Path,
    command: &str,
) -> Result<String, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write_atomically(&out.join("runs.csv"), runs_csv(grid, results).as_bytes())?;
    let summary = summary_markdown(grid, results, command);
    write_atomically(&out.join("summary.md"), summary.as_bytes())?;
    write_plots(grid, results, out)?;
    Ok(summary)
}

/// Plots: verification accuracy (mean ± std over seeds) against the number of groups, one
/// series per other setting; and the ROC of every row's first seed.
fn write_plots(grid: &Grid, results: &[RunResult], out: &Path) -> Result<Vec<PathBuf>, String> {
    use crate::protocol::plot::{Axis, LinePlot, Series};
    let mut written = Vec::new();
    let mut by_series: BTreeMap<String, BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for r in results {
        for &sim in &grid.similarities {
            let Some(acc) = metric(r, sim, "accuracy") else { continue };
            let s = &r.setting;
            let name =
                format!("{} {} {} {} {} {}", s.backbone, s.mode, s.combine, s.labels, sim, "");
            if s.groups == 0 {
                // The baseline is the groups = 0 point of every series.
                for other in results.iter().filter(|o| o.setting.groups > 0) {
                    let o = &other.setting;
                    if o.backbone == s.backbone {
                        let name = format!(
                            "{} {} {} {} {} {}",
                            o.backbone, o.mode, o.combine, o.labels, sim, ""
                        );
                        let points = by_series.entry(name).or_default().entry(0).or_default();
                        if points.len() < grid.seeds as usize {
                            points.push(acc);
                        }
                    }
                }
            } else {
                by_series.entry(name).or_default().entry(s.groups).or_default().push(acc);
            }
        }
    }
    if grid.groups.len() > 1 || grid.groups.iter().any(|&g| g > 0) {
        let mut plot = LinePlot::new(
            "Held-out verification accuracy vs number of groups",
            Axis::linear("groups K (0 = ArcFace baseline)"),
            Axis::linear("verification accuracy (%)"),
        );
        for (name, points) in by_series {
            let points: Vec<(f64, f64, f64)> = points
                .iter()
                .map(|(&k, v)| {
                    let (m, s) = mean_std(v);
                    (k as f64, 100.0 * m, 100.0 * s)
                })
                .collect();
            plot.add(Series::with_error_bars(name.trim().to_string(), points));
        }
        let path = out.join("accuracy_vs_groups.svg");
        write_atomically(&path, plot.to_svg().as_bytes())?;
        written.push(path);
    }
    let mut roc = LinePlot::new(
        "ROC over all held-out pairs (first seed)",
        Axis::log10("false accept rate"),
        Axis::linear("true accept rate"),
    );
    for row in rows(grid, results) {
        let report = match row.similarity {
            SimilarityKind::Plain => &row.runs[0].report.plain,
            SimilarityKind::GroupAware => match &row.runs[0].report.group_aware {
                Some(r) => r,
                None => continue,
            },
        };
        let points: Vec<(f64, f64)> =
            report.roc.iter().filter(|p| p.0 > 0.0).map(|&(f, t)| (f, t)).collect();
        roc.add(Series::new(format!("{} {}", row.setting.row_key(), row.similarity), points));
    }
    let path = out.join("roc.svg");
    write_atomically(&path, roc.to_svg().as_bytes())?;
    written.push(path);
    if grid.identities.len() > 1 {
        let mut plot = LinePlot::new(
            "GroupFace minus baseline against training identities (matched seeds)",
            Axis::log10("training identities"),
            Axis::linear("verification accuracy gap (points)"),
        );
        let mut series: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        for gap in gaps(grid, results) {
            let (m, s) = mean_std(&gap.accuracy);
            series.entry(gap.row).or_default().push((gap.identities as f64, 100.0 * m, 100.0 * s));
        }
        for (name, points) in series {
            plot.add(Series::with_error_bars(name, points));
        }
        let path = out.join("gap_vs_identities.svg");
        write_atomically(&path, plot.to_svg().as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
