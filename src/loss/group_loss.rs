//! The Group Loss (Elezi et al., ECCV 2020), as the official implementation computes it.
//!
//! For a batch of n samples with features f (n×d) and classifier logits z (n×m):
//!
//! 1. similarity W = ReLU(Pearson(f)): rows centred, scaled to unit norm, Gram matrix, ReLU;
//!    the diagonal is 1 (official code) or 0 ([`GroupLossOptions::zero_diagonal`], the paper's text);
//! 2. priors X⁰ (n×c): softmax(z/τ) for every sample ([`Priors`]), replaced by one-hot rows for
//!    the anchors (labelled samples, see [`crate::loss::Anchors`]);
//! 3. T replicator steps X ← X⊙(WX), each row renormalised to the simplex;
//! 4. loss = NLL(log(X + 1e-12), y) averaged over all n + `ce_weight`·CE(z, y).
//!
//! The loss is device- and dtype-agnostic (f32 and f64): every tensor it makes lives on the
//! device and has the dtype of `f`. Per-batch host data (labels, anchor mask) is validated and
//! moved to the device once, in [`GroupLoss::targets`], so `forward` adds no host round trip.

use tch::{Device, Kind, Reduction, Tensor};

/// `log(X + 1e-12)` in the official code: keeps the NLL finite for classes with zero mass.
pub const LOG_EPS: f64 = 1e-12;

/// What a misconfigured loss or a malformed batch reports, instead of a libtorch panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupLossError {
    #[error("temperature τ must be a finite number > 0, got {0}")]
    Tau(f64),
    #[error("replicator steps T must be ≥ 1, got {0}")]
    Steps(i64),
    #[error("ce_weight must be finite and ≥ 0, got {0}")]
    CeWeight(f64),
    #[error("the number of classes m must be ≥ 1, got {0}")]
    NumClasses(i64),
    #[error("empty batch: the Group Loss needs at least one sample")]
    EmptyBatch,
    #[error("label {label} at batch position {index} is outside 0..{num_classes}")]
    LabelOutOfRange {
        index: usize,
        label: i64,
        num_classes: i64,
    },
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("features and logits must share one floating dtype (f32 or f64), got {features:?} and {logits:?}")]
    Dtype { features: Kind, logits: Kind },
    #[error("features are on {features:?} but the batch targets are on {targets:?}")]
    Device { features: Device, targets: Device },
    #[error("libtorch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for GroupLossError {
    fn from(e: tch::TchError) -> Self {
        GroupLossError::Torch(e.to_string())
    }
}

/// How the prior probabilities X⁰ of the non-anchor samples are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priors {
    /// softmax(z/τ) over all m training classes (official).
    Softmax,
    /// 1/m for every class: no classifier information in X⁰ (z then only enters through CE).
    Uniform,
    /// softmax(z/τ) restricted to the classes present in the batch, renormalised. X has one
    /// column per present class (in increasing class order), which makes SOP's 11,318-class X
    /// a 60×10 matrix.
    BatchClasses,
}

impl std::str::FromStr for Priors {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "softmax" => Ok(Priors::Softmax),
            "uniform" => Ok(Priors::Uniform),
            "batch_classes" => Ok(Priors::BatchClasses),
            _ => Err(format!(
                "unknown priors `{s}` (softmax, uniform, batch_classes)"
            )),
        }
    }
}

/// Options of the Group Loss; [`GroupLoss::new`] validates them eagerly.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLossOptions {
    /// Softmax temperature τ of the priors (official: CUB 24, Cars 79, SOP 54).
    pub tau: f64,
    /// Replicator steps T (official: 1).
    pub steps: i64,
    /// Weight of the auxiliary cross-entropy CE(z, y) (official: 1).
    pub ce_weight: f64,
    /// W's diagonal: `false` keeps it at 1 (official code), `true` sets it to 0 (paper's text).
    pub zero_diagonal: bool,
    /// How X⁰ is formed for non-anchors.
    pub priors: Priors,
}

impl Default for GroupLossOptions {
    /// The official CUB-200-2011 setting.
    fn default() -> Self {
        GroupLossOptions {
            tau: 24.0,
            steps: 1,
            ce_weight: 1.0,
            zero_diagonal: false,
            priors: Priors::Softmax,
        }
    }
}

/// A validated Group Loss, reusable across batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupLoss {
    opts: GroupLossOptions,
}

/// Labels and anchors of one batch, validated and already on the device.
#[derive(Debug)]
pub struct Targets {
    n: i64,
    num_classes: i64,
    device: Device,
    /// Class ids in 0..m (for CE).
    labels: Tensor,
    /// Column of each sample's class in X (equal to `labels` unless priors are batch_classes).
    columns: Tensor,
    /// Present classes (batch_classes priors only), increasing.
    classes: Option<Tensor>,
    /// n×1 bool, true for anchors.
    anchors: Tensor,
    /// n zeros: NLL over the gathered n×1 column of X is −mean(log(·)) in one kernel.
    first_column: Tensor,
}

