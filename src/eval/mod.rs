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
//! * [`pairs`]: pair lists and identity labels;
//! * [`npy`]: numpy `.npy` files, the interchange format with Python tools;
//! * [`report`]: one JSON / CSV / Markdown / SVG report per evaluation;
//! * [`error`]: [`EvalError`], which names the file, line or row at fault.

pub mod error;
pub mod identification;
pub mod npy;
mod numpy;
pub mod pairs;
pub mod report;
pub mod roc;
pub mod verification;

pub use error::{EvalError, Result};

use std::path::Path;

/// A dense row-major matrix of embeddings (one row per image or template).
///
/// The element type is `f32` by default (what networks produce); `f64` keeps numpy's `float64`
/// arrays exact, which matters for parity when embeddings were normalised by a Python tool.
/// `origin` names where the rows came from (an `.npy` path, or a description) so that errors
/// about row 4711 say which file holds it.
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
    pub fn from_rows(rows: &[Vec<T>], origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        let cols = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (i, r) in rows.iter().enumerate() {
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

    /// Row `i` (panics when `i >= rows`, like slice indexing).
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
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

/// Writes `bytes` to `path` whole ([`crate::util::fs::write_atomic`]), so that a crash or a
/// full disk never leaves a half-written report where a complete one is expected.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::util::fs::write_atomic(path, bytes).map_err(|e| EvalError::io(e.path, e.source))
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the tests of this module.

    /// A fresh empty folder under the system temp dir, unique per test name and process.
    pub fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("groupface-eval-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
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
    fn strided_rows_split_interleaved_pairs() {
        let m = Matrix::new(5, 1, vec![0.0f32, 1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m.strided_rows(0, 2).data, vec![0.0, 2.0, 4.0]);
        assert_eq!(m.strided_rows(1, 2).data, vec![1.0, 3.0]);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = test_util::temp_dir("atomic");
        let path = dir.join("out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let e = write_atomic(&dir.join("missing-dir").join("x"), b"").unwrap_err();
        assert!(matches!(e, EvalError::Io { .. }));
    }
}
