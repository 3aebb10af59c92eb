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

/// The floating-point types of a run (`precision=`).
///
/// `bf16` and `f16` are mixed precision, as PyTorch's autocast and arcface_torch's `fp16`
/// run it: parameters, gradients and the optimiser's state stay f32; each step casts the
/// images to the low type, so the backbone's convolutions, BatchNorm affines and activations
/// compute in it (every layer casts its f32 weights to its input's type; BatchNorm takes its
/// statistics in f32), and the trunk's output is cast back to f32 before the FC, as
/// arcface_torch's IResNet does (`self.fc(x.float())`), so the embedding, the group decision
/// network and the loss are f32. `f16` scales the loss (`LossScaler` of the training step):
/// f16's smallest normal number, 6e-5, is above many gradients.
///
/// `bf16-pure` is Burn 0.21's device-wide default dtype (`set_default_dtypes`): parameters,
/// gradients and optimiser state are bf16 too. Right for timing a step, wrong for a long run
/// (SGD updates below bf16's resolution are lost); only `bench` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Precision {
    /// 32-bit floats, the backends' own default.
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// Mixed precision: the backbone computes in bfloat16.
    #[serde(rename = "bf16")]
    Bf16,
    /// Mixed precision: the backbone computes in IEEE half, with dynamic loss scaling.
    #[serde(rename = "f16")]
    F16,
    /// bfloat16 everywhere, parameters included (`bench` only).
    #[serde(rename = "bf16-pure")]
    Bf16Pure,
}

impl Precision {
    /// The type the backbone computes in under mixed precision; `None` for `f32` and
    /// `bf16-pure` (whose tensors are all of one type already).
    pub fn compute_dtype(self) -> Option<burn::tensor::FloatDType> {
        use burn::tensor::FloatDType;
        match self {
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
            Self::F32 | Self::Bf16Pure => None,
        }
    }

    /// Whether training scales the loss (f16's narrow exponent range).
    pub fn scales_loss(self) -> bool {
        self == Self::F16
    }

    /// The dtype a device must support for this precision, if not f32.
    pub fn low_dtype(self) -> Option<burn::tensor::DType> {
        use burn::tensor::DType;
        match self {
            Self::F32 => None,
            Self::Bf16 | Self::Bf16Pure => Some(DType::BF16),
            Self::F16 => Some(DType::F16),
        }
    }

    /// Refuses a precision that the device of backend `B` cannot compute in (ndarray has f32
    /// and f64 only; WGSL has no bfloat16), naming the backend.
    pub fn check_supported<B: burn::tensor::backend::Backend>(
        self,
        device: &B::Device,
        kind: BackendKind,
    ) -> Result<(), String> {
        match self.low_dtype() {
            Some(dtype) if !B::supports_dtype(device, dtype) => Err(format!(
                "precision={self}: backend `{kind}` cannot compute in {dtype:?} on this device \
                 (flex and cuda can; ndarray has f32 only); use precision=f32 or another backend"
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Bf16Pure => "bf16-pure",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            "bf16-pure" => Ok(Self::Bf16Pure),
            _ => Err(format!("expected f32|bf16|f16|bf16-pure, found `{s}`")),
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
        if self.precision == Precision::Bf16Pure {
            let int = <B::IntElem as Element>::dtype();
            if let Err(err) = burn::tensor::set_default_dtypes::<B>(&device, DType::BF16, int) {
                // A second job in the same process finds the device already set; that is
                // fine when it was set to bf16 (the settings are fixed once any tensor exists).
                let now = burn::tensor::get_device_settings::<B>(&device).float_dtype;
                if DType::from(now) != DType::BF16 {
                    return Err(format!("precision=bf16-pure: {err}"));
                }
            }
        }
        if !self.kind.is_cpu() {
            probe::<B>(&device, self.kind, self.index)?;
        }
        // After the probe: asking a GPU what it supports starts it.
        self.precision.check_supported::<B>(&device, self.kind)?;
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

/// [`run`] after checking that the device computes in `precision`'s low type, with the
/// device's default float type set to bf16 for `bf16-pure` (see [`Precision`]; mixed precision
/// is the job's own, through the model's casts).
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
