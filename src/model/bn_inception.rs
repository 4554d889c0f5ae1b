//! BN-Inception (Inception v2 with batch normalisation), the backbone of the Group Loss paper.
//!
//! This is the Caffe port used by proxy-nca and by the official Group Loss code
//! (`net/inception_bn.py` in `dvl-tum/group_loss`), written anew for tch. Details that
//! matter for reproducing it:
//!
//! * Input: N×3×227×227 (224×224 also works and gives the same 7×7 last map), **BGR** channel
//!   order, range 0–255, with [`MEAN_BGR`] subtracted and no division by a standard deviation.
//! * Every convolution has a bias and is followed by a BatchNorm (`eps = 1e-5`, affine, PyTorch
//!   momentum 0.9 as in the port) and a ReLU. The official forward concatenates tensors that its
//!   in-place ReLUs have already rectified, so every branch output here is ReLU'd.
//! * Max pools use `ceil_mode = true`; the pool branches of 3a, 3b, 4a–4d and 5a are 3×3/1 average
//!   pools with padding 1 that count the padding (computed after their 1×1 projection, which
//!   equals it: see `ConvBn::forward_after_avg_pool`); 5b uses a 3×3/1 max pool; 3c and 4e are
//!   reduction blocks (stride-2 convolutions, a 3×3/2 max pool concatenated without projection).
//! * Output: the 1024 channels of `inception_5b_output`, averaged over space (the official
//!   7×7 average pool over a 7×7 map), N×1024. The ImageNet head `last_linear` is not built.
//!
//! Variable names equal the official `state_dict` keys (`conv1_7x7_s2.weight`,
//! `conv1_7x7_s2_bn.running_mean`, `inception_3a_1x1.bias`, …), so a checkpoint converted to
//! named tensors loads by name. The official `bn_inception_weights_pt04.pt` additionally holds
//! `last_linear.weight` and `last_linear.bias`, which a loader has to skip.

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Per-channel mean subtracted from 0–255 BGR input (Caffe convention).
pub const MEAN_BGR: [f64; 3] = [104.0, 117.0, 128.0];

/// Side of the square input the weights were trained with.
pub const INPUT_SIZE: i64 = 227;

/// Dimension of the pooled features returned by [`BnInception`].
pub fn feature_dim() -> i64 {
    1024
}

/// Convolution + BatchNorm + ReLU, named `<name>` and `<name>_bn` like the official port.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(p: &nn::Path, name: &str, c_in: i64, c_out: i64, k: i64, stride: i64) -> Self {
        let conv_cfg = nn::ConvConfig {
            stride,
            padding: k / 2,
            bias: true,
            ..Default::default()
        };
        let bn_cfg = nn::BatchNormConfig {
            eps: 1e-5,
            momentum: 0.9,
            affine: true,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(p / name, c_in, c_out, k, conv_cfg),
            bn: nn::batch_norm2d(p / format!("{name}_bn"), c_out, bn_cfg),
        }
    }
}

impl ModuleT for ConvBn {
    /// The ReLU runs in place on the BatchNorm output, as the official port's `inplace=True`
    /// ReLUs do (BatchNorm's backward needs only its input): one activation-sized tensor less
    /// per unit, in memory and in memory traffic.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.conv_bn(xs, train);
        let _ = ys.relu_();
        ys
    }
}

impl ConvBn {
    /// Convolution and BatchNorm, before the unit's ReLU.
    fn conv_bn(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train)
    }

    /// This unit followed by the stem's 3×3/2 max pool, with the ReLU moved after the pool:
    /// max and ReLU commute exactly (both monotone; the gradient reaches the same element
    /// through the same mask), so the result is bit-identical while the ReLU and its backward
    /// run over the pooled map, a quarter of the unit's (conv1: 180 MB → 45 MB at the CUB
    /// batch).
    fn forward_max_pooled(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self
            .conv_bn(xs, train)
            .max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true);
        let _ = ys.relu_();
        ys
    }

    /// `avg_pool2d(3×3, stride 1, padding 1, padding counted)` followed by this unit (a 1×1
    /// convolution), computed the other way round: the convolution without its bias, the pool,
    /// then the bias. Both maps are linear and the pool counts its zero padding, so
    /// pool(W x) + b = W pool(x) + b exactly in real arithmetic (float sums round differently,
    /// ~1e-7 relative); the pool then runs over the unit's output channels instead of its
    /// input's (128 instead of 576–1056 in 4a–5a), in the forward and the backward.
    fn forward_after_avg_pool(&self, xs: &Tensor, train: bool) -> Tensor {
        let ws = &self.conv.ws;
        debug_assert_eq!(&ws.size()[2..], &[1, 1]);
        let pooled = xs
            .conv2d(ws, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
            .avg_pool2d([3, 3], [1, 1], [1, 1], true, true, None);
        let projected = match &self.conv.bs {
            Some(b) => pooled + b.view([1, -1, 1, 1]),
            None => pooled,
        };
        let mut ys = projected.apply_t(&self.bn, train);
        let _ = ys.relu_();
        ys
    }
}

