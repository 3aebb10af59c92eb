//! MegaFace-style rank-1 identification, the plain host reference.
//!
//! Each probe is compared, by cosine similarity, with a gallery holding one embedding per
//! identity plus a set of distractors (faces of people outside the probe set). The probe is a
//! hit when its own identity's gallery embedding scores strictly higher than every other gallery
//! embedding and every distractor in use. A tie counts as a miss: a ranking that cannot tell the
//! right identity from another does not identify it, and this way the result cannot depend on
//! the order of the gallery. MegaFace reports how rank-1 falls as distractors grow, so the curve
//! uses the first n distractors for each n of [`distractor_counts`].
//!
//! This is the O(probes x (gallery + distractors) x dim) loop, in `f64`. It exists to be
//! obviously right: the backend (matmul) version in the main crate is tested against it.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use super::pairs::unit_rows;
use super::{EvalError, Matrix, Result};

/// Rank-1 accuracy with a given number of distractors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rank1Point {
    /// Number of distractors in the gallery (the first ones of the distractor set).
    pub distractors: usize,
    /// Probes identified correctly.
    pub hits: usize,
    /// `hits / probes`.
    pub accuracy: f64,
}

/// Rank-1 over a growing distractor set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rank1Result {
    /// Number of probes.
    pub probes: usize,
    /// One point per distractor count, increasing.
    pub curve: Vec<Rank1Point>,
}

impl Rank1Result {
    /// The curve from each probe's `(gallery_ok, first_beaten)`: whether its identity beats
    /// every other gallery row, and the index of the first distractor scoring at least as high
    /// as its identity (the distractor count when none does). A probe is a hit at `n`
    /// distractors when both hold for the first `n`.
    pub fn from_survival(survives: &[(bool, usize)], counts: &[usize]) -> Self {
        let probes = survives.len();
        let curve = counts
            .iter()
            .map(|&n| {
                let hits = survives.iter().filter(|&&(ok, first)| ok && first >= n).count();
                Rank1Point { distractors: n, hits, accuracy: hits as f64 / probes as f64 }
            })
            .collect();
        Self { probes, curve }
    }

    /// Rank-1 accuracy with the most distractors: the headline number.
    pub fn accuracy(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.accuracy)
    }
}

/// `0, 10, 100, ...` below `available`, then `available` itself: MegaFace's log-spaced counts.
pub fn distractor_counts(available: usize) -> Vec<usize> {
    let mut counts = vec![0];
    let mut n = 10usize;
    while n < available {
        counts.push(n);
        n = n.saturating_mul(10);
    }
    if available > 0 {
        counts.push(available);
    }
    counts
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Rank-1 accuracy of `probes` against `gallery` (one row per identity) plus the first n rows
/// of `distractors`, for each n of [`distractor_counts`]`(distractors.rows)`.
///
/// # Shapes
/// `probes`: `[P, dim]` with `probe_labels`: `[P]`; `gallery`: `[G, dim]` with
/// `gallery_labels`: `[G]`, all distinct; `distractors`: `[D, dim]` (D may be 0).
pub fn rank1<T, L>(
    probes: &Matrix<T>,
    probe_labels: &[L],
    gallery: &Matrix<T>,
    gallery_labels: &[L],
    distractors: &Matrix<T>,
) -> Result<Rank1Result>
where
    T: Copy + Into<f64>,
    L: Eq + Hash + Display,
{
    rank1_at(
        probes,
        probe_labels,
        gallery,
        gallery_labels,
        distractors,
        &distractor_counts(distractors.rows),
    )
}

/// Checks the inputs of a rank-1 search and returns, for each probe, the gallery row of its
/// identity. Shared by the host reference and the backend search so both reject the same
/// inputs with the same errors.
pub fn gallery_rows_of_probes<T, L>(
    probes: &Matrix<T>,
    probe_labels: &[L],
    gallery: &Matrix<T>,
    gallery_labels: &[L],
    distractors: (&str, usize, usize),
    counts: &[usize],
) -> Result<Vec<usize>>
where
    T: Copy,
    L: Eq + Hash + Display,
{
    let (distractor_origin, distractor_rows, _) = distractors;
    if probes.rows == 0 {
        return Err(EvalError::Empty {
            what: format!("probes ({})", probes.origin),
            expected: "at least one probe".into(),
        });
    }
    if gallery.rows == 0 {
        return Err(EvalError::Empty {
            what: format!("gallery ({})", gallery.origin),
            expected: "one embedding per identity".into(),
        });
    }
    if probe_labels.len() != probes.rows {
        return Err(EvalError::length_mismatch(
            &probes.origin,
            probes.rows,
            "probe labels",
            probe_labels.len(),
            "rows",
        ));
    }
    if gallery_labels.len() != gallery.rows {
        return Err(EvalError::length_mismatch(
            &gallery.origin,
            gallery.rows,
            "gallery labels",
            gallery_labels.len(),
            "rows",
        ));
    }
    for (origin, rows, cols) in [(gallery.origin.as_str(), gallery.rows, gallery.cols), distractors]
    {
        if rows > 0 && cols != probes.cols {
            return Err(EvalError::length_mismatch(
                &probes.origin,
                probes.cols,
                origin,
                cols,
                "columns",
            ));
        }
    }
    if let Some(&n) = counts.iter().find(|&&n| n > distractor_rows) {
        return Err(EvalError::invalid(
            "distractor count",
            format!("at most {distractor_rows} (the rows of {distractor_origin})"),
            n,
        ));
    }
    let mut index = HashMap::with_capacity(gallery_labels.len());
    for (g, label) in gallery_labels.iter().enumerate() {
        if let Some(first) = index.insert(label, g) {
            return Err(EvalError::DuplicateIdentity {
                origin: gallery.origin.clone(),
                label: label.to_string(),
                first,
                second: g,
            });
        }
    }
    probe_labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            index.get(label).copied().ok_or_else(|| EvalError::UnknownIdentity {
                origin: probes.origin.clone(),
                probe: i,
                label: label.to_string(),
            })
        })
        .collect()
}

