//! Rank-1 identification on the backend: probes against a gallery and a stream of distractors,
//! as batched matrix products, so that a MegaFace-sized gallery (10^6 distractors) fits.
//!
//! The rules are those of the host reference [`crate::protocol::identification::rank1`], which the
//! tests hold this against: cosine similarity; a probe is a hit at `n` distractors when its own
//! identity's gallery row scores strictly higher than every other gallery row and every one of
//! the first `n` distractors (a tie is a miss). Scores here are `f32` on the backend, so two
//! candidates within an `f32` rounding of each other may be ordered differently from the `f64`
//! reference; exact ties (duplicated rows) are misses in both.
//!
//! Memory stays bounded: the probes and one block of scores (at most [`SCORE_BLOCK`] values)
//! live on the device at a time, and distractors arrive block by block, so they never need to
//! exist on the host or the device all at once.

use std::fmt::Display;
use std::hash::Hash;

use burn::prelude::*;

use crate::protocol::identification::{distractor_counts, gallery_rows_of_probes, Rank1Result};
use crate::protocol::pairs::unit_rows;
use crate::protocol::{EvalError, Matrix, Result};

/// Most scores held on the device at once (`probes x block` values; 64 MiB of `f32`).
pub const SCORE_BLOCK: usize = 1 << 24;

/// "No distractor beats this probe (yet)".
const NEVER: i32 = i32::MAX;

/// An identification search in progress: the gallery is scored, distractors are added in blocks.
pub struct Rank1Search<B: Backend> {
    /// Unit probe embeddings, `[P, dim]`.
    probes: Tensor<B, 2>,
    /// Each probe's score against its own identity's gallery row, `[P, 1]`.
    truth: Tensor<B, 2>,
    /// Whether each probe's identity beats every other gallery row.
    gallery_ok: Vec<bool>,
    /// Index of the first distractor scoring at least the probe's truth, `[P, 1]`, or [`NEVER`].
    first_beaten: Tensor<B, 2, Int>,
    /// Distractors added so far.
    distractors: usize,
    /// Where the probes came from, for error messages.
    origin: String,
}

/// Rows scored against all probes at once so that a block holds at most [`SCORE_BLOCK`] scores.
fn block_rows(probes: usize) -> usize {
    (SCORE_BLOCK / probes.max(1)).max(1)
}

/// Rows scaled to unit L2 norm; a zero row stays zero (and so never wins a comparison).
fn unit<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-30);
    x / norm
}

/// `[1, n]` column indices `offset..offset + n`, broadcast to `[rows, n]`.
fn column_indices<B: Backend>(
    offset: usize,
    n: usize,
    rows: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(offset as i64..(offset + n) as i64, device)
        .reshape([1, n])
        .expand([rows, n])
}

impl<B: Backend> Rank1Search<B> {
    /// Scores the probes against the gallery (one row per identity).
    ///
    /// # Shapes
    /// `probes`: `[P, dim]` with `probe_labels`: `[P]`; `gallery`: `[G, dim]` with
    /// `gallery_labels`: `[G]`, all distinct. Rows need not be normalised but must be finite
    /// and non-zero; every probe's identity must be in the gallery.
    pub fn new<L: Eq + Hash + Display>(
        probes: &Matrix<f32>,
        probe_labels: &[L],
        gallery: &Matrix<f32>,
        gallery_labels: &[L],
        device: &B::Device,
    ) -> Result<Self> {
        let own = gallery_rows_of_probes(
            probes,
            probe_labels,
            gallery,
            gallery_labels,
            (&probes.origin, 0, probes.cols),
            &[],
        )?;
        // Same checks (finite, non-zero rows) and messages as the reference.
        unit_rows(probes)?;
        unit_rows(gallery)?;
        let (p, dim) = (probes.rows, probes.cols);
        let tensor = |m: &Matrix<f32>| {
            Tensor::<B, 2>::from_data(TensorData::new(m.data.clone(), [m.rows, dim]), device)
        };
        let probes_t = unit(tensor(probes));
        let gallery_t = unit(tensor(gallery));
        let own_rows: Vec<i64> = own.iter().map(|&g| g as i64).collect();
        let own_rows = Tensor::<B, 1, Int>::from_data(TensorData::new(own_rows, [p]), device);
        let truth = (probes_t.clone() * gallery_t.clone().select(0, own_rows.clone())).sum_dim(1);
        let own_col = own_rows.reshape([p, 1]);
        let mut rivals = Tensor::<B, 2, Int>::zeros([p, 1], device);
        let step = block_rows(p);
        let mut start = 0;
        while start < gallery.rows {
            let n = step.min(gallery.rows - start);
            let scores =
                probes_t.clone().matmul(gallery_t.clone().slice(start..start + n).transpose());
            let at_least = scores.greater_equal(truth.clone().expand([p, n]));
            let is_own =
                column_indices::<B>(start, n, p, device).equal(own_col.clone().expand([p, n]));
            rivals = rivals + at_least.bool_and(is_own.bool_not()).int().sum_dim(1);
            start += n;
        }
        let rivals = rivals.into_data().convert::<i64>();
        let gallery_ok =
            rivals.as_slice::<i64>().expect("i64 counts").iter().map(|&c| c == 0).collect();
        Ok(Self {
            probes: probes_t,
            truth,
            gallery_ok,
            first_beaten: Tensor::<B, 2, Int>::full([p, 1], NEVER, device),
            distractors: 0,
            origin: probes.origin.clone(),
        })
    }

