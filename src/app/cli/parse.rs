//! A [`Spec`] as a clap command: clap parses, suggests and renders; the words stay ours.
//!
//! The binaries' keys are data (shared tables such as [`super::model_keys`], lists that the
//! ablation runner expands, "was this key typed?" checks), so the clap command is built from
//! the [`Spec`] with clap's builder rather than written a second time as derive structs. A
//! `key=value` word is handed to clap as `--key=value`, so both spellings (and `--key value`)
//! parse alike; `--help` is clap's page with every key written back in the `key=value` form;
//! clap's errors are turned into [`CliError`]s that name the key as the user typed it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Args, CliError, Commands, Key, Spec};

/// Printed by `--version`: the crate's version, the same for every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The heading of the keys on a `--help` page.
const KEYS_HEADING: &str = "Keys";

/// The heading of `--help`, `--version`, `--completions` and a binary's own flags, listed
/// after the keys (clap would list its default heading first).
const FLAGS_HEADING: &str = "Flags";

/// The longest choice list written in the key column (`mode=<soft|hard>`); longer ones are
/// `key=<VALUE>` with the choices in the help text.
const MAX_VALUE_NAME: usize = 16;

const AFTER_HELP: &str = "Every key=value may also be written --key=value or --key value; \
                          a true|false key given bare (--overwrite) means true.";

/// The values of an accepts text that is a plain choice, `a|b|c` or `list of a|b|c`; `None`
/// for anything described in words (`integer >= 0`, `a folder`).
pub fn choices(accepts: &str) -> Option<Vec<&str>> {
    let body = accepts.strip_prefix("list of ").unwrap_or(accepts);
    let values: Vec<&str> = body.split('|').collect();
    let word = |v: &&str| {
        !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    };
    (values.len() >= 2 && values.iter().all(word)).then_some(values)
}

fn is_bool(key: &Key) -> bool {
    key.accepts == "true|false"
}

/// Checks each comma-separated part of a value against the choices, so that clap's
/// did-you-mean applies to one element of `mode=soft,hrad` as to a single value; whether a list
/// is allowed at all is the key's typed parse's business ([`Args::get`] / [`Args::get_list`]).
#[derive(Clone)]
struct EachOf(PossibleValuesParser);

impl TypedValueParser for EachOf {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_str().ok_or_else(|| clap::Error::new(ErrorKind::InvalidUtf8))?;
        for part in text.split(',').filter(|p| !p.is_empty()) {
            self.0.parse_ref(cmd, arg, OsStr::new(part))?;
        }
        Ok(text.to_string())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// A short placeholder for a key's value on the help page; the full accepts text follows in
/// the help line.
fn value_name(accepts: &str) -> &'static str {
    let lower = accepts.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if lower.starts_with("list") || lower.contains("list (") {
        "LIST"
    } else if lower.starts_with("integer") || lower.starts_with("multiple of") {
        "N"
    } else if has(&["number", "probability", "epochs"]) {
        "X"
    } else if has(&["host:port"]) {
        "HOST:PORT"
    } else if has(&["folder", "path", "file", ".rec", ".bin", ".json", "directory", "checkpoint"]) {
        "PATH"
    } else {
        "VALUE"
    }
}

fn key_arg(key: &Key) -> Arg {
    let mut arg = Arg::new(key.name)
        .long(key.name)
        .action(ArgAction::Set)
        .help_heading(KEYS_HEADING)
        .hide_possible_values(true);
    match choices(key.accepts) {
        Some(values) => {
            let possible = values.iter().map(|v| match *v {
                // parse_bool's other spellings, accepted but not listed.
                "true" if is_bool(key) => PossibleValue::new("true").aliases(["1", "yes"]),
                "false" if is_bool(key) => PossibleValue::new("false").aliases(["0", "no"]),
                v => PossibleValue::new(v),
            });
            let list = key.accepts.starts_with("list of ");
            let mut help = key.help.to_string();
            // A long choice would widen the key column of the whole page.
            let name = values.join("|");
            let name = if name.len() <= MAX_VALUE_NAME {
                name
            } else {
                help.push_str(&format!(" (accepts: {})", values.join("|")));
                "VALUE".into()
            };
            if list {
                help.push_str(" (comma-separated)");
            }
            arg = arg
                .value_parser(EachOf(PossibleValuesParser::new(possible)))
                .value_name(name)
                .help(help);
        }
        None => {
            arg = arg
                .value_name(value_name(key.accepts))
                .help(format!("{} (accepts: {})", key.help, key.accepts));
        }
    }
    if is_bool(key) {
        arg = arg.num_args(0..=1).default_missing_value("true");
    }
    if let Some(default) = key.default {
        arg = arg.default_value(default);
    }
    arg
}