/// [`rank1`] at chosen distractor counts (each at most `distractors.rows`).
pub fn rank1_at<T, L>(
    probes: &Matrix<T>,
    probe_labels: &[L],
    gallery: &Matrix<T>,
    gallery_labels: &[L],
    distractors: &Matrix<T>,
    counts: &[usize],
) -> Result<Rank1Result>
where
    T: Copy + Into<f64>,
    L: Eq + Hash + Display,
{
    let truth_rows = gallery_rows_of_probes(
        probes,
        probe_labels,
        gallery,
        gallery_labels,
        (&distractors.origin, distractors.rows, distractors.cols),
        counts,
    )?;
    let d = probes.cols;
    let (p_unit, g_unit) = (unit_rows(probes)?, unit_rows(gallery)?);
    let x_unit = if distractors.rows > 0 { unit_rows(distractors)? } else { Vec::new() };
    let row = |i: usize| i * d..(i + 1) * d;
    // For each probe: whether the gallery alone already ranks it right, and how many leading
    // distractors it survives (the index of the first distractor scoring >= its true score).
    let mut survives = Vec::with_capacity(probes.rows);
    for (i, &g) in truth_rows.iter().enumerate() {
        let p = &p_unit[row(i)];
        let truth = dot(p, &g_unit[row(g)]);
        let gallery_ok = (0..gallery.rows).all(|h| h == g || dot(p, &g_unit[row(h)]) < truth);
        let first_beaten = if gallery_ok {
            (0..distractors.rows)
                .find(|&k| dot(p, &x_unit[row(k)]) >= truth)
                .unwrap_or(distractors.rows)
        } else {
            0
        };
        survives.push((gallery_ok, first_beaten));
    }
    Ok(Rank1Result::from_survival(&survives, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: &[[f32; 2]], origin: &str) -> Matrix<f32> {
        Matrix::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), origin).unwrap()
    }

    #[test]
    fn counts_are_log_spaced_and_end_at_the_total() {
        assert_eq!(distractor_counts(0), vec![0]);
        assert_eq!(distractor_counts(7), vec![0, 7]);
        assert_eq!(distractor_counts(10), vec![0, 10]);
        assert_eq!(distractor_counts(1234), vec![0, 10, 100, 1000, 1234]);
    }

    /// Three identities by hand, in 2-D (angles in degrees): gallery A at 0, B at 90, C at 180.
    /// Probes: a1 at 10 (closest to A: hit), a2 at 80 (closest to B: miss), b1 at 100 (B: hit),
    /// c1 at 135 (45 from both B and C: a tie, counted as a miss).
    /// Distractors: x0 at 95 (beats b1's true score? b1-B is 10 degrees, b1-x0 is 5: yes),
    /// x1 at 5 (a1-x1 5 degrees < 10 to A: beats a1).
    /// 0 distractors: a1, b1 hit: 2/4. With x0: b1 falls: 1/4. With x0, x1: a1 falls: 0/4.
    #[test]
    fn three_identities_by_hand() {
        let deg = |a: f64| [a.to_radians().cos() as f32, a.to_radians().sin() as f32];
        // Exact axes for the gallery, so that c1's two scores are exactly equal.
        let gallery = m(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], "gallery");
        let probes = m(&[deg(10.0), deg(80.0), deg(100.0), [-1.0, 1.0]], "probes");
        let distractors = m(&[deg(95.0), deg(5.0)], "distractors");
        let r = rank1_at(
            &probes,
            &["A", "A", "B", "C"],
            &gallery,
            &["A", "B", "C"],
            &distractors,
            &[0, 1, 2],
        )
        .unwrap();
        let hits: Vec<usize> = r.curve.iter().map(|p| p.hits).collect();
        assert_eq!(hits, vec![2, 1, 0]);
        assert_eq!(r.curve[0].accuracy, 0.5);
        assert_eq!(r.accuracy(), 0.0);
        let full = rank1(&probes, &["A", "A", "B", "C"], &gallery, &["A", "B", "C"], &distractors)
            .unwrap();
        assert_eq!(full.curve.iter().map(|p| p.distractors).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn a_distractor_tying_the_true_score_is_a_miss() {
        // The probe equals its gallery row and one distractor exactly: cosine 1 for both.
        let gallery = m(&[[1.0, 0.0], [0.0, 1.0]], "g");
        let probes = m(&[[2.0, 0.0]], "p");
        let distractors = m(&[[0.0, -1.0], [3.0, 0.0]], "x");
        let r = rank1(&probes, &[1], &gallery, &[1, 2], &distractors).unwrap();
        assert_eq!(r.curve.iter().map(|p| p.hits).collect::<Vec<_>>(), vec![1, 0]);
        // No distractors at all.
        let none = Matrix::<f32>::new(0, 2, vec![]).unwrap();
        assert_eq!(rank1(&probes, &[1], &gallery, &[1, 2], &none).unwrap().accuracy(), 1.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let gallery = m(&[[1.0, 0.0], [0.0, 1.0]], "g.npy");
        let probes = m(&[[1.0, 0.0]], "p.npy");
        let x = m(&[[1.0, 1.0]], "x.npy");
        let e = rank1(&probes, &["z"], &gallery, &["a", "b"], &x).unwrap_err();
        assert_eq!(e.to_string(), "p.npy: probe 0 has identity `z`, which is not in the gallery");
        let e = rank1(&probes, &["a"], &gallery, &["a", "a"], &x).unwrap_err();
        assert!(matches!(e, EvalError::DuplicateIdentity { first: 0, second: 1, .. }), "{e}");
        assert!(rank1(&probes, &["a", "b"], &gallery, &["a", "b"], &x)
            .unwrap_err()
            .to_string()
            .contains("probe labels has 2"));
        assert!(rank1(&probes, &["a"], &gallery, &["a"], &x)
            .unwrap_err()
            .to_string()
            .contains("gallery labels has 1"));
        let wide = Matrix::new(1, 3, vec![1.0f32, 0.0, 0.0]).unwrap().with_origin("w.npy");
        assert!(rank1(&probes, &["a"], &gallery, &["a", "b"], &wide)
            .unwrap_err()
            .to_string()
            .contains("w.npy has 3"));
        let e = rank1_at(&probes, &["a"], &gallery, &["a", "b"], &x, &[0, 5]).unwrap_err();
        assert!(e.to_string().contains("at most 1"), "{e}");
        let empty = Matrix::<f32>::new(0, 2, vec![]).unwrap();
        assert!(matches!(
            rank1::<f32, &str>(&empty, &[], &gallery, &["a", "b"], &x),
            Err(EvalError::Empty { .. })
        ));
        assert!(matches!(rank1(&probes, &["a"], &empty, &[], &x), Err(EvalError::Empty { .. })));
        let zero = m(&[[0.0, 0.0]], "zero.npy");
        assert!(rank1(&zero, &["a"], &gallery, &["a", "b"], &x)
            .unwrap_err()
            .to_string()
            .contains("row 0 of zero.npy"));
        let nan = m(&[[f32::NAN, 0.0]], "nan.npy");
        assert!(matches!(
            rank1(&probes, &["a"], &gallery, &["a", "b"], &nan),
            Err(EvalError::NonFinite { .. })
        ));
    }
}
