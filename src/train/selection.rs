//! Which epoch's model a run keeps as its selected model: the best validation epoch (our
//! default), the best test epoch (the official code's protocol, optimistic) or the last epoch —
//! "best" by the run's `select_metric`, R@1 (the paper's) or MAP@R. The validation and test
//! bests are tracked under every rule, so a run's summary can show all three protocols side by
//! side. And when a run with `patience` stops early ([`early_stop`]), decided from the committed
//! state alone so that `--resume` decides the same.

use crate::train::config::{SelectMetric, Selection, TrainConfig};
use crate::train::run_dir::{Best, EarlyStop, EpochRecord, RunState, StopReason};

/// The best epoch so far on validation and on test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bests {
    pub val: Option<Best>,
    pub test: Option<Best>,
}

/// How a run selects: on which split, by which metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub selection: Selection,
    pub metric: SelectMetric,
}

impl Rule {
    /// The rule of recipe `cfg` (`selection`, `select_metric`).
    pub fn of(cfg: &TrainConfig) -> Self {
        Rule {
            selection: cfg.selection,
            metric: cfg.select_metric,
        }
    }

    /// Epoch record `r`'s value of the rule's metric on validation and on test (`None` where
    /// it was not measured).
    pub fn values(self, r: &EpochRecord) -> (Option<f64>, Option<f64>) {
        let r1 = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.first().copied());
        match self.metric {
            SelectMetric::RecallAt1 => (r1(&r.val_recall), r1(&r.test_recall)),
            SelectMetric::MapAtR => (r.val_map_at_r, r.test_map_at_r),
        }
    }
}

/// Takes epoch `epoch`'s metric on validation and test (`None` where it was not measured) into
/// `bests`, and says whether its model becomes the selected one under `rule`. Ties keep the
/// earlier epoch: a later epoch must be strictly better (a NaN never is).
pub fn update(
    rule: Rule,
    bests: &mut Bests,
    epoch: usize,
    val: Option<f64>,
    test: Option<f64>,
) -> bool {
    let improve = |best: &mut Option<Best>, value: Option<f64>| -> bool {
        match value {
            Some(v) if best.is_none_or(|b| v > b.value) => {
                *best = Some(Best {
                    epoch,
                    metric: rule.metric,
                    value: v,
                });
                true
            }
            _ => false,
        }
    };
    let val_better = improve(&mut bests.val, val);
    let test_better = improve(&mut bests.test, test);
    match rule.selection {
        Selection::Val => val_better,
        Selection::Test => test_better,
        Selection::Last => true,
    }
}

/// True when `patience` (> 0) epochs have passed since the best validation epoch
/// (`best_epoch`; since epoch 0 when validation never measured) at completed epoch `epoch`:
/// with every epoch evaluated, that many in a row without a strict improvement.
pub fn patience_exhausted(patience: usize, epoch: usize, best_epoch: Option<usize>) -> bool {
    patience > 0 && epoch.saturating_sub(best_epoch.unwrap_or(0)) >= patience
}

