//! Batch normalisation without a transposed copy of its input.
//!
//! burn-nn 0.21's `BatchNorm` computes each statistic as
//! `x.swap_dims(0, 1).reshape([C, N * H * W]).mean_dim(1)`: the reshape of a transposed
//! tensor makes a contiguous copy, twice per layer in the forward pass and again in the
//! backward pass. On burn-flex that copy walks the tensor one element at a time (its
//! `copy_contiguous` falls back to a strided iterator for 3-D layouts), which the book's
//! profile found to be the largest share of a CPU training step. Here `[N, C, ...]` is viewed
//! as `[N, C, R]` (a free reshape of a contiguous tensor) and reduced over its last axis, then
//! over its first; the normalisation is folded into one multiply and one add.
//!
//! The arithmetic is PyTorch's, which is burn-nn's in all but one place: batch statistics with
//! the biased variance in training, the running averages
//! `(1 - momentum) * running + momentum * batch`, running statistics at inference. The one
//! place is the running variance: PyTorch (and so insightface's arcface_torch) averages the
//! unbiased batch variance, `n / (n - 1)` times the biased one over the `n = N * H * W` values
//! of a channel; burn-nn averages the biased one. We follow PyTorch, because weights move
//! between the two (`interop`) and the running variance is what inference divides by; the
//! difference matters where `n` is small, as in the embedding's BatchNorm1d (`n` = the batch).
//! The record is burn-nn's, field for field (`gamma`, `beta`, `running_mean`, `running_var`),
//! and the struct has its name, so saved runs load and burn-store's PyTorch adapters map
//! `weight`/`bias` to `gamma`/`beta` as before. `tests` compares both on the same weights.

use burn::module::{Initializer, Param, RunningState};
use burn::prelude::*;

