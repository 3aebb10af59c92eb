//! LFW-style verification accuracy, computed as insightface's `evaluate()` computes it.
//!
//! The protocol (SPEC section 5): squared L2 distances of L2-normalised embeddings; thresholds
//! 0, 0.01, ..., 3.99; 10 contiguous folds in pair order split like scikit-learn's
//! `KFold(10, shuffle=False)`; for each fold the smallest threshold reaching the best accuracy
//! on the other nine, a pair called "same" when its distance is *below* the threshold, and the
//! accuracy on the held-out fold; then the mean and the population standard deviation.
//!
//! Parity, decided carefully: with 6000 pairs one flipped decision moves LFW accuracy by
//! 0.017 %, the size of the differences papers argue about. A decision flips only when a
//! distance and a threshold swap order, so we reproduce both to the bit:
//!
//! * thresholds are `i * 0.01` in `f64`, which is exactly what `np.arange(0, 4, 0.01)` holds
//!   (numpy fills an arange as `start + i * delta`);
//! * insightface's `test()` holds embeddings as `float64` (the `float32` network outputs, the
//!   flip-sum done in `float64`) and normalises them with `sklearn.preprocessing.normalize`;
//!   [`evaluate`] does the same arithmetic (norm by numpy's `einsum` order, then a division),
//!   and the distance is `np.sum(np.square(a - b), 1)` in numpy's pairwise order. The fixture
//!   test checks every distance bit for bit (numpy on x86_64; see the private `numpy` module for
//!   where other builds may round differently). `f32` distances, wrong by ~1e-7 against a grid
//!   step of 0.01, would put roughly one pair in 10⁵ on the other side of a threshold.
//! * Mean and standard deviation use numpy's summation order, so they match to the last bit too.
//! * VAL@FAR interpolates thresholds as scipy up to 1.8 did; newer scipy raises inside
//!   insightface's `calculate_val` (see `slinear`).
//!
//! Pass the un-normalised flip-sum `f(x) + f(flip(x))` (or both halves to [`flip_sum`]) and
//! leave `normalise` on: that is insightface's pipeline. Pass already normalised `float64`
//! embeddings with `normalise: false` to reproduce a direct call of `evaluate()` on them.

use super::numpy;
use super::pairs::Pair;
use super::{EvalError, Matrix, Result};

/// Number of thresholds of the accuracy grid `0, 0.01, ..., 3.99`.
pub const ACCURACY_THRESHOLDS: usize = 400;
/// Step of the accuracy grid.
pub const ACCURACY_STEP: f64 = 0.01;
/// Number of thresholds of the VAL grid `0, 0.001, ..., 3.999`.
pub const VAL_THRESHOLDS: usize = 4000;
/// Step of the VAL grid.
pub const VAL_STEP: f64 = 0.001;

/// `np.arange(0, count * step, step)`: element `i` is `0 + i * step`, as numpy fills it.
pub fn threshold_grid(count: usize, step: f64) -> Vec<f64> {
    (0..count).map(|i| 0.0 + i as f64 * step).collect()
}

/// How to run the protocol; the default is insightface's.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Number of folds (insightface: 10). 1 means train and test on all pairs, as insightface's
    /// `LFold` does; otherwise it must not exceed the number of pairs.
    pub folds: usize,
    /// L2-normalise each embedding in `f64` first, as insightface's `test()` does before calling
    /// `evaluate()`. Turn off only for embeddings that are already normalised in `f64`.
    pub normalise: bool,
    /// Target FAR of VAL@FAR (insightface: 1e-3); `None` skips it.
    pub val_far: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Self { folds: 10, normalise: true, val_far: Some(1e-3) }
    }
}

/// insightface's VAL@FAR (`calculate_val`): per fold, the threshold whose training FAR equals
/// the target, interpolated on the 0.001 grid, and the TAR (VAL) and FAR it gives on the test
/// fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Val {
    /// The target FAR.
    pub target_far: f64,
    /// Mean VAL (TAR) over the folds.
    pub val: f64,
    /// Population standard deviation of VAL over the folds.
    pub val_std: f64,
    /// Mean FAR reached on the test folds.
    pub far: f64,
    /// The interpolated threshold of each fold.
    pub thresholds: Vec<f64>,
}

/// Everything insightface's `evaluate()` returns, plus what it keeps to itself.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationResult {
    /// Test accuracy of each fold, in fold order.
    pub fold_accuracies: Vec<f64>,
    /// `np.mean(fold_accuracies)`: the number papers print.
    pub accuracy: f64,
    /// `np.std(fold_accuracies)` (population, ddof = 0): the ± papers print.
    pub std: f64,
    /// The threshold picked on the training folds of each fold.
    pub best_thresholds: Vec<f64>,
    /// The accuracy grid (`0, 0.01, ..., 3.99`).
    pub thresholds: Vec<f64>,
    /// Test-fold TPR at each grid threshold, averaged over folds (insightface's `tpr`).
    pub tpr: Vec<f64>,
    /// Test-fold FPR at each grid threshold, averaged over folds (insightface's `fpr`).
    pub fpr: Vec<f64>,
    /// VAL@FAR; `None` when not asked for or undefined (a fold without negative or positive
    /// pairs, where insightface divides by zero).
    pub val: Option<Val>,
    /// Number of pairs.
    pub pairs: usize,
    /// Number of same-identity pairs.
    pub positives: usize,
    /// Number of different-identity pairs.
    pub negatives: usize,
}

