//! Weights in from PyTorch and out to it: insightface arcface_torch IResNet state dicts
//! (`.pth`/`.pt`, read by burn-store's pickle reader) and safetensors files load into a
//! [`GroupFace`]; a trained model is written as safetensors with PyTorch's keys and layouts.
//!
//! Two key layouts are understood:
//! - **insightface** (`conv1.weight`, `layer2.0.bn1.weight`, `prelu.weight`, `fc.weight`, …):
//!   the IResNet alone, as arcface_torch saves it (a leading `module.` from DDP is dropped);
//! - **groupface**: the same backbone keys under `backbone.`, the head under `head.` (the
//!   layout of `scripts/torch_groupface.py`).
//!
//! The translation between our module paths and PyTorch's keys is [`torch_key`], the only place
//! that knows it. Loading checks every key and shape before touching the model and fails with
//! the full list of what is missing, unexpected or of the wrong shape: nothing is loaded
//! partially by accident.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore, TensorSnapshot,
};

use crate::model::{GroupFace, GroupFaceConfig};

/// What can go wrong moving weights in or out.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// The file cannot be read as a checkpoint.
    #[error("{}: cannot read weights: {message}", path.display())]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The checkpoint's keys or shapes do not fit the model.
    #[error("{}: the checkpoint does not fit this model ({summary}):\n{details}", path.display())]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Counts of missing, unexpected and mis-shaped keys.
        summary: String,
        /// One line per offending key, with shapes.
        details: String,
    },
    /// The export cannot be written.
    #[error("{}: cannot write weights: {message}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The key layout of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// insightface's IResNet keys, no prefix, no head.
    Insightface,
    /// `backbone.` + insightface keys, and `head.` keys.
    GroupFace,
}

/// The PyTorch key of one of our parameters.
///
/// `path` is the module path as burn-store names it on the way to PyTorch
/// ([`BurnToPyTorchAdapter`]: BatchNorm `weight`/`bias` rather than `gamma`/`beta`), for
/// example `backbone.blocks.3.downsample.bn.running_mean`; `blocks` are the residual blocks
/// per stage. `None` for a path with no PyTorch counterpart.
///
/// | ours | PyTorch |
/// |---|---|
/// | `stem`, `stem_bn`, `stem_act.alpha` | `conv1`, `bn1`, `prelu.weight` |
/// | `blocks.{n}` (n counts over all stages) | `layer{s}.{i}` (stage s from 1, block i in it) |
/// | block `act.alpha` | block `prelu.weight` |
/// | block `downsample.conv`, `downsample.bn` | block `downsample.0`, `downsample.1` |
/// | `out_bn` | `bn2` |
/// | `fc`, `features` | `fc`, `features` |
/// | head `gdn.act.alpha` | head `gdn.act.weight` |
/// | every other head path | the same path |
pub fn torch_key(path: &str, blocks: &[usize], layout: Layout) -> Option<String> {
    if let Some(rest) = path.strip_prefix("backbone.") {
        let key = backbone_key(rest, blocks)?;
        return Some(match layout {
            Layout::Insightface => key,
            Layout::GroupFace => format!("backbone.{key}"),
        });
    }
    let rest = path.strip_prefix("head.")?;
    if layout == Layout::Insightface {
        return None;
    }
    Some(match rest {
        "gdn.act.alpha" => "head.gdn.act.weight".to_string(),
        other => format!("head.{other}"),
    })
}

fn backbone_key(path: &str, blocks: &[usize]) -> Option<String> {
    let (module, param) = path.split_once('.')?;
    Some(match module {
        "stem" => format!("conv1.{param}"),
        "stem_bn" => format!("bn1.{param}"),
        "stem_act" if param == "alpha" => "prelu.weight".to_string(),
        "out_bn" => format!("bn2.{param}"),
        "fc" | "features" => path.to_string(),
        "blocks" => {
            let (index, inner) = param.split_once('.')?;
            let mut n: usize = index.parse().ok()?;
            let mut stage = 0;
            while n >= *blocks.get(stage)? {
                n -= blocks[stage];
                stage += 1;
            }
            let inner = match inner.split_once('.')? {
                ("act", "alpha") => "prelu.weight".to_string(),
                ("downsample", rest) => match rest.split_once('.')? {
                    ("conv", p) => format!("downsample.0.{p}"),
                    ("bn", p) => format!("downsample.1.{p}"),
                    _ => return None,
                },
                ("bn1" | "bn2" | "bn3" | "conv1" | "conv2", _) => inner.to_string(),
                _ => return None,
            };
            format!("layer{}.{n}.{inner}", stage + 1)
        }
        _ => return None,
    })
}

