//! The integration tests, one module per concern, in one test crate: each crate under `tests/`
//! links the library and monomorphises the backends again, so one crate instead of eleven cuts
//! the test build (see the README's "Tests" section for the measured times). `tests/memory.rs`
//! stays its own crate because it installs a counting global allocator.
//!
//! Run one module with a filter: `cargo test --release --test integration -- cluster::`.

#[macro_use]
mod common;

mod cluster;
mod conv;
mod extend;
mod interop;
mod layout;
mod learning;
mod math;
mod model;
mod orl;
mod pipeline;
mod training;
mod wgpu;
