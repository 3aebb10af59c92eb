//! The `key=value` command-line convention shared by every binary.
//!
//! A binary declares its keys (name, default, accepted values, help) in a [`Spec`], and
//! [`Spec::parse`] turns the words into [`Args`]. Unknown keys, repeated keys and malformed words
//! are errors that name the key and what is accepted, so nothing runs on a typo.

mod parse;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::str::FromStr;

pub use parse::{choices, VERSION};

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
    /// A key (or `--flag`) the binary does not know.
    #[error("unknown key `{key}`{suggestion}; accepted keys: {accepted}")]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// ` (did you mean `groups`?)` when a known key is close, else empty.
        suggestion: String,
        /// All accepted keys, comma separated.
        accepted: String,
    },
    /// The same key twice.
    #[error("key `{key}` is given twice")]
    Repeated {
        /// The repeated key.
        key: String,
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
    /// The `--help` page: every key in the `key=value` form, with its default and what it
    /// accepts.
    pub fn help(&self) -> String {
        parse::help_text(&mut parse::command(self, true), &self.keys)
    }

    /// Parses command-line words (without the program name). Usage errors, `--help`,
    /// `--version` and `--completions SHELL` come back as the [`CliError`] to finish with.
    pub fn parse<I, S>(&self, words: I) -> Result<Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = parse::command(self, true);
        let keys: Vec<&Key> = self.keys.iter().collect();
        let words =
            std::iter::once(OsString::from(self.program)).chain(parse::rewrite(words, &keys));
        let matches = cmd
            .try_get_matches_from_mut(words)
            .map_err(|e| parse::translate(e, &self.keys, &[]))?;
        parse::finish(&mut cmd, self, &matches)
    }

    /// Parses this process's arguments; a word that is not UTF-8 is an error, not a panic.
    pub fn parse_env(&self) -> Result<Args, CliError> {
        self.parse(std::env::args_os().skip(1))
    }
}

/// A binary with subcommands (`data synth`, `data pack`, ...), each a [`Spec`] whose
/// `program` is `"BINARY COMMAND"`.
#[derive(Debug, Clone)]
pub struct Commands {
    /// The binary's name.
    pub program: &'static str,
    /// What the binary does.
    pub about: &'static str,
    /// One spec per subcommand, in the order `--help` lists them.
    pub commands: Vec<Spec>,
}

