//! Error type shared by every data source.
//!
//! Every variant names the file it is about (and the record index, byte offset or key where
//! that is meaningful) together with what was expected, so that a user looking at a failing
//! multi-gigabyte `.rec` file or a folder of thousands of images knows where to look.

use std::path::PathBuf;

/// Result alias used by the data module.
pub type Result<T> = std::result::Result<T, DataError>;

/// Formats an optional record index as a suffix such as `" (record 17)"`.
fn at_record(record: &Option<usize>) -> String {
    match record {
        Some(r) => format!(" (record {r})"),
        None => String::new(),
    }
}

/// Everything that can go wrong while reading or writing face data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system level I/O failure on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or folder the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The contents of `path` do not follow the expected format.
    #[error("corrupt data in {}{}: {what}", path.display(), at_record(record))]
    Corrupt {
        /// File whose contents are bad.
        path: PathBuf,
        /// Record (or line / item) index inside the file, when known.
        record: Option<usize>,
        /// What was expected and what was found.
        what: String,
    },

    /// The file ended before a complete structure could be read.
    #[error(
        "truncated file {} at byte offset {offset}{}: {what}",
        path.display(),
        at_record(record)
    )]
    Truncated {
        /// File that is too short.
        path: PathBuf,
        /// Byte offset at which more data was needed.
        offset: u64,
        /// Record (or item) index, when known.
        record: Option<usize>,
        /// What was being read.
        what: String,
    },

    /// A folder or file holds nothing usable.
    #[error("{} is empty: {what}", path.display())]
    Empty {
        /// The empty folder or file.
        path: PathBuf,
        /// What was expected to be there.
        what: String,
    },

    /// An image could not be decoded or encoded.
    #[error("image error in {}{}: {source}", path.display(), at_record(record))]
    Image {
        /// Image file, or container file holding the image.
        path: PathBuf,
        /// Record / item index inside a container, when known.
        record: Option<usize>,
        /// The decoder's or encoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A file or a decoded image is larger than the reader accepts.
    #[error("{} is too large{}: {what}", path.display(), at_record(record))]
    TooLarge {
        /// The file, or the container file holding the image.
        path: PathBuf,
        /// Record / item index inside a container, when known.
        record: Option<usize>,
        /// The size found and the cap it passes.
        what: String,
    },

    /// A RecordIO record does not start with the magic number `0xced7230a`.
    #[error(
        "bad RecordIO magic in {} at offset {offset}: expected 0xced7230a, found {found:#010x}",
        path.display()
    )]
    BadMagic {
        /// The `.rec` file.
        path: PathBuf,
        /// Offset of the bad record header.
        offset: u64,
        /// The 32-bit little-endian word found instead.
        found: u32,
    },

    /// The `.idx` file that must sit beside a `.rec` file is missing.
    #[error(
        "missing RecordIO index {} (expected beside {})",
        idx_path.display(),
        rec_path.display()
    )]
    MissingIndex {
        /// The `.rec` file that was opened.
        rec_path: PathBuf,
        /// The `.idx` path that was looked for.
        idx_path: PathBuf,
    },

    /// An `.idx` line points past the end of the `.rec` file.
    #[error(
        "index {} gives key {key} the offset {offset}, past the end of {} ({file_len} bytes)",
        idx_path.display(),
        rec_path.display()
    )]
    OffsetPastEnd {
        /// The `.idx` file.
        idx_path: PathBuf,
        /// The `.rec` file.
        rec_path: PathBuf,
        /// Record key on the bad line.
        key: usize,
        /// The offset given.
        offset: u64,
        /// Length of the `.rec` file.
        file_len: u64,
    },

    /// A label (class id or record-id range) is outside its valid range.
    #[error("label out of range in {}{}: {what}", path.display(), at_record(record))]
    LabelOutOfRange {
        /// File holding the label.
        path: PathBuf,
        /// Record index, when known.
        record: Option<usize>,
        /// The label and the range it should be in.
        what: String,
    },

    /// A pickle opcode that this reader does not implement.
    #[error(
        "unsupported pickle opcode {opcode:#04x} ({}) in {} at byte offset {offset}",
        opcode_char(*opcode),
        path.display()
    )]
    UnknownOpcode {
        /// The `.bin` file.
        path: PathBuf,
        /// The opcode byte.
        opcode: u8,
        /// Offset of the opcode byte.
        offset: u64,
    },

    /// A verification `.bin` holds an odd number of images (pairs need two each).
    #[error("{} holds {count} images, an odd number: expected two per pair", path.display())]
    OddImageCount {
        /// The `.bin` file.
        path: PathBuf,
        /// Number of images found.
        count: usize,
    },

    /// A verification `.bin` has a label count different from images / 2.
    #[error(
        "{} holds {images} images but {labels} same/different labels: expected {}",
        path.display(),
        images / 2
    )]
    LabelCountMismatch {
        /// The `.bin` file.
        path: PathBuf,
        /// Number of images found.
        images: usize,
        /// Number of labels found.
        labels: usize,
    },

    /// An index asked for is past the end of a data source.
    #[error("index {index} out of range for {} ({len} items)", path.display())]
    IndexOutOfRange {
        /// The data source (file or folder).
        path: PathBuf,
        /// The index requested.
        index: usize,
        /// Number of items available.
        len: usize,
    },

    /// A configuration value is invalid.
    #[error("invalid value for `{field}`: {what}")]
    InvalidConfig {
        /// Name of the bad field or argument.
        field: &'static str,
        /// What is allowed.
        what: String,
    },
}

/// Printable name of a pickle opcode byte for error messages.
fn opcode_char(op: u8) -> String {
    if op.is_ascii_graphic() {
        format!("'{}'", op as char)
    } else {
        "non-ASCII".to_string()
    }
}

impl DataError {
    /// Builds an [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    /// Builds a [`DataError::Corrupt`] for `path`.
    pub fn corrupt(
        path: impl Into<PathBuf>,
        record: Option<usize>,
        what: impl Into<String>,
    ) -> Self {
        DataError::Corrupt { path: path.into(), record, what: what.into() }
    }
}

use crate::util::fs::{OutputError, PathError};

impl From<PathError> for DataError {
    fn from(e: PathError) -> Self {
        DataError::io(e.path, e.source)
    }
}

impl From<OutputError> for DataError {
    /// A refusal is a bad value of the `out` key; an I/O failure stays one.
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::Io(e) => e.into(),
            refused => DataError::InvalidConfig { field: "out", what: refused.to_string() },
        }
    }
}
