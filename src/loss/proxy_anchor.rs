//! Proxy-Anchor loss of Kim, Kim, Cho and Kwak, "Proxy Anchor Loss for Deep Metric Learning",
//! CVPR 2020 (arXiv:2003.13911), with one proxy per class.
//!
//! With X the batch, P the m proxies, P⁺ ⊆ P the proxies of the classes present in the batch,
//! X_p⁺ the samples of p's class and X_p⁻ the others, and s(x, p) the cosine similarity, the
//! paper's Eq. 4 is
//!
//! ```text
//! ℓ(X) = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)})
//!      + 1/|P|  Σ_{p∈P}  log(1 + Σ_{x∈X_p⁻} e^{ α(s(x,p) + δ)})
//! ```
//!
//! Each log(1 + Σ e^z) is computed as a logsumexp over the masked logits and a 0, as
//! pytorch-metric-learning (PML) 2.9.0's `ProxyAnchorLoss` does; a proxy without positives (or
//! without negatives) contributes 0. Embeddings and proxies are L2-normalised inside the loss.
//!
//! Defaults and the training recipe are the paper's (§"Implementation details" of the
//! experiments): α = 32, δ = 0.1 ("10⁻¹"), the proxies' learning rate scaled up ×100
//! ([`PROXY_LR_FACTOR`]), and proxies drawn from a normal distribution — the authors' code
//! (tjddus9597/Proxy-Anchor-CVPR2020, `losses.py`) and PML both use
//! `kaiming_normal_(mode="fan_out")` for it, which [`ProxyAnchorLoss::init_proxies`] reproduces.
//!
//! PML against the paper: the same formula. Both divisors are the paper's — PML divides the
//! positive sum by `len(with_pos_proxies)` = |P⁺| and the negative one by `num_classes` = |P| —
//! and PML's defaults (`alpha=32`, `margin=0.1`) are the paper's α and δ (PML calls δ
//! `margin`). The golden test (`tests/it/proxy_losses_golden.rs`) shows that dividing the
//! positive term by |P| instead would not match on the batches where |P⁺| < |P|.

use crate::loss::batch::{check_param, cosine_to_classes, LossError};
use tch::{Kind, Tensor};

/// The proxies' learning rate relative to the backbone's: "scaled up by 100" in the paper's
/// implementation details (Kim et al. 2020); the authors' code uses `lr * 100` for them.
pub const PROXY_LR_FACTOR: f64 = 100.0;

/// Options of the Proxy-Anchor loss; [`ProxyAnchorLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyAnchorOptions {
    /// Scaling factor α. Finite and > 0. Paper (and PML): 32.
    pub alpha: f64,
    /// Margin δ (PML's `margin`). Finite and ≥ 0. Paper (and PML): 0.1.
    pub delta: f64,
}

impl Default for ProxyAnchorOptions {
    /// The paper's α = 32, δ = 0.1, used for all its experiments.
    fn default() -> Self {
        ProxyAnchorOptions {
            alpha: 32.0,
            delta: 0.1,
        }
    }
}

/// The two terms of Eq. 4, each already divided by its count: `positive` by |P⁺|, `negative`
/// by |P|. Their sum is the loss.
#[derive(Debug)]
pub struct ProxyAnchorTerms {
    pub positive: Tensor,
    pub negative: Tensor,
}

/// A validated Proxy-Anchor loss, reusable across batches; the proxies are the caller's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyAnchorLoss {
    opts: ProxyAnchorOptions,
}

