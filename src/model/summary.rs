//! Parameter and FLOP counts computed from a configuration, without building the model.
//!
//! FLOPs are the paper's: 2 × the multiply-adds of the convolutions and fully connected layers
//! of one image's forward pass (BatchNorm, PReLU and additions are not counted; they add under
//! 0.1% on r100). Parameters are every weight, bias, BatchNorm scale and shift and PReLU slope,
//! not the BatchNorm running statistics.

use serde::Serialize;

use crate::model::backbone::IResNetConfig;
use crate::model::{GroupFaceConfig, GroupMode};

/// Counts of one part of the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartCount {
    /// Part name: `backbone`, `instance_fc`, `group_fcs`, `gdn`.
    pub name: &'static str,
    /// Trainable parameters.
    pub params: u64,
    /// Forward FLOPs of one image (2 × multiply-adds).
    pub flops: u64,
}

/// Counts of a whole model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Each part; the GroupFace parts are absent for the baseline.
    pub parts: Vec<PartCount>,
    /// Total parameters.
    pub params: u64,
    /// Total forward FLOPs of one image.
    pub flops: u64,
    /// `flops / 1e9`.
    pub gflops: f64,
}

fn bn(width: usize) -> u64 {
    2 * width as u64
}

fn linear(input: usize, output: usize) -> (u64, u64) {
    let (i, o) = (input as u64, output as u64);
    (i * o + o, 2 * i * o)
}

/// Parameters and forward FLOPs of an IResNet backbone.
pub fn backbone_counts(config: &IResNetConfig) -> PartCount {
    let mut side = config.input_side as u64;
    let stem = config.stem_width as u64;
    let mut params = 9 * 3 * stem + bn(config.stem_width) + stem;
    let mut flops = 2 * 9 * 3 * stem * side * side;
    let mut input = stem;
    for (&count, &width) in config.blocks.iter().zip(&config.widths) {
        let width = width as u64;
        for i in 0..count {
            let stride = if i == 0 { 2 } else { 1 };
            let out_side = side / stride;
            params +=
                2 * input + 9 * input * width + 2 * width + width + 9 * width * width + 2 * width;
            flops += 2 * 9 * input * width * side * side;
            flops += 2 * 9 * width * width * out_side * out_side;
            if stride != 1 || input != width {
                params += input * width + 2 * width;
                flops += 2 * input * width * out_side * out_side;
            }
            input = width;
            side = out_side;
        }
    }
    params += 2 * input;
    let (fc_params, fc_flops) = linear((input * side * side) as usize, config.output_width);
    params += fc_params + bn(config.output_width);
    flops += fc_flops;
    PartCount { name: "backbone", params, flops }
}

impl ModelSummary {
    /// Counts a GroupFace (or baseline) configuration. In hard mode only the selected group's
    /// FC is counted, as hard inference computes one group FC per image.
    pub fn of(config: &GroupFaceConfig) -> Self {
        let mut parts = vec![backbone_counts(&config.backbone_config())];
        if !config.is_baseline() {
            let (s, d, k) = (config.shared, config.embedding, config.groups);
            let (p, f) = linear(s, d);
            parts.push(PartCount { name: "instance_fc", params: p + bn(d), flops: f });
            let active = match config.mode {
                GroupMode::Soft => k as u64,
                GroupMode::Hard => 1,
            };
            parts.push(PartCount {
                name: "group_fcs",
                params: k as u64 * (p + bn(d)),
                flops: active * f,
            });
            let (h, fe) = (config.gdn_hidden, config.gdn_feature);
            let (p1, f1) = linear(d, h);
            let (p2, f2) = linear(h, fe);
            let (p3, f3) = linear(fe, k);
            parts.push(PartCount {
                name: "gdn",
                params: bn(d) + p1 + h as u64 + bn(h) + p2 + p3,
                flops: f1 + f2 + f3,
            });
        }
        let params = parts.iter().map(|p| p.params).sum();
        let flops: u64 = parts.iter().map(|p| p.flops).sum();
        Self { parts, params, flops, gflops: flops as f64 / 1e9 }
    }

    /// A plain-text table, one row per part plus the total.
    pub fn table(&self) -> String {
        let mut out = format!("{:<12} {:>14} {:>10}\n", "part", "params", "GFLOPs");
        for part in &self.parts {
            out += &format!(
                "{:<12} {:>14} {:>10.4}\n",
                part.name,
                part.params,
                part.flops as f64 / 1e9
            );
        }
        out += &format!("{:<12} {:>14} {:>10.4}\n", "total", self.params, self.gflops);
        out
    }
}

/// Trainable parameters of a built module: every float `Param` that requires a gradient.
/// Burn's `num_params` also counts BatchNorm running statistics, which the paper does not.
pub fn trainable_params<B, M>(module: &M) -> u64
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::Module<B>,
{
    struct Counter(u64);
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Counter {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let value = param.val();
            if value.is_require_grad() {
                self.0 += value.shape().num_elements() as u64;
            }
        }
    }
    let mut counter = Counter(0);
    module.visit(&mut counter);
    counter.0
}
