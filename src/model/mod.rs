//! Backbones behind one small registry (timm-style: a name → constructor), listed by
//! `gl models`. Every backbone maps an image batch N×3×S×S (normalised as its
//! [`BackboneSpec::normalize`] says) to pooled features N×D; the embedding layer and the
//! classifier that gives the Group Loss priors live in [`crate::model::net`].

pub mod bn_inception;
pub mod efficientnet_lite;
pub mod execution;
pub mod linear;
pub mod net;
pub mod registry;
pub mod resnet;
pub mod tiny_cnn;
pub mod weights;

pub use registry::{registry, spec, BackboneSpec};

use tch::Tensor;

/// How a forward pass treats BatchNorm and stochastic layers. Separate flags because a
/// frozen-BatchNorm fine-tune runs the rest of the network in training mode (dropout,
/// drop-connect) while BatchNorm uses and keeps its running statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardMode {
    /// Stochastic layers (dropout, drop-connect) active.
    pub train: bool,
    /// BatchNorm normalises with batch statistics and updates its running statistics.
    pub bn_train: bool,
}

impl ForwardMode {
    /// Inference: everything deterministic, running statistics used.
    pub const EVAL: ForwardMode = ForwardMode {
        train: false,
        bn_train: false,
    };
    /// Training with BatchNorm in training mode (the official code).
    pub const TRAIN: ForwardMode = ForwardMode {
        train: true,
        bn_train: true,
    };
    /// Training with BatchNorm frozen (running statistics used and not updated; its affine
    /// parameters still learn).
    pub const TRAIN_FROZEN_BN: ForwardMode = ForwardMode {
        train: true,
        bn_train: false,
    };
}

/// A feature extractor: images → pooled features f (N×D). `Send` so a model can move to the
/// thread that trains it.
pub trait Backbone: std::fmt::Debug + Send {
    /// Pooled features N×[`BackboneSpec::feature_dim`].
    fn forward_features(&self, xs: &Tensor, mode: ForwardMode) -> Tensor;
}
