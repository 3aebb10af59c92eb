//! # groupface
//!
//! GroupFace (Kim et al., CVPR 2020: "GroupFace: Learning Latent Groups and Constructing
//! Group-based Representations for Face Recognition") on the Burn deep-learning framework.
//!
//! Everything here is generic over Burn's [`Backend`](burn::tensor::backend::Backend); the
//! backend is picked once, in [`backend`], from the compiled cargo features and a `backend=` key.
//!
//! - [`backbone`]: insightface's IResNet (r18/r34/r50/r100 and CPU-sized presets);
//!   [`conv`]: its convolution as a backend extension with its own gradient kernels.
//! - [`model`]: the GroupFace head (instance FC, K group FCs, group decision network).
//! - [`labels`]: naive and self-distributed group labels.
//! - [`loss`]: ArcFace / CosFace / SphereFace / softmax margins, self-grouping loss, Center loss.
//! - [`similarity`]: plain and group-aware similarity.
//! - [`summary`]: parameter and FLOP counts from a configuration.
//! - [`train`], [`learner`], [`schedule`]: training runs with burn-train's Learner;
//!   [`cluster`]: the same across processes and machines.
//! - [`embed`], [`eval`], [`evaluate`], [`analysis`]: embeddings, the evaluation protocols and
//!   what the groups learned.
//! - [`ablation`]: grids of runs and their comparison with the paper.
//! - [`util`]: files written whole, outputs never mixed with an earlier one.
#![recursion_limit = "256"]

pub mod ablation;
pub mod activation;
pub mod analysis;
pub mod backbone;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod conv;
pub mod data;
pub mod embed;
pub mod error;
pub mod eval;
pub mod evaluate;
pub mod identify;
pub mod interop;
pub mod labels;
pub mod learner;
pub mod loss;
pub mod model;
pub mod norm;
pub mod plot;
pub mod schedule;
pub mod similarity;
pub mod summary;
pub mod train;
pub mod training;
pub mod util;
