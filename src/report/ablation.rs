//! An ablation's tables (profiles with `[ablation.<objective>]`): per objective its base recipe
//! and each change tried alone, as the paired difference to the base over the seeds both have
//! (test MAP@R and R@1, 95 % t intervals), so a reader sees which change moves the objective and
//! whether another objective moves the same way under the same change.

use crate::pipeline::sweep::show;
use crate::report::data::sweep::{SweepData, SweepPoint};
use crate::report::data::{DatasetData, Method};
use crate::report::leaderboard::show_interval;
use crate::report::paired::Interval;
use crate::report::table::{Cell, Table};
use crate::train::objective::Objective;
use std::collections::BTreeMap;

/// The metrics of the table (catalogue name, column label).
const METRICS: [(&str, &str); 2] = [("map@r", "MAP@R"), ("recall@1", "R@1")];

/// Seed → test value (%) of `metric` for the runs of point `p`.
fn by_seed(s: &SweepData, p: &SweepPoint, metric: &str) -> BTreeMap<u64, f64> {
    s.metrics
        .iter()
        .filter(|m| m.method == Method::GroupLoss && m.metric == metric)
        .filter_map(|m| {
            let r = p.runs.iter().find(|r| r.run_id == m.subject)?;
            Some((r.seed, m.value))
        })
        .collect()
}

/// The keys (index, name) whose values differ between `a` and `b`.
fn changed(s: &SweepData, a: &SweepPoint, b: &SweepPoint) -> Vec<usize> {
    (0..s.keys.len())
        .filter(|&k| !crate::pipeline::sweep::compare(&a.values[k], &b.values[k]).is_eq())
        .collect()
}

/// The points of `objective`, its base first: the point every other one differs from in one
/// key (the most such points; the first on a tie).
fn points_of<'a>(s: &'a SweepData, objective: &str) -> Vec<&'a SweepPoint> {
    let Some(ok) = s.keys.iter().position(|k| k == "objective") else {
        return Vec::new();
    };
    let mut ps: Vec<&SweepPoint> = s
        .points
        .iter()
        .filter(|p| p.values[ok].as_str() == Some(objective))
        .collect();
    let one_change = |b: &SweepPoint| ps.iter().filter(|p| changed(s, b, p).len() == 1).count();
    if let Some(base) = (0..ps.len()).max_by_key(|&i| (one_change(ps[i]), std::cmp::Reverse(i))) {
        let b = ps.remove(base);
        ps.insert(0, b);
    }
    ps
}

