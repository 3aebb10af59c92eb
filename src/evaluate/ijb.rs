//! IJB-B / IJB-C 1:1 verification of a model: aligned crops embedded a batch at a time,
//! pooled into templates and scored (plain and group-aware).

use std::collections::BTreeMap;
use std::path::Path;

use crate::backend::conv::ConvBackend;
use crate::evaluate::embed::{embed_stream, EmbedOptions};
use crate::evaluate::held_out::RunReport;
use crate::evaluate::similarity::GroupAwareParams;
use crate::model::{GroupFace, GroupMode};
use crate::protocol::report::Report;
use crate::protocol::roc::Roc;
use crate::protocol::verification;
use crate::protocol::Matrix;
use crate::util::progress::Progress;

/// What [`evaluate_ijb`] reads and how it runs the protocol.
#[derive(Debug, Clone, Copy)]
pub struct IjbJob<'a> {
    /// The IJB root folder (`meta/`, `loose_crop/`).
    pub root: &'a Path,
    /// IJB-B or IJB-C.
    pub which: crate::protocol::ijb::Ijb,
    /// Input side of the model.
    pub side: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Folds of the verification protocol over the template pairs (insightface: 10).
    pub folds: usize,
    /// Where to save the template-pair scores as insightface's `eval_ijbc.py` does, for its
    /// ROC script to overlay: `<prefix>.npy` (float32, one score per line of the pair file, in
    /// its order) and, for GroupFace, `<prefix>_group_aware.npy`. `None`: not saved.
    pub scores: Option<&'a Path>,
}

/// Saves `scores` as `<dir>/<name>.npy` when there is a `dir`, and records the file in
/// `settings` (`score_file`).
fn save_scores(
    dir: Option<&Path>,
    name: &str,
    scores: &[f32],
    settings: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.npy"));
    crate::protocol::npy::write_f32(&path, scores).map_err(|e| e.to_string())?;
    settings.insert("score_file".into(), path.display().to_string());
    Ok(())
}

/// IJB-B / IJB-C 1:1 (insightface's `eval_ijbc.py` defaults): every image aligned by its five
/// landmarks, `f(img) + f(flip(img))` weighted by the detector score, averaged per media,
/// summed per template, normalised; template pairs scored by cosine (and, for GroupFace, by
/// group-aware similarity on media- then template-averaged v̂). TAR@FAR from the ROC of the
/// template pairs; the k-fold protocol over the same pairs is reported alongside.
///
/// `progress` hears of the images embedded, then of the templates pooled and the pairs
/// scored, plain and group-aware.
pub fn evaluate_ijb<B: ConvBackend>(
    model: &GroupFace<B>,
    job: &IjbJob<'_>,
    mode: Option<GroupMode>,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<RunReport, String> {
    use crate::protocol::ijb::{
        group_aware_template_scores_with_progress, template_scores_with_progress, IjbMeta,
    };
    let &IjbJob { root, which, side, batch, folds, scores: score_dir } = job;
    let options = verification::Options { folds, ..Default::default() };
    let meta = IjbMeta::load(root, which).map_err(|e| e.to_string())?;
    let mut features: Option<Matrix> = None;
    let mut gdn: Option<Matrix> = None;
    let (mut norm_sum, mut norm_count) = (0.0f64, 0usize);
    let append = |target: &mut Option<Matrix>, rows: &[f32], cols: usize| {
        target
            .get_or_insert_with(|| Matrix::empty(cols))
            .extend_flat(rows)
            .map_err(|e| e.to_string())
    };
    // IJB-C has 470k images: crops are aligned only as a batch needs them, and of each
    // image's embeddings only v̄ and v̂ are kept.
    let crops = (0..meta.len()).map(|i| meta.aligned(i, side as u32).map(|c| c.into_raw()));
    let embedding = EmbedOptions { mode, ..EmbedOptions::new(side, batch) };
    progress.start(&format!("{which}: aligning and embedding images"), meta.len() as u64);
    embed_stream(model, crops, &embedding, device, |part| {
        progress.advance(part.rows() as u64);
        norm_sum += part.norms.iter().map(|&n| n as f64).sum::<f64>();
        norm_count += part.norms.len();
        append(&mut features, &part.embedding.data, part.embedding.cols)?;
        if let Some(f) = &part.feature {
            append(&mut gdn, &f.data, f.cols)?;
        }
        Ok(())
    })?;
    let features = features.ok_or_else(|| format!("{}: no image listed", root.display()))?;
    let labels = meta.labels();
    // insightface's XNorm: the mean norm of every image's views before normalisation.
    let xnorm = (norm_count > 0).then(|| norm_sum / norm_count as f64);
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
            Ok(Report::new(verification, &roc, None, settings).with_xnorm(xnorm))
        };
    let scores = template_scores_with_progress(&meta, &features, true, progress)
        .map_err(|e| e.to_string())?;
    let mut plain_settings = settings.clone();
    save_scores(score_dir, which.prefix(), &scores, &mut plain_settings)?;
    let plain = report_of(scores, plain_settings)?;
    let group_aware = match &gdn {
        Some(gdn) => {
            let params = GroupAwareParams::default();
            let (beta, gamma) = (params.beta, params.gamma);
            let scores = group_aware_template_scores_with_progress(
                &meta, &features, gdn, true, beta, gamma, progress,
            )
            .map_err(|e| e.to_string())?;
            settings.insert("similarity".into(), "group-aware".into());
            let name = format!("{}_group_aware", which.prefix());
            save_scores(score_dir, &name, &scores, &mut settings)?;
            Some(report_of(scores, settings)?)
        }
        None => None,
    };
    Ok(RunReport { plain, group_aware, groups: None })
}