impl Targets {
    /// Batch size n.
    pub fn len(&self) -> i64 {
        self.n
    }
    /// Always false: an empty batch is rejected when the targets are made.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The device the targets live on.
    pub fn device(&self) -> Device {
        self.device
    }
    /// Class ids (i64, on the device).
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }
}

/// What one forward pass returns; every tensor is part of the autograd graph.
#[derive(Debug)]
pub struct GroupLossOutput {
    /// `loss_group + ce_weight · loss_ce`, the quantity to minimise.
    pub loss: Tensor,
    /// NLL(log(X + 1e-12), y), mean over the batch.
    pub loss_group: Tensor,
    /// CE(z, y), mean over the batch.
    pub loss_ce: Tensor,
    /// Refined probabilities after T replicator steps (n×m, or n×c with batch_classes priors).
    pub x: Tensor,
    /// Class id of each column of `x` when the priors are `batch_classes`; `None` means column
    /// j is class j.
    pub classes: Option<Tensor>,
}

impl GroupLoss {
    /// Validates the options: τ finite and > 0, T ≥ 1, ce_weight finite and ≥ 0.
    pub fn new(opts: GroupLossOptions) -> Result<Self, GroupLossError> {
        if !(opts.tau.is_finite() && opts.tau > 0.0) {
            return Err(GroupLossError::Tau(opts.tau));
        }
        if opts.steps < 1 {
            return Err(GroupLossError::Steps(opts.steps));
        }
        if !(opts.ce_weight.is_finite() && opts.ce_weight >= 0.0) {
            return Err(GroupLossError::CeWeight(opts.ce_weight));
        }
        Ok(GroupLoss { opts })
    }

    /// The validated options.
    pub fn options(&self) -> &GroupLossOptions {
        &self.opts
    }

