//! The multi-tensor step ([`Layout::MultiTensor`](super::Layout::MultiTensor)):
//! `_multi_tensor_radam` / `_multi_tensor_adam` of PyTorch 2.11 (`foreach=True`,
//! `capturable=False`) on flat buffers.
//!
//! PyTorch's `_foreach_*` ops apply one element-wise kernel per tensor with per-tensor scalars
//! (on the CPU they literally loop over the tensors). Parameters with the same step count get
//! the same scalars, so running each kernel once over the concatenation of the tensors computes
//! the same value for every element: the arithmetic does not depend on where an element sits
//! (checked bit for bit against `torch.optim.RAdam(foreach=True)` in f32 and f64, for odd sizes
//! and for every split of the buffer into chunks).
//!
//! Per element, with the step's scalars from [`StepScalars`]:
//!
//! ```text
//! g' = g + λθ (addcmul with a 0-dim λ)   or   θ ← θ·(1 − γλ)     (L2 / decoupled, when λ ≠ 0)
//! m  ← lerp(m, g', 1 − β1)
//! v  ← v·β2;  v ← v + (g'·(1 − β2))·g'
//! RAdam: b = √v;  b += ε;  b /= bc2;  b = 1/b;  b += unrect;  θ ← θ + m·b
//! Adam:  d = √v;  d /= √(1 − β2^t);  d += ε;  θ ← θ + (step_size·m)/d
//! ```

use super::params::{py_pow, RAdamParams};
use super::single::weight_decay_scalar;
use super::RAdamError;
use tch::{Device, Tensor};

/// Elements per pass on the CPU: all the operations of a step run over one chunk before the
/// next, so the chunk's slices of θ, g, m, v and the two scratch buffers stay in cache between
/// operations instead of streaming every buffer through memory a dozen times. Large enough
/// that each operation still splits over ATen's threads (grain size 32,768).
const CPU_CHUNK: i64 = 1 << 16;

/// The per-step scalars `_multi_tensor_radam` / `_multi_tensor_adam` compute in Python for a
/// step count t (`capturable=False`), with the same operations in the same order (Python's
/// `x * -1` is written `-x`: the same value, signed zeros included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum StepScalars {
    /// `bias_correction2[i]` and `unrect_step_size[i]` of `_multi_tensor_radam`: the update is
    /// θ + m / ((√v + ε) / bc2) + unrect·m, one of the two terms being 0 (bc2 = −0.0 when ρ_t ≤ 5,
    /// unrect = −0.0 when ρ_t > 5).
    Rectified {
        /// √(1 − β2^t) · (γ·r_t / (1 − β1^t)) · −1
        bc2: f64,
        /// (γ·[ρ_t ≤ 5] / (1 − β1^t)) · −1
        unrect: f64,
    },
    /// `bias_correction2_sqrt[i]` and `step_size[i]` of `_multi_tensor_adam`.
    Adam {
        /// √(1 − β2^t)
        bc2_sqrt: f64,
        /// (γ / (1 − β1^t)) · −1
        step_size: f64,
    },
}

impl StepScalars {
    /// The scalars of step `step` (t ≥ 1, already advanced) at learning rate `lr`.
    pub fn new(hp: &RAdamParams, lr: f64, step: i64) -> Self {
        let (beta1, beta2) = hp.betas;
        let t = step as f64;
        if !hp.rectify {
            let bias_correction1 = 1.0 - py_pow(beta1, t);
            let bias_correction2 = 1.0 - py_pow(beta2, t);
            return StepScalars::Adam {
                bc2_sqrt: py_pow(bias_correction2, 0.5),
                step_size: -(lr / bias_correction1),
            };
        }
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * py_pow(beta2, t) / (1.0 - py_pow(beta2, t));
        let rect = if rho_t > 5.0 {
            py_pow(
                (rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                    / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t),
                0.5,
            )
        } else {
            0.0
        };
        let unrectified = if rect > 0.0 { 0.0 } else { 1.0 };
        let bias_correction1 = 1.0 - py_pow(beta1, t);
        StepScalars::Rectified {
            bc2: -(py_pow(1.0 - py_pow(beta2, t), 0.5) * (lr * rect / bias_correction1)),
            unrect: -(lr * unrectified / bias_correction1),
        }
    }
}

