//! A benchmark tuned in two stages (a profile's `tuning_seeds`): every grid point trains on
//! the tuning seeds only; per objective and track, the point with the best mean validation
//! MAP@R over those runs is then trained on the profile's `seeds`, the runs the leaderboard
//! reports. This is the order of Musgrave et al. ("A Metric Learning Reality Check": tune on
//! single trainings, report repeated trainings of the best), it makes a point cost one run per
//! tuning seed instead of one per reported seed, and with disjoint seed lists the reported
//! seeds never took part in choosing the point.
//!
//! The choice reads each tuning run's `eval/selected-val.json` (the evaluate stage's record),
//! so the plan grows once those exist: `gl run` plans the tuning runs, runs them, plans again
//! ([`Tuning::waiting`] says what is still open) and runs the chosen points' seeds. The report
//! chooses with the same rule ([`best`]) from the catalogue and refuses a chosen point whose
//! reported seeds are missing.

use crate::pipeline::sweep::{show, Point};
use crate::stages::evaluate::{record_path, EvalRecord};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One objective of one track: the points that compete with each other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Group {
    /// The track's start (`imagenet`, `finetuned`), "" without tracks.
    pub track: String,
    pub objective: String,
}

impl Group {
    /// The group a benchmark point belongs to.
    pub fn of(point: &Point) -> Group {
        let value = |key: &str| {
            point
                .values
                .iter()
                .find(|(k, _)| k == key)
                .map_or(String::new(), |(_, v)| show(v))
        };
        Group {
            track: value(crate::pipeline::sweep::START),
            objective: value("objective"),
        }
    }

    /// `imagenet/group_loss` (the objective alone without tracks).
    pub fn label(&self) -> String {
        match self.track.is_empty() {
            true => self.objective.clone(),
            false => format!("{}/{}", self.track, self.objective),
        }
    }
}

/// Where one group's choice stands.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupState {
    pub group: Group,
    /// Index (into the profile's points) of the chosen point, once every tuning run of the
    /// group has its validation MAP@R.
    pub chosen: Option<usize>,
    /// Tuning runs with a validation MAP@R, of `runs`.
    pub evaluated: usize,
    pub runs: usize,
}

/// The choices of one dataset, by group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tuning {
    pub dataset: String,
    pub groups: Vec<GroupState>,
}

impl Tuning {
    /// The groups whose tuning runs are not all evaluated yet.
    pub fn waiting(&self) -> impl Iterator<Item = &GroupState> {
        self.groups.iter().filter(|g| g.chosen.is_none())
    }

    /// One line per waiting group, for `gl run --dry-run` and the end of a run.
    pub fn describe_waiting(&self) -> Vec<String> {
        self.waiting()
            .map(|g| {
                format!(
                    "{}: {}: {} of {} tuning runs evaluated; its seeds are planned once all are",
                    self.dataset,
                    g.group.label(),
                    g.evaluated,
                    g.runs
                )
            })
            .collect()
    }
}

