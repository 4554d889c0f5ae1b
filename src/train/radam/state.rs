//! The optimiser state as named tensors, the checkpoint format of both layouts:
//! `g<G>.lr` (f64 scalar) per group and, per parameter with state, `g<G>.p<I>.exp_avg`,
//! `g<G>.p<I>.exp_avg_sq` (m_t, v_t, the parameter's shape) and `g<G>.p<I>.step` (t, i64
//! scalar); G and I are positions in the order of [`RAdam::new`](super::RAdam::new) /
//! [`RAdam::add_group`](super::RAdam::add_group).

use super::params::validate_lr;
use super::RAdamError;
use tch::{Kind, Tensor};

/// (m, v, t) of one parameter.
pub(super) type ParamEntry = (Tensor, Tensor, i64);

/// A state read back and checked against the groups' parameters, ready to install.
#[derive(Debug)]
pub(super) struct LoadedState {
    /// γ per group, where given.
    pub lrs: Vec<Option<f64>>,
    /// Per group and parameter: its state (on its device, in its dtype), or none.
    pub params: Vec<Vec<Option<ParamEntry>>>,
}

/// The entries of one group: `lr`, then each parameter's state in order.
pub(super) fn group_entries(
    group: usize,
    lr: f64,
    states: impl IntoIterator<Item = (usize, ParamEntry)>,
) -> Vec<(String, Tensor)> {
    let mut out = vec![(format!("g{group}.lr"), Tensor::from(lr))];
    for (i, (m, v, t)) in states {
        out.push((format!("g{group}.p{i}.exp_avg"), m.copy()));
        out.push((format!("g{group}.p{i}.exp_avg_sq"), v.copy()));
        out.push((format!("g{group}.p{i}.step"), Tensor::from(t)));
    }
    out
}

/// Parses and checks `named` against the parameters of each group (`groups[g][i]`): known keys,
/// matching shapes, valid scalars, each parameter's state complete or absent. Moments are
/// copied to their parameter's device and dtype.
pub(super) fn parse(
    named: &[(String, Tensor)],
    groups: &[&[Tensor]],
) -> Result<LoadedState, RAdamError> {
    type Partial = (Option<Tensor>, Option<Tensor>, Option<i64>);
    let mut lrs: Vec<Option<f64>> = vec![None; groups.len()];
    let mut partial: Vec<Vec<Partial>> = groups
        .iter()
        .map(|g| g.iter().map(|_| (None, None, None)).collect())
        .collect();
    for (name, t) in named {
        let unknown = || RAdamError::UnknownStateKey(name.clone());
        let mut parts = name.split('.');
        let gi: usize = parts
            .next()
            .and_then(|s| s.strip_prefix('g'))
            .and_then(|s| s.parse().ok())
            .filter(|&gi| gi < groups.len())
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
                    .filter(|&pi| pi < groups[gi].len())
                    .ok_or_else(unknown)?;
                let param = &groups[gi][pi];
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
    let mut params = Vec::with_capacity(partial.len());
    for (gi, group) in partial.into_iter().enumerate() {
        let mut states = Vec::with_capacity(group.len());
        for (pi, slot) in group.into_iter().enumerate() {
            let key = || format!("g{gi}.p{pi}");
            states.push(match slot {
                (None, None, None) => None,
                (Some(m), Some(v), Some(t)) => Some((m, v, t)),
                (None, _, _) => return Err(RAdamError::IncompleteState(key(), "exp_avg")),
                (_, None, _) => return Err(RAdamError::IncompleteState(key(), "exp_avg_sq")),
                (_, _, None) => return Err(RAdamError::IncompleteState(key(), "step")),
            });
        }
        params.push(states);
    }
    Ok(LoadedState { lrs, params })
}
