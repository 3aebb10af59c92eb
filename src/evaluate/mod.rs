//! Running a model through a protocol: embeddings on the backend ([`embed`]), plain and
//! group-aware similarity ([`similarity`]), rank-1 search as a matmul ([`identify`]), the
//! held-out evaluation that training runs after each epoch ([`held_out`]), listed pairs and
//! `.bin` files ([`pairs`]), IJB ([`ijb`]) and the `.bin` validation targets measured during
//! training ([`targets`]). The host-side metrics are [`crate::protocol`]'s.

pub mod embed;
pub mod held_out;
pub mod identify;
pub mod ijb;
pub mod pairs;
pub mod similarity;
pub mod targets;
