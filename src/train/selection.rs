//! Which epoch's model a run keeps as its selected model: the best validation R@1 (our
//! default), the best test R@1 (the official code's protocol, optimistic) or the last epoch.
//! The best validation and test R@1 are tracked under every rule, so a run's summary can show
//! all three protocols side by side.

use crate::train::config::Selection;
use crate::train::run_dir::Best;

/// The best R@1 so far on validation and on test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bests {
    pub val: Option<Best>,
    pub test: Option<Best>,
}

/// Takes epoch `epoch`'s R@1 on validation and test (`None` where it was not measured) into
/// `bests`, and says whether its model becomes the selected one under `rule`. Ties keep the
/// earlier epoch: a later epoch must be strictly better.
pub fn update(
    rule: Selection,
    bests: &mut Bests,
    epoch: usize,
    val_r1: Option<f64>,
    test_r1: Option<f64>,
) -> bool {
    let improve = |best: &mut Option<Best>, value: Option<f64>| -> bool {
        match value {
            Some(v) if best.is_none_or(|b| v > b.recall_at_1) => {
                *best = Some(Best {
                    epoch,
                    recall_at_1: v,
                });
                true
            }
            _ => false,
        }
    };
    let val_better = improve(&mut bests.val, val_r1);
    let test_better = improve(&mut bests.test, test_r1);
    match rule {
        Selection::Val => val_better,
        Selection::Test => test_better,
        Selection::Last => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epochs with (val, test) R@1; returns the epochs selected under `rule`, and the bests.
    fn run(rule: Selection, epochs: &[(Option<f64>, Option<f64>)]) -> (Vec<usize>, Bests) {
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
        let (picked, bests) = run(Selection::Val, EPOCHS);
        assert_eq!(picked, [1, 2]);
        assert_eq!(bests.val.map(|b| (b.epoch, b.recall_at_1)), Some((2, 0.7)));
        // The test-set best is tracked too, for the summary's "best on test" column.
        assert_eq!(bests.test.map(|b| b.epoch), Some(5));
    }

    #[test]
    fn the_test_protocol_follows_test_recall() {
        let (picked, bests) = run(Selection::Test, EPOCHS);
        assert_eq!(picked, [1, 3, 5]);
        assert_eq!(bests.val.map(|b| b.epoch), Some(2));
    }

    #[test]
    fn last_selects_every_epoch_even_unevaluated() {
        let (picked, _) = run(Selection::Last, EPOCHS);
        assert_eq!(picked, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_any_measurement_validation_selects_nothing() {
        let (picked, bests) = run(Selection::Val, &[(None, Some(0.9)), (None, None)]);
        assert!(picked.is_empty());
        assert_eq!(bests.val, None);
    }
}
