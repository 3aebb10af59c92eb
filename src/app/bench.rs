//! Throughput on random data: training steps (forward, backward and SGD update), inference
//! (the forward pass alone, for the group head's share of it), rank-1 search and ROC.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use serde::Serialize;

use crate::app::progress::Bar;
use crate::backend::conv::TrainBackend;
use crate::backend::{BackendJob, Precision};
use crate::data::dataset::FaceBatch;
use crate::model::GroupFaceConfig;
use crate::objective::labels::LabelMethod;
use crate::objective::loss::{CriterionConfig, MarginSoftmaxConfig};
use crate::train::config::sgd;
use crate::train::learner::learner_step;
use crate::train::step::TrainModel;
use crate::util::progress::Progress;

/// One benchmark configuration.
#[derive(Debug, Clone)]
pub struct BenchCase {
    /// Name of the backbone preset, for the report.
    pub backbone: String,
    /// The model.
    pub model: GroupFaceConfig,
    /// Identities of the classifier.
    pub classes: usize,
    /// Partial FC's share of the class centres per step (1: the full classifier).
    pub sample_rate: f64,
    /// Images per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (kernel compilation, allocator warm-up).
    pub warmup: usize,
    /// Backend name, for the report.
    pub backend: String,
    /// Float type of the step, for the report: the caller sets it on the device
    /// ([`crate::backend::run_with_precision`]).
    pub precision: Precision,
}

/// What one configuration measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Backbone preset.
    pub backbone: String,
    /// Groups K.
    pub groups: usize,
    /// `soft` or `hard`.
    pub mode: String,
    /// Images per step.
    pub batch: usize,
    /// Identities of the classifier.
    pub classes: usize,
    /// Partial FC's share of the class centres per step.
    pub sample_rate: f64,
    /// Timed steps.
    pub steps: usize,
    /// Backend.
    pub backend: String,
    /// Float type of every tensor of the step (`f32`, or pure `bf16`).
    pub precision: Precision,
    /// Input side.
    pub side: usize,
    /// Training images per second over the timed steps.
    pub images_per_second: f64,
    /// Mean seconds per step.
    pub step_seconds: f64,
    /// Peak resident memory of the process (VmHWM), bytes; the whole process, so on a GPU
    /// backend it is host memory only.
    pub peak_memory_bytes: Option<u64>,
    /// Loss after the last step (finite means the step ran properly).
    pub last_loss: f32,
}

/// Peak resident set size of this process, from `/proc/self/status` (Linux only).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl BackendJob for BenchCase {
    type Output = BenchResult;

    fn run<B: TrainBackend>(self, device: B::Device) -> BenchResult {
        B::seed(&device, 0);
        let criterion = CriterionConfig::new(
            MarginSoftmaxConfig::new(self.classes, self.model.output_width())
                .with_sample_rate(self.sample_rate),
        );
        let mut model = TrainModel::<B>::new(
            &self.model,
            &criterion,
            LabelMethod::SelfDistributed,
            32,
            &device,
        )
        .with_precision(self.precision);
        if self.precision.scales_loss() {
            model.guard = std::sync::Arc::new(
                crate::train::step::StepGuard::default()
                    .with_loss_scaler(crate::train::step::LossScaler::default()),
            );
        }
        // The paper's SGD (momentum 0.9, weight decay 5e-4: `TrainConfig`'s defaults).
        let mut optimizer = sgd(0.9, 5e-4).init();
        let side = self.model.backbone.input_side;
        let images = Tensor::<B, 4>::random(
            [self.batch, 3, side, side],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let labels: Vec<i64> = (0..self.batch).map(|i| (i % self.classes) as i64).collect();
        let classes =
            Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [self.batch]), &device);
        let mut last = None;
        // A bar of the steps, warm-up included; drawing it costs microseconds a step.
        let bar = Bar::stderr();
        bar.start(
            &format!("{} K={} batch {}: steps", self.backbone, self.model.groups, self.batch),
            (self.warmup + self.steps) as u64,
        );
        let mut start = Instant::now();
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                start = Instant::now();
            }
            // A step key, as the training loader gives, so Partial FC draws a sample per step.
            let batch = FaceBatch {
                images: images.clone(),
                labels: classes.clone(),
                step: Some((0, step)),
            };
            let (next, output) = learner_step(model, &mut optimizer, batch, 0.01);
            model = next;
            last = Some(output.loss);
            bar.advance(1);
        }
        let elapsed = start.elapsed().as_secs_f64();
        bar.finish();
        // Read after the clock stops: the step itself reads its loss once, as in training.
        let last_loss = last.map_or(f32::NAN, |loss| loss.into_scalar().elem::<f32>());
        BenchResult {
            backbone: self.backbone,
            groups: self.model.groups,
            mode: self.model.mode.to_string(),
            batch: self.batch,
            classes: self.classes,
            sample_rate: self.sample_rate,
            steps: self.steps,
            backend: self.backend,
            precision: self.precision,
            side,
            images_per_second: (self.batch * self.steps) as f64 / elapsed,
            step_seconds: elapsed / self.steps as f64,
            peak_memory_bytes: peak_rss_bytes(),
            last_loss,
        }
    }
}

