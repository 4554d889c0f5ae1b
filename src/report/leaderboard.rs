//! A benchmark's leaderboard (profiles with `[benchmark.<objective>]` tables): per objective the
//! point its tuning selected on validation classes (the same criterion and the same number of
//! points for every objective), the test metrics of that point's seeds as mean ± std, its rank
//! by mean test MAP@R, and its paired difference to Group Loss over seeds with a 95 % t
//! interval; the pretrained network as the floor. The sentence under the table follows the
//! intervals: a difference is claimed only where its interval excludes zero.

use crate::pipeline::sweep::show;
use crate::report::data::sweep::SweepData;
use crate::report::data::{DatasetData, Method};
use crate::report::paired::Interval;
use crate::report::table::{Cell, Table};
use crate::train::objective::Objective;
use std::collections::BTreeMap;

/// The metrics of the leaderboard (catalogue name, column label), MAP@R first: it ranks.
pub const METRICS: [(&str, &str); 4] = [
    ("map@r", "MAP@R"),
    ("r_precision", "R-Precision"),
    ("recall@1", "R@1"),
    ("nmi", "NMI"),
];

/// One objective's row: its selected point and its seeds' test metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub objective: String,
    /// `lr=1e-4, margin=0.2`: the selected values of the keys tuned for it.
    pub selected: String,
    /// Mean validation MAP@R (%) of the selected point (what chose it).
    pub val_map_r: Option<f64>,
    /// Test metric → seed → value (%).
    pub by_seed: BTreeMap<String, BTreeMap<u64, f64>>,
    /// 1 = highest mean test MAP@R.
    pub rank: usize,
}

