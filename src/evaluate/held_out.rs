//! Evaluation of a trained model on held-out synthetic identities: the verification protocol,
//! TAR@FAR over all pairs, both with plain and with group-aware similarity, and what the
//! groups learned (their shares and their agreement with the generator's hidden attributes).
//!
//! Held-out identities are the generator's identities `identities..identities + n` of the same
//! seed: never trained on, drawn from the same distribution (look-alikes included).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::groups as group_stats;
use crate::backend::conv::ConvBackend;
use crate::data::rng::{hash3, SplitMix64};
use crate::data::source::{FaceSource, SourceSplit};
use crate::data::synth::{SynthConfig, SynthFaces, ATTRIBUTE_NAMES};
use crate::evaluate::embed::{embed_pixels, to_tensor, Embeddings};
use crate::evaluate::similarity::GroupAwareParams;
use crate::model::{GroupFace, GroupMode};
use crate::protocol::pairs::{group_aware_score, unit_cosine};
use crate::protocol::report::Report;
use crate::protocol::roc::Roc;
use crate::protocol::verification;
use crate::protocol::Matrix;
use crate::util::error::ConfigError;

/// The held-out evaluation of a training run.
#[derive(Config, Debug, PartialEq)]
pub struct SynthEvalConfig {
    /// Held-out identities (after the trained ones).
    #[config(default = 100)]
    pub identities: usize,
    /// Images per held-out identity.
    #[config(default = 5)]
    pub images_per_identity: usize,
    /// Pairs of the 10-fold verification protocol (half positive), like LFW's 6000.
    #[config(default = 3000)]
    pub pairs: usize,
    /// Seed of the pair draw.
    #[config(default = 0)]
    pub seed: u64,
    /// Evaluate hard inference of a soft-trained model instead of its own mode.
    #[config(default = "None")]
    pub mode: Option<GroupMode>,
    /// Distractor identities (one image each, after the held-out ones) of the rank-1
    /// identification protocol; its gallery is the first image of each held-out identity and
    /// its probes the others.
    #[config(default = 200)]
    pub distractors: usize,
}

impl SynthEvalConfig {
    /// Checks every field, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.identities < 2 {
            return Err(ConfigError::new(
                "eval.identities",
                "at least 2 held-out identities",
                self.identities.to_string(),
            ));
        }
        if self.images_per_identity < 2 {
            return Err(ConfigError::new(
                "eval.images_per_identity",
                "at least 2 (positive pairs need two images)",
                self.images_per_identity.to_string(),
            ));
        }
        if self.pairs < 20 || !self.pairs.is_multiple_of(20) {
            return Err(ConfigError::new(
                "eval.pairs",
                "a positive multiple of 20 (10 folds, half positive)",
                self.pairs.to_string(),
            ));
        }
        Ok(())
    }
}

/// Group usage on the held-out images and agreement with the hidden attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Share of images whose most probable group is k, for every k (the paper's Fig. 5).
    pub shares: Vec<f64>,
    /// The largest share (1/K when uniform, 1 at collapse).
    pub largest_share: f64,
    /// Entropy of the group histogram in bits (log2 K when uniform).
    pub entropy_bits: f64,
    /// Normalised mutual information between the group and each hidden attribute.
    pub nmi: BTreeMap<String, AttributeNmi>,
}

/// NMI of the group assignment with one hidden attribute, and what groups of the same sizes
/// but unrelated to the attribute score (NMI grows with K even for random groups).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttributeNmi {
    /// Normalised mutual information (arithmetic-mean normaliser, as scikit-learn's default).
    pub nmi: f64,
    /// Mean NMI of shuffled assignments.
    pub chance_nmi: f64,
}

/// Everything the held-out evaluation measured; `report.json` of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Plain (cosine) similarity.
    #[serde(flatten)]
    pub plain: Report,
    /// Group-aware similarity (SPEC section 3); absent for the baseline.
    pub group_aware: Option<Report>,
    /// What the groups learned; absent for the baseline.
    pub groups: Option<GroupReport>,
}

impl RunReport {
    /// Writes `report.json` (and the plain report's CSV, Markdown and ROC plot) into `dir`.
    /// `report.json` is written last and only once, whole (the plain report's alone would
    /// lack the group parts): a run killed before it has none, and a resume finishes it.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n";
        self.plain.write_all_with_json(dir, &json).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Reads a `report.json`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a run report: {e}", path.display()))
    }
}

