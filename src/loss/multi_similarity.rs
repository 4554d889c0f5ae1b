//! Multi-Similarity loss with its pair miner: Wang, Han, Huang, Dong, Scott, "Multi-Similarity
//! Loss with General Pair Weighting for Deep Metric Learning", CVPR 2019.
//!
//! With S_ik the cosine similarity of the L2-normalised embeddings of samples i and k, P_i and
//! N_i the positive and negative pairs of anchor i kept by the miner, and m the batch size,
//!
//! ```text
//! L_MS = 1/m Σ_i { 1/α · log[1 + Σ_{k∈P_i} exp(−α (S_ik − λ))]
//!                + 1/β · log[1 + Σ_{k∈N_i} exp( β (S_ik − λ))] }
//! ```
//!
//! The miner (the paper's pair mining, §4) keeps for each anchor the negatives with
//! S_ik > min_{y_j = y_i} S_ij − ε and the positives with S_ij < max_{y_k ≠ y_i} S_ik + ε. An
//! anchor without a positive or without a negative keeps nothing, and by the two rules an anchor
//! keeps a positive exactly when it keeps a negative. Anchors that keep nothing contribute 0 but
//! still count in the 1/m. With [`MultiSimilarityOptions::mine`] = `false`, P_i and N_i are all
//! the anchor's pairs.
//!
//! This is pytorch-metric-learning (PML) 2.9.0's `MultiSimilarityMiner(epsilon=ε)` +
//! `MultiSimilarityLoss(alpha=α, beta=β, base=λ)` (a per-anchor log-sum-exp with an appended
//! 0, mean over all n anchors), computed the same way so that the golden test
//! (`tests/it/pair_losses_golden.rs`) agrees with it at 1e-6 in f64.
//!
//! Defaults are the paper's: α = 2, β = 50, λ = 1, ε = 0.1 (the implementation details of the
//! experiments, §5; also what PML's documentation quotes as the paper's λ).
//!
//! Where others differ from the paper (we follow the paper):
//!
//! - **λ.** PML's `base` defaults to 0.5; the paper's λ is 1. The golden test shows that PML's
//!   defaults give another value.
//! - **At most one pair.** PML returns 0 whenever the miner keeps at most one positive and at
//!   most one negative pair in the whole batch (`GenericPairLoss` tests `len(x) <= 1`); the
//!   paper has no such rule and neither does this loss (unit test
//!   `a_single_mined_pair_is_not_zero`).
//! - **The official code** (MalongTech/research-ms-loss) uses λ = 0.5 and β = 40, drops
//!   positives with S ≥ 1 − 1e-5 (duplicates), and returns a constant, graph-less 0 when
//!   nothing is mined; we use the paper's values, keep duplicate positives (as PML does), and
//!   return a graph-connected 0.

use crate::loss::batch::{check_batch, check_param, cosine, LossError, PairMasks};
use tch::{Kind, Tensor};

/// Options of the Multi-Similarity loss; [`MultiSimilarityLoss::new`] validates them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiSimilarityOptions {
    /// α, the scale of the positive pairs: finite and > 0. Default 2.
    pub alpha: f64,
    /// β, the scale of the negative pairs: finite and > 0. Default 50.
    pub beta: f64,
    /// λ, the similarity margin both terms are centred on (PML's `base`): finite. Default 1.
    pub base: f64,
    /// ε, the miner's margin: finite and ≥ 0. Default 0.1.
    pub epsilon: f64,
    /// `true`: the paper's pair miner; `false`: every pair of the batch.
    pub mine: bool,
}

impl Default for MultiSimilarityOptions {
    /// The paper's values: α = 2, β = 50, λ = 1, ε = 0.1, with the miner.
    fn default() -> Self {
        MultiSimilarityOptions {
            alpha: 2.0,
            beta: 50.0,
            base: 1.0,
            epsilon: 0.1,
            mine: true,
        }
    }
}

/// A validated Multi-Similarity loss, reusable across batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiSimilarityLoss {
    opts: MultiSimilarityOptions,
}

