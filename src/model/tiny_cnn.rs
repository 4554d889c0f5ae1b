//! A four-layer CNN (conv-BN-ReLU ×4, global average pooling, 128-d) with no pretrained
//! weights: not a research backbone but a fast one, so tests, the Slurm recipes and smoke runs
//! exercise the whole training path (BatchNorm, checkpoints, resume) in seconds on a CPU.

use crate::model::{Backbone, ForwardMode};
use tch::nn;
use tch::Tensor;

/// Channels of the four stages; the last is the feature size.
const CHANNELS: [i64; 4] = [16, 32, 64, 128];

/// Feature size of [`TinyCnn`].
pub const FEATURE_DIM: i64 = CHANNELS[3];

#[derive(Debug)]
pub struct TinyCnn {
    stages: Vec<(nn::Conv2D, nn::BatchNorm)>,
}

impl TinyCnn {
    /// Stages `s0`…`s3`, each `conv` (3×3, stride 2) + `bn`.
    pub fn new(p: &nn::Path) -> Self {
        let mut c_in = 3;
        let stages = CHANNELS
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let s = p / format!("s{i}");
                let conv_cfg = nn::ConvConfig {
                    stride: 2,
                    padding: 1,
                    bias: false,
                    ..Default::default()
                };
                let stage = (
                    nn::conv2d(&s / "conv", c_in, c, 3, conv_cfg),
                    nn::batch_norm2d(&s / "bn", c, Default::default()),
                );
                c_in = c;
                stage
            })
            .collect();
        TinyCnn { stages }
    }
}

impl Backbone for TinyCnn {
    fn forward_features(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        self.stages
            .iter()
            .fold(xs.shallow_clone(), |x, (conv, bn)| {
                x.apply(conv).apply_t(bn, mode.bn_train).relu()
            })
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }
}
