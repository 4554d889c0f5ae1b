//! Sweeps: a profile's `[sweep]` table, a grid over training-recipe keys
//! (`tau = [10.0, 24.0, 54.0]`, `anchors = [1, 2, 3]`) run for every seed of the profile. Each
//! grid point is the profile's `[train]` recipe with the point's values set last, so it is its
//! own run (its id hashes the resolved recipe), its own ensemble and its own row of the report's
//! sweep table.
//!
//! A benchmark (`[benchmark.<objective>]` tables) is a sweep too, one grid per objective, with
//! one rule a cartesian `[sweep]` cannot state: every objective gets the same number of points
//! (the same tuning budget), each point also setting `objective` and the objective's fixed
//! `set` values ([`benchmark_points`]).

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The recipe key of a run's start ([`crate::train::config::Start`]): swept like any key, or a
/// benchmark's track.
pub const START: &str = "start";

/// The longest point label: task keys, log file names and ensemble directories stay far below
/// the 255-byte limit of a file name.
pub const MAX_LABEL: usize = 96;

/// `[sweep]`: recipe key → the values it takes. Keys are in name order (a TOML table has no
/// order a reader could rely on), values in the order written.
pub type SweepGrid = BTreeMap<String, Vec<Value>>;

/// One point of the grid: a value for every swept key, in key order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub values: Vec<(String, Value)>,
    /// `key=value` settings applied before the values (a benchmark objective's fixed `set`).
    pub set: Vec<String>,
}

/// `[benchmark.<objective>]`: the grid that objective is tuned over (recipe key → values) and
/// the settings it always runs with (`set`, e.g. Proxy-Anchor's proxy lr factor).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchmarkEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    #[serde(flatten)]
    pub grid: SweepGrid,
}

/// Objective name → its entry.
pub type Benchmark = BTreeMap<String, BenchmarkEntry>;

/// `[ablation.<objective>]`: per objective its base recipe (`set`) and, per key, the values
/// tried instead of the base's, one change at a time (the same seeds for every point, so each
/// change is a paired difference to the base).
pub type Ablation = BTreeMap<String, BenchmarkEntry>;

impl Point {
    /// The point's `start` value, swept or its track's (`"finetuned"`), if it has one.
    pub fn start(&self) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == START)
            .and_then(|(_, v)| v.as_str())
    }

    /// `anchors=1,tau=10.0`: the task keys' and ensemble names' part for this point (empty for
    /// the single point of a profile without a sweep). Path-safe, as it names log files and
    /// ensemble directories: any character but `A-Za-z0-9._=,+-` becomes `_`, and a label over
    /// [`MAX_LABEL`] bytes is cut and ends in 8 hex digits of the sha256 of the whole.
    pub fn label(&self) -> String {
        let full: String = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(",");
        let safe: String = full
            .chars()
            .map(|c| match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '=' | ',' | '+' | '-' => c,
                _ => '_',
            })
            .collect();
        if safe.len() <= MAX_LABEL {
            return safe;
        }
        let h = hex::encode(Sha256::digest(full.as_bytes()));
        format!("{}~{}", &safe[..MAX_LABEL - 9], &h[..8])
    }

    /// `key=<TOML literal>` overrides that set the point on top of the recipe (its fixed `set`
    /// first).
    pub fn overrides(&self) -> Result<Vec<String>> {
        let mut out = self.set.clone();
        for (k, v) in &self.values {
            let t = toml::Value::try_from(v)
                .with_context(|| format!("sweep.{k}: {v} is not a TOML value"))?;
            out.push(format!("{k}={t}"));
        }
        Ok(out)
    }
}

/// A value as the report and the labels show it: strings bare, numbers as JSON writes them,
/// a missing one as "—".
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // A key this point's objective does not tune (a benchmark's table).
        Value::Null => "—".to_string(),
        v => v.to_string(),
    }
}

