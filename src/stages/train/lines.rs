//! The one-line summaries of a run's progress (the untrained network, each epoch) that
//! `gl train` prints; the stage itself prints nothing ([`super::Observer`]).

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

/// One line per epoch: losses, lr, throughput, times, validation and test Recall@K and MAP@R.
pub fn epoch_line(r: &EpochRecord, ks: &[usize]) -> String {
    let fmt = |name: &str, v: &Option<Vec<f64>>, map: Option<f64>| match v {
        Some(v) => format!(
            " | {name} {}{}",
            recalls(ks, v),
            map.map_or(String::new(), |m| format!(" MAP@R {:.2}", 100.0 * m))
        ),
        None => String::new(),
    };
    format!(
        "epoch {:>3}  loss {:.4} (group {:.4}, ce {:.4})  lr {:.3e}  {:.0} img/s  {:.1}s + eval {:.1}s{}{}",
        r.epoch,
        r.loss,
        r.loss_group,
        r.loss_ce,
        r.lr,
        r.images_per_second,
        r.train_seconds,
        r.eval_seconds,
        fmt("val", &r.val_recall, r.val_map_at_r),
        fmt("test", &r.test_recall, r.test_map_at_r)
    )
}
