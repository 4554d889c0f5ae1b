//! Losses: the Group Loss ([`group_loss`]) with its anchor rules ([`anchors`]) and the reader
//! of the official implementation's reference vectors ([`golden`]); the losses it is compared
//! with, one file each, on the shared batch checks and pair tables of [`batch`].

pub mod anchors;
pub mod arcface;
pub mod batch;
pub mod contrastive;
pub mod golden;
pub mod group_loss;
pub mod multi_similarity;
pub mod normalized_softmax;
pub mod proxy_anchor;
pub mod triplet;

pub use anchors::{AnchorError, Anchors};
pub use batch::LossError;
pub use group_loss::{
    GroupLoss, GroupLossError, GroupLossOptions, GroupLossOutput, Priors, Targets,
};
