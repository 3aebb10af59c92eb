//! Data tools: `data synth`, `data sheet`, `data fake-ijb`, `data pack`, `data info`,
//! `data bench`.
//!
//! `cargo run --release --bin data -- synth out=DIR identities=N images_per_identity=M side=S seed=K`
//! `cargo run --release --bin data -- sheet out=FILE.png identities=8 images=8 side=112`
//! `cargo run --release --bin data -- fake-ijb out=DIR which=c subjects=4`
//! `cargo run --release --bin data -- pack src=DIR out=FILE.rec`
//! `cargo run --release --bin data -- info path=P`
//! `cargo run --release --bin data -- bench side=112`

use std::path::PathBuf;
use std::process::ExitCode;

use groupface::app::cli::{self, CliError, Commands, Key, Spec};
use groupface::app::data_tool;
use groupface::data::synth::{SynthConfig, SynthFaces};

const COMMANDS: [&str; 6] = ["synth", "sheet", "fake-ijb", "pack", "info", "bench"];

/// The synthetic generator's keys besides the counts, shared by `synth` and `sheet`.
fn generator_keys() -> Vec<Key> {
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    vec![
        key("side", Some("112"), "integer >= 16", "image side in pixels"),
        key("seed", Some("0"), "integer", "generator seed"),
        key("difficulty", Some("0.5"), "number in [0, 1]", "nuisance strength"),
        key(
            "lookalike_fraction",
            Some("0.2"),
            "number in [0, 1)",
            "share of look-alike identities",
        ),
    ]
}

/// The `overwrite` key of the commands that write a data set.
fn overwrite_key() -> Key {
    groupface::app::cli::overwrite_key(
        "replace an out= that holds files (the old one is removed once the new one is complete)",
    )
}

/// The value of [`overwrite_key`].
fn overwrite(args: &cli::Args) -> Result<bool, CliError> {
    args.bool("overwrite", false)
}

/// A failure of the work itself (a data file, the disk, a lock held by another process): exit
/// status 1, with the error's own message.
fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Run(e.to_string())
}

/// The generator of `identities` × `images` faces with the keys of [`generator_keys`].
fn synth_config(
    args: &cli::Args,
    identities: usize,
    images: usize,
) -> Result<SynthConfig, CliError> {
    Ok(SynthConfig {
        seed: args.get("seed")?,
        identities,
        images_per_identity: images,
        side: args.get("side")?,
        difficulty: args.get("difficulty")?,
        lookalike_fraction: args.get("lookalike_fraction")?,
    })
}

/// Every subcommand, in the order `data --help` lists them.
fn commands() -> Commands {
    Commands {
        program: "data",
        about: "write, pack, inspect and time face data sets",
        commands: COMMANDS.into_iter().map(|c| spec(c).expect("a listed command")).collect(),
    }
}

fn spec(command: &str) -> Option<Spec> {
    let key = |name, default, accepts, help| Key { name, default, accepts, help };
    let (program, about, keys) = match command {
        "synth" => (
            "data synth",
            "write synthetic faces: one folder per identity plus attributes.csv",
            vec![
                key("out", None, "a folder", "where to write"),
                key("identities", Some("100"), "integer > 0", "number of identities"),
                key("images_per_identity", Some("20"), "integer > 0", "images per identity"),
                overwrite_key(),
            ]
            .into_iter()
            .chain(generator_keys())
            .collect(),
        ),
        "sheet" => (
            "data sheet",
            "write a PNG grid of synthetic faces: one row per identity, one column per image",
            vec![
                key("out", None, "a path ending in .png", "the picture to write"),
                key("identities", Some("8"), "integer in 1..=256", "rows"),
                key("images", Some("8"), "integer in 1..=256", "columns"),
            ]
            .into_iter()
            .chain(generator_keys())
            .collect(),
        ),
        "fake-ijb" => (
            "data fake-ijb",
            "write a tree in the IJB-B/C layout (meta files and loose crops with landmarks) to \
             try the IJB protocol before the licensed data is at hand; its crops are discs with \
             five dots, not faces",
            vec![
                key("out", None, "a folder", "the tree's root (eval data=ijbc:ROOT)"),
                key("which", Some("c"), "b|c", "the meta files' prefix: ijbb or ijbc"),
                key("subjects", Some("4"), "integer >= 1", "subjects"),
                key("templates", Some("2"), "integer >= 1", "templates per subject"),
                key("media", Some("2"), "integer >= 1", "media per template"),
                key("images", Some("2"), "integer >= 1", "images per media"),
                key("side", Some("48"), "integer >= 16", "side of the loose crops"),
                key("seed", Some("0"), "integer", "pose and colour seed"),
                overwrite_key(),
            ],
        ),
        "pack" => (
            "data pack",
            "pack an image folder into insightface RecordIO (FILE.rec and FILE.idx)",
            vec![
                key("src", None, "an image folder", "one subfolder per identity"),
                key(
                    "out",
                    None,
                    "a path ending in .rec",
                    "the .rec to write; the .idx goes beside it",
                ),
                overwrite_key(),
            ],
        ),
        "info" => (
            "data info",
            "decode every image of a folder, a .rec or a .bin and print one JSON object",
            vec![key("path", None, "a folder, a .rec or a .bin", "what to inspect")],
        ),
        "bench" => (
            "data bench",
            "images/s of synthetic generation, folder decoding and .rec decoding (one thread)",
            vec![
                key("side", Some("112"), "integer >= 16", "image side"),
                key("identities", Some("20"), "integer > 0", "identities to generate"),
                key("images_per_identity", Some("25"), "integer > 0", "images per identity"),
                key("work", None, "a folder", "scratch folder (default: a temporary one)"),
            ],
        ),
        _ => return None,
    };
    Some(Spec { program, about, keys, flags: vec![] })
}