/// The test blocks of scikit-learn's `KFold(folds, shuffle=False)` over `n` pairs in order:
/// contiguous ranges, the first `n % folds` one pair larger; each fold trains on all other
/// pairs. With `folds == 1` the single fold tests and trains on all pairs (insightface's
/// `LFold`).
pub fn kfold(n: usize, folds: usize) -> Result<Vec<std::ops::Range<usize>>> {
    if folds == 0 || (folds > 1 && folds > n) {
        return Err(EvalError::invalid(
            "folds",
            format!("1 (train on all, test on all) or 2..={n} for {n} pairs"),
            folds,
        ));
    }
    let mut out = Vec::with_capacity(folds);
    let mut start = 0;
    for k in 0..folds {
        let size = n / folds + usize::from(k < n % folds);
        out.push(start..start + size);
        start += size;
    }
    Ok(out)
}

/// `f(x) + f(flip(x))` in `f64`, as insightface adds its two `float32` outputs in `float64`
/// (exactly, where an `f32` sum would round).
pub fn flip_sum(plain: &Matrix<f32>, flipped: &Matrix<f32>) -> Result<Matrix<f64>> {
    plain.check_finite()?;
    flipped.check_finite()?;
    if plain.rows != flipped.rows {
        return Err(EvalError::length_mismatch(
            &plain.origin,
            plain.rows,
            &flipped.origin,
            flipped.rows,
            "rows",
        ));
    }
    if plain.cols != flipped.cols {
        return Err(EvalError::length_mismatch(
            &plain.origin,
            plain.cols,
            &flipped.origin,
            flipped.cols,
            "columns",
        ));
    }
    let data =
        plain.data.iter().zip(&flipped.data).map(|(&a, &b)| f64::from(a) + f64::from(b)).collect();
    Ok(Matrix { rows: plain.rows, cols: plain.cols, data, origin: plain.origin.clone() })
}

/// Rows as `f64`, normalised like scikit-learn when asked.
fn prepared<T: Copy + Into<f64>>(m: &Matrix<T>, normalise: bool) -> Result<Vec<f64>> {
    m.check_finite()?;
    let mut data: Vec<f64> = m.data.iter().map(|&v| v.into()).collect();
    if normalise && m.cols > 0 {
        for row in data.chunks_mut(m.cols) {
            numpy::sklearn_normalize(row);
        }
    }
    Ok(data)
}

/// Squared L2 distances between row i of `a` and row i of `b` (both `[pairs, dim]`), in `f64`,
/// after scikit-learn-style normalisation when `normalise` is set.
pub fn squared_distances<T: Copy + Into<f64>>(
    a: &Matrix<T>,
    b: &Matrix<T>,
    normalise: bool,
) -> Result<Vec<f64>> {
    if a.rows != b.rows {
        return Err(EvalError::length_mismatch(&a.origin, a.rows, &b.origin, b.rows, "rows"));
    }
    if a.cols != b.cols {
        return Err(EvalError::length_mismatch(&a.origin, a.cols, &b.origin, b.cols, "columns"));
    }
    let (pa, pb) = (prepared(a, normalise)?, prepared(b, normalise)?);
    let d = a.cols;
    let mut scratch = Vec::with_capacity(d);
    Ok((0..a.rows)
        .map(|i| {
            numpy::squared_distance(&pa[i * d..(i + 1) * d], &pb[i * d..(i + 1) * d], &mut scratch)
        })
        .collect())
}

/// Verification with insightface's defaults: pair i compares row i of `embeddings_a` with row i
/// of `embeddings_b`; `issame[i]` says whether it is a same-identity pair.
///
/// # Shapes
/// `embeddings_a`, `embeddings_b`: `[pairs, dim]`; `issame`: `[pairs]`.
pub fn evaluate<T: Copy + Into<f64>>(
    embeddings_a: &Matrix<T>,
    embeddings_b: &Matrix<T>,
    issame: &[bool],
) -> Result<VerificationResult> {
    evaluate_with(embeddings_a, embeddings_b, issame, &Options::default())
}

/// [`evaluate`] with explicit [`Options`].
pub fn evaluate_with<T: Copy + Into<f64>>(
    embeddings_a: &Matrix<T>,
    embeddings_b: &Matrix<T>,
    issame: &[bool],
    options: &Options,
) -> Result<VerificationResult> {
    if embeddings_a.rows != issame.len() {
        return Err(EvalError::length_mismatch(
            format!("embeddings_a ({})", embeddings_a.origin),
            embeddings_a.rows,
            "issame",
            issame.len(),
            "entries",
        ));
    }
    let dist = squared_distances(embeddings_a, embeddings_b, options.normalise)?;
    evaluate_distances_with(&dist, issame, options)
}

/// Verification on insightface's interleaved layout: pair i is rows `2i` and `2i + 1`, as in
/// the `.bin` files and in `evaluate(embeddings, issame)`.
///
/// # Shapes
/// `embeddings`: `[2 * pairs, dim]`; `issame`: `[pairs]`.
pub fn evaluate_interleaved<T: Copy + Into<f64>>(
    embeddings: &Matrix<T>,
    issame: &[bool],
    options: &Options,
) -> Result<VerificationResult> {
    embeddings.check_finite()?;
    if embeddings.rows != 2 * issame.len() {
        return Err(EvalError::length_mismatch(
            format!("interleaved embeddings ({})", embeddings.origin),
            embeddings.rows,
            "2 x issame",
            2 * issame.len(),
            "rows",
        ));
    }
    evaluate_with(&embeddings.strided_rows(0, 2), &embeddings.strided_rows(1, 2), issame, options)
}

