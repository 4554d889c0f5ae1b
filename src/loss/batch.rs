//! What every embedding loss besides the Group Loss shares: its error type, the checks of a
//! batch (embeddings n×d in f32/f64, labels n on the same device) and the pairwise tables the
//! losses are written in — L2-normalised embeddings, their Euclidean distances and cosine
//! similarities, and the masks of same-class and different-class pairs.
//!
//! The tables are computed the way pytorch-metric-learning computes them (`F.normalize`, then
//! `torch.cdist` or a matrix product), so that a loss written on them can be compared with it at
//! 1e-6 in f64 — including the gradient at tied and duplicated embeddings, where `cdist`'s
//! backward is 0 at distance 0 while √ of a clamped square would be infinite.

use tch::{Device, Kind, Tensor};

/// A misconfigured loss or a malformed batch, reported instead of a libtorch panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossError {
    /// A hyper-parameter outside its range: `name` as the recipe key spells it.
    #[error("{name} must be {expected}, got {got}")]
    Param {
        name: &'static str,
        expected: &'static str,
        got: f64,
    },
    #[error("empty batch: the loss needs at least one sample")]
    EmptyBatch,
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("embeddings must be f32 or f64, got {0:?}")]
    Dtype(Kind),
    #[error("labels must be int64, got {0:?}")]
    LabelDtype(Kind),
    /// A tensor that must share the embeddings' dtype (proxies, class weights) does not.
    #[error("{what} are {got:?} but the embeddings are {expected:?}")]
    KindMismatch {
        what: &'static str,
        expected: Kind,
        got: Kind,
    },
    #[error("{what} is on {got:?} but the embeddings are on {expected:?}")]
    Device {
        what: &'static str,
        expected: Device,
        got: Device,
    },
    #[error("label {label} at batch position {index} is outside 0..{num_classes}")]
    LabelOutOfRange {
        index: usize,
        label: i64,
        num_classes: i64,
    },
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for LossError {
    fn from(e: tch::TchError) -> Self {
        LossError::Torch(e.to_string())
    }
}

/// Checks that `value` is finite and `ok(value)`; otherwise a [`LossError::Param`] naming it.
pub fn check_param(
    name: &'static str,
    value: f64,
    expected: &'static str,
    ok: impl Fn(f64) -> bool,
) -> Result<(), LossError> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(LossError::Param {
            name,
            expected,
            got: value,
        })
    }
}

/// Checks one batch: `embeddings` n×d (n ≥ 1, d ≥ 1) in f32 or f64, `labels` an int64 vector of
/// n on the same device. Returns n.
pub fn check_batch(embeddings: &Tensor, labels: &Tensor) -> Result<i64, LossError> {
    let size = embeddings.size();
    if size.len() != 2 || size[1] < 1 {
        return Err(LossError::Shape {
            what: "embeddings",
            expected: "n×d with d ≥ 1".into(),
            got: format!("{size:?}"),
        });
    }
    if size[0] == 0 {
        return Err(LossError::EmptyBatch);
    }
    let kind = embeddings.kind();
    if !matches!(kind, Kind::Float | Kind::Double) {
        return Err(LossError::Dtype(kind));
    }
    if labels.kind() != Kind::Int64 {
        return Err(LossError::LabelDtype(labels.kind()));
    }
    if labels.size() != [size[0]] {
        return Err(LossError::Shape {
            what: "labels",
            expected: format!("[{}]", size[0]),
            got: format!("{:?}", labels.size()),
        });
    }
    if labels.device() != embeddings.device() {
        return Err(LossError::Device {
            what: "labels",
            expected: embeddings.device(),
            got: labels.device(),
        });
    }
    Ok(size[0])
}

/// Rows scaled to unit L2 norm as `F.normalize(x, p=2, dim=1)` does (norm clamped at 1e-12).
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// n×n Euclidean distances of L2-normalised rows, `torch.cdist(x, x)` on `normalize(x)` (PML's
/// `LpDistance()`); `squared` raises them to the power 2 (PML's `LpDistance(power=2)`).
pub fn euclidean(x: &Tensor, squared: bool) -> Tensor {
    let u = normalize(x);
    let d = Tensor::cdist(&u, &u, 2.0, None::<i64>);
    if squared {
        d.pow_tensor_scalar(2)
    } else {
        d
    }
}

/// n×n cosine similarities `normalize(x) · normalize(x)ᵀ` (PML's `CosineSimilarity()`).
pub fn cosine(x: &Tensor) -> Tensor {
    let u = normalize(x);
    u.matmul(&u.tr())
}

/// Same-class and different-class pair masks (n×n bool): positives exclude the diagonal.
pub struct PairMasks {
    pub positive: Tensor,
    pub negative: Tensor,
}

impl PairMasks {
    pub fn new(labels: &Tensor) -> PairMasks {
        let n = labels.size()[0];
        let same = labels.unsqueeze(1).eq_tensor(&labels.unsqueeze(0));
        let eye = Tensor::eye(n, (Kind::Bool, labels.device()));
        PairMasks {
            positive: same.logical_and(&eye.logical_not()),
            negative: same.logical_not(),
        }
    }
}

