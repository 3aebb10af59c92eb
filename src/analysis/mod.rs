//! Evaluation and analysis that needs no tensor library: everything here works on plain
//! `f32` feature rows that a caller computed with a model, so it can be tested exactly and
//! reused by any backend.
//!
//! * [`align`]: 5-point similarity alignment onto the ArcFace 112x112 template, as insightface
//!   does for IJB (skimage's Umeyama estimate, `cv2.warpAffine` sampling);
//! * [`ijb`]: IJB-B / IJB-C 1:1 verification (meta files, aligned crops, template pooling,
//!   plain and group-aware template scores, a fake IJB tree for tests);
//! * [`groups`]: what the learned groups capture (usage, entropy, NMI with hidden attributes,
//!   a 2-D PCA scatter as SVG, per-group image grids);
//! * [`error`]: the shared [`AnalysisError`] type.

pub mod align;
pub mod error;
pub mod groups;
pub mod ijb;

pub use error::{AnalysisError, Result};

/// A dense row-major matrix of `f32` features, one row per image (or template).
///
/// A flat buffer rather than `Vec<Vec<f32>>` because IJB-C has ~470k images: one allocation,
/// and a model's output batch (already flat) can be appended without copying row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    dim: usize,
    data: Vec<f32>,
}

impl FeatureMatrix {
    /// An empty matrix whose rows will be `dim` wide; `dim` must be at least 1.
    pub fn new(dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(AnalysisError::invalid("dim", "feature width must be at least 1"));
        }
        Ok(FeatureMatrix { dim, data: Vec::new() })
    }

    /// Wraps a flat row-major buffer; its length must be a multiple of `dim`.
    pub fn from_flat(data: Vec<f32>, dim: usize) -> Result<Self> {
        let mut m = Self::new(dim)?;
        m.extend_flat(&data)?;
        Ok(m)
    }

    /// Copies rows that must all have the same, non-zero width.
    pub fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self> {
        let dim = rows.first().map(|r| r.as_ref().len()).unwrap_or(0);
        if rows.is_empty() {
            return Err(AnalysisError::invalid("rows", "need at least one row to know the width"));
        }
        let mut m = Self::new(dim)?;
        for r in rows {
            m.push(r.as_ref())?;
        }
        Ok(m)
    }

    /// Appends one row of width [`FeatureMatrix::dim`].
    pub fn push(&mut self, row: &[f32]) -> Result<()> {
        if row.len() != self.dim {
            return Err(AnalysisError::invalid(
                "row",
                format!("expected a row of width {}, found width {}", self.dim, row.len()),
            ));
        }
        self.data.extend_from_slice(row);
        Ok(())
    }

    /// Appends a batch of rows given flat (e.g. a model's `[batch, dim]` output).
    pub fn extend_flat(&mut self, rows: &[f32]) -> Result<()> {
        if !rows.len().is_multiple_of(self.dim) {
            return Err(AnalysisError::invalid(
                "rows",
                format!(
                    "flat length {} is not a multiple of the feature width {}",
                    rows.len(),
                    self.dim
                ),
            ));
        }
        self.data.extend_from_slice(rows);
        Ok(())
    }

    /// Width of every row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether the matrix holds no row.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`; panics past the end like slice indexing (callers index rows they counted).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All rows, in order.
    pub fn iter(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.dim)
    }

    /// The flat row-major buffer.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_matrix_checks_widths() {
        let mut m = FeatureMatrix::from_rows(&[vec![1.0, 2.0], vec![3.0, 4.0]]).unwrap();
        assert_eq!((m.rows(), m.dim()), (2, 2));
        m.extend_flat(&[5.0, 6.0, 7.0, 8.0]).unwrap();
        assert_eq!(m.row(3), &[7.0, 8.0]);
        assert_eq!(m.iter().count(), 4);
        assert!(matches!(m.push(&[1.0]), Err(AnalysisError::InvalidInput { name: "row", .. })));
        assert!(m.extend_flat(&[1.0, 2.0, 3.0]).is_err());
        assert_eq!(m.rows(), 4, "failed appends must not change the matrix");
        assert!(FeatureMatrix::new(0).is_err());
        assert!(FeatureMatrix::from_rows::<Vec<f32>>(&[]).is_err());
        assert!(FeatureMatrix::from_rows(&[vec![1.0], vec![1.0, 2.0]]).is_err());
        assert!(FeatureMatrix::from_flat(vec![1.0; 6], 4).is_err());
        assert!(FeatureMatrix::new(3).unwrap().is_empty());
    }
}
