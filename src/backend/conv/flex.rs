//! Direct convolution kernels on flex's host buffers: im2col + gemm for the forward pass and
//! the weight gradient, gemm + col2im for the input gradient.
//!
//! The batch is split into one contiguous run of images per rayon thread. Within a run, images
//! are taken a few at a time ("chunks") so that small feature maps still give gemms with a
//! long enough side (`CHUNK_COLUMNS`); each thread accumulates its own weight gradient and the
//! partial sums are added at the end, so no two threads ever write the same memory. Only what
//! these kernels were written for takes this path (f32, one group, no dilation); everything
//! else, bad shapes included, goes to Burn's own operations and their checks.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, TensorData, TensorMetadata};
use gemm::Parallelism;
use rayon::prelude::*;

use super::ConvBackend;

/// Columns (images x output pixels) a chunk aims for: below a few hundred, gemm's packing
/// and call overhead dominate at the tiny preset's 4x4 and 2x2 feature maps.
const CHUNK_COLUMNS: usize = 512;

impl ConvBackend for Flex {
    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match Geometry::new(&x, &weight, &options, [&x, &weight]) {
            Some(geometry) => forward(&geometry, &x, &weight),
            None => Self::conv2d(x, weight, None, options),
        }
    }

    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let geometry = Geometry::new(&x, &weight, &options, [&weight, &output_grad])
            .filter(|g| g.matches_output(&output_grad.shape()));
        match geometry {
            Some(geometry) => input_grad(&geometry, &weight, &output_grad),
            None => Self::conv2d_x_backward(x, weight, output_grad, options),
        }
    }

    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let geometry = Geometry::new(&x, &weight, &options, [&x, &output_grad])
            .filter(|g| g.matches_output(&output_grad.shape()));
        match geometry {
            Some(geometry) => weight_grad(&geometry, &x, &output_grad),
            None => Self::conv2d_weight_backward(x, weight, output_grad, options),
        }
    }
}

/// Sizes of one convolution, checked against what these kernels handle.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels_in: usize,
    height: usize,
    width: usize,
    channels_out: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    out_height: usize,
    out_width: usize,
}

impl Geometry {
    /// `None` unless the shapes are consistent and the kernels cover the options and the
    /// dtypes of `tensors` (the ones whose data the kernel reads).
    fn new(
        x: &FlexTensor,
        weight: &FlexTensor,
        options: &ConvOptions<2>,
        tensors: [&FlexTensor; 2],
    ) -> Option<Self> {
        if options.groups != 1 || options.dilation != [1, 1] {
            return None;
        }
        if tensors.iter().any(|t| t.dtype() != DType::F32) {
            return None;
        }
        let [batch, channels_in, height, width] = <[usize; 4]>::try_from(&*x.shape()).ok()?;
        let [channels_out, weight_in, kh, kw] = <[usize; 4]>::try_from(&*weight.shape()).ok()?;
        if weight_in != channels_in || kh == 0 || kw == 0 || options.stride.contains(&0) {
            return None;
        }
        let out = |size: usize, k: usize, s: usize, p: usize| {
            (size + 2 * p).checked_sub(k).map(|span| span / s + 1)
        };
        let out_height = out(height, kh, options.stride[0], options.padding[0])?;
        let out_width = out(width, kw, options.stride[1], options.padding[1])?;
        let geometry = Self {
            batch,
            channels_in,
            height,
            width,
            channels_out,
            kernel: [kh, kw],
            stride: options.stride,
            padding: options.padding,
            out_height,
            out_width,
        };
        (geometry.columns_len() > 0 && geometry.pixels() > 0 && batch > 0).then_some(geometry)
    }

    fn matches_output(&self, dims: &[usize]) -> bool {
        dims == [self.batch, self.channels_out, self.out_height, self.out_width]
    }

