//! The flat buffers of [`Layout::MultiTensor`](super::Layout::MultiTensor).
//!
//! A group's parameters are split into buckets by (device, dtype), as `torch.optim` groups
//! tensors for its `_foreach_*` calls. Each bucket owns one 1-D buffer per quantity — θ, ∇θ,
//! m, v — and every parameter occupies the same range `offset..offset + numel` of each:
//!
//! * θ: when the group is built, each parameter's values are copied into its range and the
//!   variable is rebound to a view of it (`set_data`, under `no_grad`). Every handle to the
//!   variable (the `VarStore`'s, the model's layers') shares the rebound tensor, so the model
//!   computes with the buffer and `VarStore::load` / `copy_` write into it. The view keeps the
//!   parameter's shape and strides: a channels-last kernel stays channels-last, its range
//!   holding it in memory order.
//! * ∇θ: at a step, a gradient that is not yet a view of its range (the first backward creates
//!   a fresh tensor) is copied there and rebound to the view the same way. Zeroing the
//!   gradients then zeroes the views in place and later backwards accumulate into them, so from
//!   the second step on the gradients are already in the buffer.
//! * m, v: allocated (zeros) at the first step with a gradient, or when a state is loaded.
//!
//! Operating on a whole range in memory order is exact because every operation of the step is
//! element-wise and the four buffers lay out each parameter identically.

use super::multi::{self, StepScalars};
use super::params::RAdamParams;
use super::RAdamError;
use tch::{Device, Kind, TchError, Tensor};

/// One parameter's place in its bucket.
#[derive(Debug)]
struct Slot {
    /// Position in the group's parameter list.
    index: usize,
    /// First element of its range in the bucket's buffers.
    offset: i64,
    numel: i64,
    /// The parameter's shape.
    shape: Vec<i64>,
    /// Its dimensions from outermost to innermost in memory (`[0, 2, 3, 1]` for channels-last).
    order: Vec<i64>,
    /// The strides of [`Slot::view`] (those of the parameter, up to dimensions of size 1).
    stride: Vec<i64>,
}

impl Slot {
    /// The parameter-shaped, parameter-strided view of this slot's range of `flat`.
    fn view(&self, flat: &Tensor) -> Result<Tensor, TchError> {
        let memory_shape: Vec<i64> = self.order.iter().map(|&d| self.shape[d as usize]).collect();
        let mut inverse = vec![0i64; self.order.len()];
        for (i, &d) in self.order.iter().enumerate() {
            inverse[d as usize] = i as i64;
        }
        flat.f_narrow(0, self.offset, self.numel)?
            .f_view(memory_shape.as_slice())?
            .f_permute(inverse.as_slice())
    }

    /// This slot's range of `flat`, 1-D in memory order.
    fn slice(&self, flat: &Tensor) -> Result<Tensor, TchError> {
        flat.f_narrow(0, self.offset, self.numel)
    }

    /// Whether `t` is this slot's view of `flat` (same address, shape and strides).
    fn is_view_of(&self, t: &Tensor, flat: &Tensor) -> bool {
        let elt = flat.kind().elt_size_in_bytes() as i64;
        let address = flat.data_ptr() as usize as i64 + self.offset * elt;
        t.data_ptr() as usize as i64 == address
            && t.size() == self.shape
            && t.stride() == self.stride
    }
}

/// The dimensions of `t` from outermost to innermost in memory when its elements fill one
/// block without gaps or overlaps (dense, as contiguous and channels-last tensors are); the
/// row-major order otherwise, or when it is empty.
fn memory_order(t: &Tensor) -> Vec<i64> {
    let (size, stride) = (t.size(), t.stride());
    let row_major: Vec<i64> = (0..size.len() as i64).collect();
    if t.numel() == 0 {
        return row_major;
    }
    let mut order: Vec<usize> = (0..size.len()).collect();
    // Stable: dimensions with equal strides (of size 1) keep their row-major order.
    order.sort_by_key(|&d| std::cmp::Reverse(stride[d]));
    let mut expected = 1;
    let dense = order.iter().rev().all(|&d| {
        if size[d] == 1 {
            return true;
        }
        let ok = stride[d] == expected;
        expected *= size[d];
        ok
    });
    if dense {
        order.into_iter().map(|d| d as i64).collect()
    } else {
        row_major
    }
}

/// m and v of a bucket.
#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// The parameters of one group on one (device, dtype), and their buffers.
#[derive(Debug)]
struct Bucket {
    slots: Vec<Slot>,
    /// θ: the buffer the parameters view.
    param: Tensor,
    /// ∇θ, the buffer the gradients view once adopted; allocated at the first step.
    grad: Option<Tensor>,
    /// Allocated at the first step with a gradient, or by [`FlatGroup::load`].
    moments: Option<Moments>,
}