/// Rank-1 identification on held-out identities: gallery = image 0 of each, probes = the
/// rest, against a growing number of distractors (one image each of further identities).
fn held_out_rank1<B: ConvBackend>(
    model: &GroupFace<B>,
    held: &HeldOut,
    embeddings: &Embeddings,
    batch: usize,
    mode: Option<GroupMode>,
    device: &B::Device,
) -> Result<crate::protocol::identification::Rank1Result, String> {
    let per = held.images_per_identity;
    let normalized = embeddings.embedding.normalized();
    let cols = normalized.cols;
    let (mut gallery, mut probes, mut gallery_labels, mut probe_labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..normalized.rows {
        let (id, index) = (i / per, i % per);
        if index == 0 {
            gallery.extend_from_slice(normalized.row(i));
            gallery_labels.push(id);
        } else {
            probes.extend_from_slice(normalized.row(i));
            probe_labels.push(id);
        }
    }
    let distractors = embed_pixels(
        model,
        held.distractors.iter().map(|v| v.as_slice()),
        held.side,
        batch,
        mode,
        device,
    )
    .embedding
    .normalized();
    let matrix = |rows: usize, values: Vec<f32>| Matrix::new(rows, cols, values);
    let result = crate::evaluate::identify::rank1_on::<B, _>(
        &matrix(probe_labels.len(), probes).map_err(|e| e.to_string())?,
        &probe_labels,
        &matrix(gallery_labels.len(), gallery).map_err(|e| e.to_string())?,
        &gallery_labels,
        &matrix(distractors.rows, distractors.data).map_err(|e| e.to_string())?,
        device,
    )
    .map_err(|e| e.to_string())?;
    Ok(result)
}

/// The held-out faces a run is evaluated on: `identities × images_per_identity` images of
/// identities never trained on (identity-major), the 10-fold verification pairs over them,
/// and the distractors of rank-1 identification.
#[derive(Clone)]
pub struct HeldOut {
    /// RGB pixels, `side · side · 3` bytes each, identity-major.
    pub images: Vec<Vec<u8>>,
    /// Held-out identity of each image, `0..identities`.
    pub labels: Vec<usize>,
    /// Image side in pixels.
    pub side: usize,
    /// Images of each identity.
    pub images_per_identity: usize,
    /// `(row_a, row_b, same)` of [`verification_pairs`].
    pub pairs: Vec<(usize, usize, bool)>,
    /// One image of each further identity, for rank-1 (empty for folders and `.rec`s, whose
    /// other identities are trained on).
    pub distractors: Vec<Vec<u8>>,
    /// The generator's hidden attributes of each image (synthetic faces only).
    pub attributes: Option<Vec<[u8; crate::data::synth::NUM_ATTRIBUTES]>>,
    /// What the report's `settings` record about the protocol.
    pub settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for HeldOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldOut")
            .field("images", &self.images.len())
            .field("side", &self.side)
            .field("pairs", &self.pairs.len())
            .field("distractors", &self.distractors.len())
            .field("settings", &self.settings)
            .finish()
    }
}

