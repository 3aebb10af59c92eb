//! Face data sources without any tensor-library dependency.
//!
//! * [`synth`]: procedural synthetic faces, the embedded default dataset;
//! * [`folder`]: image folders with one subfolder per identity;
//! * [`recordio`]: insightface / MXNet RecordIO `.rec` + `.idx` files (reader and writer);
//! * [`verification_bin`]: insightface verification pair `.bin` pickles (reader and writer);
//! * [`rng`]: the small deterministic PRNG used throughout;
//! * [`error`]: the shared [`DataError`] type.

pub mod error;
pub mod folder;
pub mod recordio;
pub mod rng;
pub mod synth;
pub mod verification_bin;

pub use error::{DataError, Result};
