//! IJB-B / IJB-C 1:1 template verification with the defaults of insightface's `eval_ijbc.py`
//! (SPEC section 5), so that numbers are comparable with the paper's tables.
//!
//! Layout of a dataset root (`<p>` is `ijbb` or `ijbc`):
//!
//! ```text
//! <root>/meta/<p>_face_tid_mid.txt          <image name> <template id> <media id>
//! <root>/meta/<p>_name_5pts_score.txt       <image name> <x1> <y1> ... <x5> <y5> <detector score>
//! <root>/meta/<p>_template_pair_label.txt   <template 1> <template 2> <label 0|1>
//! <root>/loose_crop/<image name>
//! ```
//!
//! insightface reads the first two files as parallel columns (row `i` of each is image `i`);
//! [`IjbMeta::load`] checks that they name the same image on every record instead of trusting
//! it. The workflow is:
//!
//! 1. [`IjbMeta::load`];
//! 2. for every image, in [`IjbMeta::images`] order, the caller computes
//!    `f(crop) + f(flip(crop))` with its model on [`IjbMeta::aligned`] crops (not normalised)
//!    and collects the rows in a [`Matrix`];
//! 3. [`template_scores`] pools images into templates and scores every pair by cosine;
//!    [`group_aware_template_scores`] adds GroupFace's penalty on pooled GDN features.
//!
//! TAR@FAR is then computed from the scores and [`IjbMeta::labels`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{Rgb, RgbImage};

use super::align::{align_face, Similarity, ARCFACE_TEMPLATE};
use super::analysis_error::{AnalysisError, Result};
use super::pairs::{group_aware_score, unit_cosine};
use super::Matrix;
use crate::util::progress::{counted, NoProgress, Progress};

/// Which benchmark: the two share a format and differ only in file-name prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ijb {
    /// IJB-B (1,845 subjects, 8 M template pairs).
    B,
    /// IJB-C (3,531 subjects, 15.7 M template pairs).
    C,
}

impl Ijb {
    /// File-name prefix of the meta files: `ijbb` or `ijbc`.
    pub fn prefix(self) -> &'static str {
        match self {
            Ijb::B => "ijbb",
            Ijb::C => "ijbc",
        }
    }

    /// `<p>_face_tid_mid.txt`.
    pub fn template_media_file(self) -> String {
        format!("{}_face_tid_mid.txt", self.prefix())
    }

    /// `<p>_name_5pts_score.txt`.
    pub fn landmark_file(self) -> String {
        format!("{}_name_5pts_score.txt", self.prefix())
    }

    /// `<p>_template_pair_label.txt`.
    pub fn pair_file(self) -> String {
        format!("{}_template_pair_label.txt", self.prefix())
    }
}

impl fmt::Display for Ijb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ijb::B => "IJB-B",
            Ijb::C => "IJB-C",
        })
    }
}

impl FromStr for Ijb {
    type Err = AnalysisError;

    /// Accepts `ijbb`, `ijb-b`, `b` and the same for C, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ijbb" | "ijb-b" | "b" => Ok(Ijb::B),
            "ijbc" | "ijb-c" | "c" => Ok(Ijb::C),
            _ => Err(AnalysisError::invalid("ijb", format!("expected ijbb or ijbc, found `{s}`"))),
        }
    }
}

/// One face image of the benchmark: a row of both per-image meta files.
#[derive(Debug, Clone, PartialEq)]
pub struct IjbImage {
    /// File name under `<root>/loose_crop`.
    pub name: String,
    /// Template the image belongs to.
    pub template: u64,
    /// Media (photo or video) the image comes from; a template holds one or more media.
    pub media: u64,
    /// Detector landmarks `(x, y)` in loose-crop pixels: eyes, nose, mouth corners.
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence; weights the image's feature in its template.
    pub detector_score: f32,
}

/// One line of the pair file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePair {
    /// First template id.
    pub first: u64,
    /// Second template id.
    pub second: u64,
    /// Whether both templates show the same subject (label 1).
    pub genuine: bool,
}

/// The images of one template, grouped by media (media ascending, images in file order).
#[derive(Debug, Clone)]
struct Members {
    media: Vec<Vec<usize>>,
}

/// The parsed meta files of an IJB-B or IJB-C root.
#[derive(Debug, Clone)]
pub struct IjbMeta {
    which: Ijb,
    root: PathBuf,
    images: Vec<IjbImage>,
    /// 1-based line of each image in the landmark file (for error messages).
    landmark_lines: Vec<usize>,
    pairs: Vec<TemplatePair>,
    /// Template ids ascending (`np.unique` order) and their members.
    template_ids: Vec<u64>,
    members: Vec<Members>,
    /// Rows of `template_ids` for each pair.
    pair_rows: Vec<[u32; 2]>,
}

/// Streams the non-empty lines of a text file as whitespace-separated fields, reusing one
/// buffer: the IJB-C pair file has 15.7 M lines and need not sit in memory as text.
struct Records {
    path: PathBuf,
    reader: BufReader<fs::File>,
    buf: String,
    line: usize,
}

impl Records {
    fn open(path: &Path) -> Result<Self> {
        let file = fs::File::open(path).map_err(|e| AnalysisError::io(path, e))?;
        Ok(Records {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            buf: String::new(),
            line: 0,
        })
    }

    /// The next non-empty line's 1-based number and fields, or `None` at the end.
    fn next_record(&mut self) -> Result<Option<(usize, Vec<&str>)>> {
        loop {
            self.buf.clear();
            self.line += 1;
            let n = self.reader.read_line(&mut self.buf).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    AnalysisError::parse(&self.path, self.line, "expected UTF-8 text")
                } else {
                    AnalysisError::io(&self.path, e)
                }
            })?;
            if n == 0 {
                return Ok(None);
            }
            if !self.buf.trim().is_empty() {
                break;
            }
        }
        Ok(Some((self.line, self.buf.split_whitespace().collect())))
    }

    /// Number of non-empty lines left (for error messages).
    fn count_rest(&mut self) -> Result<usize> {
        let mut n = 0;
        while self.next_record()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

fn expect_fields(path: &Path, line: usize, fields: &[&str], n: usize, layout: &str) -> Result<()> {
    if fields.len() != n {
        return Err(AnalysisError::parse(
            path,
            line,
            format!("expected {n} fields `{layout}`, found {}", fields.len()),
        ));
    }
    Ok(())
}

fn parse_id(path: &Path, line: usize, field: &str, what: &str) -> Result<u64> {
    field.parse::<u64>().map_err(|_| {
        AnalysisError::parse(
            path,
            line,
            format!("expected a non-negative integer {what}, found `{field}`"),
        )
    })
}

fn parse_finite(path: &Path, line: usize, field: &str, what: &str) -> Result<f32> {
    match field.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(AnalysisError::parse(
            path,
            line,
            format!("expected a finite number for {what}, found `{field}`"),
        )),
    }
}

