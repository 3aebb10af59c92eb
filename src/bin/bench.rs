//! Training-step throughput of one or more backbones on one backend, one JSON line each; or,
//! with `task=rank1`, rank-1 identification against a large random distractor set.
//!
//! `cargo run --release --bin bench -- backbone=tiny,r18 batch=32 steps=5 backend=flex`
//! `cargo run --release --bin bench -- task=rank1 distractors=1000000 probes=1000 dim=512`

use groupface::backend::{self, BackendKind};
use groupface::bench::{BenchCase, Rank1Bench};
use groupface::cli::{self, CliError, Key, Spec};

fn spec() -> Spec {
    let mut keys = cli::model_keys();
    keys[0].default = Some("tiny");
    keys[0].help = "IResNet preset, or a comma-separated list of presets";
    keys.extend([
        Key {
            name: "task",
            default: Some("train"),
            accepts: "train|rank1",
            help: "training steps, or rank-1 search over random embeddings",
        },
        Key {
            name: "distractors",
            default: Some("1000000"),
            accepts: "integer >= 0",
            help: "task=rank1: distractors in the gallery",
        },
        Key {
            name: "probes",
            default: Some("1000"),
            accepts: "integer > 0",
            help: "task=rank1: probes (one gallery identity each)",
        },
        Key {
            name: "dim",
            default: Some("512"),
            accepts: "integer > 0",
            help: "task=rank1: embedding width",
        },
        Key { name: "batch", default: Some("32"), accepts: "integer > 0", help: "images per step" },
        Key { name: "steps", default: Some("5"), accepts: "integer > 0", help: "timed steps" },
        Key {
            name: "warmup",
            default: Some("2"),
            accepts: "integer >= 0",
            help: "untimed steps first",
        },
        Key {
            name: "classes",
            default: Some("1000"),
            accepts: "integer >= 2",
            help: "identities of the classifier",
        },
        Key {
            name: "backend",
            default: None,
            accepts: "a compiled backend (see --help of train)",
            help: "backend; default: the default CPU backend",
        },
        Key {
            name: "device",
            default: Some("0"),
            accepts: "integer >= 0",
            help: "GPU index for wgpu/cuda",
        },
    ]);
    Spec {
        program: "bench",
        about: "training-step throughput (forward, backward, SGD) on random data",
        keys,
        flags: vec![],
    }
}

fn run() -> Result<(), CliError> {
    let args = spec().parse(std::env::args().skip(1))?;
    let backend: BackendKind = match args.raw("backend") {
        Some(value) => value.parse().map_err(|e: String| CliError::BadValue {
            key: "backend".into(),
            value: value.into(),
            accepts: e,
        })?,
        None => BackendKind::default_cpu().expect("at least one backend is compiled"),
    };
    let task: String = args.get("task")?;
    match task.as_str() {
        "train" => {}
        "rank1" => {
            let job = Rank1Bench {
                distractors: args.get("distractors")?,
                probes: args.get("probes")?,
                dim: args.get("dim")?,
                backend: backend.to_string(),
            };
            let result = backend::run(backend, args.get("device")?, job)
                .and_then(|r| r)
                .map_err(|e| CliError::Run(format!("rank-1 benchmark: {e}")))?;
            println!("{}", serde_json::to_string(&result).expect("result serialises"));
            return Ok(());
        }
        other => {
            return Err(CliError::BadValue {
                key: "task".into(),
                value: other.into(),
                accepts: "train|rank1".into(),
            })
        }
    }
    let names: Vec<String> = args.get_list("backbone")?;
    for name in names {
        let mut one = args.clone();
        one.set("backbone", &name);
        let case = BenchCase {
            backbone: name,
            model: cli::model_config(&one)?,
            classes: args.get("classes")?,
            batch: args.get("batch")?,
            steps: args.get("steps")?,
            warmup: args.get("warmup")?,
            backend: backend.to_string(),
        };
        let result = backend::run(backend, args.get("device")?, case).map_err(|e| {
            CliError::BadValue { key: "backend".into(), value: backend.to_string(), accepts: e }
        })?;
        println!("{}", serde_json::to_string(&result).expect("result serialises"));
    }
    Ok(())
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(CliError::Help(text)) => print!("{text}"),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    }
}
