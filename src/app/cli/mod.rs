//! The `key=value` command-line convention shared by every binary.
//!
//! A binary declares its keys (name, default, accepted values, help) in a [`Spec`], and
//! [`Spec::parse`] turns the words into [`Args`]. Unknown keys, repeated keys and malformed words
//! are errors that name the key and what is accepted, so nothing runs on a typo.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

/// One accepted key of a binary.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key as typed on the command line.
    pub name: &'static str,
    /// The value used when the key is absent (`None`: the key is optional with no default).
    pub default: Option<&'static str>,
    /// What the key accepts, in words (`"r18|r34|r50|r100|tiny"`, `"integer >= 0"`).
    pub accepts: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// The keys a binary accepts, and its one-line description for `--help`.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Binary name, as in `cargo run --bin NAME`, followed by the subcommand for binaries
    /// that have them (`data synth`).
    pub program: &'static str,
    /// What the binary does.
    pub about: &'static str,
    /// Accepted keys, in the order `--help` lists them.
    pub keys: Vec<Key>,
    /// Bare flags (`--dry-run`) the binary accepts besides `--help`.
    pub flags: Vec<(&'static str, &'static str)>,
}

/// What went wrong on the command line. The message names the key and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    /// `--help` was asked for; the payload is the help text.
    #[error("{0}")]
    Help(String),
    /// A word that is not `key=value`.
    #[error("argument `{word}` is not of the form key=value (run with --help for the keys)")]
    NotKeyValue {
        /// The offending word.
        word: String,
    },
    /// A key the binary does not know.
    #[error("unknown key `{key}`; accepted keys: {accepted}")]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// All accepted keys, comma separated.
        accepted: String,
    },
    /// The same key twice.
    #[error("key `{key}` is given twice")]
    Repeated {
        /// The repeated key.
        key: String,
    },
    /// A flag the binary does not know.
    #[error("unknown flag `{flag}`; accepted flags: --help{accepted}")]
    UnknownFlag {
        /// The unknown flag.
        flag: String,
        /// Other accepted flags.
        accepted: String,
    },
    /// A value that does not parse.
    #[error("bad value `{value}` for key `{key}`: expected {accepts}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as typed.
        value: String,
        /// What the key accepts.
        accepts: String,
    },
    /// A key that must be given.
    #[error("key `{key}` is required ({accepts})")]
    Missing {
        /// The key.
        key: String,
        /// What the key accepts.
        accepts: String,
    },
    /// The arguments were fine but the work they asked for failed (exit status 1, not 2).
    #[error("{0}")]
    Run(String),
    /// Words that do not make a command (a subcommand missing or unknown); the message says
    /// what is accepted. A usage error like the others: exit status 2.
    #[error("{0}")]
    Usage(String),
}

/// Exit status of a run that failed ([`CliError::Run`]): the work itself went wrong.
pub const EXIT_RUN: u8 = 1;

/// Exit status of a usage error (every [`CliError`] but `Run` and `Help`): nothing ran.
pub const EXIT_USAGE: u8 = 2;

impl CliError {
    /// The exit status of a binary that stops on this error: 0 for `--help` (its text is the
    /// output), [`EXIT_RUN`] for a failed run, [`EXIT_USAGE`] for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Help(_) => 0,
            CliError::Run(_) => EXIT_RUN,
            _ => EXIT_USAGE,
        }
    }
}

/// The end of every binary's `main`: `fn main() -> ExitCode { cli::finish(run()) }`.
///
/// `--help` text goes to stdout with status 0; any other error goes to stderr as
/// `error: MESSAGE` with the status of [`CliError::exit_code`].
pub fn finish(result: Result<(), CliError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(CliError::Help(text)) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(err.exit_code())
        }
    }
}

impl From<crate::util::error::ConfigError> for CliError {
    /// A configuration check names the key at fault; on the command line it is a bad value.
    fn from(e: crate::util::error::ConfigError) -> Self {
        CliError::BadValue { key: e.key, value: e.found, accepts: e.expected }
    }
}

/// Parsed arguments: every declared key with its given or default value.
#[derive(Debug, Clone)]
pub struct Args {
    values: BTreeMap<&'static str, (String, bool)>,
    accepts: BTreeMap<&'static str, &'static str>,
    flags: Vec<&'static str>,
}

impl Spec {
    /// The `--help` text: every key with its default and accepted values.
    pub fn help(&self) -> String {
        let (binary, command) = match self.program.split_once(' ') {
            Some((binary, command)) => (binary, format!("{command} ")),
            None => (self.program, String::new()),
        };
        let mut out = format!(
            "{}: {}\n\nusage: cargo run --release --bin {binary} -- {command}[key=value ...]\n\n\
             keys:\n",
            self.program, self.about
        );
        let width = self.keys.iter().map(|k| k.name.len()).max().unwrap_or(0);
        for key in &self.keys {
            let default = key.default.unwrap_or("(none)");
            let _ = writeln!(
                out,
                "  {:width$}  {}\n  {:width$}  accepts: {}; default: {}",
                key.name, key.help, "", key.accepts, default
            );
        }
        if !self.flags.is_empty() {
            out.push_str("\nflags:\n");
            for (flag, help) in &self.flags {
                let _ = writeln!(out, "  {flag}  {help}");
            }
        }
        out
    }

