//! Evaluation: embedding a split with a trained network and retrieval metrics on it.

pub mod embed;
pub mod recall;
