//! What the report reads, all of it from the catalogue: which runs, baselines and ensembles
//! make up a profile (the latest successful `gl run` task of each key), their metrics, their
//! training curves, and where their test embeddings and images are.

pub mod sweep;

use crate::catalog::Catalog;
use anyhow::{bail, Context, Result};
use duckdb::params;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One training run (`runs`): its three R@1 numbers by selection protocol, as fractions.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub seed: u64,
    pub epochs_done: i64,
    pub selected_epoch: Option<i64>,
    pub r1_last: Option<f64>,
    pub r1_val_selected: Option<f64>,
    pub r1_best_on_test: Option<f64>,
    /// The run's values of the profile's swept keys (from its resolved config), in key order.
    pub point: Vec<serde_json::Value>,
    /// MAP@R (%) of its selected model on the validation classes, where the profile evaluates
    /// them (`[evaluate] validation = true`): the tuning signal with headroom.
    pub val_map_r: Option<f64>,
}

/// One completed epoch (`epochs`).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub run_id: String,
    pub epoch: i64,
    pub loss: f64,
    pub val_r1: Option<f64>,
    pub test_r1: Option<f64>,
}

/// A test-set embeddings file (`embeddings`) with the checksum to verify before reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRow {
    pub path: PathBuf,
    pub sha256: String,
}

/// The methods a dataset's table compares, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// The initial (e.g. ImageNet) network, not trained on the dataset.
    Untrained,
    /// Softmax-only fine-tuning, the paper's initialisation and a baseline.
    Softmax,
    /// Group Loss, one row per seed (aggregated to mean ± std).
    GroupLoss,
    /// The concatenated seeds.
    Ensemble,
    /// A released checkpoint (the authors'), evaluated as it is: no training.
    Released,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Untrained => "pretrained, untrained",
            Method::Softmax => "softmax fine-tuning",
            Method::GroupLoss => "Group Loss",
            Method::Ensemble => "Group Loss ensemble",
            Method::Released => "authors' released model",
        }
    }
}

/// A released checkpoint's run (made by `gl embed RUN --weights W --dataset D`, never trained).
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedRow {
    pub run_id: String,
    /// The `gl weights` entry.
    pub weights: String,
}

/// One metric of one evaluated subject, in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub method: Method,
    pub subject: String,
    pub metric: String,
    pub value: f64,
}

/// Everything the report shows of one dataset.
#[derive(Debug, Clone, Default)]
pub struct DatasetData {
    pub name: String,
    /// The extracted dataset (`datasets.root`), for the gallery's images.
    pub root: Option<PathBuf>,
    pub group_loss: Vec<RunRow>,
    pub softmax: Vec<RunRow>,
    pub ensemble: Option<String>,
    /// The run (Group Loss, else softmax) whose initial weights were evaluated as the untrained
    /// baseline.
    pub untrained: Option<String>,
    /// The released checkpoint evaluated on this dataset (the profile's `[released]`).
    pub released: Option<ReleasedRow>,
    /// Test metrics of every subject.
    pub metrics: Vec<MetricRow>,
    pub epochs: Vec<EpochRow>,
    /// Test embeddings by (subject, model).
    pub embeddings: BTreeMap<(String, String), EmbeddingsRow>,
    /// `image_id` → path relative to `root`.
    pub images: BTreeMap<i64, String>,
    /// With a sweep: every point's runs and metrics. The fields above then hold only the point
    /// selected on validation (its runs, metrics, ensemble and curves).
    pub sweep: Option<sweep::SweepData>,
}

impl DatasetData {
    /// The run whose embeddings the projection and the gallery show: the one whose untrained
    /// network was evaluated too, else the lowest seed.
    pub fn first_run(&self) -> Option<&RunRow> {
        let base = self.untrained.as_ref();
        self.group_loss
            .iter()
            .find(|r| Some(&r.run_id) == base)
            .or(self.group_loss.first())
    }

