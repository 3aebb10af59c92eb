//! Trains GroupFace (or the ArcFace baseline with `groups=0`) on synthetic faces, an image
//! folder or an insightface `.rec`, with Burn's TUI dashboard (plain text when stdout is not a
//! terminal).
//!
//! `cargo run --release --bin train -- backbone=tiny groups=8 epochs=3 out=runs/tiny`
//! `cargo run --release --bin train -- data=faces/train.rec backbone=r50 out=runs/r50`

use std::path::PathBuf;
use std::process::ExitCode;

use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::data::synth::SynthConfig;
use groupface::evaluate::held_out::SynthEvalConfig;
use groupface::objective::loss::{CriterionConfig, MarginKind, MarginSoftmaxConfig};
use groupface::train::cluster::NodeLaunch;
use groupface::train::config::{self, TrainConfig};
use groupface::train::data::data_classes;
use groupface::train::run::{train, TrainRun};

fn spec() -> Spec {
    let mut keys = cli::model_keys();
    keys[0].default = Some("tiny");
    keys[1].default = Some("8");
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    keys.extend([
        key(
            "labels",
            Some("self-distributed"),
            "none|naive|self-distributed",
            "group labels of the self-grouping loss",
        ),
        key("label_window", Some("8"), "integer >= 1", "batches in the E[p] window"),
        key(
            "label_space",
            Some("zlog"),
            "prob|log|zlog",
            "self-distributed labels: E taken away from p (the paper's print), from log p, or from log p standardised per group",
        ),
        key("lambda", Some("0.1"), "number >= 0", "weight of the self-grouping loss"),
        key(
            "margin",
            Some("arcface"),
            "arcface|cosface|sphereface|softmax",
            "margin of the classification loss",
        ),
        key("s", Some("64"), "number > 0", "logit scale"),
        key("m", None, "number", "margin (kind's default: 0.5, 0.35, 4, 0)"),
        key("straight_through", Some("false"), "true|false", "ArcFace margin without its gradient"),
        key("center_loss", Some("0"), "number >= 0", "weight of the Center loss (0: off)"),
        key(
            "sample_rate",
            Some("1"),
            "number in (0, 1]",
            "Partial FC: share of the class centres each step trains against (1: all)",
        ),
        key(
            "data",
            Some("synthetic"),
            "synthetic, a folder (one subfolder per identity) or a .rec file",
            "what to train on; a folder's or .rec's eval_identities are held out",
        ),
        key("identities", Some("100"), "integer >= 2", "synthetic identities"),
        key("images_per_identity", Some("20"), "integer >= 2", "synthetic images per identity"),
        key(
            "valid_images_per_identity",
            Some("2"),
            "integer >= 1",
            "images per identity held out for validation",
        ),
        key("difficulty", Some("0.5"), "number in [0, 1]", "synthetic nuisance strength"),
        key("data_seed", Some("0"), "integer", "seed of the synthetic identities"),
        key("epochs", Some("3"), "integer > 0", "epochs"),
        key("batch", Some("64"), "integer >= 2", "images per batch (per device)"),
        key(
            "lr",
            None,
            "number > 0",
            "base learning rate (default 0.1 per 512 images of the global batch, arcface_torch's \
             rate: 0.0125 at batch=64)",
        ),
        key(
            "schedule",
            Some("constant"),
            "constant|linear|step",
            "after the warm-up: constant, linear decay to 0, or step decay",
        ),
        key("warmup", Some("0"), "epochs >= 0", "linear warm-up from 0, in epochs"),
        key("step_epochs", None, "list of epochs", "where schedule=step multiplies the rate"),
        key("step_factor", Some("0.1"), "number > 0", "factor of each step"),
        key(
            "init",
            None,
            "a finished run directory, or an insightface .pth/.pt or .safetensors checkpoint",
            "start from it: the backbone of a run, or a PyTorch checkpoint (trunk; head fresh)",
        ),
        key(
            "eval_identities",
            Some("100"),
            "integer >= 2",
            "held-out identities for verification (never trained on)",
        ),
        key("eval_images", Some("5"), "integer >= 2", "images per held-out identity"),
        key(
            "val",
            None,
            "list of insightface .bin files",
            "validation targets (lfw.bin, cfp_fp.bin, ...): measured at each epoch's end, named by stem",
        ),
        key(
            "val_every",
            Some("0"),
            "integer >= 0",
            "also measure the val= targets every this many steps (0: at each epoch's end only)",
        ),
        key("eval_pairs", Some("3000"), "multiple of 20", "pairs of the 10-fold protocol"),
        key("momentum", Some("0.9"), "number in [0, 1)", "SGD momentum"),
        key("weight_decay", Some("5e-4"), "number >= 0", "weight decay"),
        key("seed", Some("0"), "integer", "seed of the weights, shuffle and flips"),
        key("workers", Some("1"), "integer > 0", "data loader threads"),
        key(
            "clip_grad_norm",
            Some("0"),
            "number >= 0",
            "limit of the global gradient L2 norm (insightface: 5; 0: off)",
        ),
        key(
            "precision",
            Some("f32"),
            "f32|bf16|f16",
            "mixed precision: the backbone in bf16, or in f16 with loss scaling (flex, cuda)",
        ),
        key(
            "devices",
            Some("1"),
            "integer >= 1",
            "data-parallel replicas, each with batch= images (GPUs device.., device+1, ..)",
        ),
        key(
            "nodes",
            Some("1"),
            "integer >= 1",
            "processes (machines) of a data-parallel run, each one replica (see rank=)",
        ),
        key(
            "rank",
            None,
            "integer in 0..nodes",
            "this process of a nodes= run; the others meet at rank 0",
        ),
        key(
            "master",
            None,
            "HOST:PORT",
            "rank 0's address in a nodes= run, the same on every rank (rank 0 listens on PORT)",
        ),
        key(
            "resume",
            Some("false"),
            "true|false",
            "continue the run in out= from its last checkpoint (its config.json is used; a run \
             killed before it wrote one is started from the keys given)",
        ),
        cli::overwrite_key(
            "replace an out= that holds files (the old directory is removed once the new run \
             finishes)",
        ),
        key(
            "backend",
            None,
            "a compiled backend: ndarray|flex|wgpu|cuda",
            "backend (default: flex, else ndarray)",
        ),
        key("device", Some("0"), "integer >= 0", "GPU index for wgpu/cuda"),
        key("out", Some("runs/train"), "a folder", "run directory"),
        key(
            "config",
            None,
            "a config.json of an earlier run",
            "repeat that run (other keys but out/backend/device are refused)",
        ),
    ]);
    Spec {
        program: "train",
        about: "train GroupFace or the ArcFace baseline on synthetic faces, a folder or a .rec",
        keys,
        flags: vec![],
    }
}

