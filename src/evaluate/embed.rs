//! Embeddings of images by a trained model, the way the evaluation protocols want them.
//!
//! insightface scores a face by `f(img) + f(flip(img))`; v̂ and p(G|x) have no such convention,
//! so they are averaged over the two views (a mean keeps them on the scale the model was
//! trained at, which the group-aware penalty depends on). Without the flip
//! ([`EmbedOptions::flip`]) each is the image's own, as arcface_torch's inference gives it.

use burn::prelude::*;

use crate::backend::conv::ConvBackend;
use crate::data::dataset::to_chw;
use crate::model::{GroupFace, GroupMode};
use crate::protocol::Matrix;
use crate::util::progress::{NoProgress, Progress};

/// Appending a model's output to a host [`Matrix`]: here rather than on the type because
/// [`crate::protocol`] does not depend on Burn. A (private) trait so the embedding loop reads
/// `matrix.push_tensor(t)`.
trait PushTensor {
    /// Appends the rows of a `[n, cols]` tensor, taking its width (the first rows set it).
    fn push_tensor<B: Backend>(&mut self, tensor: Tensor<B, 2>);
}

impl PushTensor for Matrix {
    fn push_tensor<B: Backend>(&mut self, tensor: Tensor<B, 2>) {
        let [n, cols] = tensor.dims();
        self.cols = cols;
        self.rows += n;
        let values = tensor.into_data().convert::<f32>();
        self.data.extend_from_slice(values.as_slice::<f32>().expect("f32 data"));
    }
}

/// `m` as a `[rows, cols]` tensor on `device`.
pub(crate) fn to_tensor<B: Backend>(m: &Matrix, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(m.data.clone(), [m.rows, m.cols]), device)
}

/// How [`embed_stream`] embeds images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Side of the square RGB images, `side · side · 3` bytes each.
    pub side: usize,
    /// Images per forward pass, also how many are decoded at a time (0 counts as 1).
    pub batch: usize,
    /// Overrides the model's ensemble at inference (hard inference of a soft-trained model);
    /// `None` keeps the trained mode.
    pub mode: Option<GroupMode>,
    /// `f(img) + f(flip(img))`, v̂ and p(G|x) the mean of both views, as insightface's
    /// evaluation scores a face (every protocol here); `false`: the image's own, in half the
    /// forward passes, as arcface_torch's inference embeds it.
    pub flip: bool,
}

impl EmbedOptions {
    /// Flip-summed embeddings of `side`-pixel images, `batch` at a time, in the trained mode.
    pub fn new(side: usize, batch: usize) -> Self {
        Self { side, batch, mode: None, flip: true }
    }
}

/// What a model says about a set of images, row `i` for image `i`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    /// v̄ of the image plus v̄ of its mirror image (v̄ of the image alone without
    /// [`EmbedOptions::flip`]), not normalised: `[N, D]` (`[N, 2D]` with concat).
    pub embedding: Matrix,
    /// v̂ (the GDN's intermediate feature), mean of the two views: `[N, F]`; absent for the
    /// baseline.
    pub feature: Option<Matrix>,
    /// p(G|x), mean of the two views: `[N, K]`; absent for the baseline.
    pub probs: Option<Matrix>,
    /// `‖v̄‖` of each image before normalisation, the mean over its views (each view's own
    /// norm, as insightface's XNorm takes them); empty where the embeddings were read from a
    /// file.
    pub norms: Vec<f32>,
}

