//! Which rows to compare: explicit pair lists and identity labels.
//!
//! A verification benchmark is a list of pairs over the rows of an embedding matrix. Two
//! sources are supported: a pairs file (`row_a row_b 1|0` per line, as the `eval` binary takes
//! it), and a labels file from which every pair of rows is formed. The second grows as N²:
//! [`all_pairs`] materialises the list for the sizes of a held-out split, [`all_pairs_iter`]
//! yields pairs lazily, and [`all_pairs_scores`] goes straight to the scores a ROC needs
//! (5 bytes per pair) without a list of index pairs (24 bytes per pair) in between.

use std::path::Path;

use super::{EvalError, Matrix, Result};

/// A pair of rows: `(row_a, row_b, same)`, `same` meaning the same identity (a positive pair).
/// A plain tuple, as the rest of the crate passes pairs around.
pub type Pair = (usize, usize, bool);

/// Reads a pairs file and checks every index against an embedding matrix of `rows` rows.
///
/// Format: one pair per line, `row_a row_b label` separated by spaces or tabs, rows 0-based,
/// label `1` (same identity) or `0`; blank lines and everything after a `#` are ignored.
pub fn read_pairs(path: impl AsRef<Path>, rows: usize) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    parse_pairs(&text, path, rows)
}

/// Parses the text of a pairs file (see [`read_pairs`]); `path` names it in errors.
pub fn parse_pairs(text: &str, path: impl AsRef<Path>, rows: usize) -> Result<Vec<Pair>> {
    let path = path.as_ref();
    let parse_err = |line: usize, what: String| EvalError::Parse { path: path.into(), line, what };
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("");
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 3 {
            return Err(parse_err(
                line,
                format!(
                    "expected 3 fields `row_a row_b 1|0`, found {}: {:?}",
                    fields.len(),
                    raw.trim()
                ),
            ));
        }
        let index = |field: &str, which: &str| -> Result<usize> {
            let index = field.parse::<usize>().map_err(|_| {
                parse_err(
                    line,
                    format!("{which} `{field}` is not a non-negative integer row index"),
                )
            })?;
            if index >= rows {
                return Err(EvalError::PairIndexOutOfRange {
                    path: path.into(),
                    line,
                    index,
                    rows,
                });
            }
            Ok(index)
        };
        let a = index(fields[0], "row_a")?;
        let b = index(fields[1], "row_b")?;
        let same = match fields[2] {
            "1" => true,
            "0" => false,
            other => {
                return Err(parse_err(
                    line,
                    format!("label `{other}`: expected 1 (same) or 0 (different)"),
                ))
            }
        };
        pairs.push((a, b, same));
    }
    if pairs.is_empty() {
        return Err(EvalError::Empty {
            what: path.display().to_string(),
            expected: "at least one pair line `row_a row_b 1|0`".into(),
        });
    }
    Ok(pairs)
}

/// Reads a labels file: one identity per line, line k naming row k - 1 of an embedding matrix
/// of `rows` rows.
///
/// Leading and trailing whitespace is dropped; an empty line is an error (it would shift every
/// later row by one), and so is a line count other than `rows`.
pub fn read_labels(path: impl AsRef<Path>, rows: usize) -> Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    parse_labels(&text, path, rows)
}

/// Parses the text of a labels file (see [`read_labels`]).
pub fn parse_labels(text: &str, path: impl AsRef<Path>, rows: usize) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut labels = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let label = raw.trim();
        if label.is_empty() {
            return Err(EvalError::Parse {
                path: path.into(),
                line: i + 1,
                what: format!("empty label; expected the identity of row {i}"),
            });
        }
        labels.push(label.to_string());
    }
    if labels.is_empty() {
        return Err(EvalError::Empty {
            what: path.display().to_string(),
            expected: "one identity label per embedding row".into(),
        });
    }
    check_labels(&labels, &path.display().to_string(), rows, "the embedding matrix")?;
    Ok(labels)
}

/// Checks that `labels` has one entry per row of a `rows`-row matrix.
pub fn check_labels<L>(
    labels: &[L],
    labels_origin: &str,
    rows: usize,
    rows_origin: &str,
) -> Result<()> {
    if labels.len() != rows {
        return Err(EvalError::length_mismatch(
            labels_origin,
            labels.len(),
            rows_origin,
            rows,
            "rows",
        ));
    }
    Ok(())
}