/// Verification over a pair list (from [`crate::protocol::pairs::read_pairs`]) on one embedding
/// matrix, in the order of the list (the folds are contiguous blocks of it).
///
/// # Shapes
/// `embeddings`: `[rows, dim]`; every pair index `< rows`.
pub fn evaluate_pairs<T: Copy + Into<f64>>(
    embeddings: &Matrix<T>,
    pairs: &[Pair],
    options: &Options,
) -> Result<VerificationResult> {
    let dist = pair_distances(embeddings, pairs.iter().copied(), options.normalise)?;
    let issame: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    evaluate_distances_with(&dist, &issame, options)
}

/// The squared distances of pairs of rows of one matrix, in pair order: bit for bit what
/// [`squared_distances`] gives for the two rows of each pair copied out, but with every row
/// prepared once and nothing held per pair beyond its distance (all pairs of 10,000 rows are
/// 5·10⁷, and pair-major copies of width 512 would be 200 GB).
///
/// # Shapes
/// `embeddings`: `[rows, dim]`; every pair index `< rows`; output: one distance per pair.
pub fn pair_distances<T: Copy + Into<f64>>(
    embeddings: &Matrix<T>,
    pairs: impl IntoIterator<Item = Pair>,
    normalise: bool,
) -> Result<Vec<f64>> {
    let prepared = prepared(embeddings, normalise)?;
    let d = embeddings.cols;
    let pairs = pairs.into_iter();
    let mut scratch = Vec::with_capacity(d);
    let mut dist = Vec::with_capacity(pairs.size_hint().0);
    for (k, (a, b, _)) in pairs.enumerate() {
        for index in [a, b] {
            if index >= embeddings.rows {
                return Err(EvalError::invalid(
                    format!("pair {k}"),
                    format!(
                        "row indices below {} (the rows of {})",
                        embeddings.rows, embeddings.origin
                    ),
                    index,
                ));
            }
        }
        dist.push(numpy::squared_distance(
            &prepared[a * d..(a + 1) * d],
            &prepared[b * d..(b + 1) * d],
            &mut scratch,
        ));
    }
    Ok(dist)
}

/// Verification from flat row-major slices: pair i compares `a[i*dim..(i+1)*dim]` with the
/// same rows of `b`, insightface's defaults.
///
/// # Shapes
/// `a`, `b`: `[pairs * dim]`; `issame`: `[pairs]`.
pub fn evaluate_embeddings<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    dim: usize,
    issame: &[bool],
) -> Result<VerificationResult> {
    evaluate_embeddings_with(a, b, dim, issame, &Options::default())
}

/// [`evaluate_embeddings`] with explicit [`Options`].
pub fn evaluate_embeddings_with<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    dim: usize,
    issame: &[bool],
    options: &Options,
) -> Result<VerificationResult> {
    let rows = |data: &[T], name: &str| -> Result<Matrix<T>> {
        if dim == 0 || data.len() != dim * issame.len() {
            return Err(EvalError::invalid(
                format!("embeddings {name}"),
                format!("{} values ({} pairs x dim {dim})", dim * issame.len(), issame.len()),
                format!("{} values", data.len()),
            ));
        }
        Ok(Matrix {
            rows: issame.len(),
            cols: dim,
            data: data.to_vec(),
            origin: format!("embeddings {name}"),
        })
    };
    evaluate_with(&rows(a, "a")?, &rows(b, "b")?, issame, options)
}

/// The protocol on precomputed squared distances (smaller = more alike), insightface's
/// defaults. A similarity `s` in [-1, 1] of unit vectors enters as `2 - 2 s`.
///
/// # Shapes
/// `distances`, `issame`: `[pairs]`.
pub fn evaluate_distances(distances: &[f64], issame: &[bool]) -> Result<VerificationResult> {
    evaluate_distances_with(distances, issame, &Options::default())
}

