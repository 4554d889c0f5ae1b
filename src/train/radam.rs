//! RAdam (Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and Beyond"), written
//! to match `torch.optim.RAdam` of PyTorch 2.11 (`foreach=False`, `maximize=False`,
//! `capturable=False`) operation for operation.
//!
//! For each parameter θ with gradient g_t at step t (starting at t = 1):
//!
//! ```text
//! g_t ← g_t + λ θ_{t-1}                         (L2, default)   or   θ_{t-1} ← θ_{t-1}(1 − γλ)  (decoupled)
//! m_t = β1 m_{t-1} + (1 − β1) g_t               (`exp_avg`, via lerp)
//! v_t = β2 v_{t-1} + (1 − β2) g_t²              (`exp_avg_sq`)
//! m̂_t = m_t / (1 − β1^t)
//! ρ_∞ = 2 / (1 − β2) − 1,   ρ_t = ρ_∞ − 2 t β2^t / (1 − β2^t)
//! if ρ_t > 5:  l_t = √(1 − β2^t) / (√v_t + ε),
//!              r_t = √((ρ_t − 4)(ρ_t − 2) ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2) ρ_t)),
//!              θ_t = θ_{t-1} − γ m̂_t l_t r_t
//! else:        θ_t = θ_{t-1} − γ m̂_t
//! ```
//!
//! With [`RAdamParams::rectify`] off the update is `torch.optim.Adam`'s instead (same moments,
//! `θ_t = θ_{t-1} − (γ / (1 − β1^t)) m_t / (√v_t / √(1 − β2^t) + ε)` from the first step), so
//! a recipe can compare the two with one optimiser state layout.
//!
//! The only operation that is not the same ATen call as PyTorch's is the L2 term
//! (`grad.add(param, alpha=λ)`; tch has no `alpha` argument, so it is `g + θ·λ`), which can differ by
//! one rounding. Everything else uses the same kernels in the same order.

use tch::{Kind, Tensor};
use thiserror::Error;

/// Errors from building, stepping or restoring a [`RAdam`].
#[derive(Debug, Error)]
pub enum RAdamError {
    /// γ must be finite and ≥ 0.
    #[error("learning rate γ must be finite and >= 0, got {0}")]
    InvalidLr(f64),
    /// β1 must lie in [0, 1).
    #[error("β1 must be in [0, 1), got {0}")]
    InvalidBeta1(f64),
    /// β2 must lie in [0, 1).
    #[error("β2 must be in [0, 1), got {0}")]
    InvalidBeta2(f64),
    /// ε must be finite and ≥ 0.
    #[error("ε must be finite and >= 0, got {0}")]
    InvalidEps(f64),
    /// λ must be finite and ≥ 0.
    #[error("weight decay λ must be finite and >= 0, got {0}")]
    InvalidWeightDecay(f64),
    /// A parameter group index that does not exist.
    #[error("parameter group {0} does not exist ({1} groups)")]
    NoSuchGroup(usize, usize),
    /// A state name that is not `g<G>.p<I>.{exp_avg,exp_avg_sq,step}` or `g<G>.lr` for an existing
    /// group and parameter.
    #[error("unknown optimiser state entry {0:?}")]
    UnknownStateKey(String),
    /// A parameter's state is only partly present.
    #[error("optimiser state for {0} is incomplete: missing {1}")]
    IncompleteState(String, &'static str),
    /// A state tensor whose shape differs from its parameter's.
    #[error("optimiser state {name} has shape {got:?}, its parameter has {expected:?}")]
    ShapeMismatch {
        /// Name of the state entry.
        name: String,
        /// Shape found in the state.
        got: Vec<i64>,
        /// Shape of the parameter.
        expected: Vec<i64>,
    },
    /// A `step` or `lr` entry that is not a valid scalar.
    #[error("optimiser state {0} is not a valid scalar")]
    InvalidScalar(String),
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Hyper-parameters of [`RAdam`], with `torch.optim.RAdam`'s defaults.
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
    /// (`torch.optim.Adam`, `_single_tensor_adam`), without the warm-up that rectification
    /// amounts to.
    pub rectify: bool,
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
        }
    }
}