/// The error for two per-image files of different lengths: `longer` still has a record on
/// `line` after `n` records matched.
fn length_mismatch(
    n: usize,
    longer: &Path,
    line: usize,
    rest: &mut Records,
    shorter: &Path,
) -> AnalysisError {
    let total = match rest.count_rest() {
        Ok(more) => (n + 1 + more).to_string(),
        Err(_) => format!("more than {n}"),
    };
    AnalysisError::parse(
        longer,
        line,
        format!(
            "this file lists {total} images but {} lists {n}: expected one record per image \
             in both",
            shorter.display()
        ),
    )
}

fn landmarks_f64(l: &[[f32; 2]; 5]) -> [[f64; 2]; 5] {
    l.map(|[x, y]| [f64::from(x), f64::from(y)])
}

/// Reads the two per-image files in lockstep: insightface pairs them by row, so a missing or
/// reordered line would silently attach landmarks to the wrong image. Also returns each
/// image's landmark-file line for later error messages.
fn read_images(tid_path: &Path, lmk_path: &Path) -> Result<(Vec<IjbImage>, Vec<usize>)> {
    let mut tid = Records::open(tid_path)?;
    let mut lmk = Records::open(lmk_path)?;
    let mut images = Vec::new();
    let mut landmark_lines = Vec::new();
    loop {
        // when one file ends first, name the first line without a counterpart
        let (t, l) = match (tid.next_record()?, lmk.next_record()?) {
            (Some(t), Some(l)) => (t, l),
            (None, None) => break,
            (Some((line, _)), None) => {
                return Err(length_mismatch(images.len(), tid_path, line, &mut tid, lmk_path))
            }
            (None, Some((line, _))) => {
                return Err(length_mismatch(images.len(), lmk_path, line, &mut lmk, tid_path))
            }
        };
        let ((tline, tf), (lline, lf)) = (t, l);
        expect_fields(tid_path, tline, &tf, 3, "<image> <template id> <media id>")?;
        expect_fields(lmk_path, lline, &lf, 12, "<image> <x1> <y1> ... <x5> <y5> <score>")?;
        let template = parse_id(tid_path, tline, tf[1], "template id")?;
        let media = parse_id(tid_path, tline, tf[2], "media id")?;
        if tf[0] != lf[0] {
            return Err(AnalysisError::parse(
                lmk_path,
                lline,
                format!(
                    "image {} is `{}` here but `{}` on line {tline} of {}: the two files \
                     must list the same images in the same order",
                    images.len() + 1,
                    lf[0],
                    tf[0],
                    tid_path.display()
                ),
            ));
        }
        let (landmarks, detector_score) = parse_landmarks(lmk_path, lline, &lf)?;
        images.push(IjbImage {
            name: tf[0].to_owned(),
            template,
            media,
            landmarks,
            detector_score,
        });
        landmark_lines.push(lline);
    }
    if images.is_empty() {
        return Err(AnalysisError::parse(
            tid_path,
            1,
            "file holds no image: expected lines `<image> <template id> <media id>`",
        ));
    }
    Ok((images, landmark_lines))
}

/// The five landmarks and the detector score of a landmark-file record, refusing landmarks
/// that all coincide now rather than when [`IjbMeta::aligned`] fails hours into a run.
fn parse_landmarks(lmk_path: &Path, lline: usize, lf: &[&str]) -> Result<([[f32; 2]; 5], f32)> {
    let mut landmarks = [[0f32; 2]; 5];
    for (j, p) in landmarks.iter_mut().enumerate() {
        p[0] = parse_finite(lmk_path, lline, lf[1 + 2 * j], "a landmark x")?;
        p[1] = parse_finite(lmk_path, lline, lf[2 + 2 * j], "a landmark y")?;
    }
    let detector_score = parse_finite(lmk_path, lline, lf[11], "the detector score")?;
    if Similarity::to_template(&landmarks_f64(&landmarks), 112).is_err() {
        return Err(AnalysisError::parse(
            lmk_path,
            lline,
            "expected 5 distinct landmarks, found all 5 at one point",
        ));
    }
    Ok((landmarks, detector_score))
}

/// Template ids ascending (`np.unique` order, so rows match insightface's) and each
/// template's images by media; refuses more templates than the `u32` pair rows can index.
fn group_templates(images: &[IjbImage], tid_path: &Path) -> Result<(Vec<u64>, Vec<Members>)> {
    let mut grouped: BTreeMap<u64, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
    for (i, img) in images.iter().enumerate() {
        grouped.entry(img.template).or_default().entry(img.media).or_default().push(i);
    }
    let template_ids: Vec<u64> = grouped.keys().copied().collect();
    let members: Vec<Members> = grouped
        .into_values()
        .map(|media| Members { media: media.into_values().collect() })
        .collect();

    if u32::try_from(template_ids.len()).is_err() {
        return Err(AnalysisError::parse(
            tid_path,
            1,
            format!("expected fewer than 2^32 templates, found {}", template_ids.len()),
        ));
    }
    Ok((template_ids, members))
}

