//! The GroupFace model: backbone, instance FC, K group FCs and the group decision network.
//!
//! ```text
//! image ──backbone──► shared (S) ──FC_inst──► v_x (D) ──GDN──► v̂ (F) ──FC──► logits (K) ─softmax─► p
//!                           └────FC_k, k < K──► v_x^{G_k} (K x D)
//! v_x^G = Σ_k p_k · v_x^{G_k}  (soft)   or   v_x^{G_k*}, k* = argmax p  (hard)
//! v̄_x  = v_x + v_x^G  (sum)   or   [v_x ; v_x^G]  (concat)
//! ```
//!
//! With `groups = 0` the model is exactly the ArcFace baseline: the backbone emits the
//! embedding directly and there is no shared layer, no FC_inst and no GDN.

pub mod activation;
pub mod backbone;
pub mod interop;
pub mod norm;
pub mod summary;

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::backend::conv::ConvBackend;
use crate::model::activation::{PRelu, PReluConfig};
use crate::model::backbone::{IResNet, IResNetConfig, BN_EPS};
use crate::model::norm::{BatchNorm, BatchNormConfig};
use crate::util::error::ConfigError;
use crate::util::named_enum;

/// How the group-aware representations are ensembled (`mode=soft|hard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GroupMode {
    /// S-GroupFace: the probability-weighted sum of all K group representations.
    #[default]
    Soft,
    /// H-GroupFace: the representation of the most probable group only.
    Hard,
}

/// How the instance and group representations are combined (`combine=sum|concat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    /// Aggregation: `v̄ = v_x + v_x^G`, width D (the paper's default).
    #[default]
    Sum,
    /// Concatenation: `v̄ = [v_x ; v_x^G]`, width 2D (an ablation).
    Concat,
}

named_enum!(GroupMode, "soft|hard", Soft => "soft", Hard => "hard");
named_enum!(Combine, "sum|concat", Sum => "sum", Concat => "concat");

/// Configuration of a [`GroupFace`] model (or, with `groups = 0`, the ArcFace baseline).
#[derive(Config, Debug, PartialEq)]
pub struct GroupFaceConfig {
    /// The backbone. Its `output_width` is set by [`GroupFaceConfig::backbone_config`]:
    /// `embedding` for the baseline, `shared` for GroupFace.
    pub backbone: IResNetConfig,
    /// Number of latent groups K; 0 builds the plain ArcFace baseline.
    #[config(default = 32)]
    pub groups: usize,
    /// Soft (S-GroupFace) or hard (H-GroupFace) ensemble.
    #[config(default = "GroupMode::Soft")]
    pub mode: GroupMode,
    /// Aggregation (sum) or concatenation of v_x and v_x^G.
    #[config(default = "Combine::Sum")]
    pub combine: Combine,
    /// Embedding width D of v_x and of each v_x^{G_k}.
    #[config(default = 512)]
    pub embedding: usize,
    /// Shared feature width S emitted by the backbone when `groups > 0`.
    #[config(default = 4096)]
    pub shared: usize,
    /// Hidden width of the GDN's first layer.
    #[config(default = 512)]
    pub gdn_hidden: usize,
    /// Width of the GDN's intermediate feature v̂ (used by group-aware similarity).
    #[config(default = 256)]
    pub gdn_feature: usize,
}

impl GroupFaceConfig {
    /// The paper's model on a named backbone preset (D = 512, S = 4096, GDN 512 -> 256).
    pub fn paper(backbone: IResNetConfig, groups: usize) -> Self {
        Self::new(backbone).with_groups(groups)
    }

    /// A CPU-sized model on [`IResNetConfig::tiny`]: D = 64, S = 256, GDN 64 -> 32.
    pub fn tiny(groups: usize) -> Self {
        Self::new(IResNetConfig::tiny())
            .with_groups(groups)
            .with_embedding(64)
            .with_shared(256)
            .with_gdn_hidden(64)
            .with_gdn_feature(32)
    }

    /// A mid-sized model on [`IResNetConfig::small`]: D = 128, S = 1024, GDN 128 -> 64.
    pub fn small(groups: usize) -> Self {
        Self::new(IResNetConfig::small())
            .with_groups(groups)
            .with_embedding(128)
            .with_shared(1024)
            .with_gdn_hidden(128)
            .with_gdn_feature(64)
    }

    /// Whether this is the plain ArcFace baseline.
    pub fn is_baseline(&self) -> bool {
        self.groups == 0
    }

    /// The backbone configuration with its output width set for this head.
    pub fn backbone_config(&self) -> IResNetConfig {
        let width = if self.is_baseline() { self.embedding } else { self.shared };
        self.backbone.clone().with_output_width(width)
    }

