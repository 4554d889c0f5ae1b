//! Losses. Today: the Group Loss ([`group_loss`]) with its anchor rules ([`anchors`]) and the
//! reader of the official implementation's reference vectors ([`golden`]).

pub mod anchors;
pub mod golden;
pub mod group_loss;

pub use anchors::{AnchorError, Anchors};
pub use group_loss::{
    GroupLoss, GroupLossError, GroupLossOptions, GroupLossOutput, Priors, Targets,
};