    /// Parses command-line words (without the program name).
    pub fn parse<I, S>(&self, words: I) -> Result<Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values = BTreeMap::new();
        let mut flags = Vec::new();
        for key in &self.keys {
            if let Some(default) = key.default {
                values.insert(key.name, (default.to_string(), false));
            }
        }
        for word in words {
            let word = word.as_ref();
            if word == "--help" || word == "-h" || word == "help" {
                return Err(CliError::Help(self.help()));
            }
            if let Some(flag) = word.strip_prefix("--") {
                match self.flags.iter().find(|(f, _)| f.trim_start_matches("--") == flag) {
                    Some((f, _)) => flags.push(*f),
                    None => {
                        return Err(CliError::UnknownFlag {
                            flag: word.to_string(),
                            accepted: self.flags.iter().map(|(f, _)| format!(", {f}")).collect(),
                        })
                    }
                }
                continue;
            }
            let Some((key, value)) = word.split_once('=') else {
                return Err(CliError::NotKeyValue { word: word.to_string() });
            };
            let Some(spec) = self.keys.iter().find(|k| k.name == key) else {
                return Err(CliError::UnknownKey {
                    key: key.to_string(),
                    accepted: self.keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
                });
            };
            if let Some((_, true)) = values.get(spec.name) {
                return Err(CliError::Repeated { key: key.to_string() });
            }
            values.insert(spec.name, (value.to_string(), true));
        }
        Ok(Args { values, accepts: self.keys.iter().map(|k| (k.name, k.accepts)).collect(), flags })
    }
}

impl Args {
    /// The raw value of a key, if it has one (given or default).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Overrides a key's value (used to expand lists into single runs).
    pub fn set(&mut self, key: &'static str, value: &str) {
        self.values.insert(key, (value.to_string(), true));
    }

    /// Whether the user typed this key (as opposed to its default applying).
    pub fn given(&self, key: &str) -> bool {
        self.values.get(key).is_some_and(|(_, given)| *given)
    }

    /// Whether a bare flag was given.
    pub fn flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    fn accepts(&self, key: &str) -> String {
        self.accepts.get(key).copied().unwrap_or("a value").to_string()
    }

    /// The error for a bad value of `key`.
    pub fn bad(&self, key: &str, value: &str) -> CliError {
        CliError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            accepts: self.accepts(key),
        }
    }

    /// The value of a key that must be present, parsed with `FromStr`.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T, CliError> {
        match self.raw(key) {
            Some(value) => value.parse().map_err(|_| self.bad(key, value)),
            None => Err(CliError::Missing { key: key.to_string(), accepts: self.accepts(key) }),
        }
    }

    /// A `true|false` key (`1|0` and `yes|no` too), `default` when it is not given.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, CliError> {
        match self.raw(key) {
            Some(value) => parse_bool(value).ok_or_else(|| self.bad(key, value)),
            None => Ok(default),
        }
    }

    /// The value of an optional key, parsed with `FromStr`.
    pub fn get_opt<T: FromStr>(&self, key: &str) -> Result<Option<T>, CliError> {
        match self.raw(key) {
            Some(value) => value.parse().map(Some).map_err(|_| self.bad(key, value)),
            None => Ok(None),
        }
    }

    /// A comma-separated list of values.
    pub fn get_list<T: FromStr>(&self, key: &str) -> Result<Vec<T>, CliError> {
        let Some(value) = self.raw(key) else {
            return Ok(Vec::new());
        };
        value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| self.bad(key, value)))
            .collect()
    }
}

/// Parses `true|false|1|0|yes|no`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The `overwrite` key of every command that writes an output folder or file; `when` says
/// when the old output is removed.
pub fn overwrite_key(when: &'static str) -> Key {
    Key { name: "overwrite", default: Some("false"), accepts: "true|false", help: when }
}

/// The keys that describe a model, shared by every binary that builds one.
pub fn model_keys() -> Vec<Key> {
    vec![
        Key {
            name: "backbone",
            default: Some("r100"),
            accepts: crate::model::backbone::IResNetConfig::PRESETS,
            help: "IResNet preset; tiny and small also shrink the head",
        },
        Key {
            name: "groups",
            default: Some("32"),
            accepts: "integer >= 0",
            help: "number of groups K; 0 is the ArcFace baseline",
        },
        Key {
            name: "mode",
            default: Some("soft"),
            accepts: crate::model::GroupMode::ACCEPTS,
            help: "S-GroupFace (soft) or H-GroupFace (hard)",
        },
        Key {
            name: "combine",
            default: Some("sum"),
            accepts: crate::model::Combine::ACCEPTS,
            help: "aggregation (sum) or concatenation of v_x and v_x^G",
        },
        Key {
            name: "input_side",
            default: None,
            accepts: "multiple of 16",
            help: "input image side (preset's if absent)",
        },
        Key {
            name: "embedding",
            default: None,
            accepts: "integer > 0",
            help: "embedding width D (preset's if absent)",
        },
        Key {
            name: "shared",
            default: None,
            accepts: "integer > 0",
            help: "shared feature width S (preset's if absent)",
        },
        Key {
            name: "gdn_hidden",
            default: None,
            accepts: "integer > 0",
            help: "GDN hidden width (preset's if absent)",
        },
        Key {
            name: "gdn_feature",
            default: None,
            accepts: "integer > 0",
            help: "GDN intermediate feature width (preset's if absent)",
        },
        Key {
            name: "dropout",
            default: Some("0"),
            accepts: "probability in [0, 1)",
            help: "dropout before the backbone's FC",
        },
    ]
}