/// One parameter of the model as PyTorch sees it.
struct Expected {
    /// Our path, PyTorch-named (see [`torch_key`]).
    path: String,
    /// Shape in PyTorch's layout.
    shape: Vec<usize>,
}

/// Every parameter and running statistic of `model`, keyed by its groupface-layout PyTorch key.
fn expected_keys<B: Backend>(
    model: &GroupFace<B>,
    config: &GroupFaceConfig,
) -> BTreeMap<String, Expected> {
    let blocks = &config.backbone.blocks;
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .map(|s| {
            let path = s.full_path();
            let key = torch_key(&path, blocks, Layout::GroupFace)
                .unwrap_or_else(|| panic!("no PyTorch key for `{path}`: extend torch_key"));
            (key, Expected { path, shape: s.shape.to_vec() })
        })
        .collect()
}

/// The tensors of a `.pt`/`.pth`/`.bin` (PyTorch pickle) or `.safetensors` file, keyed as
/// written, less `num_batches_tracked` (Burn's BatchNorm has no counterpart) and a leading
/// `module.` (DDP).
fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, InteropError> {
    let read_error = |message: String| InteropError::Read { path: path.to_path_buf(), message };
    if !path.is_file() {
        return Err(read_error("no such file".into()));
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let all = match extension {
        "safetensors" => SafetensorsStore::from_file(path)
            .get_all_snapshots()
            .cloned()
            .map_err(|e| read_error(format!("not a safetensors file ({e})")))?,
        "pt" | "pth" | "bin" => PytorchStore::from_file(path)
            .get_all_snapshots()
            .cloned()
            .map_err(|e| read_error(format!("not a PyTorch state dict ({e})")))?,
        other => {
            return Err(read_error(format!(
                "unknown extension `{other}`: expected .pt, .pth, .bin (PyTorch) or .safetensors"
            )))
        }
    };
    Ok(all
        .into_iter()
        .filter(|(key, _)| !key.ends_with("num_batches_tracked"))
        .map(|(key, s)| (key.strip_prefix("module.").map(str::to_string).unwrap_or(key), s))
        .collect())
}

/// What [`load_into`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// The checkpoint's key layout.
    pub layout: Layout,
    /// Tensors copied into the model.
    pub loaded: usize,
    /// PyTorch keys of the model left as initialised (the head, and the backbone's `fc` and
    /// `features` when their width differs), sorted.
    pub fresh: Vec<String>,
}

impl LoadReport {
    /// One line for a log: what was loaded and what starts fresh.
    pub fn describe(&self) -> String {
        let layout = match self.layout {
            Layout::Insightface => "insightface IResNet",
            Layout::GroupFace => "groupface",
        };
        let fresh = if self.fresh.is_empty() {
            "nothing starts fresh".to_string()
        } else {
            let mut parts: Vec<&str> = self
                .fresh
                .iter()
                .map(|k| {
                    let k = k.strip_prefix("backbone.").unwrap_or(k);
                    k.split('.').next().unwrap_or(k)
                })
                .collect();
            parts.dedup();
            format!("fresh: {}", parts.join(", "))
        };
        format!("{} tensors from a {layout} checkpoint; {fresh}", self.loaded)
    }
}

fn shape_text(shape: &[usize]) -> String {
    format!("{shape:?}")
}

fn list(lines: &mut Vec<String>, title: &str, items: &[String]) {
    const SHOWN: usize = 25;
    if items.is_empty() {
        return;
    }
    lines.push(format!("  {title} ({}):", items.len()));
    for item in items.iter().take(SHOWN) {
        lines.push(format!("    {item}"));
    }
    if items.len() > SHOWN {
        lines.push(format!("    … and {} more", items.len() - SHOWN));
    }
}