/// Pooling branch of an inception block.
#[derive(Debug, Clone, Copy)]
enum PoolBranch {
    /// 3×3/1 average pool (padding 1, padding counted) followed by `pool_proj` to this width.
    AvgProj(i64),
    /// 3×3/1 max pool (padding 1, ceil mode) followed by `pool_proj` to this width.
    MaxProj(i64),
}

/// Widths of one inception block; `c1x1 == None` marks a stride-2 reduction block.
#[derive(Debug, Clone, Copy)]
struct BlockSpec {
    name: &'static str,
    c_in: i64,
    c1x1: Option<i64>,
    c3x3_reduce: i64,
    c3x3: i64,
    double_reduce: i64,
    double: i64,
    pool: Option<PoolBranch>,
}

/// (name, in, 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool branch).
#[rustfmt::skip]
const BLOCKS: [BlockSpec; 10] = [
    block("inception_3a", 192, Some(64), 64, 64, 64, 96, Some(PoolBranch::AvgProj(32))),
    block("inception_3b", 256, Some(64), 64, 96, 64, 96, Some(PoolBranch::AvgProj(64))),
    block("inception_3c", 320, None, 128, 160, 64, 96, None),
    block("inception_4a", 576, Some(224), 64, 96, 96, 128, Some(PoolBranch::AvgProj(128))),
    block("inception_4b", 576, Some(192), 96, 128, 96, 128, Some(PoolBranch::AvgProj(128))),
    block("inception_4c", 576, Some(160), 128, 160, 128, 160, Some(PoolBranch::AvgProj(128))),
    block("inception_4d", 608, Some(96), 128, 192, 160, 192, Some(PoolBranch::AvgProj(128))),
    block("inception_4e", 608, None, 128, 192, 192, 256, None),
    block("inception_5a", 1056, Some(352), 192, 320, 160, 224, Some(PoolBranch::AvgProj(128))),
    block("inception_5b", 1024, Some(352), 192, 320, 192, 224, Some(PoolBranch::MaxProj(128))),
];

#[allow(clippy::too_many_arguments)]
const fn block(
    name: &'static str,
    c_in: i64,
    c1x1: Option<i64>,
    c3x3_reduce: i64,
    c3x3: i64,
    double_reduce: i64,
    double: i64,
    pool: Option<PoolBranch>,
) -> BlockSpec {
    BlockSpec {
        name,
        c_in,
        c1x1,
        c3x3_reduce,
        c3x3,
        double_reduce,
        double,
        pool,
    }
}

impl BlockSpec {
    fn out_channels(&self) -> i64 {
        let pool = match self.pool {
            Some(PoolBranch::AvgProj(c) | PoolBranch::MaxProj(c)) => c,
            None => self.c_in,
        };
        self.c1x1.unwrap_or(0) + self.c3x3 + self.double + pool
    }
}

/// One inception block; layer names are `<block>_<branch layer>` at the backbone's root.
#[derive(Debug)]
struct Inception {
    b1x1: Option<ConvBn>,
    b3x3_reduce: ConvBn,
    b3x3: ConvBn,
    double_reduce: ConvBn,
    double_1: ConvBn,
    double_2: ConvBn,
    pool: Option<(PoolBranch, ConvBn)>,
}

impl Inception {
    fn new(p: &nn::Path, s: &BlockSpec) -> Self {
        let n = |layer: &str| format!("{}_{layer}", s.name);
        // Reduction blocks (no 1x1 branch) downsample with stride-2 convolutions.
        let stride = if s.c1x1.is_some() { 1 } else { 2 };
        let pool = s.pool.map(|kind| {
            let c = match kind {
                PoolBranch::AvgProj(c) | PoolBranch::MaxProj(c) => c,
            };
            (kind, ConvBn::new(p, &n("pool_proj"), s.c_in, c, 1, 1))
        });
        Inception {
            b1x1: s.c1x1.map(|c| ConvBn::new(p, &n("1x1"), s.c_in, c, 1, 1)),
            b3x3_reduce: ConvBn::new(p, &n("3x3_reduce"), s.c_in, s.c3x3_reduce, 1, 1),
            b3x3: ConvBn::new(p, &n("3x3"), s.c3x3_reduce, s.c3x3, 3, stride),
            double_reduce: ConvBn::new(p, &n("double_3x3_reduce"), s.c_in, s.double_reduce, 1, 1),
            double_1: ConvBn::new(p, &n("double_3x3_1"), s.double_reduce, s.double, 3, 1),
            double_2: ConvBn::new(p, &n("double_3x3_2"), s.double, s.double, 3, stride),
            pool,
        }
    }
}

