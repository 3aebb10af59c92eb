//! Evaluation protocols on the host, in plain Rust.
//!
//! Published face-recognition numbers come from insightface's numpy / scikit-learn scripts, and
//! a 0.02 % difference on LFW is one pair out of 6000: to compare our models with published ones
//! the metric must be the same computation, down to the order of floating-point operations where
//! that order can flip a decision. Tensor libraries do not promise an order of summation, so this
//! module computes metrics on the host, in `f64` where numpy does, with numpy's summation orders
//! (see the private `numpy` module), and is tested bit for bit against a script that runs the
//! reference libraries (`scripts/eval_reference.py`). It does not depend on Burn, so the `eval`
//! binary and the tests can use it without a backend; backend versions (a matmul for rank-1)
//! are tested against the host versions here.
//!
//! * [`verification`]: LFW-style 10-fold accuracy, TPR / FPR curves and VAL@FAR (insightface's
//!   `evaluate()`);
//! * [`roc`]: scikit-learn's `roc_curve` and insightface's TAR@FAR pick, for up to ~10⁸ scores;
//! * [`identification`]: MegaFace-style rank-1 with a growing number of distractors;
//! * [`pairs`]: pair lists and identity labels, cosine and group-aware scores of one pair;
//! * [`npy`]: numpy `.npy` files, the interchange format with Python tools;
//! * [`report`]: one JSON / CSV / Markdown / SVG report per evaluation;
//! * [`error`]: [`EvalError`], which names the file, line or row at fault.
//! * [`ijb`] and [`align`]: IJB-B / IJB-C 1:1 (meta files, 5-point alignment onto the ArcFace
//!   template as insightface does it, template pooling, plain and group-aware template scores);
//! * [`plot`]: line plots as SVG for reports and ablations;
//! * [`analysis_error`]: [`AnalysisError`](analysis_error::AnalysisError), the error of IJB and
//!   of the group analysis, which names the file and line at fault.

pub mod align;
pub mod analysis_error;
pub mod error;
pub mod identification;
pub mod ijb;
pub mod npy;
mod numpy;
pub mod pairs;
pub mod plot;
pub mod report;
pub mod roc;
pub mod verification;

pub use error::{EvalError, Result};

use std::path::Path;

/// A dense row-major matrix of embeddings or features (one row per image or template).
///
/// The element type is `f32` by default (what networks produce); `f64` keeps numpy's `float64`
/// arrays exact, which matters for parity when embeddings were normalised by a Python tool.
/// `origin` names where the rows came from (an `.npy` path, or a description) so that errors
/// about row 4711 say which file holds it. One flat buffer rather than a `Vec` per row: IJB-C
/// has ~470k images, and a model's output batch (already flat) is appended without copying row
/// by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T = f32> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (embedding width).
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<T>,
    /// Where the data came from, for error messages.
    pub origin: String,
}

impl<T> Matrix<T> {
    /// A matrix of no rows whose rows will be `cols` wide; `cols` may be 0 while the width is not
    /// known yet (the fields are public, so whoever appends the first rows may set it).
    pub fn empty(cols: usize) -> Self {
        Self { rows: 0, cols, data: Vec::new(), origin: "in-memory matrix".into() }
    }

    /// All rows, in order.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &[T]> + DoubleEndedIterator + '_ {
        (0..self.rows).map(move |i| self.row(i))
    }

    /// Row `i` (panics when `i >= rows`, like slice indexing).
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Fails unless `data` holds `rows x cols` values, with at least one column when there are
    /// rows. The fields are public, so a consumer that indexes rows checks this first.
    pub fn check_shape(&self) -> Result<()> {
        if Some(self.data.len()) != self.rows.checked_mul(self.cols) {
            return Err(EvalError::invalid(
                format!("matrix {}", self.origin),
                format!("rows x cols = {} x {} values", self.rows, self.cols),
                format!("{} values", self.data.len()),
            ));
        }
        if self.rows > 0 && self.cols == 0 {
            return Err(EvalError::invalid(
                format!("matrix {}", self.origin),
                "embeddings at least one column wide",
                "0 columns",
            ));
        }
        Ok(())
    }
}

impl<T> Default for Matrix<T> {
    /// [`Matrix::empty`] of width 0.
    fn default() -> Self {
        Self::empty(0)
    }
}

