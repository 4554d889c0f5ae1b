//! Learning-rate schedule of the paper: γ/10 at epochs 31 and 51 of 70.
//!
//! Convention: epochs are counted from 1, and `milestones` are in the units of PyTorch's
//! `torch.optim.lr_scheduler.MultiStepLR` stepped once at the end of each epoch, i.e. a milestone
//! m is the number of *completed* epochs after which γ is multiplied by `gamma`. The lr used
//! during epoch e is therefore base·γ^|{m ∈ milestones : m < e}|, so the paper's schedule is
//! [`PAPER_MILESTONES`] = [30, 50]: epochs 1–30 use γ₀, 31–50 γ₀/10, 51–70 γ₀/100.

/// The paper's milestones in `MultiStepLR` units (γ/10 from epoch 31 and from epoch 51).
pub const PAPER_MILESTONES: [usize; 2] = [30, 50];
/// The paper's decay factor.
pub const PAPER_GAMMA: f64 = 0.1;
/// The paper's number of epochs.
pub const PAPER_EPOCHS: usize = 70;

/// Learning rate for (1-based) `epoch`, equal to `optimizer.param_groups[i]["lr"]` during that
/// epoch with `MultiStepLR(optimizer, milestones, gamma)` and `scheduler.step()` after each
/// epoch, including its rounding: the decay is applied cumulatively, milestone by milestone,
/// with γ^n for a milestone listed n times. Milestones may be unsorted. Epoch 0 is treated as
/// epoch 1.
pub fn lr_at(epoch: usize, base_lr: f64, milestones: &[usize], gamma: f64) -> f64 {
    let completed = epoch.saturating_sub(1);
    let mut passed: Vec<usize> = milestones
        .iter()
        .copied()
        .filter(|&m| m <= completed)
        .collect();
    passed.sort_unstable();
    let mut lr = base_lr;
    let mut i = 0;
    while i < passed.len() {
        let n = passed[i..].iter().take_while(|&&m| m == passed[i]).count();
        lr *= gamma.powf(n as f64);
        i += n;
    }
    lr
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from PyTorch 2.11:
    /// ```python
    /// p = [torch.zeros(1, requires_grad=True)]
    /// o = torch.optim.SGD(p, lr=2e-4)
    /// s = torch.optim.lr_scheduler.MultiStepLR(o, milestones=[30, 50], gamma=0.1)
    /// for e in range(1, 71):
    ///     lrs.append(o.param_groups[0]["lr"]); o.step(); s.step()
    /// # lrs[0], lrs[29], lrs[30], lrs[49], lrs[50], lrs[69]
    /// # 0.0002 0.0002 2e-05 2e-05 2.0000000000000003e-06 2.0000000000000003e-06
    /// ```
    #[test]
    fn paper_schedule_matches_multisteplr() {
        let lr = |e| lr_at(e, 2e-4, &PAPER_MILESTONES, PAPER_GAMMA);
        assert_eq!(lr(1), 0.0002);
        assert_eq!(lr(30), 0.0002);
        assert_eq!(lr(31), 2e-05);
        assert_eq!(lr(50), 2e-05);
        assert_eq!(lr(51), 2.0000000000000003e-06);
        assert_eq!(lr(PAPER_EPOCHS), 2.0000000000000003e-06);
    }

    #[test]
    fn piecewise_constant_and_non_increasing() {
        let lrs: Vec<f64> = (1..=PAPER_EPOCHS)
            .map(|e| lr_at(e, 1.0, &PAPER_MILESTONES, PAPER_GAMMA))
            .collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        let changes: Vec<usize> = (1..lrs.len())
            .filter(|&i| lrs[i] != lrs[i - 1])
            .map(|i| i + 1)
            .collect();
        assert_eq!(changes, vec![31, 51]);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(lr_at(0, 0.5, &[30], 0.1), 0.5);
        assert_eq!(lr_at(100, 0.5, &[], 0.1), 0.5);
        // unsorted and repeated milestones: MultiStepLR applies γ² at a doubled milestone
        assert_eq!(lr_at(3, 1.0, &[2, 1, 2], 0.5), 0.5 * 0.5f64.powf(2.0));
        assert_eq!(lr_at(2, 1.0, &[2, 1, 2], 0.5), 0.5);
    }
}