    /// Adds the next distractors; their indices continue from those added before.
    ///
    /// # Shapes
    /// `block`: `[n, dim]`, finite, rows need not be normalised (a zero row never wins).
    pub fn add_distractors(&mut self, block: Tensor<B, 2>) -> Result<()> {
        let [rows, cols] = block.dims();
        let [p, dim] = self.probes.dims();
        if cols != dim {
            return Err(EvalError::length_mismatch(
                &self.origin,
                dim,
                format!("distractors {}..{}", self.distractors, self.distractors + rows),
                cols,
                "columns",
            ));
        }
        let bad = block.clone().is_nan().bool_or(block.clone().is_inf()).any().int();
        if bad.into_data().convert::<i64>().as_slice::<i64>().expect("i64 flag")[0] != 0 {
            return Err(EvalError::invalid(
                format!("distractors {}..{}", self.distractors, self.distractors + rows),
                "finite embeddings",
                "NaN or infinity",
            ));
        }
        let device = block.device();
        let block = unit(block);
        let step = block_rows(p);
        let mut start = 0;
        while start < rows {
            let n = step.min(rows - start);
            let scores =
                self.probes.clone().matmul(block.clone().slice(start..start + n).transpose());
            let beaten = scores.greater_equal(self.truth.clone().expand([p, n]));
            let first = column_indices::<B>(self.distractors + start, n, p, &device)
                .mask_fill(beaten.bool_not(), NEVER)
                .min_dim(1);
            self.first_beaten = self.first_beaten.clone().min_pair(first);
            start += n;
        }
        self.distractors += rows;
        Ok(())
    }

    /// Distractors added so far.
    pub fn distractors(&self) -> usize {
        self.distractors
    }

    /// Rank-1 at each of `counts` distractors (each at most [`Self::distractors`]).
    pub fn result_at(&self, counts: &[usize]) -> Result<Rank1Result> {
        if let Some(&n) = counts.iter().find(|&&n| n > self.distractors) {
            return Err(EvalError::invalid(
                "distractor count",
                format!("at most {} (the distractors added)", self.distractors),
                n,
            ));
        }
        let first = self.first_beaten.clone().into_data().convert::<i64>();
        let survives: Vec<(bool, usize)> = self
            .gallery_ok
            .iter()
            .zip(first.as_slice::<i64>().expect("i64 indices"))
            .map(|(&ok, &f)| (ok, if ok { (f as usize).min(self.distractors) } else { 0 }))
            .collect();
        Ok(Rank1Result::from_survival(&survives, counts))
    }

    /// Rank-1 at MegaFace's log-spaced counts up to every distractor added.
    pub fn result(&self) -> Result<Rank1Result> {
        self.result_at(&distractor_counts(self.distractors))
    }
}

/// Rank-1 of host matrices on the backend: [`crate::protocol::identification::rank1`], batched.
pub fn rank1_on<B: Backend, L: Eq + Hash + Display>(
    probes: &Matrix<f32>,
    probe_labels: &[L],
    gallery: &Matrix<f32>,
    gallery_labels: &[L],
    distractors: &Matrix<f32>,
    device: &B::Device,
) -> Result<Rank1Result> {
    let mut search = Rank1Search::<B>::new(probes, probe_labels, gallery, gallery_labels, device)?;
    if distractors.rows > 0 {
        if distractors.cols != probes.cols {
            return Err(EvalError::length_mismatch(
                &probes.origin,
                probes.cols,
                &distractors.origin,
                distractors.cols,
                "columns",
            ));
        }
        // Same messages as the reference for non-finite or zero rows.
        unit_rows(distractors)?;
        let step = block_rows(probes.rows).max(4096);
        for start in (0..distractors.rows).step_by(step) {
            let n = step.min(distractors.rows - start);
            let values =
                distractors.data[start * distractors.cols..(start + n) * distractors.cols].to_vec();
            let block =
                Tensor::<B, 2>::from_data(TensorData::new(values, [n, distractors.cols]), device);
            search.add_distractors(block)?;
        }
    }
    search.result()
}
