//! The one place where a backend is chosen.
//!
//! Library code is generic over `B: Backend` (`B: ConvBackend` where the model runs, training
//! over `B: TrainBackend`, see [`crate::backend::conv`]). A binary
//! reads the `backend=` key, and [`run`] monomorphises a [`BackendJob`] for that backend. Only
//! the backends compiled in (cargo features `ndarray`, `flex`, `wgpu`, `cuda`) are accepted.
//! Devices are always passed explicitly, so a build with `cuda` compiled in never moves a CPU
//! run onto the GPU by default.

pub mod conv;

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::backend::conv::TrainBackend;

/// A backend that can be selected with `backend=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-ndarray, the reference CPU backend.
    Ndarray,
    /// burn-flex, the SIMD + rayon pure-Rust CPU backend.
    Flex,
    /// burn-wgpu (WGSL through wgpu: Vulkan, Metal, DX12, or a software Vulkan device).
    Wgpu,
    /// burn-cuda (NVIDIA GPUs).
    Cuda,
}

impl BackendKind {
    /// Every backend, compiled in or not.
    pub const ALL: [BackendKind; 4] = [Self::Ndarray, Self::Flex, Self::Wgpu, Self::Cuda];

    /// Whether this build has the backend.
    pub fn compiled(self) -> bool {
        match self {
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Flex => cfg!(feature = "flex"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends of this build, `|`-separated, for `--help` and errors.
    pub fn accepted() -> String {
        Self::ALL
            .iter()
            .filter(|k| k.compiled())
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// The default CPU backend: flex where compiled (measured faster than ndarray on our
    /// models, see the README), else ndarray, else whatever this build has.
    pub fn default_cpu() -> Option<Self> {
        [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Cuda].into_iter().find(|k| k.compiled())
    }

    /// Whether the backend runs on the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Self::Ndarray | Self::Flex)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ndarray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let kind = match s {
            "ndarray" => Self::Ndarray,
            "flex" => Self::Flex,
            "wgpu" => Self::Wgpu,
            "cuda" => Self::Cuda,
            // Says what is accepted, for `cli::backend`'s "expected ..." to complete.
            _ => return Err(format!("one of {}", Self::accepted())),
        };
        if !kind.compiled() {
            return Err(format!(
                "a backend compiled into this build, one of {} (`{s}` needs a rebuild with \
                 --features {s})",
                Self::accepted()
            ));
        }
        Ok(kind)
    }
}

/// The help text of every binary's `backend=` key.
pub const DEFAULT_BACKEND_HELP: &str =
    "backend (default: flex, else ndarray); a seeded run repeats to the bit on flex, not on ndarray";

/// A computation to run on whichever backend is selected.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on backend `B` and device `device`.
    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output;
}

/// The autodiff ndarray backend.
#[cfg(feature = "ndarray")]
pub type NdarrayAutodiff = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
/// The autodiff flex backend.
#[cfg(feature = "flex")]
pub type FlexAutodiff = burn::backend::Autodiff<burn::backend::Flex<f32>>;
/// The autodiff wgpu backend.
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<burn::backend::Wgpu<f32, i32>>;
/// The autodiff CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<burn::backend::Cuda<f32, i32>>;

/// The floating-point type of every float tensor a job creates, parameters included.
///
/// `bf16` is Burn 0.21's device-wide default dtype (`set_default_dtypes`), so the backend types
/// stay the f32 ones and nothing is compiled twice. It is pure bfloat16, not PyTorch's autocast:
/// parameters, gradients and optimiser state are bf16 too, which is right for timing a step and
/// wrong for a long training run (SGD updates below bf16's resolution are lost). Only `bench`
/// takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats, the backends' own default.
    F32,
    /// bfloat16 everywhere.
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("expected f32|bf16, found `{s}`")),
        }
    }
}

/// A job run after the device's default float type is set and, on a GPU, after the device
/// has answered.
struct Prepared<J> {
    job: J,
    precision: Precision,
    kind: BackendKind,
    index: usize,
}

impl<J: BackendJob> BackendJob for Prepared<J> {
    type Output = Result<J::Output, String>;

    fn run<B: TrainBackend>(self, device: B::Device) -> Self::Output {
        use burn::tensor::{DType, Element};
        if self.precision == Precision::Bf16 {
            let int = <B::IntElem as Element>::dtype();
            if let Err(err) = burn::tensor::set_default_dtypes::<B>(&device, DType::BF16, int) {
                // A second job in the same process finds the device already set; that is
                // fine when it was set to bf16 (the settings are fixed once any tensor exists).
                let now = burn::tensor::get_device_settings::<B>(&device).float_dtype;
                if DType::from(now) != DType::BF16 {
                    return Err(format!("precision=bf16: {err}"));
                }
            }
        }
        if !self.kind.is_cpu() {
            probe::<B>(&device, self.kind, self.index)?;
        }
        Ok(self.job.run::<B>(device))
    }
}

/// Creates one tensor and reads it back. A GPU backend that cannot start panics in its
/// server thread (burn 0.21 and CubeCL unwrap the driver's errors), so without this a job
/// would die with a backtrace; with it the binary prints what to check and exits.
fn probe<B: AutodiffBackend>(
    device: &B::Device,
    kind: BackendKind,
    index: usize,
) -> Result<(), String> {
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::from_floats([1.0], device).into_data()
    }));
    let payload = match read {
        Ok(_) => return Ok(()),
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    let hint = match kind {
        BackendKind::Cuda => {
            "check that the NVIDIA driver is loaded (nvidia-smi), that the GPU index exists, \
             that CUDA's headers and NVRTC are installed (CUDA_PATH if not /usr/local/cuda), and \
             that no `stubs` folder of CUDA is on LD_LIBRARY_PATH (CUDA_ERROR_STUB_LIBRARY)"
        }
        _ => {
            "check that wgpu sees an adapter (vulkaninfo; without a GPU, Mesa's lavapipe from \
             mesa-vulkan-drivers)"
        }
    };
    let which = if kind == BackendKind::Cuda { format!(" on GPU {index}") } else { String::new() };
    Err(format!("backend `{kind}` could not start{which} ({message}; see above): {hint}"))
}

/// [`run`] with every float tensor of the job in `precision` (see [`Precision`]).
pub fn run_with_precision<J: BackendJob>(
    kind: BackendKind,
    precision: Precision,
    index: usize,
    job: J,
) -> Result<J::Output, String> {
    dispatch(kind, index, Prepared { job, precision, kind, index })?
}

/// Runs `job` on `kind`, on device `index` for GPU backends (ignored on the CPU). On a GPU the
/// device is asked for one tensor first, so one that cannot start is an error, not a panic.
pub fn run<J: BackendJob>(kind: BackendKind, index: usize, job: J) -> Result<J::Output, String> {
    run_with_precision(kind, Precision::F32, index, job)
}

fn dispatch<J: BackendJob>(kind: BackendKind, index: usize, job: J) -> Result<J::Output, String> {
    let _ = (&job, index);
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => {
            Ok(job.run::<NdarrayAutodiff>(burn::backend::ndarray::NdArrayDevice::Cpu))
        }
        #[cfg(feature = "flex")]
        BackendKind::Flex => Ok(job.run::<FlexAutodiff>(burn::backend::flex::FlexDevice)),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            Ok(job.run::<WgpuAutodiff>(burn::backend::wgpu::WgpuDevice::DefaultDevice))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            Ok(job.run::<CudaAutodiff>(burn::backend::cuda::CudaDevice::new(index)))
        }
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "backend `{other}` is not compiled into this build; this build has {}",
            BackendKind::accepted()
        )),
    }
}