/// Reads the pair file and resolves both templates of each pair to their rows once, so that
/// scoring millions of pairs needs no lookups and an unknown template fails at load time.
fn read_pairs(
    pair_path: &Path,
    template_ids: &[u64],
    tid_path: &Path,
) -> Result<(Vec<TemplatePair>, Vec<[u32; 2]>)> {
    let mut pairs = Vec::new();
    let mut pair_rows = Vec::new();
    let row_of = |id: u64| template_ids.binary_search(&id).ok().map(|r| r as u32);
    let mut pair_file = Records::open(pair_path)?;
    while let Some((line, f)) = pair_file.next_record()? {
        expect_fields(pair_path, line, &f, 3, "<template 1> <template 2> <label>")?;
        let first = parse_id(pair_path, line, f[0], "template id")?;
        let second = parse_id(pair_path, line, f[1], "template id")?;
        let genuine = match f[2] {
            "1" => true,
            "0" => false,
            other => {
                return Err(AnalysisError::parse(
                    pair_path,
                    line,
                    format!("expected label 0 or 1, found `{other}`"),
                ))
            }
        };
        let mut rows = [0u32; 2];
        for (r, id) in rows.iter_mut().zip([first, second]) {
            *r = row_of(id).ok_or_else(|| {
                AnalysisError::parse(
                    pair_path,
                    line,
                    format!(
                        "template {id} has no image in {}: expected a template id listed there",
                        tid_path.display()
                    ),
                )
            })?;
        }
        pairs.push(TemplatePair { first, second, genuine });
        pair_rows.push(rows);
    }
    if pairs.is_empty() {
        return Err(AnalysisError::parse(
            pair_path,
            1,
            "file holds no pair: expected lines `<template 1> <template 2> <label>`",
        ));
    }
    Ok((pairs, pair_rows))
}

impl IjbMeta {
    /// Reads and cross-checks the three meta files under `<root>/meta`.
    ///
    /// Errors name the file and line: a wrong field count or a non-numeric field, landmarks
    /// that all coincide (no alignment possible), the two per-image files disagreeing on an
    /// image name or on the number of images, a pair naming a template that has no image, an
    /// empty file. Images themselves are only opened by [`IjbMeta::aligned`].
    pub fn load(root: impl AsRef<Path>, which: Ijb) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let meta = root.join("meta");
        let tid_path = meta.join(which.template_media_file());
        let lmk_path = meta.join(which.landmark_file());
        let pair_path = meta.join(which.pair_file());

        let (images, landmark_lines) = read_images(&tid_path, &lmk_path)?;
        let (template_ids, members) = group_templates(&images, &tid_path)?;
        let (pairs, pair_rows) = read_pairs(&pair_path, &template_ids, &tid_path)?;
        Ok(IjbMeta { which, root, images, landmark_lines, pairs, template_ids, members, pair_rows })
    }

    /// Which benchmark this is.
    pub fn which(&self) -> Ijb {
        self.which
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// All images, in meta-file order (the row order features must follow).
    pub fn images(&self) -> &[IjbImage] {
        &self.images
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there is no image (never true after a successful load).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Template pairs, in pair-file order (the order of the scores).
    pub fn pairs(&self) -> &[TemplatePair] {
        &self.pairs
    }

    /// Same-subject labels of [`IjbMeta::pairs`], for ROC / TAR@FAR.
    pub fn labels(&self) -> Vec<bool> {
        self.pairs.iter().map(|p| p.genuine).collect()
    }

    /// Template ids in ascending order: the row order of [`template_embeddings`] and
    /// [`template_gdn_features`].
    pub fn template_ids(&self) -> &[u64] {
        &self.template_ids
    }

    /// Path of image `index` under `<root>/loose_crop`, or `None` past the end.
    pub fn image_path(&self, index: usize) -> Option<PathBuf> {
        self.images.get(index).map(|img| self.root.join("loose_crop").join(&img.name))
    }

    /// Loads image `index` and aligns it onto the ArcFace template scaled to `side` (112 for
    /// the standard protocol). The caller computes `f(crop) + f(flip(crop))` from it.
    ///
    /// Errors: `index` out of range, the file missing (naming the landmark-file line that
    /// lists it), unreadable or undecodable.
    pub fn aligned(&self, index: usize, side: u32) -> Result<RgbImage> {
        let img = self.images.get(index).ok_or_else(|| {
            AnalysisError::invalid(
                "index",
                format!("image {index} requested, {} holds {}", self.which, self.images.len()),
            )
        })?;
        if side == 0 {
            return Err(AnalysisError::invalid("side", "crop side must be at least 1 pixel"));
        }
        let path = self.root.join("loose_crop").join(&img.name);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AnalysisError::MissingImage {
                    path: path.clone(),
                    listed_in: self.root.join("meta").join(self.which.landmark_file()),
                    line: self.landmark_lines[index],
                }
            } else {
                AnalysisError::io(&path, e)
            }
        })?;
        let decoded = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| AnalysisError::io(&path, e))?
            .decode()
            .map_err(|source| AnalysisError::Image { path: path.clone(), source })?
            .to_rgb8();
        align_face(&decoded, &landmarks_f64(&img.landmarks), side)
    }

    /// Aligned crops of the images in `range` (clamped to the image count), in order: a
    /// convenience for batched feature extraction.
    pub fn aligned_range(&self, range: std::ops::Range<usize>, side: u32) -> Result<Vec<RgbImage>> {
        let end = range.end.min(self.images.len());
        (range.start.min(end)..end).map(|i| self.aligned(i, side)).collect()
    }

    fn check_rows(&self, name: &'static str, m: &Matrix) -> Result<()> {
        if m.rows != self.images.len() {
            return Err(AnalysisError::invalid(
                name,
                format!(
                    "expected one row per {} image ({} rows, in meta-file order), found {}",
                    self.which,
                    self.images.len(),
                    m.rows
                ),
            ));
        }
        // The fields are public: rows are indexed below only once they are known to be there.
        m.check_shape().map_err(|e| AnalysisError::invalid(name, e.to_string()))?;
        if m.cols == 0 {
            return Err(AnalysisError::invalid(name, "feature width must be at least 1"));
        }
        Ok(())
    }
}

