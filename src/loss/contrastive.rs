//! Contrastive loss of Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an
//! Invariant Mapping", CVPR 2006, over every pair of a batch.
//!
//! For a pair (X₁, X₂) with Y = 0 when the two are similar (same class) and Y = 1 when they are
//! dissimilar, and D_W the Euclidean distance of their L2-normalised embeddings, the paper's
//! eq. 4 is
//!
//! ```text
//! L(W, Y, X₁, X₂) = (1 − Y) · ½ · D_W²  +  Y · ½ · {max(0, m − D_W)}²
//! ```
//!
//! Every ordered pair (i, j), i ≠ j, of the batch is one term, as in pytorch-metric-learning
//! (PML) 2.9.0's `ContrastiveLoss`. The batch reduction is PML's (`AvgNonZeroReducer`): the mean
//! of the similar-pair terms that are > 0 plus the mean of the dissimilar-pair terms that are
//! > 0; either mean is 0 when it has no term > 0.
//!
//! Where PML differs from the paper (we follow the paper unless said otherwise):
//!
//! - **Hinge.** PML's `ContrastiveLoss(pos_margin=0, neg_margin=m)` uses [D]₊ and [m − D]₊,
//!   not squared and without the ½. [`ContrastiveOptions::squared`] = `true` (the default) is
//!   the paper's eq. 4; `false` is PML's exact form. The golden test
//!   (`tests/it/pair_losses_golden.rs`) checks both against PML and shows that PML's default
//!   `ContrastiveLoss()` gives another value than our default.
//! - **Batch reduction.** The paper gives none beyond a sum over training pairs (§2); we keep
//!   PML's AvgNonZero reduction described above.
//! - **Margin.** The paper leaves m to the experiment; the default m = 1.0 is PML's
//!   `neg_margin` default (half the diameter of the unit sphere the embeddings are normalised
//!   to). The similar-pair term has no margin in the paper, which is PML's `pos_margin = 0`.
//!
//! Embeddings are L2-normalised inside the loss and distances taken with `cdist`, exactly as
//! PML's `LpDistance()` does (see [`crate::loss::batch`]).

use crate::loss::batch::{avg_non_zero, check_batch, check_param, euclidean, LossError, PairMasks};
use tch::Tensor;

/// Options of the contrastive loss; [`ContrastiveLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveOptions {
    /// Margin m of the dissimilar-pair hinge: dissimilar pairs farther apart than m cost
    /// nothing (PML's `neg_margin`). Finite and > 0. Default 1.0.
    pub neg_margin: f64,
    /// `true`: the paper's ½D² and ½[m − D]₊² (default); `false`: PML's [D]₊ and [m − D]₊.
    pub squared: bool,
}

impl Default for ContrastiveOptions {
    /// The paper's squared form (eq. 4) with PML's margin 1.0.
    fn default() -> Self {
        ContrastiveOptions {
            neg_margin: 1.0,
            squared: true,
        }
    }
}

/// A validated contrastive loss, reusable across batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContrastiveLoss {
    opts: ContrastiveOptions,
}