impl Bucket {
    /// Moves each parameter's values into a new buffer and rebinds the parameter to its view.
    fn new(
        slots: Vec<Slot>,
        params: &[Tensor],
        kind: Kind,
        device: Device,
    ) -> Result<Self, RAdamError> {
        let total = slots.iter().map(|s| s.numel).sum::<i64>();
        let param = Tensor::f_empty([total], (kind, device))?;
        let mut bound = Vec::with_capacity(slots.len());
        for mut slot in slots {
            let mut view = slot.view(&param)?;
            let mut p = params[slot.index].shallow_clone();
            view.f_copy_(&p)?;
            p.f_set_data(&view)?;
            slot.stride = view.stride();
            bound.push(slot);
        }
        Ok(Bucket {
            slots: bound,
            param,
            grad: None,
            moments: None,
        })
    }

    /// The gradients of the slots' parameters (undefined where none).
    fn grads(&self, params: &[Tensor]) -> Vec<Tensor> {
        self.slots.iter().map(|s| params[s.index].grad()).collect()
    }

    /// The gradient buffer, after copying every defined gradient that is not yet a view of it
    /// into its range and rebinding it to that view.
    fn adopt_grads(&mut self, grads: &[Tensor]) -> Result<Tensor, RAdamError> {
        let flat = match &self.grad {
            Some(g) => g.shallow_clone(),
            None => {
                let g = self.param.f_zeros_like()?;
                self.grad = Some(g.shallow_clone());
                g
            }
        };
        for (slot, g) in self.slots.iter().zip(grads) {
            if g.defined() && !slot.is_view_of(g, &flat) {
                let mut view = slot.view(&flat)?;
                view.f_copy_(g)?;
                g.shallow_clone().f_set_data(&view)?;
            }
        }
        Ok(flat)
    }

    /// m and v, zeros when first asked for.
    fn moments(&mut self) -> Result<&Moments, RAdamError> {
        if self.moments.is_none() {
            self.moments = Some(Moments {
                exp_avg: self.param.f_zeros_like()?,
                exp_avg_sq: self.param.f_zeros_like()?,
            });
        }
        Ok(self.moments.as_ref().expect("just set"))
    }
}

/// A parameter group in the multi-tensor layout: its buckets and each parameter's step count.
#[derive(Debug)]
pub(super) struct FlatGroup {
    buckets: Vec<Bucket>,
    /// (bucket, slot) of each parameter.
    place: Vec<(usize, usize)>,
    /// t of each parameter; `None` until it has state.
    steps: Vec<Option<i64>>,
}

impl FlatGroup {
    /// Buckets `params` by (device, dtype) in order of first appearance and rebinds each to its
    /// view of its bucket's buffer.
    pub fn new(params: &[Tensor]) -> Result<Self, RAdamError> {
        tch::no_grad(|| {
            let mut keys: Vec<(Device, Kind)> = Vec::new();
            let mut slots: Vec<Vec<Slot>> = Vec::new();
            let mut place = Vec::with_capacity(params.len());
            for (index, p) in params.iter().enumerate() {
                let key = (p.device(), p.kind());
                let b = match keys.iter().position(|k| *k == key) {
                    Some(b) => b,
                    None => {
                        keys.push(key);
                        slots.push(Vec::new());
                        keys.len() - 1
                    }
                };
                let offset = slots[b].last().map_or(0, |s: &Slot| s.offset + s.numel);
                place.push((b, slots[b].len()));
                slots[b].push(Slot {
                    index,
                    offset,
                    numel: p.numel() as i64,
                    shape: p.size(),
                    order: memory_order(p),
                    stride: Vec::new(),
                });
            }
            let buckets = slots
                .into_iter()
                .zip(keys)
                .map(|(s, (device, kind))| Bucket::new(s, params, kind, device))
                .collect::<Result<_, _>>()?;
            Ok(FlatGroup {
                buckets,
                place,
                steps: vec![None; params.len()],
            })
        })
    }

    /// Zeroes the gradients in place: one `zero_` per bucket whose gradients all view its
    /// buffer, one per gradient otherwise.
    pub fn zero_grad(&self, params: &[Tensor]) -> Result<(), RAdamError> {
        tch::no_grad(|| {
            for bucket in &self.buckets {
                let grads = bucket.grads(params);
                if let Some(flat) = &bucket.grad {
                    let bound = bucket
                        .slots
                        .iter()
                        .zip(&grads)
                        .all(|(s, g)| g.defined() && s.is_view_of(g, flat));
                    if bound {
                        let _ = flat.shallow_clone().f_zero_()?;
                        continue;
                    }
                }
                for g in grads.into_iter().filter(Tensor::defined) {
                    let _ = g.shallow_clone().f_detach_()?.f_zero_()?;
                }
            }
            Ok(())
        })
    }

