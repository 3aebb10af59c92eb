//! Error type of the analysis module.
//!
//! Evaluation inputs are large text files written by other tools (IJB meta files hold close to
//! half a million lines), so every variant about a file names the file and, where a line is at
//! fault, the 1-based line number together with what was expected there.

use std::path::PathBuf;

/// Result alias used by the analysis module.
pub type Result<T> = std::result::Result<T, AnalysisError>;

/// Everything that can go wrong while evaluating or analysing a model's outputs.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An operating-system level I/O failure on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or folder the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A line of a text file does not follow the expected format.
    #[error("{}:{line}: {what}", path.display())]
    Parse {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        what: String,
    },

    /// An image named on a line of a meta file does not exist.
    #[error(
        "missing image {} (listed on line {line} of {})",
        path.display(),
        listed_in.display()
    )]
    MissingImage {
        /// Where the image was looked for.
        path: PathBuf,
        /// The meta file that lists it.
        listed_in: PathBuf,
        /// 1-based line of `listed_in` naming it.
        line: usize,
    },

    /// An image could not be decoded or encoded.
    #[error("image error in {}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's or encoder's error.
        #[source]
        source: image::ImageError,
    },

    /// In-memory inputs that do not fit together (lengths, widths, indices, degenerate data).
    #[error("invalid `{name}`: {what}")]
    InvalidInput {
        /// The argument at fault.
        name: &'static str,
        /// What was expected and what was found.
        what: String,
    },
}

impl AnalysisError {
    /// Builds an [`AnalysisError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AnalysisError::Io { path: path.into(), source }
    }

    /// Builds an [`AnalysisError::Parse`] for line `line` (1-based) of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, what: impl Into<String>) -> Self {
        AnalysisError::Parse { path: path.into(), line, what: what.into() }
    }

    /// Builds an [`AnalysisError::InvalidInput`] about argument `name`.
    pub fn invalid(name: &'static str, what: impl Into<String>) -> Self {
        AnalysisError::InvalidInput { name, what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_line_and_expectation() {
        let e = AnalysisError::parse("/x/meta/ijbc_face_tid_mid.txt", 17, "expected 3 fields");
        assert_eq!(e.to_string(), "/x/meta/ijbc_face_tid_mid.txt:17: expected 3 fields");
        let e = AnalysisError::MissingImage {
            path: "/x/loose_crop/5.jpg".into(),
            listed_in: "/x/meta/ijbc_name_5pts_score.txt".into(),
            line: 5,
        };
        assert_eq!(
            e.to_string(),
            "missing image /x/loose_crop/5.jpg (listed on line 5 of \
             /x/meta/ijbc_name_5pts_score.txt)"
        );
        let e = AnalysisError::invalid("features", "expected 3 rows, found 2");
        assert_eq!(e.to_string(), "invalid `features`: expected 3 rows, found 2");
    }
}
