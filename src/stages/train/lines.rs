//! The one-line summaries of a run's progress (the untrained network, each epoch) that
//! `gl train` prints; the stage itself prints nothing ([`super::Observer`]).

use crate::train::objective::Objective;
use crate::train::run_dir::{EpochRecord, Untrained};

fn recalls(ks: &[usize], v: &[f64]) -> String {
    ks.iter()
        .zip(v)
        .map(|(k, x)| format!("R@{k} {:.2}", 100.0 * x))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `untrained  | val R@1 … | test R@1 …  (s)`.
pub fn untrained_line(u: &Untrained, ks: &[usize]) -> String {
    let fmt = |v: &Option<Vec<f64>>| v.as_ref().map_or("-".to_string(), |v| recalls(ks, v));
    format!(
        "untrained  | val {} | test {}  ({:.1}s)",
        fmt(&u.val_recall),
        fmt(&u.test_recall),
        u.seconds
    )
}

/// The parts of the epoch's loss, for an objective made of parts: ` (group …, ce …)` for the
/// Group Loss (+ CE); nothing for a one-term loss (the total is the term).
fn parts(r: &EpochRecord, objective: Objective) -> String {
    match objective {
        Objective::GroupLoss => format!(" (group {:.4}, ce {:.4})", r.loss_group, r.loss_ce),
        _ => String::new(),
    }
}

/// One line per epoch: losses (the parts `objective` has), lr, throughput, times, validation
/// and test Recall@K and MAP@R.
pub fn epoch_line(r: &EpochRecord, ks: &[usize], objective: Objective) -> String {
    let fmt = |name: &str, v: &Option<Vec<f64>>, map: Option<f64>| match v {
        Some(v) => format!(
            " | {name} {}{}",
            recalls(ks, v),
            map.map_or(String::new(), |m| format!(" MAP@R {:.2}", 100.0 * m))
        ),
        None => String::new(),
    };
    format!(
        "epoch {:>3}  loss {:.4}{}  lr {:.3e}  {:.0} img/s  {:.1}s + eval {:.1}s{}{}",
        r.epoch,
        r.loss,
        parts(r, objective),
        r.lr,
        r.images_per_second,
        r.train_seconds,
        r.eval_seconds,
        fmt("val", &r.val_recall, r.val_map_at_r),
        fmt("test", &r.test_recall, r.test_map_at_r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 36 (extras): an objective without a Group Loss or CE part prints no `group 0.0000,
    /// ce 0.0000`; the Group Loss prints both parts.
    #[test]
    fn an_epoch_line_prints_only_the_terms_the_objective_has() {
        let r = EpochRecord::fixture(1, 0.5, None, None);
        let gl = epoch_line(&r, &[1, 2], Objective::GroupLoss);
        assert!(gl.contains("(group 0.5000, ce 0.5000)"), "{gl}");
        for o in [
            Objective::TripletBatchHard,
            Objective::ProxyAnchor,
            Objective::CrossEntropy,
        ] {
            let line = epoch_line(&r, &[1, 2], o);
            assert!(!line.contains("group") && !line.contains("ce 0."), "{line}");
            assert!(line.contains("loss 1.0000"), "{line}");
        }
    }
}