impl HeldOut {
    /// The generator's identities `data.identities..` of the same seed, with image indices
    /// past the trained ones, and further identities as distractors.
    pub fn synthetic(data: &SynthConfig, config: &SynthEvalConfig) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let faces = SynthFaces::new(data.clone()).map_err(|e| e.to_string())?;
        let first = data.identities;
        let per = config.images_per_identity;
        let mut images = Vec::with_capacity(config.identities * per);
        let mut labels = Vec::with_capacity(config.identities * per);
        let mut attributes = Vec::with_capacity(config.identities * per);
        for id in 0..config.identities {
            for index in 0..per {
                // Image indices past the training ones, so no held-out image repeats a trained
                // one.
                images.push(faces.image(first + id, data.images_per_identity + index).into_raw());
                labels.push(id);
                attributes.push(faces.attributes(first + id));
            }
        }
        let after = first + config.identities;
        let distractors = (0..config.distractors)
            .map(|d| faces.image(after + d, data.images_per_identity).into_raw())
            .collect();
        let mut settings = BTreeMap::new();
        settings.insert("protocol".into(), "synthetic held-out identities".into());
        settings.insert("first_identity".into(), first.to_string());
        Ok(Self::assemble(images, labels, data.side as usize, config, distractors, settings)
            .with_attributes(attributes))
    }

    /// The held-out identities of a folder or `.rec` split (their images, decoded now: an
    /// image that cannot be read is an error naming it).
    pub fn from_source(
        source: &FaceSource,
        split: &SourceSplit,
        config: &SynthEvalConfig,
    ) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut side = 0;
        for (id, (_, indices)) in split.held_out.iter().enumerate() {
            for &index in indices.iter().take(config.images_per_identity) {
                let item = source.load(index).map_err(|e| format!("held-out identity: {e}"))?;
                side = item.side;
                images.push(item.pixels);
                labels.push(id);
            }
        }
        let mut settings = BTreeMap::new();
        settings.insert(
            "protocol".into(),
            format!("held-out identities of {}", source.path().display()),
        );
        let held: Vec<String> = split.held_out.iter().map(|(id, _)| id.to_string()).collect();
        settings.insert("held_out_labels".into(), held.join(" "));
        Ok(Self::assemble(images, labels, side, config, Vec::new(), settings))
    }

    fn assemble(
        images: Vec<Vec<u8>>,
        labels: Vec<usize>,
        side: usize,
        config: &SynthEvalConfig,
        distractors: Vec<Vec<u8>>,
        mut settings: BTreeMap<String, String>,
    ) -> Self {
        let per = config.images_per_identity;
        let identities = labels.len() / per.max(1);
        settings.insert("identities".into(), identities.to_string());
        settings.insert("images_per_identity".into(), per.to_string());
        settings.insert("distractors".into(), distractors.len().to_string());
        Self {
            pairs: verification_pairs(identities, per, config.pairs, config.seed),
            images,
            labels,
            side,
            images_per_identity: per,
            distractors,
            attributes: None,
            settings,
        }
    }

    fn with_attributes(
        mut self,
        attributes: Vec<[u8; crate::data::synth::NUM_ATTRIBUTES]>,
    ) -> Self {
        self.attributes = Some(attributes);
        self
    }

    /// Embeddings `f(img) + f(flip(img))` of every held-out image.
    pub fn embed<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        batch: usize,
        mode: Option<GroupMode>,
        device: &B::Device,
    ) -> Embeddings {
        embed_pixels(
            model,
            self.images.iter().map(|v| v.as_slice()),
            self.side,
            batch,
            mode,
            device,
        )
    }
}

/// insightface's 10-fold verification of plain cosine similarity on `pairs`: the raw
/// flip-sums, normalised in f64 as insightface's numpy code does.
pub(crate) fn plain_verification(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
) -> Result<verification::VerificationResult, String> {
    let raw = &embeddings.embedding;
    let take = |pick: fn(&(usize, usize, bool)) -> usize| -> Result<Matrix, String> {
        let mut m = Matrix::empty(raw.cols);
        for p in pairs {
            m.push_row(raw.row(pick(p))).map_err(|e| e.to_string())?;
        }
        Ok(m)
    };
    let a = take(|p| p.0)?;
    let b = take(|p| p.1)?;
    let issame: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    verification::evaluate_embeddings(&a.data, &b.data, a.cols, &issame).map_err(|e| e.to_string())
}

/// The held-out verification a training run measures once per epoch, on its first
/// validation step, for the dashboard: the same images, pairs, batch and inference mode as
/// the report written after training, so the last epoch's figure is the report's plain
/// accuracy.
pub struct VerificationProbe {
    held: Arc<HeldOut>,
    batch: usize,
    mode: Option<GroupMode>,
    due: AtomicBool,
}

impl std::fmt::Debug for VerificationProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationProbe")
            .field("held", &self.held)
            .field("batch", &self.batch)
            .field("due", &self.due.load(Ordering::Relaxed))
            .finish()
    }
}

impl VerificationProbe {
    /// A probe over `held`, not yet due.
    pub fn new(held: Arc<HeldOut>, batch: usize, mode: Option<GroupMode>) -> Self {
        Self { held, batch: batch.max(1), mode, due: AtomicBool::new(false) }
    }

    /// Marks the measurement due (at the start of each training epoch).
    pub fn arm(&self) {
        self.due.store(true, Ordering::SeqCst);
    }

    /// Whether the measurement is due; true once per [`VerificationProbe::arm`].
    pub fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::SeqCst)
    }

    /// Accuracy (fraction) of `model` on the held-out pairs; `None` if the protocol cannot be
    /// computed (embeddings that are not finite).
    pub fn accuracy<B: ConvBackend>(
        &self,
        model: &GroupFace<B>,
        device: &B::Device,
    ) -> Option<f64> {
        let embeddings = self.held.embed(model, self.batch, self.mode, device);
        plain_verification(&embeddings, &self.held.pairs).ok().map(|r| r.accuracy)
    }
}

