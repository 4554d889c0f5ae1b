//! Normalized softmax loss of Zhai and Wu, "Classification is a Strong Baseline for Deep
//! Metric Learning", BMVC 2019 (arXiv:1811.12649), after NormFace (Wang, Xiang, Cheng and
//! Yuille, ACM MM 2017): softmax cross-entropy over the cosine similarities of an embedding to
//! the class weights, sharpened by a temperature σ.
//!
//! With x the L2-normalised embedding of a sample of class y and p_z the L2-normalised weight
//! (proxy) of class z ∈ Z (the m training classes), the paper's normalized softmax is
//!
//! ```text
//! L_norm = −log( exp(xᵀp_y / σ) / Σ_{z∈Z} exp(xᵀp_z / σ) )
//! ```
//!
//! averaged over the batch. The default σ = 0.05 is the temperature the paper uses for its
//! experiments (and PML's default).
//!
//! PML against the paper: pytorch-metric-learning 2.9.0's `NormalizedSoftmaxLoss` stores W as
//! d×m and normalises it along dim 0 (each column a class); our `weights` are m×d and
//! normalised along rows — the same math, in the layout of the trainer's linear classifier
//! (`nn::linear(d, m)`'s weight is m×d). The golden test shows that a layout slip
//! (normalising the m×d tensor's columns, as `normalize(W, dim=0)` would on our layout) does
//! not match. PML also normalises W twice (once itself, once in `DotProductSimilarity`),
//! which is idempotent. Reduction (batch mean) and default agree with the paper.

use crate::loss::batch::{check_param, cosine_to_classes, LossError};
use tch::Tensor;

/// Options of the normalized softmax loss; [`NormalizedSoftmaxLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizedSoftmaxOptions {
    /// Temperature σ dividing the cosine logits. Finite and > 0. Paper (and PML): 0.05.
    pub temperature: f64,
}

impl Default for NormalizedSoftmaxOptions {
    /// The paper's σ = 0.05.
    fn default() -> Self {
        NormalizedSoftmaxOptions { temperature: 0.05 }
    }
}

/// A validated normalized softmax loss, reusable across batches; the weights are the caller's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalizedSoftmaxLoss {
    opts: NormalizedSoftmaxOptions,
}

impl NormalizedSoftmaxLoss {
    /// Validates the options: `temperature` finite and > 0.
    pub fn new(opts: NormalizedSoftmaxOptions) -> Result<Self, LossError> {
        check_param("temperature", opts.temperature, "finite and > 0", |t| {
            t > 0.0
        })?;
        Ok(NormalizedSoftmaxLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &NormalizedSoftmaxOptions {
        &self.opts
    }

    /// The loss of one batch: `embeddings` n×d (f32 or f64), `labels` n (int64, in 0..m),
    /// `weights` m×d (one row per class) with the embeddings' dtype and device. A 0-d tensor in
    /// the graph; gradients reach the embeddings and the weights.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        labels: &Tensor,
        weights: &Tensor,
    ) -> Result<Tensor, LossError> {
        let logits = cosine_to_classes(embeddings, labels, weights, "weights")?
            .f_div_scalar(self.opts.temperature)?;
        cross_entropy(&logits, labels)
    }
}

/// Mean over the rows of −log softmax(logits)[y], as `F.cross_entropy(logits, y)`.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
    Ok(logits
        .f_log_softmax(1, logits.kind())?
        .f_gather(1, &labels.f_unsqueeze(1)?, false)?
        .f_mean(logits.kind())?
        .f_neg()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn loss() -> NormalizedSoftmaxLoss {
        NormalizedSoftmaxLoss::new(NormalizedSoftmaxOptions::default()).unwrap()
    }

    #[test]
    fn bad_options_are_named() {
        for t in [0.0, -0.05, f64::NAN, f64::INFINITY] {
            match NormalizedSoftmaxLoss::new(NormalizedSoftmaxOptions { temperature: t }) {
                Err(LossError::Param { name, .. }) => assert_eq!(name, "temperature"),
                other => panic!("{t}: {other:?}"),
            }
        }
        assert_eq!(loss().options().temperature, 0.05);
    }

    #[test]
    fn bad_batches_and_weights_are_rejected() {
        let x = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 1]);
        let w = Tensor::ones([4, 2], (Kind::Float, Device::Cpu));
        let l = loss();
        assert!(matches!(
            l.forward(&x.view([6]), &y, &w),
            Err(LossError::Shape {
                what: "embeddings",
                ..
            })
        ));
        // PML's d×m layout is refused: weights are m×d
        assert!(matches!(
            l.forward(&x, &y, &Tensor::ones([2, 4], (Kind::Float, Device::Cpu))),
            Err(LossError::Shape {
                what: "weights",
                ..
            })
        ));
        assert!(matches!(
            l.forward(&x, &y, &w.to_kind(Kind::Double)),
            Err(LossError::KindMismatch {
                what: "weights",
                ..
            })
        ));
        assert_eq!(
            l.forward(&x, &Tensor::from_slice(&[-1i64, 0, 0]), &w)
                .unwrap_err(),
            LossError::LabelOutOfRange {
                index: 0,
                label: -1,
                num_classes: 4
            }
        );
    }

    #[test]
    fn a_hand_computed_case() {
        // x = (1, 1)/√2 in class 0; weights e₀ and 3·e₁, so both cosines are 1/√2 and the loss
        // is log 2 at any temperature; a second sample equal to e₀ in class 1 has cosines 1
        // and 0: loss −log(e⁰ / (e^{1/σ} + e⁰)) = log(1 + e^{1/σ}).
        let x = Tensor::from_slice(&[1.0f64, 1.0, 4.0, 0.0]).view([2, 2]);
        let w = Tensor::from_slice(&[2.0f64, 0.0, 0.0, 3.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let sigma = 0.5;
        let l = NormalizedSoftmaxLoss::new(NormalizedSoftmaxOptions { temperature: sigma })
            .unwrap()
            .forward(&x, &y, &w)
            .unwrap();
        let want = (2f64.ln() + (1.0 + (1.0 / sigma).exp()).ln()) / 2.0;
        assert!((l.double_value(&[]) - want).abs() < 1e-12);
    }

    #[test]
    fn gradients_reach_embeddings_and_weights_in_f32() {
        tch::manual_seed(1);
        let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([4, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let l = loss()
            .forward(&x, &Tensor::from_slice(&[0i64, 1, 1, 3, 3]), &w)
            .unwrap();
        assert_eq!((l.kind(), l.dim()), (Kind::Float, 0));
        l.backward();
        for g in [x.grad(), w.grad()] {
            assert!(g.abs().sum(Kind::Double).double_value(&[]) > 0.0);
        }
    }
}
