//! Rows for the report's unit tests: a run and a metric with the fields the tests do not care
//! about filled in once.

use crate::report::data::{Method, MetricRow, RunRow};

/// A run of one completed epoch, selected at epoch 1, outside any sweep.
pub fn run(id: &str, seed: u64) -> RunRow {
    RunRow {
        run_id: id.into(),
        seed,
        epochs_done: 1,
        selected_epoch: Some(1),
        r1_last: None,
        r1_val_selected: None,
        r1_best_on_test: None,
        point: Vec::new(),
        val_map_r: None,
    }
}

/// One test metric (%) of `subject`.
pub fn metric(method: Method, subject: &str, metric: &str, value: f64) -> MetricRow {
    MetricRow {
        method,
        subject: subject.into(),
        metric: metric.into(),
        value,
    }
}