/// [`evaluate_distances`] with explicit [`Options`].
pub fn evaluate_distances_with(
    distances: &[f64],
    issame: &[bool],
    options: &Options,
) -> Result<VerificationResult> {
    if distances.len() != issame.len() {
        return Err(EvalError::length_mismatch(
            "distances",
            distances.len(),
            "issame",
            issame.len(),
            "entries",
        ));
    }
    if distances.is_empty() {
        return Err(EvalError::Empty {
            what: "the pair list".into(),
            expected: "at least one pair".into(),
        });
    }
    if let Some(i) = distances.iter().position(|d| !d.is_finite()) {
        return Err(EvalError::NonFinite {
            origin: "distances".into(),
            row: i,
            col: None,
            value: distances[i],
        });
    }
    if let Some(far) = options.val_far {
        if !(0.0..=1.0).contains(&far) {
            return Err(EvalError::invalid("val_far", "a FAR in [0, 1]", far));
        }
    }
    let splits = kfold(distances.len(), options.folds)?;
    let n = distances.len();
    let positives = issame.iter().filter(|&&s| s).count();

    let thresholds = threshold_grid(ACCURACY_THRESHOLDS, ACCURACY_STEP);
    let table = CountTable::new(distances, issame, &thresholds);
    let folds = splits.len();
    let mut fold_accuracies = Vec::with_capacity(folds);
    let mut best_thresholds = Vec::with_capacity(folds);
    let mut tpr_sum = vec![0.0; thresholds.len()];
    let mut fpr_sum = vec![0.0; thresholds.len()];
    for (k, test) in splits.iter().enumerate() {
        let test_counts = table.counts(test.clone());
        let train_counts =
            if folds == 1 { test_counts.clone() } else { table.all.minus(&test_counts) };
        // np.argmax over the training accuracies: the first threshold with the most correct
        // calls (the accuracy is that count over a fixed denominator, so counts compare alike).
        let mut best = 0;
        let mut best_correct = train_counts.correct(0);
        for j in 1..thresholds.len() {
            let c = train_counts.correct(j);
            if c > best_correct {
                best = j;
                best_correct = c;
            }
        }
        best_thresholds.push(thresholds[best]);
        fold_accuracies.push(test_counts.correct(best) as f64 / test.len() as f64);
        for j in 0..thresholds.len() {
            let (tpr, fpr) = test_counts.rates(j);
            // np.mean(tprs, 0): the folds are added one after the other.
            if k == 0 {
                tpr_sum[j] = tpr;
                fpr_sum[j] = fpr;
            } else {
                tpr_sum[j] += tpr;
                fpr_sum[j] += fpr;
            }
        }
    }
    let tpr = tpr_sum.iter().map(|s| s / folds as f64).collect();
    let fpr = fpr_sum.iter().map(|s| s / folds as f64).collect();
    let val = match options.val_far {
        Some(target) => val_at_far(distances, issame, &splits, target),
        None => None,
    };
    Ok(VerificationResult {
        accuracy: numpy::mean(&fold_accuracies),
        std: numpy::std(&fold_accuracies),
        fold_accuracies,
        best_thresholds,
        thresholds,
        tpr,
        fpr,
        val,
        pairs: n,
        positives,
        negatives: n - positives,
    })
}

/// Confusion counts of ranges of pairs at every grid threshold. A pair is called "same"
/// (`dist < threshold`) from the first grid threshold above its distance on; counting these
/// indices gives every confusion matrix of the grid in O(pairs + thresholds), where insightface
/// recounts all pairs for each of the 400 thresholds. The indices are found again at each count
/// rather than stored: 5·10⁷ pairs would otherwise hold 250 MB more per grid.
struct CountTable<'a> {
    distances: &'a [f64],
    issame: &'a [bool],
    grid: Vec<f64>,
    all: Counts,
}

/// Confusion counts of a set of pairs at every grid threshold, as histograms of the index of
/// the first threshold calling each pair same.
#[derive(Clone)]
struct Counts {
    /// `pos[j]`: positive pairs first called same at threshold j (j = grid length: never).
    pos: Vec<u64>,
    neg: Vec<u64>,
    /// Cumulative sums of the above: pairs called same at threshold j.
    tp: Vec<u64>,
    fp: Vec<u64>,
    positives: u64,
    negatives: u64,
}

impl<'a> CountTable<'a> {
    fn new(distances: &'a [f64], issame: &'a [bool], grid: &[f64]) -> Self {
        let mut table = Self { distances, issame, grid: grid.to_vec(), all: Counts::empty(0) };
        table.all = table.counts(0..distances.len());
        table
    }

    fn counts(&self, range: std::ops::Range<usize>) -> Counts {
        let mut c = Counts::empty(self.grid.len());
        for (&d, &same) in self.distances[range.clone()].iter().zip(&self.issame[range]) {
            let j = self.grid.partition_point(|&t| t <= d);
            if same {
                c.pos[j] += 1;
            } else {
                c.neg[j] += 1;
            }
        }
        c.finish();
        c
    }
}

impl Counts {
    fn empty(grid_len: usize) -> Self {
        Self {
            pos: vec![0; grid_len + 1],
            neg: vec![0; grid_len + 1],
            tp: vec![0; grid_len],
            fp: vec![0; grid_len],
            positives: 0,
            negatives: 0,
        }
    }

    fn finish(&mut self) {
        let (mut tp, mut fp) = (0, 0);
        for j in 0..self.tp.len() {
            tp += self.pos[j];
            fp += self.neg[j];
            self.tp[j] = tp;
            self.fp[j] = fp;
        }
        self.positives = self.pos.iter().sum();
        self.negatives = self.neg.iter().sum();
    }

    fn minus(&self, other: &Counts) -> Counts {
        let mut c = Counts::empty(self.tp.len());
        for j in 0..self.pos.len() {
            c.pos[j] = self.pos[j] - other.pos[j];
            c.neg[j] = self.neg[j] - other.neg[j];
        }
        c.finish();
        c
    }

    /// Correct calls at threshold j: true positives plus true negatives.
    fn correct(&self, j: usize) -> u64 {
        self.tp[j] + (self.negatives - self.fp[j])
    }

