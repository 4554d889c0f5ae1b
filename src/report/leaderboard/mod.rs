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
    /// Its track (the start every objective of the track trains from; "" without tracks).
    pub track: String,
    /// `lr=1e-4, margin=0.2`: the selected values of the keys tuned for it; a value on an edge
    /// of its grid (the lowest or highest of two or more) is marked `(edge)`: the best may lie
    /// beyond the grid.
    pub selected: String,
    /// The tuned keys whose selected value lies on an edge of its grid.
    pub on_edge: Vec<String>,
    /// Mean validation MAP@R (%) of the selected point (what chose it).
    pub val_map_r: Option<f64>,
    /// Per seed (in seed order), the epoch its validation selected, and whether that was the
    /// run's last epoch: early stopping never saw it past its best, so the epoch cap (not a
    /// plateau) ended it and a longer run might do better.
    pub epochs: Vec<(i64, bool)>,
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

/// The tracks of `d`'s benchmark in grid order ("" alone without tracks); empty without a
/// benchmark.
pub fn tracks(d: &DatasetData) -> Vec<String> {
    let Some(s) = d.sweep.as_ref().filter(|s| !s.tuned.is_empty()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for (t, _) in s.by_objective.keys() {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    // ImageNet first: the track every benchmark has.
    out.sort_by_key(|t| (t != "imagenet" && !t.is_empty(), t.clone()));
    out
}

/// The leaderboard of track `track` of dataset `d`, when its sweep is a benchmark.
pub fn entries(d: &DatasetData, track: &str) -> Option<Vec<Entry>> {
    let s = d.sweep.as_ref()?;
    if s.tuned.is_empty() {
        return None;
    }
    let mut out: Vec<Entry> = s
        .by_objective
        .iter()
        .filter(|((t, _), _)| t == track)
        .map(|((t, o), &i)| entry(s, t, o, i))
        .collect();
    if out.is_empty() {
        return None;
    }
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

/// Whether `p`'s value of numeric key `k` is the lowest or highest of two or more values that
/// key takes over the points of `objective` (in `track`).
fn on_edge(s: &SweepData, track: &str, objective: &str, p: usize, k: usize) -> bool {
    let of = |i: usize| -> Option<&serde_json::Value> {
        let v = &s.points[i].values;
        let objective_key = s.keys.iter().position(|k| k == "objective")?;
        let track_key = s
            .keys
            .iter()
            .position(|k| k == crate::pipeline::sweep::START);
        let same_track = track.is_empty() || track_key.is_none_or(|t| show(&v[t]) == track);
        (v.get(objective_key)?.as_str() == Some(objective) && same_track).then(|| &v[k])
    };
    let mut values: Vec<&serde_json::Value> = (0..s.points.len()).filter_map(of).collect();
    values.sort_by(|a, b| crate::pipeline::sweep::compare(a, b));
    values.dedup_by(|a, b| crate::pipeline::sweep::compare(a, b).is_eq());
    let v = &s.points[p].values[k];
    let is = |x: Option<&&serde_json::Value>| x.is_some_and(|x| compare_eq(x, v));
    // Only a number has edges: a start or a sampler has no "beyond".
    v.is_number() && values.len() >= 2 && (is(values.first()) || is(values.last()))
}

fn compare_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    crate::pipeline::sweep::compare(a, b).is_eq()
}

fn entry(s: &SweepData, track: &str, objective: &str, i: usize) -> Entry {
    let p = &s.points[i];
    let tuned = s.tuned.get(objective).cloned().unwrap_or_default();
    let mut on_edge_keys = Vec::new();
    let mut shown = Vec::new();
    for (k, key) in s.keys.iter().enumerate() {
        if !tuned.contains(key) {
            continue;
        }
        let edge = on_edge(s, track, objective, i, k);
        shown.push(format!(
            "{key}={}{}",
            show(&p.values[k]),
            if edge { " (edge)" } else { "" }
        ));
        if edge {
            on_edge_keys.push(key.clone());
        }
    }
    let mut by_seed: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for m in s.metrics.iter().filter(|m| m.method == Method::GroupLoss) {
        if let Some(r) = p.shown().iter().find(|r| r.run_id == m.subject) {
            by_seed
                .entry(m.metric.clone())
                .or_default()
                .insert(r.seed, m.value);
        }
    }
    let mut runs: Vec<_> = p.shown().iter().collect();
    runs.sort_by_key(|r| r.seed);
    Entry {
        objective: objective.to_string(),
        track: track.to_string(),
        selected: shown.join(", "),
        on_edge: on_edge_keys,
        epochs: runs
            .iter()
            .filter_map(|r| Some((r.selected_epoch?, r.selected_epoch? == r.epochs_done)))
            .collect(),
        val_map_r: (!p.val_map_r.is_empty())
            .then(|| p.val_map_r.iter().sum::<f64>() / p.val_map_r.len() as f64),
        by_seed,
        rank: 0,
    }
}

/// Over which runs the point was selected: every seed's, or (a two-stage benchmark) the
/// tuning seeds' before the chosen point trained on the reported seeds.
fn seeds_note(s: &SweepData) -> String {
    let Some(t) = &s.two_stage else {
        return " over seeds".to_string();
    };
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let fresh = t.reported.iter().all(|x| !t.tuning.contains(x));
    format!(
        " of its run(s) on seed(s) {} (one run per point and seed), the selected point then \
         trained on seeds {}{}",
        list(&t.tuning),
        list(&t.reported),
        match fresh {
            true => ", which took no part in selecting it",
            false => "",
        }
    )
}

/// The floor of `track`: the pretrained network untrained, or for the fine-tuned track the
/// fine-tuned start as it is (its label and metric → mean value).
fn floor(d: &DatasetData, track: &str) -> (String, BTreeMap<String, f64>) {
    let s = d.sweep.as_ref();
    match (track, s) {
        ("finetuned", Some(s)) => (
            "the fine-tuned start, as it is".into(),
            s.finetuned_floor
                .iter()
                .map(|(m, v)| (m.clone(), v.iter().sum::<f64>() / v.len().max(1) as f64))
                .collect(),
        ),
        _ => (
            Method::Untrained.label().to_string(),
            d.metrics
                .iter()
                .filter(|m| m.method == Method::Untrained)
                .map(|m| (m.metric.clone(), m.value))
                .collect(),
        ),
    }
}

fn label(objective: &str) -> String {
    Objective::parse(objective).map_or(objective.to_string(), |o| o.label().to_string())
}

/// `6, 8*, 8*`: the selected epoch of each seed, `*` where it was the run's last.
fn show_epochs(epochs: &[(i64, bool)]) -> String {
    match epochs.is_empty() {
        true => "—".into(),
        false => epochs
            .iter()
            .map(|&(e, last)| format!("{e}{}", if last { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `+1.23 [−0.40, 2.86]` (a single seed: the difference alone).
pub(crate) fn show_interval(i: &Interval) -> String {
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

/// The leaderboard table of track `track` of `d` (`None` without a benchmark).
pub fn table(d: &DatasetData, track: &str) -> Option<Table> {
    let entries = entries(d, track)?;
    let s = d.sweep.as_ref()?;
    let base = entries.iter().find(|e| e.objective == "group_loss");
    let mut header = vec![
        "rank".to_string(),
        "objective".into(),
        "selected (tuned on validation)".into(),
        "val MAP@R".into(),
        "epoch per seed".into(),
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
            show_epochs(&e.epochs),
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
    let (floor_label, floor) = floor(d, track);
    if !floor.is_empty() {
        let mut r = vec![
            "floor".to_string(),
            floor_label,
            "—".into(),
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
    let edges = entries.iter().filter(|e| !e.on_edge.is_empty()).count();
    let capped = entries
        .iter()
        .filter(|e| e.epochs.iter().any(|&(_, last)| last))
        .count();
    let seeds = entries
        .iter()
        .filter_map(|e| e.by_seed.get("map@r").map(BTreeMap::len))
        .max()
        .unwrap_or(0);
    let start = match track {
        "" => String::new(),
        "finetuned" => " — track: every objective starts from the same cross-entropy fine-tuned \
                        network (the authors' start for Group Loss), classifier included"
            .to_string(),
        t => format!(" — track: every objective starts from {t}"),
    };
    // One point each: the points were chosen elsewhere (the demo runs demo_tune's choices).
    let tuned_here = match budget {
        1 => "every objective at one fixed point (its recipe; chosen by another profile, if \
              tuned)"
            .to_string(),
        b => {
            format!(
            "every objective tuned over the same {b} points of its grid (its learning rate and \
             its main hyper-parameters), the point selected by {}",
            match s.criterion {
                crate::report::data::sweep::Criterion::ValMapR => "mean validation MAP@R",
                crate::report::data::sweep::Criterion::ValR1 => "mean validation R@1",
                crate::report::data::sweep::Criterion::TestR1 =>
                    "mean TEST R@1 (no validation split: the optimistic protocol)",
            }
        ) + &seeds_note(s)
        }
    };
    let caption = format!(
        "{}{start}: {tuned_here}; test metrics of the selected point's {seeds} seeds (%, mean ± \
         std), ranked by mean test MAP@R; Δ is the paired difference to Group Loss over seeds \
         with a 95 % t interval. The pretrained network, not trained on the dataset, is the \
         floor{}.{}{}",
        d.name,
        match track {
            "finetuned" => " (here: the fine-tuned start, as it is)",
            _ => "",
        },
        match edges {
            0 => String::new(),
            n => format!(
                " {n} selected point(s) lie on an edge of their grid, marked (edge): the best \
                 value may lie beyond it."
            ),
        },
        match capped {
            0 => String::new(),
            n => format!(
                " The epoch of each seed is the one its validation selected; * marks a run's last \
                 epoch — it was still improving when the epoch cap ended it (so for {n} \
                 objective(s) a longer run might do better)."
            ),
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

/// The leaderboard's figure of `track`: test MAP@R per objective in rank order, the floor
/// dashed.
pub fn figure(d: &DatasetData, track: &str) -> Option<anyhow::Result<String>> {
    let entries = entries(d, track)?;
    let rows: Vec<(String, f64, f64)> = entries
        .iter()
        .filter_map(|e| {
            let c = e.cell("map@r")?;
            Some((label(&e.objective), c.mean, c.std.unwrap_or(0.0)))
        })
        .collect();
    let floor = floor(d, track).1.get("map@r").copied();
    let title = match track {
        "" => d.name.clone(),
        t => format!("{} ({t} start)", d.name),
    };
    Some(crate::report::figures::leaderboard(&title, &rows, floor))
}

/// What the leaderboard of `track` says, in words that follow the intervals.
pub fn summary(d: &DatasetData, track: &str) -> Option<String> {
    let entries = entries(d, track)?;
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
    let from = match track {
        "" => String::new(),
        t => format!(" from the {t} start"),
    };
    let mut s = format!(
        "Group Loss ranks {} of {}{from} by mean test MAP@R over {seeds} seeds.",
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
mod tests;