/// Rank-1 identification against a large distractor set (MegaFace scale), on the backend.
#[derive(Debug, Clone)]
pub struct Rank1Bench {
    /// Distractors in the gallery.
    pub distractors: usize,
    /// Probes (and identities: one gallery row each).
    pub probes: usize,
    /// Embedding width.
    pub dim: usize,
    /// Backend name, for the report.
    pub backend: String,
}

/// What [`Rank1Bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct Rank1BenchResult {
    /// Backend.
    pub backend: String,
    /// Distractors.
    pub distractors: usize,
    /// Probes.
    pub probes: usize,
    /// Embedding width.
    pub dim: usize,
    /// Seconds scoring the gallery and every distractor block (generation excluded).
    pub search_seconds: f64,
    /// Seconds drawing the random distractors on the device.
    pub generate_seconds: f64,
    /// Probe-vs-candidate scores per second.
    pub scores_per_second: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Rank-1 with no distractors and with every one (probes are their identity's row plus
    /// noise).
    pub rank1_curve: Vec<(usize, f64)>,
}

impl BackendJob for Rank1Bench {
    type Output = Result<Rank1BenchResult, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        use crate::data::rng::SplitMix64;
        use crate::evaluate::identify::Rank1Search;
        use crate::protocol::Matrix;
        type Inner<B> = <B as AutodiffBackend>::InnerBackend;
        B::seed(&device, 0);
        let (p, dim) = (self.probes, self.dim);
        let mut rng = SplitMix64::new(7);
        let gallery: Vec<f32> = (0..p * dim).map(|_| rng.normal()).collect();
        // Noise 4x the signal: a probe's cosine with its own identity is about 0.24, near the
        // largest of 10^6 random cosines at D = 512 (about 5/sqrt(512) = 0.22), so rank-1
        // falls as distractors grow, as it does on MegaFace.
        let probes: Vec<f32> = gallery.iter().map(|g| g + 4.0 * rng.normal()).collect();
        let labels: Vec<usize> = (0..p).collect();
        let gallery = Matrix::new(p, dim, gallery).map_err(|e| e.to_string())?;
        let probes = Matrix::new(p, dim, probes).map_err(|e| e.to_string())?;
        let sync = || Inner::<B>::sync(&device).map_err(|e| format!("{e:?}"));
        let mut search_seconds = 0.0;
        let mut generate_seconds = 0.0;
        let t = Instant::now();
        let mut search = Rank1Search::<Inner<B>>::new(&probes, &labels, &gallery, &labels, &device)
            .map_err(|e| e.to_string())?;
        sync()?;
        search_seconds += t.elapsed().as_secs_f64();
        let block = 65_536;
        let mut added = 0;
        let bar = Bar::stderr();
        bar.start("rank-1: distractors", self.distractors as u64);
        while added < self.distractors {
            let n = block.min(self.distractors - added);
            let t = Instant::now();
            let rows =
                Tensor::<Inner<B>, 2>::random([n, dim], Distribution::Normal(0.0, 1.0), &device);
            sync()?;
            generate_seconds += t.elapsed().as_secs_f64();
            let t = Instant::now();
            search.add_distractors(rows).map_err(|e| e.to_string())?;
            sync()?;
            search_seconds += t.elapsed().as_secs_f64();
            added += n;
            bar.advance(n as u64);
        }
        bar.finish();
        let t = Instant::now();
        let result = search.result().map_err(|e| e.to_string())?;
        search_seconds += t.elapsed().as_secs_f64();
        Ok(Rank1BenchResult {
            backend: self.backend,
            distractors: self.distractors,
            probes: p,
            dim,
            search_seconds,
            generate_seconds,
            scores_per_second: (p * (p + self.distractors)) as f64 / search_seconds,
            peak_memory_bytes: peak_rss_bytes(),
            rank1_curve: result.curve.iter().map(|p| (p.distractors, p.accuracy)).collect(),
        })
    }
}

