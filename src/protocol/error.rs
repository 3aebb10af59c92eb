//! The error type of the evaluation code.
//!
//! Evaluation runs after hours of training, on files written by other tools (numpy, insightface,
//! hand-made pair lists). A message that says only "index out of range" costs the user another
//! run; every variant therefore names the input (a file path, or the name of an in-memory
//! argument together with the file it was read from), the place in it (line, row, column, key)
//! and what was expected there.

use std::path::PathBuf;

/// Result alias of the evaluation module.
pub type Result<T> = std::result::Result<T, EvalError>;

/// Everything that can go wrong while reading evaluation inputs, computing metrics or writing
/// reports. No function of [`crate::protocol`] panics on bad input; it returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An operating-system level I/O failure on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or folder the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A `.npy` file whose header, dtype, shape or payload cannot be used.
    #[error("bad .npy file {}: {what}", path.display())]
    Npy {
        /// The `.npy` file.
        path: PathBuf,
        /// What was expected and what was found.
        what: String,
    },

    /// A line of a text input (pairs file, labels file) that does not parse.
    #[error("{}:{line}: {what}", path.display())]
    Parse {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        what: String,
    },

    /// A pair names a row that the embedding matrix does not have.
    #[error(
        "{}:{line}: row index {index} is out of range: the embeddings have {rows} rows \
         (valid indices 0..={last})",
        path.display(),
        last = rows.saturating_sub(1)
    )]
    PairIndexOutOfRange {
        /// The pairs file.
        path: PathBuf,
        /// 1-based line number of the pair.
        line: usize,
        /// The offending index.
        index: usize,
        /// Number of rows available.
        rows: usize,
    },

    /// An input that must hold at least one item holds none.
    #[error("{what} is empty: {expected}")]
    Empty {
        /// The input (a file path or an argument name).
        what: String,
        /// What it should have held.
        expected: String,
    },

    /// Two inputs that must describe the same items have different lengths.
    #[error("length mismatch: {a} has {a_len} {unit} but {b} has {b_len}")]
    LengthMismatch {
        /// First input.
        a: String,
        /// Its length.
        a_len: usize,
        /// Second input.
        b: String,
        /// Its length.
        b_len: usize,
        /// What is being counted (`rows`, `entries`, `columns`).
        unit: &'static str,
    },

    /// A NaN or infinite value where only finite numbers make sense.
    #[error("{origin}: value {value} at {} is not finite", at(*row, *col))]
    NonFinite {
        /// The input (file path or argument name).
        origin: String,
        /// Row (or element) index.
        row: usize,
        /// Column index, for matrices.
        col: Option<usize>,
        /// The value found.
        value: f64,
    },

    /// An argument or a value in an input outside the range the metric is defined for.
    #[error("invalid {name}: expected {expected}, found {found}")]
    Invalid {
        /// The argument, with the input it belongs to where that helps.
        name: String,
        /// What is accepted.
        expected: String,
        /// What was given.
        found: String,
    },

    /// A metric that needs both classes of pairs got only one.
    #[error(
        "{what}: found {positives} positive and {negatives} negative pairs; \
         the metric needs at least one of each"
    )]
    OneClass {
        /// The metric and its input.
        what: String,
        /// Number of positive (same identity) pairs.
        positives: usize,
        /// Number of negative (different identity) pairs.
        negatives: usize,
    },

    /// A probe whose identity has no gallery entry, so rank-1 is undefined for it.
    #[error("{origin}: probe {probe} has identity `{label}`, which is not in the gallery")]
    UnknownIdentity {
        /// The probe labels' origin.
        origin: String,
        /// Row of the probe.
        probe: usize,
        /// Its identity.
        label: String,
    },

    /// Two gallery rows with the same identity (the protocol has one per identity).
    #[error(
        "{origin}: gallery rows {first} and {second} both have identity `{label}`; \
         the gallery must hold exactly one row per identity"
    )]
    DuplicateIdentity {
        /// The gallery labels' origin.
        origin: String,
        /// The identity.
        label: String,
        /// First row holding it.
        first: usize,
        /// Second row holding it.
        second: usize,
    },

    /// A JSON document that cannot be written or read back.
    #[error("JSON error on {}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// `row 3, column 7` or `element 3`.
fn at(row: usize, col: Option<usize>) -> String {
    match col {
        Some(c) => format!("row {row}, column {c}"),
        None => format!("element {row}"),
    }
}

impl EvalError {
    /// An [`EvalError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// An [`EvalError::Invalid`].
    pub fn invalid(
        name: impl Into<String>,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Self::Invalid { name: name.into(), expected: expected.into(), found: found.to_string() }
    }

    /// An [`EvalError::LengthMismatch`].
    pub fn length_mismatch(
        a: impl Into<String>,
        a_len: usize,
        b: impl Into<String>,
        b_len: usize,
        unit: &'static str,
    ) -> Self {
        Self::LengthMismatch { a: a.into(), a_len, b: b.into(), b_len, unit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_input_the_place_and_the_expectation() {
        let e = EvalError::PairIndexOutOfRange {
            path: "pairs.txt".into(),
            line: 12,
            index: 600,
            rows: 600,
        };
        assert_eq!(
            e.to_string(),
            "pairs.txt:12: row index 600 is out of range: the embeddings have 600 rows \
             (valid indices 0..=599)"
        );
        let e = EvalError::NonFinite {
            origin: "emb.npy".into(),
            row: 4,
            col: Some(2),
            value: f64::NAN,
        };
        assert_eq!(e.to_string(), "emb.npy: value NaN at row 4, column 2 is not finite");
        let e = EvalError::NonFinite {
            origin: "scores".into(),
            row: 9,
            col: None,
            value: f64::INFINITY,
        };
        assert_eq!(e.to_string(), "scores: value inf at element 9 is not finite");
        let e = EvalError::length_mismatch("embeddings_a (a.npy)", 10, "issame", 9, "entries");
        assert_eq!(
            e.to_string(),
            "length mismatch: embeddings_a (a.npy) has 10 entries but issame has 9"
        );
        let e = EvalError::OneClass { what: "ROC".into(), positives: 3, negatives: 0 };
        assert!(e.to_string().contains("3 positive and 0 negative"));
    }
}