    /// Rows of an image's im2col matrix: `channels_in * kernel_h * kernel_w`.
    fn columns_len(&self) -> usize {
        self.channels_in * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels of one image.
    fn pixels(&self) -> usize {
        self.out_height * self.out_width
    }

    fn image_len(&self) -> usize {
        self.channels_in * self.height * self.width
    }

    fn output_len(&self) -> usize {
        self.channels_out * self.pixels()
    }

    /// A 1x1 convolution with stride 1 and no padding, whose im2col matrix is the image itself.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Images per chunk.
    fn chunk(&self) -> usize {
        CHUNK_COLUMNS.div_ceil(self.pixels()).max(1)
    }

    /// One contiguous run of images per thread: `(first image, images)`.
    fn runs(&self) -> Vec<(usize, usize)> {
        let threads = rayon::current_num_threads().clamp(1, self.batch);
        let per = self.batch.div_ceil(threads);
        (0..self.batch).step_by(per).map(|start| (start, per.min(self.batch - start))).collect()
    }

    /// The range of output columns `ow` whose input column `ow * stride + k - pad` is inside
    /// `0..size`, for one kernel offset `k` along one axis.
    fn valid(&self, axis: usize, k: usize) -> (usize, usize) {
        let (size, out) =
            if axis == 0 { (self.height, self.out_height) } else { (self.width, self.out_width) };
        let (s, p) = (self.stride[axis], self.padding[axis]);
        let lo = (p.saturating_sub(k)).div_ceil(s);
        let hi = ((size + p).saturating_sub(k)).div_ceil(s).min(out);
        (lo.min(hi), hi)
    }
}

/// A contiguous f32 view of a flex tensor; copies only when the layout is not contiguous.
fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    tensor.to_contiguous()
}

fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Writes image `x` (`[channels_in, height, width]`) into the im2col matrix `col`, rows
/// `(c, ki, kj)` and columns `offset..offset + pixels` of rows `stride` long.
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32], stride: usize, offset: usize) {
    let [kh, kw] = g.kernel;
    let (ow_len, pixels) = (g.out_width, g.pixels());
    for c in 0..g.channels_in {
        let plane = &x[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ki in 0..kh {
            let (oh_lo, oh_hi) = g.valid(0, ki);
            for kj in 0..kw {
                let (ow_lo, ow_hi) = g.valid(1, kj);
                let row = (c * kh + ki) * kw + kj;
                let dst = &mut col[row * stride + offset..][..pixels];
                dst[..oh_lo * ow_len].fill(0.0);
                dst[oh_hi * ow_len..].fill(0.0);
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.stride[0] + ki - g.padding[0];
                    let src = &plane[ih * g.width..(ih + 1) * g.width];
                    let line = &mut dst[oh * ow_len..(oh + 1) * ow_len];
                    line[..ow_lo].fill(0.0);
                    line[ow_hi..].fill(0.0);
                    let first = ow_lo * g.stride[1] + kj - g.padding[1];
                    if g.stride[1] == 1 {
                        line[ow_lo..ow_hi].copy_from_slice(&src[first..first + ow_hi - ow_lo]);
                    } else {
                        for (o, v) in line[ow_lo..ow_hi].iter_mut().enumerate() {
                            *v = src[first + o * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col-shaped gradient `col` (columns `offset..offset + pixels`) back onto the
/// image gradient `dx` (`[channels_in, height, width]`, zeroed by the caller).
fn col2im(g: &Geometry, col: &[f32], stride: usize, offset: usize, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let (ow_len, pixels) = (g.out_width, g.pixels());
    for c in 0..g.channels_in {
        let plane = &mut dx[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ki in 0..kh {
            let (oh_lo, oh_hi) = g.valid(0, ki);
            for kj in 0..kw {
                let (ow_lo, ow_hi) = g.valid(1, kj);
                let row = (c * kh + ki) * kw + kj;
                let src = &col[row * stride + offset..][..pixels];
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.stride[0] + ki - g.padding[0];
                    let dst = &mut plane[ih * g.width..(ih + 1) * g.width];
                    let line = &src[oh * ow_len + ow_lo..oh * ow_len + ow_hi];
                    let first = ow_lo * g.stride[1] + kj - g.padding[1];
                    if g.stride[1] == 1 {
                        for (d, v) in dst[first..first + line.len()].iter_mut().zip(line) {
                            *d += v;
                        }
                    } else {
                        for (o, v) in line.iter().enumerate() {
                            dst[first + o * g.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Copies `images` consecutive `[rows, pixels]` blocks from `src` into one `[rows, images *
/// pixels]` matrix, so a chunk of images is one gemm operand.
fn pack(src: &[f32], rows: usize, pixels: usize, images: usize, dst: &mut [f32]) {
    let columns = images * pixels;
    for i in 0..images {
        for r in 0..rows {
            dst[r * columns + i * pixels..][..pixels]
                .copy_from_slice(&src[(i * rows + r) * pixels..][..pixels]);
        }
    }
}

/// The inverse of [`pack`].
fn unpack(src: &[f32], rows: usize, pixels: usize, images: usize, dst: &mut [f32]) {
    let columns = images * pixels;
    for i in 0..images {
        for r in 0..rows {
            dst[(i * rows + r) * pixels..][..pixels]
                .copy_from_slice(&src[r * columns + i * pixels..][..pixels]);
        }
    }
}

/// A row-major or transposed view of a matrix for [`matmul`]: `(pointer, row stride, column
/// stride)`.
type View = (*const f32, isize, isize);

fn rows(data: &[f32], columns: usize) -> View {
    (data.as_ptr(), columns as isize, 1)
}

/// The transpose of a row-major matrix with `columns` columns.
fn transposed(data: &[f32], columns: usize) -> View {
    (data.as_ptr(), 1, columns as isize)
}

/// `dst[m, n] (+)= lhs[m, k] @ rhs[k, n]`, `dst` row-major; `accumulate` adds to `dst`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    [m, n, k]: [usize; 3],
    lhs: View,
    rhs: View,
    lhs_len: usize,
    rhs_len: usize,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(dst.len() >= m * n, "gemm destination too small");
    // The views' extents: the last element each can reach must be inside its slice.
    let reach = |(_, rs, cs): View, r: usize, c: usize| {
        (r.saturating_sub(1)) * rs as usize + (c.saturating_sub(1)) * cs as usize
    };
    assert!(m == 0 || k == 0 || reach(lhs, m, k) < lhs_len, "gemm lhs out of bounds");
    assert!(k == 0 || n == 0 || reach(rhs, k, n) < rhs_len, "gemm rhs out of bounds");
    // SAFETY: the asserts above keep every element gemm reads inside `lhs`'s and `rhs`'s
    // slices and every element it writes inside `dst`, which is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// gemm's own threads only when a single run has the whole batch (batch 1, or one thread).
fn parallelism(runs: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if runs == 1 && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

fn forward(g: &Geometry, x: &FlexTensor, weight: &FlexTensor) -> FlexTensor {
    let (x, weight) = (contiguous(x), contiguous(weight));
    let (x, w) = (f32s(&x), f32s(&weight));
    let (k, pixels, out_len) = (g.columns_len(), g.pixels(), g.output_len());
    let mut out = vec![0.0f32; g.batch * out_len];
    let runs = g.runs();
    let par = parallelism(runs.len());
    let per = runs[0].1;
    out.par_chunks_mut(per * out_len).zip(runs.par_iter()).for_each(|(out, &(start, count))| {
        let chunk = g.chunk().min(count);
        let mut col = vec![0.0f32; k * chunk * pixels];
        let mut staged = vec![0.0f32; if chunk > 1 { out_len * chunk } else { 0 }];
        for first in (0..count).step_by(chunk) {
            let images = chunk.min(count - first);
            let columns = images * pixels;
            let image = |i: usize| &x[(start + first + i) * g.image_len()..][..g.image_len()];
            let out = &mut out[first * out_len..(first + images) * out_len];
            let rhs = if images == 1 && g.pointwise() {
                rows(image(0), pixels)
            } else {
                for i in 0..images {
                    im2col(g, image(i), &mut col, columns, i * pixels);
                }
                rows(&col, columns)
            };
            let rhs_len = if images == 1 && g.pointwise() { image(0).len() } else { col.len() };
            let shape = [g.channels_out, columns, k];
            if images == 1 {
                matmul(out, shape, rows(w, k), rhs, w.len(), rhs_len, false, par);
            } else {
                matmul(&mut staged, shape, rows(w, k), rhs, w.len(), rhs_len, false, par);
                unpack(&staged, g.channels_out, pixels, images, out);
            }
        }
    });
    tensor(out, [g.batch, g.channels_out, g.out_height, g.out_width])
}

fn input_grad(g: &Geometry, weight: &FlexTensor, output_grad: &FlexTensor) -> FlexTensor {
    let (weight, dy) = (contiguous(weight), contiguous(output_grad));
    let (w, dy) = (f32s(&weight), f32s(&dy));
    let (k, pixels, out_len, image_len) =
        (g.columns_len(), g.pixels(), g.output_len(), g.image_len());
    let mut dx = vec![0.0f32; g.batch * image_len];
    let runs = g.runs();
    let par = parallelism(runs.len());
    let per = runs[0].1;
    dx.par_chunks_mut(per * image_len).zip(runs.par_iter()).for_each(|(dx, &(start, count))| {
        let chunk = g.chunk().min(count);
        let mut dcol =
            vec![0.0f32; if g.pointwise() && chunk == 1 { 0 } else { k * chunk * pixels }];
        let mut packed = vec![0.0f32; if chunk > 1 { out_len * chunk } else { 0 }];
        for first in (0..count).step_by(chunk) {
            let images = chunk.min(count - first);
            let columns = images * pixels;
            let dy = &dy[(start + first) * out_len..(start + first + images) * out_len];
            let dx = &mut dx[first * image_len..(first + images) * image_len];
            let (rhs, rhs_len) = if images == 1 {
                (rows(dy, pixels), dy.len())
            } else {
                pack(dy, g.channels_out, pixels, images, &mut packed);
                (rows(&packed, columns), packed.len())
            };
            // dcol[k, columns] = weight^T[k, channels_out] @ dy[channels_out, columns]
            let shape = [k, columns, g.channels_out];
            if images == 1 && g.pointwise() {
                matmul(dx, shape, transposed(w, k), rhs, w.len(), rhs_len, false, par);
                continue;
            }
            matmul(&mut dcol, shape, transposed(w, k), rhs, w.len(), rhs_len, false, par);
            for i in 0..images {
                col2im(g, &dcol, columns, i * pixels, &mut dx[i * image_len..][..image_len]);
            }
        }
    });
    tensor(dx, [g.batch, g.channels_in, g.height, g.width])
}

fn weight_grad(g: &Geometry, x: &FlexTensor, output_grad: &FlexTensor) -> FlexTensor {
    let (x, dy) = (contiguous(x), contiguous(output_grad));
    let (x, dy) = (f32s(&x), f32s(&dy));
    let (k, pixels, out_len, image_len) =
        (g.columns_len(), g.pixels(), g.output_len(), g.image_len());
    let runs = g.runs();
    let par = parallelism(runs.len());
    let partials: Vec<Vec<f32>> = runs
        .par_iter()
        .map(|&(start, count)| {
            let chunk = g.chunk().min(count);
            let mut dw = vec![0.0f32; g.channels_out * k];
            let mut col = vec![0.0f32; k * chunk * pixels];
            let mut packed = vec![0.0f32; if chunk > 1 { out_len * chunk } else { 0 }];
            for (n, first) in (0..count).step_by(chunk).enumerate() {
                let images = chunk.min(count - first);
                let columns = images * pixels;
                let image = |i: usize| &x[(start + first + i) * image_len..][..image_len];
                let dy = &dy[(start + first) * out_len..(start + first + images) * out_len];
                let (cols, cols_len) = if images == 1 && g.pointwise() {
                    (transposed(image(0), pixels), image_len)
                } else {
                    for i in 0..images {
                        im2col(g, image(i), &mut col, columns, i * pixels);
                    }
                    (transposed(&col, columns), col.len())
                };
                let (lhs, lhs_len) = if images == 1 {
                    (rows(dy, pixels), dy.len())
                } else {
                    pack(dy, g.channels_out, pixels, images, &mut packed);
                    (rows(&packed, columns), packed.len())
                };
                // dw[channels_out, k] += dy[channels_out, columns] @ col^T[columns, k]
                let shape = [g.channels_out, k, columns];
                matmul(&mut dw, shape, lhs, cols, lhs_len, cols_len, n > 0, par);
            }
            dw
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().expect("at least one run");
    for partial in partials {
        dw.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
    }
    tensor(dw, [g.channels_out, g.channels_in, g.kernel[0], g.kernel[1]])
}
