//! The backbone registry: name → constructor and the facts a stage needs before building one
//! (feature size, input size, normalisation, default weights).

use crate::data::transform::Normalize;
use crate::model::{bn_inception, efficientnet_lite, resnet, tiny_cnn, Backbone};
use anyhow::{anyhow, Result};
use tch::nn;

/// One registered backbone.
#[derive(Debug, Clone, Copy)]
pub struct BackboneSpec {
    /// Registry name (`--backbone`, `backbone =` in pipeline/).
    pub name: &'static str,
    /// One line for `gl models`.
    pub description: &'static str,
    /// D of the pooled features.
    pub feature_dim: i64,
    /// Side of the square input the weights were trained with.
    pub input_size: u32,
    /// Shorter side before the evaluation centre crop (256 for 227/224 inputs).
    pub resize: u32,
    /// Input normalisation the weights expect.
    pub normalize: Normalize,
    /// Name in pipeline/weights.toml of the ImageNet weights, if any.
    pub imagenet_weights: Option<&'static str>,
    /// Builds the backbone with its variables under `p`, named like its reference state dict.
    pub build: fn(&nn::Path) -> Box<dyn Backbone>,
}

const REGISTRY: &[BackboneSpec] = &[
    BackboneSpec {
        name: "bn_inception",
        description: "BN-Inception, the Caffe port the paper used (BGR 0–255, 227², 1024-d)",
        feature_dim: 1024,
        input_size: 227,
        resize: 256,
        normalize: Normalize::BnInception,
        imagenet_weights: Some("bn_inception_imagenet"),
        build: |p| Box::new(bn_inception::BnInception::new(p)),
    },
    BackboneSpec {
        name: "resnet50",
        description: "ResNet-50, torchvision layout (RGB ImageNet normalisation, 224², 2048-d)",
        feature_dim: 2048,
        input_size: 224,
        resize: 256,
        normalize: Normalize::ImageNet,
        imagenet_weights: Some("resnet50_imagenet"),
        build: |p| Box::new(resnet::ResNet50::new(p)),
    },
    BackboneSpec {
        name: "efficientnet_lite0",
        description: "EfficientNet-Lite0, TF Lite weights (RGB (x−127)/128, 224², 1280-d)",
        feature_dim: efficientnet_lite::FEATURE_DIM,
        input_size: 224,
        resize: 256,
        normalize: Normalize::EfficientNetLite,
        imagenet_weights: Some("efficientnet_lite0_imagenet"),
        build: |p| Box::new(efficientnet_lite::EfficientNetLite0::new(p)),
    },
    BackboneSpec {
        name: "tiny_cnn",
        description: "4-layer CNN, random init only: tests and smoke runs (any size ≥ 16², 128-d)",
        feature_dim: tiny_cnn::FEATURE_DIM,
        input_size: 32,
        resize: 36,
        normalize: Normalize::ImageNet,
        imagenet_weights: None,
        build: |p| Box::new(tiny_cnn::TinyCnn::new(p)),
    },
];

/// Every registered backbone, in listing order.
pub fn registry() -> &'static [BackboneSpec] {
    REGISTRY
}

/// The backbone called `name`, or an error listing the known names.
pub fn spec(name: &str) -> Result<&'static BackboneSpec> {
    REGISTRY.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<_> = REGISTRY.iter().map(|s| s.name).collect();
        anyhow!("unknown backbone {name:?}; known: {}", known.join(", "))
    })
}