    /// The untrained network's test embeddings.
    pub fn untrained_embeddings(&self) -> Option<&EmbeddingsRow> {
        let run = self.untrained.clone()?;
        self.embeddings.get(&(run, "untrained".to_string()))
    }

    /// K of the Recall@K columns, ascending.
    pub fn recall_ks(&self) -> Vec<u32> {
        let mut ks: Vec<u32> = self
            .metrics
            .iter()
            .filter_map(|m| m.metric.strip_prefix("recall@")?.parse().ok())
            .collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    }
}

/// A profile's report input.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub profile: String,
    pub description: String,
    pub datasets: Vec<DatasetData>,
}

/// The latest record of one (stage, task) of a profile.
struct TaskRow {
    stage: String,
    task: String,
    succeeded: bool,
    argv: Vec<String>,
}

/// The latest task record of each (stage, task) of `profile`, only the tasks of its plan as
/// last run when the catalogue knows them (`plan`).
fn tasks(cat: &Catalog, profile: &str, plan: Option<&[String]>) -> Result<Vec<TaskRow>> {
    let mut stmt = cat.connection().prepare(
        "SELECT stage, task, status = 'succeeded', CAST(argv AS VARCHAR) FROM pipeline_tasks \
         WHERE profile = ? \
         QUALIFY row_number() OVER (PARTITION BY stage, task ORDER BY id DESC) = 1 \
         ORDER BY stage, task",
    )?;
    let rows = stmt.query_map(params![profile], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (stage, task, ok, argv) = row?;
        if plan.is_some_and(|p| !p.contains(&format!("{stage}:{task}"))) {
            continue;
        }
        let argv: Vec<String> = serde_json::from_str(&argv)
            .with_context(|| format!("pipeline_tasks {stage}:{task}: argv is not a list"))?;
        out.push(TaskRow {
            stage,
            task,
            succeeded: ok,
            argv,
        });
    }
    Ok(out)
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .map(String::as_str)
}

/// What the report needs of a profile's row in `pipeline_profiles`.
struct ProfileRow {
    datasets: Vec<String>,
    description: String,
    /// The swept recipe keys, in key order (with a benchmark: every objective's and
    /// `objective`).
    sweep: Vec<String>,
    /// The benchmark's objectives and their grids (empty without one).
    benchmark: crate::pipeline::sweep::Benchmark,
    /// The ablation's objectives and their changes (empty without one).
    ablation: crate::pipeline::sweep::Ablation,
    /// The plan's task ids as last run (absent in catalogues written before they were kept).
    tasks: Option<Vec<String>>,
    /// A benchmark tuned in two stages: its tuning and reported seeds.
    two_stage: Option<sweep::TwoStage>,
}