fn help_arg() -> Arg {
    Arg::new("help")
        .short('h')
        .long("help")
        .action(ArgAction::SetTrue)
        .help("Print this help")
        .help_heading(FLAGS_HEADING)
}

fn version_arg() -> Arg {
    Arg::new("version")
        .short('V')
        .long("version")
        .action(ArgAction::Version)
        .help("Print the version")
        .help_heading(FLAGS_HEADING)
}

fn completions_arg() -> Arg {
    Arg::new("completions")
        .long("completions")
        .value_name("SHELL")
        .value_parser(clap::value_parser!(clap_complete::Shell))
        .hide_possible_values(true)
        .help("Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)")
        .help_heading(FLAGS_HEADING)
}

/// `(binary, subcommand)` of a program name such as `data synth`.
fn split(program: &'static str) -> (&'static str, Option<&'static str>) {
    match program.split_once(' ') {
        Some((binary, command)) => (binary, Some(command)),
        None => (program, None),
    }
}

/// The clap command of one spec; `root` adds `--completions` (a subcommand has none).
pub fn command(spec: &Spec, root: bool) -> Command {
    let (binary, sub) = split(spec.program);
    let usage = match sub {
        Some(sub) => format!("cargo run --release --bin {binary} -- {sub} [key=value ...]"),
        None => format!("cargo run --release --bin {binary} -- [key=value ...]"),
    };
    let mut cmd = Command::new(sub.unwrap_or(binary))
        .bin_name(binary)
        .about(spec.about)
        .version(VERSION)
        .override_usage(usage)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .after_help(AFTER_HELP)
        .args(spec.keys.iter().map(key_arg))
        .arg(help_arg())
        .arg(version_arg());
    for (flag, help) in &spec.flags {
        let name = flag.trim_start_matches("--");
        let arg = Arg::new(name).long(name).action(ArgAction::SetTrue).help(*help);
        cmd = cmd.arg(arg.help_heading(FLAGS_HEADING));
    }
    if root {
        cmd = cmd.arg(completions_arg());
    }
    cmd
}

/// The clap command of a binary with subcommands.
pub fn commands_command(set: &Commands) -> Command {
    let names: Vec<&str> = set.commands.iter().filter_map(|s| split(s.program).1).collect();
    Command::new(set.program)
        .bin_name(set.program)
        .about(set.about)
        .version(VERSION)
        .override_usage(format!(
            "cargo run --release --bin {} -- COMMAND [key=value ...]",
            set.program
        ))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .after_help(format!(
            "`{} COMMAND --help` lists the keys of each command ({}).",
            set.program,
            names.join(", ")
        ))
        .arg(help_arg())
        .arg(version_arg())
        .arg(completions_arg())
        .subcommands(set.commands.iter().map(|s| command(s, false)))
}

/// The words as clap reads them: `key=value` becomes `--key=value` and `help` becomes
/// `--help`; anything else (flags, subcommands, the value after `--key`) is passed on
/// unchanged. `keys` are the keys that take a value, so that in `--out a=b` the `a=b` stays
/// the value of `out`.
pub fn rewrite<I, S>(words: I, keys: &[&Key]) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut value_next = false;
    let mut out = Vec::new();
    for word in words {
        let word = word.as_ref();
        if std::mem::take(&mut value_next) {
            out.push(word.to_owned());
            continue;
        }
        let bytes = word.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"--") {
            // A bool key's value is optional, so a word after `--overwrite` is read as a word.
            value_next = keys.iter().any(|k| k.name.as_bytes() == name && !is_bool(k));
            out.push(word.to_owned());
            continue;
        }
        out.push(rewrite_word(word));
    }
    out
}

fn rewrite_word(word: &OsStr) -> OsString {
    let bytes = word.as_encoded_bytes();
    if bytes == b"help" {
        return "--help".into();
    }
    if bytes.first() == Some(&b'-') {
        return word.to_owned();
    }
    let key_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    match bytes.iter().position(|&b| b == b'=') {
        Some(at) if at > 0 && bytes[..at].iter().all(key_char) => {
            let mut flag = OsString::from("--");
            flag.push(word);
            flag
        }
        _ => word.to_owned(),
    }
}

/// The `--help` page with each key's `--key <V>` written as `key=<V>`, padded so that the
/// help column stays aligned.
pub fn help_text(cmd: &mut Command, keys: &[Key]) -> String {
    let rendered = cmd.render_help().to_string();
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.lines() {
        out.push_str(key_form(line, keys).trim_end());
        out.push('\n');
    }
    out
}

