//! Embeddings of every image of a folder, for other tools: `.npy` files plus the image list.
//!
//! - `cargo run --release --bin embed -- model=runs/train data=FOLDER out=DIR`
//! - `cargo run --release --bin embed -- init=ms1mv3_r100.pth backbone=r100 data=FOLDER out=DIR`

use std::path::PathBuf;
use std::process::ExitCode;

use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::app::jobs::EmbedJob;
use groupface::backend::DEFAULT_BACKEND_HELP;
use groupface::util::fs::Staged;

fn spec() -> Spec {
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    let mut keys = vec![
        key("model", None, "a run directory", "the trained run"),
        key(
            "init",
            None,
            "an insightface .pth/.pt or a .safetensors file",
            "a PyTorch checkpoint (instead of model=), with backbone= etc.",
        ),
        key("data", None, "a folder", "one subfolder of images per identity"),
        key(
            "out",
            Some("embeddings"),
            "a folder",
            "embeddings.npy, features.npy, probs.npy, labels.txt, paths.txt, embedding.json",
        ),
        cli::overwrite_key(
            "replace an out= that holds files (the old one is removed once the new one is \
             complete)",
        ),
        key(
            "flip",
            Some("true"),
            "true|false",
            "true: v̄(x) + v̄(flip x), what insightface's evaluation scores; false: v̄(x) alone, \
             what arcface_torch's inference gives (recorded in embedding.json)",
        ),
        key("batch", Some("64"), "integer > 0", "images per forward pass"),
        key("backend", None, "ndarray|flex|wgpu|cuda (compiled ones)", DEFAULT_BACKEND_HELP),
        key("device", Some("0"), "integer >= 0", "GPU index for wgpu/cuda"),
    ];
    // The architecture of init= (a checkpoint carries none): insightface's r100 ArcFace by
    // default.
    for mut k in cli::model_keys() {
        if k.name == "groups" {
            k.default = Some("0");
        }
        keys.push(k);
    }
    Spec {
        program: "embed",
        about: "v̄ (flip-summed unless flip=false), v̂ and p(G|x) of every image of a folder, as \
                .npy files",
        keys,
        flags: vec![],
    }
}

fn run() -> Result<(), CliError> {
    let args = spec().parse_env()?;
    let (run, checkpoint): (PathBuf, _) = match (args.get_opt("model")?, args.get_opt("init")?) {
        (Some(run), None) => (run, None),
        (None, Some(file)) => (file, Some(cli::model_config(&args)?)),
        (None, None) => {
            return Err(CliError::Missing {
                key: "model".into(),
                accepts: "model=RUN_DIR or init=CHECKPOINT".into(),
            })
        }
        (Some(_), Some(_)) => return Err(args.bad("init", args.raw("init").unwrap_or(""))),
    };
    let backend = cli::backend(&args)?;
    let overwrite = args.bool("overwrite", false)?;
    // Written beside out= and moved in place once complete: an earlier run's features.npy is
    // never left beside this run's embeddings.
    let out: PathBuf = args.get("out")?;
    let staged = Staged::folder(&out, overwrite).map_err(|e| CliError::Run(e.to_string()))?;
    let job = EmbedJob {
        run,
        checkpoint,
        folder: args.get("data")?,
        out: staged.path(0).to_path_buf(),
        batch: args.get("batch")?,
        // `mode` is also an architecture key (default soft); given, it overrides the ensemble
        // at inference, as in `eval`.
        mode: if args.given("mode") { Some(args.get("mode")?) } else { None },
        flip: args.bool("flip", true)?,
    };
    let summary = groupface::backend::run(backend, args.get("device")?, job)
        .and_then(|r| r)
        .map_err(CliError::Run)?;
    staged.commit().map_err(|e| CliError::Run(format!("cannot write {e}")))?;
    println!("{} images, embeddings {} wide", summary.images, summary.width);
    for file in summary.files.iter().filter_map(|f| f.file_name()) {
        println!("wrote {}", out.join(file).display());
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