impl Embeddings {
    /// Appends the rows of `more` (embeddings of the next images).
    pub fn append(&mut self, more: Embeddings) {
        fn extend(into: &mut Matrix, from: Matrix) {
            into.cols = from.cols;
            into.rows += from.rows;
            into.data.extend(from.data);
        }
        extend(&mut self.embedding, more.embedding);
        self.norms.extend(more.norms);
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

    /// No image yet; a GroupFace model's v̂ and p(G|x) are there (empty) even for no image, a
    /// baseline's are absent.
    fn none(grouped: bool) -> Self {
        Self {
            embedding: Matrix::empty(0),
            feature: grouped.then(|| Matrix::empty(0)),
            probs: grouped.then(|| Matrix::empty(0)),
            norms: Vec::new(),
        }
    }

    /// insightface's XNorm: the mean of [`Embeddings::norms`], `None` without them.
    pub fn xnorm(&self) -> Option<f64> {
        (!self.norms.is_empty())
            .then(|| self.norms.iter().map(|&n| n as f64).sum::<f64>() / self.norms.len() as f64)
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

/// Embeds square RGB images (`side · side · 3` bytes each) already in memory, in batches of
/// `batch`, flip-summed: [`embed_images`] over a source that cannot fail.
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
    let images = images.into_iter().map(Ok::<_, std::convert::Infallible>);
    let options = EmbedOptions { mode, ..EmbedOptions::new(side, batch) };
    // Only the source or the sink can fail, and neither does here.
    embed_images(model, images, &options, device, &NoProgress).expect("an infallible source")
}

/// Embeds the images of a fallible source as `options` says and collects the rows:
/// [`embed_stream`] appending every batch, and advancing `progress` by its images once they
/// are embedded. Decoded images are held a batch at a time; the result grows with the source.
///
/// The first image the source fails on ends the run with its error (which names the file or
/// record).
pub fn embed_images<B, P, E>(
    model: &GroupFace<B>,
    images: impl IntoIterator<Item = Result<P, E>>,
    options: &EmbedOptions,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<Embeddings, String>
where
    B: ConvBackend,
    P: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut all = Embeddings::none(model.groups() > 0);
    embed_stream(model, images, options, device, |part| {
        progress.advance(part.rows() as u64);
        all.append(part);
        Ok(())
    })?;
    Ok(all)
}

/// The one embedding loop: pulls at most `options.batch` (at least 1) images from a fallible
/// source, embeds them in one forward pass (over both views with `options.flip`), hands their
/// rows to `sink`, and pulls the next ones, so decoded images are bounded by the batch rather
/// than by the source. Every batch but the last holds `batch` images, so the same images
/// always share a forward pass.
///
/// Stops at the first error of the source (which names the file or record at fault) or of
/// `sink`.
pub fn embed_stream<B, P, E>(
    model: &GroupFace<B>,
    images: impl IntoIterator<Item = Result<P, E>>,
    options: &EmbedOptions,
    device: &B::Device,
    mut sink: impl FnMut(Embeddings) -> Result<(), String>,
) -> Result<(), String>
where
    B: ConvBackend,
    P: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let &EmbedOptions { side, batch, mode, flip } = options;
    // batch=0 used to mean one batch of everything on some paths: unbounded memory.
    let batch = batch.max(1);
    let grouped = model.groups() > 0;
    let views: &[bool] = if flip { &[false, true] } else { &[false] };
    let embed = |pending: &[P]| -> Embeddings {
        let n = pending.len();
        // Plain views first, mirrored views second, in one forward pass.
        let mut pixels = Vec::with_capacity(views.len() * n * 3 * side * side);
        for &mirror in views {
            for image in pending {
                to_chw(image.as_ref(), side, mirror, &mut pixels);
            }
        }
        let shape = [views.len() * n, 3, side, side];
        let input = Tensor::<B, 4>::from_data(TensorData::new(pixels, shape), device);
        let output = match mode {
            Some(mode) => model.forward_mode(input, mode),
            None => model.forward(input),
        };
        let sum_views = |t: Tensor<B, 2>| match flip {
            true => t.clone().slice(0..n) + t.slice(n..2 * n),
            false => t,
        };
        let views = views.len() as f64;
        let mut part = Embeddings::none(grouped);
        let norms = output.embedding.clone().powf_scalar(2.0).sum_dim(1).sqrt();
        part.norms = (sum_views(norms) / views).into_data().iter::<f32>().collect();
        part.embedding.push_tensor(sum_views(output.embedding));
        if let Some(groups) = output.groups {
            if let Some(feature) = part.feature.as_mut() {
                feature.push_tensor(sum_views(groups.feature) / views);
            }
            if let Some(probs) = part.probs.as_mut() {
                probs.push_tensor(sum_views(groups.probs) / views);
            }
        }
        part
    };
    let mut pending: Vec<P> = Vec::with_capacity(batch);
    for image in images {
        pending.push(image.map_err(|e| e.to_string())?);
        if pending.len() == batch {
            sink(embed(&pending))?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        sink(embed(&pending))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use burn::backend::NdArray;

    use super::*;
    use crate::model::GroupFaceConfig;
    use crate::util::progress::Recorded;

    type B = NdArray<f32>;

    const SIDE: usize = 32;

    fn model(groups: usize) -> GroupFace<B> {
        GroupFaceConfig::tiny(groups).init::<B>(&Default::default())
    }

    fn images(n: usize) -> Vec<Vec<u8>> {
        let mut rng = crate::data::rng::SplitMix64::new(7);
        (0..n).map(|_| (0..SIDE * SIDE * 3).map(|_| rng.next_u64() as u8).collect()).collect()
    }

    /// ‖row‖ of each row, in f64 on the host.
    fn host_norms(t: Tensor<B, 2>) -> Vec<f64> {
        let [rows, cols] = t.dims();
        let v: Vec<f64> = t.into_data().iter::<f32>().map(f64::from).collect();
        (0..rows)
            .map(|r| v[r * cols..(r + 1) * cols].iter().map(|x| x * x).sum::<f64>().sqrt())
            .collect()
    }

    /// Checks the norms (insightface's XNorm: each view's own norm, averaged over the views)
    /// against `expected` within f32 rounding, then removes them, so the rest can be compared
    /// to the bit.
    fn check_norms(embeddings: &mut Embeddings, expected: &[f64]) {
        let norms = std::mem::take(&mut embeddings.norms);
        assert_eq!(norms.len(), expected.len());
        for (n, e) in norms.iter().zip(expected) {
            assert!((*n as f64 - e).abs() <= 1e-5 * e.max(1.0), "norm {n} vs {e}");
        }
        let mean = expected.iter().sum::<f64>() / expected.len() as f64;
        let xnorm = Embeddings { norms, ..Default::default() }.xnorm().unwrap();
        assert!((xnorm - mean).abs() <= 1e-5 * mean.max(1.0), "xnorm {xnorm} vs {mean}");
    }

    /// The loop this module had before the stream: every image in memory, one pass over them.
    /// Also returns the per-image norms, the mean of its two views' (XNorm's terms).
    fn whole_set(model: &GroupFace<B>, images: &[Vec<u8>], batch: usize) -> (Embeddings, Vec<f64>) {
        let device = Default::default();
        let grouped = model.groups() > 0;
        let mut out = Embeddings::none(grouped);
        let mut norms = Vec::new();
        for chunk in images.chunks(batch) {
            let n = chunk.len();
            let mut pixels = Vec::new();
            for mirror in [false, true] {
                for image in chunk {
                    to_chw(image, SIDE, mirror, &mut pixels);
                }
            }
            let input =
                Tensor::<B, 4>::from_data(TensorData::new(pixels, [2 * n, 3, SIDE, SIDE]), &device);
            let output = model.forward(input);
            let sum_views = |t: Tensor<B, 2>| t.clone().slice(0..n) + t.slice(n..2 * n);
            let views = host_norms(output.embedding.clone());
            norms.extend((0..n).map(|i| (views[i] + views[n + i]) / 2.0));
            out.embedding.push_tensor(sum_views(output.embedding));
            if let Some(groups) = output.groups {
                out.feature.as_mut().unwrap().push_tensor(sum_views(groups.feature) / 2.0);
                out.probs.as_mut().unwrap().push_tensor(sum_views(groups.probs) / 2.0);
            }
        }
        (out, norms)
    }

    #[test]
    fn a_stream_embeds_exactly_as_the_whole_set_did() {
        let images = images(7);
        for groups in [0, 4] {
            let model = model(groups);
            let source = images.iter().map(Ok::<_, String>);
            let sink = Recorded::default();
            let options = EmbedOptions::new(SIDE, 3);
            let mut streamed =
                embed_images(&model, source, &options, &Default::default(), &sink).unwrap();
            let (whole, norms) = whole_set(&model, &images, 3);
            check_norms(&mut streamed, &norms);
            assert_eq!(streamed, whole, "groups={groups}");
            assert_eq!(streamed.rows(), 7);
            assert_eq!(streamed.feature.is_some(), groups > 0);
            // Each batch is reported once it is embedded.
            assert_eq!(sink.calls(), ["advance 3", "advance 3", "advance 1"]);
        }
    }

    /// Without the flip a row is the model's output for the image alone: the forward pass of
    /// the same batch of plain views, v̂ and p(G|x) included, to the bit.
    #[test]
    fn without_the_flip_a_row_is_the_plain_forward_pass() {
        let images = images(5);
        let device = Default::default();
        for groups in [0, 4] {
            let model = model(groups);
            let options = EmbedOptions { flip: false, ..EmbedOptions::new(SIDE, 2) };
            let source = images.iter().map(Ok::<_, String>);
            let mut plain = embed_images(&model, source, &options, &device, &NoProgress).unwrap();
            let mut expected = Embeddings::none(groups > 0);
            let mut norms = Vec::new();
            for chunk in images.chunks(2) {
                let mut pixels = Vec::new();
                for image in chunk {
                    to_chw(image, SIDE, false, &mut pixels);
                }
                let shape = [chunk.len(), 3, SIDE, SIDE];
                let output = model
                    .forward(Tensor::<B, 4>::from_data(TensorData::new(pixels, shape), &device));
                norms.extend(host_norms(output.embedding.clone()));
                expected.embedding.push_tensor(output.embedding);
                if let Some(g) = output.groups {
                    expected.feature.as_mut().unwrap().push_tensor(g.feature);
                    expected.probs.as_mut().unwrap().push_tensor(g.probs);
                }
            }
            check_norms(&mut plain, &norms);
            assert_eq!(plain, expected, "groups={groups}");
            // The flip-sum is another embedding: f(img) + f(flip img) is not f(img).
            let (flipped, _) = whole_set(&model, &images, 2);
            assert_ne!(plain.embedding.data, flipped.embedding.data);
            assert_eq!(plain.embedding.cols, flipped.embedding.cols);
        }
    }

    #[test]
    fn a_stream_decodes_one_batch_ahead_and_stops_at_its_first_error() {
        let model = model(4);
        let images = images(10);
        let pulled = Cell::new(0);
        let source = images.iter().enumerate().map(|(i, image)| {
            pulled.set(i + 1);
            if i == 7 {
                Err(format!("record {i} cannot be decoded"))
            } else {
                Ok(image.as_slice())
            }
        });
        let mut batches = Vec::new();
        let options = EmbedOptions::new(SIDE, 3);
        let result = embed_stream(&model, source, &options, &Default::default(), |part| {
            batches.push((part.rows(), pulled.get()));
            Ok(())
        });
        assert_eq!(result, Err("record 7 cannot be decoded".to_string()));
        // Each batch is embedded as soon as it is full, and nothing past the error is read.
        assert_eq!(batches, [(3, 3), (3, 6)]);
        assert_eq!(pulled.get(), 8);
    }

    #[test]
    fn batch_zero_embeds_one_image_at_a_time() {
        let model = model(0);
        let source = images(2).into_iter().map(Ok::<_, String>);
        let mut rows = Vec::new();
        embed_stream(&model, source, &EmbedOptions::new(SIDE, 0), &Default::default(), |part| {
            rows.push(part.rows());
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, [1, 1]);
    }
}
