//! A sweep in the report: the profile's Group Loss runs grouped by their values of the swept
//! recipe keys, one point chosen on validation for the main tables, and the sweep table of every
//! point (mean ± std over seeds). Choosing on validation R@1, not test, keeps the main table's
//! numbers honest: the test set picks nothing.
//!
//! When `objective` is one of the swept keys (a tuning profile giving Group Loss and the softmax
//! baseline the same grid over their other keys), each objective gets its own selected point:
//! the best Group Loss point is the Group Loss row, the best `cross_entropy` point the softmax
//! row, so both sides of the comparison are tuned with the same budget on validation.

use crate::report::data::sweep::{Criterion, SweepData};
use crate::report::data::{DatasetData, Method};
use crate::report::table::{metric_columns, summarise, Cell, Summary, Table};
use anyhow::Result;

/// Per point (the group is its index): every test metric over its seeds, `val_r1`, and the
/// ensemble's metrics prefixed `ensemble:`.
pub fn summaries(s: &SweepData) -> Result<Vec<Summary>> {
    let mut long = Vec::new();
    for (i, p) in s.points.iter().enumerate() {
        for m in &s.metrics {
            let of_run = p.runs.iter().any(|r| r.run_id == m.subject);
            if m.method == Method::GroupLoss && of_run {
                long.push((i as i64, m.metric.clone(), m.value));
            } else if m.method == Method::Ensemble && p.ensemble.as_ref() == Some(&m.subject) {
                long.push((i as i64, format!("ensemble:{}", m.metric), m.value));
            }
        }
        long.extend(
            p.val_r1
                .iter()
                .map(|v| (i as i64, "val_r1".to_string(), *v)),
        );
        long.extend(
            p.val_map_r
                .iter()
                .map(|v| (i as i64, "val_map_r".to_string(), *v)),
        );
    }
    summarise(&long)
}

/// How the selected point was chosen, for captions.
pub fn selected_by(s: &SweepData) -> &'static str {
    match s.criterion {
        Criterion::ValMapR => "the best mean validation MAP@R",
        Criterion::ValR1 => "the best mean validation R@1",
        Criterion::TestR1 => {
            "the best mean test R@1 (some runs have no validation split: optimistic)"
        }
    }
}