fn bad(key: &str, value: String, accepts: String) -> CliError {
    CliError::BadValue { key: key.into(), value, accepts }
}

fn config_from_args(args: &cli::Args) -> Result<TrainConfig, CliError> {
    let model = cli::model_config(args)?;
    let kind: MarginKind = args.get("margin")?;
    let straight_through = args.bool("straight_through", false)?;
    let data_path = match args.raw("data").unwrap_or("synthetic") {
        "synthetic" => None,
        path => {
            // These describe the generator, which a folder or .rec replaces.
            let synthetic = ["identities", "images_per_identity", "difficulty", "data_seed"];
            if let Some(key) = synthetic.into_iter().find(|k| args.given(k)) {
                let value = args.raw(key).unwrap_or("").into();
                return Err(bad(
                    key,
                    value,
                    format!(
                        "nothing with data={path}: it is a key of \
                    the synthetic faces (a folder's identities are its subfolders)"
                    ),
                ));
            }
            // Stored absolute, so `eval model=RUN` finds the held-out identities from anywhere.
            Some(absolute(path))
        }
    };
    let identities: usize = args.get("identities")?;
    let margin = MarginSoftmaxConfig::new(identities, model.output_width())
        .with_kind(kind)
        .with_margin(args.get_opt("m")?)
        .with_scale(args.get("s")?)
        .with_straight_through(straight_through)
        .with_sample_rate(args.get("sample_rate")?);
    let criterion = CriterionConfig::new(margin)
        .with_lambda(args.get("lambda")?)
        .with_center_weight(args.get("center_loss")?);
    let data = SynthConfig {
        seed: args.get("data_seed")?,
        identities,
        images_per_identity: args.get("images_per_identity")?,
        side: model.backbone.input_side as u32,
        difficulty: args.get("difficulty")?,
        ..SynthConfig::default()
    };
    let config = TrainConfig::new(model, criterion, data)
        .with_labels(args.get("labels")?)
        .with_label_window(args.get("label_window")?)
        .with_label_space(args.get("label_space")?)
        .with_valid_images_per_identity(args.get("valid_images_per_identity")?)
        .with_epochs(args.get("epochs")?)
        .with_batch(args.get("batch")?)
        .with_lr(match args.get_opt("lr")? {
            Some(lr) => lr,
            None => {
                let replicas: usize = args.get::<usize>("devices")? * args.get::<usize>("nodes")?;
                config::reference_lr(args.get::<usize>("batch")? * replicas)
            }
        })
        .with_schedule(args.get("schedule")?)
        .with_warmup(args.get("warmup")?)
        .with_step_epochs(args.get_list("step_epochs")?)
        .with_step_factor(args.get("step_factor")?)
        .with_init(args.get_opt("init")?)
        .with_eval(
            SynthEvalConfig::new()
                .with_identities(args.get("eval_identities")?)
                .with_images_per_identity(args.get("eval_images")?)
                .with_pairs(args.get("eval_pairs")?),
        )
        .with_momentum(args.get("momentum")?)
        .with_weight_decay(args.get("weight_decay")?)
        .with_seed(args.get("seed")?)
        .with_workers(args.get("workers")?)
        .with_clip_grad_norm(args.get("clip_grad_norm")?)
        .with_devices(args.get("devices")?)
        .with_nodes(args.get("nodes")?)
        .with_val(args.get_list::<String>("val")?.iter().map(|p| absolute(p)).collect())
        .with_val_every(args.get("val_every")?)
        .with_precision(args.get("precision")?)
        .with_data_path(data_path);
    if config.data_path.is_none() {
        return Ok(config);
    }
    // The classes are the data's identities that are not held out.
    let classes =
        data_classes(&config).map_err(|e| bad("data", args.raw("data").unwrap_or("").into(), e))?;
    let mut config = config;
    config.criterion.margin.classes = classes;
    Ok(config)
}

