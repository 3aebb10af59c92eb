//! Training-step throughput of one or more backbones on one backend, one JSON line each; with
//! `task=forward`, inference throughput (the forward pass alone); with `task=rank1`, rank-1
//! identification against a large random distractor set; with `task=roc`, the ROC of many
//! random pair scores.
//!
//! `cargo run --release --bin bench -- backbone=tiny,r18 batch=32 steps=5 backend=flex`
//! `cargo run --release --bin bench -- task=forward backbone=r100 groups=32 mode=hard batch=8`
//! `cargo run --release --bin bench -- task=rank1 distractors=1000000 probes=1000 dim=512`
//! `cargo run --release --bin bench -- task=roc scores=100000000 positives=100000`

use std::process::ExitCode;

use groupface::app::bench::{
    side_by_side_table, BenchCase, ForwardBench, Rank1Bench, RocBench, TorchReference,
};
use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::backend::{self, BackendKind, Precision};
use groupface::model::GroupFaceConfig;

fn spec() -> Spec {
    let mut keys = cli::model_keys();
    keys[0].default = Some("tiny");
    keys[0].help = "IResNet preset, or a comma-separated list of presets";
    keys.extend([
        Key {
            name: "task",
            default: Some("train"),
            accepts: "train|forward|rank1|roc",
            help: "training steps, inference passes, rank-1 search over random embeddings, or \
                   the ROC of random pair scores",
        },
        Key {
            name: "scores",
            default: Some("100000000"),
            accepts: "integer >= 2",
            help: "task=roc: pair scores",
        },
        Key {
            name: "positives",
            default: Some("100000"),
            accepts: "integer in 1..scores",
            help: "task=roc: genuine pairs among them",
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
            name: "sample_rate",
            default: Some("1"),
            accepts: "number in (0, 1]",
            help: "Partial FC: share of the class centres each step uses (1: all)",
        },
        Key {
            name: "backend",
            default: None,
            accepts: "a compiled backend (see --help of train)",
            help: "backend; default: the default CPU backend",
        },
        Key {
            name: "precision",
            default: Some("f32"),
            accepts: "f32|bf16|f16|bf16-pure",
            help: "float types of the Burn step: bf16/f16 mixed as train's precision=, \
                   bf16-pure bfloat16 everywhere (parameters too)",
        },
        Key {
            name: "device",
            default: Some("0"),
            accepts: "integer >= 0",
            help: "GPU index for wgpu/cuda",
        },
        Key {
            name: "torch",
            default: Some("false"),
            accepts: "true|false",
            help: "also time PyTorch eager (scripts/bench_torch.py) and print both with the ratio",
        },
        Key {
            name: "python",
            default: Some("python3"),
            accepts: "a Python with torch",
            help: "torch=true: the interpreter",
        },
        Key {
            name: "torch_script",
            default: Some("scripts/bench_torch.py"),
            accepts: "a path",
            help: "torch=true: the PyTorch benchmark (run from the repository root)",
        },
        Key {
            name: "torch_amp",
            default: None,
            accepts: "none|bf16",
            help: "torch=true: PyTorch autocast (default: bf16 with backend=cuda, else none)",
        },
    ]);
    Spec {
        program: "bench",
        about: "throughput on random data: training steps (forward, backward, SGD), inference, \
                rank-1 search or ROC",
        keys,
        flags: vec![],
    }
}

/// Each backbone of the `backbone=` list, with the model the other keys describe on it.
fn models(args: &cli::Args) -> Result<Vec<(String, GroupFaceConfig)>, CliError> {
    let names: Vec<String> = args.get_list("backbone")?;
    names
        .into_iter()
        .map(|name| {
            let mut one = args.clone();
            one.set("backbone", &name);
            Ok((name, cli::model_config(&one)?))
        })
        .collect()
}

fn run() -> Result<(), CliError> {
    let args = spec().parse_env()?;
    let backend = cli::backend(&args)?;
    let task: String = args.get("task")?;
    match task.as_str() {
        "train" => {}
        "roc" => {
            let job = RocBench { scores: args.get("scores")?, positives: args.get("positives")? };
            let result = job.run().map_err(|e| CliError::Run(format!("ROC benchmark: {e}")))?;
            println!("{}", serde_json::to_string(&result).expect("result serialises"));
            return Ok(());
        }
        "forward" => {
            for (name, model) in models(&args)? {
                let job = ForwardBench {
                    backbone: name,
                    model,
                    batch: args.get("batch")?,
                    steps: args.get("steps")?,
                    warmup: args.get("warmup")?,
                    backend: backend.to_string(),
                };
                let result = backend::run(backend, args.get("device")?, job)
                    .and_then(|r| r)
                    .map_err(|e| CliError::Run(format!("forward benchmark: {e}")))?;
                println!("{}", serde_json::to_string(&result).expect("result serialises"));
            }
            return Ok(());
        }
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
        other => return Err(args.bad("task", other)),
    }
    let torch = args.bool("torch", false)?;
    let device: usize = args.get("device")?;
    let reference = torch.then(|| {
        let cuda = backend == BackendKind::Cuda;
        let model_keys =
            ["mode", "combine", "input_side", "embedding", "shared", "gdn_hidden", "gdn_feature"];
        TorchReference {
            python: args.raw("python").unwrap_or("python3").to_string(),
            script: args.raw("torch_script").unwrap_or("scripts/bench_torch.py").into(),
            device: if cuda { format!("cuda:{device}") } else { "cpu".into() },
            amp: args.raw("torch_amp").unwrap_or(if cuda { "bf16" } else { "none" }).to_string(),
            model_args: model_keys
                .iter()
                .filter_map(|k| args.raw(k).filter(|_| args.given(k)).map(|v| format!("{k}={v}")))
                .collect(),
        }
    });
    let precision: Precision = args.get("precision")?;
    let mut rows = Vec::new();
    for (name, model) in models(&args)? {
        let case = BenchCase {
            backbone: name,
            model,
            classes: args.get("classes")?,
            sample_rate: args.get("sample_rate")?,
            batch: args.get("batch")?,
            steps: args.get("steps")?,
            warmup: args.get("warmup")?,
            backend: backend.to_string(),
            precision,
        };
        let result = backend::run_with_precision(backend, precision, device, case.clone())
            .map_err(CliError::Run)?;
        println!("{}", serde_json::to_string(&result).expect("result serialises"));
        if let Some(reference) = &reference {
            let row = reference.compare(&case, &result).map_err(CliError::Run)?;
            println!("{}", serde_json::to_string(&row).expect("row serialises"));
            rows.push(row);
        }
    }
    if !rows.is_empty() {
        // The table goes to stderr, so stdout stays one JSON object per line.
        eprint!("{}", side_by_side_table(&rows));
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
