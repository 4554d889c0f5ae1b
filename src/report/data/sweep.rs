//! A sweep as report data: the profile's Group Loss runs grouped by their values of the swept
//! recipe keys, and the point chosen on validation ([`select`]) that the main tables show.
//! Its table and figure are [`crate::report::sweep`] and [`crate::report::figures`].

use super::{DatasetData, Method, MetricRow, RunRow};
use serde_json::Value;
use std::collections::BTreeMap;

/// One grid point: its runs (one per seed) and its ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Its value of each swept key, in key order.
    pub values: Vec<Value>,
    /// The runs that compete for the point (with [`TwoStage`], those of the tuning seeds).
    pub runs: Vec<RunRow>,
    /// With [`TwoStage`]: the runs of the reported seeds (a chosen point's); empty otherwise.
    pub reported: Vec<RunRow>,
    pub ensemble: Option<String>,
    /// Validation R@1 (%) of each run at its selected epoch, where the run has a validation
    /// split.
    pub val_r1: Vec<f64>,
    /// Validation MAP@R (%) of each run's selected model, where the profile evaluates it.
    pub val_map_r: Vec<f64>,
}

/// What chose the selected point: the first the runs of every point have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// Mean validation MAP@R (`[evaluate] validation = true`): far from its ceiling, so it ranks
    /// recipes where validation R@1 over few classes saturates.
    ValMapR,
    /// Mean validation R@1 at each run's selected epoch.
    ValR1,
    /// Mean test R@1: some run has no validation split (the official, optimistic protocol).
    TestR1,
}

/// Every point of a dataset's sweep (with at least one run) and the one selected.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepData {
    pub keys: Vec<String>,
    /// In grid order (each key's values ascending, the last key fastest).
    pub points: Vec<SweepPoint>,
    pub selected: usize,
    /// With `objective` swept: the selected `cross_entropy` point (the softmax row).
    pub selected_softmax: Option<usize>,
    /// With `objective` swept: each objective's selected point, by (track, objective name) —
    /// every objective chosen by the same criterion from its own points (the benchmark's
    /// rule), within its track (`start`; "" for a benchmark without tracks).
    pub by_objective: BTreeMap<(String, String), usize>,
    /// A tracked benchmark's fine-tuned start, evaluated as it is: the test metrics of the
    /// `[finetune]` runs (metric → values), the floor of the `finetuned` track.
    pub finetuned_floor: BTreeMap<String, Vec<f64>>,
    /// A benchmark's grid keys per objective (what was tuned for it); empty for a sweep.
    pub tuned: BTreeMap<String, Vec<String>>,
    /// Selected on validation; `false` when some point has no validation numbers and the mean
    /// test R@1 decided (the official, optimistic protocol; the captions say so).
    pub on_validation: bool,
    pub criterion: Criterion,
    /// The Group Loss and ensemble metrics of every point.
    pub metrics: Vec<MetricRow>,
    /// The points are an ablation's (one change at a time from each objective's base), not a
    /// grid: the report shows them as paired differences ([`crate::report::ablation`]).
    pub ablation: bool,
    /// A benchmark tuned in two stages: the seeds that chose and the seeds reported.
    pub two_stage: Option<TwoStage>,
}

impl SweepPoint {
    /// The runs the tables report for this point: the reported seeds' where it has them
    /// ([`TwoStage`]), else the runs that tuned it.
    pub fn shown(&self) -> &[RunRow] {
        match self.reported.is_empty() {
            true => &self.runs,
            false => &self.reported,
        }
    }

    /// Every run of the point, tuning and reported, each once.
    pub fn all_runs(&self) -> impl Iterator<Item = &RunRow> {
        let extra = self
            .reported
            .iter()
            .filter(|r| !self.runs.iter().any(|t| t.run_id == r.run_id));
        self.runs.iter().chain(extra)
    }
}

/// A benchmark tuned in two stages (the profile's `tuning_seeds`,
/// [`crate::pipeline::tuning`]): points compete on the runs of `tuning`; the chosen point is
/// reported on its runs of `reported`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwoStage {
    pub tuning: Vec<u64>,
    pub reported: Vec<u64>,
}