/// Loads a checkpoint into `model` (built from `config`).
///
/// - An insightface IResNet file fills the backbone. Its `fc`/`features` (the 512-d
///   embedding layer) are loaded when their shapes match ours (the baseline with the same
///   width) and otherwise start fresh together with the GroupFace head: the paper's recipe of
///   a softmax-pretrained trunk.
/// - A groupface-layout file must match the whole model, head included (a file without a head
///   fills a GroupFace model like an insightface file).
///
/// Every other difference (missing trunk keys, unexpected keys, wrong shapes, a head of
/// another size) is an [`InteropError::Mismatch`] listing each offending key with its shapes;
/// the model is then untouched.
pub fn load_into<B: Backend>(
    model: GroupFace<B>,
    config: &GroupFaceConfig,
    path: &Path,
) -> Result<(GroupFace<B>, LoadReport), InteropError> {
    let (layout, source) = read_in_groupface_layout(path)?;
    let expected = expected_keys(&model, config);
    let fresh = fresh_keys(&expected, &source);
    check_fit(path, layout, &expected, &source, &fresh)?;
    let snapshots: Vec<TensorSnapshot> = expected
        .iter()
        .filter(|(key, _)| fresh.binary_search(key).is_err())
        .map(|(key, e)| as_f32_snapshot(&source[key], &e.path))
        .collect();
    let count = snapshots.len();
    let mut model = model;
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if !result.errors.is_empty() || result.applied.len() != count {
        return Err(InteropError::Read {
            path: path.to_path_buf(),
            message: format!("applying the checked tensors failed:\n{result}"),
        });
    }
    Ok((model, LoadReport { layout, loaded: count, fresh }))
}

/// The checkpoint at `path` and its layout, keyed in the groupface layout whatever the file's.
fn read_in_groupface_layout(
    path: &Path,
) -> Result<(Layout, BTreeMap<String, TensorSnapshot>), InteropError> {
    let source = read_checkpoint(path)?;
    let layout = if source.keys().any(|k| k.starts_with("backbone.") || k.starts_with("head.")) {
        Layout::GroupFace
    } else {
        Layout::Insightface
    };
    let source = match layout {
        Layout::GroupFace => source,
        Layout::Insightface => {
            source.into_iter().map(|(k, s)| (format!("backbone.{k}"), s)).collect()
        }
    };
    Ok((layout, source))
}

/// The model's keys that `source` leaves at their initial values on purpose, sorted.
fn fresh_keys(
    expected: &BTreeMap<String, Expected>,
    source: &BTreeMap<String, TensorSnapshot>,
) -> Vec<String> {
    let shape_of = |key: &str| source.get(key).map(|s| s.shape.to_vec());
    let is_neck = |k: &str| k.starts_with("backbone.fc.") || k.starts_with("backbone.features.");
    let source_has_head = source.keys().any(|k| k.starts_with("head."));
    let neck_fits = expected
        .iter()
        .filter(|(k, _)| is_neck(k))
        .all(|(k, e)| shape_of(k).as_deref() == Some(e.shape.as_slice()));
    let head_target = expected.keys().any(|k| k.starts_with("head."));
    // A trunk-only file (no head) pretrains the trunk: the head, and a neck of another width
    // before a head, are trained from scratch rather than refused.
    let fresh = |k: &str| {
        (k.starts_with("head.") && !source_has_head)
            || (is_neck(k) && !neck_fits && head_target && !source_has_head)
    };
    // `expected` is a BTreeMap, so the keys come sorted and `load_into` can binary-search them.
    expected.keys().filter(|k| fresh(k)).cloned().collect()
}

