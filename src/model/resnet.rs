//! ResNet-50 from tch's vision models, without its ImageNet head: N×3×224×224 → N×2048.
//! tch names the variables like torchvision (`conv1.weight`, `layer1.0.bn1.running_mean`, …), so
//! torchvision's converted weights load by name; their `fc.*` has to be skipped.

use crate::model::{Backbone, ForwardMode};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// ResNet-50 feature extractor (global-average-pooled `layer4`).
#[derive(Debug)]
pub struct ResNet50 {
    net: Box<dyn ModuleT>,
}

impl ResNet50 {
    /// Builds ResNet-50 with torchvision's variable names directly under `p`.
    pub fn new(p: &nn::Path) -> Self {
        ResNet50 {
            net: Box::new(tch::vision::resnet::resnet50_no_final_layer(p)),
        }
    }
}

impl Backbone for ResNet50 {
    fn forward_features(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        // ResNet has no stochastic layers: only BatchNorm reads the flag.
        self.net.forward_t(xs, mode.bn_train)
    }
}