impl MultiSimilarityLoss {
    /// Validates the options: α, β finite and > 0; λ finite; ε finite and ≥ 0.
    pub fn new(opts: MultiSimilarityOptions) -> Result<Self, LossError> {
        check_param("alpha", opts.alpha, "finite and > 0", |v| v > 0.0)?;
        check_param("beta", opts.beta, "finite and > 0", |v| v > 0.0)?;
        check_param("base", opts.base, "finite", |_| true)?;
        check_param("epsilon", opts.epsilon, "finite and ≥ 0", |v| v >= 0.0)?;
        Ok(MultiSimilarityLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &MultiSimilarityOptions {
        &self.opts
    }

    /// The loss of one batch: `embeddings` n×d (f32 or f64, any device), `labels` n int64 on the
    /// same device. Returns a 0-d tensor of the embeddings' dtype, in the autograd graph (a
    /// graph-connected 0 when nothing is mined).
    pub fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<Tensor, LossError> {
        check_batch(embeddings, labels)?;
        let o = &self.opts;
        let s = cosine(embeddings);
        let masks = PairMasks::new(labels);
        let (pos, neg) = if o.mine {
            mine(&s.f_detach()?, &masks, o.epsilon)?
        } else {
            (masks.positive, masks.negative)
        };
        // PML: `base − S` and `S − base`, scaled, then 1/α·lse and 1/β·lse.
        let pos_term = log1p_sum_exp(
            &s.f_neg()?.f_add_scalar(o.base)?.f_mul_scalar(o.alpha)?,
            &pos,
        )?
        .f_mul_scalar(1.0 / o.alpha)?;
        let neg_term = log1p_sum_exp(&s.f_sub_scalar(o.base)?.f_mul_scalar(o.beta)?, &neg)?
            .f_mul_scalar(1.0 / o.beta)?;
        Ok(pos_term.f_add(&neg_term)?.f_mean(s.kind())?)
    }
}

/// The paper's pair mining on similarities `s` (no gradient): the kept positive and negative
/// pair masks.
fn mine(s: &Tensor, masks: &PairMasks, epsilon: f64) -> Result<(Tensor, Tensor), LossError> {
    // Rows without positives get min = +∞ and rows without negatives max = −∞, so they keep
    // nothing: PML's finfo-filled sort gives the same.
    let min_pos = s
        .f_masked_fill(&masks.positive.f_logical_not()?, f64::INFINITY)?
        .f_amin([1i64].as_slice(), true)?;
    let max_neg = s
        .f_masked_fill(&masks.negative.f_logical_not()?, f64::NEG_INFINITY)?
        .f_amax([1i64].as_slice(), true)?;
    let pos = masks
        .positive
        .f_logical_and(&s.f_sub_scalar(epsilon)?.f_lt_tensor(&max_neg)?)?;
    let neg = masks
        .negative
        .f_logical_and(&s.f_add_scalar(epsilon)?.f_gt_tensor(&min_pos)?)?;
    Ok((pos, neg))
}

/// Per row: log(1 + Σ_{mask} exp(x)), 0 for a row with an empty mask; n×1. PML's
/// `lmu.logsumexp(x, keep_mask, add_one=True)`: masked entries are filled with the dtype's
/// lowest value and a zero column is appended before `logsumexp`.
fn log1p_sum_exp(x: &Tensor, mask: &Tensor) -> Result<Tensor, LossError> {
    let (n, kind, device) = (x.size()[0], x.kind(), x.device());
    let lowest = if kind == Kind::Float {
        f64::from(f32::MIN)
    } else {
        f64::MIN
    };
    let filled = x.f_masked_fill(&mask.f_logical_not()?, lowest)?;
    let zeros = Tensor::f_zeros([n, 1], (kind, device))?;
    let lse = Tensor::f_cat(&[filled, zeros], 1)?.f_logsumexp([1i64].as_slice(), true)?;
    let empty = mask.f_any_dim(1, true)?.f_logical_not()?;
    Ok(lse.f_masked_fill(&empty, 0.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::batch::test_util::points;
    use tch::Device;

    #[test]
    fn bad_options_are_rejected_naming_the_key() {
        let d = MultiSimilarityOptions::default();
        let cases: [(&str, MultiSimilarityOptions); 5] = [
            ("alpha", MultiSimilarityOptions { alpha: 0.0, ..d }),
            ("beta", MultiSimilarityOptions { beta: -1.0, ..d }),
            (
                "base",
                MultiSimilarityOptions {
                    base: f64::NAN,
                    ..d
                },
            ),
            ("epsilon", MultiSimilarityOptions { epsilon: -0.1, ..d }),
            (
                "alpha",
                MultiSimilarityOptions {
                    alpha: f64::INFINITY,
                    ..d
                },
            ),
        ];
        for (key, o) in cases {
            let e = MultiSimilarityLoss::new(o).unwrap_err();
            assert!(
                matches!(e, LossError::Param { name, .. } if name == key),
                "{e}"
            );
        }
        assert_eq!(MultiSimilarityLoss::new(d).unwrap().options(), &d);
    }

    #[test]
    fn a_bad_batch_is_rejected() {
        let loss = MultiSimilarityLoss::new(MultiSimilarityOptions::default()).unwrap();
        let x = Tensor::zeros([0, 2], (Kind::Double, Device::Cpu));
        let e = loss.forward(&x, &Tensor::from_slice::<i64>(&[]));
        assert!(matches!(e, Err(LossError::EmptyBatch)));
    }

    #[test]
    fn a_single_mined_pair_is_not_zero() {
        // a = 0°, p = 60° (class 0), n = −50° (class 1). Anchor a keeps p (0.5 − 0.1 < cos 50°)
        // and n (cos 50° + 0.1 > 0.5); p keeps nothing (cos 110° + 0.1 < 0.5); n has no
        // positive. One positive and one negative pair: PML 2.9.0 returns 0 here
        //   MultiSimilarityLoss(2, 50, 1.0)(x, y, MultiSimilarityMiner(0.1)(x, y)) == 0.0
        // while the paper's formula gives 0.21887694803642244 (same snippet, by hand).
        let x = points(&[0.0, 60.0, -50.0]);
        let y = Tensor::from_slice(&[0i64, 0, 1]);
        let s = 50f64.to_radians().cos();
        let want = (0.5 * (1.0 + (-2.0 * (0.5 - 1.0f64)).exp()).ln()
            + (1.0 + (50.0 * (s - 1.0)).exp()).ln() / 50.0)
            / 3.0;
        assert!((want - 0.21887694803642244).abs() < 1e-15);
        let loss = MultiSimilarityLoss::new(MultiSimilarityOptions::default()).unwrap();
        let got = loss.forward(&x, &y).unwrap().double_value(&[]);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");

        // Without the miner p's own pairs count too: its positive a (S = 0.5) and negative n.
        let all = MultiSimilarityLoss::new(MultiSimilarityOptions {
            mine: false,
            ..MultiSimilarityOptions::default()
        })
        .unwrap();
        let s_pn = 110f64.to_radians().cos();
        let p_row = 0.5 * (1.0 + 1f64.exp()).ln() + (1.0 + (50.0 * (s_pn - 1.0)).exp()).ln() / 50.0;
        let n_row = (1.0 + (50.0 * (s - 1.0)).exp() + (50.0 * (s_pn - 1.0)).exp()).ln() / 50.0;
        let want_all = (want * 3.0 + p_row + n_row) / 3.0;
        let got = all.forward(&x, &y).unwrap().double_value(&[]);
        assert!((got - want_all).abs() < 1e-12, "{got} vs {want_all}");
    }

    #[test]
    fn nothing_mined_is_a_connected_zero() {
        // Each class one direction, classes orthogonal: min positive S = 1 > 0 + ε.
        let x = (points(&[0.0, 0.0, 90.0, 90.0])
            * Tensor::from_slice(&[1.0, 2.0, 0.5, 3.0]).view([4, 1]))
        .to_kind(Kind::Float)
        .set_requires_grad(true);
        let y = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let loss = MultiSimilarityLoss::new(MultiSimilarityOptions::default())
            .unwrap()
            .forward(&x, &y)
            .unwrap();
        assert_eq!(loss.kind(), Kind::Float);
        assert_eq!(loss.double_value(&[]), 0.0);
        loss.backward();
        assert_eq!(x.grad().abs().max().double_value(&[]), 0.0);
    }
}