/// PML's `AvgNonZeroReducer` over the entries of `values` selected by `mask` (bool, same
/// shape): the mean of those > 0, or a graph-connected 0 (zero gradient) when there are none.
/// Computed as a masked sum over a device-side count, so no host round trip.
pub fn avg_non_zero(values: &Tensor, mask: &Tensor) -> Result<Tensor, LossError> {
    let keep = mask.f_logical_and(&values.f_gt(0.0)?)?;
    let count = keep.f_sum(values.kind())?.f_clamp_min(1.0)?;
    Ok(values
        .f_masked_fill(&keep.f_logical_not()?, 0.0)?
        .f_sum(values.kind())?
        .f_div(&count)?)
}

/// Checks the class weights of a proxy or classifier loss (`what`: "proxies", "weights")
/// against a batch that passed [`check_batch`]: m×d (m ≥ 1) with the embeddings' d, dtype and
/// device, and every label in 0..m. The label check copies the labels to the host once (one
/// device→host sync) so that the error can name the first offending position. Returns m.
pub fn check_class_weights(
    what: &'static str,
    weights: &Tensor,
    embeddings: &Tensor,
    labels: &Tensor,
) -> Result<i64, LossError> {
    let d = embeddings.size()[1];
    let size = weights.size();
    if size.len() != 2 || size[0] < 1 || size[1] != d {
        return Err(LossError::Shape {
            what,
            expected: format!("m×{d} with m ≥ 1"),
            got: format!("{size:?}"),
        });
    }
    if weights.kind() != embeddings.kind() {
        return Err(LossError::KindMismatch {
            what,
            expected: embeddings.kind(),
            got: weights.kind(),
        });
    }
    if weights.device() != embeddings.device() {
        return Err(LossError::Device {
            what,
            expected: embeddings.device(),
            got: weights.device(),
        });
    }
    let m = size[0];
    let host: Vec<i64> = Vec::try_from(labels.f_to_device(Device::Cpu)?)?;
    match host.iter().position(|&l| !(0..m).contains(&l)) {
        Some(index) => Err(LossError::LabelOutOfRange {
            index,
            label: host[index],
            num_classes: m,
        }),
        None => Ok(m),
    }
}

/// The prologue of a classifier loss: checks the batch ([`check_batch`]) and the class weights
/// ([`check_class_weights`], `what` naming them), then returns the n×m cosines of the
/// embeddings to the classes, `normalize(embeddings) · normalize(weights)ᵀ`.
pub fn cosine_to_classes(
    embeddings: &Tensor,
    labels: &Tensor,
    weights: &Tensor,
    what: &'static str,
) -> Result<Tensor, LossError> {
    check_batch(embeddings, labels)?;
    check_class_weights(what, weights, embeddings, labels)?;
    Ok(normalize(embeddings).f_matmul(&normalize(weights).f_tr()?)?)
}

/// What the losses' unit tests share.
#[cfg(test)]
pub(crate) mod test_util {
    use tch::Tensor;

    /// Unit vectors in the plane at `angles_deg` (degrees from the x axis), one row each.
    pub(crate) fn points(angles_deg: &[f64]) -> Tensor {
        let xy: Vec<f64> = angles_deg
            .iter()
            .flat_map(|a| [a.to_radians().cos(), a.to_radians().sin()])
            .collect();
        Tensor::from_slice(&xy).view([-1, 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_batch_is_named() {
        let x = Tensor::zeros([3, 2], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1]);
        let e = check_batch(&x, &y).unwrap_err();
        assert!(e.to_string().contains("labels: expected [3]"), "{e}");
        let e = check_batch(&x.to_kind(Kind::Int64), &Tensor::from_slice(&[0i64, 1, 1]));
        assert!(matches!(e, Err(LossError::Dtype(Kind::Int64))));
        let e = check_batch(&x, &Tensor::from_slice(&[0i32, 1, 1]));
        assert!(matches!(e, Err(LossError::LabelDtype(Kind::Int))));
        let e = check_batch(&x.narrow(0, 0, 0), &Tensor::from_slice::<i64>(&[]));
        assert!(matches!(e, Err(LossError::EmptyBatch)));
        assert_eq!(check_batch(&x, &Tensor::from_slice(&[0i64, 1, 1])), Ok(3));
    }

    #[test]
    fn masks_and_tables_have_the_pairs_expected() {
        let y = Tensor::from_slice(&[0i64, 0, 1]);
        let m = PairMasks::new(&y);
        let pos: Vec<i64> = Vec::try_from(m.positive.to_kind(Kind::Int64).view([-1])).unwrap();
        let neg: Vec<i64> = Vec::try_from(m.negative.to_kind(Kind::Int64).view([-1])).unwrap();
        assert_eq!(pos, [0, 1, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(neg, [0, 0, 1, 0, 0, 1, 1, 1, 0]);
        let x = Tensor::from_slice(&[3.0f64, 0.0, 0.0, 2.0, 1.0, 1.0]).view([3, 2]);
        let d = euclidean(&x, false);
        assert!((d.double_value(&[0, 1]) - 2f64.sqrt()).abs() < 1e-12);
        assert!((euclidean(&x, true).double_value(&[0, 1]) - 2.0).abs() < 1e-12);
        assert!((cosine(&x).double_value(&[0, 2]) - 0.5f64.sqrt()).abs() < 1e-12);
        let e = check_param("margin", f64::NAN, "finite and ≥ 0", |v| v >= 0.0).unwrap_err();
        assert_eq!(e.to_string(), "margin must be finite and ≥ 0, got NaN");
    }
}
