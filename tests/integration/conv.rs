//! `groupface::backend::conv` against Burn's own convolution: values and both gradients for every
//! kernel, stride and padding the backbones use, odd sizes, batches 1 and 3, contiguous and
//! strided inputs, on flex (own kernels) and ndarray (Burn's kernels under our backward node).
//!
//! Tolerance: 1e-4 absolute on values of order 1. Both sides sum the same f32 products
//! (at most a few hundred terms of inputs in [-1, 1]) in a different order, which moves a
//! result by about 1e-6; an index off by one or a missed padding row moves it by 0.1 or more.

use crate::common;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use common::*;
use groupface::backend::conv::{conv2d, ConvBackend};

/// Deterministic values in [-1, 1), different for each `seed`.
fn pseudo_random<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = (i ^ (seed << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            (h % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// One convolution the backbones run: `(kernel, stride, padding)`.
const CASES: [(usize, usize, usize); 4] = [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)];

struct Case {
    batch: usize,
    channels: [usize; 2],
    side: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Feed `x` as a transposed view (not contiguous in memory).
    strided: bool,
}

/// Output, input gradient and weight gradient of `sum(conv(x, w) * r)` through `groupface`'s
/// [`conv2d`] and through Burn's `conv2d` on the same backend.
fn compare<B: AutodiffBackend + ConvBackend>(case: &Case, device: &B::Device) {
    let ([c_in, c_out], [h, w]) = (case.channels, case.side);
    let k = case.kernel;
    let name = format!(
        "batch {} {c_in}->{c_out} {h}x{w} k{k} s{} p{}{}",
        case.batch,
        case.stride,
        case.padding,
        if case.strided { " strided" } else { "" }
    );
    let x = if case.strided {
        pseudo_random::<B, 4>([case.batch, c_in, w, h], 1, device).swap_dims(2, 3)
    } else {
        pseudo_random::<B, 4>([case.batch, c_in, h, w], 1, device)
    };
    let weight = pseudo_random::<B, 4>([c_out, c_in, k, k], 2, device);
    let pad = case.padding;
    let module = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([case.stride, case.stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init::<B>(device);
    let module = Conv2d { weight: Param::from_tensor(weight.clone()), ..module };

    let ours_x = x.clone().detach().require_grad();
    let ours = conv2d(&module, ours_x.clone());
    let [_, _, oh, ow] = ours.dims();
    let r = pseudo_random::<B, 4>([case.batch, c_out, oh, ow], 3, device);
    let ours_grads = (ours.clone() * r.clone()).sum().backward();

    let ref_x = x.detach().require_grad();
    let ref_w = weight.detach().require_grad();
    let options = ConvOptions::new([case.stride; 2], [pad; 2], [1, 1], 1);
    let reference = burn_conv2d(ref_x.clone(), ref_w.clone(), None, options);
    let ref_grads = (reference.clone() * r).sum().backward();

    assert_eq!(ours.dims(), reference.dims(), "{name}: output shape");
    assert_close(&values(ours), &values(reference), 1e-4, &format!("{name}: output"));
    let dx = ours_x.grad(&ours_grads).expect("x is tracked");
    let ref_dx = ref_x.grad(&ref_grads).expect("x is tracked");
    assert_close(&values(dx), &values(ref_dx), 1e-4, &format!("{name}: dx"));
    let dw = module.weight.val().grad(&ours_grads).expect("the weight is tracked");
    let ref_dw = ref_w.grad(&ref_grads).expect("the weight is tracked");
    assert_close(&values(dw), &values(ref_dw), 1e-4, &format!("{name}: dw"));
}

fn every_case<B: AutodiffBackend + ConvBackend>(device: &B::Device) {
    for (kernel, stride, padding) in CASES {
        // Odd and even sides, batch 1 (gemm's own threads) and 3 (one run per thread, chunked
        // images); 23x25 at stride 1 has more output pixels than a chunk's columns.
        for (batch, side) in [(1, [7, 9]), (3, [5, 5]), (3, [8, 6]), (2, [23, 25])] {
            for strided in [false, true] {
                let case = Case { batch, channels: [2, 3], side, kernel, stride, padding, strided };
                compare::<B>(&case, device);
            }
        }
    }
}

#[test]
fn values_and_gradients_match_burn() {
    on_cpu_backends!(every_case);
}

/// Wider channels than the cases above, at the tiny preset's first stage shapes, so that the
/// gemm dimensions cross gemm's block sizes.
fn wide<B: AutodiffBackend + ConvBackend>(device: &B::Device) {
    for (kernel, stride, padding) in CASES {
        let case = Case {
            batch: 3,
            channels: [16, 32],
            side: [8, 8],
            kernel,
            stride,
            padding,
            strided: false,
        };
        compare::<B>(&case, device);
    }
}

#[test]
fn wide_channels_match_burn() {
    on_cpu_backends!(wide);
}

/// The first convolution of a backbone receives images that need no gradient: only the weight
/// gets one, and it is the same as when both are tracked.
fn untracked_input<B: AutodiffBackend + ConvBackend>(device: &B::Device) {
    let x = pseudo_random::<B, 4>([2, 3, 7, 7], 4, device);
    let module = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init::<B>(device);
    let grads = conv2d(&module, x.clone()).sum().backward();
    let dw = module.weight.val().grad(&grads).expect("the weight is tracked");
    let tracked = x.require_grad();
    let grads = conv2d(&module, tracked.clone()).sum().backward();
    assert!(tracked.grad(&grads).is_some());
    let again = module.weight.val().grad(&grads).expect("the weight is tracked");
    assert_close(&values(dw), &values(again), 0.0, "dw without and with dx");
}

#[test]
fn untracked_input_gives_the_weight_gradient() {
    on_cpu_backends!(untracked_input);
}