    /// Width of the final embedding v̄: D, or 2D with concatenation.
    pub fn output_width(&self) -> usize {
        match (self.is_baseline(), self.combine) {
            (false, Combine::Concat) => 2 * self.embedding,
            _ => self.embedding,
        }
    }

    /// Checks every field; the error names the key and what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.backbone_config().validate()?;
        for (key, value) in [
            ("embedding", self.embedding),
            ("shared", self.shared),
            ("gdn_hidden", self.gdn_hidden),
            ("gdn_feature", self.gdn_feature),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "a positive width", "0"));
            }
        }
        if self.groups > 4096 {
            return Err(ConfigError::new(
                "groups",
                "0 (baseline) to 4096",
                self.groups.to_string(),
            ));
        }
        Ok(())
    }

    /// Builds the model. Call [`validate`](Self::validate) first for a readable error.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupFace<B> {
        let backbone = self.backbone_config().init(device);
        let head = (!self.is_baseline()).then(|| GroupHead {
            instance_fc: LinearConfig::new(self.shared, self.embedding).init(device),
            instance_bn: bn1d(self.embedding).init(device),
            group_fc: GroupFcConfig::new(self.groups, self.shared, self.embedding).init(device),
            gdn: GroupDecisionNetworkConfig::new(self.embedding, self.groups)
                .with_hidden(self.gdn_hidden)
                .with_feature(self.gdn_feature)
                .init(device),
            mode: self.mode,
            combine: self.combine,
        });
        GroupFace { backbone, head }
    }
}

fn bn1d(width: usize) -> BatchNormConfig {
    BatchNormConfig::new(width).with_epsilon(BN_EPS)
}

/// Configuration of the K group FCs ([`GroupFc`]).
#[derive(Config, Debug)]
pub struct GroupFcConfig {
    /// Number of groups K.
    pub groups: usize,
    /// Input width S.
    pub input: usize,
    /// Output width D.
    pub output: usize,
}

impl GroupFcConfig {
    /// Builds the K FC-BN layers as one batched weight, initialised like `nn.Linear`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupFc<B> {
        let bound = 1.0 / (self.input as f64).sqrt();
        let init = burn::module::Initializer::Uniform { min: -bound, max: bound };
        GroupFc {
            weight: init.init([self.groups, self.input, self.output], device),
            bias: init.init([self.groups, self.output], device),
            bn: bn1d(self.groups * self.output).init(device),
        }
    }
}

/// The K group-aware FC-BN layers: `v^{G_k} = BN_k(shared · W_k + b_k)`.
///
/// The weights are one `[K, S, D]` tensor so that all groups run as one batched matrix product;
/// the K BatchNorm1d layers are one BatchNorm over `K * D` features (group-major).
#[derive(Module, Debug)]
pub struct GroupFc<B: Backend> {
    /// `[K, S, D]`.
    pub weight: Param<Tensor<B, 3>>,
    /// `[K, D]`.
    pub bias: Param<Tensor<B, 2>>,
    /// BatchNorm over `K * D` features, group-major.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> GroupFc<B> {
    /// Number of groups K.
    pub fn groups(&self) -> usize {
        self.weight.dims()[0]
    }

    /// All K group representations.
    ///
    /// # Shapes
    /// - `shared`: `[batch, S]`
    /// - output: `[batch, K, D]`
    pub fn forward_all(&self, shared: Tensor<B, 2>) -> Tensor<B, 3> {
        let [k, s, d] = self.weight.dims();
        let batch = shared.dims()[0];
        // [batch, S] -> [K, batch, S]: a broadcast view, so autodiff sums the K gradients.
        let x = shared.unsqueeze_dim::<3>(0).expand([k, batch, s]);
        // [K, batch, S] x [K, S, D] -> [K, batch, D]
        let y = x.matmul(self.weight.val()) + self.bias.val().unsqueeze_dim(1);
        // [K, batch, D] -> [batch, K * D] so each (group, unit) has its own BN statistics.
        let y = y.swap_dims(0, 1).reshape([batch, k * d]);
        self.bn.forward(y).reshape([batch, k, d])
    }

