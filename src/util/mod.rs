//! Helpers shared across the crate that belong to no one module.
//!
//! - [`fs`]: files written whole or not at all, and outputs that are never mixed with an
//!   earlier one.

pub mod fs;
