//! Errors of the library outside the data readers.

use std::fmt;

/// A configuration value that cannot be used. Names the key, what was expected and what was
/// found, so the message can be acted on without reading the code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    /// The key, with its path (`backbone.input_side`, `head.groups`).
    pub key: String,
    /// What the key accepts.
    pub expected: String,
    /// What it holds.
    pub found: String,
}

impl ConfigError {
    /// A new error for `key`.
    pub fn new(
        key: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self { key: key.into(), expected: expected.into(), found: found.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: expected {}, found {}", self.key, self.expected, self.found)
    }
}
