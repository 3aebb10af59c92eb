//! # groupface
//!
//! GroupFace (Kim et al., CVPR 2020: "GroupFace: Learning Latent Groups and Constructing
//! Group-based Representations for Face Recognition") on the Burn deep-learning framework.
//!
//! Everything that touches tensors is generic over Burn's
//! [`Backend`](burn::tensor::backend::Backend); the backend is picked once, in [`backend`], from
//! the compiled cargo features and a `backend=` key.
//!
//! ## Layers
//!
//! One folder per concern. Each layer imports only the layers above it in this list, never one
//! below, so reading from the top never needs a later module:
//!
//! 0. [`util`]: files written whole, outputs never mixed with an earlier one,
//!    [`ConfigError`](util::error::ConfigError), the `named_enum!` names of the CLI's enums and
//!    the [`Progress`](util::progress::Progress) sink that long loops report to.
//!    [`backend`]: the backend choice and insightface's convolution as a backend extension with
//!    its own gradient kernels ([`backend::conv`]).
//! 1. [`data`]: synthetic faces, image folders, RecordIO, `.bin` pairs, the loader.
//!    [`protocol`]: host-side, Burn-free evaluation protocols bit-exact with insightface and
//!    scikit-learn (verification, ROC, identification, IJB and its alignment, reports, plots).
//!    [`analysis`]: what the learned groups capture (usage, NMI, PCA scatter, image grids).
//! 2. [`model`]: the GroupFace model (instance FC, K group FCs, group decision network), the
//!    IResNet backbone, its norm and activation layers, FLOP counts and PyTorch interop.
//! 3. [`objective`]: margin losses (ArcFace, CosFace, SphereFace, softmax), the self-grouping
//!    loss, Center loss, and the naive and self-distributed group labels.
//! 4. [`evaluate`]: a model through a protocol: embeddings, plain and group-aware similarity,
//!    rank-1 on the backend, held-out evaluation, listed pairs, `.bin` files and IJB.
//! 5. [`train`]: a training run with burn-train's Learner: its configuration, the step, metrics,
//!    schedules, the run directory and multi-process training ([`train::cluster`]).
//! 6. [`app`]: what the binaries share: the CLI, the `eval`/`embed` jobs, ablation grids, the
//!    step benchmark, the `data` tool and their progress bars.
//!
//! The binaries in `src/bin` parse their arguments and call [`app`] or [`train`].

#![recursion_limit = "256"]

// Burn 0.21's `distributed` feature (which `ddp` turns on) implements autodiff only over
// backends with collective operations; ndarray and flex have none, and wgpu's server has no
// all-reduce.
#[cfg(all(feature = "ddp", any(feature = "ndarray", feature = "flex", feature = "wgpu")))]
compile_error!(
    "the `ddp` build is CUDA only: build it with `--no-default-features --features ddp`"
);

pub mod analysis;
pub mod app;
pub mod backend;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod objective;
pub mod protocol;
pub mod train;
pub mod util;