fn validate_lr(lr: f64) -> Result<(), RAdamError> {
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

/// Per-parameter state, created at the first step where the parameter has a gradient.
#[derive(Debug)]
struct ParamState {
    /// m_t
    exp_avg: Tensor,
    /// v_t
    exp_avg_sq: Tensor,
    /// t
    step: i64,
}

#[derive(Debug)]
struct ParamGroup {
    params: Vec<Tensor>,
    state: Vec<Option<ParamState>>,
    lr: f64,
}

/// RAdam over one or more parameter groups; groups share β, ε and λ and each has its own γ.
#[derive(Debug)]
pub struct RAdam {
    hp: RAdamParams,
    groups: Vec<ParamGroup>,
}

impl RAdam {
    /// An optimiser over `params` (e.g. `VarStore::trainable_variables()`) as group 0, with γ =
    /// `hp.lr`. The tensors are shallow clones of the variables: updates land in the variables.
    pub fn new(params: Vec<Tensor>, hp: RAdamParams) -> Result<Self, RAdamError> {
        hp.validate()?;
        let mut opt = Self {
            hp,
            groups: Vec::new(),
        };
        opt.add_group(params, hp.lr)?;
        Ok(opt)
    }

    /// Adds a parameter group with its own learning rate (e.g. a classifier head next to the
    /// backbone) and returns its index.
    pub fn add_group(&mut self, params: Vec<Tensor>, lr: f64) -> Result<usize, RAdamError> {
        validate_lr(lr)?;
        let state = params.iter().map(|_| None).collect();
        self.groups.push(ParamGroup { params, state, lr });
        Ok(self.groups.len() - 1)
    }

    /// The hyper-parameters given at construction (`lr` is group 0's initial γ).
    pub fn params(&self) -> &RAdamParams {
        &self.hp
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// Sets γ of every group.
    pub fn set_lr(&mut self, lr: f64) -> Result<(), RAdamError> {
        validate_lr(lr)?;
        for g in &mut self.groups {
            g.lr = lr;
        }
        Ok(())
    }

    /// Sets γ of one group.
    pub fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<(), RAdamError> {
        validate_lr(lr)?;
        let n = self.groups.len();
        let g = self
            .groups
            .get_mut(group)
            .ok_or(RAdamError::NoSuchGroup(group, n))?;
        g.lr = lr;
        Ok(())
    }

    /// γ of one group.
    pub fn group_lr(&self, group: usize) -> Result<f64, RAdamError> {
        self.groups
            .get(group)
            .map(|g| g.lr)
            .ok_or(RAdamError::NoSuchGroup(group, self.groups.len()))
    }

    /// Zeroes the gradients of all parameters that have one.
    pub fn zero_grad(&mut self) {
        for g in &self.groups {
            for p in &g.params {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.detach_().zero_();
                }
            }
        }
    }

    /// One RAdam update of every parameter whose `.grad()` is defined (the others, and their
    /// step counts t, are left alone, as in PyTorch). Runs under `tch::no_grad`.
    pub fn step(&mut self) -> Result<(), RAdamError> {
        let hp = self.hp;
        tch::no_grad(|| {
            for g in &mut self.groups {
                let lr = g.lr;
                for (p, st) in g.params.iter().zip(g.state.iter_mut()) {
                    let grad = p.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let st = st.get_or_insert_with(|| ParamState {
                        exp_avg: p.zeros_like(),
                        exp_avg_sq: p.zeros_like(),
                        step: 0,
                    });
                    update(&hp, lr, &mut p.shallow_clone(), &grad, st)?;
                }
            }
            Ok(())
        })
    }

    /// Copies of the whole optimiser state as named tensors, for a checkpoint:
    /// `g<G>.lr` (f64 scalar) for each group, and for each parameter that has state
    /// `g<G>.p<I>.exp_avg`, `g<G>.p<I>.exp_avg_sq` (m_t, v_t) and `g<G>.p<I>.step` (t, i64 scalar).
    /// G and I are positions in the order of [`RAdam::new`] / [`RAdam::add_group`].
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            out.push((format!("g{gi}.lr"), Tensor::from(g.lr)));
            for (pi, st) in g.state.iter().enumerate() {
                if let Some(st) = st {
                    out.push((format!("g{gi}.p{pi}.exp_avg"), st.exp_avg.copy()));
                    out.push((format!("g{gi}.p{pi}.exp_avg_sq"), st.exp_avg_sq.copy()));
                    out.push((format!("g{gi}.p{pi}.step"), Tensor::from(st.step)));
                }
            }
        }
        out
    }

    /// Restores a state written by [`RAdam::state_tensors`] into an optimiser built over the same
    /// parameters (same groups, order and shapes). Tensors are copied to each parameter's device
    /// and dtype. All-or-nothing: on error the optimiser is unchanged. Parameters without entries
    /// get no state (as if never stepped); groups without `g<G>.lr` keep their γ.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), RAdamError> {
        type Partial = (Option<Tensor>, Option<Tensor>, Option<i64>);
        let mut lrs: Vec<Option<f64>> = vec![None; self.groups.len()];
        let mut partial: Vec<Vec<Partial>> = self
            .groups
            .iter()
            .map(|g| g.params.iter().map(|_| (None, None, None)).collect())
            .collect();
        for (name, t) in named {
            let unknown = || RAdamError::UnknownStateKey(name.clone());
            let mut parts = name.split('.');
            let gi: usize = parts
                .next()
                .and_then(|s| s.strip_prefix('g'))
                .and_then(|s| s.parse().ok())
                .filter(|&gi| gi < self.groups.len())
                .ok_or_else(unknown)?;
            let scalar_err = || RAdamError::InvalidScalar(name.clone());
            match (parts.next(), parts.next(), parts.next()) {
                (Some("lr"), None, None) => {
                    if t.numel() != 1 {
                        return Err(scalar_err());
                    }
                    let lr = t.f_double_value(&[])?;
                    validate_lr(lr)?;
                    lrs[gi] = Some(lr);
                }
                (Some(p), Some(field), None) => {
                    let pi: usize = p
                        .strip_prefix('p')
                        .and_then(|s| s.parse().ok())
                        .filter(|&pi| pi < self.groups[gi].params.len())
                        .ok_or_else(unknown)?;
                    let param = &self.groups[gi].params[pi];
                    let slot = &mut partial[gi][pi];
                    match field {
                        "exp_avg" | "exp_avg_sq" => {
                            let (got, expected) = (t.size(), param.size());
                            if got != expected {
                                return Err(RAdamError::ShapeMismatch {
                                    name: name.clone(),
                                    got,
                                    expected,
                                });
                            }
                            let c = t
                                .f_to_device(param.device())?
                                .f_to_kind(param.kind())?
                                .f_detach_copy()?;
                            if field == "exp_avg" {
                                slot.0 = Some(c);
                            } else {
                                slot.1 = Some(c);
                            }
                        }
                        "step" => {
                            if t.numel() != 1 || t.kind() != Kind::Int64 {
                                return Err(scalar_err());
                            }
                            let s = t.f_int64_value(&[])?;
                            if s < 1 {
                                return Err(scalar_err());
                            }
                            slot.2 = Some(s);
                        }
                        _ => return Err(unknown()),
                    }
                }
                _ => return Err(unknown()),
            }
        }
        let mut new_states = Vec::with_capacity(partial.len());
        for (gi, group) in partial.into_iter().enumerate() {
            let mut states = Vec::with_capacity(group.len());
            for (pi, slot) in group.into_iter().enumerate() {
                let key = || format!("g{gi}.p{pi}");
                states.push(match slot {
                    (None, None, None) => None,
                    (Some(exp_avg), Some(exp_avg_sq), Some(step)) => Some(ParamState {
                        exp_avg,
                        exp_avg_sq,
                        step,
                    }),
                    (None, _, _) => return Err(RAdamError::IncompleteState(key(), "exp_avg")),
                    (_, None, _) => return Err(RAdamError::IncompleteState(key(), "exp_avg_sq")),
                    (_, _, None) => return Err(RAdamError::IncompleteState(key(), "step")),
                });
            }
            new_states.push(states);
        }
        for ((g, states), lr) in self.groups.iter_mut().zip(new_states).zip(lrs) {
            g.state = states;
            if let Some(lr) = lr {
                g.lr = lr;
            }
        }
        Ok(())
    }
}

