//! The backbone's 2-D convolution as a backend extension, so that its gradients can have their
//! own kernels where Burn's default ones are slow.
//!
//! Burn 0.21's flex backend implements the forward convolution but none of the backward ones,
//! so `burn-backend`'s defaults run there: a weight gradient computed as a convolution of
//! swapped views of `x` and `dy` (one thin matrix product per input channel) and an input
//! gradient through a sequential transposed convolution. [`ConvBackend`] follows Burn's
//! documented way to add an operation to backends (the custom-kernel examples): a trait that
//! extends `Backend`, implemented for [`Autodiff`] with its own backward node, with direct
//! im2col + gemm kernels on flex ([`flex`]) and Burn's own operations everywhere else.
//!
//! The modules keep Burn's [`Conv2d`] (so parameter names, shapes, records, checkpoints and the
//! PyTorch key mapping do not change); [`conv2d`] runs one through this trait.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::TensorPrimitive;

#[cfg(feature = "flex")]
pub mod flex;

/// A backend with the 2-D convolution (no bias) and its two gradients as separate operations.
///
/// Every method defaults to Burn's own `conv2d`, `conv2d_x_backward` and
/// `conv2d_weight_backward`; a backend overrides the ones it has faster kernels for. Burn's
/// `Autodiff` implements [`conv2d_forward`](Self::conv2d_forward) with a backward node that
/// calls the inner backend's two gradient methods.
pub trait ConvBackend: Backend {
    /// `conv2d(x, weight)` without bias.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, h, w]`
    /// - `weight`: `[channels_out, channels_in / groups, kernel_h, kernel_w]`
    /// - output: `[batch, channels_out, h_out, w_out]`
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The gradient of the loss with respect to `x`, given that with respect to the output.
    ///
    /// # Shapes
    /// - `x`, `weight`: as in [`conv2d_forward`](Self::conv2d_forward) (only `x`'s shape is read)
    /// - `output_grad`: `[batch, channels_out, h_out, w_out]`
    /// - output: `[batch, channels_in, h, w]`
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// The gradient of the loss with respect to `weight`, given that with respect to the output.
    ///
    /// # Shapes
    /// - `x`, `weight`: as in [`conv2d_forward`](Self::conv2d_forward) (only `weight`'s shape
    ///   is read)
    /// - `output_grad`: `[batch, channels_out, h_out, w_out]`
    /// - output: `weight`'s shape
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }
}

/// A backend that training runs on: autodiff with [`ConvBackend`], over an inner backend that
/// has it too (validation and evaluation run the model on the inner backend).
#[cfg(not(feature = "ddp"))]
pub trait TrainBackend: AutodiffBackend<InnerBackend: ConvBackend> + ConvBackend {}

#[cfg(not(feature = "ddp"))]
impl<B> TrainBackend for B
where
    B: AutodiffBackend + ConvBackend,
    B::InnerBackend: ConvBackend,
{
}

/// A backend that training runs on: autodiff with [`ConvBackend`], over an inner backend that
/// has it too, and with collective operations for Burn's data-parallel strategy (the `ddp`
/// build, CUDA only).
#[cfg(feature = "ddp")]
pub trait TrainBackend:
    AutodiffBackend<InnerBackend: ConvBackend>
    + ConvBackend
    + burn::tensor::backend::distributed::DistributedBackend
{
}

#[cfg(feature = "ddp")]
impl<B> TrainBackend for B
where
    B: AutodiffBackend + ConvBackend + burn::tensor::backend::distributed::DistributedBackend,
    B::InnerBackend: ConvBackend,
{
}

#[cfg(feature = "ndarray")]
impl ConvBackend for burn::backend::NdArray<f32> {}

#[cfg(feature = "wgpu")]
impl ConvBackend for burn::backend::Wgpu<f32, i32> {}

#[cfg(feature = "cuda")]
impl ConvBackend for burn::backend::Cuda<f32, i32> {}

/// The backward node of [`ConvBackend::conv2d_forward`] on autodiff.
#[derive(Debug)]
struct Conv2dBackward;

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        // The images entering the stem are not tracked, so their gradient is never computed.
        if let Some(node) = node_x {
            let dx = B::conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_weight_grad(x, weight, grad, options));
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match Conv2dBackward
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let output = B::conv2d_forward(x.primitive, weight.primitive, options.clone());
                prep.finish((x_state, weight_state, options), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_forward(x.primitive, weight.primitive, options))
            }
        }
    }
}

/// Runs Burn's [`Conv2d`] module through [`ConvBackend`]: the same result as `conv.forward(x)`
/// for the convolutions this trait covers (no bias, symmetric padding); any other
/// configuration runs `conv.forward(x)` itself.
///
/// # Shapes
/// - `x`: `[batch, channels_in, h, w]`
/// - output: `[batch, channels_out, h_out, w_out]`
///
/// The convolution computes in `x`'s float type: under mixed precision (bf16 or f16 images,
/// f32 parameters) the weight is cast to it, and the cast's gradient brings the weight's
/// gradient back to f32 (see [`crate::backend::Precision`]).
pub fn conv2d<B: ConvBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            [top, left]
        }
        // `Same` may pad asymmetrically, which `ConvOptions` cannot express.
        _ => return module_forward(conv, x),
    };
    if conv.bias.is_some() {
        return module_forward(conv, x);
    }
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let weight = conv.weight.val().cast(x.dtype());
    let output =
        B::conv2d_forward(x.into_primitive().tensor(), weight.into_primitive().tensor(), options);
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// `conv.forward(x)` in the module's own float type, the result cast back to `x`'s (Burn's
/// module takes its weight as it is, so the types must agree).
fn module_forward<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let dtype = x.dtype();
    conv.forward(x.cast(conv.weight.val().dtype())).cast(dtype)
}
