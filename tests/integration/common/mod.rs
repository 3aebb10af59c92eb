//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use groupface::backend::BackendKind;
use groupface::data::synth::SynthConfig;
use groupface::evaluate::held_out::SynthEvalConfig;
use groupface::model::GroupFaceConfig;
use groupface::objective::loss::{CriterionConfig, MarginSoftmaxConfig};
use groupface::train::config::TrainConfig;
use groupface::train::run::TrainRun;
use groupface::train::schedule::ScheduleKind;

/// Runs a generic test body on every CPU backend compiled in, so both ndarray and flex are
/// exercised by `cargo test`.
#[macro_export]
macro_rules! on_cpu_backends {
    ($body:ident) => {{
        #[cfg(feature = "flex")]
        $body::<burn::backend::Autodiff<burn::backend::Flex<f32>>>(
            &burn::backend::flex::FlexDevice,
        );
        #[cfg(feature = "ndarray")]
        $body::<burn::backend::Autodiff<burn::backend::NdArray<f32>>>(
            &burn::backend::ndarray::NdArrayDevice::Cpu,
        );
    }};
}

/// A tensor from rows of f32.
pub fn matrix<B: Backend>(rows: &[&[f32]], device: &B::Device) -> Tensor<B, 2> {
    let cols = rows[0].len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

/// An Int tensor from indices.
pub fn ints<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// The values of a tensor, as f32.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Asserts two slices agree within `tol` (absolute), naming the first bad index.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "{what}[{i}]: got {a}, expected {e} (tol {tol})");
    }
}

/// A deterministic batch of images in [-1, 1].
pub fn images<B: Backend>(batch: usize, side: usize, device: &B::Device) -> Tensor<B, 4> {
    let n = batch * 3 * side * side;
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let x = (i as u64).wrapping_mul(2654435761) % 1000;
            x as f32 / 500.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, 3, side, side]), device)
}

/// A fresh directory under the system temporary directory, unique to this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("groupface-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The default CPU backend of this build.
pub fn backend() -> BackendKind {
    BackendKind::default_cpu().expect("a CPU backend is compiled")
}

/// Held-out set of 4 identities x 3 images: C(12, 2) = 66 pairs, 4·C(3, 2) = 12 positive.
pub fn small_eval() -> SynthEvalConfig {
    SynthEvalConfig::new().with_identities(4).with_images_per_identity(3).with_pairs(20)
}

/// Tiny model, 8 identities x 6 images (4 train, 2 valid), 2 epochs, a small held-out set.
pub fn tiny_config(groups: usize) -> TrainConfig {
    let model = GroupFaceConfig::tiny(groups);
    let data =
        SynthConfig { identities: 8, images_per_identity: 6, side: 32, ..SynthConfig::default() };
    let criterion = CriterionConfig::new(MarginSoftmaxConfig::new(8, model.output_width()));
    TrainConfig::new(model, criterion, data)
        .with_epochs(2)
        .with_batch(16)
        .with_schedule(ScheduleKind::Linear)
        .with_warmup(0.5)
        .with_eval(small_eval())
}

/// Every tensor of a run's `model.safetensors` as `f32` values, sorted by name (so two runs
/// compare tensor by tensor).
pub fn run_tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let path = run.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            (name, values.collect())
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// A run of `config` into `out` as the tests train it: no dashboard, not resumed, one
/// process.
pub fn quiet_run(config: TrainConfig, out: PathBuf) -> TrainRun {
    TrainRun { config, out, quiet: true, resume: false, node: None }
}

/// Kill moments that repeat from run to run (xorshift64*), so a failing kill can be replayed.
pub struct Moments(u64);

impl Moments {
    pub fn new(seed: u64) -> Self {
        Moments(seed.max(1))
    }

    /// The next draw, uniform in `[0, 1)`.
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The temporary files (`.NAME.tmp-PID-N[.EXT]`, `groupface::util::fs`) in `dir`.
pub fn temporaries(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
                .filter(|name| name.starts_with('.') && name.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// When a kill test kills a run.
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// This long after the start.
    After(std::time::Duration),
    /// The moment a temporary file appears in `checkpoint/` once this many checkpoints are
    /// complete: the kill lands inside the write of checkpoint `n + 1`.
    CheckpointWrite(usize),
}

/// How a kill went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// The run had ended before the kill came.
    Finished,
    /// Killed; `true` when a temporary was on disk in `checkpoint/` once the process was gone
    /// (the kill landed inside a checkpoint write).
    Killed(bool),
}

/// Kills `child` (a `train` writing into `out`) with SIGKILL at `at`, giving up after
/// `limit`.
pub fn kill_at(
    child: &mut std::process::Child,
    out: &Path,
    at: KillAt,
    limit: std::time::Duration,
) -> Killed {
    let started = std::time::Instant::now();
    let checkpoint = out.join("checkpoint");
    loop {
        if child.try_wait().unwrap().is_some() {
            return Killed::Finished;
        }
        let now = match at {
            KillAt::After(delay) => started.elapsed() >= delay,
            KillAt::CheckpointWrite(n) => {
                !temporaries(&checkpoint).is_empty()
                    && groupface::train::run_dir::complete_checkpoints(out).len() >= n
            }
        };
        if now || started.elapsed() > limit {
            break;
        }
        let pause = match at {
            KillAt::After(_) => 2_000,
            KillAt::CheckpointWrite(_) => 100,
        };
        std::thread::sleep(std::time::Duration::from_micros(pause));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    if status.success() {
        return Killed::Finished;
    }
    Killed::Killed(!temporaries(&checkpoint).is_empty())
}

/// Every tensor of a run's `model.safetensors`, as raw bytes sorted by name: two runs equal to
/// the bit have equal lists (BatchNorm statistics included; the file's header order may
/// differ).
pub fn run_bytes(run: &Path) -> Vec<(String, Vec<u8>)> {
    let path = run.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<(String, Vec<u8>)> =
        file.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect();
    all.sort();
    all
}

/// A run resumed after a kill ends as the uninterrupted run `whole` did: the same weights to
/// the bit, the same held-out report, and no temporary left behind.
pub fn assert_resumed_like(whole: &Path, run: &Path, what: &str) {
    let (a, b) = (run_bytes(whole), run_bytes(run));
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{what}: {name} differs from the uninterrupted run");
    }
    let report = |run: &Path| std::fs::read_to_string(run.join("report.json")).unwrap();
    assert_eq!(report(whole), report(run), "{what}: report.json");
    for dir in [run.to_path_buf(), run.join("checkpoint")] {
        assert!(temporaries(&dir).is_empty(), "{what}: left {:?}", temporaries(&dir));
    }
}