    /// insightface's `calculate_accuracy` rates: 0 when the denominator is 0.
    fn rates(&self, j: usize) -> (f64, f64) {
        let tpr = if self.positives == 0 { 0.0 } else { self.tp[j] as f64 / self.positives as f64 };
        let fpr = if self.negatives == 0 { 0.0 } else { self.fp[j] as f64 / self.negatives as f64 };
        (tpr, fpr)
    }
}

/// insightface's `calculate_val`; `None` where it would divide by zero.
fn val_at_far(
    distances: &[f64],
    issame: &[bool],
    splits: &[std::ops::Range<usize>],
    target: f64,
) -> Option<Val> {
    let grid = threshold_grid(VAL_THRESHOLDS, VAL_STEP);
    let table = CountTable::new(distances, issame, &grid);
    let mut vals = Vec::with_capacity(splits.len());
    let mut fars = Vec::with_capacity(splits.len());
    let mut thresholds = Vec::with_capacity(splits.len());
    for test in splits {
        let test_counts = table.counts(test.clone());
        let train =
            if splits.len() == 1 { test_counts.clone() } else { table.all.minus(&test_counts) };
        if train.negatives == 0 || test_counts.negatives == 0 || test_counts.positives == 0 {
            return None;
        }
        let far_train: Vec<f64> =
            train.fp.iter().map(|&fp| fp as f64 / train.negatives as f64).collect();
        let max_far = far_train.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let threshold = if max_far >= target { slinear(&far_train, &grid, target) } else { 0.0 };
        let (mut accepted_same, mut accepted_diff) = (0u64, 0u64);
        for i in test.clone() {
            if distances[i] < threshold {
                if issame[i] {
                    accepted_same += 1;
                } else {
                    accepted_diff += 1;
                }
            }
        }
        vals.push(accepted_same as f64 / test_counts.positives as f64);
        fars.push(accepted_diff as f64 / test_counts.negatives as f64);
        thresholds.push(threshold);
    }
    Some(Val {
        target_far: target,
        val: numpy::mean(&vals),
        val_std: numpy::std(&vals),
        far: numpy::mean(&fars),
        thresholds,
    })
}

