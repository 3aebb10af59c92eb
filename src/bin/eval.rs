//! Evaluates a trained run, or precomputed embeddings of any model.
//!
//! - `cargo run --release --bin eval -- model=runs/train data=synthetic out=runs/train/eval`
//! - `cargo run --release --bin eval -- model=RUN data=lfw.bin out=DIR`
//! - `cargo run --release --bin eval -- init=ms1mv3_r100.pth backbone=r100 data=lfw.bin`
//! - `cargo run --release --bin eval -- embeddings=E.npy pairs=P.txt out=DIR`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::app::jobs::{evaluate_run, EvalData, EvalJob};
use groupface::backend::DEFAULT_BACKEND_HELP;
use groupface::evaluate::embed::Embeddings;
use groupface::evaluate::held_out::RunReport;
use groupface::evaluate::pairs::{all_pairs_report, pairs_report};
use groupface::model::GroupMode;

fn spec() -> Spec {
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    Spec {
        program: "eval",
        about: "verification, TAR@FAR and group analysis of a trained run or of embeddings",
        keys: [
            vec![
                key("model", None, "a run directory", "the trained run to evaluate"),
                key(
                    "init",
                    None,
                    "an insightface .pth/.pt or a .safetensors file",
                    "a PyTorch checkpoint to evaluate (instead of model=), with backbone= etc.",
                ),
                key(
                    "data",
                    Some("synthetic"),
                    "synthetic|FOLDER|FILE.bin|ijbb:ROOT|ijbc:ROOT",
                    "held-out synthetic identities of the run, an image folder, a .bin, or IJB-B/C",
                ),
                key(
                    "embeddings",
                    None,
                    "a float32 .npy [N, D]",
                    "precomputed embeddings (instead of model=)",
                ),
                key("pairs", None, "a text file", "one pair per line: row_a row_b 1|0"),
                key("labels", None, "a text file", "one identity per line, row order: every pair"),
                key("mode", None, "soft|hard", "override the ensemble at inference"),
                key("batch", Some("64"), "integer > 0", "images per forward pass"),
                key(
                    "folds",
                    Some("10"),
                    "integer >= 1, at most the pairs (1: no held-out fold)",
                    "folds of the verification protocol on listed pairs and IJB (insightface: 10)",
                ),
                key("out", None, "a folder", "report.json, CSV, Markdown and ROC plot go here"),
                key(
                    "backend",
                    None,
                    "ndarray|flex|wgpu|cuda (compiled ones)",
                    DEFAULT_BACKEND_HELP,
                ),
                key("device", Some("0"), "integer >= 0", "GPU index for wgpu/cuda"),
            ],
            checkpoint_keys(),
        ]
        .concat(),
        flags: vec![],
    }
}

/// The architecture keys of `init=` (a checkpoint has none of its own); insightface's r100
/// ArcFace (512-d, no groups) by default.
fn checkpoint_keys() -> Vec<Key> {
    // `mode` is eval's own key (the ensemble at inference).
    let mut keys: Vec<Key> =
        groupface::app::cli::model_keys().into_iter().filter(|k| k.name != "mode").collect();
    for key in &mut keys {
        if key.name == "groups" {
            key.default = Some("0");
        }
        key.help = match key.name {
            "backbone" => "init=: IResNet of the checkpoint",
            "groups" => "init=: groups of the checkpoint (0: insightface ArcFace)",
            _ => key.help,
        };
    }
    keys
}

fn folds(args: &groupface::app::cli::Args) -> Result<usize, CliError> {
    match args.get("folds")? {
        0 => Err(args.bad("folds", "0")),
        folds => Ok(folds),
    }
}