/// The profile as last run, from `pipeline_profiles`.
fn profile_config(cat: &Catalog, profile: &str) -> Result<ProfileRow> {
    // A catalogue opened read-only is not migrated: before version 7 it has no `tasks`.
    let tasks = match cat.schema_version() >= 7 {
        true => "CAST(tasks AS VARCHAR)",
        false => "NULL",
    };
    let mut stmt = cat.connection().prepare(&format!(
        "SELECT CAST(config AS VARCHAR), {tasks} FROM pipeline_profiles WHERE name = ?"
    ))?;
    let mut rows = stmt.query_map(params![profile], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let Some((cfg, tasks)) = rows.next().transpose()? else {
        bail!("the catalogue has no profile {profile:?}: run `gl run --profile {profile}` first");
    };
    let v: serde_json::Value = serde_json::from_str(&cfg)?;
    let datasets = v["datasets"]
        .as_array()
        .with_context(|| format!("pipeline_profiles {profile:?}: no datasets list"))?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    let grid: crate::pipeline::sweep::SweepGrid = match v.get("sweep") {
        Some(g) => serde_json::from_value(g.clone())
            .with_context(|| format!("pipeline_profiles {profile:?}: sweep"))?,
        None => Default::default(),
    };
    let benchmark: crate::pipeline::sweep::Benchmark = match v.get("benchmark") {
        Some(b) => serde_json::from_value(b.clone())
            .with_context(|| format!("pipeline_profiles {profile:?}: benchmark"))?,
        None => Default::default(),
    };
    let tracked = v
        .get("tracks")
        .and_then(|t| t.as_array())
        .is_some_and(|t| !t.is_empty());
    let ablation: crate::pipeline::sweep::Ablation = match v.get("ablation") {
        Some(b) => serde_json::from_value(b.clone())
            .with_context(|| format!("pipeline_profiles {profile:?}: ablation"))?,
        None => Default::default(),
    };
    let sweep = crate::pipeline::sweep::swept_keys(&grid, &benchmark, &ablation, tracked);
    let tasks = tasks
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .with_context(|| format!("pipeline_profiles {profile:?}: tasks is not a list"))?;
    let seeds = |key: &str| -> Vec<u64> {
        v.get(key)
            .and_then(|s| s.as_array())
            .map_or(Vec::new(), |s| {
                s.iter().filter_map(|x| x.as_u64()).collect()
            })
    };
    let tuning = seeds("tuning_seeds");
    let two_stage = (!tuning.is_empty()).then(|| sweep::TwoStage {
        tuning,
        reported: seeds("seeds"),
    });
    Ok(ProfileRow {
        datasets,
        description: v["description"].as_str().unwrap_or("").to_string(),
        sweep,
        benchmark,
        ablation,
        tasks,
        two_stage,
    })
}

/// A run's row, with its values of the `sweep` keys read from its resolved config.
fn run_row(
    cat: &Catalog,
    run_id: &str,
    sweep: &[String],
    benchmark: bool,
) -> Result<Option<(String, RunRow)>> {
    let mut stmt = cat.connection().prepare(
        "SELECT dataset, seed, epochs_done, selected_epoch, test_r1_last, test_r1_val_selected, \
         test_r1_best_on_test, CAST(config AS VARCHAR) FROM runs WHERE run_id = ?",
    )?;
    let mut rows = stmt.query_map(params![run_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            RunRow {
                run_id: run_id.to_string(),
                seed: r.get(1)?,
                epochs_done: r.get(2)?,
                selected_epoch: r.get(3)?,
                r1_last: r.get(4)?,
                r1_val_selected: r.get(5)?,
                r1_best_on_test: r.get(6)?,
                point: Vec::new(),
                val_map_r: None,
            },
            r.get::<_, String>(7)?,
        ))
    })?;
    let Some((dataset, mut row, config)) = rows.next().transpose()? else {
        return Ok(None);
    };
    if !sweep.is_empty() {
        let config: serde_json::Value = serde_json::from_str(&config)
            .with_context(|| format!("runs {run_id}: config is not JSON"))?;
        for k in sweep {
            // A benchmark's grids differ by objective: a key another objective tunes is absent
            // from this run's config while unset (null, shown as "—").
            let v = match (config.get(k), benchmark) {
                (Some(v), _) => v.clone(),
                (None, true) => serde_json::Value::Null,
                (None, false) => {
                    bail!("runs {run_id}: its config has no key {k:?}, which the profile sweeps")
                }
            };
            row.point.push(v);
        }
    }
    let mut stmt = cat.connection().prepare(
        "SELECT value FROM metrics WHERE subject = ? AND model = 'selected' AND split = 'val' \
         AND metric = 'map@r'",
    )?;
    row.val_map_r = stmt
        .query_map(params![run_id], |r| r.get::<_, f64>(0))?
        .next()
        .transpose()?
        .map(|v| 100.0 * v);
    Ok(Some((dataset, row)))
}

