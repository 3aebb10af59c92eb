//! Trains and evaluates one run per setting of a grid and prints the comparison table.
//!
//! `cargo run --release --bin ablation -- groups=4..32 seeds=3`

use std::path::PathBuf;
use std::process::ExitCode;

use groupface::app::ablation::{
    parse_groups, run_config, run_grid, write_outputs, Grid, Preset, RunSetting,
};
use groupface::app::cli::{self, CliError, Key, Spec};
use groupface::backend::{BackendKind, DEFAULT_BACKEND_HELP};
use groupface::evaluate::held_out::SynthEvalConfig;

fn spec() -> Spec {
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    Spec {
        program: "ablation",
        about: "train and evaluate one run per setting (and seed) and compare them",
        keys: vec![
            key("preset", Some("tiny"), "tiny|small|paper", "scale of every run"),
            key(
                "backbone",
                None,
                "list of tiny|r18|r34|r50|r100",
                "backbone depths (tiny: one block per stage; default tiny, r100 for paper)",
            ),
            key(
                "groups",
                Some("32"),
                "list (0,4,32) or powers-of-two range (4..32)",
                "numbers of groups; the baseline (0) is always run",
            ),
            key("mode", Some("soft"), "list of soft|hard", "ensembles"),
            key("combine", Some("sum"), "list of sum|concat", "combinations"),
            key(
                "labels",
                Some("self-distributed"),
                "list of none|naive|self-distributed",
                "group label methods",
            ),
            key(
                "label_space",
                Some("zlog"),
                "list of prob|log|zlog",
                "where self-distributed labels take E away: p (the paper's print), log p, or log p standardised per group",
            ),
            key(
                "recipe",
                Some("scratch"),
                "scratch|pretrained",
                "train every arm from scratch, or fine-tune every arm (the baseline too) from the \
                 seed's baseline trained from scratch",
            ),
            key(
                "finetune_lr",
                None,
                "number > 0",
                "base learning rate of the pretrained recipe's fine-tuning (default: the paper's \
                 0.005 at batch 1024, scaled to the preset's batch: 0.0003125 for tiny)",
            ),
            key(
                "similarity",
                Some("plain,group-aware"),
                "list of plain|group-aware",
                "similarities scored at evaluation (no retraining)",
            ),
            key(
                "label_window",
                Some("8"),
                "integer >= 1",
                "batches in the E[p] window of self-distributed labels",
            ),
            key("seeds", Some("3"), "integer >= 1", "seeds per setting: 0..seeds"),
            key("epochs", None, "integer > 0", "epochs of every run (preset's if absent)"),
            key(
                "identities",
                None,
                "list of integers >= 2",
                "training identities, one sweep point each (preset's if absent)",
            ),
            key(
                "images_per_identity",
                None,
                "integer >= 3",
                "images per training identity (preset's if absent)",
            ),
            key(
                "eval_identities",
                None,
                "integer >= 2",
                "held-out identities (preset's if absent)",
            ),
            key(
                "eval_images",
                None,
                "integer >= 2",
                "images per held-out identity (preset's if absent)",
            ),
            key("out", Some("runs/ablation"), "a folder", "where the tables and plots go"),
            key(
                "runs",
                None,
                "a folder",
                "where the runs go (default OUT/runs); ablations sharing it share runs",
            ),
            key("backend", None, "ndarray|flex|wgpu|cuda (compiled ones)", DEFAULT_BACKEND_HELP),
            key("device", Some("0"), "integer >= 0", "GPU index for wgpu/cuda"),
            key(
                "jobs",
                None,
                "integer >= 1",
                "runs trained at once (default: the CPU cores on CPU backends, 1 on GPUs)",
            ),
        ],
        flags: vec![("--dry-run", "print the expanded grid, one run per line, and exit")],
    }
}

