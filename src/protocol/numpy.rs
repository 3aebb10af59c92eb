//! numpy's orders of floating-point summation, so that our sums round like the reference's.
//!
//! Floating-point addition is not associative: the same numbers summed in another order can
//! differ in the last bits, and a distance one bit below instead of above a threshold flips a
//! verification decision. These functions add in the order numpy 2.x uses on x86_64 (checked
//! bit for bit by `scripts/eval_reference.py` and the tests):
//!
//! * `np.sum` / `np.add.reduce` over a contiguous axis, and therefore `np.mean`, `np.std` and
//!   `np.trapezoid`: pairwise summation with 8 accumulators and blocks of 128, starting from 0;
//! * `np.einsum("ij,ij->i", X, X)`, the row norms in `sklearn.preprocessing.normalize`: two
//!   lanes (the SSE2 baseline), four vectors per step added from the last to the first, the lanes
//!   added at the end. numpy builds with FMA on other architectures (aarch64 NEON) round this
//!   differently; so can a future numpy, which is why the fixture records its versions.

/// `np.add.reduce(values)` for a contiguous `float64` array.
pub(crate) fn sum(values: &[f64]) -> f64 {
    0.0 + pairwise(values)
}

/// numpy's `pairwise_sum` kernel (`numpy/_core/src/umath/loops_utils.h.src`, re-derived).
fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

/// `np.mean(values)`; NaN for an empty slice (numpy warns and returns NaN too).
pub(crate) fn mean(values: &[f64]) -> f64 {
    sum(values) / values.len() as f64
}

/// `np.std(values)` with `ddof=0`: the population standard deviation.
pub(crate) fn std(values: &[f64]) -> f64 {
    let m = mean(values);
    let squares: Vec<f64> = values.iter().map(|&v| (v - m) * (v - m)).collect();
    (sum(&squares) / values.len() as f64).sqrt()
}

/// `np.einsum("ij,ij->i", x, x)` for one row: the squared norm as scikit-learn computes it.
pub(crate) fn einsum_sum_of_squares(row: &[f64]) -> f64 {
    let mut acc = [0.0f64; 2];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        // The four two-lane vectors of one step are accumulated last to first.
        for v in (0..4).rev() {
            for (lane, a) in acc.iter_mut().enumerate() {
                let x = c[2 * v + lane];
                *a += x * x;
            }
        }
    }
    for (k, &x) in chunks.remainder().iter().enumerate() {
        acc[k % 2] += x * x;
    }
    acc[0] + acc[1]
}

/// One row of `sklearn.preprocessing.normalize(X)` (norm "l2") for a `float64` `X`: each value
/// divided by the row's norm, a norm below `10 * f64::EPSILON` replaced by 1 (so a zero row
/// stays zero, as scikit-learn's `_handle_zeros_in_scale` does).
pub(crate) fn sklearn_normalize(row: &mut [f64]) {
    let mut norm = einsum_sum_of_squares(row).sqrt();
    if norm < 10.0 * f64::EPSILON {
        norm = 1.0;
    }
    for v in row {
        *v /= norm;
    }
}

/// `np.sum(np.square(a - b))` for two rows: insightface's squared L2 distance.
pub(crate) fn squared_distance(a: &[f64], b: &[f64], scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend(a.iter().zip(b).map(|(x, y)| {
        let d = x - y;
        d * d
    }));
    sum(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain left-to-right sum, the order the pairwise kernel departs from.
    fn sequential(a: &[f64]) -> f64 {
        a.iter().fold(0.0, |s, &v| s + v)
    }

    #[test]
    fn pairwise_sum_groups_like_numpy() {
        // Below 8 values numpy adds left to right.
        let a = [1e16, 1.0, -1e16, 1.0];
        assert_eq!(sum(&a), sequential(&a));
        // From 8 values on, 8 accumulators r[j] = a[j] (+ a[j + 8] ...), added as the tree
        // ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail one by one.
        // With 2^54 (spacing 4) first, the tree adds 1.5 + 1.5 = 3 before meeting 2^54 and rounds
        // 2^54 + 3 up to 2^54 + 4; left to right each 1.5 is rounded away on its own.
        let big = (1u64 << 54) as f64;
        let b = [big, 0.0, 1.5, 1.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5];
        assert_eq!(sum(&b), big + 4.0);
        assert_eq!(sequential(&b), big);
        // Above 128 values the array is split at n/2 rounded down to a multiple of 8.
        let c: Vec<f64> = (0..300).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        assert_eq!(sum(&c), pairwise(&c[..144]) + pairwise(&c[144..]));
    }

    #[test]
    fn mean_and_population_std() {
        // Values 1..=4: mean 2.5, deviations ±0.5, ±1.5, variance (0.25+2.25)*2/4 = 1.25.
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mean(&v), 2.5);
        assert_eq!(std(&v), 1.25f64.sqrt());
        assert!(mean(&[]).is_nan());
        // Ten fold accuracies of 600-pair folds whose np.mean differs from a left-to-right sum
        // (numpy 2.4: mean 0.9685000000000002, std 0.02112725990541866; left to right 0.9685).
        let correct = [587.0, 593.0, 560.0, 593.0, 579.0, 581.0, 585.0, 571.0, 600.0, 562.0];
        let folds = correct.map(|c: f64| c / 600.0);
        assert_eq!(mean(&folds), 0.9685000000000002);
        assert_eq!(sequential(&folds) / 10.0, 0.9685);
        assert_eq!(std(&folds), 0.02112725990541866);
    }

    #[test]
    fn einsum_norm_and_normalize() {
        // 3-4-12-84 has norm 85 and is summed exactly in any order.
        let mut row = [3.0, 4.0, 12.0, 84.0];
        assert_eq!(einsum_sum_of_squares(&row), 7225.0);
        sklearn_normalize(&mut row);
        assert_eq!(row, [3.0 / 85.0, 4.0 / 85.0, 12.0 / 85.0, 84.0 / 85.0]);
        let mut zero = [0.0; 5];
        sklearn_normalize(&mut zero);
        assert_eq!(zero, [0.0; 5]);
        // The lane order: lane 0 holds x0, x2, x4, x6 of each block of 8 and adds them from x6
        // down to x0. With x6² = 2^54 (spacing 4) first, each later 1 is rounded away; left to
        // right the three 1s would add up to 3 first and round 2^54 + 3 up to 2^54 + 4.
        let big = (1u64 << 27) as f64;
        let x = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, big, 0.0];
        assert_eq!(einsum_sum_of_squares(&x), big * big);
        assert_eq!(sequential(&x.map(|v| v * v)), big * big + 4.0);
        // The tail after the last full block alternates lanes: [.., 3, 4] -> lane0 9, lane1 16.
        assert_eq!(einsum_sum_of_squares(&[3.0, 4.0]), 25.0);
        let mut scratch = Vec::new();
        assert_eq!(squared_distance(&[1.0, 2.0], &[0.0, 4.0], &mut scratch), 5.0);
    }
}