impl<T: Copy> Matrix<T> {
    /// A `rows x cols` matrix over `data` (row-major); fails unless `data.len() == rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        let expected = rows.checked_mul(cols).ok_or_else(|| {
            EvalError::invalid(
                "matrix shape",
                "rows * cols to fit in memory",
                format!("{rows} x {cols}"),
            )
        })?;
        if data.len() != expected {
            return Err(EvalError::invalid(
                "matrix data",
                format!("{expected} values for {rows} x {cols}"),
                format!("{} values", data.len()),
            ));
        }
        Ok(Self { rows, cols, data, origin: "in-memory matrix".into() })
    }

    /// A matrix from equally long rows; `origin` names them in errors.
    pub fn from_rows<R: AsRef<[T]>>(rows: &[R], origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        let cols = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (i, r) in rows.iter().enumerate() {
            let r = r.as_ref();
            if r.len() != cols {
                return Err(EvalError::invalid(
                    format!("row {i} of {origin}"),
                    format!("{cols} values like row 0"),
                    format!("{} values", r.len()),
                ));
            }
            data.extend_from_slice(r);
        }
        Ok(Self { rows: rows.len(), cols, data, origin })
    }

    /// The same matrix with `origin` set.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Appends one row; fails, leaving the matrix as it was, unless it is `cols` wide.
    pub fn push_row(&mut self, row: &[T]) -> Result<()> {
        if row.len() != self.cols {
            return Err(EvalError::invalid(
                format!("row appended to {}", self.origin),
                format!("{} values like the matrix's rows", self.cols),
                format!("{} values", row.len()),
            ));
        }
        self.data.extend_from_slice(row);
        self.rows += 1;
        Ok(())
    }

    /// Appends rows given flat (a model's `[batch, cols]` output); fails, leaving the matrix
    /// as it was, unless their length is a multiple of `cols`.
    pub fn extend_flat(&mut self, values: &[T]) -> Result<()> {
        if !values.len().is_multiple_of(self.cols) {
            return Err(EvalError::invalid(
                format!("rows appended to {}", self.origin),
                format!("a multiple of the width {} values", self.cols),
                format!("{} values", values.len()),
            ));
        }
        self.data.extend_from_slice(values);
        self.rows += values.len().checked_div(self.cols).unwrap_or(0);
        Ok(())
    }

    /// The rows `start, start + step, start + 2 step, ...`: splits insightface's interleaved
    /// pair layout (pair i = rows 2i and 2i + 1) with `step = 2`.
    pub fn strided_rows(&self, start: usize, step: usize) -> Self {
        let mut data = Vec::new();
        let mut rows = 0;
        let mut i = start;
        while step > 0 && i < self.rows {
            data.extend_from_slice(self.row(i));
            rows += 1;
            i += step;
        }
        Self { rows, cols: self.cols, data, origin: self.origin.clone() }
    }
}

impl<T: Copy + Into<f64>> Matrix<T> {
    /// Fails unless `data` holds `rows x cols` values, with at least one column when there are
    /// rows, all finite (the first NaN or infinity is named by row and column). The fields are
    /// public, so every consumer checks this before indexing.
    pub fn check_finite(&self) -> Result<()> {
        self.check_shape()?;
        for (k, &v) in self.data.iter().enumerate() {
            let v: f64 = v.into();
            if !v.is_finite() {
                return Err(EvalError::NonFinite {
                    origin: self.origin.clone(),
                    row: k / self.cols.max(1),
                    col: Some(k % self.cols.max(1)),
                    value: v,
                });
            }
        }
        Ok(())
    }
}