/// The `backend=` key: the named backend, or the default CPU one when it is not given. An
/// unknown or uncompiled name is a [`CliError::BadValue`] saying which backends this build has.
pub fn backend(args: &Args) -> Result<crate::backend::BackendKind, CliError> {
    match args.raw("backend") {
        Some(value) => value.parse().map_err(|accepts: String| CliError::BadValue {
            key: "backend".into(),
            value: value.into(),
            accepts,
        }),
        None => {
            Ok(crate::backend::BackendKind::default_cpu()
                .expect("at least one backend is compiled"))
        }
    }
}

/// Builds and validates a model configuration from the [`model_keys`].
pub fn model_config(args: &Args) -> Result<crate::model::GroupFaceConfig, CliError> {
    use crate::model::GroupFaceConfig;
    let name: String = args.get("backbone")?;
    let groups: usize = args.get("groups")?;
    let mut config = match name.as_str() {
        "tiny" => GroupFaceConfig::tiny(groups),
        "small" => GroupFaceConfig::small(groups),
        other => match crate::model::backbone::IResNetConfig::by_name(other) {
            Some(backbone) => GroupFaceConfig::paper(backbone, groups),
            None => return Err(args.bad("backbone", other)),
        },
    };
    config.mode = args.get("mode")?;
    config.combine = args.get("combine")?;
    if let Some(side) = args.get_opt("input_side")? {
        config.backbone.input_side = side;
    }
    config.backbone.dropout = args.get("dropout")?;
    for (key, field) in [
        ("embedding", &mut config.embedding),
        ("shared", &mut config.shared),
        ("gdn_hidden", &mut config.gdn_hidden),
        ("gdn_feature", &mut config.gdn_feature),
    ] {
        if let Some(value) = args.get_opt(key)? {
            *field = value;
        }
    }
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            program: "demo",
            about: "a demo",
            keys: vec![
                Key { name: "groups", default: Some("32"), accepts: "integer >= 0", help: "K" },
                Key { name: "out", default: None, accepts: "a folder", help: "where" },
            ],
            flags: vec![("--dry-run", "print only")],
        }
    }

    #[test]
    fn parses_defaults_values_and_flags() {
        let args = spec().parse(["out=x", "--dry-run"]).unwrap();
        assert_eq!(args.get::<usize>("groups").unwrap(), 32);
        assert!(!args.given("groups"));
        assert_eq!(args.raw("out"), Some("x"));
        assert!(args.flag("--dry-run"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = spec().parse(["grups=4"]).unwrap_err();
        assert!(err.to_string().contains("unknown key `grups`"), "{err}");
        assert!(err.to_string().contains("groups, out"), "{err}");
        let args = spec().parse(["groups=four"]).unwrap();
        let err = args.get::<usize>("groups").unwrap_err();
        assert_eq!(err.to_string(), "bad value `four` for key `groups`: expected integer >= 0");
        assert!(matches!(spec().parse(["groups"]), Err(CliError::NotKeyValue { .. })));
        assert!(matches!(spec().parse(["groups=1", "groups=2"]), Err(CliError::Repeated { .. })));
        assert!(matches!(spec().parse(["--fast"]), Err(CliError::UnknownFlag { .. })));
        let err = spec().parse(Vec::<String>::new()).unwrap().get::<String>("out").unwrap_err();
        assert!(matches!(err, CliError::Missing { .. }));
    }

    #[test]
    fn usage_errors_exit_2_and_failed_runs_1() {
        let usage = spec().parse(["grups=4"]).unwrap_err();
        assert_eq!(usage.exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Usage("usage: demo".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Run("disk full".into()).exit_code(), EXIT_RUN);
        assert_eq!(CliError::Run("disk full".into()).to_string(), "disk full");
        assert_eq!(spec().parse(["--help"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn help_lists_every_key_with_default() {
        let Err(CliError::Help(text)) = spec().parse(["--help"]) else { panic!("no help") };
        assert!(text.contains("groups") && text.contains("default: 32"));
        assert!(text.contains("out") && text.contains("default: (none)"));
        assert!(text.contains("usage: cargo run --release --bin demo -- [key=value ...]"));
        // A subcommand goes after the `--`, where the binary reads it.
        let sub = Spec { program: "demo synth", ..spec() };
        let Err(CliError::Help(text)) = sub.parse(["--help"]) else { panic!("no help") };
        assert!(text.starts_with("demo synth: a demo"), "{text}");
        assert!(text.contains("usage: cargo run --release --bin demo -- synth [key=value ...]"));
    }
}