impl Entry {
    fn cell(&self, metric: &str) -> Option<Cell> {
        let v: Vec<f64> = self.by_seed.get(metric)?.values().copied().collect();
        let i = Interval::of(&v)?;
        let std = (v.len() > 1).then(|| {
            (v.iter().map(|x| (x - i.mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        });
        Some(Cell {
            mean: i.mean,
            std,
            n: v.len() as u32,
        })
    }

    /// This entry minus `base` on `metric`, seed by seed over the seeds both have.
    pub fn paired(&self, base: &Entry, metric: &str) -> Option<Interval> {
        let (a, b) = (self.by_seed.get(metric)?, base.by_seed.get(metric)?);
        let d: Vec<f64> = a
            .iter()
            .filter_map(|(s, x)| b.get(s).map(|y| x - y))
            .collect();
        Interval::of(&d)
    }
}

/// The leaderboard of dataset `d`, when its sweep is a benchmark.
pub fn entries(d: &DatasetData) -> Option<Vec<Entry>> {
    let s = d.sweep.as_ref()?;
    if s.tuned.is_empty() {
        return None;
    }
    let mut out: Vec<Entry> = s
        .by_objective
        .iter()
        .map(|(o, &i)| entry(s, o, i))
        .collect();
    let mean = |e: &Entry| e.cell("map@r").map_or(f64::NEG_INFINITY, |c| c.mean);
    out.sort_by(|a, b| {
        mean(b)
            .total_cmp(&mean(a))
            .then(a.objective.cmp(&b.objective))
    });
    for i in 0..out.len() {
        // Equal means share a rank.
        out[i].rank = match i > 0 && mean(&out[i]) == mean(&out[i - 1]) {
            true => out[i - 1].rank,
            false => i + 1,
        };
    }
    Some(out)
}

fn entry(s: &SweepData, objective: &str, i: usize) -> Entry {
    let p = &s.points[i];
    let tuned = s.tuned.get(objective).cloned().unwrap_or_default();
    let selected = s
        .keys
        .iter()
        .zip(&p.values)
        .filter(|(k, _)| tuned.contains(k))
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut by_seed: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for m in s.metrics.iter().filter(|m| m.method == Method::GroupLoss) {
        if let Some(r) = p.runs.iter().find(|r| r.run_id == m.subject) {
            by_seed
                .entry(m.metric.clone())
                .or_default()
                .insert(r.seed, m.value);
        }
    }
    Entry {
        objective: objective.to_string(),
        selected,
        val_map_r: (!p.val_map_r.is_empty())
            .then(|| p.val_map_r.iter().sum::<f64>() / p.val_map_r.len() as f64),
        by_seed,
        rank: 0,
    }
}

fn label(objective: &str) -> String {
    Objective::parse(objective).map_or(objective.to_string(), |o| o.label().to_string())
}

/// `+1.23 [−0.40, 2.86]` (a single seed: the difference alone).
fn show_interval(i: &Interval) -> String {
    let signed = |x: f64| format!("{}{:.2}", if x < 0.0 { "−" } else { "+" }, x.abs());
    match i.half {
        Some(h) => format!(
            "{} [{}, {}]",
            signed(i.mean),
            signed(i.mean - h),
            signed(i.mean + h)
        ),
        None => signed(i.mean),
    }
}

/// The leaderboard table of `d` (`None` without a benchmark).
pub fn table(d: &DatasetData) -> Option<Table> {
    let entries = entries(d)?;
    let s = d.sweep.as_ref()?;
    let base = entries.iter().find(|e| e.objective == "group_loss");
    let mut header = vec![
        "rank".to_string(),
        "objective".into(),
        "selected (tuned on validation)".into(),
        "val MAP@R".into(),
    ];
    header.extend(METRICS.iter().map(|m| m.1.to_string()));
    header.push("Δ MAP@R vs Group Loss [95 % CI]".into());
    let mut rows = Vec::new();
    for e in &entries {
        let mut r = vec![
            e.rank.to_string(),
            label(&e.objective),
            e.selected.clone(),
            e.val_map_r.map_or("—".into(), |v| format!("{v:.2}")),
        ];
        r.extend(
            METRICS
                .iter()
                .map(|m| e.cell(m.0).map_or("—".into(), |c| c.show())),
        );
        r.push(match (base, e.objective == "group_loss") {
            (_, true) => "(reference)".into(),
            (Some(b), false) => e
                .paired(b, "map@r")
                .map_or("—".into(), |i| show_interval(&i)),
            (None, false) => "—".into(),
        });
        rows.push(r);
    }
    let floor: BTreeMap<&str, f64> = d
        .metrics
        .iter()
        .filter(|m| m.method == Method::Untrained)
        .map(|m| (m.metric.as_str(), m.value))
        .collect();
    if !floor.is_empty() {
        let mut r = vec![
            "floor".to_string(),
            Method::Untrained.label().to_string(),
            "—".into(),
            "—".into(),
        ];
        r.extend(
            METRICS
                .iter()
                .map(|m| floor.get(m.0).map_or("—".into(), |v| format!("{v:.2}"))),
        );
        r.push("—".into());
        rows.push(r);
    }
    let budget = s.points.len() / s.by_objective.len().max(1);
    let seeds = entries
        .iter()
        .filter_map(|e| e.by_seed.get("map@r").map(BTreeMap::len))
        .max()
        .unwrap_or(0);
    let caption = format!(
        "{}: every objective tuned over the same {budget} points of its grid (its learning rate \
         and its main hyper-parameters), the point selected by {}; test metrics of the selected \
         point's {seeds} seeds (%, mean ± std), ranked by mean test MAP@R; Δ is the paired \
         difference to Group Loss over seeds with a 95 % t interval. The pretrained network, \
         not trained on the dataset, is the floor.",
        d.name,
        match s.criterion {
            crate::report::data::sweep::Criterion::ValMapR => "mean validation MAP@R over seeds",
            crate::report::data::sweep::Criterion::ValR1 => "mean validation R@1 over seeds",
            crate::report::data::sweep::Criterion::TestR1 =>
                "mean TEST R@1 (no validation split: the optimistic protocol)",
        }
    );
    let n = rows.len();
    Some(Table {
        caption,
        header,
        rows,
        rules_after: match floor.is_empty() {
            true => Vec::new(),
            false => vec![n.saturating_sub(2)],
        },
    })
}

/// The leaderboard's figure: test MAP@R per objective in rank order, the floor dashed.
pub fn figure(d: &DatasetData) -> Option<anyhow::Result<String>> {
    let entries = entries(d)?;
    let rows: Vec<(String, f64, f64)> = entries
        .iter()
        .filter_map(|e| {
            let c = e.cell("map@r")?;
            Some((label(&e.objective), c.mean, c.std.unwrap_or(0.0)))
        })
        .collect();
    let floor = d
        .metrics
        .iter()
        .find(|m| m.method == Method::Untrained && m.metric == "map@r")
        .map(|m| m.value);
    Some(crate::report::figures::leaderboard(&d.name, &rows, floor))
}

/// What the leaderboard says, in words that follow the intervals.
pub fn summary(d: &DatasetData) -> Option<String> {
    let entries = entries(d)?;
    let base = entries.iter().find(|e| e.objective == "group_loss")?;
    let (mut above, mut below, mut open) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries.iter().filter(|e| e.objective != "group_loss") {
        let Some(i) = e.paired(base, "map@r") else {
            continue;
        };
        let name = format!("{} ({})", label(&e.objective), show_interval(&i));
        match i.half {
            Some(h) if i.mean - h > 0.0 => above.push(name),
            Some(h) if i.mean + h < 0.0 => below.push(name),
            _ => open.push(name),
        }
    }
    let seeds = base.by_seed.get("map@r").map_or(0, BTreeMap::len);
    let mut s = format!(
        "Group Loss ranks {} of {} by mean test MAP@R over {seeds} seeds.",
        base.rank,
        entries.len()
    );
    let list = |v: &[String]| v.join(", ");
    if !above.is_empty() {
        s += &format!(
            " Better than Group Loss, the interval excluding zero: {}.",
            list(&above)
        );
    }
    if !below.is_empty() {
        s += &format!(
            " Worse than Group Loss, the interval excluding zero: {}.",
            list(&below)
        );
    }
    if !open.is_empty() {
        s += &format!(
            " No difference detectable with {seeds} seeds (the interval includes zero): {}.",
            list(&open)
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::sweep::select;
    use crate::report::data::RunRow;
    use crate::report::fixtures::{metric, run};
    use serde_json::{json, Value};

    /// Three objectives × two points × three seeds: each objective's point chosen on
    /// validation MAP@R alone (the test numbers of the unchosen points are higher, and must not
    /// matter), ranked on test MAP@R, Δ paired by seed, the floor last.
    fn benchmark() -> DatasetData {
        let mut d = DatasetData {
            name: "demo".into(),
            ..Default::default()
        };
        // (objective, lr, margin, val MAP@R, test MAP@R of seeds 0..3)
        let points: [(&str, f64, Value, f64, [f64; 3]); 6] = [
            // A key another objective tunes, present in Group Loss's configs: not shown for it.
            ("group_loss", 1.0, json!(9.9), 60.0, [50.0, 52.0, 51.0]),
            ("group_loss", 2.0, json!(9.9), 55.0, [90.0, 90.0, 90.0]),
            ("contrastive", 1.0, json!(0.5), 61.0, [53.0, 54.0, 55.0]),
            ("contrastive", 2.0, json!(1.0), 40.0, [99.0, 99.0, 99.0]),
            (
                "multi_similarity",
                1.0,
                Value::Null,
                59.0,
                [50.0, 51.0, 53.0],
            ),
            ("multi_similarity", 2.0, Value::Null, 10.0, [1.0, 1.0, 1.0]),
        ];
        for (i, (o, lr, margin, val, test)) in points.iter().enumerate() {
            for (seed, t) in test.iter().enumerate() {
                let id = format!("r{i}s{seed}");
                d.group_loss.push(RunRow {
                    point: vec![json!(lr), margin.clone(), json!(o)],
                    val_map_r: Some(*val),
                    ..run(&id, seed as u64)
                });
                d.metrics.push(metric(Method::GroupLoss, &id, "map@r", *t));
                d.metrics
                    .push(metric(Method::GroupLoss, &id, "recall@1", 2.0 * t));
            }
        }
        d.metrics
            .push(metric(Method::Untrained, "r0s0", "map@r", 20.0));
        let tuned = [
            ("group_loss", vec!["lr"]),
            ("contrastive", vec!["lr", "margin"]),
            ("multi_similarity", vec!["lr"]),
        ]
        .into_iter()
        .map(|(o, k)| (o.to_string(), k.into_iter().map(String::from).collect()))
        .collect();
        let keys = ["lr".to_string(), "margin".into(), "objective".into()];
        select(&mut d, &keys, tuned, &[]);
        d
    }

    #[test]
    fn each_objective_is_chosen_on_validation_and_ranked_on_test() {
        let d = benchmark();
        let t = table(&d).unwrap();
        let col = |name: &str| t.header.iter().position(|h| h.starts_with(name)).unwrap();
        let rows: Vec<(&str, &str, &str, &str)> = t
            .rows
            .iter()
            .map(|r| {
                let c = |k: &str| r[col(k)].as_str();
                (c("rank"), c("objective"), c("selected"), c("MAP@R"))
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("1", "contrastive", "lr=1.0, margin=0.5", "54.00 ± 1.00"),
                ("2", "multi-similarity", "lr=1.0", "51.33 ± 1.53"),
                ("3", "Group Loss", "lr=1.0", "51.00 ± 1.00"),
                ("floor", "pretrained, untrained", "—", "20.00"),
            ]
        );
        let sweep = crate::report::sweep::sweep_table(&d, d.sweep.as_ref().unwrap()).unwrap();
        let gl_rows: Vec<&Vec<String>> =
            sweep.rows.iter().filter(|r| r[2] == "group_loss").collect();
        assert!(gl_rows.iter().all(|r| r[1] == "—"), "{:?}", sweep.rows);
        let marked = sweep
            .rows
            .iter()
            .filter(|r| r.last().unwrap() == "yes")
            .count();
        assert_eq!(
            marked, 3,
            "each objective's selected point: {:?}",
            sweep.rows
        );
        let delta = col("Δ");
        assert_eq!(t.rows[0][delta], "+3.00 [+0.52, +5.48]");
        assert!(t.caption.contains("the same 2 points") && t.caption.contains("validation MAP@R"));
        let s = summary(&d).unwrap();
        assert!(s.starts_with("Group Loss ranks 3 of 3"), "{s}");
        assert!(
            s.contains("Better than Group Loss, the interval excluding zero: contrastive (+3.00"),
            "{s}"
        );
        assert!(s.contains("No difference detectable with 3 seeds (the interval includes zero): multi-similarity"), "{s}");
        assert!(figure(&d)
            .unwrap()
            .unwrap()
            .contains("test MAP@R per objective"));
    }

    fn e(objective: &str, map_r: &[(u64, f64)]) -> Entry {
        Entry {
            objective: objective.into(),
            selected: String::new(),
            val_map_r: None,
            by_seed: [("map@r".to_string(), map_r.iter().copied().collect())].into(),
            rank: 0,
        }
    }

    #[test]
    fn the_paired_difference_uses_the_seeds_both_have() {
        let gl = e("group_loss", &[(0, 50.0), (1, 52.0), (2, 51.0)]);
        let c = e("contrastive", &[(0, 48.0), (1, 51.0), (3, 99.0)]);
        let i = c.paired(&gl, "map@r").unwrap();
        assert_eq!(i.n, 2);
        assert!((i.mean + 1.5).abs() < 1e-12, "{i:?}");
        // t(1) = 12.706, s = 0.7071: half = 12.706 · 0.7071 / √2 = 6.353
        assert!((i.half.unwrap() - 6.353).abs() < 1e-3, "{i:?}");
        assert_eq!(show_interval(&i), "−1.50 [−7.85, +4.85]");
        let cell = gl.cell("map@r").unwrap();
        assert_eq!(cell.show(), "51.00 ± 1.00");
    }
}