impl ProxyAnchorLoss {
    /// Validates the options: `alpha` finite and > 0, `delta` finite and ≥ 0.
    pub fn new(opts: ProxyAnchorOptions) -> Result<Self, LossError> {
        check_param("alpha", opts.alpha, "finite and > 0", |a| a > 0.0)?;
        check_param("delta", opts.delta, "finite and ≥ 0", |d| d >= 0.0)?;
        Ok(ProxyAnchorLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &ProxyAnchorOptions {
        &self.opts
    }

    /// The loss of one batch: `embeddings` n×d (f32 or f64), `labels` n (int64, in 0..m),
    /// `proxies` m×d with the embeddings' dtype and device. A 0-d tensor in the graph;
    /// gradients reach the embeddings and the proxies.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        labels: &Tensor,
        proxies: &Tensor,
    ) -> Result<Tensor, LossError> {
        let t = self.forward_terms(embeddings, labels, proxies)?;
        Ok(t.positive.f_add(&t.negative)?)
    }

    /// [`forward`](Self::forward) split into its positive and negative terms.
    pub fn forward_terms(
        &self,
        embeddings: &Tensor,
        labels: &Tensor,
        proxies: &Tensor,
    ) -> Result<ProxyAnchorTerms, LossError> {
        // s(x, p): n×m cosine similarities
        let s = cosine_to_classes(embeddings, labels, proxies, "proxies")?;
        let m = s.size()[1];
        let kind = embeddings.kind();
        let ProxyAnchorOptions { alpha, delta } = self.opts;
        let pos = labels.f_one_hot(m)?.f_to_kind(Kind::Bool)?;
        let neg = pos.f_logical_not()?;
        let pos_logits = s.f_neg()?.f_add_scalar(delta)?.f_mul_scalar(alpha)?;
        let neg_logits = s.f_add_scalar(delta)?.f_mul_scalar(alpha)?;
        // |P⁺| ≥ 1: the batch is not empty and every label names a proxy
        let with_pos = pos.f_any_dim(0, false)?.f_sum(kind)?;
        Ok(ProxyAnchorTerms {
            positive: log1p_sum_exp(&pos_logits, &pos)?
                .f_sum(kind)?
                .f_div(&with_pos)?,
            negative: log1p_sum_exp(&neg_logits, &neg)?
                .f_sum(kind)?
                .f_div_scalar(m as f64)?,
        })
    }

    /// The paper's proxy initialisation as the authors' code and PML do it:
    /// `kaiming_normal_(proxies, mode="fan_out")` with its default gain √2, i.e. N(0, 2/m) for
    /// m×d proxies (fan_out = size(0)), drawn in place under `no_grad` from libtorch's global
    /// generator (seed it with `tch::manual_seed`).
    ///
    /// # Panics
    /// If `proxies` is not a floating-point tensor (libtorch's `normal_` refuses it).
    pub fn init_proxies(proxies: &mut Tensor) {
        let size = proxies.size();
        let receptive: i64 = size.iter().skip(2).product();
        let fan_out = size.first().map_or(1, |&m| m * receptive).max(1);
        let std = (2.0 / fan_out as f64).sqrt();
        tch::no_grad(|| {
            let _ = proxies.normal_(0.0, std);
        });
    }
}

/// Per column of `logits` (n×m): log(1 + Σ_{i: mask[i]} e^{logits[i]}), as PML's
/// `logsumexp(…, keep_mask, add_one=True, dim=0)`; a column with no entry gives 0.
fn log1p_sum_exp(logits: &Tensor, mask: &Tensor) -> Result<Tensor, LossError> {
    let filled = logits.f_masked_fill(&mask.f_logical_not()?, f64::NEG_INFINITY)?;
    let zero = Tensor::f_zeros([1, logits.size()[1]], (logits.kind(), logits.device()))?;
    Ok(Tensor::f_cat(&[filled, zero], 0)?.f_logsumexp([0i64].as_slice(), false)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn loss() -> ProxyAnchorLoss {
        ProxyAnchorLoss::new(ProxyAnchorOptions::default()).unwrap()
    }

    #[test]
    fn bad_options_are_named() {
        for (opts, key) in [
            (
                ProxyAnchorOptions {
                    alpha: 0.0,
                    delta: 0.1,
                },
                "alpha",
            ),
            (
                ProxyAnchorOptions {
                    alpha: f64::NAN,
                    delta: 0.1,
                },
                "alpha",
            ),
            (
                ProxyAnchorOptions {
                    alpha: 32.0,
                    delta: -0.1,
                },
                "delta",
            ),
            (
                ProxyAnchorOptions {
                    alpha: 32.0,
                    delta: f64::INFINITY,
                },
                "delta",
            ),
        ] {
            match ProxyAnchorLoss::new(opts) {
                Err(LossError::Param { name, .. }) => assert_eq!(name, key),
                other => panic!("{opts:?}: {other:?}"),
            }
        }
        assert_eq!(
            loss().options(),
            &ProxyAnchorOptions {
                alpha: 32.0,
                delta: 0.1
            }
        );
    }

    #[test]
    fn bad_batches_and_proxies_are_rejected() {
        let x = Tensor::ones([3, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 1]);
        let p = Tensor::ones([4, 2], (Kind::Double, Device::Cpu));
        let l = loss();
        assert!(matches!(
            l.forward(&x, &y.narrow(0, 0, 2), &p),
            Err(LossError::Shape { what: "labels", .. })
        ));
        assert!(matches!(
            l.forward(&x, &y, &p.narrow(1, 0, 1)),
            Err(LossError::Shape {
                what: "proxies",
                ..
            })
        ));
        assert!(matches!(
            l.forward(&x, &y, &p.view([2, 4])),
            Err(LossError::Shape {
                what: "proxies",
                ..
            })
        ));
        assert!(matches!(
            l.forward(&x, &y, &p.to_kind(Kind::Float)),
            Err(LossError::KindMismatch {
                what: "proxies",
                ..
            })
        ));
        let bad = Tensor::from_slice(&[0i64, 4, -1]);
        assert_eq!(
            l.forward(&x, &bad, &p).unwrap_err(),
            LossError::LabelOutOfRange {
                index: 1,
                label: 4,
                num_classes: 4
            }
        );
    }

    #[test]
    fn a_hand_computed_case() {
        // Two samples on the proxies' axes: x₀ = p₀ (s = 1), x₁ ⟂ p₀ and x₁ = p₁ (s = 1);
        // both in class 0. Proxies p₀ = e₀, p₁ = e₁, m = 2, |P⁺| = 1.
        let x = Tensor::from_slice(&[2.0f64, 0.0, 0.0, 3.0]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 0]);
        let p = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 5.0]).view([2, 2]);
        let (a, d) = (32.0f64, 0.1f64);
        // p₀: positives s = 1 and 0; p₁: negatives s = 0 and 1
        let pos = (1.0 + (-a * (1.0 - d)).exp() + (-a * (0.0 - d)).exp()).ln() / 1.0;
        let neg = (1.0 + (a * (0.0 + d)).exp() + (a * (1.0 + d)).exp()).ln() / 2.0;
        let t = loss().forward_terms(&x, &y, &p).unwrap();
        assert!((t.positive.double_value(&[]) - pos).abs() < 1e-12);
        assert!((t.negative.double_value(&[]) - neg).abs() < 1e-12);
        let l = loss().forward(&x, &y, &p).unwrap();
        assert_eq!(l.size(), Vec::<i64>::new());
        assert!((l.double_value(&[]) - pos - neg).abs() < 1e-12);
    }

    #[test]
    fn gradients_reach_embeddings_and_proxies_in_f32() {
        tch::manual_seed(0);
        let x = Tensor::randn([6, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut p = Tensor::zeros([5, 4], (Kind::Float, Device::Cpu));
        ProxyAnchorLoss::init_proxies(&mut p);
        let p = p.set_requires_grad(true);
        let y = Tensor::from_slice(&[0i64, 0, 2, 2, 4, 4]);
        let l = loss().forward(&x, &y, &p).unwrap();
        assert_eq!(l.kind(), Kind::Float);
        l.backward();
        for g in [x.grad(), p.grad()] {
            assert!(g.abs().sum(Kind::Double).double_value(&[]) > 0.0);
            assert!(bool::try_from(g.isfinite().all()).unwrap());
        }
    }
}