impl Matrix<f32> {
    /// Rows scaled to unit L2 norm, the norm summed in `f64` and each value divided in `f64`
    /// before rounding back to `f32` (a zero row stays zero).
    pub fn normalized(&self) -> Self {
        let mut out = self.clone();
        for row in out.data.chunks_mut(self.cols.max(1)) {
            let norm = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        out
    }
}

/// Writes `bytes` to `path` whole ([`crate::util::fs::write_atomic`]), so that a crash or a
/// full disk never leaves a half-written report where a complete one is expected.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::util::fs::write_atomic(path, bytes).map_err(|e| EvalError::io(e.path, e.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_checks_its_shape_and_values() {
        let m = Matrix::new(2, 3, vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);
        assert!(matches!(Matrix::new(2, 3, vec![1.0f32; 5]), Err(EvalError::Invalid { .. })));
        assert!(matches!(
            Matrix::<f32>::new(usize::MAX, 2, vec![]),
            Err(EvalError::Invalid { .. })
        ));
        let bad = Matrix::new(2, 2, vec![0.0f32, 1.0, f32::NAN, 0.0]).unwrap().with_origin("x.npy");
        let e = bad.check_finite().unwrap_err();
        assert!(matches!(e, EvalError::NonFinite { row: 1, col: Some(0), .. }), "{e}");
        assert!(e.to_string().contains("x.npy"));
        let inconsistent = Matrix { rows: 3, cols: 2, data: vec![0.0f32; 5], origin: "m".into() };
        let e = inconsistent.check_finite().unwrap_err().to_string();
        assert_eq!(e, "invalid matrix m: expected rows x cols = 3 x 2 values, found 5 values");
        let empty_rows = Matrix { rows: 2, cols: 0, data: Vec::<f32>::new(), origin: "z".into() };
        assert!(empty_rows.check_finite().unwrap_err().to_string().contains("0 columns"));
        let ragged = Matrix::from_rows(&[vec![1.0f32, 2.0], vec![3.0]], "rows");
        assert!(ragged.unwrap_err().to_string().contains("row 1 of rows"));
    }

    #[test]
    fn matrix_grows_by_rows_of_its_width() {
        let mut m = Matrix::from_rows(&[vec![1.0f32, 2.0], vec![3.0, 4.0]], "m").unwrap();
        assert_eq!((m.rows, m.cols), (2, 2));
        m.extend_flat(&[5.0, 6.0, 7.0, 8.0]).unwrap();
        assert_eq!(m.row(3), &[7.0, 8.0]);
        assert_eq!(m.iter_rows().count(), 4);
        assert_eq!(m.iter_rows().last(), Some(&[7.0f32, 8.0][..]));
        let e = m.push_row(&[1.0]).unwrap_err();
        assert!(matches!(&e, EvalError::Invalid { name, .. } if name.contains("row")), "{e}");
        assert!(e.to_string().contains("2 values") && e.to_string().contains("found 1"), "{e}");
        assert!(m.extend_flat(&[1.0, 2.0, 3.0]).is_err());
        assert_eq!((m.rows, m.data.len()), (4, 8), "failed appends must not change the matrix");
        m.push_row(&[9.0, 10.0]).unwrap();
        assert_eq!((m.rows, m.row(4)), (5, &[9.0f32, 10.0][..]));
        m.check_shape().unwrap();
        // Rows of any slice-like type, like `Vec<f32>` or `[f32; N]`.
        assert_eq!(Matrix::from_rows(&[[1.0f32, 2.0]; 3], "a").unwrap().data, [1.0, 2.0].repeat(3));
        assert!(Matrix::from_rows(&[vec![1.0f32], vec![1.0, 2.0]], "r").is_err());
        let mut empty = Matrix::<f32>::empty(3);
        assert_eq!((empty.rows, empty.cols, empty.iter_rows().count()), (0, 3, 0));
        assert!(empty.extend_flat(&[1.0; 4]).is_err());
        empty.extend_flat(&[1.0; 6]).unwrap();
        assert_eq!(empty.rows, 2);
        // Width 0 while unknown: nothing but nothing can be appended.
        let mut unknown = Matrix::<f32>::default();
        assert_eq!(unknown, Matrix::empty(0));
        unknown.extend_flat(&[]).unwrap();
        assert!(unknown.extend_flat(&[1.0]).is_err());
        assert!(unknown.push_row(&[1.0]).is_err());
        assert_eq!((unknown.rows, unknown.data.len()), (0, 0));
    }

    #[test]
    fn normalized_rows_have_unit_length_and_zero_rows_stay_zero() {
        let m = Matrix::new(3, 2, vec![3.0f32, 4.0, 0.0, 0.0, 0.0, -2.0]).unwrap();
        assert_eq!(m.normalized().data, vec![0.6, 0.8, 0.0, 0.0, 0.0, -1.0]);
        assert_eq!(m.normalized().origin, m.origin);
    }

    #[test]
    fn strided_rows_split_interleaved_pairs() {
        let m = Matrix::new(5, 1, vec![0.0f32, 1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m.strided_rows(0, 2).data, vec![0.0, 2.0, 4.0]);
        assert_eq!(m.strided_rows(1, 2).data, vec![1.0, 3.0]);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = crate::util::test_util::temp_dir("atomic");
        let path = dir.join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let e = write_atomic(&dir.join("missing-dir").join("x"), b"").unwrap_err();
        assert!(matches!(e, EvalError::Io { .. }));
    }
}