/// The grid the keys describe, with the held-out sizes of `eval_identities=` and
/// `eval_images=` when given.
fn grid_from_args(args: &cli::Args) -> Result<Grid, CliError> {
    let preset: Preset = args.get("preset")?;
    let backbones: Vec<String> = match args.get_list::<String>("backbone")? {
        list if list.is_empty() => {
            vec![if preset == Preset::Paper { "r100".into() } else { "tiny".into() }]
        }
        list => list,
    };
    let groups_text: String = args.get("groups")?;
    let groups = parse_groups(&groups_text).map_err(|_| args.bad("groups", &groups_text))?;
    let seeds: u64 = args.get("seeds")?;
    if seeds == 0 {
        return Err(args.bad("seeds", "0"));
    }
    let grid = Grid {
        preset,
        backbones,
        groups,
        modes: args.get_list("mode")?,
        combines: args.get_list("combine")?,
        labels: args.get_list("labels")?,
        label_spaces: args.get_list("label_space")?,
        recipe: args.get("recipe")?,
        finetune_lr: args.get_opt("finetune_lr")?,
        similarities: args.get_list("similarity")?,
        seeds,
        epochs: args.get_opt("epochs")?,
        label_window: Some(args.get("label_window")?),
        identities: args.get_list("identities")?,
        images_per_identity: args.get_opt("images_per_identity")?,
        eval: None,
    };
    let eval = eval_sizes(&grid, args)?;
    Ok(Grid { eval, ..grid })
}

/// The preset's held-out evaluation with the sizes of `eval_identities=` and `eval_images=`;
/// `None` (the preset's own) when neither is given.
fn eval_sizes(grid: &Grid, args: &cli::Args) -> Result<Option<SynthEvalConfig>, CliError> {
    let eval_identities: Option<usize> = args.get_opt("eval_identities")?;
    let eval_images: Option<usize> = args.get_opt("eval_images")?;
    if eval_identities.is_none() && eval_images.is_none() {
        return Ok(None);
    }
    // The preset's evaluation with the given sizes (the tiny and small presets differ).
    let preset_eval = match grid.runs().first().map(|r| grid.config(r)) {
        Some(Ok(config)) => config.eval,
        _ => SynthEvalConfig::new(),
    };
    Ok(Some(SynthEvalConfig {
        identities: eval_identities.unwrap_or(preset_eval.identities),
        images_per_identity: eval_images.unwrap_or(preset_eval.images_per_identity),
        ..preset_eval
    }))
}

/// `--dry-run`: every run, under the pretraining run it starts from if any, and the counts.
fn print_dry_run(grid: &Grid, runs: &[RunSetting]) {
    let pretraining = grid.pretraining_runs();
    for pre in &pretraining {
        println!("pretraining {}", pre.id());
        for run in runs.iter().filter(|r| r.pretraining().as_ref() == Some(pre)) {
            println!("  {}", run.id());
        }
    }
    if pretraining.is_empty() {
        for run in runs {
            println!("{}", run.id());
        }
    }
    println!("{} pretraining runs, {} runs", pretraining.len(), runs.len());
}

/// The `jobs=` key: runs trained at once.
fn jobs(args: &cli::Args, backend: BackendKind) -> Result<usize, CliError> {
    Ok(match args.get_opt("jobs")? {
        Some(0) => return Err(args.bad("jobs", "0")),
        Some(n) => n,
        // One run keeps one CPU core busy; a GPU is shared badly by concurrent runs.
        None if backend.is_cpu() => {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
        None => 1,
    })
}

fn run() -> Result<(), CliError> {
    let args = spec().parse_env()?;
    let grid = grid_from_args(&args)?;
    // Every setting must build before anything trains.
    let runs = grid.runs();
    for run in &runs {
        grid.config(run).map_err(|e| CliError::BadValue {
            key: e.key.clone(),
            value: e.found.clone(),
            accepts: e.expected.clone(),
        })?;
    }
    let out: PathBuf = args.get("out")?;
    let runs_dir: PathBuf = args.get_opt("runs")?.unwrap_or_else(|| out.join("runs"));
    if args.flag("--dry-run") {
        print_dry_run(&grid, &runs);
        return Ok(());
    }
    // The paths that fine-tuned runs start from must build too.
    for run in &runs {
        run_config(&grid, run, &runs_dir).map_err(CliError::Run)?;
    }
    let backend = cli::backend(&args)?;
    let device: usize = args.get("device")?;
    let command = std::iter::once("cargo run --release --bin ablation --".to_string())
        .chain(std::env::args_os().skip(1).map(|w| w.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let jobs = jobs(&args, backend)?;
    let results = run_grid(&grid, &runs_dir, backend, device, jobs).map_err(CliError::Run)?;
    let summary = write_outputs(&grid, &results, &out, &command).map_err(CliError::Run)?;
    println!("\n{summary}");
    println!("tables and plots: {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    cli::finish(run())
}