/// The point with the highest mean score, the first of equal ones (in the order given):
/// the one rule by which the plan and the report choose.
pub fn best<'a>(scores: impl IntoIterator<Item = (usize, &'a [f64])>) -> Option<usize> {
    let mut out: Option<(usize, f64)> = None;
    for (i, v) in scores {
        if v.is_empty() {
            continue;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        if out.is_none_or(|b| mean > b.1) {
            out = Some((i, mean));
        }
    }
    out.map(|b| b.0)
}

/// The validation MAP@R of run `run_id`'s selected model, as its evaluate task recorded it
/// (`None` until then).
pub fn val_map_r(data_dir: &Path, run_id: &str) -> Result<Option<f64>> {
    let path = record_path(&data_dir.join("runs").join(run_id), "selected", "val");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let rec: EvalRecord = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an evaluation record", path.display()))?;
    Ok(rec.metrics.retrieval.map_at_r)
}

/// Each group's state from its points' tuning runs: `runs` pairs a point index with a run id
/// (one per tuning seed), `score` gives a run's validation MAP@R where it has one.
pub fn choose(
    dataset: &str,
    points: &[Point],
    runs: &[(usize, String)],
    score: &dyn Fn(&str) -> Result<Option<f64>>,
) -> Result<Tuning> {
    let mut by_group: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        by_group.entry(Group::of(p)).or_default().push(i);
    }
    let mut groups = Vec::new();
    for (group, members) in by_group {
        let mut scores: Vec<(usize, Vec<f64>)> = Vec::new();
        let (mut evaluated, mut total) = (0, 0);
        for &i in &members {
            let mut v = Vec::new();
            for (_, id) in runs.iter().filter(|(j, _)| *j == i) {
                total += 1;
                if let Some(s) = score(id)? {
                    evaluated += 1;
                    v.push(s);
                }
            }
            scores.push((i, v));
        }
        let chosen = (total > 0 && evaluated == total)
            .then(|| best(scores.iter().map(|(i, v)| (*i, v.as_slice()))))
            .flatten();
        groups.push(GroupState {
            group,
            chosen,
            evaluated,
            runs: total,
        });
    }
    Ok(Tuning {
        dataset: dataset.to_string(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn point(objective: &str, lr: f64, track: &str) -> Point {
        Point {
            values: vec![
                ("objective".into(), Value::from(objective)),
                ("lr".into(), Value::from(lr)),
                ("start".into(), Value::from(track)),
            ],
            set: Vec::new(),
        }
    }

    #[test]
    fn the_best_mean_wins_and_the_first_of_equal_ones() {
        let a = [0.5, 0.7];
        let b = [0.6, 0.6];
        let c = [0.61];
        assert_eq!(best([(0, &a[..]), (1, &b[..])]), Some(0));
        assert_eq!(best([(1, &b[..]), (0, &a[..])]), Some(1));
        assert_eq!(best([(0, &a[..]), (2, &c[..])]), Some(2));
        assert_eq!(best([(0, &[][..])]), None);
    }

    #[test]
    fn each_objective_and_track_chooses_alone_once_all_its_runs_are_evaluated() {
        let points = vec![
            point("a", 1e-4, "imagenet"),
            point("a", 1e-3, "imagenet"),
            point("a", 1e-4, "finetuned"),
            point("a", 1e-3, "finetuned"),
            point("b", 1e-4, "imagenet"),
            point("b", 1e-3, "imagenet"),
        ];
        let runs: Vec<(usize, String)> = (0..6).map(|i| (i, format!("r{i}"))).collect();
        // r5 not evaluated yet: b waits; a's tracks choose their own best.
        let scores = [0.3, 0.5, 0.6, 0.2, 0.9, f64::NAN];
        let score = |id: &str| -> Result<Option<f64>> {
            let i: usize = id[1..].parse()?;
            Ok((i != 5).then(|| scores[i]))
        };
        let t = choose("demo", &points, &runs, &score).unwrap();
        let chosen: Vec<(String, Option<usize>)> = t
            .groups
            .iter()
            .map(|g| (g.group.label(), g.chosen))
            .collect();
        assert_eq!(
            chosen,
            vec![
                ("finetuned/a".to_string(), Some(2)),
                ("imagenet/a".to_string(), Some(1)),
                ("imagenet/b".to_string(), None),
            ]
        );
        let waiting = t.describe_waiting();
        assert_eq!(waiting.len(), 1);
        assert!(
            waiting[0].contains("imagenet/b: 1 of 2 tuning runs"),
            "{waiting:?}"
        );
    }

    #[test]
    fn a_missing_record_waits_and_a_broken_one_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(val_map_r(dir.path(), "r0").unwrap(), None);
        let path = record_path(&dir.path().join("runs/r0"), "selected", "val");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{").unwrap();
        let e = format!("{:#}", val_map_r(dir.path(), "r0").unwrap_err());
        assert!(e.contains("selected-val.json"), "{e}");
    }
}