/// 10-fold verification pairs over `identities × images` held-out images, in LFW's layout:
/// each fold holds `pairs / 20` positive pairs, then as many negative pairs. Returns
/// `(row_a, row_b, same)` with rows indexing the identity-major image list.
pub fn verification_pairs(
    identities: usize,
    images: usize,
    pairs: usize,
    seed: u64,
) -> Vec<(usize, usize, bool)> {
    let mut rng = SplitMix64::new(hash3(seed, 0x7A1E5, (identities * images) as u64));
    let per_fold = pairs / 20;
    let mut out = Vec::with_capacity(pairs);
    for _fold in 0..10 {
        for _ in 0..per_fold {
            let id = rng.below(identities);
            let a = rng.below(images);
            let mut b = rng.below(images - 1);
            if b >= a {
                b += 1;
            }
            out.push((id * images + a, id * images + b, true));
        }
        for _ in 0..per_fold {
            let id_a = rng.below(identities);
            let mut id_b = rng.below(identities - 1);
            if id_b >= id_a {
                id_b += 1;
            }
            out.push((id_a * images + rng.below(images), id_b * images + rng.below(images), false));
        }
    }
    out
}

/// Scores of every pair `i < j` of `rows` images, row-major over the upper triangle, with
/// `same[i] == same[j]` marking the positives. Computed in blocks of rows on the backend.
fn all_pair_scores<B: Backend>(
    embeddings: &Embeddings,
    group_aware: Option<GroupAwareParams>,
    device: &B::Device,
) -> Vec<f32> {
    let n = embeddings.rows();
    let normalized = embeddings.embedding.normalized();
    let all = to_tensor::<B>(&normalized, device);
    let features = embeddings.feature.as_ref().map(|f| to_tensor::<B>(f, device));
    let mut scores = Vec::with_capacity(n * (n.saturating_sub(1)) / 2);
    let block = 256;
    let mut start = 0;
    while start < n {
        let end = (start + block).min(n);
        let rows = all.clone().slice(start..end);
        let block_scores = match (group_aware, &features) {
            (Some(params), Some(features)) => crate::evaluate::similarity::group_aware_matrix(
                rows,
                features.clone().slice(start..end),
                all.clone(),
                features.clone(),
                params,
            ),
            _ => rows.matmul(all.clone().transpose()),
        };
        let values = block_scores.into_data().convert::<f32>();
        let values = values.as_slice::<f32>().expect("f32 scores");
        for i in start..end {
            let row = &values[(i - start) * n..(i - start + 1) * n];
            scores.extend_from_slice(&row[i + 1..]);
        }
        start = end;
    }
    scores
}

/// Scores of listed pairs, on the host (the protocol's few thousand pairs).
fn pair_scores(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
    group_aware: Option<GroupAwareParams>,
) -> Vec<f64> {
    let scorer = PairScorer::new(embeddings, group_aware);
    pairs.iter().map(|&(a, b, _)| scorer.score(a, b)).collect()
}

/// Scores pairs of rows on the host, one pair at a time from the rows normalised once, so that
/// no pair list nor copy of a pair's rows is needed.
pub(crate) struct PairScorer<'a> {
    normalized: Matrix,
    /// v̂ and the penalty's parameters, for group-aware similarity of a GroupFace model.
    group_aware: Option<(&'a Matrix, GroupAwareParams)>,
}

impl<'a> PairScorer<'a> {
    pub(crate) fn new(embeddings: &'a Embeddings, group_aware: Option<GroupAwareParams>) -> Self {
        let group_aware = match (group_aware, &embeddings.feature) {
            (Some(params), Some(feature)) => Some((feature, params)),
            // Asked for without v̂ (a baseline): the plain cosine, as it always was.
            _ => None,
        };
        Self { normalized: embeddings.embedding.normalized(), group_aware }
    }

    /// Cosine of the rows normalised in `f32`, summed in `f64`; minus β‖v̂_a − v̂_b‖^γ when
    /// group-aware.
    pub(crate) fn score(&self, a: usize, b: usize) -> f64 {
        let cos = unit_cosine(self.normalized.row(a), self.normalized.row(b));
        match self.group_aware {
            Some((f, p)) => group_aware_score(cos, f.row(a), f.row(b), p.beta, p.gamma),
            None => cos,
        }
    }
}