/// Inference throughput: the forward pass alone, on the backend without autodiff (BatchNorm
/// with running statistics, H-GroupFace computing only the selected group's FC), on random
/// images. Comparing `groups=0` with the GroupFace modes gives the head's share of the time.
#[derive(Debug, Clone)]
pub struct ForwardBench {
    /// Name of the backbone preset, for the report.
    pub backbone: String,
    /// The model; its `mode` is the one measured.
    pub model: GroupFaceConfig,
    /// Images per forward pass.
    pub batch: usize,
    /// Timed passes.
    pub steps: usize,
    /// Untimed passes first.
    pub warmup: usize,
    /// Backend name, for the report.
    pub backend: String,
}

/// What [`ForwardBench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardResult {
    /// Backbone preset.
    pub backbone: String,
    /// Groups K (0: the ArcFace baseline).
    pub groups: usize,
    /// `soft` or `hard`.
    pub mode: String,
    /// Images per pass.
    pub batch: usize,
    /// Input side.
    pub side: usize,
    /// Backend name.
    pub backend: String,
    /// Images embedded per second.
    pub images_per_second: f64,
    /// Mean seconds per pass.
    pub step_seconds: f64,
    /// Forward GFLOPs of one image, counted from the configuration ([`crate::model::summary`]).
    pub gflops_per_image: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_memory_bytes: Option<u64>,
}

impl BackendJob for ForwardBench {
    type Output = Result<ForwardResult, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        type Inner<B> = <B as AutodiffBackend>::InnerBackend;
        self.model.validate().map_err(|e| e.to_string())?;
        if self.batch == 0 || self.steps == 0 {
            return Err("batch and steps must be at least 1".into());
        }
        B::seed(&device, 0);
        let model = self.model.init::<Inner<B>>(&device);
        let side = self.model.backbone.input_side;
        let images = Tensor::<Inner<B>, 4>::random(
            [self.batch, 3, side, side],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        // Reading the embedding back makes every backend finish the pass before the clock stops.
        let pass = || -> Result<(), String> {
            model
                .forward(images.clone())
                .embedding
                .into_data()
                .to_vec::<f32>()
                .map(|_| ())
                .map_err(|e| format!("reading the embedding back: {e:?}"))
        };
        let bar = Bar::stderr();
        let what = format!(
            "{} K={} batch {}: forward passes",
            self.backbone, self.model.groups, self.batch
        );
        bar.start(&what, (self.warmup + self.steps) as u64);
        for _ in 0..self.warmup {
            pass()?;
            bar.advance(1);
        }
        let t = Instant::now();
        for _ in 0..self.steps {
            pass()?;
            bar.advance(1);
        }
        let seconds = t.elapsed().as_secs_f64();
        bar.finish();
        let summary = crate::model::summary::ModelSummary::of(&self.model);
        Ok(ForwardResult {
            backbone: self.backbone,
            groups: self.model.groups,
            mode: self.model.mode.to_string(),
            batch: self.batch,
            side,
            backend: self.backend,
            images_per_second: (self.batch * self.steps) as f64 / seconds,
            step_seconds: seconds / self.steps as f64,
            gflops_per_image: summary.gflops,
            peak_memory_bytes: peak_rss_bytes(),
        })
    }
}

/// The ROC of `scores` random pair scores, of which `positives` are genuine, built as `eval`
/// builds it (one sort, then every threshold), with the time and the peak memory.
#[derive(Debug, Clone)]
pub struct RocBench {
    /// Pair scores.
    pub scores: usize,
    /// Genuine pairs among them (spread evenly), at least 1 and fewer than `scores`.
    pub positives: usize,
}

/// What [`RocBench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct RocBenchResult {
    /// Pair scores.
    pub scores: usize,
    /// Genuine pairs.
    pub positives: usize,
    /// Seconds drawing the scores (not part of the ROC).
    pub generate_seconds: f64,
    /// Seconds building the ROC and reading TAR@FAR at 1e-6..1e-1, the AUC and the EER.
    pub roc_seconds: f64,
    /// Scores per second of the ROC.
    pub scores_per_second: f64,
    /// Points of the ROC (distinct thresholds).
    pub points: usize,
    /// TAR at FAR = 1e-6 of these random scores.
    pub tar_at_far_1e6: f64,
    /// Area under the curve.
    pub auc: f64,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_memory_bytes: Option<u64>,
}