/// One step over the 1-D buffers `param`, `grad`, `exp_avg`, `exp_avg_sq` (same length, dtype
/// and device; all elements at the same step, whose scalars are `sc`). On the CPU it runs
/// chunk by chunk ([`CPU_CHUNK`]), elsewhere over the whole buffers at once.
pub(super) fn update(
    hp: &RAdamParams,
    lr: f64,
    sc: StepScalars,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
) -> Result<(), RAdamError> {
    let n = param.numel() as i64;
    if n == 0 {
        return Ok(());
    }
    let chunk = match param.device() {
        Device::Cpu => CPU_CHUNK.min(n),
        _ => n,
    };
    let opts = (param.kind(), param.device());
    // Scratch for g' (L2) and for the update's buffer, reused by every chunk.
    let scratch = (
        Tensor::f_empty([chunk], opts)?,
        Tensor::f_empty([chunk], opts)?,
    );
    let wd = if hp.weight_decay != 0.0 && !hp.decoupled_weight_decay {
        Some(weight_decay_scalar(param, hp.weight_decay)?)
    } else {
        None
    };
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let part = |t: &Tensor| t.f_narrow(0, start, len);
        let (s1, s2) = if len == chunk {
            (scratch.0.shallow_clone(), scratch.1.shallow_clone())
        } else {
            (
                scratch.0.f_narrow(0, 0, len)?,
                scratch.1.f_narrow(0, 0, len)?,
            )
        };
        update_slice(
            hp,
            lr,
            sc,
            wd.as_ref(),
            &mut part(param)?,
            &part(grad)?,
            &mut part(exp_avg)?,
            &mut part(exp_avg_sq)?,
            (s1, s2),
        )?;
        start += len;
    }
    Ok(())
}

/// The op sequence of the module docs on one slice; `wd` is λ as a 0-dim tensor for L2 decay
/// (`None` for none or decoupled decay), `scratch` two buffers of the slice's length.
#[allow(clippy::too_many_arguments)]
fn update_slice(
    hp: &RAdamParams,
    lr: f64,
    sc: StepScalars,
    wd: Option<&Tensor>,
    param: &mut Tensor,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    scratch: (Tensor, Tensor),
) -> Result<(), RAdamError> {
    let (beta1, beta2) = hp.betas;
    let (s1, mut s2) = scratch;
    if hp.weight_decay != 0.0 && hp.decoupled_weight_decay {
        // torch._foreach_mul_(params, 1 − γλ)
        let _ = param.f_mul_scalar_(1.0 - lr * hp.weight_decay)?;
    }
    // torch._foreach_add(grads, params, alpha=λ), into the first scratch buffer
    let grad = match wd {
        Some(wd) => grad.f_addcmul_out(&s1, param, wd)?,
        None => grad.shallow_clone(),
    };
    // torch._foreach_lerp_(exp_avgs, grads, 1 − β1)
    let _ = exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
    // torch._foreach_mul_(exp_avg_sqs, β2); torch._foreach_addcmul_(exp_avg_sqs, grads, grads,
    // 1 − β2): the kernel computes v + ((1 − β2)·g)·g, so the scaled gradient goes first.
    let _ = exp_avg_sq.f_mul_scalar_(beta2)?;
    let _ = grad.f_mul_scalar_out(&s2, 1.0 - beta2)?;
    let _ = exp_avg_sq.f_addcmul_(&s2, &grad)?;
    // buffer = torch._foreach_sqrt(exp_avg_sqs)
    let _ = exp_avg_sq.f_sqrt_out(&s2)?;
    match sc {
        StepScalars::Rectified { bc2, unrect } => {
            let _ = s2.f_add_scalar_(hp.eps)?;
            let _ = s2.f_div_scalar_(bc2)?;
            let _ = s2.f_reciprocal_()?;
            let _ = s2.f_add_scalar_(unrect)?;
            // torch._foreach_addcmul_(params, exp_avgs, buffer)
            let _ = param.f_addcmul_(exp_avg, &s2)?;
        }
        StepScalars::Adam {
            bc2_sqrt,
            step_size,
        } => {
            let _ = s2.f_div_scalar_(bc2_sqrt)?;
            let _ = s2.f_add_scalar_(hp.eps)?;
            // torch._foreach_addcdiv_(params, exp_avgs, denom, step_size): θ + (s·m)/d. The
            // first scratch buffer (g') is no longer needed.
            let mut q = exp_avg.f_mul_scalar_out(&s1, step_size)?;
            let _ = q.f_div_(&s2)?;
            let _ = param.f_add_(&q)?;
        }
    }
    Ok(())
}
