//! Evaluation of a trained model on held-out synthetic identities: the verification protocol,
//! TAR@FAR over all pairs, both with plain and with group-aware similarity, and what the
//! groups learned (their shares and their agreement with the generator's hidden attributes).
//!
//! Held-out identities are the generator's identities `identities..identities + n` of the same
//! seed: never trained on, drawn from the same distribution (look-alikes included).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::groups as group_stats;
use crate::conv::{ConvBackend, TrainBackend};
use crate::data::rng::{hash3, SplitMix64};
use crate::data::source::{FaceSource, SourceSplit};
use crate::data::synth::{SynthConfig, SynthFaces, ATTRIBUTE_NAMES};
use crate::embed::{embed_pixels, Embeddings, HostMatrix};
use crate::error::ConfigError;
use crate::eval::report::Report;
use crate::eval::roc::Roc;
use crate::eval::verification;
use crate::model::{GroupFace, GroupMode};
use crate::similarity::GroupAwareParams;

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
) -> Result<crate::eval::identification::Rank1Result, String> {
    use crate::eval::Matrix;
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
    let result = crate::identify::rank1_on::<B, _>(
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
fn plain_verification(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
) -> Result<verification::VerificationResult, String> {
    let raw = &embeddings.embedding;
    let take = |pick: fn(&(usize, usize, bool)) -> usize| {
        let mut m = HostMatrix::empty(raw.cols);
        for p in pairs {
            m.data.extend_from_slice(raw.row(pick(p)));
            m.rows += 1;
        }
        m
    };
    let a = take(|p| p.0);
    let b = take(|p| p.1);
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
    let all = normalized.to_tensor::<B>(device);
    let features = embeddings.feature.as_ref().map(|f| f.to_tensor::<B>(device));
    let mut scores = Vec::with_capacity(n * (n.saturating_sub(1)) / 2);
    let block = 256;
    let mut start = 0;
    while start < n {
        let end = (start + block).min(n);
        let rows = all.clone().slice(start..end);
        let block_scores = match (group_aware, &features) {
            (Some(params), Some(features)) => crate::similarity::group_aware_matrix(
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
struct PairScorer<'a> {
    normalized: HostMatrix,
    /// v̂ and the penalty's parameters, for group-aware similarity of a GroupFace model.
    group_aware: Option<(&'a HostMatrix, GroupAwareParams)>,
}

impl<'a> PairScorer<'a> {
    fn new(embeddings: &'a Embeddings, group_aware: Option<GroupAwareParams>) -> Self {
        let group_aware = match (group_aware, &embeddings.feature) {
            (Some(params), Some(feature)) => Some((feature, params)),
            // Asked for without v̂ (a baseline): the plain cosine, as it always was.
            _ => None,
        };
        Self { normalized: embeddings.embedding.normalized(), group_aware }
    }

    /// Cosine of the rows normalised in `f32`, summed in `f64`; minus β‖v̂_a − v̂_b‖^γ when
    /// group-aware.
    fn score(&self, a: usize, b: usize) -> f64 {
        let normalized = &self.normalized;
        let cos: f64 = normalized
            .row(a)
            .iter()
            .zip(normalized.row(b))
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum();
        match self.group_aware {
            Some((f, p)) => {
                let d: f64 = f
                    .row(a)
                    .iter()
                    .zip(f.row(b))
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                cos - p.beta * d.powf(p.gamma)
            }
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
    Ok(Report::new(verification, &roc, None, settings))
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

/// Writes the paper's Fig. 4, 5 and 6 for held-out images (see [`evaluate_synthetic`]).
fn write_group_pictures(
    dir: &Path,
    embeddings: &Embeddings,
    images: &[Vec<u8>],
    labels: &[usize],
    shares: &[f64],
    side: usize,
) -> Result<(), String> {
    use crate::analysis::{groups as g, FeatureMatrix};
    use crate::plot::{Axis, LinePlot, Series};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let assignment = embeddings.groups();
    let k = shares.len();

    let mut plot = LinePlot::new(
        "Share of held-out images per group (most probable group)",
        Axis::linear("group"),
        Axis::linear("share of images"),
    );
    plot.add(Series::new(
        "share",
        shares.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect(),
    ));
    plot.add(Series::new(
        "uniform 1/K",
        vec![(0.0, 1.0 / k as f64), ((k - 1) as f64, 1.0 / k as f64)],
    ));
    crate::train::write_atomically(&dir.join("group_shares.svg"), plot.to_svg().as_bytes())?;

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
    let features = FeatureMatrix::from_rows(&rows).map_err(|e| e.to_string())?;
    let projection = g::pca_2d(&features).map_err(|e| e.to_string())?;
    let svg = g::scatter_svg(
        &projection.points,
        &chosen.iter().map(|&i| labels[i]).collect::<Vec<_>>(),
        &chosen.iter().map(|&i| assignment[i]).collect::<Vec<_>>(),
        "Embeddings of 10 held-out identities (PCA; colour = identity, marker = group)",
    )
    .map_err(|e| e.to_string())?;
    crate::train::write_atomically(&dir.join("projection.svg"), svg.as_bytes())
}

/// What `eval model=RUN_DIR` evaluates on.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalData {
    /// The run's held-out synthetic identities (its `eval` settings).
    Synthetic,
    /// An image folder (one subfolder per identity). Pairs from `pairs` (rows index the
    /// folder's images in sorted path order), else every pair.
    Folder {
        /// The folder.
        root: PathBuf,
        /// A pairs file, `row_a row_b 1|0` per line.
        pairs: Option<PathBuf>,
    },
    /// An insightface verification `.bin` (pair i = images 2i and 2i+1).
    Bin(PathBuf),
    /// IJB-B or IJB-C 1:1 verification from `<root>/meta` and `<root>/loose_crop`.
    Ijb {
        /// The IJB root folder.
        root: PathBuf,
        /// Which benchmark.
        which: crate::analysis::ijb::Ijb,
    },
}

/// Evaluation of a finished run directory on one data source.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The run directory (`config.json`, `model.mpk`), or with `checkpoint` a PyTorch or
    /// safetensors checkpoint file.
    pub run: PathBuf,
    /// The architecture of `run` when it is a checkpoint file (insightface's IResNet state
    /// dicts carry none), loaded by [`crate::interop::load_into`].
    pub checkpoint: Option<crate::model::GroupFaceConfig>,
    /// What to evaluate on.
    pub data: EvalData,
    /// Hard inference of a soft-trained model.
    pub mode: Option<GroupMode>,
    /// Images per forward pass.
    pub batch: usize,
    /// Where the group analysis pictures go (synthetic data only).
    pub pictures: Option<PathBuf>,
    /// Folds of the verification protocol on listed pairs and IJB (insightface: 10; 1 picks
    /// and tests the threshold on all pairs). `data=synthetic` keeps the run's 10.
    pub folds: usize,
}

/// The configuration and trained model of a finished run directory.
pub fn load_run<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(crate::train::TrainConfig, GroupFace<B>), String> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(format!("{}: not a run directory (no config.json)", dir.display()));
    }
    let config = crate::train::read_config(&config_path)?;
    let model_path = dir.join("model.mpk");
    if !model_path.exists() {
        return Err(format!(
            "{}: the run has no model.mpk (unfinished, or trained elsewhere)",
            dir.display()
        ));
    }
    let model = crate::training::TrainModel::<B>::new(
        &config.model,
        &config.criterion,
        config.labels,
        config.label_window,
        device,
    )
    .load_file(dir.join("model"), &crate::train::RunRecorder::new(), device)
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
) -> Result<(Option<crate::train::TrainConfig>, crate::model::GroupFaceConfig, GroupFace<B>), String>
{
    match checkpoint {
        None => {
            let (config, model) = load_run::<B>(run, device)?;
            let architecture = config.model.clone();
            Ok((Some(config), architecture, model))
        }
        Some(architecture) => {
            architecture.validate().map_err(|e| e.to_string())?;
            let fresh = architecture.init::<B>(device);
            let (model, report) =
                crate::interop::load_into(fresh, architecture, run).map_err(|e| e.to_string())?;
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

/// `embed`: the embeddings of every image of a folder, for other tools.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// A run directory, or with `checkpoint` a checkpoint file.
    pub run: PathBuf,
    /// The architecture of a checkpoint file.
    pub checkpoint: Option<crate::model::GroupFaceConfig>,
    /// An image folder, one subfolder per identity.
    pub folder: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Images per forward pass (also how many are decoded at a time).
    pub batch: usize,
    /// Hard inference of a soft-trained model.
    pub mode: Option<GroupMode>,
}

/// What [`EmbedJob`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedSummary {
    /// Images embedded (rows of every file).
    pub images: usize,
    /// Width of `embeddings.npy`.
    pub width: usize,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl crate::backend::BackendJob for EmbedJob {
    type Output = Result<EmbedSummary, String>;

    /// Writes into `out`:
    /// - `embeddings.npy`: float32 `[N, D]`, v̄(x) + v̄(flip x), not normalised: the embedding
    ///   insightface's verification protocol scores (normalise rows for cosine similarity);
    /// - `features.npy`: float32 `[N, F]`, v̂, the mean over both views (GroupFace only; for
    ///   group-aware similarity);
    /// - `probs.npy`: float32 `[N, K]`, p(G|x), the mean over both views (GroupFace only);
    /// - `labels.txt`: the identity index of each row, so `eval embeddings= labels=` works;
    /// - `paths.txt`: the image path and identity folder of each row, tab-separated.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        use crate::eval::{npy, Matrix};
        let (_, architecture, model) =
            load_model::<B::InnerBackend>(&self.run, self.checkpoint.as_ref(), &device)?;
        let side = architecture.backbone.input_side;
        let folder =
            crate::data::folder::ImageFolder::open(&self.folder).map_err(|e| e.to_string())?;
        let mut all = Embeddings::default();
        let mut labels = String::new();
        let mut paths = String::new();
        let batch = self.batch.max(1);
        for start in (0..folder.len()).step_by(batch) {
            let end = (start + batch).min(folder.len());
            let mut images = Vec::with_capacity(end - start);
            for i in start..end {
                let (image, label) = folder.load(i, side as u32).map_err(|e| e.to_string())?;
                images.push(image.into_raw());
                labels.push_str(&format!("{label}\n"));
                let path = folder.path(i).map(|p| p.display().to_string()).unwrap_or_default();
                paths.push_str(&format!("{path}\t{label}\n"));
            }
            let part = embed_pixels(
                &model,
                images.iter().map(|v| v.as_slice()),
                side,
                batch,
                self.mode,
                &device,
            );
            all.append(part);
        }
        std::fs::create_dir_all(&self.out)
            .map_err(|e| format!("cannot create {}: {e}", self.out.display()))?;
        let mut files = Vec::new();
        let mut write = |name: &str, m: &HostMatrix| -> Result<(), String> {
            let path = self.out.join(name);
            let matrix = Matrix::new(m.rows, m.cols, m.data.clone()).map_err(|e| e.to_string())?;
            npy::write_matrix_f32(&path, &matrix).map_err(|e| e.to_string())?;
            files.push(path);
            Ok(())
        };
        write("embeddings.npy", &all.embedding)?;
        if let Some(feature) = &all.feature {
            write("features.npy", feature)?;
        }
        if let Some(probs) = &all.probs {
            write("probs.npy", probs)?;
        }
        for (name, text) in [("labels.txt", &labels), ("paths.txt", &paths)] {
            let path = self.out.join(name);
            crate::train::write_atomically(&path, text.as_bytes())?;
            files.push(path);
        }
        Ok(EmbedSummary { images: all.embedding.rows, width: all.embedding.cols, files })
    }
}

/// A report over listed pairs (folders, `.bin` files, precomputed embeddings): the k-fold
/// protocol (insightface: `folds = 10`) and the ROC both run over the same pairs.
pub fn pairs_report(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
) -> Result<Report, String> {
    let rows = embeddings.rows();
    if let Some((k, &(a, b, _))) = pairs.iter().enumerate().find(|(_, p)| p.0.max(p.1) >= rows) {
        return Err(format!(
            "pair {k} ({a}, {b}): expected row indices below {rows}, the rows of the embeddings"
        ));
    }
    report_over(embeddings, || pairs.iter().copied(), group_aware, folds, settings)
}

/// [`pairs_report`] over every pair `i < j` of rows, positive where `labels` agree, in the order
/// of [`crate::eval::pairs::all_pairs`] but never listed (`eval embeddings= labels=`, and
/// `eval data=FOLDER` without `pairs=`). Beyond its inputs it holds at most 13 bytes per pair
/// and 12 per embedding value: 10,000 rows of width 512 make 5·10⁷ pairs, 716 MB.
pub fn all_pairs_report<L: PartialEq>(
    embeddings: &Embeddings,
    labels: &[L],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
) -> Result<Report, String> {
    crate::eval::pairs::check_labels(labels, "labels", embeddings.rows(), "embeddings")
        .map_err(|e| e.to_string())?;
    let pairs = || crate::eval::pairs::all_pairs_iter(labels);
    report_over(embeddings, pairs, group_aware, folds, settings)
}

/// The protocol, then the ROC, over the pairs that `pairs()` yields afresh for each pass, with
/// valid row indices. Per pair it holds the labels (1 byte) and, one pass at a time, the
/// protocol's `f64` distances (8 bytes) or the ROC's `f32` scores and sort keys (12 bytes).
fn report_over<I: Iterator<Item = (usize, usize, bool)>>(
    embeddings: &Embeddings,
    pairs: impl Fn() -> I,
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
) -> Result<Report, String> {
    check_shapes(embeddings, group_aware)?;
    let issame: Vec<bool> = pairs().map(|p| p.2).collect();
    let options = verification::Options { folds, ..Default::default() };
    let scorer = PairScorer::new(embeddings, group_aware);
    let distances: Vec<f64> = match group_aware {
        // insightface's protocol thresholds the squared L2 distance of unit vectors, which is
        // 2 − 2·cos; the group-aware score takes cos's place in the same identity.
        Some(_) => pairs().map(|(a, b, _)| 2.0 - 2.0 * scorer.score(a, b)).collect(),
        // The raw flip-sum: the protocol normalises in f64, as insightface's numpy code does.
        None => {
            let raw = &embeddings.embedding;
            let matrix = crate::eval::Matrix::new(raw.rows, raw.cols, raw.data.clone())
                .map_err(|e| e.to_string())?
                .with_origin("the embeddings");
            verification::pair_distances(&matrix, pairs(), true).map_err(|e| e.to_string())?
        }
    };
    let verification = verification::evaluate_distances_with(&distances, &issame, &options)
        .map_err(|e| e.to_string())?;
    // The distances go before the scores and the ROC's sort buffers come.
    drop(distances);
    let scores: Vec<f32> = pairs().map(|(a, b, _)| scorer.score(a, b) as f32).collect();
    let roc = Roc::from_scores(&scores, &issame).map_err(|e| e.to_string())?;
    Ok(Report::new(verification, &roc, None, settings))
}

/// Fails where a row of the embeddings (or of v̂, for group-aware similarity) would be out of
/// its matrix: the fields are public, so a caller can build an inconsistent one.
fn check_shapes(
    embeddings: &Embeddings,
    group_aware: Option<GroupAwareParams>,
) -> Result<(), String> {
    let consistent = |m: &HostMatrix| m.rows.checked_mul(m.cols) == Some(m.data.len());
    let rows = embeddings.rows();
    if !consistent(&embeddings.embedding) {
        return Err(format!(
            "the embeddings: expected rows x cols = {rows} x {} values, found {}",
            embeddings.embedding.cols,
            embeddings.embedding.data.len()
        ));
    }
    match (group_aware, &embeddings.feature) {
        (Some(_), Some(f)) if f.rows != rows || !consistent(f) => Err(format!(
            "v̂ of group-aware similarity: expected {rows} rows like the embeddings, found {} x \
             {} with {} values",
            f.rows,
            f.cols,
            f.data.len()
        )),
        _ => Ok(()),
    }
}

/// The pairs of a report on a folder or a `.bin`: listed, or every pair of labelled rows.
enum PairSet {
    Listed(Vec<(usize, usize, bool)>),
    /// The identity of each row; never expanded into a list (10,000 images: 5·10⁷ pairs).
    All(Vec<usize>),
}

impl PairSet {
    fn report(
        &self,
        embeddings: &Embeddings,
        group_aware: Option<GroupAwareParams>,
        folds: usize,
        settings: BTreeMap<String, String>,
    ) -> Result<Report, String> {
        match self {
            Self::Listed(list) => pairs_report(embeddings, list, group_aware, folds, settings),
            Self::All(labels) => all_pairs_report(embeddings, labels, group_aware, folds, settings),
        }
    }
}

impl crate::backend::BackendJob for EvalJob {
    type Output = Result<RunReport, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        let model = self.run.display().to_string();
        // Inference runs on the inner backend so BatchNorm uses its running statistics.
        let mut report = self.report::<B::InnerBackend>(device)?;
        // The report says which model it measured (its title names it too).
        for r in std::iter::once(&mut report.plain).chain(report.group_aware.as_mut()) {
            r.settings.insert("model".into(), model.clone());
        }
        Ok(report)
    }
}

impl EvalJob {
    fn report<B: ConvBackend>(self, device: B::Device) -> Result<RunReport, String> {
        let (config, architecture, model) =
            load_model::<B>(&self.run, self.checkpoint.as_ref(), &device)?;
        let side = architecture.backbone.input_side;
        let (embeddings, pairs, source) = match &self.data {
            EvalData::Synthetic => {
                let Some(config) = &config else {
                    return Err(format!(
                        "data=synthetic evaluates a run's held-out identities, and {} is a \
                         checkpoint, not a run: give data=FOLDER, FILE.bin or ijbb:/ijbc:ROOT",
                        self.run.display()
                    ));
                };
                if self.folds != verification::Options::default().folds {
                    return Err(format!(
                        "folds={} applies to listed pairs (a folder, a .bin, embeddings) and \
                         IJB; data=synthetic evaluates a run's held-out identities with \
                         insightface's 10 folds, as training did",
                        self.folds
                    ));
                }
                let held = crate::train::held_out(config)?;
                return evaluate_held_out(
                    &model,
                    &held,
                    self.batch,
                    self.mode.or(config.eval.mode),
                    &device,
                    self.pictures.as_deref(),
                );
            }
            EvalData::Folder { root, pairs } => {
                let folder =
                    crate::data::folder::ImageFolder::open(root).map_err(|e| e.to_string())?;
                let mut images = Vec::with_capacity(folder.len());
                for i in 0..folder.len() {
                    let (image, _) = folder.load(i, side as u32).map_err(|e| e.to_string())?;
                    images.push(image.into_raw());
                }
                let embeddings = embed_pixels(
                    &model,
                    images.iter().map(|v| v.as_slice()),
                    side,
                    self.batch,
                    self.mode,
                    &device,
                );
                let set = match pairs {
                    Some(file) => PairSet::Listed(
                        crate::eval::pairs::read_pairs(file, folder.len())
                            .map_err(|e| e.to_string())?,
                    ),
                    None => PairSet::All(folder.items().iter().map(|(_, label)| *label).collect()),
                };
                (embeddings, set, root.display().to_string())
            }
            EvalData::Ijb { root, which } => {
                let job =
                    IjbJob { root, which: *which, side, batch: self.batch, folds: self.folds };
                return evaluate_ijb(&model, &job, self.mode, &device);
            }
            EvalData::Bin(path) => {
                let set = crate::data::verification_bin::VerificationSet::read(path)
                    .map_err(|e| e.to_string())?;
                let mut images = Vec::with_capacity(2 * set.len());
                for i in 0..2 * set.len() {
                    let image = set.decode(i, Some(side as u32)).map_err(|e| e.to_string())?;
                    images.push(image.into_raw());
                }
                let embeddings = embed_pixels(
                    &model,
                    images.iter().map(|v| v.as_slice()),
                    side,
                    self.batch,
                    self.mode,
                    &device,
                );
                let list = (0..set.len())
                    .map(|i| (2 * i, 2 * i + 1, set.pair(i).map(|p| p.2).unwrap_or(false)))
                    .collect();
                (embeddings, PairSet::Listed(list), path.display().to_string())
            }
        };
        let mut settings = BTreeMap::new();
        settings.insert("protocol".into(), "listed pairs".into());
        settings.insert("data".into(), source);
        settings.insert("similarity".into(), "plain".into());
        let plain = pairs.report(&embeddings, None, self.folds, settings.clone())?;
        let group_aware = match embeddings.feature {
            Some(_) => {
                settings.insert("similarity".into(), "group-aware".into());
                let params = Some(GroupAwareParams::default());
                Some(pairs.report(&embeddings, params, self.folds, settings)?)
            }
            None => None,
        };
        Ok(RunReport { plain, group_aware, groups: None })
    }
}

/// What [`evaluate_ijb`] reads and how it runs the protocol.
#[derive(Debug, Clone, Copy)]
pub struct IjbJob<'a> {
    /// The IJB root folder (`meta/`, `loose_crop/`).
    pub root: &'a Path,
    /// IJB-B or IJB-C.
    pub which: crate::analysis::ijb::Ijb,
    /// Input side of the model.
    pub side: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Folds of the verification protocol over the template pairs (insightface: 10).
    pub folds: usize,
}

/// IJB-B / IJB-C 1:1 (insightface's `eval_ijbc.py` defaults): every image aligned by its five
/// landmarks, `f(img) + f(flip(img))` weighted by the detector score, averaged per media,
/// summed per template, normalised; template pairs scored by cosine (and, for GroupFace, by
/// group-aware similarity on media- then template-averaged v̂). TAR@FAR from the ROC of the
/// template pairs; the k-fold protocol over the same pairs is reported alongside.
pub fn evaluate_ijb<B: ConvBackend>(
    model: &GroupFace<B>,
    job: &IjbJob<'_>,
    mode: Option<GroupMode>,
    device: &B::Device,
) -> Result<RunReport, String> {
    use crate::analysis::ijb::{group_aware_template_scores, template_scores, IjbMeta};
    use crate::analysis::FeatureMatrix;
    let &IjbJob { root, which, side, batch, folds } = job;
    let options = verification::Options { folds, ..Default::default() };
    let meta = IjbMeta::load(root, which).map_err(|e| e.to_string())?;
    // Aligned crops are made a chunk at a time so memory stays bounded on IJB-C's 470k images.
    let chunk = (batch * 16).max(1);
    let mut features: Option<FeatureMatrix> = None;
    let mut gdn: Option<FeatureMatrix> = None;
    let mut start = 0;
    while start < meta.len() {
        let end = (start + chunk).min(meta.len());
        let crops = meta.aligned_range(start..end, side as u32).map_err(|e| e.to_string())?;
        let e = embed_pixels(
            model,
            crops.iter().map(|c| c.as_raw().as_slice()),
            side,
            batch,
            mode,
            device,
        );
        let append = |target: &mut Option<FeatureMatrix>, m: &HostMatrix| -> Result<(), String> {
            match target {
                Some(t) => t.extend_flat(&m.data).map_err(|e| e.to_string()),
                None => {
                    *target = Some(
                        FeatureMatrix::from_flat(m.data.clone(), m.cols)
                            .map_err(|e| e.to_string())?,
                    );
                    Ok(())
                }
            }
        };
        append(&mut features, &e.embedding)?;
        if let Some(f) = &e.feature {
            append(&mut gdn, f)?;
        }
        start = end;
    }
    let features = features.ok_or_else(|| format!("{}: no image listed", root.display()))?;
    let labels = meta.labels();
    let mut settings = BTreeMap::new();
    settings.insert("protocol".into(), format!("{which} 1:1"));
    settings.insert("data".into(), root.display().to_string());
    settings.insert("similarity".into(), "plain".into());
    let report_of =
        |scores: Vec<f32>, settings: BTreeMap<String, String>| -> Result<Report, String> {
            let distances: Vec<f64> = scores.iter().map(|&s| 2.0 - 2.0 * s as f64).collect();
            let verification = verification::evaluate_distances_with(&distances, &labels, &options)
                .map_err(|e| e.to_string())?;
            let roc = Roc::from_scores(&scores, &labels).map_err(|e| e.to_string())?;
            Ok(Report::new(verification, &roc, None, settings))
        };
    let scores = template_scores(&meta, &features, true).map_err(|e| e.to_string())?;
    let plain = report_of(scores, settings.clone())?;
    let group_aware = match &gdn {
        Some(gdn) => {
            let params = GroupAwareParams::default();
            let scores =
                group_aware_template_scores(&meta, &features, gdn, true, params.beta, params.gamma)
                    .map_err(|e| e.to_string())?;
            settings.insert("similarity".into(), "group-aware".into());
            Some(report_of(scores, settings)?)
        }
        None => None,
    };
    Ok(RunReport { plain, group_aware, groups: None })
}

/// Runs an [`EvalJob`] on backend `kind`; not generic, so binaries share one compiled copy.
pub fn evaluate_run(
    kind: crate::backend::BackendKind,
    index: usize,
    job: EvalJob,
) -> Result<RunReport, String> {
    crate::backend::run(kind, index, job)?
}