/// Configuration of a [`BatchNorm`] over `num_features` channels (dimension 1).
#[derive(Config, Debug)]
pub struct BatchNormConfig {
    /// Channels C.
    pub num_features: usize,
    /// Added to the variance before its square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the batch statistic in the running averages.
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BatchNormConfig {
    /// Unit scale, zero shift, running mean 0 and running variance 1 (burn-nn's and PyTorch's).
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm<B> {
        BatchNorm {
            gamma: Initializer::Ones.init([self.num_features], device),
            beta: Initializer::Zeros.init([self.num_features], device),
            running_mean: RunningState::new(Tensor::zeros([self.num_features], device)),
            running_var: RunningState::new(Tensor::ones([self.num_features], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

/// Batch normalisation over dimension 1 of a `[N, C, ...]` tensor (BatchNorm1d on `[N, C]`,
/// BatchNorm2d on `[N, C, H, W]`).
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// Scale, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Running mean, `[C]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running variance (of the unbiased batch variances, as PyTorch's), `[C]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of the batch statistic in the running averages.
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub epsilon: f64,
}

// ANCHOR: forward
impl<B: Backend> BatchNorm<B> {
    /// `[N, C, ...] -> [N, C, ...]`. Batch statistics when autodiff is on (training), the
    /// running statistics otherwise (a model from `.valid()`).
    ///
    /// # Panics
    /// If `D < 2` (there is no channel dimension): a programming error, not a data error.
    pub fn forward<const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        assert!(D >= 2, "BatchNorm needs [N, C, ...], got a {D}-D tensor");
        let dims = input.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let rest: usize = dims[2..].iter().product();
        // Under mixed precision the statistics are taken in the parameters' f32 (a bf16 sum of
        // a whole feature map loses the mean), and the output returns to the input's type.
        let dtype = input.dtype();
        let x = input.reshape([batch, channels, rest]).cast(self.gamma.val().dtype());
        let (scale, shift) =
            if B::ad_enabled(&x.device()) { self.batch_affine(&x) } else { self.running_affine() };
        // One multiply and one add over the whole tensor, against [N, C, 1] operands.
        x.mul(per_sample(scale, batch)).add(per_sample(shift, batch)).reshape(dims).cast(dtype)
    }

    /// `[C]` scale and shift of the running statistics: `y = x * scale + shift`.
    fn running_affine(&self) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let channels = self.gamma.dims()[0];
        let scale = self.gamma.val().div(self.running_var.value().add_scalar(self.epsilon).sqrt());
        let shift = self.beta.val().sub(self.running_mean.value().mul(scale.clone()));
        (scale.reshape([1, channels, 1]), shift.reshape([1, channels, 1]))
    }

    /// Batch statistics of `x` (`[N, C, R]`) as a scale and shift, and the running averages
    /// updated. The shift carries the mean, so the gradient flows through it as through
    /// `(x - mean) / std * gamma + beta`.
    fn batch_affine(&self, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [batch, channels, rest] = x.dims();
        // Last axis first: contiguous rows; then the short first axis of an [N, C, 1] tensor.
        let mean = x.clone().mean_dim(2).mean_dim(0);
        let var = x.clone().sub(per_sample(mean.clone(), batch)).square().mean_dim(2).mean_dim(0);

        let momentum = self.momentum;
        let update = |running: &RunningState<Tensor<B, 1>>, batch: &Tensor<B, 3>| {
            let old = running.value_sync().to_device(&x.device());
            let new = old
                .mul_scalar(1.0 - momentum)
                .add(batch.clone().detach().reshape([channels]).mul_scalar(momentum));
            running.update(new.detach());
        };
        update(&self.running_mean, &mean);
        // PyTorch's Bessel correction. One value per channel (n = 1) has no unbiased variance
        // (PyTorch refuses such a batch in training); its biased one, 0, is kept instead.
        let n = (batch * rest) as f64;
        let bessel = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        update(&self.running_var, &var.clone().mul_scalar(bessel));

        let scale =
            self.gamma.val().reshape([1, channels, 1]).div(var.add_scalar(self.epsilon).sqrt());
        let shift = self.beta.val().reshape([1, channels, 1]).sub(mean.mul(scale.clone()));
        (scale, shift)
    }
}

/// `[1, C, 1] -> [N, C, 1]`, materialised. flex 0.21 runs `[N, C, R] op [N, C, 1]` as one SIMD
/// scalar per row, but a `[1, C, 1]` operand (stride 0 on N after broadcasting) matches none of
/// its fast paths and is walked element by element, 30 to 50 times slower. The copy is N * C
/// elements; on the GPU backends it costs nothing that shows.
pub(crate) fn per_sample<B: Backend>(channel: Tensor<B, 3>, batch: usize) -> Tensor<B, 3> {
    channel.repeat_dim(0, batch)
}
// ANCHOR_END: forward

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::tensor::{Distribution, Tolerance};

    type B = NdArray<f32>;
    type A = Autodiff<B>;

    /// burn-nn's BatchNorm with the same weights and running statistics as `ours`.
    fn reference(ours: &BatchNorm<A>) -> burn::nn::BatchNorm<A> {
        let mut theirs = burn::nn::BatchNormConfig::new(ours.gamma.dims()[0])
            .with_epsilon(ours.epsilon)
            .with_momentum(ours.momentum)
            .init::<A>(&Default::default());
        theirs.gamma = Param::from_tensor(ours.gamma.val().detach().require_grad());
        theirs.beta = Param::from_tensor(ours.beta.val().detach().require_grad());
        theirs.running_mean = RunningState::new(ours.running_mean.value());
        theirs.running_var = RunningState::new(ours.running_var.value());
        theirs
    }

    fn module(channels: usize) -> BatchNorm<A> {
        let device = Default::default();
        let mut bn = BatchNormConfig::new(channels).with_momentum(0.3).init::<A>(&device);
        bn.gamma = Param::from_tensor(
            Tensor::random([channels], Distribution::Uniform(0.5, 1.5), &device).require_grad(),
        );
        bn.beta = Param::from_tensor(
            Tensor::random([channels], Distribution::Uniform(-1.0, 1.0), &device).require_grad(),
        );
        bn.running_mean = RunningState::new(Tensor::random(
            [channels],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        ));
        bn.running_var =
            RunningState::new(Tensor::random([channels], Distribution::Uniform(0.5, 2.0), &device));
        bn
    }

    /// Relative too: the drawn values change with the tests running beside this one (the
    /// backend's seed is process-wide), and sums of order 100 differ by f32 ulps between the
    /// two implementations' summation orders.
    fn close<const D: usize>(a: Tensor<impl Backend, D>, b: Tensor<impl Backend, D>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 2e-5));
    }