/// `data synth`: a folder of synthetic faces.
fn synth(args: &cli::Args) -> Result<(), CliError> {
    let config = synth_config(args, args.get("identities")?, args.get("images_per_identity")?)?;
    let out: PathBuf = args.get("out")?;
    let n = data_tool::synth_with(config, &out, overwrite(args)?).map_err(failed)?;
    println!("wrote {n} images to {}", out.display());
    Ok(())
}

/// `data sheet`: a PNG grid of synthetic faces.
fn sheet(args: &cli::Args) -> Result<(), CliError> {
    let out: PathBuf = args.get("out")?;
    if out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(args.bad("out", &out.display().to_string()));
    }
    let (identities, images): (usize, usize) = (args.get("identities")?, args.get("images")?);
    for (key, value) in [("identities", identities), ("images", images)] {
        if !(1..=256).contains(&value) {
            return Err(args.bad(key, &value.to_string()));
        }
    }
    let faces = SynthFaces::new(synth_config(args, identities, images)?).map_err(failed)?;
    let sheet = faces.contact_sheet(identities, images);
    let mut png = Vec::new();
    sheet
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| CliError::Run(format!("cannot encode {}: {e}", out.display())))?;
    groupface::util::fs::write_atomic(&out, &png)
        .map_err(|e| CliError::Run(format!("cannot write {e}")))?;
    println!(
        "wrote {} ({}x{} pixels: {identities} identities x {images} images)",
        out.display(),
        sheet.width(),
        sheet.height()
    );
    Ok(())
}

/// `data fake-ijb`: a tree in the IJB-B/C layout.
fn fake_ijb(args: &cli::Args) -> Result<(), CliError> {
    use groupface::protocol::ijb::{write_fake_ijb_to, FakeIjbSpec};
    let out: PathBuf = args.get("out")?;
    let counts: Vec<usize> = ["subjects", "templates", "media", "images"]
        .into_iter()
        .map(|key| match args.get::<usize>(key)? {
            0 => Err(args.bad(key, "0")),
            n => Ok(n),
        })
        .collect::<Result<_, _>>()?;
    let spec = FakeIjbSpec {
        side: args.get("side")?,
        seed: args.get("seed")?,
        ..FakeIjbSpec::uniform(args.get("which")?, counts[0], counts[1], counts[2], counts[3])
    };
    write_fake_ijb_to(&out, &spec, overwrite(args)?).map_err(failed)?;
    let templates = spec.templates.len();
    let images: usize = spec.templates.iter().flat_map(|t| &t.media).sum();
    // The pair file lists every template pair (write_fake_ijb).
    println!(
        "wrote {} ({templates} templates of {} subjects, {images} images, {} template pairs)",
        out.display(),
        counts[0],
        templates * (templates - 1) / 2
    );
    Ok(())
}

/// `data pack`: an image folder as insightface RecordIO.
fn pack(args: &cli::Args) -> Result<(), CliError> {
    let src: PathBuf = args.get("src")?;
    let out: PathBuf = args.get("out")?;
    if out.extension().and_then(|e| e.to_str()) != Some("rec") {
        return Err(args.bad("out", &out.display().to_string()));
    }
    let stats = data_tool::pack_with(&src, &out, overwrite(args)?).map_err(failed)?;
    println!("{}", serde_json::to_string(&stats).map_err(failed)?);
    Ok(())
}

/// `data info`: one JSON object describing a folder, a .rec or a .bin.
fn info(args: &cli::Args) -> Result<(), CliError> {
    let path: PathBuf = args.get("path")?;
    let info = data_tool::info(&path).map_err(failed)?;
    println!("{}", serde_json::to_string(&info).map_err(failed)?);
    Ok(())
}

/// `data bench`: images/s of generation and decoding, one JSON line each.
fn bench(args: &cli::Args) -> Result<(), CliError> {
    let work: PathBuf = match args.get_opt("work")? {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("groupface-data-bench-{}", std::process::id())),
    };
    let results = data_tool::bench(
        args.get("side")?,
        args.get("identities")?,
        args.get("images_per_identity")?,
        &work,
    )
    .map_err(failed)?;
    for r in results {
        println!("{}", serde_json::to_string(&r).map_err(failed)?);
    }
    if args.raw("work").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Reads the subcommand and its keys and runs it. Usage errors exit 2; a failure of the work
/// itself ([`CliError::Run`], see [`failed`]) exits 1.
fn run() -> Result<(), CliError> {
    let (command, args) = commands().parse_env()?;
    match command {
        "synth" => synth(&args),
        "sheet" => sheet(&args),
        "fake-ijb" => fake_ijb(&args),
        "pack" => pack(&args),
        "info" => info(&args),
        "bench" => bench(&args),
        _ => unreachable!("commands() lists only these"),
    }
}

fn main() -> ExitCode {
    cli::finish(run())
}
