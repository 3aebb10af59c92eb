//! Embeddings of images by a trained model, the way the evaluation protocols want them.
//!
//! insightface scores a face by `f(img) + f(flip(img))`; v̂ and p(G|x) have no such convention,
//! so they are averaged over the two views (a mean keeps them on the scale the model was
//! trained at, which the group-aware penalty depends on).

use burn::prelude::*;

use crate::conv::ConvBackend;
use crate::data::dataset::to_chw;
use crate::model::{GroupFace, GroupMode};

/// Row-major `[rows, cols]` f32 values on the host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows · cols` values.
    pub data: Vec<f32>,
}

impl HostMatrix {
    /// An empty matrix of `cols` columns.
    pub fn empty(cols: usize) -> Self {
        Self { rows: 0, cols, data: Vec::new() }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Appends the rows of a `[n, cols]` tensor.
    fn push_tensor<B: Backend>(&mut self, tensor: Tensor<B, 2>) {
        let [n, cols] = tensor.dims();
        self.cols = cols;
        self.rows += n;
        let values = tensor.into_data().convert::<f32>();
        self.data.extend_from_slice(values.as_slice::<f32>().expect("f32 data"));
    }

    /// The matrix as a tensor.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(self.data.clone(), [self.rows, self.cols]), device)
    }

    /// Rows scaled to unit L2 norm (a zero row stays zero).
    pub fn normalized(&self) -> Self {
        let mut out = self.clone();
        for row in out.data.chunks_mut(self.cols.max(1)) {
            let norm = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        out
    }
}

/// What a model says about a set of images, row `i` for image `i`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    /// v̄ of the image plus v̄ of its mirror image, not normalised: `[N, D]` (`[N, 2D]` with
    /// concat).
    pub embedding: HostMatrix,
    /// v̂ (the GDN's intermediate feature), mean of the two views: `[N, F]`; absent for the
    /// baseline.
    pub feature: Option<HostMatrix>,
    /// p(G|x), mean of the two views: `[N, K]`; absent for the baseline.
    pub probs: Option<HostMatrix>,
}

impl Embeddings {
    /// Appends the rows of `more` (embeddings of the next images).
    pub fn append(&mut self, more: Embeddings) {
        fn extend(into: &mut HostMatrix, from: HostMatrix) {
            into.cols = from.cols;
            into.rows += from.rows;
            into.data.extend(from.data);
        }
        extend(&mut self.embedding, more.embedding);
        let rows = self.embedding.rows;
        for (into, from) in [(&mut self.feature, more.feature), (&mut self.probs, more.probs)] {
            match (into.as_mut(), from) {
                (Some(into), Some(from)) => extend(into, from),
                // The first images: nothing to append to yet.
                (None, Some(from)) if rows == from.rows => *into = Some(from),
                _ => {}
            }
        }
    }

    /// Number of images.
    pub fn rows(&self) -> usize {
        self.embedding.rows
    }

    /// The most probable group of every image (empty for the baseline).
    pub fn groups(&self) -> Vec<usize> {
        let Some(probs) = &self.probs else { return Vec::new() };
        (0..probs.rows)
            .map(|i| {
                let row = probs.row(i);
                // First maximum, as argmax does.
                let mut best = 0;
                for (k, &p) in row.iter().enumerate() {
                    if p > row[best] {
                        best = k;
                    }
                }
                best
            })
            .collect()
    }
}

/// Embeds square RGB images (`side · side · 3` bytes each) in batches of `batch`.
///
/// `mode` overrides the model's ensemble at inference (hard inference of a soft-trained
/// model); `None` keeps the trained mode.
pub fn embed_pixels<'a, B: ConvBackend>(
    model: &GroupFace<B>,
    images: impl IntoIterator<Item = &'a [u8]>,
    side: usize,
    batch: usize,
    mode: Option<GroupMode>,
    device: &B::Device,
) -> Embeddings {
    let grouped = model.groups() > 0;
    let mut out = Embeddings {
        embedding: HostMatrix::empty(0),
        feature: grouped.then(|| HostMatrix::empty(0)),
        probs: grouped.then(|| HostMatrix::empty(0)),
    };
    let mut pending: Vec<&[u8]> = Vec::with_capacity(batch);
    let flush = |pending: &mut Vec<&[u8]>, out: &mut Embeddings| {
        if pending.is_empty() {
            return;
        }
        let n = pending.len();
        // Plain views first, mirrored views second, in one forward pass.
        let mut pixels = Vec::with_capacity(2 * n * 3 * side * side);
        for mirror in [false, true] {
            for image in pending.iter() {
                to_chw(image, side, mirror, &mut pixels);
            }
        }
        let input =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [2 * n, 3, side, side]), device);
        let output = match mode {
            Some(mode) => model.forward_mode(input, mode),
            None => model.forward(input),
        };
        let sum_views = |t: Tensor<B, 2>| t.clone().slice(0..n) + t.slice(n..2 * n);
        out.embedding.push_tensor(sum_views(output.embedding));
        if let Some(groups) = output.groups {
            if let Some(feature) = out.feature.as_mut() {
                feature.push_tensor(sum_views(groups.feature) / 2.0);
            }
            if let Some(probs) = out.probs.as_mut() {
                probs.push_tensor(sum_views(groups.probs) / 2.0);
            }
        }
        pending.clear();
    };
    for image in images {
        pending.push(image);
        if pending.len() == batch {
            flush(&mut pending, &mut out);
        }
    }
    flush(&mut pending, &mut out);
    out
}