    /// Only the selected group's representation per sample, computing one FC per sample.
    /// Inference only: the BatchNorm uses its running statistics.
    ///
    /// # Shapes
    /// - `shared`: `[batch, S]`
    /// - `selected`: group index per sample, `batch` entries, each `< K`
    /// - output: `[batch, D]`
    pub fn forward_selected(&self, shared: Tensor<B, 2>, selected: &[usize]) -> Tensor<B, 2> {
        let [k, s, d] = self.weight.dims();
        let device = shared.device();
        let batch = selected.len();
        let gamma = self.bn.gamma.val().reshape([k, d]);
        let beta = self.bn.beta.val().reshape([k, d]);
        let mean = self.bn.running_mean.value().reshape([k, d]);
        let var = self.bn.running_var.value().reshape([k, d]);
        let eps = self.bn.epsilon;

        let mut order: Vec<usize> = Vec::with_capacity(batch);
        let mut parts = Vec::new();
        for group in 0..k {
            let rows: Vec<i64> =
                (0..batch).filter(|&i| selected[i] == group).map(|i| i as i64).collect();
            if rows.is_empty() {
                continue;
            }
            order.extend(rows.iter().map(|&i| i as usize));
            let n = rows.len();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
            let x = shared.clone().select(0, index);
            let w = self.weight.val().slice([group..group + 1, 0..s, 0..d]).reshape([s, d]);
            let b = self.bias.val().slice([group..group + 1, 0..d]);
            let y = x.matmul(w) + b;
            let slice = |t: &Tensor<B, 2>| t.clone().slice([group..group + 1, 0..d]);
            let scale = slice(&gamma) / (slice(&var) + eps).sqrt();
            parts.push((y - slice(&mean)) * scale + slice(&beta));
        }
        let grouped = Tensor::cat(parts, 0);
        // `grouped` holds the samples in group order; put them back in batch order.
        let mut inverse = vec![0i64; batch];
        for (position, &sample) in order.iter().enumerate() {
            inverse[sample] = position as i64;
        }
        let inverse = Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [batch]), &device);
        grouped.select(0, inverse)
    }
}

/// Configuration of the [`GroupDecisionNetwork`].
#[derive(Config, Debug)]
pub struct GroupDecisionNetworkConfig {
    /// Input width D (the GDN reads v_x).
    pub input: usize,
    /// Number of groups K.
    pub groups: usize,
    /// Hidden width.
    #[config(default = 512)]
    pub hidden: usize,
    /// Intermediate feature width (v̂).
    #[config(default = 256)]
    pub feature: usize,
}

impl GroupDecisionNetworkConfig {
    /// Builds the GDN: BN, FC, PReLU, BN, FC (to v̂), FC (to the K group logits).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupDecisionNetwork<B> {
        GroupDecisionNetwork {
            bn_in: bn1d(self.input).init(device),
            fc1: LinearConfig::new(self.input, self.hidden).init(device),
            act: PReluConfig::new().with_num_parameters(self.hidden).init(device),
            bn_hidden: bn1d(self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.feature).init(device),
            classifier: LinearConfig::new(self.feature, self.groups).init(device),
        }
    }
}

/// The group decision network: v_x to the intermediate feature v̂ and the group logits.
#[derive(Module, Debug)]
pub struct GroupDecisionNetwork<B: Backend> {
    /// BatchNorm1d on v_x.
    pub bn_in: BatchNorm<B>,
    /// D -> hidden.
    pub fc1: Linear<B>,
    /// Per-unit PReLU.
    pub act: PRelu<B>,
    /// BatchNorm1d on the hidden layer.
    pub bn_hidden: BatchNorm<B>,
    /// hidden -> v̂ (no activation).
    pub fc2: Linear<B>,
    /// v̂ -> K group logits.
    pub classifier: Linear<B>,
}

impl<B: Backend> GroupDecisionNetwork<B> {
    /// # Shapes
    /// - `instance`: `[batch, D]`
    /// - output: (v̂ `[batch, feature]`, logits `[batch, K]`)
    pub fn forward(&self, instance: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let x = self.fc1.forward(self.bn_in.forward(instance));
        let x = self.bn_hidden.forward(self.act.forward(x));
        let feature = self.fc2.forward(x);
        let logits = self.classifier.forward(feature.clone());
        (feature, logits)
    }
}

/// The GroupFace head: FC_inst, the K group FCs and the GDN.
#[derive(Module, Debug)]
pub struct GroupHead<B: Backend> {
    /// Shared feature to v_x.
    pub instance_fc: Linear<B>,
    /// BatchNorm1d after FC_inst.
    pub instance_bn: BatchNorm<B>,
    /// The K group FCs.
    pub group_fc: GroupFc<B>,
    /// The group decision network.
    pub gdn: GroupDecisionNetwork<B>,
    /// Soft or hard ensemble.
    #[module(skip)]
    pub mode: GroupMode,
    /// Sum or concatenation.
    #[module(skip)]
    pub combine: Combine,
}