    /// One step of every parameter with a gradient (the others and their step counts are left
    /// alone, as in PyTorch). A bucket whose parameters all have a gradient and share a step
    /// count is updated as one buffer; otherwise each parameter with a gradient is updated on
    /// its range, with the same operations and its own scalars.
    pub fn step(&mut self, hp: &RAdamParams, lr: f64, params: &[Tensor]) -> Result<(), RAdamError> {
        let steps = &mut self.steps;
        for bucket in &mut self.buckets {
            let grads = bucket.grads(params);
            if !grads.iter().any(Tensor::defined) {
                continue;
            }
            let flat_grad = bucket.adopt_grads(&grads)?;
            let param = bucket.param.shallow_clone();
            let m = bucket.moments()?;
            let (exp_avg, exp_avg_sq) = (m.exp_avg.shallow_clone(), m.exp_avg_sq.shallow_clone());
            let first = steps[bucket.slots[0].index];
            let uniform = grads.iter().all(Tensor::defined)
                && bucket.slots.iter().all(|s| steps[s.index] == first);
            if uniform {
                let t = first.unwrap_or(0) + 1;
                for s in &bucket.slots {
                    steps[s.index] = Some(t);
                }
                let sc = StepScalars::new(hp, lr, t);
                multi::update(hp, lr, sc, &param, &flat_grad, &exp_avg, &exp_avg_sq)?;
                continue;
            }
            for (slot, g) in bucket.slots.iter().zip(&grads) {
                if !g.defined() {
                    continue;
                }
                let t = steps[slot.index].unwrap_or(0) + 1;
                steps[slot.index] = Some(t);
                multi::update(
                    hp,
                    lr,
                    StepScalars::new(hp, lr, t),
                    &slot.slice(&param)?,
                    &slot.slice(&flat_grad)?,
                    &slot.slice(&exp_avg)?,
                    &slot.slice(&exp_avg_sq)?,
                )?;
            }
        }
        Ok(())
    }

    /// Parameter `i`'s (m, v, t) as views of the buffers, if it has state.
    pub fn state(&self, i: usize) -> Result<Option<(Tensor, Tensor, i64)>, RAdamError> {
        let (b, s) = self.place[i];
        let bucket = &self.buckets[b];
        match (self.steps[i], &bucket.moments) {
            (Some(t), Some(m)) => {
                let slot = &bucket.slots[s];
                Ok(Some((slot.view(&m.exp_avg)?, slot.view(&m.exp_avg_sq)?, t)))
            }
            _ => Ok(None),
        }
    }

    /// Replaces the whole state: parameter `i` gets `states[i]` (m, v of its shape, device and
    /// dtype, and t), or no state (zero moments) when `None`.
    pub fn load(&mut self, states: Vec<Option<(Tensor, Tensor, i64)>>) -> Result<(), RAdamError> {
        tch::no_grad(|| {
            for bucket in &mut self.buckets {
                if bucket.slots.iter().all(|s| states[s.index].is_none()) {
                    bucket.moments = None;
                    continue;
                }
                let m = bucket.moments()?;
                let (exp_avg, exp_avg_sq) =
                    (m.exp_avg.shallow_clone(), m.exp_avg_sq.shallow_clone());
                for slot in &bucket.slots {
                    let (mut dm, mut dv) = (slot.view(&exp_avg)?, slot.view(&exp_avg_sq)?);
                    match &states[slot.index] {
                        Some((m, v, _)) => {
                            dm.f_copy_(m)?;
                            dv.f_copy_(v)?;
                        }
                        None => {
                            let _ = dm.f_zero_()?;
                            let _ = dv.f_zero_()?;
                        }
                    }
                }
            }
            self.steps = states.iter().map(|s| s.as_ref().map(|x| x.2)).collect();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_order_of_contiguous_channels_last_and_sliced_tensors() {
        let t = Tensor::zeros([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert_eq!(memory_order(&t), [0, 1, 2, 3]);
        let cl = t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        assert_eq!(memory_order(&cl), [0, 2, 3, 1]);
        // channels-last strides of an N×C×1×1 kernel, as `to(memory_format=…)` writes them
        let cl1 = Tensor::zeros([6], (Kind::Float, Device::Cpu)).as_strided(
            [2, 3, 1, 1],
            [3, 1, 3, 3],
            0,
        );
        assert_eq!(memory_order(&cl1), [0, 2, 3, 1]);
        // every other column: not dense, row-major
        let sliced = t.slice(3, 0, 5, 2);
        assert_eq!(memory_order(&sliced), [0, 1, 2, 3]);
    }

    #[test]
    fn views_keep_shape_strides_and_values() {
        let t = Tensor::arange(120, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        let cl = t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        let v = Tensor::arange(3, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let params = [cl.shallow_clone(), v.shallow_clone(), t.shallow_clone()];
        let (strides_before, values): (Vec<_>, Vec<_>) =
            params.iter().map(|p| (p.stride(), p.copy())).unzip();
        let group = FlatGroup::new(&params).unwrap();
        let flat = &group.buckets[0].param;
        assert_eq!(flat.size(), [243]);
        for ((p, s), want) in params.iter().zip(&strides_before).zip(&values) {
            assert_eq!(&p.stride(), s);
            assert!(p.equal(want));
        }
        // the variables now write through to the buffer
        let _ = cl.shallow_clone().fill_(7.0);
        assert_eq!(
            flat.narrow(0, 0, 120).sum(Kind::Float).double_value(&[]),
            840.0
        );
        assert!(v.requires_grad());
    }
}