impl SweepData {
    /// `tau=24.0, anchors=2` (empty for a point that is not there).
    pub fn label(&self, i: usize) -> String {
        let values = self.points.get(i).map_or(&[][..], |p| p.values.as_slice());
        self.keys
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}={}", crate::pipeline::sweep::show(v)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Groups `d`'s Group Loss runs into the points of the sweep over `keys`, picks the point with
/// the best mean validation R@1 and narrows `d`'s runs, metrics, ensemble and training curves to
/// it; the whole sweep goes to `d.sweep` (left `None` when the dataset has no Group Loss run).
/// `ensembles`: `(name, argv)` of the dataset's ensemble tasks.
pub fn select(
    d: &mut DatasetData,
    keys: &[String],
    tuned: BTreeMap<String, Vec<String>>,
    ensembles: &[(String, &[String])],
) {
    select_two_stage(d, keys, tuned, ensembles, None)
}

/// [`select`], with the points of a two-stage benchmark competing on their tuning seeds'
/// runs and each chosen point's reported seeds shown in the tables ([`check_two_stage`]
/// refuses a chosen point without them).
pub fn select_two_stage(
    d: &mut DatasetData,
    keys: &[String],
    tuned: BTreeMap<String, Vec<String>>,
    ensembles: &[(String, &[String])],
    two_stage: Option<&TwoStage>,
) {
    let mut points: Vec<SweepPoint> = Vec::new();
    for r in &d.group_loss {
        let val = d
            .epochs
            .iter()
            .find(|e| e.run_id == r.run_id && Some(e.epoch) == r.selected_epoch)
            .and_then(|e| e.val_r1);
        let i = match points.iter().position(|p| p.values == r.point) {
            Some(i) => i,
            None => {
                points.push(SweepPoint {
                    values: r.point.clone(),
                    runs: Vec::new(),
                    reported: Vec::new(),
                    ensemble: None,
                    val_r1: Vec::new(),
                    val_map_r: Vec::new(),
                });
                points.len() - 1
            }
        };
        if let Some(t) = two_stage {
            if t.reported.contains(&r.seed) {
                points[i].reported.push(r.clone());
            }
            if !t.tuning.contains(&r.seed) {
                continue;
            }
        }
        points[i].runs.push(r.clone());
        points[i].val_r1.extend(val.map(|v| 100.0 * v));
        points[i].val_map_r.extend(r.val_map_r);
    }
    points.sort_by(|a, b| {
        a.values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| crate::pipeline::sweep::compare(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for p in &mut points {
        p.ensemble = ensembles
            .iter()
            .find(|(_, argv)| p.runs.iter().any(|r| argv.contains(&r.run_id)))
            .map(|e| e.0.clone());
    }
    if points.is_empty() {
        return;
    }
    // The test R@1 of each of a point's runs that has one.
    let test_r1 = |p: &SweepPoint| -> Vec<f64> {
        d.metrics
            .iter()
            .filter(|m| m.method == Method::GroupLoss && m.metric == "recall@1")
            .filter(|m| p.runs.iter().any(|r| r.run_id == m.subject))
            .map(|m| m.value)
            .collect()
    };
    // A point competes only when every one of its runs was evaluated (and, on validation, has
    // its validation R@1): a point whose evaluation failed cannot win the main table.
    let evaluated = |p: &SweepPoint| test_r1(p).len() == p.runs.len();
    let all = |f: fn(&SweepPoint) -> usize| points.iter().all(|p| f(p) == p.runs.len());
    let criterion = if all(|p| p.val_map_r.len()) {
        Criterion::ValMapR
    } else if all(|p| p.val_r1.len()) {
        Criterion::ValR1
    } else {
        Criterion::TestR1
    };
    let on_validation = criterion != Criterion::TestR1;
    let objective = keys.iter().position(|k| k == "objective");
    let objective_of = |p: &SweepPoint| -> Option<String> {
        objective
            .and_then(|k| p.values.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // The best point by the criterion among the evaluated ones `admit` lets compete: the rule
    // by which a two-stage benchmark's plan chooses too ([`crate::pipeline::tuning::best`]).
    let best = |admit: &dyn Fn(usize) -> bool| -> Option<usize> {
        let scores: Vec<(usize, Vec<f64>)> = (0..points.len())
            .filter(|&i| evaluated(&points[i]) && admit(i))
            .map(|i| {
                let p = &points[i];
                let v = match criterion {
                    Criterion::ValMapR => p.val_map_r.clone(),
                    Criterion::ValR1 => p.val_r1.clone(),
                    Criterion::TestR1 => test_r1(p),
                };
                (i, v)
            })
            .collect();
        crate::pipeline::tuning::best(scores.iter().map(|(i, v)| (*i, v.as_slice())))
    };
    let is = |i: usize, name: &str| objective_of(&points[i]).as_deref() == Some(name);
    let selected =
        best(&|i| objective_of(&points[i]).is_none_or(|o| o == "group_loss")).unwrap_or(0);
    let selected_softmax = best(&|i| is(i, "cross_entropy"));
    // A benchmark with `start` among its keys that no objective tunes runs its grids once
    // per track (`validate_tracks`): each objective is selected within its track.
    let start = crate::pipeline::sweep::START;
    let track_key = keys
        .iter()
        .position(|k| k == start)
        .filter(|_| !tuned.is_empty() && !tuned.values().any(|k| k.iter().any(|k| k == start)));
    let track_of = |i: usize| -> String {
        track_key
            .and_then(|k| points[i].values.get(k))
            .map_or(String::new(), crate::pipeline::sweep::show)
    };
    let mut by_objective = BTreeMap::new();
    for (j, name) in points
        .iter()
        .enumerate()
        .filter_map(|(j, p)| Some((j, objective_of(p)?)))
    {
        let track = track_of(j);
        let key = (track.clone(), name.clone());
        if by_objective.contains_key(&key) {
            continue;
        }
        if let Some(i) = best(&|i| track_of(i) == track && is(i, &name)) {
            by_objective.insert(key, i);
        }
    }
    let finetuned_floor = match track_key {
        Some(_) => {
            let mut f: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for m in d.metrics.iter().filter(|m| m.method == Method::Softmax) {
                f.entry(m.metric.clone()).or_default().push(m.value);
            }
            f
        }
        None => BTreeMap::new(),
    };
    let (swept, kept): (Vec<MetricRow>, Vec<MetricRow>) = std::mem::take(&mut d.metrics)
        .into_iter()
        .partition(|m| matches!(m.method, Method::GroupLoss | Method::Ensemble));
    d.metrics = kept;
    if let Some(p) = selected_softmax.and_then(|i| points.get(i)) {
        d.softmax = p.shown().to_vec();
        d.metrics.retain(|m| m.method != Method::Softmax);
        d.metrics.extend(
            swept
                .iter()
                .filter(|m| m.method == Method::GroupLoss)
                .filter(|m| p.shown().iter().any(|r| r.run_id == m.subject))
                .map(|m| MetricRow {
                    method: Method::Softmax,
                    ..m.clone()
                }),
        );
    }
    if let Some(p) = points.get(selected) {
        d.metrics.extend(
            swept
                .iter()
                .filter(|m| match m.method {
                    Method::GroupLoss => p.shown().iter().any(|r| r.run_id == m.subject),
                    _ => p.ensemble.as_ref() == Some(&m.subject),
                })
                .cloned(),
        );
        d.group_loss = p.shown().to_vec();
        d.ensemble = p.ensemble.clone();
        let shown = |id: &String| {
            d.group_loss
                .iter()
                .chain(&d.softmax)
                .any(|r| &r.run_id == id)
        };
        let epochs = std::mem::take(&mut d.epochs);
        d.epochs = epochs.into_iter().filter(|e| shown(&e.run_id)).collect();
    }
    d.sweep = Some(SweepData {
        keys: keys.to_vec(),
        points,
        selected,
        selected_softmax,
        by_objective,
        finetuned_floor,
        tuned,
        on_validation,
        criterion,
        metrics: swept,
        ablation: false,
        two_stage: two_stage.cloned(),
    });
}

/// A two-stage benchmark's report stands only on complete seeds: every objective's chosen point
/// (in every track) has a run of every reported seed. Missing ones mean the plan's second stage
/// has not run — or that it chose another point than the report does, which must not pass
/// silently.
pub fn check_two_stage(d: &DatasetData, two_stage: &TwoStage) -> anyhow::Result<()> {
    let Some(s) = &d.sweep else {
        return Ok(());
    };
    for ((track, objective), &i) in &s.by_objective {
        let p = &s.points[i];
        let have: Vec<u64> = p.reported.iter().map(|r| r.seed).collect();
        let missing: Vec<u64> = two_stage
            .reported
            .iter()
            .filter(|s| !have.contains(s))
            .copied()
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "{}: {track}/{objective}: the point chosen on tuning seeds {:?} ({}) has no run of \
             seeds {missing:?}; `gl run` plans them once every tuning run is evaluated",
            d.name,
            two_stage.tuning,
            s.label(i)
        );
    }
    Ok(())
}