/// The rows of `features` (one per image, checked under `name`) pooled per template id
/// (ascending): each row times its detector score when `use_detector_score`, averaged within
/// a media, the media means summed in `f64`; `finish` turns that sum and the template's media
/// count into the template's row. Both poolings of `eval_ijbc.py` and of GroupFace's v̂ share
/// this loop, so their order of floating-point operations is one and the same (a weight of 1.0
/// multiplies exactly). Each template pooled advances `progress`.
fn pool_templates(
    meta: &IjbMeta,
    name: &'static str,
    features: &Matrix,
    use_detector_score: bool,
    finish: impl Fn(&[f64], usize, &mut Vec<f32>),
    progress: &dyn Progress,
) -> Result<Matrix> {
    meta.check_rows(name, features)?;
    progress.start(
        &format!("{}: pooling {name} into templates", meta.which),
        meta.members.len() as u64,
    );
    let dim = features.cols;
    let mut data = Vec::with_capacity(meta.members.len() * dim);
    let mut acc = vec![0f64; dim];
    let mut media_sum = vec![0f64; dim];
    for t in &meta.members {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for media in &t.media {
            media_sum.iter_mut().for_each(|v| *v = 0.0);
            for &i in media {
                let w =
                    if use_detector_score { f64::from(meta.images[i].detector_score) } else { 1.0 };
                for (s, f) in media_sum.iter_mut().zip(features.row(i)) {
                    *s += w * f64::from(*f);
                }
            }
            let n = media.len() as f64;
            for (a, s) in acc.iter_mut().zip(&media_sum) {
                *a += s / n;
            }
        }
        finish(&acc, t.media.len(), &mut data);
        progress.advance(1);
    }
    Ok(Matrix {
        rows: meta.members.len(),
        cols: dim,
        data,
        origin: format!("{} templates pooled from {name}", meta.which),
    })
}

/// One template vector per template id (ascending), as `eval_ijbc.py` pools them: each image
/// feature (`f(img) + f(flip(img))`, not normalised) times its detector score when
/// `use_detector_score`, averaged within a media, the media means summed, the sum
/// L2-normalised. Summing media rather than averaging them does not matter after normalising;
/// averaging images within a media keeps a video with many frames from outweighing a photo.
/// A template whose pooled vector is exactly zero stays zero (its cosines are 0).
pub fn template_embeddings(
    meta: &IjbMeta,
    features: &Matrix,
    use_detector_score: bool,
) -> Result<Matrix> {
    pooled_embeddings(meta, features, use_detector_score, &NoProgress)
}

/// [`template_embeddings`], each template pooled advancing `progress`.
fn pooled_embeddings(
    meta: &IjbMeta,
    features: &Matrix,
    use_detector_score: bool,
    progress: &dyn Progress,
) -> Result<Matrix> {
    let unit = |acc: &[f64], _, out: &mut Vec<f32>| {
        let norm = acc.iter().map(|v| v * v).sum::<f64>().sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        out.extend(acc.iter().map(|v| (v * inv) as f32));
    };
    pool_templates(meta, "features", features, use_detector_score, unit, progress)
}

/// The pairs of `meta` in [`IjbMeta::pairs`] order, advancing `progress` as they are scored
/// (15.6 million in IJB-C: in steps of 2¹⁶, not one call a pair).
fn scored_pairs<'a>(
    meta: &'a IjbMeta,
    progress: &'a dyn Progress,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    progress.start(&format!("{}: scoring template pairs", meta.which), meta.pair_rows.len() as u64);
    counted(meta.pair_rows.iter().map(|&[a, b]| (a as usize, b as usize)), progress, 1 << 16)
}

/// Cosine score of every pair in [`IjbMeta::pairs`] order (see [`template_embeddings`] for the
/// pooling). `use_detector_score = true` is insightface's default.
pub fn template_scores(
    meta: &IjbMeta,
    features: &Matrix,
    use_detector_score: bool,
) -> Result<Vec<f32>> {
    template_scores_with_progress(meta, features, use_detector_score, &NoProgress)
}

/// [`template_scores`], reporting the templates pooled and the pairs scored to `progress`.
pub fn template_scores_with_progress(
    meta: &IjbMeta,
    features: &Matrix,
    use_detector_score: bool,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let t = pooled_embeddings(meta, features, use_detector_score, progress)?;
    Ok(scored_pairs(meta, progress).map(|(a, b)| unit_cosine(t.row(a), t.row(b)) as f32).collect())
}

/// One pooled GDN intermediate feature v̂ per template id (ascending): the mean over the
/// images of a media, then the mean over the media of the template, neither weighted nor
/// normalised (SPEC section 3). A mean rather than the embeddings' sum because the penalty
/// uses the raw distance, which must not grow with the number of media. Per-image rows are
/// whatever the caller uses for one image, e.g. the mean of v̂ over the crop and its flip.
pub fn template_gdn_features(meta: &IjbMeta, gdn: &Matrix) -> Result<Matrix> {
    pooled_gdn_features(meta, gdn, &NoProgress)
}

/// [`template_gdn_features`], each template pooled advancing `progress`.
fn pooled_gdn_features(meta: &IjbMeta, gdn: &Matrix, progress: &dyn Progress) -> Result<Matrix> {
    let mean = |acc: &[f64], media: usize, out: &mut Vec<f32>| {
        let m = media as f64;
        out.extend(acc.iter().map(|v| (v / m) as f32));
    };
    pool_templates(meta, "gdn", gdn, false, mean, progress)
}

/// Group-aware score of every pair: `S* = cos(t_i, t_j) − β·‖v̂_i − v̂_j‖₂^γ`, with the template
/// cosine of [`template_scores`] and v̂ pooled by [`template_gdn_features`]. The paper uses
/// β = 0.1, γ = 1/3 (the fields of `GroupAwareParams::default()` in `evaluate::similarity`).
pub fn group_aware_template_scores(
    meta: &IjbMeta,
    features: &Matrix,
    gdn: &Matrix,
    use_detector_score: bool,
    beta: f64,
    gamma: f64,
) -> Result<Vec<f32>> {
    group_aware_template_scores_with_progress(
        meta,
        features,
        gdn,
        use_detector_score,
        beta,
        gamma,
        &NoProgress,
    )
}

