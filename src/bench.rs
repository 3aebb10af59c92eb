//! Training-step throughput: forward, backward and SGD update on random data.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use serde::Serialize;

use crate::backend::BackendJob;
use crate::labels::{GroupLabeler, LabelMethod};
use crate::loss::{CriterionConfig, MarginSoftmaxConfig};
use crate::model::GroupFaceConfig;
use crate::training::{paper_sgd, sgd_step, TrainModel};

/// One benchmark configuration.
#[derive(Debug, Clone)]
pub struct BenchCase {
    /// Name of the backbone preset, for the report.
    pub backbone: String,
    /// The model.
    pub model: GroupFaceConfig,
    /// Identities of the classifier.
    pub classes: usize,
    /// Images per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (kernel compilation, allocator warm-up).
    pub warmup: usize,
    /// Backend name, for the report.
    pub backend: String,
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
    /// Timed steps.
    pub steps: usize,
    /// Backend.
    pub backend: String,
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

    fn run<B: AutodiffBackend>(self, device: B::Device) -> BenchResult {
        B::seed(&device, 0);
        let criterion =
            CriterionConfig::new(MarginSoftmaxConfig::new(self.classes, self.model.output_width()));
        let mut model = TrainModel::<B>::new(
            &self.model,
            &criterion,
            LabelMethod::SelfDistributed,
            32,
            &device,
        );
        let mut optimizer = paper_sgd().init();
        let mut labeler = GroupLabeler::new(LabelMethod::SelfDistributed, 32);
        let side = self.model.backbone.input_side;
        let images = Tensor::<B, 4>::random(
            [self.batch, 3, side, side],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let labels: Vec<i64> = (0..self.batch).map(|i| (i % self.classes) as i64).collect();
        let classes =
            Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [self.batch]), &device);
        let mut last_loss = f32::NAN;
        let mut start = Instant::now();
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                start = Instant::now();
            }
            let (next, loss) = sgd_step(
                model,
                &mut optimizer,
                images.clone(),
                classes.clone(),
                &mut labeler,
                0.01,
            );
            model = next;
            last_loss = loss;
        }
        let elapsed = start.elapsed().as_secs_f64();
        BenchResult {
            backbone: self.backbone,
            groups: self.model.groups,
            mode: self.model.mode.to_string(),
            batch: self.batch,
            steps: self.steps,
            backend: self.backend,
            side,
            images_per_second: (self.batch * self.steps) as f64 / elapsed,
            step_seconds: elapsed / self.steps as f64,
            peak_memory_bytes: peak_rss_bytes(),
            last_loss,
        }
    }
}
