//! PReLU without a broadcast that burn-flex walks element by element.
//!
//! Burn 0.21 computes PReLU as `mask_where(x < 0, x * alpha)` with `alpha` reshaped to
//! `[1, C, 1, ...]`; under autodiff the product is a broadcast multiply, which burn-flex runs
//! through its strided fallback (see [`crate::model::norm`] for the pattern it does accelerate). Here
//! `PReLU(x) = max(x, 0) + alpha * min(x, 0)`, which is the same function, with `alpha`
//! materialised as `[N, C, 1]` against `x` viewed as `[N, C, R]`. The record is burn-nn's
//! (`alpha`, `alpha_value`) and the struct has its name, as for BatchNorm.

use burn::module::{Initializer, Param};
use burn::prelude::*;

use crate::model::norm::per_sample;

/// Configuration of a [`PRelu`]: one slope per channel, or one for all.
#[derive(Config, Debug)]
pub struct PReluConfig {
    /// Slopes: 1 (shared) or the channel count C.
    #[config(default = "1")]
    pub num_parameters: usize,
    /// Initial slope (PyTorch's and insightface's 0.25).
    #[config(default = "0.25")]
    pub alpha: f64,
}

impl PReluConfig {
    /// Every slope at `alpha`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PRelu<B> {
        PRelu {
            alpha: Initializer::Constant { value: self.alpha }.init([self.num_parameters], device),
            alpha_value: self.alpha,
        }
    }
}

/// Parametric ReLU over dimension 1: `x` where `x >= 0`, `alpha_c * x` elsewhere.
#[derive(Module, Debug)]
pub struct PRelu<B: Backend> {
    /// Slopes, `[C]` or `[1]`.
    pub alpha: Param<Tensor<B, 1>>,
    /// The initial slope, kept as burn-nn keeps it.
    pub alpha_value: f64,
}

impl<B: Backend> PRelu<B> {
    /// `[N, C, ...] -> [N, C, ...]`.
    ///
    /// # Panics
    /// If `D < 2`, or there is more than one slope and their count is not C: programming
    /// errors (the configs build matching widths).
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        assert!(D >= 2, "PRelu needs [N, C, ...], got a {D}-D tensor");
        let dims = input.dims();
        let slopes = self.alpha.dims()[0];
        let channels = if slopes == 1 { 1 } else { dims[1] };
        assert_eq!(slopes, channels, "PRelu has {slopes} slopes for {} channels", dims[1]);
        let batch = dims[0];
        let rest = dims.iter().product::<usize>() / (batch * channels).max(1);
        let x = input.reshape([batch, channels, rest]);
        // The slopes in the input's type (mixed precision keeps them f32).
        let alpha = self.alpha.val().cast(x.dtype());
        let alpha = per_sample(alpha.reshape([1, channels, 1]), batch);
        x.clone().clamp_min(0.0).add(x.clamp_max(0.0).mul(alpha)).reshape(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray<f32>>;

    /// Relative as well as absolute: the slopes' gradient sums N·H·W products (values near
    /// 10), and burn-nn sums them in another order, so the two differ by an f32 ulp or two
    /// (1e-6 at 8.9 failed CI once). Which values are drawn depends on tests running beside
    /// this one, because the backend's seed is process-wide.
    fn close<const D: usize>(a: Tensor<impl Backend, D>, b: Tensor<impl Backend, D>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }

    /// Outputs and the gradients of a weighted sum with respect to the input and the slopes
    /// equal burn-nn's, per channel and shared, on `[N, C, H, W]` and `[N, C]`.
    #[test]
    fn matches_burn_nn() {
        let device = Default::default();
        <A as Backend>::seed(&device, 3);
        for (shape, slopes) in [([4, 3, 5, 6], 3), ([4, 3, 5, 6], 1), ([8, 5, 1, 1], 5)] {
            let alpha: Tensor<A, 1> =
                Tensor::random([slopes], Distribution::Uniform(-0.5, 0.5), &device);
            let ours = PRelu {
                alpha: Param::from_tensor(alpha.clone().require_grad()),
                alpha_value: 0.25,
            };
            let mut theirs =
                burn::nn::PReluConfig::new().with_num_parameters(slopes).init::<A>(&device);
            theirs.alpha = Param::from_tensor(alpha.require_grad());
            let x: Tensor<A, 4> = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let w: Tensor<A, 4> = Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let flat = shape[2] == 1;
            let x_ours = x.clone().require_grad();
            let x_theirs = x.require_grad();
            let (y_ours, y_theirs) = if flat {
                let n = [shape[0], shape[1]];
                (
                    ours.forward(x_ours.clone().reshape(n)).reshape(shape),
                    theirs.forward(x_theirs.clone().reshape(n)).reshape(shape),
                )
            } else {
                (ours.forward(x_ours.clone()), theirs.forward(x_theirs.clone()))
            };
            let g_ours = y_ours.clone().mul(w.clone()).sum().backward();
            let g_theirs = y_theirs.clone().mul(w).sum().backward();
            close(y_ours.inner(), y_theirs.inner());
            close(x_ours.grad(&g_ours).unwrap(), x_theirs.grad(&g_theirs).unwrap());
            close(ours.alpha.grad(&g_ours).unwrap(), theirs.alpha.grad(&g_theirs).unwrap());
        }
    }

    /// By hand: slope 0.25 on [-2, -0.5, 0, 3] gives [-0.5, -0.125, 0, 3].
    #[test]
    fn hand_computed_values() {
        let device = Default::default();
        let prelu = PReluConfig::new().init::<NdArray<f32>>(&device);
        let x = Tensor::<NdArray<f32>, 2>::from_floats([[-2.0, -0.5], [0.0, 3.0]], &device);
        let y = prelu.forward(x);
        close(y, Tensor::<NdArray<f32>, 2>::from_floats([[-0.5, -0.125], [0.0, 3.0]], &device));
    }
}