impl RocBench {
    /// Draws the scores and measures the ROC. Genuine scores are about N(0.5, 0.15) and
    /// impostor scores N(0, 0.15), cosines as a trained model gives them.
    pub fn run(&self) -> Result<RocBenchResult, String> {
        use crate::data::rng::SplitMix64;
        use crate::protocol::roc::Roc;
        if self.positives == 0 || self.positives >= self.scores {
            return Err(format!(
                "positives: expected 1..{} (fewer than scores={}), found {}",
                self.scores, self.scores, self.positives
            ));
        }
        let t = Instant::now();
        let stride = self.scores / self.positives;
        let positive: Vec<bool> =
            (0..self.scores).map(|i| i % stride == 0 && i / stride < self.positives).collect();
        let mut rng = SplitMix64::new(11);
        let scores: Vec<f32> =
            positive.iter().map(|&p| if p { 0.5 } else { 0.0 } + 0.15 * rng.normal()).collect();
        let generate_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let roc = Roc::from_scores(&scores, &positive).map_err(|e| e.to_string())?;
        let tars = roc.tar_at_fars(&[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]);
        let (auc, _eer) = (roc.auc(), roc.eer());
        let roc_seconds = t.elapsed().as_secs_f64();
        Ok(RocBenchResult {
            scores: self.scores,
            positives: self.positives,
            generate_seconds,
            roc_seconds,
            scores_per_second: self.scores as f64 / roc_seconds,
            points: roc.len(),
            tar_at_far_1e6: tars
                .get(&crate::protocol::roc::far_key(1e-6))
                .map_or(f64::NAN, |t| t.tar),
            auc,
            peak_memory_bytes: peak_rss_bytes(),
        })
    }
}

/// The same configuration measured in PyTorch eager by `scripts/bench_torch.py`, run as a
/// child process, so that one `bench` invocation prints both frameworks side by side.
#[derive(Debug, Clone)]
pub struct TorchReference {
    /// The Python interpreter (with torch installed).
    pub python: String,
    /// Path of `scripts/bench_torch.py`.
    pub script: std::path::PathBuf,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `none` or `bf16` (autocast of the forward pass).
    pub amp: String,
    /// Model keys given to `bench` (mode, combine, widths), passed on unchanged.
    pub model_args: Vec<String>,
}

/// One row of the side-by-side table: the same model, batch and machine in both frameworks.
#[derive(Debug, Clone, Serialize)]
pub struct SideBySide {
    /// Backbone preset.
    pub backbone: String,
    /// Groups K.
    pub groups: usize,
    /// `soft` or `hard`.
    pub mode: String,
    /// Images per step.
    pub batch: usize,
    /// Input side.
    pub side: usize,
    /// Burn backend.
    pub backend: String,
    /// Burn training images per second.
    pub burn_images_per_second: f64,
    /// PyTorch training images per second.
    pub torch_images_per_second: f64,
    /// Burn / PyTorch: above 1, Burn is faster.
    pub ratio: f64,
    /// Burn's peak memory (see [`BenchResult::peak_memory_bytes`]).
    pub burn_peak_memory_bytes: Option<u64>,
    /// PyTorch's peak memory (peak RSS of its process on CPU, peak allocated on CUDA).
    pub torch_peak_memory_bytes: Option<u64>,
    /// PyTorch device, autocast, threads and version.
    pub torch: String,
    /// Where both ran.
    pub machine: String,
}