/// Checks every key and shape (`fresh` aside) before anything is copied: no partial loads.
fn check_fit(
    path: &Path,
    layout: Layout,
    expected: &BTreeMap<String, Expected>,
    source: &BTreeMap<String, TensorSnapshot>,
    fresh: &[String],
) -> Result<(), InteropError> {
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for (key, e) in expected {
        if fresh.binary_search(key).is_ok() {
            continue;
        }
        match source.get(key).map(|s| s.shape.to_vec()) {
            None => missing.push(format!("{key} {}", shape_text(&e.shape))),
            Some(shape) if shape != e.shape => wrong.push(format!(
                "{key}: file {}, model {}",
                shape_text(&shape),
                shape_text(&e.shape)
            )),
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = source
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .map(|(k, s)| format!("{k} {}", shape_text(&s.shape)))
        .collect();
    if missing.is_empty() && unexpected.is_empty() && wrong.is_empty() {
        return Ok(());
    }
    Err(mismatch_error(path, layout, &missing, &unexpected, &wrong))
}

/// The [`InteropError::Mismatch`] listing what [`check_fit`] found.
fn mismatch_error(
    path: &Path,
    layout: Layout,
    missing: &[String],
    unexpected: &[String],
    wrong: &[String],
) -> InteropError {
    let mut lines = Vec::new();
    list(&mut lines, "missing from the file", missing);
    list(&mut lines, "in the file but not in the model", unexpected);
    list(&mut lines, "wrong shape", wrong);
    let hint = if layout == Layout::Insightface && !missing.is_empty() && !wrong.is_empty() {
        " (another depth or width? check backbone= against the checkpoint)"
    } else {
        ""
    };
    InteropError::Mismatch {
        path: path.to_path_buf(),
        summary: format!(
            "{} missing, {} unexpected, {} wrong shape{hint}",
            missing.len(),
            unexpected.len(),
            wrong.len()
        ),
        details: lines.join("\n"),
    }
}

/// The checked tensor `s` of the file, to be applied at our (PyTorch-named) `path`.
fn as_f32_snapshot(s: &TensorSnapshot, path: &str) -> TensorSnapshot {
    let data = s.clone_data_fn();
    // Half-precision or double checkpoints become f32, the model's precision.
    let as_f32: Rc<dyn Fn() -> Result<TensorData, burn_store::TensorSnapshotError>> =
        Rc::new(move || data().map(|d| d.convert::<f32>()));
    TensorSnapshot::from_closure(
        as_f32,
        DType::F32,
        s.shape.clone(),
        path.split('.').map(str::to_string).collect(),
        Vec::new(),
        ParamId::new(),
    )
}

/// Writes `model` as safetensors with PyTorch keys and layouts (Linear weights `[out, in]`,
/// BatchNorm `weight`/`bias`, running statistics included; no `num_batches_tracked`). The
/// baseline is written in insightface's layout, so arcface_torch's `iresnet` loads it with
/// `strict=False` (only `num_batches_tracked` absent); GroupFace in the groupface layout. The
/// model config is stored as metadata (`groupface_config`). Written atomically.
pub fn export_safetensors<B: Backend>(
    model: &GroupFace<B>,
    config: &GroupFaceConfig,
    path: &Path,
) -> Result<usize, InteropError> {
    let write_error = |message: String| InteropError::Write { path: path.to_path_buf(), message };
    let layout = if model.head.is_some() { Layout::GroupFace } else { Layout::Insightface };
    let blocks = &config.backbone.blocks;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for s in model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), false) {
        let ours = s.full_path();
        let key = torch_key(&ours, blocks, layout)
            .ok_or_else(|| write_error(format!("no PyTorch key for `{ours}`")))?;
        let data = s.to_data().map_err(|e| write_error(format!("{ours}: {e:?}")))?;
        let data = data.convert::<f32>();
        let values = data.as_slice::<f32>().map_err(|e| write_error(format!("{ours}: {e:?}")))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((key, s.shape.to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(key, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (key.clone(), view))
                .map_err(|e| write_error(format!("{key}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let config_json = serde_json::to_string(config).map_err(|e| write_error(e.to_string()))?;
    let metadata: HashMap<String, String> =
        [("format".to_string(), "pt".to_string()), ("groupface_config".to_string(), config_json)]
            .into();
    let mut bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| write_error(e.to_string()))?;
    sort_header(&mut bytes).map_err(write_error)?;
    crate::util::fs::write_atomically(path, &bytes).map_err(write_error)?;
    Ok(tensors.len())
}

/// Rewrites a safetensors file's JSON header with its keys sorted, in place.
///
/// safetensors serialises the metadata from a `HashMap`, whose order changes from one process
/// to the next, so two exports of the same weights would differ in their bytes and `cmp` could
/// not tell that two runs ended with the same model. The same JSON with sorted keys (serde_json's
/// map is ordered) has the same length; the header keeps its length and its space padding, so
/// the data offsets stay valid.
fn sort_header(bytes: &mut [u8]) -> Result<(), String> {
    let bad = |what: &str| format!("safetensors header: {what}");
    let length: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or(bad("too short"))?;
    let end = usize::try_from(u64::from_le_bytes(length))
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
        .ok_or(bad("length past the end"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| bad(&e.to_string()))?;
    let sorted = serde_json::to_vec(&header).map_err(|e| bad(&e.to_string()))?;
    if 8 + sorted.len() > end {
        return Err(bad("sorted header longer than the original"));
    }
    bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
    bytes[8 + sorted.len()..end].fill(b' ');
    Ok(())
}
