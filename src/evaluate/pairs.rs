//! Reports over listed pairs of embeddings: folders with a pairs file, insightface `.bin`
//! files, precomputed embeddings, and every pair of a labelled set.

use std::collections::BTreeMap;

use crate::evaluate::embed::Embeddings;
use crate::evaluate::similarity::GroupAwareParams;
use crate::protocol::report::Report;
use crate::protocol::roc::Roc;
use crate::protocol::verification;
use crate::protocol::Matrix;
use crate::util::progress::{counted, NoProgress, Progress};

use super::held_out::PairScorer;

/// A report over listed pairs (folders, `.bin` files, precomputed embeddings): the k-fold
/// protocol (insightface: `folds = 10`) and the ROC both run over the same pairs.
pub fn pairs_report(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
) -> Result<Report, String> {
    pairs_report_with_progress(embeddings, pairs, group_aware, folds, settings, &NoProgress)
}

/// [`pairs_report`], its two passes over the pairs (distances, then scores) reported to
/// `progress`.
pub fn pairs_report_with_progress(
    embeddings: &Embeddings,
    pairs: &[(usize, usize, bool)],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<Report, String> {
    let rows = embeddings.rows();
    if let Some((k, &(a, b, _))) = pairs.iter().enumerate().find(|(_, p)| p.0.max(p.1) >= rows) {
        return Err(format!(
            "pair {k} ({a}, {b}): expected row indices below {rows}, the rows of the embeddings"
        ));
    }
    report_over(embeddings, || pairs.iter().copied(), group_aware, folds, settings, progress)
}

/// [`pairs_report`] over every pair `i < j` of rows, positive where `labels` agree, in the order
/// of [`crate::protocol::pairs::all_pairs`] but never listed (`eval embeddings= labels=`, and
/// `eval data=FOLDER` without `pairs=`). Beyond its inputs it holds at most 13 bytes per pair
/// and 12 per embedding value: 10,000 rows of width 512 make 5·10⁷ pairs, 716 MB.
pub fn all_pairs_report<L: PartialEq>(
    embeddings: &Embeddings,
    labels: &[L],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
) -> Result<Report, String> {
    all_pairs_report_with_progress(embeddings, labels, group_aware, folds, settings, &NoProgress)
}

/// [`all_pairs_report`], its two passes over the pairs (distances, then scores) reported to
/// `progress`.
pub fn all_pairs_report_with_progress<L: PartialEq>(
    embeddings: &Embeddings,
    labels: &[L],
    group_aware: Option<GroupAwareParams>,
    folds: usize,
    settings: BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<Report, String> {
    crate::protocol::pairs::check_labels(labels, "labels", embeddings.rows(), "embeddings")
        .map_err(|e| e.to_string())?;
    let pairs = || crate::protocol::pairs::all_pairs_iter(labels);
    report_over(embeddings, pairs, group_aware, folds, settings, progress)
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
    progress: &dyn Progress,
) -> Result<Report, String> {
    check_shapes(embeddings, group_aware)?;
    let issame: Vec<bool> = pairs().map(|p| p.2).collect();
    let similarity = if group_aware.is_some() { "group-aware" } else { "plain" };
    progress.start(&format!("scoring pairs ({similarity})"), 2 * issame.len() as u64);
    // 5·10⁷ pairs of a large folder: reported in steps of 2¹⁶, not one call a pair.
    let counted_pairs = || counted(pairs(), progress, 1 << 16);
    let options = verification::Options { folds, ..Default::default() };
    let scorer = PairScorer::new(embeddings, group_aware);
    let distances: Vec<f64> = match group_aware {
        // insightface's protocol thresholds the squared L2 distance of unit vectors, which is
        // 2 − 2·cos; the group-aware score takes cos's place in the same identity.
        Some(_) => counted_pairs().map(|(a, b, _)| 2.0 - 2.0 * scorer.score(a, b)).collect(),
        // The raw flip-sum: the protocol normalises in f64, as insightface's numpy code does.
        None => {
            let matrix = embeddings.embedding.clone().with_origin("the embeddings");
            verification::pair_distances(&matrix, counted_pairs(), true)
                .map_err(|e| e.to_string())?
        }
    };
    let verification = verification::evaluate_distances_with(&distances, &issame, &options)
        .map_err(|e| e.to_string())?;
    // The distances go before the scores and the ROC's sort buffers come.
    drop(distances);
    let scores: Vec<f32> = counted_pairs().map(|(a, b, _)| scorer.score(a, b) as f32).collect();
    let roc = Roc::from_scores(&scores, &issame).map_err(|e| e.to_string())?;
    Ok(Report::new(verification, &roc, None, settings).with_xnorm(embeddings.xnorm()))
}

/// Fails where a row of the embeddings (or of v̂, for group-aware similarity) would be out of
/// its matrix: the fields are public, so a caller can build an inconsistent one.
fn check_shapes(
    embeddings: &Embeddings,
    group_aware: Option<GroupAwareParams>,
) -> Result<(), String> {
    let consistent = |m: &Matrix| m.rows.checked_mul(m.cols) == Some(m.data.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::progress::Recorded;

    #[test]
    fn both_passes_over_the_pairs_are_reported() {
        let rows = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]];
        let embedding = Matrix::from_rows(&rows, "four rows").unwrap();
        let embeddings = Embeddings { embedding, feature: None, probs: None, norms: Vec::new() };
        let labels = [0, 0, 1, 1];
        let sink = Recorded::default();
        let report = all_pairs_report_with_progress(
            &embeddings,
            &labels,
            None,
            2,
            Default::default(),
            &sink,
        )
        .unwrap();
        // 6 pairs, each scored for the protocol and again for the ROC.
        assert_eq!(sink.stages(), [("scoring pairs (plain)".to_string(), 12, 12)]);
        let quiet = all_pairs_report(&embeddings, &labels, None, 2, Default::default()).unwrap();
        assert_eq!(report, quiet);
        assert_eq!(report.positives, 2);
    }
}