impl TorchReference {
    /// Runs the script for `case` and returns its JSON object.
    pub fn measure(&self, case: &BenchCase) -> Result<serde_json::Value, String> {
        let mut command = std::process::Command::new(&self.python);
        command.arg(&self.script).args([
            format!("backbone={}", case.backbone),
            format!("groups={}", case.model.groups),
            format!("batch={}", case.batch),
            format!("steps={}", case.steps),
            format!("warmup={}", case.warmup),
            format!("classes={}", case.classes),
            format!("device={}", self.device),
            format!("amp={}", self.amp),
        ]);
        command.args(&self.model_args);
        if self.device == "cpu" {
            // The Burn CPU backends use every core; so does this.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            command.arg(format!("threads={cores}"));
        }
        let shown = format!("{} {}", self.python, self.script.display());
        let output = command
            .output()
            .map_err(|e| format!("cannot run `{shown}`: {e} (torch=false skips PyTorch)"))?;
        if !output.status.success() {
            return Err(format!(
                "`{shown}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| format!("`{shown}` printed no JSON object"))?;
        serde_json::from_str(line).map_err(|e| format!("`{shown}` printed bad JSON ({e}): {line}"))
    }

    /// Measures `case` in PyTorch and pairs it with Burn's `result`.
    pub fn compare(&self, case: &BenchCase, result: &BenchResult) -> Result<SideBySide, String> {
        let torch = self.measure(case)?;
        let torch_ips = torch["images_per_second"]
            .as_f64()
            .ok_or_else(|| format!("PyTorch's result has no images_per_second: {torch}"))?;
        Ok(SideBySide {
            backbone: result.backbone.clone(),
            groups: result.groups,
            mode: result.mode.clone(),
            batch: result.batch,
            side: result.side,
            // The float type rides with the backend, as PyTorch's autocast rides with its device.
            backend: match result.precision {
                Precision::F32 => result.backend.clone(),
                other => format!("{} {other}", result.backend),
            },
            burn_images_per_second: result.images_per_second,
            torch_images_per_second: torch_ips,
            ratio: result.images_per_second / torch_ips,
            burn_peak_memory_bytes: result.peak_memory_bytes,
            torch_peak_memory_bytes: torch["peak_memory_bytes"].as_u64(),
            torch: format!(
                "torch {} {} amp={} threads={}",
                torch["torch"].as_str().unwrap_or("?"),
                torch["device"].as_str().unwrap_or("?"),
                torch["amp"].as_str().unwrap_or("?"),
                torch["threads"]
            ),
            machine: machine(),
        })
    }
}

/// This machine in a few words: CPU model and core count (and nothing about GPUs, which the
/// backend names).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// The side-by-side rows as a Markdown table (memory in MiB).
pub fn side_by_side_table(rows: &[SideBySide]) -> String {
    let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0));
    let mut table = String::from(
        "| backend | model | batch | Burn images/s | PyTorch images/s | ratio | Burn peak MiB | \
         PyTorch peak MiB | PyTorch | machine |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let model = if r.groups == 0 {
            format!("{} baseline, {}px", r.backbone, r.side)
        } else {
            format!("{} K={} {}, {}px", r.backbone, r.groups, r.mode, r.side)
        };
        table.push_str(&format!(
            "| {} | {model} | {} | {:.2} | {:.2} | {:.3} | {} | {} | {} | {} |\n",
            r.backend,
            r.batch,
            r.burn_images_per_second,
            r.torch_images_per_second,
            r.ratio,
            mib(r.burn_peak_memory_bytes),
            mib(r.torch_peak_memory_bytes),
            r.torch,
            r.machine
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn roc_bench_spreads_its_positives_and_separates_them() {
        let result = RocBench { scores: 1000, positives: 10 }.run().unwrap();
        assert_eq!((result.scores, result.positives), (1000, 10));
        // Genuine N(0.5, 0.15) against impostor N(0, 0.15): d' = 0.5 / 0.15 = 3.33, so the
        // expected AUC is Phi(d' / sqrt 2) = Phi(2.36) = 0.991; with 10 genuine pairs it is
        // near that, and far from a chance level of 0.5.
        assert!(result.auc > 0.95 && result.auc <= 1.0, "{}", result.auc);
        // At most one point per distinct score, plus the leading point.
        assert!(result.points >= 2 && result.points <= 1001, "{}", result.points);
        for positives in [0, 1000] {
            let err = RocBench { scores: 1000, positives }.run().unwrap_err();
            assert!(err.starts_with("positives:"), "{err}");
        }
    }

    #[test]
    fn forward_bench_reports_the_configured_model() {
        let model = GroupFaceConfig::tiny(4);
        let job = ForwardBench {
            backbone: "tiny".into(),
            model: model.clone(),
            batch: 2,
            steps: 1,
            warmup: 0,
            backend: "ndarray".into(),
        };
        let result = job.run::<Autodiff<NdArray<f32>>>(Default::default()).unwrap();
        assert_eq!((result.groups, result.batch, result.side), (4, 2, 32));
        assert_eq!(result.gflops_per_image, crate::model::summary::ModelSummary::of(&model).gflops);
        assert!(result.images_per_second > 0.0 && result.images_per_second.is_finite());
    }
}
