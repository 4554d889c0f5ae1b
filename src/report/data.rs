//! What the report reads, all of it from the catalogue: which runs, baselines and ensembles
//! make up a profile (the latest successful `gl run` task of each key), their metrics, their
//! training curves, and where their test embeddings and images are.

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
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Untrained => "pretrained, untrained",
            Method::Softmax => "softmax fine-tuning",
            Method::GroupLoss => "Group Loss",
            Method::Ensemble => "Group Loss ensemble",
        }
    }
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
    /// The Group Loss run whose initial weights were evaluated as the untrained baseline.
    pub untrained: Option<String>,
    /// Test metrics of every subject.
    pub metrics: Vec<MetricRow>,
    pub epochs: Vec<EpochRow>,
    /// Test embeddings by (subject, model).
    pub embeddings: BTreeMap<(String, String), EmbeddingsRow>,
    /// `image_id` → path relative to `root`.
    pub images: BTreeMap<i64, String>,
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

/// The latest task record of each (stage, task) of `profile`.
fn tasks(cat: &Catalog, profile: &str) -> Result<Vec<TaskRow>> {
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

/// The profile's datasets (in profile order) and description, from `pipeline_profiles`.
fn profile_config(cat: &Catalog, profile: &str) -> Result<(Vec<String>, String)> {
    let mut stmt = cat
        .connection()
        .prepare("SELECT CAST(config AS VARCHAR) FROM pipeline_profiles WHERE name = ?")?;
    let mut rows = stmt.query_map(params![profile], |r| r.get::<_, String>(0))?;
    let Some(cfg) = rows.next().transpose()? else {
        bail!("the catalogue has no profile {profile:?}: run `gl run --profile {profile}` first");
    };
    let v: serde_json::Value = serde_json::from_str(&cfg)?;
    let datasets = v["datasets"]
        .as_array()
        .with_context(|| format!("pipeline_profiles {profile:?}: no datasets list"))?
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    Ok((
        datasets,
        v["description"].as_str().unwrap_or("").to_string(),
    ))
}

fn run_row(cat: &Catalog, run_id: &str) -> Result<Option<(String, RunRow)>> {
    let mut stmt = cat.connection().prepare(
        "SELECT dataset, seed, epochs_done, selected_epoch, test_r1_last, test_r1_val_selected, \
         test_r1_best_on_test FROM runs WHERE run_id = ?",
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
            },
        ))
    })?;
    Ok(rows.next().transpose()?)
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
    let (names, description) = profile_config(cat, profile)?;
    let tasks = tasks(cat, profile)?;
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
    let mut by_name: BTreeMap<String, DatasetData> = names
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
            let Some((dataset, row)) = run_row(cat, id)? else {
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
    for argv in ok(&tasks, "ensemble") {
        let name = flag(argv, "--name").context("an ensemble task without --name")?;
        for d in by_name.values_mut() {
            if d.group_loss.iter().any(|r| argv.contains(&r.run_id)) {
                d.ensemble = Some(name.to_string());
            }
        }
    }
    let untrained: Vec<String> = ok(&tasks, "evaluate")
        .filter(|a| flag(a, "--model") == Some("untrained"))
        .filter_map(|a| a.get(1).cloned())
        .collect();
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
            .find(|r| untrained.contains(&r.run_id))
            .map(|r| r.run_id.clone());
        if let Some(base) = d.untrained.clone() {
            d.metrics
                .extend(metrics(cat, &base, "untrained", Method::Untrained)?);
        }
        if let Some(first) = d.first_run().map(|r| r.run_id.clone()) {
            for model in ["selected", "untrained"] {
                if let Some(e) = embeddings(cat, &first, model)? {
                    d.embeddings.insert((first.clone(), model.to_string()), e);
                }
            }
        }
        if let Some(e) = &d.ensemble {
            d.metrics
                .extend(metrics(cat, e, "selected", Method::Ensemble)?);
        }
        d.root = dataset_root(cat, &d.name)?;
        d.images = test_images(cat, &d.name)?;
    }
    let datasets: Vec<DatasetData> = names
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
            description,
            datasets,
        },
        failed,
    ))
}
