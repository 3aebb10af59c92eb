//! The layout of `src/` keeps its promise: each layer imports only the layers before it, and
//! `src/` holds nothing else. A `use` that points up (a model importing the
//! trainer, say) fails here, naming the file and line, before it can tie a cycle.

use std::path::{Path, PathBuf};

/// The layers, lowest first (the order of `src/lib.rs` and of the README's layout table).
const LAYERS: [&str; 10] = [
    "util",
    "backend",
    "data",
    "protocol",
    "analysis",
    "model",
    "objective",
    "evaluate",
    "train",
    "app",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a line names as `crate::NAME`.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .filter(|(at, _)| {
            !line[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .map(|(at, m)| {
            let rest = &line[at + m.len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn every_layer_imports_only_the_layers_before_it() {
    let mut upward = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src().join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer}/ holds no Rust file");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for name in crate_paths(line) {
                    if LAYERS.iter().position(|l| *l == name).is_some_and(|r| r > rank) {
                        upward.push(format!("{}:{}: {layer} -> {name}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up a layer:\n{}", upward.join("\n"));
}

#[test]
fn lib_declares_the_layers_and_src_holds_only_them() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    // rustfmt sorts the declarations; the crate doc above them gives the order.
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ").and_then(|m| m.strip_suffix(';')))
        .collect();
    declared.sort();
    let mut layers = LAYERS.to_vec();
    layers.sort();
    assert_eq!(declared, layers, "src/lib.rs must declare every layer and nothing else");
    let mut entries: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let mut expected: Vec<String> = LAYERS.iter().map(|l| l.to_string()).collect();
    expected.extend(["bin".to_string(), "lib.rs".to_string()]);
    expected.sort();
    assert_eq!(entries, expected, "src/ holds lib.rs, bin/ and one folder per layer");
}

#[test]
fn crate_paths_are_read_exactly() {
    assert_eq!(crate_paths("use crate::model::GroupFace; // crate::train"), ["model", "train"]);
    assert_eq!(crate_paths("use burn_crate::x; $crate::y"), Vec::<&str>::new());
    assert_eq!(crate_paths("[`x`](crate::util::fs)"), ["util"]);
}
