//! ArcFace (additive angular margin) loss of Deng, Guo, Xue and Zafeiriou, "ArcFace: Additive
//! Angular Margin Loss for Deep Face Recognition", CVPR 2019 (arXiv:1801.07698).
//!
//! With x_i the L2-normalised embedding of sample i of class y_i, W_j the L2-normalised weight
//! of class j, θ_j the angle between them (cos θ_j = W_jᵀx_i), s the scale and m the additive
//! angular margin, the paper's Eq. 3 is
//!
//! ```text
//! L = −1/N Σ_i log( e^{s·cos(θ_{y_i} + m)} / (e^{s·cos(θ_{y_i} + m)} + Σ_{j≠y_i} e^{s·cos θ_j}) )
//! ```
//!
//! computed as the paper's Algorithm 1 does: θ = arccos of the target cosine (clamped to
//! [−1, 1]), the target logit replaced by cos(θ + m), all logits times s, softmax
//! cross-entropy. Defaults are the paper's: s = 64 and m = 0.5 rad.
//!
//! PML against the paper (pytorch-metric-learning 2.9.0's `ArcFaceLoss`), where we follow the
//! paper:
//!
//! - **Margin unit and default.** PML's `margin` is in degrees, default 28.6° = 0.49916 rad,
//!   not the paper's 0.5 rad; ours is in radians, default 0.5. The golden case
//!   `arcface_pml_default_margin` matches with `margin = 28.6°.to_radians()` and not with our
//!   default.
//! - **θ > π − m.** PML (like the insightface code) replaces cos(θ + m) by cos θ − m·sin m
//!   there, to keep the target logit decreasing in θ. The paper's Eq. 3 and Algorithm 1 use
//!   cos(θ + m) for every θ, and so do we: beyond π − m the target logit grows again with θ,
//!   so the gradient pushes such a sample further from its class weight. The golden case
//!   `arcface_wide_angle` (two samples beyond π − m) equals the paper's formula and differs
//!   from PML.
//!
//! PML stores W as d×m (normalised along dim 0); ours is m×d, the same math. As in PML, the
//! gradient of arccos is infinite where an embedding is exactly parallel (or antiparallel) to
//! its class weight.

use crate::loss::batch::{check_param, cosine_to_classes, LossError};
use crate::loss::normalized_softmax::cross_entropy;
use std::f64::consts::PI;
use tch::Tensor;

/// Options of the ArcFace loss; [`ArcFaceLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcFaceOptions {
    /// Additive angular margin m in RADIANS (PML's is in degrees). In [0, π). Paper: 0.5.
    pub margin: f64,
    /// Feature scale s. Finite and > 0. Paper (and PML): 64.
    pub scale: f64,
}

impl Default for ArcFaceOptions {
    /// The paper's m = 0.5 rad, s = 64.
    fn default() -> Self {
        ArcFaceOptions {
            margin: 0.5,
            scale: 64.0,
        }
    }
}

/// A validated ArcFace loss, reusable across batches; the class weights are the caller's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArcFaceLoss {
    opts: ArcFaceOptions,
}

impl ArcFaceLoss {
    /// Validates the options: `margin` in [0, π) radians, `scale` finite and > 0.
    pub fn new(opts: ArcFaceOptions) -> Result<Self, LossError> {
        check_param("margin", opts.margin, "in [0, π) radians", |m| {
            (0.0..PI).contains(&m)
        })?;
        check_param("scale", opts.scale, "finite and > 0", |s| s > 0.0)?;
        Ok(ArcFaceLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &ArcFaceOptions {
        &self.opts
    }

    /// The loss of one batch: `embeddings` n×d (f32 or f64), `labels` n (int64, in 0..m),
    /// `weights` m×d with the embeddings' dtype and device. A 0-d tensor in the graph;
    /// gradients reach the embeddings and the weights.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        labels: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor, LossError> {
        let cos = cosine_to_classes(embeddings, labels, weights, "weights")?; // n×m
        let (m, kind) = (cos.size()[1], embeddings.kind());
        let target = cos.f_gather(1, &labels.f_unsqueeze(1)?, false)?; // n×1
        let theta = target.f_clamp(-1.0, 1.0)?.f_acos()?;
        let diff = theta
            .f_add_scalar(self.opts.margin)?
            .f_cos()?
            .f_sub(&target)?;
        let one_hot = labels.f_one_hot(m)?.f_to_kind(kind)?;
        let logits = cos
            .f_add(&one_hot.f_mul(&diff)?)?
            .f_mul_scalar(self.opts.scale)?;
        cross_entropy(&logits, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn bad_options_are_named() {
        for (opts, key) in [
            (
                ArcFaceOptions {
                    margin: -0.1,
                    scale: 64.0,
                },
                "margin",
            ),
            (
                ArcFaceOptions {
                    margin: 28.6,
                    scale: 64.0,
                },
                "margin",
            ), // degrees by mistake
            (
                ArcFaceOptions {
                    margin: 0.5,
                    scale: 0.0,
                },
                "scale",
            ),
            (
                ArcFaceOptions {
                    margin: 0.5,
                    scale: f64::NAN,
                },
                "scale",
            ),
        ] {
            match ArcFaceLoss::new(opts) {
                Err(LossError::Param { name, .. }) => assert_eq!(name, key),
                other => panic!("{opts:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_batches_and_weights_are_rejected() {
        let l = ArcFaceLoss::new(ArcFaceOptions::default()).unwrap();
        let x = Tensor::ones([2, 3], (Kind::Double, Device::Cpu));
        let w = Tensor::ones([3, 3], (Kind::Double, Device::Cpu));
        assert!(matches!(
            l.forward(&x, &Tensor::from_slice(&[0i64]), &w),
            Err(LossError::Shape { what: "labels", .. })
        ));
        assert!(matches!(
            l.forward(&x, &Tensor::from_slice(&[0i64, 1]), &w.narrow(1, 0, 2)),
            Err(LossError::Shape {
                what: "weights",
                ..
            })
        ));
        assert!(matches!(
            l.forward(&x, &Tensor::from_slice(&[0i64, 3]), &w),
            Err(LossError::LabelOutOfRange {
                index: 1,
                label: 3,
                num_classes: 3
            })
        ));
    }

    #[test]
    fn a_hand_computed_case() {
        // x = (1, 1) of class 0, W = (e₀, e₁): θ₀ = θ₁ = π/4. Logits s·cos(π/4 + m) and
        // s·cos(π/4); loss = log(1 + e^{s(cos(π/4) − cos(π/4 + m))}).
        let (m, s) = (0.3, 2.0);
        let x = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 2]);
        let w = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 4.0]).view([2, 2]);
        let l = ArcFaceLoss::new(ArcFaceOptions {
            margin: m,
            scale: s,
        })
        .unwrap()
        .forward(&x, &Tensor::from_slice(&[0i64]), &w)
        .unwrap();
        let q = PI / 4.0;
        let want = (1.0 + (s * (q.cos() - (q + m).cos())).exp()).ln();
        assert!((l.double_value(&[]) - want).abs() < 1e-12);
        // with m = 0 it is the normalized softmax at temperature 1/s
        let l0 = ArcFaceLoss::new(ArcFaceOptions {
            margin: 0.0,
            scale: s,
        })
        .unwrap()
        .forward(&x, &Tensor::from_slice(&[0i64]), &w)
        .unwrap();
        assert!((l0.double_value(&[]) - 2f64.ln()).abs() < 1e-12);
    }
}
