//! Helpers shared across the crate that belong to no one layer.
//!
//! - [`fs`]: files written whole or not at all, and outputs that are never mixed with an
//!   earlier one.
//! - [`error`]: [`ConfigError`](error::ConfigError), a configuration value that cannot be used.
//! - [`progress`]: the [`Progress`](progress::Progress) sink that long loops report to, so that
//!   they show a bar in the binaries without depending on one.
//! - `named_enum!`: the `Display`/`FromStr` pair of the enums that the CLI and config files name
//!   (`mode=soft|hard`, `combine=sum|concat`, ...), so one spelling serves both.

pub mod error;
pub mod fs;
pub mod progress;

/// Gives a fieldless enum its CLI / config-file names: `ACCEPTS`, `Display` and `FromStr`.
macro_rules! named_enum {
    ($ty:ident, $accepts:expr, $($variant:ident => $name:expr),+) => {
        impl $ty {
            /// The accepted names, `|`-separated, as the CLI and config files spell them.
            pub const ACCEPTS: &'static str = $accepts;
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self { $(Self::$variant => $name),+ })
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    _ => Err(format!("expected {}, found `{s}`", $accepts)),
                }
            }
        }
    };
}
pub(crate) use named_enum;

#[cfg(test)]
pub(crate) mod test_util {
    //! What the unit tests of every module share.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh empty folder under the system temp dir, unique per call and process, so tests
    /// running in parallel never share one.
    pub fn temp_dir(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("groupface-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The names in a folder, sorted.
    pub fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}