/// [`group_aware_template_scores`], reporting the templates pooled (the embeddings, then v̂)
/// and the pairs scored to `progress`.
pub fn group_aware_template_scores_with_progress(
    meta: &IjbMeta,
    features: &Matrix,
    gdn: &Matrix,
    use_detector_score: bool,
    beta: f64,
    gamma: f64,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    if !beta.is_finite() {
        return Err(AnalysisError::invalid("beta", format!("expected a finite β, found {beta}")));
    }
    if !(gamma.is_finite() && gamma > 0.0) {
        return Err(AnalysisError::invalid(
            "gamma",
            format!("expected a finite γ > 0 (0.0 would make every penalty β), found {gamma}"),
        ));
    }
    let t = pooled_embeddings(meta, features, use_detector_score, progress)?;
    let g = pooled_gdn_features(meta, gdn, progress)?;
    Ok(scored_pairs(meta, progress)
        .map(|(a, b)| {
            let cos = unit_cosine(t.row(a), t.row(b));
            group_aware_score(cos, g.row(a), g.row(b), beta, gamma) as f32
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// A fake IJB tree for tests.

/// One template of a [`FakeIjbSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTemplate {
    /// Subject shown; pairs of templates with equal subjects are genuine.
    pub subject: usize,
    /// Number of images of each media of the template (every entry at least 1).
    pub media: Vec<usize>,
}

/// What [`write_fake_ijb`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeIjbSpec {
    /// File-name prefix to use.
    pub which: Ijb,
    /// Templates, at least two; template `j` gets id `j + 1`.
    pub templates: Vec<FakeTemplate>,
    /// Side of the square loose crops, at least 16.
    pub side: u32,
    /// Seed of the per-image pose, colours and lighting.
    pub seed: u64,
}

impl FakeIjbSpec {
    /// `subjects x templates_per_subject` templates (subject-major), each with
    /// `media_per_template` media of `images_per_media` images, 48-pixel crops.
    pub fn uniform(
        which: Ijb,
        subjects: usize,
        templates_per_subject: usize,
        media_per_template: usize,
        images_per_media: usize,
    ) -> Self {
        let templates = (0..subjects * templates_per_subject)
            .map(|j| FakeTemplate {
                subject: j / templates_per_subject.max(1),
                media: vec![images_per_media; media_per_template],
            })
            .collect();
        FakeIjbSpec { which, templates, side: 48, seed: 0 }
    }
}

/// Detector score that [`write_fake_ijb`] gives image number `n` (1-based):
/// 1.0, 0.9, 0.8, 0.7, 0.6, then again from 1.0.
pub fn fake_detector_score(n: usize) -> f32 {
    [1.0, 0.9, 0.8, 0.7, 0.6][(n.max(1) - 1) % 5]
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

fn subject_colours(seed: u64, subject: usize) -> [[u8; 3]; 4] {
    let mut s = seed ^ (subject as u64).wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5EED;
    let mut c = [[0u8; 3]; 4];
    for col in c.iter_mut() {
        for v in col.iter_mut() {
            *v = (40.0 + 200.0 * unit(&mut s)) as u8;
        }
    }
    c
}

/// [`write_fake_ijb`] as a command writes it: into a hidden sibling of `root`, moved in place
/// once whole ([`Staged`](crate::util::fs::Staged)), so an interrupted run leaves nothing
/// half-written. A `root` that holds anything is refused, naming it, unless `overwrite`: the
/// old tree's images and meta lines would otherwise sit beside the new ones.
pub fn write_fake_ijb_to(root: &Path, spec: &FakeIjbSpec, overwrite: bool) -> Result<()> {
    let staged = crate::util::fs::Staged::folder(root, overwrite)
        .map_err(|e| AnalysisError::invalid("out", e.to_string()))?;
    write_fake_ijb(staged.path(0), spec)?;
    staged.commit().map_err(|e| AnalysisError::io(e.path, e.source))
}

/// Writes an IJB-shaped tree under `root` (created if needed) for tests of the loader, the
/// pooling and the evaluation binary, which cannot ship the real (licensed) benchmark.
///
/// Layout, so tests can compute expected values by hand: images are numbered `n = 1, 2, ...`
/// in template, media, image order and named `<n>.png`; template `j` (0-based in the spec) has
/// id `j + 1`; media ids run from 1 over the whole tree; the detector score is
/// [`fake_detector_score`]`(n)`; the pair file lists every template pair `(i, j)`, `i < j`,
/// in order, with label 1 when the subjects are equal. Each crop shows a disc in its subject's
/// face colour and, centred exactly on its landmarks, five dots of radius at least 2 pixels in
/// the subject's eye, nose and mouth colours; the landmarks are the ArcFace template under a
/// random similarity (rotation within ±0.25 rad), written with four decimals.
pub fn write_fake_ijb(root: &Path, spec: &FakeIjbSpec) -> Result<()> {
    if spec.templates.len() < 2 {
        return Err(AnalysisError::invalid("templates", "need at least 2 templates"));
    }
    if spec.side < 16 {
        return Err(AnalysisError::invalid("side", format!("expected ≥ 16, found {}", spec.side)));
    }
    if let Some(j) = spec.templates.iter().position(|t| t.media.is_empty() || t.media.contains(&0))
    {
        return Err(AnalysisError::invalid(
            "templates",
            format!("template {j} needs at least one media, each with at least one image"),
        ));
    }
    let meta = root.join("meta");
    let crops = root.join("loose_crop");
    for dir in [&meta, &crops] {
        fs::create_dir_all(dir).map_err(|e| AnalysisError::io(dir, e))?;
    }
    let side = f64::from(spec.side);
    let (mut tid, mut lmk) = (String::new(), String::new());
    let (mut n, mut media_id) = (0usize, 0u64);
    for (j, t) in spec.templates.iter().enumerate() {
        let colours = subject_colours(spec.seed, t.subject);
        for &count in &t.media {
            media_id += 1;
            for _ in 0..count {
                n += 1;
                let mut s = spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ n as u64;
                let face_scale = side / 112.0 * (0.6 + 0.15 * unit(&mut s));
                let angle = 0.5 * unit(&mut s) - 0.25;
                // centre the template's landmark centroid near the crop centre
                let centre = [56.0, 72.0];
                let pose = Similarity::from_parts(angle, face_scale, 0.0, 0.0);
                let c = pose.apply(centre);
                let shift = [side / 2.0 - c[0] + unit(&mut s) * 2.0 - 1.0, side / 2.0 - c[1]];
                let pose = Similarity { tx: shift[0], ty: shift[1], ..pose };
                let points: Vec<[f64; 2]> = ARCFACE_TEMPLATE
                    .iter()
                    .map(|p| {
                        let q = pose.apply(*p);
                        [(q[0] * 1e4).round() / 1e4, (q[1] * 1e4).round() / 1e4]
                    })
                    .collect();
                let light = 0.85 + 0.3 * unit(&mut s);
                let bg = [(unit(&mut s) * 90.0) as u8; 3];
                let face_r = 45.0 * face_scale;
                let dot_r = (3.0 * face_scale).max(2.0);
                let face_c = pose.apply(centre);
                let img = RgbImage::from_fn(spec.side, spec.side, |x, y| {
                    let (px, py) = (f64::from(x), f64::from(y));
                    let near = |p: [f64; 2], r: f64| (px - p[0]).hypot(py - p[1]) <= r;
                    let col = if let Some(k) = points.iter().position(|p| near(*p, dot_r)) {
                        colours[[1, 1, 2, 3, 3][k]]
                    } else if near(face_c, face_r) {
                        colours[0].map(|v| (f64::from(v) * light).min(255.0) as u8)
                    } else {
                        bg
                    };
                    Rgb(col)
                });
                let path = crops.join(format!("{n}.png"));
                img.save_with_format(&path, image::ImageFormat::Png)
                    .map_err(|source| AnalysisError::Image { path: path.clone(), source })?;
                tid.push_str(&format!("{n}.png {} {media_id}\n", j + 1));
                lmk.push_str(&format!("{n}.png"));
                for p in &points {
                    lmk.push_str(&format!(" {:.4} {:.4}", p[0], p[1]));
                }
                lmk.push_str(&format!(" {:.1}\n", fake_detector_score(n)));
            }
        }
    }
    let mut pairs = String::new();
    for i in 0..spec.templates.len() {
        for j in i + 1..spec.templates.len() {
            let same = spec.templates[i].subject == spec.templates[j].subject;
            pairs.push_str(&format!("{} {} {}\n", i + 1, j + 1, u8::from(same)));
        }
    }
    for (name, text) in [
        (spec.which.template_media_file(), tid),
        (spec.which.landmark_file(), lmk),
        (spec.which.pair_file(), pairs),
    ] {
        let path = meta.join(name);
        crate::util::fs::write_atomic(&path, text.as_bytes())
            .map_err(|e| AnalysisError::io(e.path, e.source))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::align::arcface_template;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn temp_root(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("groupface-ijb-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Three templates: T1 (subject 0) = media 1 {img 1, img 2} + media 2 {img 3};
    /// T2 (subject 0) = media 3 {img 4}; T3 (subject 1) = media 4 {img 5, img 6}.
    /// Detector scores of images 1..6: 1.0, 0.9, 0.8, 0.7, 0.6, 1.0.
    fn small_spec(which: Ijb) -> FakeIjbSpec {
        FakeIjbSpec {
            which,
            templates: vec![
                FakeTemplate { subject: 0, media: vec![2, 1] },
                FakeTemplate { subject: 0, media: vec![1] },
                FakeTemplate { subject: 1, media: vec![2] },
            ],
            side: 48,
            seed: 7,
        }
    }

    fn write_small(tag: &str, which: Ijb) -> PathBuf {
        let root = temp_root(tag);
        write_fake_ijb(&root, &small_spec(which)).unwrap();
        root
    }

    /// Hand features (dim 2) of images 1..6.
    fn hand_features() -> Matrix {
        let rows = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 4.0], [2.0, 0.0], [0.0, -1.0]];
        Matrix::from_rows(&rows, "hand features").unwrap()
    }

    #[test]
    fn loads_fake_tree() {
        let root = write_small("load", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        assert_eq!(meta.len(), 6);
        assert_eq!(meta.template_ids(), &[1, 2, 3]);
        let media: Vec<u64> = meta.images().iter().map(|i| i.media).collect();
        assert_eq!(media, vec![1, 1, 2, 3, 4, 4]);
        let scores: Vec<f32> = meta.images().iter().map(|i| i.detector_score).collect();
        assert_eq!(scores, vec![1.0, 0.9, 0.8, 0.7, 0.6, 1.0]);
        assert_eq!(meta.labels(), vec![true, false, false]);
        assert_eq!(meta.pairs()[2], TemplatePair { first: 2, second: 3, genuine: false });
        assert_eq!(meta.image_path(3).unwrap(), root.join("loose_crop/4.png"));
        assert!(meta.image_path(6).is_none());
        // the IJB-B prefix is not there
        assert!(matches!(IjbMeta::load(&root, Ijb::B), Err(AnalysisError::Io { .. })));
        let b = write_small("load-b", Ijb::B);
        assert_eq!(IjbMeta::load(&b, Ijb::B).unwrap().which(), Ijb::B);
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn alignment_puts_landmark_dots_on_the_template() {
        let root = write_small("align", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        let colours = subject_colours(7, 0);
        for side in [112, 56] {
            let crops = meta.aligned_range(0..4, side).unwrap();
            assert_eq!(crops.len(), 4);
            let t = arcface_template(side);
            for crop in &crops {
                assert_eq!(crop.dimensions(), (side, side));
                for (k, part) in [(0, 1), (1, 1), (2, 2), (3, 3), (4, 3)] {
                    let p = crop.get_pixel(t[k][0].round() as u32, t[k][1].round() as u32);
                    assert_eq!(p.0, colours[part], "landmark {k} at side {side}");
                }
            }
        }
        assert_eq!(meta.aligned_range(5..99, 112).unwrap().len(), 1);
        assert!(meta.aligned(6, 112).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn scoring_reports_the_templates_pooled_and_the_pairs_scored() {
        use crate::util::progress::Recorded;
        let root = write_small("progress", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        let sink = Recorded::default();
        let got = template_scores_with_progress(&meta, &hand_features(), true, &sink).unwrap();
        assert_eq!(got, template_scores(&meta, &hand_features(), true).unwrap());
        let stage = |what: &str, n| (format!("IJB-C: {what}"), n, n);
        let (pool, score) =
            (stage("pooling features into templates", 3), stage("scoring template pairs", 3));
        assert_eq!(sink.stages(), [pool.clone(), score.clone()]);
        // Group-aware scores pool v̂ as well.
        let sink = Recorded::default();
        let gdn = hand_features();
        let aware = group_aware_template_scores_with_progress(
            &meta,
            &hand_features(),
            &gdn,
            true,
            0.1,
            1.0 / 3.0,
            &sink,
        )
        .unwrap();
        assert_eq!(
            aware,
            group_aware_template_scores(&meta, &hand_features(), &gdn, true, 0.1, 1.0 / 3.0)
                .unwrap()
        );
        assert_eq!(sink.stages(), [pool, stage("pooling gdn into templates", 3), score]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hand_computed_template_scores() {
        let root = write_small("scores", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        let f = hand_features();
        // With detector scores (image feature x score, mean per media, sum of media):
        // T1 = mean(1.0·[1,0], 0.9·[0,2]) + 0.8·[1,1] = [0.5,0.9] + [0.8,0.8] = [1.3, 1.7]
        // T2 = 0.7·[3,4] ∝ [0.6, 0.8]
        // T3 = mean(0.6·[2,0], 1.0·[0,−1]) = [0.6, −0.5]
        let n1 = (1.3f64 * 1.3 + 1.7 * 1.7).sqrt();
        let n3 = (0.6f64 * 0.6 + 0.5 * 0.5).sqrt();
        let expected = [
            (1.3 * 0.6 + 1.7 * 0.8) / n1,
            (1.3 * 0.6 - 1.7 * 0.5) / (n1 * n3),
            (0.6 * 0.6 - 0.8 * 0.5) / n3,
        ];
        let got = template_scores(&meta, &f, true).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
        // Without: T1 = [0.5, 1] + [1, 1] = [1.5, 2] ∝ [0.6, 0.8] = T2; T3 = [1, −0.5].
        let n3 = (1.0f64 + 0.25).sqrt();
        let expected = [1.0, (0.6 - 0.4) / n3, (0.6 - 0.4) / n3];
        let got = template_scores(&meta, &f, false).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
        // template rows are unit length
        let t = template_embeddings(&meta, &f, true).unwrap();
        for row in t.iter_rows() {
            assert!((unit_cosine(row, row) - 1.0).abs() < 1e-6);
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hand_computed_group_aware_scores() {
        let root = write_small("group-aware", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        let rows = [[2.0, 0.0], [0.0, 2.0], [4.0, 4.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]];
        let gdn = Matrix::from_rows(&rows, "gdn").unwrap();
        // v̂(T1) = mean(mean([2,0],[0,2]), [4,4]) = mean([1,1], [4,4]) = [2.5, 2.5]
        // v̂(T2) = [1, 1]; v̂(T3) = mean([0,0], [2,0]) = [1, 0]. No detector weighting.
        let g = template_gdn_features(&meta, &gdn).unwrap();
        assert_eq!(g.data, &[2.5, 2.5, 1.0, 1.0, 1.0, 0.0]);
        let plain = template_scores(&meta, &hand_features(), true).unwrap();
        let dist = [(1.5f64 * 1.5 + 1.5 * 1.5).sqrt(), (1.5f64 * 1.5 + 2.5 * 2.5).sqrt(), 1.0f64];
        let got = group_aware_template_scores(&meta, &hand_features(), &gdn, true, 0.1, 1.0 / 3.0)
            .unwrap();
        for k in 0..3 {
            let e = f64::from(plain[k]) - 0.1 * dist[k].cbrt();
            assert!((f64::from(got[k]) - e).abs() < 1e-6, "pair {k}: {} vs {e}", got[k]);
        }
        // β = 0 gives back the plain scores
        let zero =
            group_aware_template_scores(&meta, &hand_features(), &gdn, true, 0.0, 1.0).unwrap();
        assert_eq!(zero, plain);
        let bad_gamma = group_aware_template_scores(&meta, &hand_features(), &gdn, true, 0.1, 0.0);
        assert!(matches!(bad_gamma, Err(AnalysisError::InvalidInput { name: "gamma", .. })));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn feature_rows_must_match_images() {
        let root = write_small("rows", Ijb::C);
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        let short = Matrix::from_rows(&[[1.0f32, 0.0]; 5], "short").unwrap();
        match template_scores(&meta, &short, true) {
            Err(AnalysisError::InvalidInput { name: "features", what }) => {
                assert!(what.contains("6 rows") && what.contains("found 5"), "{what}")
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(template_gdn_features(&meta, &short).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_image_names_the_listing_line() {
        let root = write_small("missing", Ijb::C);
        fs::remove_file(root.join("loose_crop/3.png")).unwrap();
        let meta = IjbMeta::load(&root, Ijb::C).unwrap();
        assert!(meta.aligned(1, 112).is_ok());
        match meta.aligned(2, 112) {
            Err(e @ AnalysisError::MissingImage { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("loose_crop/3.png"), "{msg}");
                assert!(msg.contains("line 3 of") && msg.contains("ijbc_name_5pts_score.txt"));
            }
            other => panic!("expected MissingImage, got {other:?}"),
        }
        fs::write(root.join("loose_crop/4.png"), b"not a png").unwrap();
        assert!(matches!(meta.aligned(3, 112), Err(AnalysisError::Image { .. })));
        fs::remove_dir_all(&root).unwrap();
    }

    /// Replaces line `line` (1-based) of a meta file.
    fn edit_line(root: &Path, file: &str, line: usize, text: &str) {
        let path = root.join("meta").join(file);
        let old = fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = old.lines().map(str::to_owned).collect();
        lines[line - 1] = text.to_owned();
        fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    fn parse_error(root: &Path) -> (PathBuf, usize, String) {
        match IjbMeta::load(root, Ijb::C) {
            Err(AnalysisError::Parse { path, line, what }) => (path, line, what),
            other => panic!("expected a Parse error, got {other:?}"),
        }
    }

    #[test]
    fn pair_with_unknown_template_is_named() {
        let root = write_small("unknown", Ijb::C);
        let pairs = root.join("meta/ijbc_template_pair_label.txt");
        let text = fs::read_to_string(&pairs).unwrap() + "\n2 99 0\n";
        fs::write(&pairs, text).unwrap();
        let (path, line, what) = parse_error(&root);
        assert_eq!((path, line), (pairs, 5), "the blank line still counts");
        assert!(what.contains("template 99") && what.contains("ijbc_face_tid_mid.txt"), "{what}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let tid = "ijbc_face_tid_mid.txt";
        let lmk = "ijbc_name_5pts_score.txt";
        let pair = "ijbc_template_pair_label.txt";
        let good_lmk = "2.png 1 1 3 1 2 2 1 3 3 3 0.9";
        let cases: [(&str, usize, &str, &str); 9] = [
            (tid, 2, "2.png 1", "expected 3 fields"),
            (tid, 4, "4.png two 3", "template id, found `two`"),
            (tid, 5, "5.png 3 -4", "media id, found `-4`"),
            (lmk, 2, "2.png 1 1 3 1 2 2 1 3 3 3", "expected 12 fields"),
            (lmk, 2, "2.png 1 1 3 1 2 2 1 3 3 nan 0.9", "landmark y, found `nan`"),
            (lmk, 2, "2.png 1 1 1 1 1 1 1 1 1 1 0.9", "all 5 at one point"),
            (lmk, 2, "9.png 1 1 3 1 2 2 1 3 3 3 0.9", "`9.png` here but `2.png` on line 2"),
            (pair, 1, "1 2 yes", "label 0 or 1, found `yes`"),
            (pair, 3, "2 3", "expected 3 fields"),
        ];
        for (file, line, text, expected) in cases {
            let root = write_small("malformed", Ijb::C);
            edit_line(&root, file, line, text);
            let (path, at, what) = parse_error(&root);
            assert_eq!(path, root.join("meta").join(file), "{text}");
            assert_eq!(at, line, "{text}");
            assert!(what.contains(expected), "{text}: {what}");
            fs::remove_dir_all(&root).unwrap();
        }
        // bytes that are not UTF-8 name their line too
        let root = write_small("malformed-utf8", Ijb::C);
        let pairs = root.join("meta").join(pair);
        let mut bytes = fs::read(&pairs).unwrap();
        bytes.extend_from_slice(b"1 \xff\xfe 0\n");
        fs::write(&pairs, bytes).unwrap();
        let (path, at, what) = parse_error(&root);
        assert_eq!((path, at), (pairs, 4));
        assert!(what.contains("UTF-8"), "{what}");
        fs::remove_dir_all(&root).unwrap();
        // the good landmark line above really is accepted
        let root = write_small("malformed-ok", Ijb::C);
        edit_line(&root, lmk, 2, good_lmk);
        assert!(IjbMeta::load(&root, Ijb::C).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn files_of_different_lengths_and_empty_files() {
        let root = write_small("lengths", Ijb::C);
        let lmk_path = root.join("meta/ijbc_name_5pts_score.txt");
        let text = fs::read_to_string(&lmk_path).unwrap();
        let five: Vec<&str> = text.lines().take(5).collect();
        fs::write(&lmk_path, five.join("\n")).unwrap();
        let (path, line, what) = parse_error(&root);
        assert_eq!((path, line), (root.join("meta/ijbc_face_tid_mid.txt"), 6));
        assert!(what.contains("lists 6 images") && what.contains("lists 5"), "{what}");
        fs::write(root.join("meta/ijbc_face_tid_mid.txt"), "\n\n").unwrap();
        let (path, line, what) = parse_error(&root);
        assert_eq!((path, line), (lmk_path.clone(), 1));
        assert!(what.contains("lists 5 images") && what.contains("lists 0"), "{what}");
        fs::write(&lmk_path, "").unwrap();
        let (_, _, what) = parse_error(&root);
        assert!(what.contains("no image"), "{what}");
        fs::remove_dir_all(&root).unwrap();

        let root = write_small("no-pairs", Ijb::C);
        fs::write(root.join("meta/ijbc_template_pair_label.txt"), "").unwrap();
        let (_, _, what) = parse_error(&root);
        assert!(what.contains("no pair"), "{what}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn uniform_spec_and_names() {
        let spec = FakeIjbSpec::uniform(Ijb::B, 3, 2, 2, 3);
        assert_eq!(spec.templates.len(), 6);
        assert_eq!(spec.templates[3], FakeTemplate { subject: 1, media: vec![3, 3] });
        let root = temp_root("uniform");
        write_fake_ijb(&root, &spec).unwrap();
        let meta = IjbMeta::load(&root, Ijb::B).unwrap();
        assert_eq!((meta.len(), meta.pairs().len()), (36, 15));
        assert_eq!(meta.labels().iter().filter(|g| **g).count(), 3);
        fs::remove_dir_all(&root).unwrap();
        let mut bad = spec.clone();
        bad.templates[1].media.push(0);
        assert!(write_fake_ijb(&temp_root("bad"), &bad).is_err());
        assert_eq!("IJB-C".parse::<Ijb>().unwrap(), Ijb::C);
        assert_eq!("ijbb".parse::<Ijb>().unwrap(), Ijb::B);
        assert!("ijba".parse::<Ijb>().is_err());
        assert_eq!(Ijb::B.pair_file(), "ijbb_template_pair_label.txt");
    }

    #[test]
    fn a_used_root_is_refused_and_replaced_whole_when_asked() {
        // A second tree of fewer subjects written over the first would leave the first's
        // crops beside the new meta files.
        let root = temp_root("used");
        write_fake_ijb_to(&root, &FakeIjbSpec::uniform(Ijb::C, 3, 2, 1, 1), false).unwrap();
        let crops = |root: &Path| fs::read_dir(root.join("loose_crop")).unwrap().count();
        assert_eq!(crops(&root), 6);
        let smaller = FakeIjbSpec::uniform(Ijb::C, 2, 2, 1, 1);
        let err = write_fake_ijb_to(&root, &smaller, false).unwrap_err().to_string();
        assert!(err.contains("out") && err.contains("overwrite=true"), "{err}");
        assert!(err.contains(&root.display().to_string()), "{err}");
        assert_eq!(crops(&root), 6, "a refusal changes nothing");
        write_fake_ijb_to(&root, &smaller, true).unwrap();
        assert_eq!(crops(&root), 4, "the old crops are gone, not mixed in");
        assert_eq!(IjbMeta::load(&root, Ijb::C).unwrap().len(), 4);
        fs::remove_dir_all(&root).unwrap();
    }
}