fn from_embeddings(args: &groupface::app::cli::Args) -> Result<RunReport, CliError> {
    use groupface::protocol::{npy, pairs};
    let path: PathBuf = args.get("embeddings")?;
    if args.given("model") {
        return Err(args.bad("model", args.raw("model").unwrap_or("")));
    }
    let matrix = npy::read_matrix(&path).map_err(|e| CliError::Run(e.to_string()))?;
    let rows = matrix.rows;
    let embeddings =
        Embeddings { embedding: matrix, feature: None, probs: None, norms: Vec::new() };
    let settings = |listed: &str| -> BTreeMap<String, String> {
        let mut settings = BTreeMap::new();
        settings.insert("embeddings".into(), path.display().to_string());
        settings.insert("data".into(), listed.to_string());
        settings.insert("similarity".into(), "plain".into());
        settings
    };
    let failed = |e: groupface::protocol::EvalError| CliError::Run(e.to_string());
    let plain = match (args.raw("pairs"), args.raw("labels")) {
        (Some(file), None) => {
            let list = pairs::read_pairs(std::path::Path::new(file), rows).map_err(failed)?;
            pairs_report(&embeddings, &list, None, folds(args)?, settings(file))
        }
        // Every pair of rows, scored without listing them: 10,000 rows make 5·10⁷ pairs.
        (None, Some(file)) => {
            let labels = pairs::read_labels(std::path::Path::new(file), rows).map_err(failed)?;
            all_pairs_report(&embeddings, &labels, None, folds(args)?, settings(file))
        }
        _ => {
            return Err(CliError::Missing {
                key: "pairs".into(),
                accepts: "exactly one of pairs=FILE or labels=FILE with embeddings=".into(),
            })
        }
    }
    .map_err(CliError::Run)?;
    Ok(RunReport { plain, group_aware: None, groups: None })
}

fn from_model(args: &groupface::app::cli::Args) -> Result<RunReport, CliError> {
    let (run, checkpoint): (PathBuf, _) = match (args.get_opt("model")?, args.get_opt("init")?) {
        (Some(run), None) => (run, None),
        (None, Some(file)) => {
            let mut architecture = args.clone();
            if !args.given("mode") {
                architecture.set("mode", "soft");
            }
            (file, Some(groupface::app::cli::model_config(&architecture)?))
        }
        _ => return Err(args.bad("init", args.raw("init").unwrap_or(""))),
    };
    let data_text: String = args.get("data")?;
    let data = if data_text == "synthetic" {
        if args.given("pairs") {
            return Err(args.bad("pairs", args.raw("pairs").unwrap_or("")));
        }
        EvalData::Synthetic
    } else if let Some((which, root)) = data_text
        .split_once(':')
        .filter(|(w, _)| w.eq_ignore_ascii_case("ijbb") || w.eq_ignore_ascii_case("ijbc"))
    {
        let which = which.parse().map_err(|_| args.bad("data", &data_text))?;
        EvalData::Ijb { root: PathBuf::from(root), which }
    } else if data_text.ends_with(".bin") {
        EvalData::Bin(PathBuf::from(&data_text))
    } else {
        EvalData::Folder { root: PathBuf::from(&data_text), pairs: args.get_opt("pairs")? }
    };
    let mode: Option<GroupMode> = args.get_opt("mode")?;
    let backend = groupface::app::cli::backend(args)?;
    let pictures: Option<PathBuf> = args.get_opt("out")?;
    let folds = folds(args)?;
    let job = EvalJob { run, checkpoint, data, mode, batch: args.get("batch")?, pictures, folds };
    evaluate_run(backend, args.get("device")?, job).map_err(CliError::Run)
}

fn run() -> Result<(), CliError> {
    let args = spec().parse_env()?;
    let report = if args.given("embeddings") {
        from_embeddings(&args)?
    } else if args.given("model") || args.given("init") {
        from_model(&args)?
    } else {
        return Err(CliError::Missing {
            key: "model".into(),
            accepts: "model=RUN_DIR, init=CHECKPOINT, or embeddings=E.npy with pairs= or labels="
                .into(),
        });
    };
    print!("{}", report.plain.markdown());
    if let Some(ga) = &report.group_aware {
        println!("\ngroup-aware similarity:");
        print!("{}", ga.markdown());
    }
    if let Some(groups) = &report.groups {
        let nmi: Vec<String> = groups
            .nmi
            .iter()
            .map(|(attribute, n)| format!("{attribute} {:.3} ({:.3})", n.nmi, n.chance_nmi))
            .collect();
        println!(
            "\ngroups: largest share {:.3}, entropy {:.2} bits\n\
             NMI with each hidden attribute (chance level in brackets): {}",
            groups.largest_share,
            groups.entropy_bits,
            nmi.join(", ")
        );
    }
    if let Some(out) = args.get_opt::<PathBuf>("out")? {
        std::fs::create_dir_all(&out)
            .map_err(|e| CliError::Run(format!("cannot create {}: {e}", out.display())))?;
        report.write(&out).map_err(CliError::Run)?;
        println!("report: {}", out.join("report.json").display());
    }
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
