//! The per-tensor step ([`Layout::PerTensor`](super::Layout::PerTensor)):
//! `_single_tensor_radam` / `_single_tensor_adam` of PyTorch 2.11 (`foreach=False`) line by line.

use super::params::{py_pow, RAdamParams};
use super::RAdamError;
use tch::Tensor;

/// A parameter's state, created at its first step with a gradient.
#[derive(Debug)]
pub(super) struct ParamState {
    /// m_t
    pub exp_avg: Tensor,
    /// v_t
    pub exp_avg_sq: Tensor,
    /// t
    pub step: i64,
}

impl ParamState {
    /// t = 0 and zero moments shaped (and strided) as `param`.
    pub fn zeros(param: &Tensor) -> Self {
        ParamState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            step: 0,
        }
    }
}

/// `grad.add(param, alpha=λ)` bit for bit: tch's `add` has no `alpha`, and `grad + param·λ`
/// rounds differently where ATen fuses the multiply-add; `addcmul` with a 0-dim λ of the
/// parameter's dtype goes through the same arithmetic.
pub(super) fn add_weight_decay(
    grad: &Tensor,
    param: &Tensor,
    wd: f64,
) -> Result<Tensor, RAdamError> {
    let wd = weight_decay_scalar(param, wd)?;
    Ok(grad.f_addcmul(param, &wd)?)
}

/// λ as a 0-dim tensor of `param`'s dtype and device, for [`add_weight_decay`].
pub(super) fn weight_decay_scalar(param: &Tensor, wd: f64) -> Result<Tensor, RAdamError> {
    Ok(Tensor::from(wd)
        .f_to_device(param.device())?
        .f_to_kind(param.kind())?)
}

/// One step of one parameter: advances t in `st`, then updates `param` and the moments.
pub(super) fn update(
    hp: &RAdamParams,
    lr: f64,
    param: &mut Tensor,
    grad: &Tensor,
    st: &mut ParamState,
) -> Result<(), RAdamError> {
    let (beta1, beta2) = hp.betas;
    let wd = hp.weight_decay;
    st.step += 1;
    let step = st.step as f64;

    let grad = if wd != 0.0 {
        if hp.decoupled_weight_decay {
            let _ = param.f_mul_scalar_(1.0 - lr * wd)?;
            grad.shallow_clone()
        } else {
            add_weight_decay(grad, param, wd)?
        }
    } else {
        grad.shallow_clone()
    };

    // m_t = lerp(m_{t-1}, g_t, 1 − β1)
    let _ = st.exp_avg.f_lerp_(&grad, 1.0 - beta1)?;
    // v_t = β2 v_{t-1} + (1 − β2) g_t g_t; addcmul computes v + (1·((1 − β2) g)) g, the same
    // rounding sequence as PyTorch's addcmul_(g, g, value=1 − β2).
    let _ = st.exp_avg_sq.f_mul_scalar_(beta2)?;
    let _ = st
        .exp_avg_sq
        .f_addcmul_(&grad.f_mul_scalar(1.0 - beta2)?, &grad)?;

    let bias_correction1 = 1.0 - py_pow(beta1, step);
    let bias_correction2 = 1.0 - py_pow(beta2, step);
    if !hp.rectify {
        // torch.optim.Adam: denom = sqrt(v) / sqrt(bc2) + ε; θ.addcdiv_(m, denom, -γ / bc1).
        let denom = st
            .exp_avg_sq
            .f_sqrt()?
            .f_div_scalar(py_pow(bias_correction2, 0.5))?
            .f_add_scalar(hp.eps)?;
        // addcdiv's kernel computes θ + (value · m) / denom.
        let step_size = lr / bias_correction1;
        let _ = param.f_add_(&st.exp_avg.f_mul_scalar(-step_size)?.f_div(&denom)?)?;
        return Ok(());
    }
    let bias_corrected_exp_avg = st.exp_avg.f_div_scalar(bias_correction1)?;

    let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    let rho_t = rho_inf - 2.0 * step * py_pow(beta2, step) / bias_correction2;

    let update = if rho_t > 5.0 {
        let rect = py_pow(
            (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t),
            0.5,
        );
        // PyTorch: bias_correction2**0.5 / (sqrt(v) + ε), i.e. reciprocal(...) * scalar.
        let adaptive_lr = st
            .exp_avg_sq
            .f_sqrt()?
            .f_add_scalar(hp.eps)?
            .f_reciprocal()?
            .f_mul_scalar(py_pow(bias_correction2, 0.5))?;
        bias_corrected_exp_avg
            .f_mul_scalar(lr)?
            .f_mul(&adaptive_lr)?
            .f_mul_scalar(rect)?
    } else {
        bias_corrected_exp_avg.f_mul_scalar(lr)?
    };
    let _ = param.f_sub_(&update)?;
    Ok(())
}