/// Orders values of one key: numbers by value, anything else by how it is shown.
pub fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => show(a).cmp(&show(b)),
    }
}

/// Checks a grid: every list non-empty, scalars only, no value twice (`10` and `10.0` are the
/// same value), no key the `[train]` set already fixes (which of the two would win is then a
/// question nobody should need to ask), no `init` when the runs start from the fine-tuned ones,
/// and every point's label distinct.
pub fn validate(grid: &SweepGrid, train_set: &[String], init_from_finetune: bool) -> Result<()> {
    for (k, values) in grid {
        ensure!(!values.is_empty(), "sweep.{k}: at least one value");
        for v in values {
            ensure!(
                matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_)),
                "sweep.{k}: {v} is not a number, string or boolean"
            );
        }
        for (i, v) in values.iter().enumerate() {
            ensure!(
                !values[..i].iter().any(|u| compare(u, v).is_eq()),
                "sweep.{k}: {v} is listed twice"
            );
        }
        ensure!(
            !(init_from_finetune && (k == "init" || k == START)),
            "sweep.{k}: train.init_from_finetune sets each run's init already"
        );
        for s in train_set {
            let (key, _) = crate::config::parse_override(s)?;
            ensure!(
                key != *k,
                "sweep.{k}: train.set sets {k} too ({s:?}); sweep it or set it, not both"
            );
        }
    }
    let mut labels: Vec<String> = points(grid).iter().map(Point::label).collect();
    labels.sort();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "sweep: two points are both labelled {:?}; make the values differ in A-Za-z0-9._=,+-",
            w[0]
        );
    }
    Ok(())
}

/// Checks a benchmark: `group_loss` among its objectives (the reference of every paired
/// difference), no cartesian `[sweep]` beside it, each objective's grid as [`validate`] wants
/// it and without `objective`, its `set` not fixing a swept key, and — the fair budget — the
/// same number of points for every objective.
pub fn validate_benchmark(
    bench: &Benchmark,
    sweep: &SweepGrid,
    train_set: &[String],
    init_from_finetune: bool,
) -> Result<()> {
    if bench.is_empty() {
        return Ok(());
    }
    ensure!(
        sweep.is_empty(),
        "benchmark: a profile has [sweep] or [benchmark.<objective>] tables, not both"
    );
    ensure!(
        bench.contains_key("group_loss"),
        "benchmark: no [benchmark.group_loss] (the reference of the paired differences)"
    );
    for (name, e) in bench {
        let ctx = || format!("benchmark.{name}");
        ensure!(!e.grid.is_empty(), "benchmark.{name}: no key to tune");
        ensure!(
            !e.grid.contains_key("objective"),
            "benchmark.{name}: the table names the objective; do not sweep `objective`"
        );
        let mut fixed = train_set.to_vec();
        fixed.extend(e.set.iter().cloned());
        validate(&e.grid, &fixed, init_from_finetune).with_context(ctx)?;
        for s in &e.set {
            let (key, _) = crate::config::parse_override(s).with_context(ctx)?;
            ensure!(
                key != "objective",
                "benchmark.{name}.set: the table names the objective already"
            );
        }
    }
    let sizes: Vec<(String, usize)> = bench
        .iter()
        .map(|(n, e)| (n.clone(), points(&e.grid).len()))
        .collect();
    if sizes.iter().any(|s| s.1 != sizes[0].1) {
        let shown: Vec<String> = sizes.iter().map(|(n, k)| format!("{n} {k}")).collect();
        anyhow::bail!(
            "benchmark: every objective needs the same tuning budget (points): {}",
            shown.join(", ")
        );
    }
    Ok(())
}