impl Commands {
    fn names(&self) -> Vec<&'static str> {
        self.commands.iter().filter_map(|s| s.program.split_once(' ').map(|(_, c)| c)).collect()
    }

    /// The `--help` page of the binary: its commands.
    pub fn help(&self) -> String {
        parse::help_text(&mut parse::commands_command(self), &[])
    }

    /// Parses the words into the subcommand's name and its arguments. No subcommand, or an
    /// unknown one (with clap's did-you-mean), is a [`CliError::Usage`].
    pub fn parse<I, S>(&self, words: I) -> Result<(&'static str, Args), CliError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let names = self.names();
        let mut cmd = parse::commands_command(self);
        let all_keys: Vec<&Key> = self.commands.iter().flat_map(|s| &s.keys).collect();
        let words: Vec<OsString> = std::iter::once(OsString::from(self.program))
            .chain(parse::rewrite(words, &all_keys))
            .collect();
        // An error inside a subcommand names that subcommand's keys.
        let keys = words
            .iter()
            .find_map(|w| names.iter().position(|n| OsStr::new(n) == w))
            .map_or(&[][..], |i| &self.commands[i].keys[..]);
        let matches = cmd
            .try_get_matches_from_mut(words.clone())
            .map_err(|e| parse::translate(e, keys, &names))?;
        if matches.get_flag("help") {
            return Err(CliError::Help(self.help()));
        }
        parse::completions(&mut cmd, &matches)?;
        let Some((name, sub)) = matches.subcommand() else {
            return Err(CliError::Usage(format!(
                "no command given; expected one of {} (`{} COMMAND --help` lists its keys)",
                names.join(", "),
                self.program
            )));
        };
        let index = names.iter().position(|n| *n == name).expect("clap matched a known command");
        let spec = &self.commands[index];
        let mut sub_cmd = parse::command(spec, false);
        Ok((names[index], parse::finish(&mut sub_cmd, spec, sub)?))
    }

    /// This process's arguments, as [`Commands::parse`].
    pub fn parse_env(&self) -> Result<(&'static str, Args), CliError> {
        self.parse(std::env::args_os().skip(1))
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
                Key { name: "mode", default: Some("soft"), accepts: "soft|hard", help: "ensemble" },
                Key { name: "labels", default: None, accepts: "list of none|naive", help: "L" },
                overwrite_key("replace out="),
            ],
            flags: vec![("--dry-run", "print only")],
        }
    }

    fn commands() -> Commands {
        let sub = |program| Spec { program, ..spec() };
        Commands {
            program: "demo",
            about: "demo tools",
            commands: vec![sub("demo synth"), sub("demo pack")],
        }
    }

    #[test]
    fn parses_defaults_values_and_flags() {
        let args = spec().parse(["out=x", "--dry-run"]).unwrap();
        assert_eq!(args.get::<usize>("groups").unwrap(), 32);
        assert!(!args.given("groups"));
        assert_eq!(args.raw("out"), Some("x"));
        assert!(args.given("out"));
        assert!(args.flag("--dry-run"));
        assert!(!spec().parse(["out=x"]).unwrap().flag("--dry-run"));
    }

    #[test]
    fn key_value_and_dashed_spellings_parse_alike() {
        for words in [
            &["groups=4", "out=a=b"][..],
            &["--groups=4", "--out=a=b"],
            &["--groups", "4", "--out", "a=b"],
            &["groups=4", "--out", "a=b"],
        ] {
            let args = spec().parse(words).unwrap();
            assert_eq!(args.get::<usize>("groups").unwrap(), 4, "{words:?}");
            // Only the first `=` separates: a value may hold more.
            assert_eq!(args.raw("out"), Some("a=b"), "{words:?}");
        }
        // A bare true|false key means true; its other spellings parse as before.
        let args = spec().parse(["--overwrite"]).unwrap();
        assert!(args.bool("overwrite", false).unwrap() && args.given("overwrite"));
        for (word, value) in
            [("overwrite=no", false), ("overwrite=1", true), ("--overwrite=false", false)]
        {
            assert_eq!(spec().parse([word]).unwrap().bool("overwrite", true).unwrap(), value);
        }
        // Lists of choices: each element is checked.
        let args = spec().parse(["labels=none,naive"]).unwrap();
        assert_eq!(args.get_list::<String>("labels").unwrap(), ["none", "naive"]);
    }

    #[test]
    fn errors_name_the_key_and_suggest() {
        let err = spec().parse(["grups=4"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown key `grups` (did you mean `groups`?); accepted keys: groups, out, mode, \
             labels, overwrite"
        );
        let err = spec().parse(["--grups", "4"]).unwrap_err();
        assert!(
            err.to_string().starts_with("unknown key `grups` (did you mean `groups`?)"),
            "{err}"
        );
        // Nothing close: no suggestion.
        let err = spec().parse(["zzz=1"]).unwrap_err();
        assert!(err.to_string().starts_with("unknown key `zzz`; accepted keys"), "{err}");
        let err = spec().parse(["mode=sotf"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad value `sotf` for key `mode`: expected soft|hard (did you mean `soft`?)"
        );
        let err = spec().parse(["labels=none,naiv"]).unwrap_err();
        assert!(err.to_string().starts_with("bad value `naiv` for key `labels`"), "{err}");
        let args = spec().parse(["groups=four"]).unwrap();
        let err = args.get::<usize>("groups").unwrap_err();
        assert_eq!(err.to_string(), "bad value `four` for key `groups`: expected integer >= 0");
        assert!(matches!(spec().parse(["groups"]), Err(CliError::NotKeyValue { .. })));
        assert!(matches!(spec().parse(["groups=1", "groups=2"]), Err(CliError::Repeated { .. })));
        assert!(matches!(spec().parse(["groups=1", "--groups=2"]), Err(CliError::Repeated { .. })));
        assert!(matches!(spec().parse(["--fast"]), Err(CliError::UnknownKey { .. })));
        let err = spec().parse(Vec::<String>::new()).unwrap().get::<String>("out").unwrap_err();
        assert!(matches!(err, CliError::Missing { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn a_word_that_is_not_utf8_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let word = OsString::from_vec(b"out=caf\xe9".to_vec());
        let err = spec().parse([word]).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn usage_errors_exit_2_and_failed_runs_1() {
        let usage = spec().parse(["grups=4"]).unwrap_err();
        assert_eq!(usage.exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Usage("usage: demo".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Run("disk full".into()).exit_code(), EXIT_RUN);
        assert_eq!(CliError::Run("disk full".into()).to_string(), "disk full");
        assert_eq!(spec().parse(["--help"]).unwrap_err().exit_code(), 0);
        let Err(CliError::Help(version)) = spec().parse(["--version"]) else {
            panic!("no version")
        };
        assert_eq!(version, format!("demo {VERSION}\n"));
    }

    #[test]
    fn help_lists_every_key_in_key_value_form_with_default() {
        let Err(CliError::Help(text)) = spec().parse(["--help"]) else { panic!("no help") };
        assert!(text.starts_with("a demo\n"), "{text}");
        // The keys come first, clap's own options after them.
        assert!(text.find("Keys:") < text.find("Flags:") && !text.contains("Options:"), "{text}");
        assert!(
            text.contains("Usage: cargo run --release --bin demo -- [key=value ...]"),
            "{text}"
        );
        let line = |key: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(key))
                .unwrap_or_else(|| panic!("no line for {key} in\n{text}"))
        };
        assert!(line("groups=<N>").contains("K (accepts: integer >= 0) [default: 32]"), "{text}");
        assert!(line("out=<PATH>").contains("where (accepts: a folder)"), "{text}");
        assert!(line("mode=<soft|hard>").contains("ensemble [default: soft]"), "{text}");
        assert!(line("labels=<none|naive>").contains("L (comma-separated)"), "{text}");
        assert!(line("overwrite=<true|false>").contains("[default: false]"), "{text}");
        assert!(line("--dry-run").contains("print only"), "{text}");
        // The rewrite keeps the help column aligned: every key's help starts where clap put it.
        // Where the help text starts: after the key's column and its padding.
        let column = |l: &str| {
            let key_end = l.len() - l.trim_start().len() + l.trim_start().find("  ").unwrap();
            key_end + l[key_end..].len() - l[key_end..].trim_start().len()
        };
        assert_eq!(column(line("groups=")), column(line("overwrite=")), "{text}");
        assert!(!text.contains("--groups"), "{text}");
        // `help` as a word asks for the same page.
        assert_eq!(spec().parse(["help"]).unwrap_err(), CliError::Help(text));
    }

    #[test]
    fn subcommands_parse_suggest_and_refuse_a_missing_one() {
        let (name, args) = commands().parse(["pack", "groups=3"]).unwrap();
        assert_eq!(name, "pack");
        assert_eq!(args.get::<usize>("groups").unwrap(), 3);
        let err = commands().parse(["pakc"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown command `pakc` (did you mean `pack`?); expected one of synth, pack"
        );
        assert_eq!(err.exit_code(), EXIT_USAGE);
        let err = commands().parse(Vec::<String>::new()).unwrap_err();
        assert!(err.to_string().starts_with("no command given; expected one of synth, pack"));
        assert_eq!(err.exit_code(), EXIT_USAGE);
        // A subcommand's key errors name its keys.
        let err = commands().parse(["synth", "grups=1"]).unwrap_err();
        assert!(err.to_string().contains("(did you mean `groups`?)"), "{err}");
        let Err(CliError::Help(text)) = commands().parse(["--help"]) else { panic!("no help") };
        assert!(text.contains("synth") && text.contains("pack"), "{text}");
        let Err(CliError::Help(text)) = commands().parse(["synth", "--help"]) else {
            panic!("no help")
        };
        assert!(text.contains("-- synth [key=value ...]") && text.contains("groups=<N>"), "{text}");
    }

    #[test]
    fn completions_are_printed_for_a_shell() {
        let Err(CliError::Help(script)) = spec().parse(["--completions", "bash"]) else {
            panic!("no script")
        };
        assert!(script.contains("--groups") && script.contains("complete"), "{script}");
    }

    #[test]
    fn choices_are_read_from_the_accepts_text() {
        assert_eq!(choices("soft|hard"), Some(vec!["soft", "hard"]));
        assert_eq!(choices("list of none|naive|self-distributed").unwrap().len(), 3);
        assert_eq!(choices("integer >= 0"), None);
        assert_eq!(choices("ndarray|flex|wgpu|cuda (compiled ones)"), None);
        assert_eq!(choices("a"), None);
    }
}
