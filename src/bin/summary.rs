//! Parameters and forward GFLOPs of a model, counted from its configuration.
//!
//! `cargo run --release --bin summary -- backbone=r100 groups=32 mode=soft [format=json]`

use std::process::ExitCode;

use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::model::summary::ModelSummary;

fn spec() -> Spec {
    let mut keys = cli::model_keys();
    keys.push(Key {
        name: "format",
        default: Some("text"),
        accepts: "text|json",
        help: "output format",
    });
    Spec {
        program: "summary",
        about: "parameters and forward GFLOPs (2 x multiply-adds, one image) per part of a model",
        keys,
        flags: vec![],
    }
}

fn run() -> Result<(), CliError> {
    let args = spec().parse_env()?;
    let config = cli::model_config(&args)?;
    let format: String = args.get("format")?;
    let summary = ModelSummary::of(&config);
    match format.as_str() {
        "json" => println!("{}", serde_json::to_string(&summary).expect("summary serialises")),
        "text" => print!("{}", summary.table()),
        other => return Err(args.bad("format", other)),
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
