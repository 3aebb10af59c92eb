//! Parameters and forward GFLOPs of a model, counted from its configuration.
//!
//! `cargo run --release --bin summary -- backbone=r100 groups=32 mode=soft [format=json]`

use groupface::cli::{self, CliError, Key, Spec};
use groupface::summary::ModelSummary;

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

fn main() {
    let result = spec().parse(std::env::args().skip(1)).and_then(|args| {
        let config = cli::model_config(&args)?;
        let format: String = args.get("format")?;
        let summary = ModelSummary::of(&config);
        match format.as_str() {
            "json" => println!("{}", serde_json::to_string(&summary).expect("summary serialises")),
            "text" => print!("{}", summary.table()),
            other => return Err(args.bad("format", other)),
        }
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(CliError::Help(text)) => print!("{text}"),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    }
}