/// The sweep table of `d`: one row per point — its values, seeds, validation R@1 and test
/// metrics (mean ± std over seeds), its ensemble's R@1 — the selected point marked.
pub fn sweep_table(d: &DatasetData, s: &SweepData) -> Result<Table> {
    let cols = metric_columns(d);
    let summaries = summaries(s)?;
    let mut header: Vec<String> = s.keys.clone();
    header.push("seeds".into());
    header.push("val R@1".into());
    let with_map_r = s.points.iter().any(|p| !p.val_map_r.is_empty());
    if with_map_r {
        header.push("val MAP@R".into());
    }
    header.extend(cols.iter().map(|c| c.1.clone()));
    header.push("ensemble R@1".into());
    header.push("selected".into());
    let mut rows = Vec::new();
    for (i, p) in s.points.iter().enumerate() {
        let cell = |k: &str| {
            summaries
                .iter()
                .find(|x| x.group == i as i64)
                .and_then(|x| x.cells.get(k))
                .map_or("—".into(), Cell::show)
        };
        // A benchmark's point shows only the keys its objective is tuned over.
        let objective = s
            .keys
            .iter()
            .zip(&p.values)
            .find(|(k, _)| *k == "objective")
            .and_then(|(_, v)| v.as_str());
        let shown = |k: &String| match (s.tuned.is_empty(), objective) {
            (false, Some(o)) => k == "objective" || s.tuned.get(o).is_some_and(|t| t.contains(k)),
            _ => true,
        };
        let mut row: Vec<String> = s
            .keys
            .iter()
            .zip(&p.values)
            .map(|(k, v)| match shown(k) {
                true => crate::pipeline::sweep::show(v),
                false => "—".into(),
            })
            .collect();
        row.push(p.runs.len().to_string());
        row.push(cell("val_r1"));
        if with_map_r {
            row.push(cell("val_map_r"));
        }
        row.extend(cols.iter().map(|(k, _)| cell(k)));
        row.push(cell("ensemble:recall@1"));
        row.push(
            match (i == s.selected, Some(i) == s.selected_softmax) {
                (true, _) => "yes",
                (_, true) => "yes (softmax)",
                // A benchmark: every objective's own selected point.
                _ if !s.tuned.is_empty() && s.by_objective.values().any(|&j| j == i) => "yes",
                _ => "",
            }
            .into(),
        );
        rows.push(row);
    }
    Ok(Table {
        caption: format!(
            "{}: the sweep over {} — validation R@1 at each run's selected epoch and test-set \
             metrics (%), mean ± std over seeds; the selected point ({}) is the one the tables \
             above show",
            d.name,
            s.keys.join(", "),
            selected_by(s)
        ),
        header,
        rows,
        rules_after: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::sweep::select;
    use crate::report::data::{EpochRow, MetricRow, RunRow};
    use serde_json::json;

    fn run(id: &str, seed: u64, tau: f64) -> RunRow {
        RunRow {
            epochs_done: 2,
            selected_epoch: Some(2),
            point: vec![json!(tau)],
            ..crate::report::fixtures::run(id, seed)
        }
    }

    fn metric(method: Method, subject: &str, value: f64) -> MetricRow {
        crate::report::fixtures::metric(method, subject, "recall@1", value)
    }

    fn epoch(run: &str, epoch: i64, val: f64) -> EpochRow {
        EpochRow {
            run_id: run.into(),
            epoch,
            loss: 1.0,
            val_r1: Some(val),
            test_r1: None,
        }
    }

    /// τ=54 wins on validation though τ=10 is better on test: the selection never looks at test.
    fn dataset() -> DatasetData {
        DatasetData {
            name: "cub".into(),
            // Listed out of grid order, as the catalogue might return them.
            group_loss: vec![
                run("b0", 0, 54.0),
                run("a0", 0, 10.0),
                run("a1", 1, 10.0),
                run("b1", 1, 54.0),
            ],
            softmax: vec![run("s0", 0, 0.0)],
            metrics: vec![
                metric(Method::GroupLoss, "a0", 70.0),
                metric(Method::GroupLoss, "a1", 72.0),
                metric(Method::GroupLoss, "b0", 60.0),
                metric(Method::GroupLoss, "b1", 62.0),
                metric(Method::Ensemble, "cub-p-tau=10.0", 75.0),
                metric(Method::Ensemble, "cub-p-tau=54.0", 65.0),
                metric(Method::Softmax, "s0", 50.0),
            ],
            epochs: vec![
                epoch("a0", 1, 0.9),
                epoch("a0", 2, 0.5),
                epoch("a1", 2, 0.5),
                epoch("b0", 2, 0.6),
                epoch("b1", 2, 0.7),
                epoch("s0", 2, 0.1),
            ],
            ..Default::default()
        }
    }

    fn argv(runs: &[&str]) -> Vec<String> {
        runs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_point_with_the_best_validation_r1_is_selected_and_shown() {
        let mut d = dataset();
        let (ea, eb) = (
            argv(&["ensemble", "a0", "a1"]),
            argv(&["ensemble", "b0", "b1"]),
        );
        let ens = [
            ("cub-p-tau=54.0".to_string(), eb.as_slice()),
            ("cub-p-tau=10.0".to_string(), ea.as_slice()),
        ];
        select(&mut d, &["tau".into()], Default::default(), &ens);
        let s = d.sweep.clone().unwrap();
        assert_eq!(s.points.len(), 2);
        assert_eq!(s.points[0].values, [json!(10.0)]);
        assert_eq!(s.points[0].ensemble.as_deref(), Some("cub-p-tau=10.0"));
        assert_eq!(s.points[0].val_r1, [50.0, 50.0]);
        assert_eq!((s.selected, s.on_validation), (1, true));
        assert_eq!(s.label(1), "tau=54.0");
        let ids: Vec<&str> = d.group_loss.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["b0", "b1"]);
        assert_eq!(d.ensemble.as_deref(), Some("cub-p-tau=54.0"));
        let subjects: Vec<&str> = d.metrics.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["s0", "b0", "b1", "cub-p-tau=54.0"]);
        assert!(d
            .epochs
            .iter()
            .all(|e| ["b0", "b1", "s0"].contains(&e.run_id.as_str())));

        let t = sweep_table(&d, &s).unwrap();
        assert_eq!(
            t.header,
            ["tau", "seeds", "val R@1", "R@1", "ensemble R@1", "selected"]
        );
        assert_eq!(
            t.rows[0],
            ["10.0", "2", "50.00 ± 0.00", "71.00 ± 1.41", "75.00", ""]
        );
        assert_eq!(
            t.rows[1],
            ["54.0", "2", "65.00 ± 7.07", "61.00 ± 1.41", "65.00", "yes"]
        );
        assert!(t.caption.contains("validation R@1"));
        let svg = crate::report::figures::sweep("cub", &s, &summaries(&s).unwrap(), 0).unwrap();
        assert!(svg.contains("test R@1 against tau") && svg.contains("54.0"));
    }

    #[test]
    fn without_validation_numbers_the_test_set_decides_and_says_so() {
        let mut d = dataset();
        d.epochs.retain(|e| e.run_id != "b1");
        // The untrained network is evaluated under the first point's first run: not a seed.
        d.metrics.push(metric(Method::Untrained, "a0", 0.0));
        select(&mut d, &["tau".into()], Default::default(), &[]);
        let s = d.sweep.unwrap();
        assert_eq!((s.selected, s.on_validation), (0, false));
        assert!(selected_by(&s).contains("optimistic"));
        assert_eq!(d.ensemble, None);
    }

    #[test]
    fn a_point_with_an_unevaluated_run_is_not_selected() {
        let mut d = dataset();
        d.metrics.retain(|m| m.subject != "b1");
        select(&mut d, &["tau".into()], Default::default(), &[]);
        let s = d.sweep.unwrap();
        assert_eq!((s.selected, s.points[1].runs.len()), (0, 2));
    }

    /// With `objective` swept, each objective's best validation point is selected: Group Loss
    /// for the Group Loss rows, cross-entropy for the softmax rows (the budget is the same grid).
    #[test]
    fn each_objective_gets_its_own_selected_point() {
        let run2 = |id: &str, seed: u64, obj: &str, lr: f64| RunRow {
            point: vec![json!(lr), json!(obj)],
            ..run(id, seed, 0.0)
        };
        let mut d = DatasetData {
            name: "demo".into(),
            group_loss: vec![
                run2("g1a", 0, "group_loss", 1.0),
                run2("g2a", 0, "group_loss", 2.0),
                run2("c1a", 0, "cross_entropy", 1.0),
                run2("c2a", 0, "cross_entropy", 2.0),
            ],
            metrics: vec![
                metric(Method::GroupLoss, "g1a", 80.0),
                metric(Method::GroupLoss, "g2a", 90.0),
                metric(Method::GroupLoss, "c1a", 85.0),
                metric(Method::GroupLoss, "c2a", 70.0),
                metric(Method::Untrained, "c1a", 60.0),
            ],
            epochs: vec![
                epoch("g1a", 2, 0.7),
                epoch("g2a", 2, 0.6),
                epoch("c1a", 2, 0.5),
                epoch("c2a", 2, 0.55),
            ],
            ..Default::default()
        };
        select(
            &mut d,
            &["lr".into(), "objective".into()],
            Default::default(),
            &[],
        );
        let s = d.sweep.clone().unwrap();
        let label = |i: Option<usize>| s.label(i.unwrap());
        assert_eq!(label(Some(s.selected)), "lr=1.0, objective=group_loss");
        assert_eq!(label(s.selected_softmax), "lr=2.0, objective=cross_entropy");
        assert_eq!(d.group_loss[0].run_id, "g1a");
        assert_eq!(d.softmax[0].run_id, "c2a");
        let softmax: Vec<(&str, f64)> = d
            .metrics
            .iter()
            .filter(|m| m.method == Method::Softmax)
            .map(|m| (m.subject.as_str(), m.value))
            .collect();
        assert_eq!(softmax, [("c2a", 70.0)]);
        let t = sweep_table(&d, &s).unwrap();
        let marks: Vec<&str> = t.rows.iter().map(|r| r.last().unwrap().as_str()).collect();
        assert_eq!(marks.iter().filter(|m| **m == "yes").count(), 1);
        assert_eq!(marks.iter().filter(|m| **m == "yes (softmax)").count(), 1);
    }

    /// With validation MAP@R for every run it decides, not the (saturated) validation R@1: here
    /// τ=10 has the lower validation R@1 but the higher validation MAP@R.
    #[test]
    fn validation_map_r_decides_when_every_run_has_it() {
        let mut d = dataset();
        for r in &mut d.group_loss {
            r.val_map_r = Some(if r.run_id.starts_with('a') {
                30.0
            } else {
                20.0
            });
        }
        select(&mut d, &["tau".into()], Default::default(), &[]);
        let s = d.sweep.clone().unwrap();
        assert_eq!((s.selected, s.criterion), (0, Criterion::ValMapR));
        assert_eq!(selected_by(&s), "the best mean validation MAP@R");
        let t = sweep_table(&d, &s).unwrap();
        assert_eq!(t.header[3], "val MAP@R");
        assert_eq!(t.rows[0][3], "30.00 ± 0.00");
        // One run without it: validation R@1 decides again (τ=54).
        let mut d = dataset();
        d.group_loss[0].val_map_r = Some(50.0);
        select(&mut d, &["tau".into()], Default::default(), &[]);
        let s = d.sweep.unwrap();
        assert_eq!((s.selected, s.criterion), (1, Criterion::ValR1));
    }

    #[test]
    fn no_group_loss_run_means_no_sweep() {
        let mut d = dataset();
        d.group_loss.clear();
        select(&mut d, &["tau".into()], Default::default(), &[]);
        assert!(d.sweep.is_none());
        assert_eq!(d.metrics.len(), 7);
    }
}