    /// Training mode on `[N, C, H, W]` and `[N, C]`: outputs, the gradients of a weighted sum
    /// with respect to the input, gamma and beta, and the running statistics after the step,
    /// all equal to burn-nn's.
    #[test]
    fn training_matches_burn_nn() {
        <A as Backend>::seed(&Default::default(), 7);
        let device = Default::default();
        for dims in [vec![4, 3, 5, 6], vec![8, 5]] {
            let channels = dims[1];
            let ours = module(channels);
            let theirs = reference(&ours);
            let old_var = ours.running_var.value_sync();
            let x: Tensor<A, 4> = Tensor::random(
                [dims[0], channels, *dims.get(2).unwrap_or(&1), *dims.get(3).unwrap_or(&1)],
                Distribution::Normal(0.5, 2.0),
                &device,
            );
            // Weights make the loss depend on each output differently (a plain sum has zero
            // gradient with respect to a normalised input).
            let w: Tensor<A, 4> =
                Tensor::random(x.dims(), Distribution::Uniform(-1.0, 1.0), &device);
            let run = |forward: &dyn Fn(Tensor<A, 4>) -> Tensor<A, 4>| {
                let x = x.clone().detach().require_grad();
                let y = forward(x.clone());
                let grads = y.clone().mul(w.clone()).sum().backward();
                (y.inner(), x.grad(&grads).expect("input gradient"), grads)
            };
            let (y_ours, dx_ours, g_ours) = run(&|x| {
                if dims.len() == 2 {
                    ours.forward(x.reshape([dims[0], channels])).reshape([dims[0], channels, 1, 1])
                } else {
                    ours.forward(x)
                }
            });
            let (y_theirs, dx_theirs, g_theirs) = run(&|x| {
                if dims.len() == 2 {
                    theirs
                        .forward(x.reshape([dims[0], channels]))
                        .reshape([dims[0], channels, 1, 1])
                } else {
                    theirs.forward(x)
                }
            });
            close(y_ours, y_theirs);
            close(dx_ours, dx_theirs);
            close(
                ours.gamma.grad(&g_ours).expect("gamma gradient"),
                theirs.gamma.grad(&g_theirs).expect("gamma gradient"),
            );
            close(
                ours.beta.grad(&g_ours).expect("beta gradient"),
                theirs.beta.grad(&g_theirs).expect("beta gradient"),
            );
            close(ours.running_mean.value_sync(), theirs.running_mean.value_sync());
            // burn-nn averages the biased variance v: theirs = (1 - m) old + m v. Ours
            // averages v n / (n - 1), so ours = theirs + m v / (n - 1)
            // = theirs + (theirs - (1 - m) old) / (n - 1), with n = N * H * W.
            let n = (x.dims()[0] * x.dims()[2] * x.dims()[3]) as f64;
            let theirs_var = theirs.running_var.value_sync();
            let from_theirs = theirs_var
                .clone()
                .sub(old_var.clone().mul_scalar(1.0 - ours.momentum))
                .div_scalar(n - 1.0);
            close(ours.running_var.value_sync(), theirs_var.add(from_theirs));
        }
    }

    /// Inference uses the running statistics, as burn-nn's does.
    #[test]
    fn inference_matches_burn_nn() {
        let device = Default::default();
        let ours = module(4);
        let theirs = reference(&ours);
        let x: Tensor<B, 4> = Tensor::random([3, 4, 2, 5], Distribution::Normal(0.0, 3.0), &device);
        close(ours.valid().forward(x.clone()), theirs.valid().forward(x));
    }

    /// The hand-computed case: channel values 1, 2, 3, 6 (mean 3, biased variance
    /// (4 + 1 + 0 + 9) / 4 = 3.5, unbiased 14 / 3), gamma 2, beta 1, epsilon 0:
    /// y = 2 (x - 3) / sqrt(3.5) + 1; running mean after one step with momentum 0.1 from 0:
    /// 0.3; running variance from 1: 0.9 + 0.1 * 14 / 3 = 1.3666... (PyTorch's documented
    /// update: "the value stored in the moving average ... via the unbiased estimator").
    #[test]
    fn hand_computed_values() {
        let device = Default::default();
        let mut bn = BatchNormConfig::new(1).with_epsilon(0.0).init::<A>(&device);
        bn.gamma = Param::from_tensor(Tensor::from_floats([2.0], &device));
        bn.beta = Param::from_tensor(Tensor::from_floats([1.0], &device));
        let x = Tensor::<A, 4>::from_floats([[[[1.0, 2.0]]], [[[3.0, 6.0]]]], &device);
        let y = bn.forward(x);
        let s = 3.5f32.sqrt();
        let expected = [1.0 - 4.0 / s, 1.0 - 2.0 / s, 1.0, 1.0 + 6.0 / s];
        close(y.reshape([4]), Tensor::<A, 1>::from_floats(expected, &device));
        close(bn.running_mean.value_sync(), Tensor::<A, 1>::from_floats([0.3], &device));
        close(bn.running_var.value_sync(), Tensor::<A, 1>::from_floats([0.9 + 1.4 / 3.0], &device));
    }
}