/// Checks a profile's `tracks`: only beside a benchmark, each start once, and the start then
/// the track's alone (not swept, not set, not `train.init_from_finetune`).
pub fn validate_tracks(
    tracks: &[crate::train::config::Start],
    bench: &Benchmark,
    train_set: &[String],
    init_from_finetune: bool,
) -> Result<()> {
    if tracks.is_empty() {
        return Ok(());
    }
    ensure!(
        !bench.is_empty(),
        "tracks: a benchmark's tracks; this profile has no [benchmark.<objective>] table"
    );
    for (i, t) in tracks.iter().enumerate() {
        ensure!(!tracks[..i].contains(t), "tracks: {t:?} is listed twice");
    }
    ensure!(
        !init_from_finetune,
        "tracks: each track sets the start; train.init_from_finetune would override it"
    );
    let mut fixed: Vec<(String, &String)> = train_set.iter().map(|s| ("train".into(), s)).collect();
    for (name, e) in bench {
        ensure!(
            !e.grid.contains_key(START),
            "benchmark.{name}.start: the profile's tracks set the start; do not sweep it"
        );
        fixed.extend(e.set.iter().map(|s| (format!("benchmark.{name}"), s)));
    }
    for (where_, s) in fixed {
        let (key, _) = crate::config::parse_override(s)?;
        ensure!(
            key != START,
            "{where_}.set: {s:?} sets the start, which the profile's tracks set"
        );
    }
    Ok(())
}

/// A benchmark's points: per objective (in name order), `objective=<name>` then its grid's
/// point, with the objective's `set`; with `tracks`, every such point once per track, its
/// `start` last.
pub fn benchmark_points(bench: &Benchmark, tracks: &[crate::train::config::Start]) -> Vec<Point> {
    let starts: Vec<Option<Value>> = match tracks.is_empty() {
        true => vec![None],
        false => tracks
            .iter()
            .map(|t| serde_json::to_value(t).ok())
            .collect(),
    };
    let mut out = Vec::new();
    for start in &starts {
        for (name, e) in bench {
            for p in points(&e.grid) {
                let mut values = vec![("objective".to_string(), Value::from(name.clone()))];
                values.extend(p.values);
                values.extend(start.clone().map(|v| (START.to_string(), v)));
                out.push(Point {
                    values,
                    set: e.set.clone(),
                });
            }
        }
    }
    out
}

/// Checks an ablation: no `[sweep]` or benchmark beside it, each objective's changes as
/// [`validate`] wants a grid (the base `set` may fix a changed key: the change overrides it)
/// and without `objective`.
pub fn validate_ablation(
    ablation: &Ablation,
    sweep: &SweepGrid,
    bench: &Benchmark,
    train_set: &[String],
    init_from_finetune: bool,
) -> Result<()> {
    if ablation.is_empty() {
        return Ok(());
    }
    ensure!(
        sweep.is_empty() && bench.is_empty(),
        "ablation: a profile has [sweep], [benchmark.<objective>] or [ablation.<objective>] \
         tables, one kind only"
    );
    for (name, e) in ablation {
        ensure!(
            !e.grid.contains_key("objective"),
            "ablation.{name}: the table names the objective; do not change `objective`"
        );
        validate(&e.grid, train_set, init_from_finetune)
            .with_context(|| format!("ablation.{name}"))?;
    }
    Ok(())
}

/// An ablation's points: per objective (in name order) its base, `objective=<name>`, then one
/// point per changed key and value, each with the objective's base `set`.
pub fn ablation_points(ablation: &Ablation) -> Vec<Point> {
    let mut out = Vec::new();
    for (name, e) in ablation {
        let base = ("objective".to_string(), Value::from(name.clone()));
        out.push(Point {
            values: vec![base.clone()],
            set: e.set.clone(),
        });
        for (k, values) in &e.grid {
            for v in values {
                out.push(Point {
                    values: vec![base.clone(), (k.clone(), v.clone())],
                    set: e.set.clone(),
                });
            }
        }
    }
    out
}

