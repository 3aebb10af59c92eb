//! ROC curves and TAR@FAR for similarity scores, as insightface's IJB script computes them.
//!
//! insightface's `eval_ijbc.py` calls scikit-learn's `roc_curve(label, score)` and, for each
//! target FAR, takes the point minimising `|fpr - target|` on the flipped curve. The TAR it
//! prints therefore depends on which points `roc_curve` returns, including its default
//! `drop_intermediate=True` (collinear points removed) and the leading `(0, 0)` point, so
//! [`Roc`] returns exactly those points. [`Roc::tar_at_far`] applies the same pick: the closest
//! FAR, the largest TAR among points at that FAR, and of two equally close FARs the higher one
//! (SPEC section 5).
//!
//! IJB-C has 15.7 M pairs and a MegaFace-sized 1:N run 10⁸ or more; the scores are split by
//! label into order-preserving integer keys and radix-sorted once (4 or 8 byte passes), so 10⁸
//! `f32` scores take about 3 s on one core and, besides the inputs, twice their memory (keys and
//! one sort buffer) plus 24 bytes per curve point.

use serde::{Deserialize, Serialize};

use super::{numpy, EvalError, Result};

/// The FARs insightface's IJB table reports: 1e-6 to 1e-1.
pub const STANDARD_FARS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// The key of a FAR in reports: `"1e-04"`, as Python's `"%.0e" % far` writes it.
pub fn far_key(far: f64) -> String {
    if !far.is_finite() {
        return format!("{far}");
    }
    let s = format!("{far:.0e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// TAR at one target FAR, with what backs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TarAtFar {
    /// True accept rate of the chosen ROC point.
    pub tar: f64,
    /// FAR actually reached there (not the target).
    pub far: f64,
    /// Score threshold of the point: pairs scoring `>=` it are accepted. `None` for the leading
    /// point, where scikit-learn's threshold is infinite and nothing is accepted.
    pub threshold: Option<f64>,
    /// Number of negative pairs: a FAR below 1 / negatives cannot be measured.
    pub negatives: u64,
}

/// One point of the curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// False positive rate, `false_positives / negatives`.
    pub fpr: f64,
    /// True positive rate, `true_positives / positives`.
    pub tpr: f64,
    /// Scores `>=` this are accepted; infinite for the leading point.
    pub threshold: f64,
    /// Negative pairs accepted.
    pub false_positives: u64,
    /// Positive pairs accepted.
    pub true_positives: u64,
}

/// scikit-learn's `roc_curve(positive, scores)` with default arguments, for scores where higher
/// means more alike (cosine similarity).
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    fps: Vec<u64>,
    tps: Vec<u64>,
    thresholds: Vec<f64>,
    positives: u64,
    negatives: u64,
}

/// A float score and its order-preserving unsigned key.
trait Score: Copy + Into<f64> {
    type Key: RadixKey;
    fn key(self) -> Self::Key;
    fn from_key(k: Self::Key) -> Self;
}

impl Score for f32 {
    type Key = u32;
    fn key(self) -> u32 {
        // +0.0 makes -0.0 equal to 0.0, as numpy's comparisons treat them.
        let b = (self + 0.0).to_bits();
        if b >> 31 == 1 {
            !b
        } else {
            b | 0x8000_0000
        }
    }
    fn from_key(k: u32) -> f32 {
        f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
    }
}

impl Score for f64 {
    type Key = u64;
    fn key(self) -> u64 {
        let b = (self + 0.0).to_bits();
        if b >> 63 == 1 {
            !b
        } else {
            b | 0x8000_0000_0000_0000
        }
    }
    fn from_key(k: u64) -> f64 {
        f64::from_bits(if k >> 63 == 1 { k & 0x7fff_ffff_ffff_ffff } else { !k })
    }
}

/// Unsigned keys sorted byte by byte.
trait RadixKey: Copy + Ord + Default {
    const BYTES: usize;
    fn byte(self, i: usize) -> usize;
}

