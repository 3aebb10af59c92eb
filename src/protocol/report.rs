//! One evaluation, written for machines and for people.
//!
//! A [`Report`] gathers what an evaluation measured (verification accuracy, TAR@FAR, AUC / EER,
//! rank-1) with the settings that produced it, and [`Report::write_all`] writes it in every form
//! the project uses: `report.json` (read back by tools and the README's results table),
//! `report.csv` (one metric per row, for spreadsheets and for diffing runs), `report.md` (for
//! humans and the book) and SVG figures. Every file is written through a temporary file and a
//! rename: a run killed while writing leaves the previous report, never half of one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identification::{Rank1Point, Rank1Result};
use super::roc::{Roc, TarAtFar};
use super::verification::VerificationResult;
use super::{write_atomic, EvalError, Result};
use crate::protocol::plot::{Axis, Legend, LinePlot, Series};

/// Verification numbers as reported (insightface's `evaluate()` outputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationSummary {
    /// Mean accuracy over the folds.
    pub accuracy: f64,
    /// Population standard deviation of the fold accuracies.
    pub std: f64,
    /// Accuracy of each fold.
    pub fold_accuracies: Vec<f64>,
    /// Threshold chosen for each fold.
    pub best_thresholds: Vec<f64>,
    /// Number of pairs.
    pub pairs: usize,
    /// Same-identity pairs.
    pub positives: usize,
    /// Different-identity pairs.
    pub negatives: usize,
    /// Target FAR of VAL, when computed.
    #[serde(default)]
    pub val_target_far: Option<f64>,
    /// VAL (TAR) at that FAR, mean over folds.
    #[serde(default)]
    pub val: Option<f64>,
    /// Its standard deviation over folds.
    #[serde(default)]
    pub val_std: Option<f64>,
    /// FAR actually reached on the test folds.
    #[serde(default)]
    pub val_far: Option<f64>,
}

impl From<&VerificationResult> for VerificationSummary {
    fn from(r: &VerificationResult) -> Self {
        Self {
            accuracy: r.accuracy,
            std: r.std,
            fold_accuracies: r.fold_accuracies.clone(),
            best_thresholds: r.best_thresholds.clone(),
            pairs: r.pairs,
            positives: r.positives,
            negatives: r.negatives,
            val_target_far: r.val.as_ref().map(|v| v.target_far),
            val: r.val.as_ref().map(|v| v.val),
            val_std: r.val.as_ref().map(|v| v.val_std),
            val_far: r.val.as_ref().map(|v| v.far),
        }
    }
}

/// The results of one evaluation: the 10-fold verification protocol, the ROC over the pairs
/// (TAR@FAR, AUC, EER), optionally rank-1, and the settings that produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Free-form settings that produced the numbers (checkpoint, data, similarity, ...). A
    /// `name` entry, when present, titles the tables and figures.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Positive (same identity) pairs of the ROC.
    pub positives: u64,
    /// Negative pairs of the ROC: a FAR below 1 / negatives cannot be measured.
    pub negatives: u64,
    /// LFW-style verification (insightface's `evaluate()`).
    pub verification: VerificationSummary,
    /// TAR@FAR keyed by [`crate::protocol::roc::far_key`] (`"1e-04"`).
    pub tar_at_far: BTreeMap<String, TarAtFar>,
    /// Area under the ROC curve.
    pub auc: f64,
    /// Equal error rate.
    pub eer: f64,
    /// Rank-1 accuracy with all distractors, when identification was run.
    #[serde(default)]
    pub rank1: Option<f64>,
    /// Rank-1 accuracy against the number of distractors.
    #[serde(default)]
    pub rank1_curve: Vec<Rank1Point>,
    /// A thinned `(FAR, TAR)` curve for plotting (see [`Roc::curve_for_plot`]).
    #[serde(default)]
    pub roc: Vec<(f64, f64)>,
    /// insightface's XNorm: the mean L2 norm of the embeddings before normalisation, over
    /// every image and view (each view's own, not the flip-sum's); `None` where the report
    /// was made from scores or saved embeddings, which do not keep it.
    #[serde(default)]
    pub xnorm: Option<f64>,
}

