//! Trains and evaluates one run per setting of a grid and prints the comparison table.
//!
//! `cargo run --release --bin ablation -- groups=4..32 seeds=3`

use std::path::PathBuf;

use groupface::ablation::{parse_groups, run_grid, write_outputs, Grid, Preset};
use groupface::backend::DEFAULT_BACKEND_HELP;
use groupface::cli::{CliError, Key, Spec};

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
                "similarity",
                Some("plain,group-aware"),
                "list of plain|group-aware",
                "similarities scored at evaluation (no retraining)",
            ),
            key("seeds", Some("3"), "integer >= 1", "seeds per setting: 0..seeds"),
            key("epochs", None, "integer > 0", "epochs of every run (preset's if absent)"),
            key("identities", None, "integer >= 2", "training identities (preset's if absent)"),
            key(
                "images_per_identity",
                None,
                "integer >= 3",
                "images per training identity (preset's if absent)",
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

fn run() -> Result<(), CliError> {
    let args = spec().parse(std::env::args().skip(1))?;
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
        similarities: args.get_list("similarity")?,
        seeds,
        epochs: args.get_opt("epochs")?,
        identities: args.get_opt("identities")?,
        images_per_identity: args.get_opt("images_per_identity")?,
        eval: None,
    };
    // Every setting must build before anything trains.
    let runs = grid.runs();
    for run in &runs {
        grid.config(run).map_err(|e| CliError::BadValue {
            key: e.key.clone(),
            value: e.found.clone(),
            accepts: e.expected.clone(),
        })?;
    }
    if args.flag("--dry-run") {
        for run in &runs {
            println!("{}", run.id());
        }
        println!("{} runs", runs.len());
        return Ok(());
    }
    let backend = groupface::cli::backend(&args)?;
    let out: PathBuf = args.get("out")?;
    let device: usize = args.get("device")?;
    let command = std::iter::once("cargo run --release --bin ablation --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let runs_dir: PathBuf = args.get_opt("runs")?.unwrap_or_else(|| out.join("runs"));
    let jobs: usize = match args.get_opt("jobs")? {
        Some(0) => return Err(args.bad("jobs", "0")),
        Some(n) => n,
        // One run keeps one CPU core busy; a GPU is shared badly by concurrent runs.
        None if backend.is_cpu() => {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
        None => 1,
    };
    let results = run_grid(&grid, &runs_dir, backend, device, jobs).map_err(CliError::Run)?;
    let summary = write_outputs(&grid, &results, &out, &command).map_err(CliError::Run)?;
    println!("\n{summary}");
    println!("tables and plots: {}", out.display());
    Ok(())
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(CliError::Help(text)) => print!("{text}"),
        Err(CliError::Run(message)) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    }
}