    /// Validates one batch's labels (in 0..`num_classes`) and anchor mask and moves them to
    /// `device`: the only host→device transfer per batch.
    pub fn targets(
        &self,
        labels: &[i64],
        anchors: &[bool],
        num_classes: i64,
        device: Device,
    ) -> Result<Targets, GroupLossError> {
        if num_classes < 1 {
            return Err(GroupLossError::NumClasses(num_classes));
        }
        if labels.is_empty() {
            return Err(GroupLossError::EmptyBatch);
        }
        if anchors.len() != labels.len() {
            return Err(GroupLossError::Shape {
                what: "anchor mask length",
                expected: labels.len().to_string(),
                got: anchors.len().to_string(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l >= num_classes)
        {
            return Err(GroupLossError::LabelOutOfRange {
                index,
                label,
                num_classes,
            });
        }
        let n = labels.len() as i64;
        let (columns, classes) = if self.opts.priors == Priors::BatchClasses {
            let mut present: Vec<i64> = labels.to_vec();
            present.sort_unstable();
            present.dedup();
            let cols: Vec<i64> = labels
                .iter()
                .map(|l| present.binary_search(l).map(|i| i as i64).unwrap_or(0))
                .collect();
            (
                Tensor::from_slice(&cols).to_device(device),
                Some(Tensor::from_slice(&present).to_device(device)),
            )
        } else {
            (Tensor::from_slice(labels).to_device(device), None)
        };
        let labels_t = if classes.is_some() {
            Tensor::from_slice(labels).to_device(device)
        } else {
            columns.shallow_clone()
        };
        Ok(Targets {
            n,
            num_classes,
            device,
            labels: labels_t,
            columns,
            classes,
            anchors: Tensor::from_slice(anchors).to_device(device).view([n, 1]),
            first_column: Tensor::zeros([n], (Kind::Int64, device)),
        })
    }

    /// Forward pass: features f (n×d) and logits z (n×m) → loss and refined X.
    ///
    /// Errors (never panics) on shape, dtype or device mismatches.
    pub fn forward(
        &self,
        features: &Tensor,
        logits: &Tensor,
        targets: &Targets,
    ) -> Result<GroupLossOutput, GroupLossError> {
        self.check(features, logits, targets)?;
        let w = self.similarity(features)?;
        let x0 = self.priors(logits, targets)?;
        let x = replicator(&w, &x0, self.opts.steps, self.opts.zero_diagonal)?;
        // NLL(log(X + ε), y) only reads X at each sample's own class: gather those n entries
        // first instead of taking the log of all n×m (same value, a fraction of the work at
        // SOP's m = 11,318).
        let loss_group = x
            .f_gather(1, &targets.columns.f_view([targets.n, 1])?, false)?
            .f_add_scalar(LOG_EPS)?
            .f_log()?
            .f_nll_loss::<Tensor>(&targets.first_column, None, Reduction::Mean, -100)?;
        let loss_ce = logits
            .f_log_softmax(1, logits.kind())?
            .f_nll_loss::<Tensor>(&targets.labels, None, Reduction::Mean, -100)?;
        let loss = loss_group.f_add(&loss_ce.f_mul_scalar(self.opts.ce_weight)?)?;
        Ok(GroupLossOutput {
            loss,
            loss_group,
            loss_ce,
            x,
            classes: targets.classes.as_ref().map(Tensor::shallow_clone),
        })
    }

    /// W = ReLU(Pearson(f)) with the diagonal set per [`GroupLossOptions::zero_diagonal`].
    ///
    /// A zero-variance row has no defined correlation: its norm is clamped to the dtype's
    /// smallest normal number, so its off-diagonal similarities are 0 (not NaN).
    pub fn similarity(&self, features: &Tensor) -> Result<Tensor, GroupLossError> {
        pearson_relu(features, self.opts.zero_diagonal)
    }

    /// X⁰: the priors of the non-anchors, one-hot rows for the anchors.
    pub fn priors(&self, logits: &Tensor, targets: &Targets) -> Result<Tensor, GroupLossError> {
        let kind = logits.kind();
        let (scores, columns) = match &targets.classes {
            Some(classes) => (logits.f_index_select(1, classes)?, classes.size()[0]),
            None => (logits.shallow_clone(), targets.num_classes),
        };
        let p = match self.opts.priors {
            Priors::Softmax | Priors::BatchClasses => scores
                .f_div_scalar(self.opts.tau)?
                .f_softmax(1, None::<Kind>)?,
            Priors::Uniform => Tensor::f_full(
                [targets.n, columns],
                1.0 / columns as f64,
                (kind, logits.device()),
            )?,
        };
        // Anchor rows become one-hot without materialising an n×m one-hot matrix: zero them,
        // then add 1 at (anchor, its class column). Anchor priors get no gradient.
        let ones = targets.anchors.f_to_kind(kind)?;
        Ok(p.f_masked_fill(&targets.anchors, 0.0)?.f_scatter_add(
            1,
            &targets.columns.f_view([targets.n, 1])?,
            &ones,
        )?)
    }

    fn check(&self, f: &Tensor, z: &Tensor, t: &Targets) -> Result<(), GroupLossError> {
        let shape = |what, expected: String, got: &Tensor| GroupLossError::Shape {
            what,
            expected,
            got: format!("{:?}", got.size()),
        };
        if f.dim() != 2 || f.size()[0] != t.n || f.size()[1] < 1 {
            return Err(shape("features f", format!("[{}, d ≥ 1]", t.n), f));
        }
        if z.dim() != 2 || z.size()[0] != t.n || z.size()[1] != t.num_classes {
            return Err(shape(
                "logits z",
                format!("[{}, {}]", t.n, t.num_classes),
                z,
            ));
        }
        let (fk, zk) = (f.kind(), z.kind());
        if fk != zk || !matches!(fk, Kind::Float | Kind::Double) {
            return Err(GroupLossError::Dtype {
                features: fk,
                logits: zk,
            });
        }
        for d in [f.device(), z.device()] {
            if d != t.device {
                return Err(GroupLossError::Device {
                    features: d,
                    targets: t.device,
                });
            }
        }
        Ok(())
    }
}

/// ReLU(Pearson correlation of the rows of f), diagonal 1 or 0.
pub fn pearson_relu(f: &Tensor, zero_diagonal: bool) -> Result<Tensor, GroupLossError> {
    let kind = f.kind();
    let tiny = match kind {
        Kind::Double => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    };
    let centred = f.f_sub(&f.f_mean_dim(1, true, None::<Kind>)?)?;
    let norm = centred
        .f_norm_scalaropt_dim(2, 1, true)?
        .f_clamp_min(tiny)?;
    let u = centred.f_div(&norm)?;
    let w = u.f_matmul(&u.f_tr()?)?.f_relu()?;
    // Setting the diagonal with one masked fill equals W⊙(1−I) + dI exactly, in two kernels
    // instead of five (it matters on a GPU, where this loss is launch-bound).
    let diagonal = Tensor::f_eye(f.size()[0], (Kind::Bool, f.device()))?;
    Ok(w.f_masked_fill(&diagonal, if zero_diagonal { 0.0 } else { 1.0 })?)
}

/// T replicator steps X ← X⊙(WX), rows renormalised to sum 1.
///
/// ε policy (as the Python reference documents): no ε is added. A row whose new mass is exactly
/// 0 — possible only with a zero diagonal and a sample with no positive similarity — keeps its
/// previous value instead of becoming 0/0. With the diagonal at 1 the mass cannot be 0
/// (W ≥ 0 gives (WX)ᵢ ≥ Xᵢ, so the mass is ≥ Σ Xᵢc² ≥ 1/m), and the guard is skipped.
pub fn replicator(
    w: &Tensor,
    x0: &Tensor,
    steps: i64,
    zero_diagonal: bool,
) -> Result<Tensor, GroupLossError> {
    let mut x = x0.shallow_clone();
    for _ in 0..steps {
        let num = x.f_mul(&w.f_matmul(&x)?)?;
        let mass = num.f_sum_dim_intlist(1, true, None::<Kind>)?;
        x = if zero_diagonal {
            let ok = mass.f_gt(0.0)?;
            let safe = mass.f_where_scalarother(&ok, 1.0)?;
            num.f_div(&safe)?.f_where_self(&ok, &x)?
        } else {
            num.f_div(&mass)?
        };
    }
    Ok(x)
}
