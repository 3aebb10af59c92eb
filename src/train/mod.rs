//! Training: [`config`] (the keys of a run and their validation), [`data`] (what it trains,
//! validates and is evaluated on), [`step`] (the model with its loss, the non-finite guard,
//! gradient clipping), [`learner`] (burn-train's step, metrics and logger), [`renderer`] (what
//! a run shows without the dashboard: a progress sink, or one line per epoch in a log),
//! [`schedule`] (learning-rate schedules), [`run`] (a run from start or checkpoint to its
//! held-out report, with the TUI dashboard), [`run_dir`] (what a run writes and how it is
//! loaded again), [`curves`] (`curves.svg`, the training curves drawn from `metrics.csv`) and
//! [`cluster`] (the same over several processes).

pub mod cluster;
pub mod config;
pub mod curves;
pub mod data;
pub mod learner;
pub mod renderer;
pub mod run;
pub mod run_dir;
pub mod schedule;
pub mod step;
