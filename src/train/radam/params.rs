//! Hyper-parameters of [`RAdam`](super::RAdam), their checks, and the choice between the
//! per-tensor and the multi-tensor (flat-buffer) step.

use super::RAdamError;

/// How a step walks the parameters. Both reproduce `torch.optim.RAdam` / `torch.optim.Adam`
/// operation for operation, each one of PyTorch's two implementations, so the two layouts can
/// differ from each other by roundings (not from PyTorch's corresponding implementation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One parameter at a time, as `_single_tensor_radam` / `_single_tensor_adam`
    /// (`foreach=False`). The parameters keep their own storage.
    PerTensor,
    /// As `_multi_tensor_radam` / `_multi_tensor_adam` (`foreach=True`, PyTorch's default on
    /// the GPU), over flat buffers: per group and (device, dtype), the parameters and their
    /// gradients become views of one buffer each and the moments are one buffer each, so a
    /// step is a dozen element-wise operations over each buffer instead of a dozen per tensor.
    /// The parameters' storage changes when the optimiser is built (values, shapes and strides
    /// are kept).
    #[default]
    MultiTensor,
}

/// Hyper-parameters of [`RAdam`](super::RAdam), with `torch.optim.RAdam`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RAdamParams {
    /// Learning rate γ of the first group (default 1e-3).
    pub lr: f64,
    /// (β1, β2), decay rates of the first and second moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// ε added to √v_t (default 1e-8).
    pub eps: f64,
    /// Weight decay λ (default 0).
    pub weight_decay: f64,
    /// `false` (default): λθ is added to the gradient (L2). `true`: θ ← θ(1 − γλ) before the
    /// update (AdamW-style decoupled decay).
    pub decoupled_weight_decay: bool,
    /// `true` (default): RAdam's rectified update. `false`: Adam's update
    /// (`torch.optim.Adam`), without the warm-up that rectification amounts to.
    pub rectify: bool,
    /// Per-tensor (`foreach=False`) or multi-tensor (`foreach=True`, default) step.
    pub layout: Layout,
}

impl Default for RAdamParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            rectify: true,
            layout: Layout::default(),
        }
    }
}

/// γ must be finite and ≥ 0.
pub(super) fn validate_lr(lr: f64) -> Result<(), RAdamError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(RAdamError::InvalidLr(lr))
    }
}

impl RAdamParams {
    /// Checks the ranges `torch.optim.RAdam` checks (γ ≥ 0, ε ≥ 0, 0 ≤ β1, β2 < 1, λ ≥ 0), and
    /// also rejects non-finite values.
    pub fn validate(&self) -> Result<(), RAdamError> {
        validate_lr(self.lr)?;
        let (b1, b2) = self.betas;
        if !(0.0..1.0).contains(&b1) {
            return Err(RAdamError::InvalidBeta1(b1));
        }
        if !(0.0..1.0).contains(&b2) {
            return Err(RAdamError::InvalidBeta2(b2));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(RAdamError::InvalidEps(self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(RAdamError::InvalidWeightDecay(self.weight_decay));
        }
        Ok(())
    }
}

/// `x ** y` as Python computes it for floats: libm's `pow`. The exponent goes through
/// `black_box` so that LLVM cannot rewrite `pow(x, 0.5)` into `sqrt(x)`, which may round
/// differently from `pow` and so break bit-equality with PyTorch's per-step scalars.
pub(super) fn py_pow(x: f64, y: f64) -> f64 {
    x.powf(std::hint::black_box(y))
}