/// `,` `"` and line breaks make a CSV field need quotes.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A Markdown table cell: pipes escaped, line breaks flattened.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

impl Report {
    /// Gathers a verification result, TAR at [`crate::protocol::roc::STANDARD_FARS`], AUC and EER of
    /// `roc`, an optional rank-1 result and the settings.
    pub fn new(
        verification: VerificationResult,
        roc: &Roc,
        rank1: Option<&Rank1Result>,
        settings: BTreeMap<String, String>,
    ) -> Self {
        Self {
            settings,
            positives: roc.positives(),
            negatives: roc.negatives(),
            verification: (&verification).into(),
            tar_at_far: roc.tar_at_fars(&super::roc::STANDARD_FARS),
            auc: roc.auc(),
            eer: roc.eer(),
            rank1: rank1.map(Rank1Result::accuracy),
            rank1_curve: rank1.map(|r| r.curve.clone()).unwrap_or_default(),
            roc: roc.curve_for_plot(400),
            xnorm: None,
        }
    }

    /// The same report with its XNorm.
    pub fn with_xnorm(mut self, xnorm: Option<f64>) -> Self {
        self.xnorm = xnorm;
        self
    }

    /// The TAR@FAR entries by increasing target FAR (the map itself sorts `"1e-01"` first).
    fn tar_by_far(&self) -> Vec<(&String, &TarAtFar)> {
        let mut entries: Vec<_> = self.tar_at_far.iter().collect();
        entries.sort_by(|a, b| {
            let (x, y) = (a.0.parse::<f64>(), b.0.parse::<f64>());
            match (x, y) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.0.cmp(b.0),
            }
        });
        entries
    }

    /// The title: the `name` setting; else `MODEL on DATA` from the `model` (or `embeddings`)
    /// and `data` (or `protocol`) settings, or whichever of them there is; else `evaluation`.
    fn name(&self) -> String {
        let get = |key: &str| self.settings.get(key).map(String::as_str);
        let model = get("model").or(get("embeddings"));
        match (get("name"), model, get("data").or(get("protocol"))) {
            (Some(name), _, _) => name.into(),
            (None, Some(model), Some(data)) => format!("{model} on {data}"),
            (None, Some(one), None) | (None, None, Some(one)) => one.into(),
            (None, None, None) => "evaluation".into(),
        }
    }

    /// Every number as `(metric, value)` rows, in a fixed order: the CSV's content.
    pub fn metrics(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut add = |k: String, v: String| rows.push((k, v));
        let v = &self.verification;
        add("verification.accuracy".into(), v.accuracy.to_string());
        add("verification.std".into(), v.std.to_string());
        for (i, a) in v.fold_accuracies.iter().enumerate() {
            add(format!("verification.fold_{:02}.accuracy", i + 1), a.to_string());
        }
        for (i, t) in v.best_thresholds.iter().enumerate() {
            add(format!("verification.fold_{:02}.threshold", i + 1), t.to_string());
        }
        add("verification.pairs".into(), v.pairs.to_string());
        add("verification.positives".into(), v.positives.to_string());
        add("verification.negatives".into(), v.negatives.to_string());
        if v.val.is_some() {
            add("verification.val_target_far".into(), opt(v.val_target_far));
            add("verification.val".into(), opt(v.val));
            add("verification.val_std".into(), opt(v.val_std));
            add("verification.val_far".into(), opt(v.val_far));
        }
        for (key, t) in self.tar_by_far() {
            add(format!("tar_at_far.{key}.tar"), t.tar.to_string());
            add(format!("tar_at_far.{key}.far"), t.far.to_string());
            add(format!("tar_at_far.{key}.threshold"), opt(t.threshold));
            add(format!("tar_at_far.{key}.negatives"), t.negatives.to_string());
        }
        add("auc".into(), self.auc.to_string());
        add("eer".into(), self.eer.to_string());
        if let Some(x) = self.xnorm {
            add("xnorm".into(), x.to_string());
        }
        if let Some(r) = self.rank1 {
            add("rank1".into(), r.to_string());
        }
        for p in &self.rank1_curve {
            add(format!("rank1.distractors_{}", p.distractors), p.accuracy.to_string());
        }
        add("positives".into(), self.positives.to_string());
        add("negatives".into(), self.negatives.to_string());
        for (k, v) in &self.settings {
            add(format!("settings.{k}"), v.clone());
        }
        rows
    }

    /// `report.csv`: a `metric,value` header, then one row per metric.
    pub fn csv(&self) -> String {
        let mut out = String::from("metric,value\n");
        for (k, v) in self.metrics() {
            let _ = writeln!(out, "{},{}", csv_field(&k), csv_field(&v));
        }
        out
    }

    /// `report.json`, pretty-printed.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises") + "\n"
    }

    /// Reads a `report.json`.
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| EvalError::Json { path: path.into(), source })
    }

    /// `report.md`: the headline numbers as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut md = format!("# Evaluation: {}\n\n", md_cell(&self.name()));
        if !self.settings.is_empty() {
            md.push_str("| setting | value |\n|---|---|\n");
            for (k, v) in &self.settings {
                let _ = writeln!(md, "| {} | {} |", md_cell(k), md_cell(v));
            }
            md.push('\n');
        }
        let v = &self.verification;
        let folds = v.fold_accuracies.len();
        let unit = if folds == 1 { "fold" } else { "folds" };
        let _ = writeln!(md, "## Verification ({folds} {unit})\n");
        md.push_str("| metric | value |\n|---|---|\n");
        let _ = writeln!(md, "| accuracy | {:.4} % ± {:.4} % |", 100.0 * v.accuracy, 100.0 * v.std);
        if let (Some(target), Some(val), Some(std), Some(far)) =
            (v.val_target_far, v.val, v.val_std, v.val_far)
        {
            let _ = writeln!(
                md,
                "| VAL@FAR={} | {:.4} % ± {:.4} % (FAR reached {:.6}) |",
                super::roc::far_key(target),
                100.0 * val,
                100.0 * std,
                far
            );
        }
        let _ = writeln!(
            md,
            "| pairs | {} ({} positive, {} negative) |\n",
            v.pairs, v.positives, v.negatives
        );
        if !self.tar_at_far.is_empty() {
            md.push_str("## ROC\n\n| target FAR | TAR | FAR reached | threshold | negatives |\n");
            md.push_str("|---|---|---|---|---|\n");
            for (key, t) in self.tar_by_far() {
                let threshold =
                    t.threshold.map_or_else(|| "none accepted".to_string(), |x| format!("{x:.6}"));
                let _ = writeln!(
                    md,
                    "| {key} | {:.4} | {:.3e} | {threshold} | {} |",
                    t.tar, t.far, t.negatives
                );
            }
            md.push('\n');
        }
        md.push_str("| metric | value |\n|---|---|\n");
        let _ = writeln!(md, "| AUC | {:.6} |", self.auc);
        let _ = writeln!(md, "| EER | {:.6} |", self.eer);
        if let Some(x) = self.xnorm {
            let _ = writeln!(md, "| XNorm | {x:.4} |");
        }
        let _ =
            writeln!(md, "| pairs | {} positive, {} negative |\n", self.positives, self.negatives);
        if !self.rank1_curve.is_empty() {
            md.push_str("## Rank-1 identification\n\n| distractors | rank-1 |\n|---|---|\n");
            for p in &self.rank1_curve {
                let _ = writeln!(
                    md,
                    "| {} | {:.4} % ({} hits) |",
                    p.distractors,
                    100.0 * p.accuracy,
                    p.hits
                );
            }
            md.push('\n');
        }
        md
    }

    /// The ROC on a log FAR axis from 1e-6 to 1, when a curve was recorded.
    pub fn roc_plot(&self) -> Option<LinePlot> {
        (!self.roc.is_empty()).then(|| {
            let mut plot = LinePlot::new(
                format!("ROC: {}", self.name()),
                Axis::log10("FAR (false accept rate)").range(1e-6, 1.0),
                Axis::linear("TAR (true accept rate)").range(0.0, 1.0),
            );
            plot.add(Series::new(self.name(), self.roc.clone()));
            plot
        })
    }

    /// Rank-1 against the number of distractors (log axis; the 0-distractor point is in the
    /// tables only), when at least two counts above 0 were measured.
    pub fn rank1_plot(&self) -> Option<LinePlot> {
        let points: Vec<(f64, f64)> = self
            .rank1_curve
            .iter()
            .filter(|p| p.distractors > 0)
            .map(|p| (p.distractors as f64, p.accuracy))
            .collect();
        (points.len() >= 2).then(|| {
            let mut plot = LinePlot::new(
                format!("Rank-1: {}", self.name()),
                Axis::log10("distractors"),
                Axis::linear("rank-1 accuracy"),
            )
            .with_legend(Legend::BottomLeft);
            plot.add(Series::new(self.name(), points).with_markers());
            plot
        })
    }

    /// Writes `report.json`, `report.csv`, `report.md` and, when there is something to draw,
    /// `roc.svg` and `rank1.svg` into `dir` (created if missing); returns the paths written.
    pub fn write_all(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        self.write_all_with_json(dir, &self.json())
    }

    /// [`Self::write_all`] with `json` as the text of `report.json` (a report that holds this
    /// one and more). `report.json` is written last, whole: a training run that has one is
    /// finished, so no other file of the report may come after it.
    pub fn write_all_with_json(&self, dir: impl AsRef<Path>, json: &str) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let mut files = vec![
            (dir.join("report.json"), json.to_string()),
            (dir.join("report.csv"), self.csv()),
            (dir.join("report.md"), self.markdown()),
        ];
        if let Some(p) = self.roc_plot() {
            files.push((dir.join("roc.svg"), p.to_svg()));
        }
        if let Some(p) = self.rank1_plot() {
            files.push((dir.join("rank1.svg"), p.to_svg()));
        }
        for (path, text) in files.iter().skip(1).chain(&files[..1]) {
            write_atomic(path, text.as_bytes())?;
        }
        Ok(files.into_iter().map(|(p, _)| p).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::identification::rank1_at;
    use crate::protocol::verification::{evaluate_distances_with, Options};
    use crate::protocol::Matrix;
    use crate::util::test_util::temp_dir;

    fn sample() -> Report {
        let d = [0.05, 0.30, 0.10, 0.50, 0.70, 0.20, 0.60, 0.15, 0.90, 0.45];
        let same = [true, true, true, false, false, true, false, true, false, true];
        let v = evaluate_distances_with(&d, &same, &Options { folds: 2, ..Default::default() })
            .unwrap();
        let scores: Vec<f32> = d.iter().map(|&x| 1.0 - x as f32).collect();
        let roc = Roc::from_scores(&scores, &same).unwrap();
        let g = Matrix::new(2, 2, vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        let p = Matrix::new(1, 2, vec![1.0f32, 0.1]).unwrap();
        let x = Matrix::new(
            100,
            2,
            (0..200).map(|i| if i % 2 == 0 { 1.0 } else { 0.001 * i as f32 }).collect(),
        )
        .unwrap();
        let r1 = rank1_at(&p, &["a"], &g, &["a", "b"], &x, &[0, 10, 100]).unwrap();
        let settings = [("name", "toy | set"), ("checkpoint", "runs/a,b"), ("folds", "2")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        Report::new(v, &roc, Some(&r1), settings)
    }

    #[test]
    fn the_title_names_the_model_and_the_data_without_a_name() {
        let mut r = sample();
        r.settings.remove("name");
        assert!(r.markdown().starts_with("# Evaluation: evaluation\n"));
        r.settings.insert("protocol".into(), "listed pairs".into());
        assert!(r.markdown().starts_with("# Evaluation: listed pairs\n"));
        r.settings.insert("model".into(), "runs/r100.pth".into());
        r.settings.insert("data".into(), "lfw.bin".into());
        assert!(r.markdown().starts_with("# Evaluation: runs/r100.pth on lfw.bin\n"));
        r.settings.insert("name".into(), "mine".into());
        assert!(r.markdown().starts_with("# Evaluation: mine\n"));
    }

    #[test]
    fn metrics_cover_every_number_once() {
        let r = sample();
        let m: BTreeMap<String, String> = r.metrics().into_iter().collect();
        assert_eq!(m.len(), r.metrics().len(), "metric names are unique");
        assert_eq!(m["verification.accuracy"], "0.9");
        assert_eq!(m["verification.fold_02.accuracy"], "0.8");
        assert_eq!(m["verification.fold_01.threshold"], (46.0 * 0.01f64).to_string());
        assert_eq!(m["tar_at_far.1e-06.negatives"], "4");
        assert_eq!(m["positives"], "6");
        assert_eq!(m["settings.folds"], "2");
        // The first distractor (1, 0.001) is closer in angle to the probe (1, 0.1) than the
        // probe's gallery row (1, 0): a hit without distractors, a miss with 10 or 100.
        assert_eq!(m["rank1.distractors_0"], "1");
        assert_eq!(m["rank1.distractors_10"], "0");
        assert_eq!(r.rank1, Some(0.0));
        assert_eq!(r.tar_at_far.len(), 6);
    }

    #[test]
    fn csv_and_markdown_escape_their_separators() {
        let r = sample();
        let csv = r.csv();
        assert!(csv.starts_with("metric,value\nverification.accuracy,0.9\n"));
        assert!(csv.contains("settings.checkpoint,\"runs/a,b\"\n"));
        assert_eq!(csv.lines().count(), r.metrics().len() + 1);
        let md = r.markdown();
        assert!(md.starts_with("# Evaluation: toy \\| set\n"));
        assert!(md.contains("| accuracy | 90.0000 % ± 10.0000 % |"), "{md}");
        let (e6, e1) = (md.find("| 1e-06 |").unwrap(), md.find("| 1e-01 |").unwrap());
        assert!(e6 < e1, "rows by increasing FAR");
        let rows: Vec<&str> = csv.lines().filter(|l| l.starts_with("tar_at_far.")).collect();
        assert!(
            rows[0].starts_with("tar_at_far.1e-06.tar,")
                && rows[23].starts_with("tar_at_far.1e-01.")
        );
        assert!(md.contains("| 100 | 0.0000 % (0 hits) |"));
    }

    #[test]
    fn write_all_writes_every_form_and_reads_back() {
        let dir = temp_dir("report");
        let r = sample();
        let files = r.write_all(dir.join("lfw")).unwrap();
        let names: Vec<String> =
            files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["report.json", "report.csv", "report.md", "roc.svg", "rank1.svg"]);
        let back = Report::read_json(dir.join("lfw").join("report.json")).unwrap();
        // serde_json parses floats to within an ulp unless its `float_roundtrip` feature is on:
        // compare the numbers with a relative tolerance, everything else exactly.
        let (a, b) = (r.metrics(), back.metrics());
        assert_eq!(a.len(), b.len());
        for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            match (va.parse::<f64>(), vb.parse::<f64>()) {
                (Ok(x), Ok(y)) => assert!((x - y).abs() <= 1e-15 * x.abs(), "{ka}: {x} vs {y}"),
                _ => assert_eq!(va, vb, "{ka}"),
            }
        }
        assert_eq!(back.roc.len(), r.roc.len());
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["verification"]["accuracy"], 0.9);
        assert_eq!(json["tar_at_far"]["1e-04"]["negatives"], 4);
        let svg = std::fs::read_to_string(dir.join("lfw").join("roc.svg")).unwrap();
        assert!(svg.contains("<path") && !svg.contains("NaN"));
        // Only the temporaries' renames happened: no stray files.
        assert_eq!(std::fs::read_dir(dir.join("lfw")).unwrap().count(), 5);
        // Without rank-1 there is no rank-1 figure.
        let mut no_rank1 = r.clone();
        no_rank1.rank1_curve.clear();
        assert_eq!(no_rank1.write_all(dir.join("plain")).unwrap().len(), 4);
    }

    #[test]
    fn bad_paths_and_json_are_errors() {
        let dir = temp_dir("report-bad");
        let e = Report::read_json(dir.join("missing.json")).unwrap_err();
        assert!(matches!(e, EvalError::Io { .. }));
        std::fs::write(dir.join("bad.json"), "{\"name\": 3}").unwrap();
        let e = Report::read_json(dir.join("bad.json")).unwrap_err();
        assert!(matches!(e, EvalError::Json { .. }) && e.to_string().contains("bad.json"), "{e}");
        std::fs::write(dir.join("file"), "").unwrap();
        assert!(matches!(sample().write_all(dir.join("file")), Err(EvalError::Io { .. })));
    }
}