fn metrics(cat: &Catalog, subject: &str, model: &str, method: Method) -> Result<Vec<MetricRow>> {
    let mut stmt = cat.connection().prepare(
        "SELECT metric, value FROM metrics WHERE subject = ? AND model = ? AND split = 'test' \
         ORDER BY metric",
    )?;
    let rows = stmt.query_map(params![subject, model], |r| {
        Ok(MetricRow {
            method,
            subject: subject.to_string(),
            metric: r.get(0)?,
            value: 100.0 * r.get::<_, f64>(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn epochs(cat: &Catalog, run_id: &str) -> Result<Vec<EpochRow>> {
    let mut stmt = cat.connection().prepare(
        "SELECT epoch, loss, val_r1, test_r1 FROM epochs WHERE run_id = ? ORDER BY epoch",
    )?;
    let rows = stmt.query_map(params![run_id], |r| {
        Ok(EpochRow {
            run_id: run_id.to_string(),
            epoch: r.get(0)?,
            loss: r.get(1)?,
            val_r1: r.get(2)?,
            test_r1: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn embeddings(cat: &Catalog, subject: &str, model: &str) -> Result<Option<EmbeddingsRow>> {
    let mut stmt = cat.connection().prepare(
        "SELECT path, sha256 FROM embeddings WHERE subject = ? AND model = ? AND split = 'test'",
    )?;
    let mut rows = stmt.query_map(params![subject, model], |r| {
        Ok(EmbeddingsRow {
            path: PathBuf::from(r.get::<_, String>(0)?),
            sha256: r.get(1)?,
        })
    })?;
    Ok(rows.next().transpose()?)
}

fn dataset_root(cat: &Catalog, dataset: &str) -> Result<Option<PathBuf>> {
    let mut stmt = cat
        .connection()
        .prepare("SELECT root FROM datasets WHERE name = ?")?;
    let mut rows = stmt.query_map(params![dataset], |r| r.get::<_, String>(0))?;
    Ok(rows.next().transpose()?.map(PathBuf::from))
}

fn test_images(cat: &Catalog, dataset: &str) -> Result<BTreeMap<i64, String>> {
    let mut stmt = cat.connection().prepare(
        "SELECT image_id, rel_path FROM images WHERE dataset = ? AND split = 'test' ORDER BY image_id",
    )?;
    let rows = stmt.query_map(params![dataset], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Reads what the report of `profile` shows. Tasks whose latest run failed are left out (the
/// report says which); a profile with nothing evaluated is an error.
pub fn load(cat: &Catalog, profile: &str) -> Result<(ReportData, Vec<String>)> {
    let prof = profile_config(cat, profile)?;
    let tasks = tasks(cat, profile, prof.tasks.as_deref())?;
    let failed: Vec<String> = tasks
        .iter()
        .filter(|t| !t.succeeded)
        .map(|t| format!("{}:{}", t.stage, t.task))
        .collect();
    fn ok<'a>(tasks: &'a [TaskRow], stage: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        tasks
            .iter()
            .filter(move |t| t.succeeded && t.stage == stage)
            .map(|t| t.argv.as_slice())
    }
    let mut by_name: BTreeMap<String, DatasetData> = prof
        .datasets
        .iter()
        .map(|n| {
            let d = DatasetData {
                name: n.clone(),
                ..Default::default()
            };
            (n.clone(), d)
        })
        .collect();
    for (stage, method) in [("train", Method::GroupLoss), ("finetune", Method::Softmax)] {
        for argv in ok(&tasks, stage) {
            let id = flag(argv, "--run-id").context("a training task without --run-id")?;
            let sweep = match method {
                Method::GroupLoss => prof.sweep.as_slice(),
                _ => &[],
            };
            let Some((dataset, row)) = run_row(
                cat,
                id,
                sweep,
                !prof.benchmark.is_empty() || !prof.ablation.is_empty(),
            )?
            else {
                continue;
            };
            let Some(d) = by_name.get_mut(&dataset) else {
                continue;
            };
            match method {
                Method::GroupLoss => d.group_loss.push(row),
                _ => d.softmax.push(row),
            }
        }
    }
    // Each dataset's ensembles (one per sweep point), by the runs they concatenate.
    let mut ensembles: BTreeMap<String, Vec<(String, &[String])>> = BTreeMap::new();
    for argv in ok(&tasks, "ensemble") {
        let name = flag(argv, "--name").context("an ensemble task without --name")?;
        for d in by_name.values() {
            if d.group_loss.iter().any(|r| argv.contains(&r.run_id)) {
                ensembles
                    .entry(d.name.clone())
                    .or_default()
                    .push((name.to_string(), argv));
            }
        }
    }
    let untrained: Vec<String> = ok(&tasks, "evaluate")
        .filter(|a| flag(a, "--model") == Some("untrained"))
        .filter_map(|a| a.get(1).cloned())
        .collect();
    // Released checkpoints: the runs their embed tasks created, by dataset, when evaluated.
    let mut released: BTreeMap<String, ReleasedRow> = BTreeMap::new();
    for argv in ok(&tasks, "embed") {
        let (Some(run), Some(dataset), Some(weights)) = (
            argv.get(1),
            flag(argv, "--dataset"),
            flag(argv, "--weights"),
        ) else {
            continue;
        };
        if untrained.contains(run) {
            let row = ReleasedRow {
                run_id: run.clone(),
                weights: weights.to_string(),
            };
            released.insert(dataset.to_string(), row);
        }
    }
    for d in by_name.values_mut() {
        d.group_loss.sort_by_key(|r| r.seed);
        d.softmax.sort_by_key(|r| r.seed);
        let runs: Vec<(String, Method)> = d
            .group_loss
            .iter()
            .map(|r| (r.run_id.clone(), Method::GroupLoss))
            .chain(
                d.softmax
                    .iter()
                    .map(|r| (r.run_id.clone(), Method::Softmax)),
            )
            .collect();
        for (run, method) in &runs {
            d.metrics.extend(metrics(cat, run, "selected", *method)?);
            d.epochs.extend(epochs(cat, run)?);
        }
        d.untrained = d
            .group_loss
            .iter()
            .chain(&d.softmax)
            .find(|r| untrained.contains(&r.run_id))
            .map(|r| r.run_id.clone());
        if let Some(base) = d.untrained.clone() {
            d.metrics
                .extend(metrics(cat, &base, "untrained", Method::Untrained)?);
        }
        d.released = released.remove(&d.name);
        if let Some(r) = &d.released {
            d.metrics
                .extend(metrics(cat, &r.run_id, "untrained", Method::Released)?);
        }
        let mine = ensembles.remove(&d.name).unwrap_or_default();
        for (name, _) in &mine {
            d.metrics
                .extend(metrics(cat, name, "selected", Method::Ensemble)?);
        }
        if prof.sweep.is_empty() {
            d.ensemble = mine.last().map(|e| e.0.clone());
        } else {
            let tuned = prof
                .benchmark
                .iter()
                .map(|(o, e)| (o.clone(), e.grid.keys().cloned().collect()))
                .collect();
            sweep::select_two_stage(d, &prof.sweep, tuned, &mine, prof.two_stage.as_ref());
            if let Some(t) = &prof.two_stage {
                sweep::check_two_stage(d, t)?;
            }
            if let Some(s) = d.sweep.as_mut() {
                s.ablation = !prof.ablation.is_empty();
            }
        }
        if let Some(first) = d.first_run().map(|r| r.run_id.clone()) {
            if let Some(e) = embeddings(cat, &first, "selected")? {
                d.embeddings.insert((first.clone(), "selected".into()), e);
            }
        }
        if let Some(base) = d.untrained.clone() {
            if let Some(e) = embeddings(cat, &base, "untrained")? {
                d.embeddings.insert((base, "untrained".into()), e);
            }
        }
        d.root = dataset_root(cat, &d.name)?;
        d.images = test_images(cat, &d.name)?;
    }
    let datasets: Vec<DatasetData> = prof
        .datasets
        .iter()
        .filter_map(|n| by_name.remove(n))
        .filter(|d| !d.metrics.is_empty())
        .collect();
    if datasets.is_empty() {
        bail!("profile {profile:?} has no evaluated runs in the catalogue: run `gl run --profile {profile}`");
    }
    Ok((
        ReportData {
            profile: profile.to_string(),
            description: prof.description,
            datasets,
        },
        failed,
    ))
}