/// `scipy.interpolate.interp1d(x, y, kind='slinear')(at)` as scipy up to 1.8 evaluates it, for
/// a non-decreasing `x` that may repeat values and `x[0] <= at <= x[last]`.
///
/// That interpolant is a degree-1 B-spline with knots `[x0, x0, x1, ..., xlast, xlast]` and
/// coefficients `y`. Its evaluation finds the last knot interval starting at or before `at`
/// (so among repeated FAR values the *last* threshold having it is used) and computes the two
/// basis weights as de Boor's recursion does; a zero-length interval (possible only when `at`
/// equals the largest FAR and it repeats) gives weights 0 and the value 0. scipy 1.9 and later
/// refuse repeated `x` instead (insightface issues #2152, #2290), which is why insightface
/// users pin scipy 1.8.1; this is the behaviour their numbers come from.
fn slinear(x: &[f64], y: &[f64], at: f64) -> f64 {
    let n = x.len();
    let mut j = 0;
    for (i, &xi) in x.iter().enumerate().take(n - 1) {
        if xi <= at {
            j = i;
        }
    }
    let (xa, xb) = (x[j], x[j + 1]);
    if xb == xa {
        return 0.0;
    }
    let w = 1.0 / (xb - xa);
    let h0 = 0.0 + w * (xb - at);
    let h1 = w * (at - xa);
    (0.0 + y[j] * h0) + y[j + 1] * h1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an `f64` written by Python's `repr` (shortest round-trip; exact with `parse`).
    fn f(v: &serde_json::Value) -> f64 {
        v.as_str().expect("floats are stored as strings").parse().unwrap()
    }

    fn fs(v: &serde_json::Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(f).collect()
    }

    fn hex_f32(s: &str) -> Vec<f32> {
        (0..s.len() / 8)
            .map(|i| f32::from_bits(u32::from_str_radix(&s[8 * i..8 * i + 8], 16).unwrap()))
            .collect()
    }

    fn hex_f64(s: &str) -> Vec<f64> {
        (0..s.len() / 16)
            .map(|i| f64::from_bits(u64::from_str_radix(&s[16 * i..16 * i + 16], 16).unwrap()))
            .collect()
    }

    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/eval_reference.json"
        )))
        .unwrap()
    }

    #[test]
    fn thresholds_are_numpy_arange() {
        let t = threshold_grid(ACCURACY_THRESHOLDS, ACCURACY_STEP);
        assert_eq!(t.len(), 400);
        // 35 * 0.01 is 0.35000000000000003 in f64, and so is np.arange(0, 4, 0.01)[35]; the
        // literal 0.35 is a different double (51 of the 400 grid values differ so).
        assert_eq!(t[35], 0.35000000000000003);
        assert_ne!(t[35], 0.35);
        assert_eq!(t[3], 0.03);
        assert_eq!(t[399], 3.99);
        assert_eq!(threshold_grid(VAL_THRESHOLDS, VAL_STEP)[3999], 3.999);
    }

    #[test]
    fn kfold_matches_sklearn_sizes_and_order() {
        // 23 pairs in 10 folds: 23 % 10 = 3 folds of 3, then 7 folds of 2.
        let s = kfold(23, 10).unwrap();
        let sizes: Vec<usize> = s.iter().map(|t| t.len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(s[1], 3..6);
        assert_eq!(s[9], 21..23);
        assert_eq!(kfold(4, 1).unwrap(), vec![0..4]);
        assert!(kfold(9, 10).unwrap_err().to_string().contains("2..=9 for 9 pairs"));
        assert!(kfold(9, 0).is_err());
    }

    /// Ten pairs by hand, two folds of five.
    ///
    /// distances  0.05 0.30 0.10 0.50 0.70 | 0.20 0.60 0.15 0.90 0.45
    /// issame     1    1    1    0    0    | 1    0    1    0    1
    ///
    /// Fold 0 tests pairs 0..5 and trains on 5..10. On the training pairs, "same" below t:
    /// t in (0.45, 0.60] calls 0.20, 0.15, 0.45 same and 0.60, 0.90 different: 5/5 correct.
    /// The smallest grid threshold above 0.45 is 0.46 (45 * 0.01 rounds to the same double as
    /// the literal 0.45, and 0.45 < 0.45 is false). With t = 0.46 the test fold calls
    /// 0.05, 0.30, 0.10 same (right) and 0.50, 0.70 different (right): accuracy 5/5 = 1.
    /// Fold 1 trains on 0..5: t in (0.30, 0.50] is perfect, first grid value 0.31; test fold:
    /// 0.20 same (right), 0.60 diff (right), 0.15 same (right), 0.90 diff (right), 0.45 diff
    /// (wrong, it is a positive): 4/5 = 0.8.
    /// Mean (1 + 0.8) / 2 = 0.9, std sqrt(((0.1)^2 + (0.1)^2) / 2) = 0.1 (up to rounding).
    #[test]
    fn ten_pairs_by_hand() {
        let d = [0.05, 0.30, 0.10, 0.50, 0.70, 0.20, 0.60, 0.15, 0.90, 0.45];
        let same = [true, true, true, false, false, true, false, true, false, true];
        let r = evaluate_distances_with(
            &d,
            &same,
            &Options { folds: 2, normalise: true, val_far: None },
        )
        .unwrap();
        assert_eq!(r.best_thresholds, vec![46.0 * 0.01, 31.0 * 0.01]);
        assert_eq!(r.fold_accuracies, vec![1.0, 0.8]);
        assert_eq!(r.accuracy, (1.0 + 0.8) / 2.0);
        assert!((r.std - 0.1).abs() < 1e-15);
        assert_eq!((r.pairs, r.positives, r.negatives), (10, 6, 4));
        // TPR at threshold 0.31, averaged over the two test folds: fold 0 calls 3/3 positives
        // same, fold 1 calls 0.20 and 0.15 same out of 3 positives: (1 + 2/3) / 2.
        assert_eq!(r.tpr[31], (1.0 + 2.0 / 3.0) / 2.0);
        // FPR at 0.61: fold 0 calls 0.50 (of negatives 0.50, 0.70) same, fold 1 calls 0.60 (of
        // 0.60, 0.90) same: (1/2 + 1/2) / 2.
        assert_eq!(r.fpr[61], 0.5);
        assert_eq!(r.tpr[0], 0.0);
        assert_eq!(r.fpr[399], 1.0);
    }

    /// KFold boundaries with n % folds != 0: 13 pairs in 10 folds are 3 folds of 2, then 1s.
    /// Every distance is 0.5: all calls are "same" above 0.5 and "different" below, so the
    /// training accuracy is max(positives, negatives) / n and the first threshold (0) already
    /// reaches it when negatives are the majority.
    #[test]
    fn uneven_folds_take_one_extra_pair_first() {
        let d = [0.5; 13];
        let same = [
            false, false, true, false, false, false, true, false, false, false, false, false, false,
        ];
        let r = evaluate_distances_with(
            &d,
            &same,
            &Options { folds: 10, normalise: true, val_far: None },
        )
        .unwrap();
        // Threshold 0 calls everything different: right for the 11 negatives.
        assert!(r.best_thresholds.iter().all(|&t| t == 0.0));
        // Fold 1 holds pairs 2 and 3 (one positive): 1/2; fold 3 holds pair 6 alone: 0/1.
        assert_eq!(r.fold_accuracies, vec![1.0, 0.5, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_training_accuracies() {
        // One negative at 1.0 and one positive at 0.2, trained and tested on all (folds = 1):
        // every t in (0.2, 1.0] is perfect; the first is 0.21.
        let r = evaluate_distances_with(
            &[1.0, 0.2],
            &[false, true],
            &Options { folds: 1, ..Options::default() },
        )
        .unwrap();
        assert_eq!(r.best_thresholds, vec![21.0 * 0.01]);
        assert_eq!(r.fold_accuracies, vec![1.0]);
        // A distance equal to a grid value is not below it: 0.2 is called same from 0.21 on.
        let v = r.val.unwrap();
        // One negative: FAR is 0 up to threshold 1.0 and 1 above, so FAR = 1e-3 interpolates
        // between 1.0 (last threshold with FAR 0, index 1000) and 1.001:
        // 1.0 * (1 - 1e-3) + 1.001 * 1e-3 (with scipy's rounding).
        let w = 1.0 / (1.0 - 0.0);
        let expected =
            (0.0 + 1000.0 * 0.001 * (0.0 + w * (1.0 - 1e-3))) + 1001.0 * 0.001 * (w * 1e-3);
        assert_eq!(v.thresholds, vec![expected]);
        assert_eq!((v.val, v.far), (1.0, 1.0));
    }

    #[test]
    fn slinear_uses_the_last_repeated_knot() {
        // x = [0, 0, 0.5, 0.5, 1], y = [0, 1, 2, 3, 4]; at 0.25 lies between the last 0 (y = 1)
        // and the first 0.5 (y = 2): 1.5. At 0.5 exactly: the interval starting at the last
        // 0.5 (y = 3) towards 1 (y = 4), weight 0: 3.
        let x = [0.0, 0.0, 0.5, 0.5, 1.0];
        let y = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(slinear(&x, &y, 0.25), 1.5);
        assert_eq!(slinear(&x, &y, 0.5), 3.0);
        assert_eq!(slinear(&x, &y, 1.0), 4.0);
        // The largest x repeated and `at` equal to it: a zero-length interval gives 0.
        assert_eq!(slinear(&[0.0, 1.0, 1.0], &[5.0, 6.0, 7.0], 1.0), 0.0);
    }

    #[test]
    fn val_falls_back_to_zero_and_is_none_without_negatives() {
        // All distances 4.5 are beyond the grid: no training FAR reaches 1e-3, threshold 0.
        let r = evaluate_distances_with(
            &[4.5, 4.5, 4.5, 4.5],
            &[true, false, true, false],
            &Options { folds: 2, ..Default::default() },
        )
        .unwrap();
        let v = r.val.unwrap();
        assert_eq!(v.thresholds, vec![0.0, 0.0]);
        assert_eq!((v.val, v.far), (0.0, 0.0));
        let r = evaluate_distances_with(
            &[0.1, 0.2],
            &[true, true],
            &Options { folds: 2, ..Default::default() },
        )
        .unwrap();
        assert!(r.val.is_none());
    }

    #[test]
    fn embeddings_path_normalises_and_splits_interleaved_rows() {
        // Pair 0: (3, 4) and (6, 8) point the same way: distance 0. Pair 1: (1, 0) and (0, 2):
        // unit vectors at 90 degrees, squared distance 2.
        let m = Matrix::new(4, 2, vec![3.0f32, 4.0, 6.0, 8.0, 1.0, 0.0, 0.0, 2.0]).unwrap();
        let a = m.strided_rows(0, 2);
        let b = m.strided_rows(1, 2);
        assert_eq!(squared_distances(&a, &b, true).unwrap(), vec![0.0, 2.0]);
        assert_eq!(squared_distances(&a, &b, false).unwrap(), vec![25.0, 5.0]);
        let opts = Options { folds: 2, ..Default::default() };
        let r = evaluate_interleaved(&m, &[true, false], &opts).unwrap();
        let p = evaluate_pairs(&m, &[(0, 1, true), (2, 3, false)], &opts).unwrap();
        assert_eq!(r, p);
        let s = flip_sum(&a, &b).unwrap();
        assert_eq!(s.data, vec![9.0, 12.0, 1.0, 2.0]);
    }

    /// Distances straight from the rows equal, bit for bit, those of the pair-major copies the
    /// listed-pairs report used to make (insightface's layout, normalised per copy).
    #[test]
    fn pair_distances_equal_those_of_copied_rows() {
        // 6 rows of width 19 (two einsum blocks of 8 and a tail of 3), values of mixed scale.
        let data: Vec<f32> =
            (0..6 * 19).map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.5 + (i % 5) as f32).collect();
        let m = Matrix::new(6, 19, data).unwrap();
        let pairs = [(0, 1, true), (5, 2, false), (3, 3, true), (4, 0, false), (2, 5, true)];
        let copy = |pick: fn(&Pair) -> usize| {
            let rows: Vec<Vec<f32>> = pairs.iter().map(|p| m.row(pick(p)).to_vec()).collect();
            Matrix::from_rows(&rows, "copies").unwrap()
        };
        let (a, b) = (copy(|p| p.0), copy(|p| p.1));
        for normalise in [true, false] {
            let direct = pair_distances(&m, pairs, normalise).unwrap();
            let copied = squared_distances(&a, &b, normalise).unwrap();
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&direct), bits(&copied));
        }
        // A row with itself is at distance 0; a reversed pair at the same distance.
        let d = pair_distances(&m, pairs, true).unwrap();
        assert_eq!(d[2], 0.0);
        assert_eq!(d[1], d[4]);
        let e = pair_distances(&m, [(0, 6, true)], true).unwrap_err();
        assert!(e.to_string().contains("pair 0") && e.to_string().contains("below 6"), "{e}");
    }

    #[test]
    fn flat_slices_give_the_same_result_as_matrices() {
        // 20 pairs in 3-D: a = (i, 1, 0), b = (i, 1, s) with s growing for the negatives.
        let issame: Vec<bool> = (0..20).map(|i| i % 3 != 0).collect();
        let a: Vec<f32> = (0..20).flat_map(|i| [i as f32, 1.0, 0.0]).collect();
        let b: Vec<f32> =
            (0..20).flat_map(|i| [i as f32, 1.0, if i % 3 == 0 { 5.0 } else { 0.3 }]).collect();
        let flat = evaluate_embeddings(&a, &b, 3, &issame).unwrap();
        let ma = Matrix::new(20, 3, a.clone()).unwrap();
        let mb = Matrix::new(20, 3, b.clone()).unwrap();
        assert_eq!(flat, evaluate(&ma, &mb, &issame).unwrap());
        let e = evaluate_embeddings(&a[..57], &b, 3, &issame).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid embeddings a: expected 60 values (20 pairs x dim 3), found 57 values"
        );
        assert!(evaluate_embeddings(&a, &b, 0, &issame).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = Matrix::new(2, 2, vec![1.0f32, 0.0, 0.0, 1.0]).unwrap().with_origin("a.npy");
        let short = Matrix::new(1, 2, vec![1.0f32, 0.0]).unwrap().with_origin("b.npy");
        let narrow = Matrix::new(2, 1, vec![1.0f32, 0.0]).unwrap().with_origin("c.npy");
        let e = evaluate(&m, &m, &[true]).unwrap_err().to_string();
        assert_eq!(e, "length mismatch: embeddings_a (a.npy) has 2 entries but issame has 1");
        assert!(evaluate(&m, &short, &[true, false])
            .unwrap_err()
            .to_string()
            .contains("b.npy has 1"));
        assert!(evaluate(&m, &narrow, &[true, false]).unwrap_err().to_string().contains("columns"));
        let nan =
            Matrix::new(2, 2, vec![1.0f32, 0.0, f32::NAN, 1.0]).unwrap().with_origin("nan.npy");
        let e = evaluate(&nan, &m, &[true, false]).unwrap_err();
        assert!(matches!(e, EvalError::NonFinite { row: 1, col: Some(0), .. }), "{e}");
        assert!(e.to_string().contains("nan.npy"));
        let opts = Options::default();
        assert!(matches!(evaluate_distances_with(&[], &[], &opts), Err(EvalError::Empty { .. })));
        assert!(evaluate_distances_with(&[0.1], &[true, false], &opts)
            .unwrap_err()
            .to_string()
            .contains("distances has 1"));
        let e = evaluate_distances_with(
            &[0.1, f64::INFINITY],
            &[true, false],
            &Options { folds: 2, ..opts.clone() },
        )
        .unwrap_err();
        assert!(matches!(e, EvalError::NonFinite { row: 1, .. }));
        assert!(evaluate_distances_with(&[0.1; 5], &[true; 5], &opts)
            .unwrap_err()
            .to_string()
            .contains("folds"));
        let bad_far = Options { folds: 1, val_far: Some(2.0), ..opts.clone() };
        assert!(evaluate_distances_with(&[0.1], &[true], &bad_far)
            .unwrap_err()
            .to_string()
            .contains("val_far"));
        assert!(evaluate_interleaved(&m, &[true, false], &opts)
            .unwrap_err()
            .to_string()
            .contains("2 x issame"));
        let e = evaluate_pairs(&m, &[(0, 2, true)], &opts).unwrap_err();
        assert!(e.to_string().contains("pair 0") && e.to_string().contains("a.npy"), "{e}");
        assert!(flip_sum(&m, &short).is_err() && flip_sum(&m, &narrow).is_err());
    }

    /// Parity with the reference script (numpy + scikit-learn + scipy): every distance and every
    /// reported number bit for bit.
    #[test]
    fn matches_insightface_reference_bit_for_bit() {
        let fx = fixture();
        let v = &fx["verification"];
        let rows = v["embeddings_rows"].as_u64().unwrap() as usize;
        let cols = v["embeddings_cols"].as_u64().unwrap() as usize;
        let emb =
            Matrix::new(rows, cols, hex_f32(v["embeddings_f32_hex"].as_str().unwrap())).unwrap();
        let issame: Vec<bool> = v["issame"].as_str().unwrap().bytes().map(|b| b == b'1').collect();
        let expected_dist = hex_f64(v["distances_f64_hex"].as_str().unwrap());
        let dist =
            squared_distances(&emb.strided_rows(0, 2), &emb.strided_rows(1, 2), true).unwrap();
        assert_eq!(dist.len(), expected_dist.len());
        for (i, (a, b)) in dist.iter().zip(&expected_dist).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "distance of pair {i}: {a} vs {b}");
        }
        let r = evaluate_interleaved(&emb, &issame, &Options::default()).unwrap();
        let sizes: Vec<u64> =
            v["fold_sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
        assert_eq!(
            sizes,
            kfold(issame.len(), 10).unwrap().iter().map(|t| t.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(r.fold_accuracies, fs(&v["fold_accuracies"]));
        assert_eq!(r.best_thresholds, fs(&v["best_thresholds"]));
        assert_eq!(r.accuracy.to_bits(), f(&v["accuracy"]).to_bits());
        assert_eq!(r.std.to_bits(), f(&v["std"]).to_bits());
        assert_eq!(r.tpr, fs(&v["tpr"]));
        assert_eq!(r.fpr, fs(&v["fpr"]));
        let val = r.val.clone().unwrap();
        assert_eq!(val.thresholds, fs(&v["val_thresholds"]));
        assert_eq!(val.val.to_bits(), f(&v["val"]).to_bits());
        assert_eq!(val.val_std.to_bits(), f(&v["val_std"]).to_bits());
        assert_eq!(val.far.to_bits(), f(&v["far"]).to_bits());
        // The same numbers from precomputed distances.
        let r2 = evaluate_distances(&expected_dist, &issame).unwrap();
        assert_eq!(r2, r);
    }
}