impl ModuleT for Inception {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut outs = Vec::with_capacity(4);
        if let Some(b) = &self.b1x1 {
            outs.push(xs.apply_t(b, train));
        }
        outs.push(
            xs.apply_t(&self.b3x3_reduce, train)
                .apply_t(&self.b3x3, train),
        );
        outs.push(
            xs.apply_t(&self.double_reduce, train)
                .apply_t(&self.double_1, train)
                .apply_t(&self.double_2, train),
        );
        outs.push(match &self.pool {
            Some((PoolBranch::AvgProj(_), proj)) => proj.forward_after_avg_pool(xs, train),
            Some((PoolBranch::MaxProj(_), proj)) => xs
                .max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], true)
                .apply_t(proj, train),
            None => xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true),
        });
        Tensor::cat(&outs, 1)
    }
}

/// BN-Inception feature extractor: image batch N×3×227×227 → pooled features N×1024.
#[derive(Debug)]
pub struct BnInception {
    conv1_7x7_s2: ConvBn,
    conv2_3x3_reduce: ConvBn,
    conv2_3x3: ConvBn,
    blocks: Vec<Inception>,
}

impl BnInception {
    /// Builds the backbone with every layer directly under `p`, named like the official port.
    pub fn new(p: &nn::Path) -> Self {
        debug_assert!(BLOCKS.windows(2).all(|w| w[0].out_channels() == w[1].c_in));
        debug_assert_eq!(BLOCKS[BLOCKS.len() - 1].out_channels(), feature_dim());
        BnInception {
            conv1_7x7_s2: ConvBn::new(p, "conv1_7x7_s2", 3, 64, 7, 2),
            conv2_3x3_reduce: ConvBn::new(p, "conv2_3x3_reduce", 64, 64, 1, 1),
            conv2_3x3: ConvBn::new(p, "conv2_3x3", 64, 192, 3, 1),
            blocks: BLOCKS.iter().map(|s| Inception::new(p, s)).collect(),
        }
    }

    /// The last feature map before pooling (N×1024×7×7 for 227×227 input).
    pub fn feature_map(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = self.conv1_7x7_s2.forward_max_pooled(xs, train);
        let xs = self
            .conv2_3x3
            .forward_max_pooled(&xs.apply_t(&self.conv2_3x3_reduce, train), train);
        self.blocks
            .iter()
            .fold(xs, |xs, block| xs.apply_t(block, train))
    }
}

impl crate::model::Backbone for BnInception {
    /// Global average pooling of [`BnInception::feature_map`]; BN-Inception has no stochastic
    /// layers, so only BatchNorm reads the mode.
    fn forward_features(&self, xs: &Tensor, mode: crate::model::ForwardMode) -> Tensor {
        self.forward_t(xs, mode.bn_train)
    }
}

impl ModuleT for BnInception {
    /// Global average pooling of [`BnInception::feature_map`]: N×1024.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map(xs, train)
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The two reorderings against the literal order (pool of the ReLU'd unit; pool, then the
    /// unit): values and input gradients.
    #[test]
    fn reordered_pools_equal_the_official_order() {
        let vs = nn::VarStore::new(Device::Cpu);
        let unit = ConvBn::new(&vs.root(), "u", 8, 16, 1, 1);
        let x = Tensor::randn([2, 8, 15, 15], (Kind::Float, Device::Cpu));
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let x = x.copy().set_requires_grad(true);
            let y = f(&x);
            (y.square().sum(Kind::Float) + y.sum(Kind::Float)).backward();
            (y.detach(), x.grad())
        };
        let literal = run(&|x| {
            x.apply_t(&unit, true)
                .max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true)
        });
        let reordered = run(&|x| unit.forward_max_pooled(x, true));
        assert!(reordered.0.equal(&literal.0), "max pool: values differ");
        assert!(reordered.1.equal(&literal.1), "max pool: gradients differ");

        let literal = run(&|x| {
            x.avg_pool2d([3, 3], [1, 1], [1, 1], true, true, None)
                .apply_t(&unit, true)
        });
        let reordered = run(&|x| unit.forward_after_avg_pool(x, true));
        for (a, b, what) in [
            (&reordered.0, &literal.0, "values"),
            (&reordered.1, &literal.1, "gradients"),
        ] {
            let rel = ((a - b).abs().max() / b.abs().max()).double_value(&[]);
            assert!(rel < 1e-5, "avg pool: {what} differ by {rel:e}");
        }
    }
}