fn key_form(line: &str, keys: &[Key]) -> String {
    let indent = line.len() - line.trim_start().len();
    let body = &line[indent..];
    for key in keys {
        let Some(rest) = body.strip_prefix("--").and_then(|b| b.strip_prefix(key.name)) else {
            continue;
        };
        // `--name <V>` or, for a bare-able bool, `--name [<V>]`.
        let (value, used) = if let Some(v) = rest.strip_prefix(" [<") {
            match v.find(">]") {
                Some(end) => (&v[..end], 3 + end + 2),
                None => continue,
            }
        } else if let Some(v) = rest.strip_prefix(" <") {
            match v.find('>') {
                Some(end) => (&v[..end], 2 + end + 1),
                None => continue,
            }
        } else {
            continue;
        };
        let old = 2 + key.name.len() + used;
        let new = format!("{}=<{value}>", key.name);
        let pad = old.saturating_sub(new.len());
        return format!("{}{new}{}{}", &line[..indent], " ".repeat(pad), &body[old..]);
    }
    line.to_string()
}

/// What clap matched, as [`Args`]: every key with a value (typed or default) and whether it
/// was typed; `--help` and `--completions` end the parse with their text.
pub fn finish(cmd: &mut Command, spec: &Spec, m: &ArgMatches) -> Result<Args, CliError> {
    if m.get_flag("help") {
        return Err(CliError::Help(help_text(cmd, &spec.keys)));
    }
    completions(cmd, m)?;
    let mut values = BTreeMap::new();
    for key in &spec.keys {
        if let Some(value) = m.get_one::<String>(key.name) {
            let given = m.value_source(key.name) == Some(ValueSource::CommandLine);
            values.insert(key.name, (value.clone(), given));
        }
    }
    let flags = spec
        .flags
        .iter()
        .map(|(flag, _)| *flag)
        .filter(|flag| m.get_flag(flag.trim_start_matches("--")))
        .collect();
    Ok(Args { values, accepts: spec.keys.iter().map(|k| (k.name, k.accepts)).collect(), flags })
}

/// `--completions SHELL`: the script, as the text to print.
pub fn completions(cmd: &mut Command, m: &ArgMatches) -> Result<(), CliError> {
    let Ok(Some(shell)) = m.try_get_one::<clap_complete::Shell>("completions") else {
        return Ok(());
    };
    let mut script = Vec::new();
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name()).to_string();
    clap_complete::generate(*shell, cmd, name, &mut script);
    Err(CliError::Help(String::from_utf8_lossy(&script).into_owned()))
}

fn context(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    }
}

/// `groups` of `--groups`, `--groups=4` or `--groups <N>`.
fn key_of(arg: &str) -> String {
    let name = arg.trim_start_matches('-');
    name.split([' ', '=', '[', '<']).next().unwrap_or(name).to_string()
}

/// A clap error as ours: the key named as typed, clap's suggestion kept.
pub fn translate(err: clap::Error, keys: &[Key], commands: &[&str]) -> CliError {
    let suggestion = |kind| {
        context(&err, kind)
            .map(|s| format!(" (did you mean `{}`?)", key_of(&s)))
            .unwrap_or_default()
    };
    let invalid = context(&err, ContextKind::InvalidArg).unwrap_or_default();
    match err.kind() {
        ErrorKind::DisplayVersion | ErrorKind::DisplayHelp => {
            CliError::Help(err.render().to_string())
        }
        ErrorKind::UnknownArgument if invalid.starts_with("--") => CliError::UnknownKey {
            key: key_of(&invalid),
            suggestion: suggestion(ContextKind::SuggestedArg),
            accepted: keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
        },
        ErrorKind::UnknownArgument => CliError::NotKeyValue { word: invalid },
        ErrorKind::InvalidValue => {
            let key = key_of(&invalid);
            let accepts = keys.iter().find(|k| k.name == key).map_or("a value", |k| k.accepts);
            CliError::BadValue {
                value: context(&err, ContextKind::InvalidValue).unwrap_or_default(),
                accepts: format!("{accepts}{}", suggestion(ContextKind::SuggestedValue)),
                key,
            }
        }
        ErrorKind::ArgumentConflict => CliError::Repeated { key: key_of(&invalid) },
        ErrorKind::InvalidSubcommand => CliError::Usage(format!(
            "unknown command `{}`{}; expected one of {}",
            context(&err, ContextKind::InvalidSubcommand).unwrap_or_default(),
            suggestion(ContextKind::SuggestedSubcommand),
            commands.join(", ")
        )),
        ErrorKind::InvalidUtf8 => CliError::Usage(
            "an argument is not valid UTF-8: keys and their values, paths too, are read as \
             UTF-8 text"
                .into(),
        ),
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("").trim_start_matches("error: ");
            CliError::Usage(format!("{first} (run with --help for the keys)"))
        }
    }
}