/// Every pair `(i, j, same)` with `i < j` of rows labelled by `labels`, in row-major order
/// `(0,1), (0,2), ..., (1,2), ...`: `n (n - 1) / 2` pairs in memory. See [`all_pairs_iter`] for
/// a lazy version and [`all_pairs_scores`] for large `n`.
pub fn all_pairs<L: PartialEq>(labels: &[L]) -> Vec<Pair> {
    all_pairs_iter(labels).collect()
}

/// The pairs of [`all_pairs`], generated on the fly.
pub fn all_pairs_iter<L: PartialEq>(labels: &[L]) -> AllPairs<'_, L> {
    AllPairs { labels, i: 0, j: 1 }
}

/// Number of pairs `i < j` among `n` rows.
pub fn all_pairs_count(n: usize) -> u64 {
    let n = n as u64;
    n * n.saturating_sub(1) / 2
}

/// Iterator over every pair of rows (see [`all_pairs_iter`]).
#[derive(Debug, Clone)]
pub struct AllPairs<'a, L> {
    labels: &'a [L],
    i: usize,
    j: usize,
}

impl<L: PartialEq> Iterator for AllPairs<'_, L> {
    type Item = Pair;

    fn next(&mut self) -> Option<Pair> {
        let n = self.labels.len();
        if self.j >= n {
            self.i += 1;
            self.j = self.i + 1;
            if self.j >= n {
                return None;
            }
        }
        let pair = (self.i, self.j, self.labels[self.i] == self.labels[self.j]);
        self.j += 1;
        Some(pair)
    }

    /// Exact, so that collecting 5·10⁷ scores or distances allocates once, not by doubling
    /// (which holds the old and the new buffer at once).
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.labels.len();
        // What is left of row i, then every pair among the rows after it.
        let rest = n.saturating_sub(self.j) as u64
            + all_pairs_count(n.saturating_sub(self.i.saturating_add(1)));
        match usize::try_from(rest) {
            Ok(rest) => (rest, Some(rest)),
            Err(_) => (usize::MAX, None),
        }
    }
}

/// Cosine scores of pairs and their labels, the input of [`crate::protocol::roc::Roc`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoredPairs {
    /// Cosine similarity per pair (higher = more alike), rounded to `f32` to halve the memory of
    /// 10⁸-pair evaluations.
    pub scores: Vec<f32>,
    /// Same identity per pair.
    pub positive: Vec<bool>,
}

/// Rows divided by their L2 norm, in `f64`; fails on non-finite values and on zero rows (their
/// cosine is undefined).
pub(crate) fn unit_rows<T: Copy + Into<f64>>(m: &Matrix<T>) -> Result<Vec<f64>> {
    m.check_finite()?;
    let mut out: Vec<f64> = m.data.iter().map(|&v| v.into()).collect();
    for (r, row) in out.chunks_mut(m.cols.max(1)).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(EvalError::invalid(
                format!("row {r} of {}", m.origin),
                "a non-zero embedding (cosine similarity needs a direction)",
                "all zeros",
            ));
        }
        for v in row {
            *v /= norm;
        }
    }
    Ok(out)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine of two `f32` rows already scaled to unit length: their dot product, each product
/// and the sum in `f64`.
pub fn unit_cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

