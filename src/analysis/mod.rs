//! What the learned groups capture, on plain `f32` rows a caller computed with a model: group
//! usage and its entropy, normalised mutual information with hidden attributes, a 2-D PCA
//! scatter as SVG and per-group image grids ([`groups`]).

pub mod groups;
