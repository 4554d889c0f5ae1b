//! Evaluation: embedding a split with a trained network, exact neighbours, and the paper's
//! metrics on them (Recall@K, NMI) with MAP@R and R-Precision beside.

pub mod embed;
pub mod embeddings_file;
pub mod kmeans;
pub mod knn;
pub mod metrics;
pub mod nmi;
pub mod retrieval;
pub mod topk;
