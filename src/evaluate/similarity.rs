//! Similarity scores (SPEC section 3).
//!
//! Group-aware similarity adds a penalty for pairs whose GDN intermediate features disagree:
//! `S*(x_i, x_j) = cos(v̄_i, v̄_j) − β·‖v̂_i − v̂_j‖₂^γ`, with β = 0.1 and γ = 1/3, on raw
//! (unnormalised) v̂.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::objective::loss::l2_normalize;
use crate::util::named_enum;

/// Which similarity scores a pair (`similarity=plain|group-aware`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SimilarityKind {
    /// Cosine of the embeddings.
    #[default]
    Plain,
    /// Cosine minus the GDN-feature penalty.
    GroupAware,
}

named_enum!(SimilarityKind, "plain|group-aware", Plain => "plain", GroupAware => "group-aware");

/// β and γ of group-aware similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupAwareParams {
    /// Weight β of the penalty (0.1).
    pub beta: f64,
    /// Exponent γ of the distance (1/3).
    pub gamma: f64,
}

impl Default for GroupAwareParams {
    fn default() -> Self {
        Self { beta: 0.1, gamma: 1.0 / 3.0 }
    }
}

/// Cosine similarity of matching rows.
///
/// # Shapes
/// - `a`, `b`: `[pairs, width]`
/// - output: `[pairs]`
pub fn cosine_rows<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    let pairs = a.dims()[0];
    (l2_normalize(a) * l2_normalize(b)).sum_dim(1).reshape([pairs])
}

/// Group-aware similarity of matching rows.
///
/// # Shapes
/// - `embedding_a`, `embedding_b`: `[pairs, D]` (v̄)
/// - `feature_a`, `feature_b`: `[pairs, F]` (v̂, raw)
/// - output: `[pairs]`
// ANCHOR: group_aware_rows
pub fn group_aware_rows<B: Backend>(
    embedding_a: Tensor<B, 2>,
    feature_a: Tensor<B, 2>,
    embedding_b: Tensor<B, 2>,
    feature_b: Tensor<B, 2>,
    params: GroupAwareParams,
) -> Tensor<B, 1> {
    let pairs = feature_a.dims()[0];
    let distance = (feature_a - feature_b).powi_scalar(2).sum_dim(1).sqrt().reshape([pairs]);
    cosine_rows(embedding_a, embedding_b) - distance.powf_scalar(params.gamma) * params.beta
}
// ANCHOR_END: group_aware_rows

/// Group-aware similarity of every row of `a` against every row of `b`.
///
/// # Shapes
/// - `embedding_a`: `[n, D]`, `feature_a`: `[n, F]`
/// - `embedding_b`: `[m, D]`, `feature_b`: `[m, F]`
/// - output: `[n, m]`
pub fn group_aware_matrix<B: Backend>(
    embedding_a: Tensor<B, 2>,
    feature_a: Tensor<B, 2>,
    embedding_b: Tensor<B, 2>,
    feature_b: Tensor<B, 2>,
    params: GroupAwareParams,
) -> Tensor<B, 2> {
    let cosine = l2_normalize(embedding_a).matmul(l2_normalize(embedding_b).transpose());
    // ‖a − b‖² = ‖a‖² + ‖b‖² − 2·a·b, clamped at 0 against rounding.
    let sq_a = feature_a.clone().powi_scalar(2).sum_dim(1);
    let sq_b = feature_b.clone().powi_scalar(2).sum_dim(1).transpose();
    let cross = feature_a.matmul(feature_b.transpose());
    let distance = (sq_a + sq_b - cross * 2.0).clamp_min(0.0).sqrt();
    cosine - distance.powf_scalar(params.gamma) * params.beta
}