/// `path` made absolute when it exists, so a repeated run (`config=`) finds it from anywhere.
fn absolute(path: &str) -> String {
    std::fs::canonicalize(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

/// This process's place in a `nodes=` run: `rank=` and `master=` are needed exactly
/// when the configuration has more than one node.
fn node_launch(args: &cli::Args, config: &TrainConfig) -> Result<Option<NodeLaunch>, CliError> {
    let launch_keys = ["rank", "master"];
    if config.nodes == 1 {
        if let Some(key) = launch_keys.into_iter().find(|k| args.given(k)) {
            let value = args.raw(key).unwrap_or("").into();
            return Err(bad(key, value, "nothing without nodes= (a run of one process)".into()));
        }
        return Ok(None);
    }
    let needed = |key: &str| {
        args.raw(key).ok_or_else(|| {
            bad(
                key,
                String::new(),
                format!("a value: nodes={} runs one process per rank", config.nodes),
            )
        })
    };
    let rank: usize =
        needed("rank")?.parse().map_err(|_| args.bad("rank", args.raw("rank").unwrap_or("")))?;
    let launch = NodeLaunch::new(config.nodes, rank, needed("master")?)?;
    Ok(Some(launch))
}

/// Trains one run. A [`CliError::Run`] is a failure of the run itself; any other error is a
/// usage error, found before anything ran.
fn run() -> Result<(), CliError> {
    let spec = spec();
    let args = spec.parse_env()?;
    let resume = args.bool("resume", false)?;
    let overwrite = args.bool("overwrite", false)?;
    if overwrite && resume {
        let accepts = "false with resume=true, which continues the run in out=".to_string();
        return Err(bad("overwrite", "true".to_string(), accepts));
    }
    let out: PathBuf = args.get("out")?;
    let saved = out.join("config.json");
    let fixed = ["config", "out", "backend", "device", "resume", "overwrite", "rank", "master"];
    let setting = spec.keys.iter().map(|k| k.name).find(|k| !fixed.contains(k) && args.given(k));
    let file = match args.raw("config") {
        Some(file) => Some(file.to_string()),
        None if resume && saved.is_file() => Some(saved.display().to_string()),
        // A run killed before it wrote its configuration: its keys start it there.
        None if resume && setting.is_none() => {
            return Err(CliError::Run(format!(
                "resume=true: {} holds no config.json, so no run to continue; give the run's \
                 keys (or config=) with resume=true to start it there",
                out.display()
            )))
        }
        None => None,
    };
    let config = match file.as_deref() {
        Some(file) => {
            if let Some(key) = setting {
                let value = args.raw(key).unwrap_or("").into();
                return Err(bad(
                    key,
                    value,
                    "nothing: config= and resume=true fix every setting".into(),
                ));
            }
            groupface::train::config::read_config(std::path::Path::new(file))
                .map_err(|e| bad("config", file.into(), format!("a readable config.json ({e})")))?
        }
        None => config_from_args(&args)?,
    };
    config.validate().map_err(CliError::from)?;
    let backend = cli::backend(&args)?;
    let device = args.get("device")?;
    let node = node_launch(&args, &config)?;
    // The old directory is kept aside until the new run has finished.
    let replaced = if overwrite {
        groupface::util::fs::move_aside(&out)
            .map_err(|e| CliError::Run(format!("overwrite=true: cannot move aside {e}")))?
    } else {
        None
    };
    let run = TrainRun { config, out: out.clone(), quiet: false, resume, node };
    let outcome = train(backend, device, run);
    if let Some(old) = replaced {
        match &outcome {
            Ok(_) => {
                if let Err(e) = groupface::util::fs::remove_all(&old) {
                    eprintln!("overwrite=true: cannot remove the replaced {}: {e}", old.display());
                }
            }
            Err(_) => eprintln!(
                "overwrite=true: what {} held before this run is kept in {}",
                out.display(),
                old.display()
            ),
        }
    }
    let outcome = outcome.map_err(CliError::Run)?;
    let report = &outcome.report;
    println!(
        "held-out verification: {:.2}% ± {:.2} ({} positive / {} negative pairs)",
        100.0 * report.plain.verification.accuracy,
        100.0 * report.plain.verification.std,
        report.plain.positives,
        report.plain.negatives
    );
    if let Some(ga) = &report.group_aware {
        println!("group-aware similarity: {:.2}%", 100.0 * ga.verification.accuracy);
    }
    if outcome.earlier {
        println!("run directory (finished earlier): {}", outcome.dir.display());
    } else {
        println!(
            "training {:.0} s, evaluation {:.0} s; run directory: {}",
            outcome.train_seconds,
            outcome.eval_seconds,
            outcome.dir.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