fn cell(v: &BTreeMap<u64, f64>) -> String {
    let xs: Vec<f64> = v.values().copied().collect();
    let Some(i) = Interval::of(&xs) else {
        return "—".into();
    };
    let std = (xs.len() > 1).then(|| {
        (xs.iter().map(|x| (x - i.mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
    });
    Cell {
        mean: i.mean,
        std,
        n: xs.len() as u32,
    }
    .show()
}

/// `base − variant`, seed by seed over the seeds both have, as variant minus base.
fn paired(base: &BTreeMap<u64, f64>, v: &BTreeMap<u64, f64>) -> Option<Interval> {
    let d: Vec<f64> = v
        .iter()
        .filter_map(|(seed, x)| base.get(seed).map(|b| x - b))
        .collect();
    Interval::of(&d)
}

/// One table per objective of `d`'s ablation, with the objective's name, Group Loss first
/// (`None` without an ablation).
pub fn tables(d: &DatasetData) -> Option<Vec<(String, Table)>> {
    let s = d.sweep.as_ref().filter(|s| s.ablation)?;
    let ok = s.keys.iter().position(|k| k == "objective")?;
    let mut objectives: Vec<&str> = s
        .points
        .iter()
        .filter_map(|p| p.values[ok].as_str())
        .collect();
    objectives.dedup();
    objectives.sort_by_key(|o| (*o != "group_loss", o.to_string()));
    objectives.dedup();
    Some(
        objectives
            .iter()
            .map(|o| (o.to_string(), table(d, s, o)))
            .collect(),
    )
}

fn table(d: &DatasetData, s: &SweepData, objective: &str) -> Table {
    let ps = points_of(s, objective);
    let mut header = vec!["change".to_string(), "seeds".into()];
    for (_, label) in METRICS {
        header.push(format!("test {label}"));
        header.push(format!("Δ {label} [95 % CI]"));
    }
    let mut rows = Vec::new();
    let base = ps.first().copied();
    for p in &ps {
        let change = match base {
            Some(b) if !std::ptr::eq(*p, b) => changed(s, b, p)
                .into_iter()
                .map(|k| {
                    format!(
                        "{}: {} → {}",
                        s.keys[k],
                        show(&b.values[k]),
                        show(&p.values[k])
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            _ => "(base)".into(),
        };
        let mut r = vec![change, p.runs.len().to_string()];
        for (metric, _) in METRICS {
            let v = by_seed(s, p, metric);
            r.push(cell(&v));
            r.push(match base {
                Some(b) if !std::ptr::eq(*p, b) => {
                    paired(&by_seed(s, b, metric), &v).map_or("—".into(), |i| show_interval(&i))
                }
                _ => "—".into(),
            });
        }
        rows.push(r);
    }
    let label = Objective::parse(objective).map_or(objective.to_string(), |o| o.label().into());
    let base_values = base.map_or(String::new(), |b| {
        s.keys
            .iter()
            .zip(&b.values)
            .filter(|(k, v)| *k != "objective" && !v.is_null())
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(", ")
    });
    Table {
        caption: format!(
            "{}, {label}: each change alone from the base ({base_values}; \"—\" = the recipe's \
             default), test metrics of the same seeds (%, mean ± std) and the paired \
             difference to the base over seeds with a 95 % t interval.",
            d.name
        ),
        header,
        rows,
        rules_after: vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::sweep::select;
    use crate::report::data::RunRow;
    use crate::report::fixtures::{metric, run};
    use serde_json::{json, Value};

    /// Group Loss: a base and two changes of one key and one of another; three seeds.
    fn ablation() -> DatasetData {
        let mut d = DatasetData {
            name: "demo".into(),
            ..Default::default()
        };
        // (ce_weight, head, test MAP@R of seeds 0..3)
        let points: [(f64, Value, [f64; 3]); 4] = [
            (1.0, Value::Null, [30.0, 32.0, 31.0]),
            (0.1, Value::Null, [33.0, 36.0, 34.0]),
            (0.0, Value::Null, [40.0, 41.0, 39.0]),
            (1.0, json!("tch"), [29.0, 31.0, 31.0]),
        ];
        for (i, (ce, head, test)) in points.iter().enumerate() {
            for (seed, t) in test.iter().enumerate() {
                let id = format!("p{i}s{seed}");
                d.group_loss.push(RunRow {
                    point: vec![json!(ce), head.clone(), json!("group_loss")],
                    ..run(&id, seed as u64)
                });
                d.metrics.push(metric(Method::GroupLoss, &id, "map@r", *t));
                d.metrics
                    .push(metric(Method::GroupLoss, &id, "recall@1", 2.0 * t));
            }
        }
        let keys = ["ce_weight".into(), "head_init".into(), "objective".into()];
        select(&mut d, &keys, Default::default(), &[]);
        d.sweep.as_mut().unwrap().ablation = true;
        d
    }

    #[test]
    fn each_change_is_a_paired_difference_to_the_base() {
        let d = ablation();
        let (name, t) = &tables(&d).unwrap()[0];
        assert_eq!(name, "group_loss");
        let rows: Vec<(&str, &str, &str)> = t
            .rows
            .iter()
            .map(|r| (r[0].as_str(), r[2].as_str(), r[3].as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("(base)", "31.00 ± 1.00", "—"),
                // The changes in grid order (each key's values ascending).
                (
                    "ce_weight: 1.0 → 0.0",
                    "40.00 ± 1.00",
                    "+9.00 [+6.52, +11.48]"
                ),
                (
                    "ce_weight: 1.0 → 0.1",
                    "34.33 ± 1.53",
                    "+3.33 [+1.90, +4.77]"
                ),
                ("head_init: — → tch", "30.33 ± 1.15", "−0.67 [−2.10, +0.77]"),
            ]
        );
        assert!(t.caption.contains("ce_weight=1.0"), "{}", t.caption);
        // Without the ablation flag (a sweep), no table.
        let mut d = d;
        d.sweep.as_mut().unwrap().ablation = false;
        assert!(tables(&d).is_none());
    }
}