/// The report of one similarity: the 10-fold protocol on `pairs` and TAR@FAR over all pairs.
fn similarity_report<B: Backend>(
    embeddings: &Embeddings,
    labels: &[usize],
    pairs: &[(usize, usize, bool)],
    group_aware: Option<GroupAwareParams>,
    settings: BTreeMap<String, String>,
    device: &B::Device,
) -> Result<Report, String> {
    let verification = match group_aware {
        // insightface's protocol thresholds the squared L2 distance of unit vectors, which is
        // 2 − 2·cos; the group-aware score takes cos's place in the same identity.
        Some(_) => {
            let issame: Vec<bool> = pairs.iter().map(|p| p.2).collect();
            let distances: Vec<f64> = pair_scores(embeddings, pairs, group_aware)
                .into_iter()
                .map(|s| 2.0 - 2.0 * s)
                .collect();
            verification::evaluate_distances(&distances, &issame).map_err(|e| e.to_string())?
        }
        None => plain_verification(embeddings, pairs)?,
    };
    let scores = all_pair_scores::<B>(embeddings, group_aware, device);
    let n = labels.len();
    let mut positive = Vec::with_capacity(scores.len());
    for i in 0..n {
        for j in i + 1..n {
            positive.push(labels[i] == labels[j]);
        }
    }
    let roc = Roc::from_scores(&scores, &positive).map_err(|e| e.to_string())?;
    Ok(Report::new(verification, &roc, None, settings).with_xnorm(embeddings.xnorm()))
}

/// Evaluates `model` on held-out identities of the generator `data` (see [`HeldOut::synthetic`]
/// and [`evaluate_held_out`]).
pub fn evaluate_synthetic<B: ConvBackend>(
    model: &GroupFace<B>,
    data: &SynthConfig,
    config: &SynthEvalConfig,
    batch: usize,
    device: &B::Device,
    pictures: Option<&Path>,
) -> Result<RunReport, String> {
    let held = HeldOut::synthetic(data, config)?;
    evaluate_held_out(model, &held, batch, config.mode, device, pictures)
}

/// Evaluates `model` on held-out identities.
///
/// Embeddings are `f(img) + f(flip(img))`; the verification protocol is insightface's on the
/// held-out pairs; TAR@FAR runs over every pair of held-out images; rank-1 takes image 0 of
/// each identity as the gallery, the others as probes, against the distractors.
///
/// With `pictures`, GroupFace models also get the group analysis pictures written there:
/// `group_shares.svg` (Fig. 5), `group_samples.png` (Fig. 6: a row of the most confident
/// held-out faces per group) and `projection.svg` (Fig. 4: PCA of the embeddings of ten
/// identities, coloured by identity, marked by group). Agreement of the groups with hidden
/// attributes is measured for synthetic faces only.
pub fn evaluate_held_out<B: ConvBackend>(
    model: &GroupFace<B>,
    held: &HeldOut,
    batch: usize,
    mode: Option<GroupMode>,
    device: &B::Device,
    pictures: Option<&Path>,
) -> Result<RunReport, String> {
    let labels = &held.labels;
    let embeddings = held.embed(model, batch, mode, device);
    let rank1 = held_out_rank1(model, held, &embeddings, batch, mode, device)?;
    let mut settings = held.settings.clone();
    settings.insert("similarity".into(), "plain".into());
    let mut plain =
        similarity_report::<B>(&embeddings, labels, &held.pairs, None, settings.clone(), device)?;
    plain.rank1 = Some(rank1.accuracy());
    plain.rank1_curve = rank1.curve.clone();
    let (group_aware, groups) = match &embeddings.feature {
        None => (None, None),
        Some(_) => {
            settings.insert("similarity".into(), "group-aware".into());
            let report = similarity_report::<B>(
                &embeddings,
                labels,
                &held.pairs,
                Some(GroupAwareParams::default()),
                settings,
                device,
            )?;
            let assignment = embeddings.groups();
            let k = model.groups();
            let usage = group_stats::GroupUsage::from_assignments(&assignment, k)
                .map_err(|e| e.to_string())?;
            let nmi = match &held.attributes {
                Some(attributes) => {
                    group_stats::attribute_agreement(&assignment, attributes, &ATTRIBUTE_NAMES)
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(|a| {
                            let value = AttributeNmi { nmi: a.nmi, chance_nmi: a.chance_nmi };
                            (a.attribute.clone(), value)
                        })
                        .collect()
                }
                None => BTreeMap::new(),
            };
            if let Some(dir) = pictures {
                write_group_pictures(
                    dir,
                    &embeddings,
                    &held.images,
                    labels,
                    &usage.shares,
                    held.side,
                )?;
            }
            let shares = usage.shares.clone();
            let largest_share = shares.iter().cloned().fold(0.0, f64::max);
            let entropy_bits = usage.entropy / std::f64::consts::LN_2;
            (Some(report), Some(GroupReport { shares, largest_share, entropy_bits, nmi }))
        }
    };
    Ok(RunReport { plain, group_aware, groups })
}

