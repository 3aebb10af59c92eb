//! The training objective: margin softmax losses, the self-grouping loss and Center loss
//! ([`loss`]), and the group labels that the self-grouping loss learns from ([`labels`]).

pub mod labels;
pub mod loss;