impl RadixKey for u32 {
    const BYTES: usize = 4;
    fn byte(self, i: usize) -> usize {
        ((self >> (8 * i)) & 0xff) as usize
    }
}

impl RadixKey for u64 {
    const BYTES: usize = 8;
    fn byte(self, i: usize) -> usize {
        ((self >> (8 * i)) & 0xff) as usize
    }
}

/// Sorts ascending: LSD radix sort on bytes, skipping bytes where all keys agree; small inputs
/// use the standard sort.
fn radix_sort<K: RadixKey>(keys: &mut Vec<K>) {
    if keys.len() < 4096 {
        keys.sort_unstable();
        return;
    }
    let mut counts = vec![[0usize; 256]; K::BYTES];
    for &k in keys.iter() {
        for (b, c) in counts.iter_mut().enumerate() {
            c[k.byte(b)] += 1;
        }
    }
    let mut buf = vec![K::default(); keys.len()];
    for (b, c) in counts.iter().enumerate() {
        if c.contains(&keys.len()) {
            continue;
        }
        let mut offsets = [0usize; 256];
        let mut total = 0;
        for (o, &n) in offsets.iter_mut().zip(c) {
            *o = total;
            total += n;
        }
        for &k in keys.iter() {
            let d = k.byte(b);
            buf[offsets[d]] = k;
            offsets[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
    }
}

impl Roc {
    /// The ROC of `f32` scores; `positive[i]` tells whether pair i is a same-identity pair.
    ///
    /// # Shapes
    /// `scores`, `positive`: `[pairs]`.
    pub fn from_scores(scores: &[f32], positive: &[bool]) -> Result<Self> {
        Self::build(scores, positive)
    }

    /// The ROC of `f64` scores (as insightface's IJB script holds them).
    pub fn from_scores_f64(scores: &[f64], positive: &[bool]) -> Result<Self> {
        Self::build(scores, positive)
    }

    fn build<S: Score>(scores: &[S], positive: &[bool]) -> Result<Self> {
        if scores.len() != positive.len() {
            return Err(EvalError::length_mismatch(
                "scores",
                scores.len(),
                "labels",
                positive.len(),
                "entries",
            ));
        }
        if scores.is_empty() {
            return Err(EvalError::Empty {
                what: "scores".into(),
                expected: "at least one scored pair".into(),
            });
        }
        let positives = positive.iter().filter(|&&p| p).count();
        let negatives = scores.len() - positives;
        if positives == 0 || negatives == 0 {
            return Err(EvalError::OneClass { what: "ROC".into(), positives, negatives });
        }
        let mut pos = Vec::with_capacity(positives);
        let mut neg = Vec::with_capacity(negatives);
        for (i, (&s, &p)) in scores.iter().zip(positive).enumerate() {
            let v: f64 = s.into();
            if !v.is_finite() {
                return Err(EvalError::NonFinite {
                    origin: "scores".into(),
                    row: i,
                    col: None,
                    value: v,
                });
            }
            if p {
                pos.push(s.key());
            } else {
                neg.push(s.key());
            }
        }
        radix_sort(&mut pos);
        radix_sort(&mut neg);

        let mut roc = Roc {
            fps: vec![0],
            tps: vec![0],
            thresholds: vec![f64::INFINITY],
            positives: positives as u64,
            negatives: negatives as u64,
        };
        // Walk the distinct scores from the highest down; each is one point of scikit-learn's
        // curve before dropping. A middle point is dropped when both of its second differences
        // (fps[i-1] - 2 fps[i] + fps[i+1], same for tps) are zero, judged on the undropped
        // neighbours; the first and last points always stay.
        let (mut ip, mut ineg) = (pos.len(), neg.len());
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut window: Vec<(u64, u64, S::Key)> = Vec::with_capacity(3);
        let mut seen = 0usize;
        while ip > 0 || ineg > 0 {
            let key = match (ip, ineg) {
                (0, _) => neg[ineg - 1],
                (_, 0) => pos[ip - 1],
                _ => pos[ip - 1].max(neg[ineg - 1]),
            };
            while ip > 0 && pos[ip - 1] == key {
                ip -= 1;
                tp += 1;
            }
            while ineg > 0 && neg[ineg - 1] == key {
                ineg -= 1;
                fp += 1;
            }
            window.push((fp, tp, key));
            seen += 1;
            if seen == 1 {
                roc.push(fp, tp, S::from_key(key).into());
            }
            if window.len() == 3 {
                let [(f0, t0, _), (f1, t1, k1), (f2, t2, _)] = [window[0], window[1], window[2]];
                if f0 + f2 != 2 * f1 || t0 + t2 != 2 * t1 {
                    roc.push(f1, t1, S::from_key(k1).into());
                }
                window.remove(0);
            }
        }
        if seen > 1 {
            let &(f, t, k) = window.last().expect("at least one point");
            roc.push(f, t, S::from_key(k).into());
        }
        Ok(roc)
    }

    fn push(&mut self, fp: u64, tp: u64, threshold: f64) {
        self.fps.push(fp);
        self.tps.push(tp);
        self.thresholds.push(threshold);
    }

    /// Number of points, the leading `(0, 0)` included.
    pub fn len(&self) -> usize {
        self.fps.len()
    }

    /// Never true: a curve has at least its leading point and one more.
    pub fn is_empty(&self) -> bool {
        self.fps.is_empty()
    }

    /// Number of positive pairs.
    pub fn positives(&self) -> u64 {
        self.positives
    }

    /// Number of negative pairs.
    pub fn negatives(&self) -> u64 {
        self.negatives
    }

    /// Point `i < len()` (`fpr = fps / fps[-1]` and `tpr = tps / tps[-1]`, as scikit-learn
    /// divides); panics past the end, like slice indexing.
    pub fn point(&self, i: usize) -> RocPoint {
        RocPoint {
            fpr: self.fps[i] as f64 / self.negatives as f64,
            tpr: self.tps[i] as f64 / self.positives as f64,
            threshold: self.thresholds[i],
            false_positives: self.fps[i],
            true_positives: self.tps[i],
        }
    }

    /// All points, by increasing FPR.
    pub fn points(&self) -> impl Iterator<Item = RocPoint> + '_ {
        (0..self.len()).map(|i| self.point(i))
    }

    /// TAR at the point whose FAR is closest to `target`: insightface's
    /// `min(zip(abs(fpr - target), range(len(fpr))))` on the flipped curve, i.e. ties go to the
    /// later point of the unflipped curve (the largest TAR at equal FAR, the higher of two
    /// equally close FARs).
    pub fn tar_at_far(&self, target: f64) -> TarAtFar {
        let mut best = 0;
        let mut best_gap = f64::INFINITY;
        for i in 0..self.len() {
            let gap = (self.fps[i] as f64 / self.negatives as f64 - target).abs();
            if gap <= best_gap {
                best = i;
                best_gap = gap;
            }
        }
        let p = self.point(best);
        TarAtFar {
            tar: p.tpr,
            far: p.fpr,
            threshold: p.threshold.is_finite().then_some(p.threshold),
            negatives: self.negatives,
        }
    }

    /// [`Roc::tar_at_far`] at each target, keyed by [`far_key`].
    pub fn tar_at_fars(&self, targets: &[f64]) -> std::collections::BTreeMap<String, TarAtFar> {
        targets.iter().map(|&t| (far_key(t), self.tar_at_far(t))).collect()
    }

    /// Area under the curve: scikit-learn's `auc(fpr, tpr)` (numpy's trapezoid rule and
    /// summation order), equal to `roc_auc_score`.
    pub fn auc(&self) -> f64 {
        let terms: Vec<f64> = (1..self.len())
            .map(|i| {
                let (a, b) = (self.point(i - 1), self.point(i));
                (b.fpr - a.fpr) * (b.tpr + a.tpr) / 2.0
            })
            .collect();
        numpy::sum(&terms)
    }

    /// Equal error rate: where the FPR equals the false negative rate `1 - TPR`, interpolated
    /// linearly along the curve (the ROC is a polyline between its points).
    pub fn eer(&self) -> f64 {
        let gap = |p: &RocPoint| p.fpr - (1.0 - p.tpr);
        let mut prev = self.point(0);
        for p in self.points().skip(1) {
            let (g0, g1) = (gap(&prev), gap(&p));
            if g1 >= 0.0 {
                if g1 == g0 {
                    return p.fpr;
                }
                let t = -g0 / (g1 - g0);
                return prev.fpr + t * (p.fpr - prev.fpr);
            }
            prev = p;
        }
        1.0
    }

    /// At most about `max_points` `(fpr, tpr)` points with `fpr > 0`, spread evenly in
    /// log10(FPR) and in TPR, for plotting the curve on a log FAR axis without millions of points.
    pub fn curve_for_plot(&self, max_points: usize) -> Vec<(f64, f64)> {
        let step = 8.0 / max_points.max(2) as f64;
        let mut out: Vec<(f64, f64)> = Vec::new();
        let mut last = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        let n = self.len();
        for (i, p) in self.points().enumerate() {
            if p.fpr <= 0.0 {
                continue;
            }
            let lx = p.fpr.log10();
            if out.is_empty()
                || i + 1 == n
                || (lx - last.0).abs() >= step
                || (p.tpr - last.1).abs() >= step
            {
                out.push((p.fpr, p.tpr));
                last = (lx, p.tpr);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &serde_json::Value) -> f64 {
        v.as_str().expect("floats are stored as strings").parse().unwrap()
    }

    fn fs(v: &serde_json::Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(f).collect()
    }

    fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/eval_reference.json"
        )))
        .unwrap()
    }

    fn labels(v: &serde_json::Value) -> Vec<bool> {
        v.as_str().unwrap().bytes().map(|b| b == b'1').collect()
    }

    fn check_against(roc: &Roc, case: &serde_json::Value) {
        let fpr: Vec<f64> = roc.points().map(|p| p.fpr).collect();
        let tpr: Vec<f64> = roc.points().map(|p| p.tpr).collect();
        let thr: Vec<f64> = roc.points().map(|p| p.threshold).collect();
        assert_eq!(fpr, fs(&case["fpr"]));
        assert_eq!(tpr, fs(&case["tpr"]));
        assert_eq!(thr, fs(&case["thresholds"]));
        assert_eq!(roc.positives(), case["positives"].as_u64().unwrap());
        assert_eq!(roc.negatives(), case["negatives"].as_u64().unwrap());
        for (key, expected) in case["tar_at_far"].as_object().unwrap() {
            let target: f64 = key.parse().unwrap();
            assert_eq!(far_key(target), *key);
            let got = roc.tar_at_far(target);
            assert_eq!(got.tar.to_bits(), f(&expected["tar"]).to_bits(), "TAR at {key}");
            assert_eq!(got.far.to_bits(), f(&expected["far"]).to_bits(), "FAR at {key}");
            assert_eq!(got.threshold, Some(f(&expected["threshold"])), "threshold at {key}");
            assert_eq!(got.negatives, roc.negatives());
        }
        assert_eq!(roc.auc().to_bits(), f(&case["auc"]).to_bits());
    }

    #[test]
    fn matches_sklearn_roc_curve_with_ties() {
        let fx = fixture();
        let case = &fx["roc_ties"];
        let den = case["score_denominator"].as_f64().unwrap();
        let scores: Vec<f64> = case["score_numerators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as f64 / den)
            .collect();
        let positive = labels(&case["labels"]);
        check_against(&Roc::from_scores_f64(&scores, &positive).unwrap(), case);
        // The same scores as f32 (exact: multiples of 1/256) give the same curve.
        let s32: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
        check_against(&Roc::from_scores(&s32, &positive).unwrap(), case);
    }

    #[test]
    fn matches_sklearn_drop_intermediate_on_runs() {
        let fx = fixture();
        let case = &fx["roc_runs"];
        let hex = case["scores_f32_hex"].as_str().unwrap();
        let scores: Vec<f32> = (0..hex.len() / 8)
            .map(|i| f32::from_bits(u32::from_str_radix(&hex[8 * i..8 * i + 8], 16).unwrap()))
            .collect();
        let roc = Roc::from_scores(&scores, &labels(&case["labels"])).unwrap();
        check_against(&roc, case);
    }

    /// Six scores by hand.
    ///
    /// scores 0.9(+) 0.8(-) 0.8(+) 0.6(+) 0.5(-) 0.3(-): 3 positives, 3 negatives.
    /// Distinct thresholds from the top, cumulative (fp, tp):
    ///   0.9 -> (0, 1), 0.8 -> (1, 2), 0.6 -> (1, 3), 0.5 -> (2, 3), 0.3 -> (3, 3).
    /// Second differences of the middle points: at 0.8 fps 0-2+1 = -1 (keep); at 0.6 fps
    /// 1-2+2 = 1 (keep); at 0.5 fps 1-4+3 = 0 and tps 3-6+3 = 0: dropped (it lies on the
    /// segment from (1,3) to (3,3)). With the leading (0, 0): 5 points.
    /// AUC, trapezoids between the (fpr, tpr) points: (0,0)-(0,1/3): 0; (0,1/3)-(1/3,2/3):
    /// 1/3 * (1/3 + 2/3) / 2 = 1/6; (1/3,2/3)-(1/3,1): 0; (1/3,1)-(1,1): 2/3 * 2 / 2 = 2/3.
    /// Total 5/6, the rank statistic: 7.5 of the 9 positive-negative pairs ordered right.
    #[test]
    fn six_scores_by_hand() {
        let s = [0.9f32, 0.8, 0.8, 0.6, 0.5, 0.3];
        let p = [true, false, true, true, false, false];
        let roc = Roc::from_scores(&s, &p).unwrap();
        let pts: Vec<(u64, u64, f64)> =
            roc.points().map(|q| (q.false_positives, q.true_positives, q.threshold)).collect();
        assert_eq!(
            pts,
            vec![
                (0, 0, f64::INFINITY),
                (0, 1, 0.9f32 as f64),
                (1, 2, 0.8f32 as f64),
                (1, 3, 0.6f32 as f64),
                (3, 3, 0.3f32 as f64)
            ]
        );
        assert!((roc.auc() - 5.0 / 6.0).abs() < 1e-15);
        // FAR 0.1: candidates fpr 0 (gap 0.1) and 1/3 (gap 0.233): the two points at fpr 0 tie,
        // the later (TAR 1/3) wins.
        let t = roc.tar_at_far(0.1);
        assert_eq!(
            (t.far, t.tar, t.threshold, t.negatives),
            (0.0, 1.0 / 3.0, Some(0.9f32 as f64), 3)
        );
        // FAR 0.5: 1/3 (gap 1/6) beats 1 (gap 1/2): TAR 1 (the later of the two 1/3 points).
        let t = roc.tar_at_far(0.5);
        assert_eq!((t.far, t.tar), (1.0 / 3.0, 1.0));
        // EER: FNR = 1 - TPR meets FPR on the segment (0, 1/3) -> (1/3, 2/3), where
        // fpr - fnr goes from -2/3 to 0: exactly at its end, 1/3.
        assert!((roc.eer() - 1.0 / 3.0).abs() < 1e-15);
    }

    /// Equally close above and below: 4 negatives (FPR steps of 1/4), target 0.125 is 0.125
    /// from both 0 and 0.25; the higher FAR wins.
    #[test]
    fn equally_close_fars_take_the_higher() {
        let s = [0.9f32, 0.8, 0.7, 0.6, 0.5, 0.4];
        let p = [true, false, true, false, false, false];
        let roc = Roc::from_scores(&s, &p).unwrap();
        let t = roc.tar_at_far(0.125);
        assert_eq!((t.far, t.tar), (0.25, 1.0));
        // Target 0 picks the last point at FPR 0: TAR 1/2 at threshold 0.9.
        let t = roc.tar_at_far(0.0);
        assert_eq!((t.far, t.tar, t.threshold), (0.0, 0.5, Some(0.9f32 as f64)));
        // With all positives below all negatives, FAR 0 holds only the leading point.
        let worst = Roc::from_scores(&[0.1, 0.9], &[true, false]).unwrap();
        let t = worst.tar_at_far(1e-6);
        assert_eq!((t.far, t.tar, t.threshold), (0.0, 0.0, None));
        assert_eq!(worst.auc(), 0.0);
    }

    #[test]
    fn far_keys_look_like_python() {
        let keys: Vec<String> = STANDARD_FARS.iter().map(|&f| far_key(f)).collect();
        assert_eq!(keys, ["1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"]);
        assert_eq!(far_key(1.0), "1e+00");
        assert_eq!(far_key(0.0), "0e+00");
        assert_eq!(far_key(2.5e-7), "2e-07");
        assert_eq!(far_key(1e-100), "1e-100");
    }

    #[test]
    fn radix_sort_orders_floats_like_total_order_without_signed_zero() {
        let mut v: Vec<f32> =
            (0..20_000).map(|i| ((i * 7919) % 20_011) as f32 / 997.0 - 10.0).collect();
        v.extend([
            -0.0,
            0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
        ]);
        let mut keys: Vec<u32> = v.iter().map(|&x| x.key()).collect();
        radix_sort(&mut keys);
        let sorted: Vec<f32> = keys.iter().map(|&k| f32::from_key(k)).collect();
        let mut expected: Vec<f32> = v.iter().map(|&x| x + 0.0).collect();
        expected.sort_by(f32::total_cmp);
        assert_eq!(
            sorted.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!((-0.0f32).key(), 0.0f32.key());
        let mut k64: Vec<u64> =
            (0..10_000).map(|i| (((i * 104_729) % 10_007) as f64 - 5000.0).key()).collect();
        radix_sort(&mut k64);
        assert!(k64.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(f64::from_key((-2.5f64).key()), -2.5);
    }

    #[test]
    fn large_random_case_matches_a_plain_sort_implementation() {
        // A simple O(n log n) reference: sort pairs by score descending, emit a point at every
        // score change, drop by second differences.
        let n = 50_000;
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let scores: Vec<f32> = (0..n).map(|_| (next() % 3000) as f32 / 3000.0).collect();
        let positive: Vec<bool> =
            scores.iter().map(|&s| (next() % 1000) as f32 / 1000.0 < s * 0.5).collect();
        let roc = Roc::from_scores(&scores, &positive).unwrap();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let (mut fps, mut tps, mut thr) = (vec![], vec![], vec![]);
        let (mut fp, mut tp) = (0u64, 0u64);
        for (k, &i) in idx.iter().enumerate() {
            if positive[i] {
                tp += 1
            } else {
                fp += 1
            }
            if k + 1 == n || scores[idx[k + 1]] != scores[i] {
                fps.push(fp);
                tps.push(tp);
                thr.push(scores[i] as f64);
            }
        }
        let mut keep = vec![true; fps.len()];
        for i in 1..fps.len() - 1 {
            keep[i] =
                fps[i - 1] + fps[i + 1] != 2 * fps[i] || tps[i - 1] + tps[i + 1] != 2 * tps[i];
        }
        let expected: Vec<(u64, u64, f64)> = std::iter::once((0, 0, f64::INFINITY))
            .chain((0..fps.len()).filter(|&i| keep[i]).map(|i| (fps[i], tps[i], thr[i])))
            .collect();
        let got: Vec<(u64, u64, f64)> =
            roc.points().map(|p| (p.false_positives, p.true_positives, p.threshold)).collect();
        assert_eq!(got, expected);
    }

    /// 10⁸ scores: `cargo test --release roc_of_1e8_scores -- --ignored --nocapture`.
    /// Checks every TAR@FAR against a direct count over the scores at its threshold.
    #[test]
    #[ignore = "takes seconds and 1.3 GB; run with --ignored for timings"]
    fn roc_of_1e8_scores() {
        let n = 100_000_000;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let unit = |r: u64| (r >> 11) as f64 / (1u64 << 53) as f64;
        let (mut scores, mut positive) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let r = next();
            let p = r % 100 == 0;
            let s = unit(r) + unit(next());
            scores.push(if p { s as f32 - 0.2 } else { s as f32 - 1.0 });
            positive.push(p);
        }
        let t = std::time::Instant::now();
        let roc = Roc::from_scores(&scores, &positive).unwrap();
        let build = t.elapsed().as_secs_f64();
        let tars = roc.tar_at_fars(&STANDARD_FARS);
        println!(
            "Roc::from_scores on {n} scores: {build:.2} s, {} points; with TAR@FAR: {:.2} s",
            roc.len(),
            t.elapsed().as_secs_f64()
        );
        for (key, t) in &tars {
            let threshold = t.threshold.unwrap() as f32;
            let (mut tp, mut fp) = (0u64, 0u64);
            for (&s, &p) in scores.iter().zip(&positive) {
                if s >= threshold {
                    if p {
                        tp += 1
                    } else {
                        fp += 1
                    }
                }
            }
            assert_eq!(t.tar, tp as f64 / roc.positives() as f64, "{key}");
            assert_eq!(t.far, fp as f64 / roc.negatives() as f64, "{key}");
            println!("  FAR {key}: TAR {:.4} at FAR {:.3e}", t.tar, t.far);
        }
        assert_eq!(roc.positives() + roc.negatives(), n as u64);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(Roc::from_scores(&[], &[]), Err(EvalError::Empty { .. })));
        let e = Roc::from_scores(&[0.1, 0.2], &[true]).unwrap_err();
        assert_eq!(e.to_string(), "length mismatch: scores has 2 entries but labels has 1");
        let e = Roc::from_scores(&[0.1, 0.2], &[true, true]).unwrap_err();
        assert!(matches!(e, EvalError::OneClass { positives: 2, negatives: 0, .. }), "{e}");
        let e = Roc::from_scores(&[0.1, f32::NAN, 0.3], &[true, false, true]).unwrap_err();
        assert!(matches!(e, EvalError::NonFinite { row: 1, .. }), "{e}");
        assert!(Roc::from_scores_f64(&[f64::NEG_INFINITY, 0.0], &[true, false]).is_err());
    }

    #[test]
    fn single_distinct_score_and_plot_curve() {
        // All scores equal: one point (1, 1) after the leading (0, 0); AUC 1/2, EER 1/2.
        let roc = Roc::from_scores(&[0.5; 4], &[true, false, true, false]).unwrap();
        assert_eq!(roc.len(), 2);
        assert_eq!(roc.auc(), 0.5);
        assert_eq!(roc.eer(), 0.5);
        let scores: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let positive: Vec<bool> = (0..10_000).map(|i| i % 3 == 0).collect();
        let roc = Roc::from_scores(&scores, &positive).unwrap();
        let curve = roc.curve_for_plot(200);
        assert!(curve.len() <= 420 && curve.len() > 20, "{}", curve.len());
        assert!(curve.iter().all(|&(x, y)| x > 0.0 && x <= 1.0 && (0.0..=1.0).contains(&y)));
        assert_eq!(*curve.last().unwrap(), (1.0, 1.0));
    }
}