/// One step for one parameter; mirrors `_single_tensor_radam` line by line.
fn update(
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
            // PyTorch: grad.add(param, alpha=λ)
            grad.f_add(&param.f_mul_scalar(wd)?)?
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

    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    if !hp.rectify {
        // torch.optim.Adam: denom = sqrt(v) / sqrt(bc2) + ε; θ.addcdiv_(m, denom, -γ / bc1).
        let denom = st
            .exp_avg_sq
            .f_sqrt()?
            .f_div_scalar(bias_correction2.powf(0.5))?
            .f_add_scalar(hp.eps)?;
        // addcdiv's kernel computes θ + (value · m) / denom.
        let step_size = lr / bias_correction1;
        let _ = param.f_add_(&st.exp_avg.f_mul_scalar(-step_size)?.f_div(&denom)?)?;
        return Ok(());
    }
    let bias_corrected_exp_avg = st.exp_avg.f_div_scalar(bias_correction1)?;

    let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;

    let update = if rho_t > 5.0 {
        let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
            / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            .powf(0.5);
        // PyTorch: bias_correction2**0.5 / (sqrt(v) + ε), i.e. reciprocal(...) * scalar.
        let adaptive_lr = st
            .exp_avg_sq
            .f_sqrt()?
            .f_add_scalar(hp.eps)?
            .f_reciprocal()?
            .f_mul_scalar(bias_correction2.powf(0.5))?;
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
