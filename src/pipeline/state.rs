//! Whether each task of a plan is fresh, stale, missing or failed: its fingerprint against the
//! one recorded when it last ran (`pipeline_tasks`), its outputs on disk, and its upstream.

use crate::catalog::pipeline::LatestRecord;
use crate::pipeline::dag::Plan;
use crate::pipeline::digest_cache::DigestCache;
use crate::pipeline::task::{Output, Task};
use crate::project::Project;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran with this fingerprint, succeeded, outputs present, everything upstream fresh.
    Fresh,
    /// Ran before, but its inputs, settings or upstream changed (or an output is gone).
    Stale,
    /// Never ran.
    Missing,
    /// Its last run with this fingerprint failed.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fresh => "fresh",
            Status::Stale => "stale",
            Status::Missing => "missing",
            Status::Failed => "failed",
        }
    }
}

/// The fingerprint of `task` given the output digests of the tasks it needs (`None` for one
/// that never succeeded): sha256 of its stage version, the numerics version its stage depends
/// on, `gl`'s version, command, config slice and those digests.
pub fn fingerprint(plan: &Plan, task: &Task, dep_digests: &[Option<String>]) -> String {
    let decl = plan.stages.get(&task.stage);
    let version = decl.map_or(0, |s| s.version);
    let numerics = decl.map_or(0, |s| s.numerics_version());
    let deps: Vec<(String, &Option<String>)> = task
        .deps
        .iter()
        .zip(dep_digests)
        .map(|(&i, d)| (plan.tasks[i].id(), d))
        .collect();
    let doc = serde_json::json!({
        "task": task.id(),
        "stage_version": version,
        "numerics": numerics,
        "gl": env!("CARGO_PKG_VERSION"),
        "argv": task.argv,
        "config": task.config,
        "upstream": deps,
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

/// The files behind a task's outputs, `None` if one is absent: each as (label, path), the label
/// relative to the data directory (`project:`-prefixed for files of the project root).
pub fn output_files(project: &Project, task: &Task) -> Result<Option<Vec<(String, PathBuf)>>> {
    let mut rels = Vec::new();
    for o in &task.outputs {
        match o {
            Output::File(rel) => rels.push((rel.display().to_string(), project.data_dir.join(rel))),
            Output::Project(rel) => {
                rels.push((format!("project:{}", rel.display()), project.root.join(rel)))
            }
            Output::CropCache { dataset, resize } => {
                match crop_cache_files(project, dataset, *resize)? {
                    Some(files) => rels.extend(
                        files
                            .into_iter()
                            .map(|rel| (rel.display().to_string(), project.data_dir.join(rel))),
                    ),
                    None => return Ok(None),
                }
            }
        }
    }
    Ok(rels.iter().all(|(_, p)| p.is_file()).then_some(rels))
}

/// The manifest of the crop cache of `dataset` at `resize` made from its current fetch, and
/// the data file it names (both hashed, so a damaged cache makes its task stale).
fn crop_cache_files(project: &Project, dataset: &str, resize: u32) -> Result<Option<Vec<PathBuf>>> {
    let dataset = crate::names::Name::new(crate::names::Kind::Dataset, dataset)?;
    let summary = project.dataset_dir(&dataset).join("dataset.json");
    let Ok(bytes) = std::fs::read(&summary) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", summary.display()))?;
    let Some(fp) = v["fingerprint"].as_str() else {
        return Ok(None);
    };
    let params = crate::stages::prepare::PrepareParams {
        resize,
        ..Default::default()
    };
    let key = crate::stages::prepare::cache_key(fp, &params)?;
    let dir = PathBuf::from("cache").join(dataset).join(key);
    let manifest = dir.join("manifest.json");
    let Ok(bytes) = std::fs::read(project.data_dir.join(&manifest)) else {
        return Ok(None);
    };
    let m: crate::stages::prepare::Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", project.data_dir.join(&manifest).display()))?;
    Ok(Some(vec![manifest, dir.join(m.file)]))
}

/// sha256 of each output file (through `cache`: a file unchanged since it was last hashed is
/// not read) and one digest over all of them.
pub fn digest_outputs(
    files: &[(String, PathBuf)],
    cache: &mut DigestCache,
) -> Result<(serde_json::Value, String)> {
    let mut map = serde_json::Map::new();
    let mut all = Sha256::new();
    for (label, path) in files {
        let h = cache.sha256(path)?;
        all.update(label.as_bytes());
        all.update(h.as_bytes());
        map.insert(label.clone(), h.into());
    }
    Ok((serde_json::Value::Object(map), hex::encode(all.finalize())))
}

/// The state of one task.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub status: Status,
    pub fingerprint: String,
    /// Digest of its outputs when it last succeeded with this fingerprint (what downstream
    /// fingerprints include).
    pub digest: Option<String>,
    pub last: Option<LatestRecord>,
}

/// The state of task `i` given the states of the tasks before it and its records (the latest
/// of each fingerprint, newest first): the record of the current fingerprint decides, so going
/// back to an earlier configuration whose outputs are still on disk is fresh again.
pub fn task_state(
    project: &Project,
    plan: &Plan,
    i: usize,
    before: &[TaskState],
    records: &[LatestRecord],
    cache: &mut DigestCache,
) -> Result<TaskState> {
    let t = &plan.tasks[i];
    let digests: Vec<Option<String>> = t.deps.iter().map(|&d| before[d].digest.clone()).collect();
    let fp = fingerprint(plan, t, &digests);
    let upstream_fresh = t.deps.iter().all(|&d| before[d].status == Status::Fresh);
    let last = records
        .iter()
        .find(|r| r.fingerprint == fp)
        .or(records.first());
    let status = match last {
        None => Status::Missing,
        Some(r) if r.fingerprint == fp && !r.succeeded => Status::Failed,
        Some(r)
            if r.fingerprint == fp && upstream_fresh && outputs_match(project, t, r, cache)? =>
        {
            Status::Fresh
        }
        Some(_) => Status::Stale,
    };
    Ok(TaskState {
        digest: match status {
            Status::Fresh => last.and_then(|r| r.digest.clone()),
            _ => None,
        },
        status,
        fingerprint: fp,
        last: last.cloned(),
    })
}

/// The outputs are there and hash to what was recorded.
fn outputs_match(
    project: &Project,
    t: &Task,
    r: &LatestRecord,
    cache: &mut DigestCache,
) -> Result<bool> {
    Ok(match output_files(project, t)? {
        Some(files) => Some(digest_outputs(&files, cache)?.1) == r.digest,
        None => false,
    })
}

/// The state of every task of a plan, in plan order (output digests through the data
/// directory's [`DigestCache`], saved afterwards).
pub fn states(
    project: &Project,
    plan: &Plan,
    latest: &HashMap<(String, String), Vec<LatestRecord>>,
) -> Result<Vec<TaskState>> {
    let mut cache = DigestCache::load(&project.data_dir);
    let out = states_with(project, plan, latest, &mut cache)?;
    if let Err(e) = cache.save() {
        tracing::warn!("output digests not cached: {e:#}");
    }
    Ok(out)
}

/// [`states`] with a given cache (which it does not save).
pub fn states_with(
    project: &Project,
    plan: &Plan,
    latest: &HashMap<(String, String), Vec<LatestRecord>>,
    cache: &mut DigestCache,
) -> Result<Vec<TaskState>> {
    let mut out: Vec<TaskState> = Vec::with_capacity(plan.tasks.len());
    for (i, t) in plan.tasks.iter().enumerate() {
        let records = latest.get(&(t.stage.clone(), t.key.clone()));
        let st = task_state(
            project,
            plan,
            i,
            &out,
            records.map_or(&[][..], Vec::as_slice),
            cache,
        )?;
        out.push(st);
    }
    Ok(out)
}
