//! RAdam (Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and Beyond"), written
//! to match `torch.optim.RAdam` of PyTorch 2.11 (`maximize=False`, `capturable=False`)
//! operation for operation, in either of PyTorch's implementations ([`Layout`]): per tensor
//! (`foreach=False`, `single`) or multi-tensor (`foreach=True`, `multi` over the flat
//! buffers of `flat`, the default).
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
//! The two layouts order the same arithmetic differently, so they differ from each other by
//! roundings; each reproduces its PyTorch counterpart bit for bit on the CPU (the L2 term,
//! `grad.add(param, alpha=λ)`, which tch cannot call, goes through `addcmul` with a 0-dim λ,
//! the same arithmetic). Both keep the same state and checkpoint format (`state`), so a
//! checkpoint of one resumes in the other.

mod error;
mod flat;
mod multi;
mod params;
mod single;
mod state;

pub use error::RAdamError;
pub use params::{Layout, RAdamParams};

use flat::FlatGroup;
use params::validate_lr;
use single::ParamState;
use std::collections::HashSet;
use tch::Tensor;

/// A group's per-parameter state, in the group's layout.
#[derive(Debug)]
enum GroupState {
    /// Each parameter's own moment tensors, created at its first step with a gradient.
    PerTensor(Vec<Option<ParamState>>),
    /// Flat buffers the parameters, gradients and moments view.
    Flat(FlatGroup),
}

#[derive(Debug)]
struct ParamGroup {
    params: Vec<Tensor>,
    state: GroupState,
    lr: f64,
}

/// RAdam over one or more parameter groups; groups share β, ε, λ and the layout, and each has
/// its own γ.
#[derive(Debug)]
pub struct RAdam {
    hp: RAdamParams,
    groups: Vec<ParamGroup>,
}

impl RAdam {
    /// An optimiser over `params` (e.g. `VarStore::trainable_variables()`) as group 0, with γ =
    /// `hp.lr`. The tensors are shallow clones of the variables: updates land in the variables.
    /// With [`Layout::MultiTensor`] the variables are rebound to views of the group's flat
    /// buffer here (see `flat`), so build the optimiser after anything that replaces their
    /// storage (a device move, a memory-format conversion), not before.
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
    /// backbone) and returns its index. A tensor already in a group, or twice in `params`, is
    /// an error, as in `torch.optim`.
    pub fn add_group(&mut self, params: Vec<Tensor>, lr: f64) -> Result<usize, RAdamError> {
        validate_lr(lr)?;
        let group = self.groups.len();
        // Same storage address ⇒ same tensor (or aliasing views, as harmful).
        let mut seen: HashSet<usize> = self
            .groups
            .iter()
            .flat_map(|g| &g.params)
            .filter(|p| p.numel() > 0)
            .map(|p| p.data_ptr() as usize)
            .collect();
        for (index, p) in params.iter().enumerate() {
            if p.numel() > 0 && !seen.insert(p.data_ptr() as usize) {
                return Err(RAdamError::DuplicateParam { group, index });
            }
        }
        let state = match self.hp.layout {
            Layout::PerTensor => GroupState::PerTensor(params.iter().map(|_| None).collect()),
            Layout::MultiTensor => GroupState::Flat(FlatGroup::new(&params)?),
        };
        self.groups.push(ParamGroup { params, state, lr });
        Ok(group)
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

    /// Zeroes the gradients of all parameters that have one, in place (a later backward
    /// accumulates into them, which keeps the multi-tensor layout's gradients in its buffer).
    pub fn zero_grad(&mut self) {
        for g in &self.groups {
            let flat_done = match &g.state {
                GroupState::Flat(f) => f.zero_grad(&g.params).is_ok(),
                GroupState::PerTensor(_) => false,
            };
            if flat_done {
                continue;
            }
            for p in &g.params {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.detach_().zero_();
                }
            }
        }
    }

    /// One update of every parameter whose `.grad()` is defined (the others, and their step
    /// counts t, are left alone, as in PyTorch). Runs under `tch::no_grad`.
    pub fn step(&mut self) -> Result<(), RAdamError> {
        let hp = self.hp;
        tch::no_grad(|| {
            for g in &mut self.groups {
                let lr = g.lr;
                match &mut g.state {
                    GroupState::Flat(f) => f.step(&hp, lr, &g.params)?,
                    GroupState::PerTensor(states) => {
                        for (p, st) in g.params.iter().zip(states.iter_mut()) {
                            let grad = p.grad();
                            if !grad.defined() {
                                continue;
                            }
                            let st = st.get_or_insert_with(|| ParamState::zeros(p));
                            single::update(&hp, lr, &mut p.shallow_clone(), &grad, st)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Copies of the whole optimiser state as named tensors, for a checkpoint (format in
    /// `state`; the same for both layouts).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            let entries: Vec<(usize, state::ParamEntry)> = match &g.state {
                GroupState::PerTensor(states) => states
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.as_ref().map(|s| {
                            let (m, v) = (s.exp_avg.shallow_clone(), s.exp_avg_sq.shallow_clone());
                            (i, (m, v, s.step))
                        })
                    })
                    .collect(),
                GroupState::Flat(f) => (0..g.params.len())
                    .filter_map(|i| {
                        // Views of live buffers cannot fail to build; a failure would mean a
                        // corrupted optimiser, which a checkpoint must not hide.
                        f.state(i)
                            .expect("viewing the optimiser's own buffers")
                            .map(|e| (i, e))
                    })
                    .collect(),
            };
            out.extend(state::group_entries(gi, g.lr, entries));
        }
        out
    }

    /// Restores a state written by [`RAdam::state_tensors`] (by either layout) into an
    /// optimiser built over the same parameters (same groups, order and shapes). Tensors are
    /// copied to each parameter's device and dtype. All-or-nothing: on a malformed state the
    /// optimiser is unchanged. Parameters without entries get no state (as if never stepped);
    /// groups without `g<G>.lr` keep their γ.
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<(), RAdamError> {
        let params: Vec<&[Tensor]> = self.groups.iter().map(|g| g.params.as_slice()).collect();
        let loaded = state::parse(named, &params)?;
        for ((g, states), lr) in self.groups.iter_mut().zip(loaded.params).zip(loaded.lrs) {
            match &mut g.state {
                GroupState::PerTensor(slots) => {
                    *slots = states
                        .into_iter()
                        .map(|s| {
                            s.map(|(exp_avg, exp_avg_sq, step)| ParamState {
                                exp_avg,
                                exp_avg_sq,
                                step,
                            })
                        })
                        .collect();
                }
                GroupState::Flat(f) => f.load(states)?,
            }
            if let Some(lr) = lr {
                g.lr = lr;
            }
        }
        Ok(())
    }
}
