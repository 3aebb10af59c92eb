//! What the binaries share: argument parsing ([`cli`]), the `eval` and `embed` jobs ([`jobs`]),
//! grids of runs and their comparison with the paper ([`ablation`]), the step benchmark
//! ([`bench`]), the `data` tool ([`data_tool`]) and the progress bars of them all
//! ([`progress`]).

pub mod ablation;
pub mod bench;
pub mod cli;
pub mod data_tool;
pub mod jobs;
pub mod progress;