/// GroupFace's group-aware similarity of a pair, `S* = cos − β·‖v̂_a − v̂_b‖₂^γ`, given its
/// cosine and the GDN features v̂ of its two sides (the distance in `f64`).
///
/// The host twin of `evaluate::similarity::group_aware_rows` (on tensors): IJB templates and
/// listed pairs are scored here, one pair at a time, in the same order of operations.
pub fn group_aware_score(cos: f64, v_a: &[f32], v_b: &[f32], beta: f64, gamma: f64) -> f64 {
    let distance = v_a
        .iter()
        .zip(v_b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt();
    cos - beta * distance.powf(gamma)
}

/// Cosine scores of the listed pairs of rows of `embeddings`.
///
/// # Shapes
/// `embeddings`: `[rows, dim]`; every pair index must be `< rows` (as [`read_pairs`] checks).
pub fn pair_scores<T: Copy + Into<f64>>(
    embeddings: &Matrix<T>,
    pairs: &[Pair],
) -> Result<ScoredPairs> {
    let unit = unit_rows(embeddings)?;
    let d = embeddings.cols;
    let mut out = ScoredPairs {
        scores: Vec::with_capacity(pairs.len()),
        positive: Vec::with_capacity(pairs.len()),
    };
    for (k, &(a, b, same)) in pairs.iter().enumerate() {
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
        out.scores.push(dot(&unit[a * d..(a + 1) * d], &unit[b * d..(b + 1) * d]) as f32);
        out.positive.push(same);
    }
    Ok(out)
}

/// Cosine scores of every pair `i < j` of rows, labelled same / different by `labels`, in the
/// order of [`all_pairs`], without materialising the pair list.
///
/// # Shapes
/// `embeddings`: `[n, dim]`, `labels`: `[n]`; the output holds `n (n - 1) / 2` scores.
pub fn all_pairs_scores<T: Copy + Into<f64>, L: PartialEq>(
    embeddings: &Matrix<T>,
    labels: &[L],
    labels_origin: &str,
) -> Result<ScoredPairs> {
    check_labels(labels, labels_origin, embeddings.rows, &embeddings.origin)?;
    let count = usize::try_from(all_pairs_count(labels.len())).map_err(|_| {
        EvalError::invalid(
            "number of pairs",
            "a count that fits in memory",
            all_pairs_count(labels.len()),
        )
    })?;
    let unit = unit_rows(embeddings)?;
    let d = embeddings.cols;
    let mut out =
        ScoredPairs { scores: Vec::with_capacity(count), positive: Vec::with_capacity(count) };
    for i in 0..labels.len() {
        let a = &unit[i * d..(i + 1) * d];
        for j in i + 1..labels.len() {
            out.scores.push(dot(a, &unit[j * d..(j + 1) * d]) as f32);
            out.positive.push(labels[i] == labels[j]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_with_comments_blank_lines_and_tabs() {
        let text = "# header\n0 1 1\n\n  2\t3 0   # trailing comment\r\n3 0 1\n";
        let pairs = parse_pairs(text, "p.txt", 4).unwrap();
        assert_eq!(pairs, vec![(0, 1, true), (2, 3, false), (3, 0, true)]);
    }

    #[test]
    fn pair_errors_name_file_line_and_expectation() {
        let e = parse_pairs("0 1 1\n0 4 0\n", "p.txt", 4).unwrap_err();
        assert!(
            matches!(e, EvalError::PairIndexOutOfRange { line: 2, index: 4, rows: 4, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "p.txt:2: row index 4 is out of range: the embeddings have 4 rows \
             (valid indices 0..=3)"
        );
        let e = parse_pairs("0 1\n", "p.txt", 4).unwrap_err();
        assert!(e.to_string().contains("p.txt:1: expected 3 fields"), "{e}");
        let e = parse_pairs("0 -1 1\n", "p.txt", 4).unwrap_err();
        assert!(e.to_string().contains("row_b `-1`"), "{e}");
        let e = parse_pairs("\n0 1 yes\n", "p.txt", 4).unwrap_err();
        assert!(e.to_string().contains("p.txt:2: label `yes`"), "{e}");
        let e = parse_pairs("# nothing\n\n", "p.txt", 4).unwrap_err();
        assert!(matches!(e, EvalError::Empty { .. }) && e.to_string().contains("p.txt"), "{e}");
        assert!(matches!(read_pairs("/nonexistent/p.txt", 4), Err(EvalError::Io { .. })));
    }

    #[test]
    fn labels_file_rules() {
        assert_eq!(
            parse_labels("alice\n bob \r\nalice\n", "l.txt", 3).unwrap(),
            vec!["alice", "bob", "alice"]
        );
        let e = parse_labels("alice\n\nbob\n", "l.txt", 3).unwrap_err();
        assert!(e.to_string().starts_with("l.txt:2: empty label"), "{e}");
        assert!(matches!(parse_labels("", "l.txt", 0), Err(EvalError::Empty { .. })));
        assert!(matches!(read_labels("/nonexistent/l.txt", 1), Err(EvalError::Io { .. })));
        let e = parse_labels("a\nb\n", "l.txt", 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "length mismatch: l.txt has 2 rows but the embedding matrix has 3"
        );
    }

    #[test]
    fn all_pairs_are_every_i_below_j_once() {
        let labels = ["x", "y", "x", "x"];
        assert_eq!(
            all_pairs(&labels),
            vec![
                (0, 1, false),
                (0, 2, true),
                (0, 3, true),
                (1, 2, false),
                (1, 3, false),
                (2, 3, true)
            ]
        );
        assert_eq!(all_pairs_iter(&labels).count() as u64, all_pairs_count(4));
        assert_eq!(all_pairs_count(4), 6);
        assert!(all_pairs(&["a"]).is_empty());
        assert!(all_pairs::<u8>(&[]).is_empty());
        assert_eq!(all_pairs_count(0), 0);
    }

    #[test]
    fn all_pairs_know_how_many_are_left() {
        // 4 rows: 6 pairs; after (0,1), (0,2), (0,3) the 3 pairs of rows 1..4 are left.
        let labels = ["x", "y", "x", "x"];
        let mut it = all_pairs_iter(&labels);
        assert_eq!(it.size_hint(), (6, Some(6)));
        it.next();
        assert_eq!(it.size_hint(), (5, Some(5)));
        it.next();
        it.next();
        assert_eq!(it.size_hint(), (3, Some(3)));
        assert_eq!(it.by_ref().count(), 3);
        assert_eq!(it.size_hint(), (0, Some(0)));
        assert_eq!(it.next(), None);
        assert_eq!(it.size_hint(), (0, Some(0)));
        assert_eq!(all_pairs_iter(&["a"]).size_hint(), (0, Some(0)));
        assert_eq!(all_pairs_iter::<u8>(&[]).size_hint(), (0, Some(0)));
    }

    #[test]
    fn scores_are_cosines_in_pair_order() {
        // Rows (1,0), (0,2), (3,3): cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt(2).
        let m = Matrix::new(3, 2, vec![1.0f32, 0.0, 0.0, 2.0, 3.0, 3.0]).unwrap();
        let s = all_pairs_scores(&m, &[7, 7, 8], "labels").unwrap();
        let r = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(s.scores, vec![0.0, r, r]);
        assert_eq!(s.positive, vec![true, false, false]);
        let p = pair_scores(&m, &[(2, 0, true)]).unwrap();
        assert_eq!((p.scores[0], p.positive[0]), (r, true));
        let e = pair_scores(&m, &[(3, 0, true)]).unwrap_err();
        assert!(e.to_string().contains("pair 0"), "{e}");
        let e = all_pairs_scores(&m, &[1, 2], "labels.txt").unwrap_err();
        assert!(e.to_string().contains("labels.txt has 2"), "{e}");
        let z = Matrix::new(2, 2, vec![0.0f32, 0.0, 1.0, 0.0]).unwrap().with_origin("z.npy");
        let e = all_pairs_scores(&z, &[1, 2], "l").unwrap_err();
        assert!(e.to_string().contains("row 0 of z.npy"), "{e}");
        let n = Matrix::new(2, 1, vec![1.0f32, f32::INFINITY]).unwrap();
        assert!(matches!(pair_scores(&n, &[]), Err(EvalError::NonFinite { row: 1, .. })));
    }

    #[test]
    fn group_aware_score_subtracts_the_feature_distance_penalty() {
        assert_eq!(unit_cosine(&[0.6, 0.8], &[1.0, 0.0]), f64::from(0.6f32));
        // ‖(3, 4)‖ = 5, 5^1 · 0.1 = 0.5
        assert_eq!(group_aware_score(0.9, &[3.0, 4.0], &[0.0, 0.0], 0.1, 1.0), 0.9 - 0.5);
        let cube = group_aware_score(0.0, &[8.0], &[0.0], 0.1, 1.0 / 3.0);
        assert!((cube + 0.2).abs() < 1e-12, "{cube}");
        assert_eq!(group_aware_score(0.25, &[1.0], &[7.0], 0.0, 1.0), 0.25);
    }
}