/// Whether the run of recipe `cfg`, committed at `st`, stops before its next epoch: with
/// `selection = "val"` and `patience` > 0, once [`patience_exhausted`] before the recipe's last
/// epoch (a run that trained all its `epochs` did not stop early).
pub fn early_stop(cfg: &TrainConfig, st: &RunState) -> Option<EarlyStop> {
    let best_epoch = st.best_val.map(|b| b.epoch);
    let stops = cfg.selection == Selection::Val
        && st.epoch < cfg.epochs
        && patience_exhausted(cfg.patience, st.epoch, best_epoch);
    stops.then_some(EarlyStop {
        reason: StopReason::Patience,
        epoch: st.epoch,
        max_epochs: cfg.epochs,
        patience: cfg.patience,
        metric: cfg.select_metric,
        best_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: fn(Selection) -> Rule = |selection| Rule {
        selection,
        metric: SelectMetric::RecallAt1,
    };

    /// Epochs with (val, test) values; returns the epochs selected under `rule`, and the bests.
    fn run(rule: Rule, epochs: &[(Option<f64>, Option<f64>)]) -> (Vec<usize>, Bests) {
        let mut bests = Bests::default();
        let picked = (1..=epochs.len())
            .filter(|&e| {
                let (v, t) = epochs[e - 1];
                update(rule, &mut bests, e, v, t)
            })
            .collect();
        (picked, bests)
    }

    const EPOCHS: &[(Option<f64>, Option<f64>)] = &[
        (Some(0.5), Some(0.40)),
        (Some(0.7), Some(0.35)),
        (Some(0.7), Some(0.45)), // a tie on validation: not better
        (None, None),            // not evaluated
        (Some(0.6), Some(0.50)),
    ];

    #[test]
    fn validation_selects_strict_improvements_and_skips_unevaluated_epochs() {
        let (picked, bests) = run(R1(Selection::Val), EPOCHS);
        assert_eq!(picked, [1, 2]);
        assert_eq!(bests.val.map(|b| (b.epoch, b.value)), Some((2, 0.7)));
        // The test-set best is tracked too, for the summary's "best on test" column.
        assert_eq!(bests.test.map(|b| b.epoch), Some(5));
    }

    #[test]
    fn the_test_protocol_follows_test_recall() {
        let (picked, bests) = run(R1(Selection::Test), EPOCHS);
        assert_eq!(picked, [1, 3, 5]);
        assert_eq!(bests.val.map(|b| b.epoch), Some(2));
    }

    #[test]
    fn last_selects_every_epoch_even_unevaluated() {
        let (picked, _) = run(R1(Selection::Last), EPOCHS);
        assert_eq!(picked, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_any_measurement_validation_selects_nothing() {
        let (picked, bests) = run(R1(Selection::Val), &[(None, Some(0.9)), (None, None)]);
        assert!(picked.is_empty());
        assert_eq!(bests.val, None);
    }

    fn record(epoch: usize, val_r1: f64, val_map: Option<f64>, test_map: f64) -> EpochRecord {
        EpochRecord::fixture(epoch, val_r1, val_map, Some(test_map))
    }

    /// Validation R@1 saturated at 1.0 from epoch 2 selects epoch 2 for good; MAP@R keeps
    /// ranking the epochs and selects epoch 4.
    #[test]
    fn map_at_r_selects_where_recall_at_1_saturates() {
        let recs = [
            record(1, 0.9, Some(0.30), 0.20),
            record(2, 1.0, Some(0.35), 0.22),
            record(3, 1.0, Some(0.33), 0.25),
            record(4, 1.0, Some(0.41), 0.21),
            record(5, 1.0, Some(f64::NAN), 0.19), // NaN: never an improvement
        ];
        let select = |metric| {
            let rule = Rule {
                selection: Selection::Val,
                metric,
            };
            run(
                rule,
                &recs.iter().map(|r| rule.values(r)).collect::<Vec<_>>(),
            )
        };
        let (picked, bests) = select(SelectMetric::RecallAt1);
        assert_eq!(picked, [1, 2]);
        assert_eq!(bests.val.map(|b| b.metric), Some(SelectMetric::RecallAt1));
        let (picked, bests) = select(SelectMetric::MapAtR);
        assert_eq!(picked, [1, 2, 4]);
        let best = bests.val.unwrap();
        assert_eq!(
            (best.epoch, best.value, best.metric),
            (4, 0.41, SelectMetric::MapAtR)
        );
        assert_eq!(bests.test.map(|b| (b.epoch, b.value)), Some((3, 0.25)));
        // A record from before MAP@R was measured has none: nothing to select by.
        let old = record(1, 0.9, None, 0.2);
        let map = Rule {
            selection: Selection::Val,
            metric: SelectMetric::MapAtR,
        };
        assert_eq!(map.values(&old).0, None);
    }

    /// A state written before `metric` existed reads as R@1, its `recall_at_1` as the value.
    #[test]
    fn old_states_read_their_recall_at_1_as_the_value() {
        let b: Best = serde_json::from_str(r#"{"epoch": 3, "recall_at_1": 0.75}"#).unwrap();
        assert_eq!(
            (b.epoch, b.metric, b.value),
            (3, SelectMetric::RecallAt1, 0.75)
        );
        let json = serde_json::to_value(b).unwrap();
        assert_eq!(json["metric"], "recall_at_1");
        assert_eq!(serde_json::from_value::<Best>(json).unwrap(), b);
    }

    /// The epoch after which a run with `patience` stops, on a sequence of validation values
    /// (every epoch evaluated), or `None` when it trains all of them.
    fn stop_epoch(patience: usize, vals: &[f64]) -> Option<usize> {
        let rule = R1(Selection::Val);
        let mut bests = Bests::default();
        (1..=vals.len()).find(|&e| {
            update(rule, &mut bests, e, Some(vals[e - 1]), None);
            e < vals.len() && patience_exhausted(patience, e, bests.val.map(|b| b.epoch))
        })
    }

    #[test]
    fn patience_counts_epochs_without_a_strict_improvement() {
        // Bests at epochs 1, 2, 4; epoch 3 ties, epochs 5.. are worse.
        let vals = [0.5, 0.6, 0.6, 0.7, 0.65, 0.64, 0.69, 0.8];
        assert_eq!(
            stop_epoch(1, &vals),
            Some(3),
            "the tie at 3 is no improvement"
        );
        assert_eq!(stop_epoch(2, &vals), Some(6));
        assert_eq!(stop_epoch(3, &vals), Some(7));
        assert_eq!(
            stop_epoch(4, &vals),
            None,
            "epoch 8 improves, and is the last"
        );
        assert_eq!(stop_epoch(0, &vals), None, "0 = off");
        // NaN never improves.
        assert_eq!(stop_epoch(2, &[0.5, f64::NAN, f64::NAN, 0.9]), Some(3));
        // Never measured: counted from epoch 0.
        assert!(patience_exhausted(2, 2, None) && !patience_exhausted(2, 1, None));
    }

    /// The demo recipe with `sets` (`key=value`), or the error as text.
    fn resolve(sets: &[&str]) -> Result<crate::train::config::CheckedConfig, String> {
        let root = crate::project::Project::resolve(
            Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).into()),
            None,
        )
        .unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::resolve(&root, "demo", "demo", &sets).map_err(|e| format!("{e:#}"))
    }

    fn cfg(selection: Selection, patience: usize, epochs: usize) -> TrainConfig {
        let mut c = resolve(&[]).unwrap().into_inner();
        (c.selection, c.patience, c.epochs) = (selection, patience, epochs);
        c
    }

    #[test]
    fn early_stop_reads_the_committed_state() {
        let st = |epoch, best: Option<usize>| RunState {
            epoch,
            best_val: best.map(|epoch| Best {
                epoch,
                metric: SelectMetric::RecallAt1,
                value: 0.5,
            }),
            ..Default::default()
        };
        let c = cfg(Selection::Val, 2, 6);
        assert_eq!(early_stop(&c, &st(3, Some(2))), None);
        let stop = early_stop(&c, &st(4, Some(2))).unwrap();
        assert_eq!(
            (stop.reason, stop.epoch, stop.max_epochs, stop.best_epoch),
            (StopReason::Patience, 4, 6, Some(2))
        );
        // Not before any epoch, not after the last one, not without patience or validation.
        assert_eq!(early_stop(&c, &st(0, None)), None);
        assert_eq!(early_stop(&c, &st(6, Some(1))), None);
        assert_eq!(
            early_stop(&cfg(Selection::Val, 0, 6), &st(5, Some(1))),
            None
        );
        assert_eq!(
            early_stop(&cfg(Selection::Last, 2, 6), &st(5, Some(1))),
            None
        );
    }

    /// `select_metric` and `patience`: unset they stay out of `config.json` (run ids of older
    /// recipes unchanged); patience needs validation selection and every epoch evaluated.
    #[test]
    fn early_stopping_keys_are_checked_and_left_out_while_default() {
        let plain = serde_json::to_value(&*resolve(&[]).unwrap()).unwrap();
        assert!(plain.get("select_metric").is_none() && plain.get("patience").is_none());
        let set = resolve(&["select_metric=\"map_at_r\"", "patience=2"]).unwrap();
        assert_eq!((set.select_metric, set.patience), (SelectMetric::MapAtR, 2));
        let json = serde_json::to_value(&*set).unwrap();
        assert_eq!(
            (json["select_metric"].as_str(), json["patience"].as_u64()),
            (Some("map_at_r"), Some(2))
        );
        let e = resolve(&["patience=2", "selection=\"test\""]).unwrap_err();
        assert!(
            e.contains("patience = 2 needs selection = \"val\"") && e.contains("\"test\""),
            "{e}"
        );
        let e = resolve(&["patience=1", "eval_every=2"]).unwrap_err();
        assert!(e.contains("patience = 1 needs eval_every = 1"), "{e}");
        let e = resolve(&["select_metric=\"map\""]).unwrap_err();
        assert!(e.contains("select_metric"), "{e}");
        let e = resolve(&["patience=-1"]).unwrap_err();
        assert!(e.contains("patience"), "{e}");
        // Without patience, test selection by MAP@R is fine.
        resolve(&["selection=\"test\"", "select_metric=\"map_at_r\""]).unwrap();
    }

    /// `epoch_eval`: left out of `config.json` while both splits are evaluated (run ids of older
    /// recipes unchanged); validation only cannot select on the test set.
    #[test]
    fn validation_only_epochs_are_a_recipe_key_that_refuses_test_selection() {
        use crate::train::config::EpochEval;
        let plain = serde_json::to_value(&*resolve(&[]).unwrap()).unwrap();
        assert!(plain.get("epoch_eval").is_none(), "{plain}");
        let set = resolve(&["epoch_eval=\"val\""]).unwrap();
        assert_eq!(set.epoch_eval, EpochEval::Val);
        let json = serde_json::to_value(&*set).unwrap();
        assert_eq!(json["epoch_eval"].as_str(), Some("val"));
        let e = resolve(&["epoch_eval=\"val\"", "selection=\"test\"", "patience=0"]).unwrap_err();
        assert!(e.contains("epoch_eval = \"val\""), "{e}");
    }
}