/// The paper's Fig. 5 as bars: the share of held-out images whose most probable group is k,
/// against the uniform share 1/K, which a collapse leaves far behind.
fn group_shares_chart(shares: &[f64]) -> crate::protocol::plot::BarChart {
    use crate::protocol::plot::{Axis, BarChart};
    let k = shares.len().max(1);
    let mut chart = BarChart::new(
        "Share of held-out images per group (most probable group)",
        "group",
        Axis::linear("share of images"),
        "share",
    )
    .with_reference("uniform 1/K", 1.0 / k as f64);
    for (i, &share) in shares.iter().enumerate() {
        chart.push(i.to_string(), share);
    }
    chart
}

/// Writes the paper's Fig. 4, 5 and 6 for held-out images (see [`evaluate_synthetic`]).
fn write_group_pictures(
    dir: &Path,
    embeddings: &Embeddings,
    images: &[Vec<u8>],
    labels: &[usize],
    shares: &[f64],
    side: usize,
) -> Result<(), String> {
    use crate::analysis::groups as g;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let assignment = embeddings.groups();
    let k = shares.len();
    let chart = group_shares_chart(shares);
    crate::util::fs::write_atomically(&dir.join("group_shares.svg"), chart.to_svg().as_bytes())?;

    let confidence: Vec<f32> = match &embeddings.probs {
        Some(p) => (0..p.rows).map(|i| p.row(i)[assignment[i]]).collect(),
        None => return Ok(()),
    };
    let picked =
        g::samples_per_group(&assignment, k, 8, Some(&confidence)).map_err(|e| e.to_string())?;
    let rows: Vec<Vec<image::RgbImage>> = picked
        .iter()
        .map(|row| {
            row.iter()
                .filter_map(|&i| {
                    image::RgbImage::from_raw(side as u32, side as u32, images[i].clone())
                })
                .collect()
        })
        .collect();
    if rows.iter().any(|r| !r.is_empty()) {
        let grid = g::image_grid(&rows, 8).map_err(|e| e.to_string())?;
        crate::util::fs::write_atomic_with(&dir.join("group_samples.png"), |tmp| {
            g::write_png(&grid, tmp).map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(|e| format!("cannot write {e}"))?;
    }

    let chosen: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] < 10).collect();
    let normalized = embeddings.embedding.normalized();
    let rows: Vec<&[f32]> = chosen.iter().map(|&i| normalized.row(i)).collect();
    let features = Matrix::from_rows(&rows, "normalised embeddings of 10 held-out identities")
        .map_err(|e| e.to_string())?;
    let projection = g::pca_2d(&features).map_err(|e| e.to_string())?;
    let svg = g::scatter_svg(
        &projection.points,
        &chosen.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
        &chosen.iter().map(|&i| assignment[i]).collect::<Vec<_>>(),
        "Embeddings of 10 held-out identities (PCA; colour = identity, marker = group)",
    )
    .map_err(|e| e.to_string())?;
    crate::util::fs::write_atomically(&dir.join("projection.svg"), svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_are_bars_against_the_uniform_share() {
        let chart = group_shares_chart(&[0.75, 0.25, 0.0, 0.0]);
        let labels: Vec<&str> = chart.bars.iter().map(|b| b.0.as_str()).collect();
        assert_eq!(labels, ["0", "1", "2", "3"]);
        assert_eq!(chart.bars[0].1, 0.75);
        assert_eq!(chart.reference, Some(("uniform 1/K".to_string(), 0.25)));
        let svg = chart.to_svg();
        // The fitted axis runs 0 .. 0.75 * 1.04 = 0.78 over the 384 px high plot area, so the
        // dashed 1/K line sits at 40 + (1 - 0.25 / 0.78) * 384 = 300.923... px.
        assert!(svg.contains(r#"y1="300.92""#) && svg.contains("stroke-dasharray"), "{svg}");
        assert!(!svg.contains("<path"), "no line series left");
    }
}