/// The recipe keys a profile's points set: its sweep's, or with a benchmark `objective` and
/// every objective's grid keys (and `start` with tracks), in name order.
pub fn swept_keys(
    sweep: &SweepGrid,
    bench: &Benchmark,
    ablation: &Ablation,
    tracked: bool,
) -> Vec<String> {
    let mut keys: Vec<String> = sweep.keys().cloned().collect();
    for e in bench.values().chain(ablation.values()) {
        keys.extend(e.grid.keys().cloned());
    }
    if !bench.is_empty() || !ablation.is_empty() {
        keys.push("objective".into());
    }
    if tracked {
        keys.push(START.into());
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The grid's points, the last key varying fastest; one empty point without a sweep.
pub fn points(grid: &SweepGrid) -> Vec<Point> {
    let mut out = vec![Point::default()];
    for (k, values) in grid {
        out = out
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.values.push((k.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grid(v: Value) -> SweepGrid {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn points_are_the_cartesian_product_in_key_order() {
        let g = grid(json!({"tau": [10.0, 24.5], "anchors": [1, 2, 3]}));
        let p = points(&g);
        let labels: Vec<String> = p.iter().map(Point::label).collect();
        assert_eq!(
            labels,
            [
                "anchors=1,tau=10.0",
                "anchors=1,tau=24.5",
                "anchors=2,tau=10.0",
                "anchors=2,tau=24.5",
                "anchors=3,tau=10.0",
                "anchors=3,tau=24.5",
            ]
        );
        assert_eq!(p[1].overrides().unwrap(), ["anchors=1", "tau=24.5"]);
        assert_eq!(points(&SweepGrid::new()), [Point::default()]);
        assert_eq!(points(&SweepGrid::new())[0].label(), "");
    }

    #[test]
    fn string_values_are_quoted_as_toml_and_path_safe_in_labels() {
        let p = &points(&grid(json!({"sampler": ["a b/c"]})))[0];
        assert_eq!(p.overrides().unwrap(), ["sampler=\"a b/c\""]);
        assert_eq!(p.label(), "sampler=a_b_c");
        let long = "x".repeat(300);
        let p = &points(&grid(json!({ "init": [long] })))[0];
        assert_eq!(p.label().len(), MAX_LABEL);
        assert!(p.label().starts_with("init=xxx"));
    }

    #[test]
    fn bad_grids_name_the_key() {
        let err = |v: Value, set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            validate(&grid(v), &set, true).unwrap_err().to_string()
        };
        assert!(err(json!({"tau": []}), &[]).contains("sweep.tau: at least one"));
        assert!(err(json!({"tau": [1, 1]}), &[]).contains("listed twice"));
        assert!(err(json!({"tau": [10, 10.0]}), &[]).contains("sweep.tau: 10.0 is listed twice"));
        assert!(err(json!({"init": ["a"]}), &[]).contains("init_from_finetune"));
        assert!(err(json!({"s": ["a b", "a_b"]}), &[]).contains("both labelled \"s=a_b\""));
        assert!(err(json!({"tau": [[1]]}), &[]).contains("not a number"));
        assert!(err(json!({"tau": [1]}), &["tau=3"]).contains("train.set sets tau"));
        assert!(validate(&grid(json!({"tau": [1, 2]})), &["anchors=3".into()], true).is_ok());
    }

    fn bench(v: Value) -> Benchmark {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_benchmark_gives_every_objective_its_grid_and_the_same_budget() {
        let b = bench(json!({
            "group_loss": {"lr": [1e-4, 3e-4], "tau": [10.0, 30.0]},
            "proxy_anchor": {"set": ["classifier_lr_factor=100"], "lr": [1e-4, 3e-4],
                             "margin": [0.1, 0.2]},
        }));
        validate_benchmark(&b, &SweepGrid::new(), &[], false).unwrap();
        let p = benchmark_points(&b, &[]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0].label(), "objective=group_loss,lr=0.0001,tau=10.0");
        assert_eq!(
            p[7].overrides().unwrap(),
            [
                "classifier_lr_factor=100",
                "objective=\"proxy_anchor\"",
                "lr=0.0003",
                "margin=0.2"
            ]
        );
        assert_eq!(
            swept_keys(&SweepGrid::new(), &b, &Ablation::new(), false),
            ["lr", "margin", "objective", "tau"]
        );
        let err = |v: Value| {
            let e = validate_benchmark(&bench(v), &SweepGrid::new(), &["epochs=2".into()], false);
            format!("{:#}", e.unwrap_err())
        };
        let e = err(json!({"group_loss": {"lr": [1, 2]}, "contrastive": {"lr": [1, 2, 3]}}));
        assert!(
            e.contains("same tuning budget (points): contrastive 3, group_loss 2"),
            "{e}"
        );
        let e = err(json!({"contrastive": {"lr": [1]}}));
        assert!(e.contains("no [benchmark.group_loss]"), "{e}");
        let e = err(json!({"group_loss": {"objective": ["a"]}}));
        assert!(e.contains("do not sweep `objective`"), "{e}");
        let e = format!(
            "{:#}",
            validate_benchmark(
                &bench(json!({"group_loss": {"set": ["lr=1"], "lr": [1, 2]}})),
                &SweepGrid::new(),
                &[],
                false
            )
            .unwrap_err()
        );
        assert!(
            e.contains("benchmark.group_loss: sweep.lr: train.set sets lr"),
            "{e}"
        );
        let e = err(json!({"group_loss": {"epochs": [1, 2]}}));
        assert!(e.contains("train.set sets epochs"), "{e}");
        let mut sweep = SweepGrid::new();
        sweep.insert("lr".into(), vec![json!(1)]);
        let e = validate_benchmark(
            &bench(json!({"group_loss": {"lr": [1]}})),
            &sweep,
            &[],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn values_order_numerically_then_by_text() {
        let mut v = vec![json!(24.0), json!(3), json!(10.5)];
        v.sort_by(compare);
        assert_eq!(v, [json!(3), json!(10.5), json!(24.0)]);
        assert_eq!(
            compare(&json!("b"), &json!("a")),
            std::cmp::Ordering::Greater
        );
    }

    #[test]
    fn an_ablation_is_a_base_and_one_change_at_a_time() {
        let a: Ablation = serde_json::from_value(json!({
            "group_loss": {"set": ["ce_weight=1.0", "tau=10.0"], "ce_weight": [0.1, 0.0],
                           "start": ["finetuned"]},
            "triplet_semihard": {"set": ["margin=0.2"], "embedding_dim": [0]},
        }))
        .unwrap();
        validate_ablation(&a, &SweepGrid::new(), &Benchmark::new(), &[], false).unwrap();
        let p = ablation_points(&a);
        let labels: Vec<String> = p.iter().map(Point::label).collect();
        assert_eq!(
            labels,
            [
                "objective=group_loss",
                "objective=group_loss,ce_weight=0.1",
                "objective=group_loss,ce_weight=0.0",
                "objective=group_loss,start=finetuned",
                "objective=triplet_semihard",
                "objective=triplet_semihard,embedding_dim=0",
            ]
        );
        // The change comes after the base set, so it wins.
        assert_eq!(
            p[1].overrides().unwrap(),
            [
                "ce_weight=1.0",
                "tau=10.0",
                "objective=\"group_loss\"",
                "ce_weight=0.1"
            ]
        );
        assert_eq!(p[3].start(), Some("finetuned"));
        assert_eq!(
            swept_keys(&SweepGrid::new(), &Benchmark::new(), &a, false),
            ["ce_weight", "embedding_dim", "objective", "start"]
        );
        let e = validate_ablation(
            &a,
            &grid(json!({"tau": [1.0]})),
            &Benchmark::new(),
            &[],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("one kind only"), "{e}");
        let e = validate_ablation(
            &a,
            &SweepGrid::new(),
            &Benchmark::new(),
            &["ce_weight=0.5".into()],
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("ablation.group_loss"), "{e:#}");
    }
}