impl ContrastiveLoss {
    /// Validates the options: `neg_margin` finite and > 0.
    pub fn new(opts: ContrastiveOptions) -> Result<Self, LossError> {
        check_param("neg_margin", opts.neg_margin, "finite and > 0", |m| m > 0.0)?;
        Ok(ContrastiveLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &ContrastiveOptions {
        &self.opts
    }

    /// The loss of one batch: `embeddings` n×d (f32 or f64, any device), `labels` n int64 on the
    /// same device. Returns a 0-d tensor of the embeddings' dtype, in the autograd graph (a
    /// graph-connected 0 when no pair is active).
    pub fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        check_batch(embeddings, labels)?;
        let d = euclidean(embeddings, false);
        let masks = PairMasks::new(labels);
        // PML's `relu(d - pos_margin)` with pos_margin 0, and `relu(neg_margin - d)`.
        let similar = d.f_relu()?;
        let dissimilar = d.f_neg()?.f_add_scalar(self.opts.neg_margin)?.f_relu()?;
        let (similar, dissimilar) = if self.opts.squared {
            (
                similar.f_pow_tensor_scalar(2)?.f_mul_scalar(0.5)?,
                dissimilar.f_pow_tensor_scalar(2)?.f_mul_scalar(0.5)?,
            )
        } else {
            (similar, dissimilar)
        };
        Ok(avg_non_zero(&similar, &masks.positive)?
            .f_add(&avg_non_zero(&dissimilar, &masks.negative)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::batch::test_util::points;
    use tch::{Device, Kind};

    #[test]
    fn bad_options_are_rejected_naming_the_key() {
        for m in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = ContrastiveLoss::new(ContrastiveOptions {
                neg_margin: m,
                squared: true,
            })
            .unwrap_err();
            assert!(
                matches!(
                    e,
                    LossError::Param {
                        name: "neg_margin",
                        ..
                    }
                ),
                "{e}"
            );
        }
        let loss = ContrastiveLoss::new(ContrastiveOptions::default()).unwrap();
        assert_eq!(loss.options(), &ContrastiveOptions::default());
    }

    #[test]
    fn a_bad_batch_is_rejected() {
        let loss = ContrastiveLoss::new(ContrastiveOptions::default()).unwrap();
        let x = Tensor::zeros([3, 2], (Kind::Double, Device::Cpu));
        let e = loss
            .forward(&x, &Tensor::from_slice(&[0i64, 1]))
            .unwrap_err();
        assert!(matches!(e, LossError::Shape { what: "labels", .. }), "{e}");
        let e = loss.forward(&x.to_kind(Kind::Half), &Tensor::from_slice(&[0i64, 1, 1]));
        assert!(matches!(e, Err(LossError::Dtype(Kind::Half))));
    }

    #[test]
    fn a_hand_computed_batch() {
        // a = 0°, b = 90° (same class): D = √2, so ½D² = 1 in each order. c at θ with chord
        // 2·sin(θ/2) = 0.5 from a: ½(1 − 0.5)² = 0.125 in each order; b–c is 1.0157 > m.
        // Paper: 1 + 0.125. PML's form: √2 + 0.5.
        let theta = 2.0 * 0.25f64.asin().to_degrees();
        let x = points(&[0.0, 90.0, theta]);
        let y = Tensor::from_slice(&[0i64, 0, 1]);
        let paper = ContrastiveLoss::new(ContrastiveOptions::default()).unwrap();
        let got = paper.forward(&x, &y).unwrap().double_value(&[]);
        assert!((got - 1.125).abs() < 1e-12, "{got}");
        let pml = ContrastiveLoss::new(ContrastiveOptions {
            squared: false,
            ..ContrastiveOptions::default()
        })
        .unwrap();
        let got = pml.forward(&x, &y).unwrap().double_value(&[]);
        assert!((got - (2f64.sqrt() + 0.5)).abs() < 1e-12, "{got}");
        // f32 in, f32 out.
        let got = paper.forward(&x.to_kind(Kind::Float), &y).unwrap();
        assert_eq!(got.kind(), Kind::Float);
        assert!((got.double_value(&[]) - 1.125).abs() < 1e-6);
    }

    #[test]
    fn no_active_pair_is_a_connected_zero() {
        // Same class at one direction (D = 0), other class at 180° (D = 2 > m).
        let x = (points(&[0.0, 0.0, 180.0]) * Tensor::from_slice(&[1.0, 2.0, 3.0]).view([3, 1]))
            .set_requires_grad(true);
        let y = Tensor::from_slice(&[0i64, 0, 1]);
        let loss = ContrastiveLoss::new(ContrastiveOptions::default())
            .unwrap()
            .forward(&x, &y)
            .unwrap();
        assert_eq!(loss.size(), Vec::<i64>::new());
        assert_eq!(loss.double_value(&[]), 0.0);
        loss.backward();
        assert_eq!(x.grad().abs().max().double_value(&[]), 0.0);
    }
}
