//! Face data sources. All but [`dataset`] are independent of any tensor library.
//!
//! * [`dataset`]: Burn datasets over every source, identity-disjoint splits, the batcher;
//! * [`synth`]: procedural synthetic faces, the embedded default dataset;
//! * [`folder`]: image folders with one subfolder per identity;
//! * [`recordio`]: insightface / MXNet RecordIO `.rec` + `.idx` files (reader and writer);
//! * [`source`]: a folder or `.rec` opened for training and split by identity;
//! * [`loader`]: the training data loader, whose epochs are reproducible;
//! * [`verification_bin`]: insightface verification pair `.bin` pickles (reader and writer);
//! * [`rng`]: the small deterministic PRNG used throughout;
//! * [`error`]: the shared [`DataError`] type.

pub mod dataset;
pub mod error;
pub mod folder;
pub mod loader;
pub mod recordio;
pub mod rng;
pub mod source;
pub mod synth;
pub mod verification_bin;

pub use error::{DataError, Result};