/// Everything the forward pass produces that later stages need.
#[derive(Debug, Clone)]
pub struct GroupFaceOutput<B: Backend> {
    /// Final embedding v̄, `[batch, D]` (or `[batch, 2D]` with concat). For the baseline, the
    /// backbone's embedding.
    pub embedding: Tensor<B, 2>,
    /// Instance representation v_x, `[batch, D]` (equals `embedding` for the baseline).
    pub instance: Tensor<B, 2>,
    /// Group parts, absent for the baseline.
    pub groups: Option<GroupOutput<B>>,
}

/// The group-specific outputs of a GroupFace forward pass.
#[derive(Debug, Clone)]
pub struct GroupOutput<B: Backend> {
    /// Group logits, `[batch, K]`.
    pub logits: Tensor<B, 2>,
    /// p(G_k | x), softmax over the group axis, `[batch, K]`.
    pub probs: Tensor<B, 2>,
    /// GDN intermediate feature v̂, `[batch, F]`.
    pub feature: Tensor<B, 2>,
    /// All K group representations `[batch, K, D]`; absent under hard inference, which
    /// computes only the selected group.
    pub representations: Option<Tensor<B, 3>>,
    /// The ensembled group representation v_x^G, `[batch, D]`.
    pub aggregate: Tensor<B, 2>,
}

/// GroupFace, or the plain ArcFace baseline when `head` is `None`.
#[derive(Module, Debug)]
pub struct GroupFace<B: Backend> {
    /// The IResNet backbone.
    pub backbone: IResNet<B>,
    /// The GroupFace head; `None` for the baseline.
    pub head: Option<GroupHead<B>>,
}

impl<B: Backend> GroupFace<B> {
    /// Number of groups K (0 for the baseline).
    pub fn groups(&self) -> usize {
        self.head.as_ref().map_or(0, |h| h.group_fc.groups())
    }
}

impl<B: ConvBackend> GroupFace<B> {
    /// The forward pass in the configured mode.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, side, side]`, pixels normalised to [-1, 1]
    /// - output: see [`GroupFaceOutput`]
    pub fn forward(&self, images: Tensor<B, 4>) -> GroupFaceOutput<B> {
        let mode = self.head.as_ref().map_or(GroupMode::Soft, |h| h.mode);
        self.forward_mode(images, mode)
    }

    /// The forward pass with an explicit ensemble mode, so a soft-trained model can be
    /// evaluated with hard inference. Hard mode computes all K group FCs while training (so
    /// each group's BatchNorm sees the whole batch) and only the selected one at inference.
    pub fn forward_mode(&self, images: Tensor<B, 4>, mode: GroupMode) -> GroupFaceOutput<B> {
        let shared = self.backbone.forward(images);
        let Some(head) = &self.head else {
            return GroupFaceOutput { embedding: shared.clone(), instance: shared, groups: None };
        };
        let instance = head.instance_bn.forward(head.instance_fc.forward(shared.clone()));
        let (feature, logits) = head.gdn.forward(instance.clone());
        // Softmax over the group axis (dim 1), never over the batch.
        let probs = softmax(logits.clone(), 1);
        let training = B::ad_enabled(&instance.device());
        // ANCHOR: ensemble
        let (representations, aggregate) = match (mode, training) {
            (GroupMode::Soft, _) => {
                let all = head.group_fc.forward_all(shared);
                // [batch, K, 1] * [batch, K, D] summed over K -> [batch, D]
                let weighted = probs.clone().unsqueeze_dim::<3>(2) * all.clone();
                (Some(all), weighted.sum_dim(1).squeeze_dim(1))
            }
            (GroupMode::Hard, true) => {
                let all = head.group_fc.forward_all(shared);
                let [batch, _, d] = all.dims();
                let index = probs.clone().argmax(1).reshape([batch, 1, 1]).expand([batch, 1, d]);
                let selected = all.clone().gather(1, index).reshape([batch, d]);
                (Some(all), selected)
            }
            (GroupMode::Hard, false) => {
                let selected = argmax_rows(probs.clone());
                (None, head.group_fc.forward_selected(shared, &selected))
            }
        };
        // ANCHOR_END: ensemble
        // ANCHOR: combine
        let embedding = match head.combine {
            Combine::Sum => instance.clone() + aggregate.clone(),
            Combine::Concat => Tensor::cat(vec![instance.clone(), aggregate.clone()], 1),
        };
        // ANCHOR_END: combine
        GroupFaceOutput {
            embedding,
            instance,
            groups: Some(GroupOutput { logits, probs, feature, representations, aggregate }),
        }
    }
}

/// The argmax of each row, read back to the host (ties go to the lowest index).
pub fn argmax_rows<B: Backend>(scores: Tensor<B, 2>) -> Vec<usize> {
    let [rows, _] = scores.dims();
    let index = scores.argmax(1).reshape([rows]);
    index.into_data().iter::<i64>().map(|v| v as usize).collect()
}
