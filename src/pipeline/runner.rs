//! `gl run`: every task of the plan in dependency order — skipped when fresh, run through the
//! executor when not (or when forced), left alone when something it needs is not fresh — and
//! each run recorded in the catalogue after it ends. The catalogue is opened only to read the
//! last records and to write one, so the tasks themselves (which index their own outputs) can
//! open it in between.

use crate::catalog::evaluations::ingest_dir;
use crate::catalog::pipeline::{latest, record_profile, record_task, LatestRecord, TaskRecord};
use crate::catalog::runs::ingest_run_path;
use crate::catalog::Catalog;
use crate::pipeline::dag::Plan;
use crate::pipeline::digest_cache::DigestCache;
use crate::pipeline::executor::{log_path, Ended, Executor, Outcome};
use crate::pipeline::lock::DataLock;
use crate::pipeline::state::{
    digest_outputs, fingerprint, output_files, task_state, Status, TaskState,
};
use crate::pipeline::task::Task;
use crate::project::Project;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

/// What `gl run` was asked.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only this stage's tasks.
    pub stage: Option<String>,
    /// Run tasks even when fresh.
    pub force: bool,
    /// Say what would run, run nothing.
    pub dry_run: bool,
    /// Only the tasks whose key contains this ([`matching`]).
    pub matching: Option<String>,
    /// The live progress line, told of the batch and of every end (`None`: none).
    pub live: Option<std::sync::Arc<crate::pipeline::progress::Live>>,
}

/// Which tasks of `tasks` (in plan order, every task after the tasks it needs) a `--match`
/// selects: those whose key contains `text`, every task they need, and every task that needs
/// only selected tasks and at least one of the matched ones or their followers — a matched
/// run's embed and evaluate, not another run or the report that needs every run.
pub fn matching(tasks: &[Task], text: &str) -> Vec<bool> {
    let n = tasks.len();
    let mut follows: Vec<bool> = tasks.iter().map(|t| t.key.contains(text)).collect();
    let mut selected = follows.clone();
    for i in (0..n).rev() {
        if selected[i] {
            for &d in &tasks[i].deps {
                selected[d] = true;
            }
        }
    }
    for i in 0..n {
        let deps = &tasks[i].deps;
        if !follows[i]
            && !deps.is_empty()
            && deps.iter().all(|&d| selected[d])
            && deps.iter().any(|&d| follows[d])
        {
            follows[i] = true;
            selected[i] = true;
        }
    }
    selected
}

/// What happened to one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Fresh,
    WouldRun(Status),
    Ran {
        seconds: f64,
    },
    Failed {
        error: String,
    },
    /// Not run: a task it needs is not fresh, failed or was cancelled (why, naming it).
    Blocked {
        upstream: String,
    },
    /// Not selected (`gl run <other stage>`).
    NotSelected,
    /// Reported (not kept) before a training task starts that continues a run an earlier
    /// `gl run` left: which run, from which epoch, and how it had ended.
    Resumes {
        note: String,
    },
}

/// The latest records of the catalogue (none when it does not exist yet).
pub fn load_latest(project: &Project) -> Result<HashMap<(String, String), Vec<LatestRecord>>> {
    let path = project.catalog_path();
    if !path.is_file() {
        return Ok(HashMap::new());
    }
    let cat = Catalog::open_waiting(&path, false)?;
    latest(&cat)
}

/// `<data>/pipeline/logs`: where every task's log goes.
pub fn logs_dir(project: &Project) -> PathBuf {
    project.data_dir.join("pipeline/logs")
}

/// Runs the plan: decides every task (fresh, blocked, to run), hands what is to run to the
/// executor as one batch and records each outcome as it comes; `report` gets one line per task.
/// Returns each task's action.
pub fn run(
    project: &Project,
    plan: &Plan,
    exec: &dyn Executor,
    opts: &RunOptions,
    report: &mut dyn FnMut(&Task, &Action),
) -> Result<Vec<Action>> {
    if let Some(s) = &opts.stage {
        if plan.stages.get(s).is_none() {
            bail!(
                "no stage {s:?} (stages: {})",
                plan.stages.names().join(", ")
            );
        }
    }
    let _lock = match opts.dry_run {
        true => None,
        false => Some(DataLock::acquire(&project.data_dir)?),
    };
    let latest = match opts.dry_run {
        true => load_latest(project)?,
        false => {
            let mut cat = Catalog::open_waiting_for(project.catalog_path(), false, PATIENCE)?;
            record_profile(
                &mut cat,
                &plan.profile.name,
                &serde_json::to_value(&plan.profile)?,
                &plan.tasks.iter().map(Task::id).collect::<Vec<_>>(),
            )?;
            latest(&cat)?
        }
    };
    let matched = opts.matching.as_ref().map(|m| matching(&plan.tasks, m));
    let mut cache = DigestCache::load(&project.data_dir);
    let mut states: Vec<TaskState> = Vec::with_capacity(plan.tasks.len());
    let mut actions: Vec<Action> = Vec::with_capacity(plan.tasks.len());
    let mut batch: Vec<usize> = Vec::new();
    for (i, t) in plan.tasks.iter().enumerate() {
        let records = latest.get(&(t.stage.clone(), t.key.clone()));
        let records = records.map_or(&[][..], Vec::as_slice);
        let st = task_state(project, plan, i, &states, records, &mut cache)?;
        let selected = opts.stage.as_ref().is_none_or(|s| *s == t.stage)
            && matched.as_ref().is_none_or(|m| m[i]);
        let blocked = t
            .deps
            .iter()
            .find(|&&d| states[d].status != Status::Fresh && !batch.contains(&d));
        let action = if !selected {
            Action::NotSelected
        } else if st.status == Status::Fresh && !opts.force {
            Action::Fresh
        } else if let Some(&d) = blocked {
            Action::Blocked {
                upstream: format!("{} is not fresh", plan.tasks[d].id()),
            }
        } else {
            if !opts.dry_run && (st.status == Status::Stale || opts.force) {
                supersede(project, t)?;
            }
            if !opts.dry_run {
                if let Some(note) = resuming(project, t) {
                    report(t, &Action::Resumes { note });
                }
            }
            // Also in a dry run: what follows a task that would run would run too, not be
            // reported as blocked.
            batch.push(i);
            Action::WouldRun(st.status)
        };
        if opts.dry_run || !matches!(action, Action::WouldRun(_)) {
            report(t, &action);
        }
        states.push(st);
        actions.push(action);
    }
    if opts.dry_run || batch.is_empty() {
        save_cache(&mut cache);
        return Ok(actions);
    }
    if let Some(live) = &opts.live {
        live.begin(
            batch
                .iter()
                .map(|&i| (i, plan.tasks[i].id(), plan.tasks[i].stage.clone()))
                .collect(),
            &history(&latest),
        );
    }
    let executed = exec.execute(plan, &batch, &mut |i, ended| {
        let t = &plan.tasks[i];
        let (seconds, ran) = (
            ended.seconds,
            !matches!(ended.outcome, Outcome::Cancelled(_)),
        );
        let (action, st) = finish(project, plan, i, &states, ended, &mut cache)?;
        let ok = st.status == Status::Fresh;
        if let Some(live) = &opts.live {
            live.ended(i, seconds, ran, ok);
        }
        report(t, &action);
        states[i] = st;
        actions[i] = action;
        Ok(ok)
    });
    save_cache(&mut cache);
    executed?;
    Ok(actions)
}

/// (stage, seconds) of every succeeded task run the catalogue holds (the latest of each
/// fingerprint): what the progress line's ETA starts from.
fn history(latest: &HashMap<(String, String), Vec<LatestRecord>>) -> Vec<(String, f64)> {
    latest
        .iter()
        .flat_map(|((stage, _), recs)| {
            recs.iter()
                .filter(|r| r.succeeded)
                .map(move |r| (stage.clone(), r.seconds))
        })
        .collect()
}

fn save_cache(cache: &mut DigestCache) {
    if let Err(e) = cache.save() {
        tracing::warn!("output digests not cached: {e:#}");
    }
}

/// Moves a training task's finished run directory to `runs/.superseded/<id>-<unix time>` so
/// that the task trains anew (its upstream changed, or it is forced): `--resume` would find
/// the old run finished. Nothing is deleted. An interrupted run (missing or failed with the
/// same fingerprint) is left in place and resumed.
fn supersede(project: &Project, t: &Task) -> Result<()> {
    let Some(rel) = &t.run_dir else {
        return Ok(());
    };
    let dir = project.data_dir.join(rel);
    if !dir.exists() {
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let now = crate::clock::unix_now();
    let to = project
        .runs_dir()
        .join(".superseded")
        .join(format!("{name}-{now}"));
    std::fs::create_dir_all(to.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", to.display()))?;
    std::fs::rename(&dir, &to)
        .with_context(|| format!("moving {} to {}", dir.display(), to.display()))?;
    tracing::info!("{} superseded: moved to {}", t.id(), to.display());
    Ok(())
}

/// How long the coordinator waits for a catalogue another process holds (a training run
/// indexing an epoch, `gl index-runs`) before it gives up, saying every few seconds that it
/// waits: a record delayed is better than a record lost.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Records how task `i` ended (its fingerprint from the digests its upstream has now), indexes
/// its outputs in the catalogue after a success, and returns its action and new state.
fn finish(
    project: &Project,
    plan: &Plan,
    i: usize,
    states: &[TaskState],
    ended: Ended,
    cache: &mut DigestCache,
) -> Result<(Action, TaskState)> {
    let t = &plan.tasks[i];
    let digests: Vec<Option<String>> = t.deps.iter().map(|&d| states[d].digest.clone()).collect();
    let fp = fingerprint(plan, t, &digests);
    if !matches!(ended.outcome, Outcome::Succeeded) {
        index_stopped_run(project, t);
    }
    let result = match ended.outcome {
        Outcome::Cancelled(why) => {
            let st = TaskState {
                fingerprint: fp,
                digest: None,
                ..states[i].clone()
            };
            return Ok((Action::Blocked { upstream: why }, st));
        }
        Outcome::Failed(e) => Err(anyhow::anyhow!(e)),
        Outcome::Succeeded => output_files(project, t).and_then(|files| {
            let files = files.with_context(|| {
                format!(
                    "{} succeeded but did not write its outputs {:?}",
                    t.id(),
                    t.outputs
                )
            })?;
            // The files are the outputs; the catalogue's rows are derived from them and can be
            // re-derived (`gl index-runs`), so a catalogue that cannot be written now does not
            // undo a task that succeeded.
            if let Err(e) = ingest_outputs(project, t) {
                tracing::warn!(
                    "{}: outputs not indexed in the catalogue (`gl index-runs` indexes them \
                     later): {e:#}",
                    t.id()
                );
            }
            digest_outputs(&files, cache)
        }),
    };
    let (outputs, digest, error) = match result {
        Ok((o, d)) => (Some(o), Some(d), None),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    let rec = TaskRecord {
        profile: plan.profile.name.clone(),
        stage: t.stage.clone(),
        task: t.key.clone(),
        fingerprint: fp.clone(),
        succeeded: error.is_none(),
        started_at: ended.started,
        seconds: ended.seconds,
        executor: ended.executor.to_string(),
        argv: serde_json::to_value(&t.argv)?,
        config: t.config.clone(),
        outputs,
        digest: digest.clone(),
        log: Some(log_path(&logs_dir(project), t).display().to_string()),
        error: error.clone(),
    };
    // A reader or a task holding the catalogue delays the record; it is not dropped.
    let mut cat = Catalog::open_waiting_for(project.catalog_path(), false, PATIENCE)?;
    record_task(&mut cat, &rec)?;
    let new = TaskState {
        status: match error {
            None => Status::Fresh,
            Some(_) => Status::Failed,
        },
        fingerprint: fp,
        digest,
        last: None,
    };
    Ok(match error {
        None => (
            Action::Ran {
                seconds: ended.seconds,
            },
            new,
        ),
        Some(error) => (Action::Failed { error }, new),
    })
}

/// The run an earlier attempt left in training task `t`'s run directory, which it will resume
/// ("run ID after epoch N (it was interrupted)"); `None` when it starts a new run.
fn resuming(project: &Project, t: &Task) -> Option<String> {
    use crate::train::run_dir::{Progress, RunDir};
    let dir = RunDir::new(project.data_dir.join(t.run_dir.as_ref()?));
    if !dir.config_path().is_file() {
        return None;
    }
    let progress = dir.progress().ok()?;
    if progress == Progress::Completed {
        return None;
    }
    let epoch = dir.state().ok().flatten().map_or(0, |s| s.epoch);
    let name = dir.root.file_name()?.to_string_lossy().into_owned();
    Some(format!(
        "run {name} after epoch {epoch} (it was {})",
        progress.as_str()
    ))
}

/// A training task that failed or was stopped: its run's status (`failed`, `interrupted`) is
/// read from its files and indexed now, not at the next `gl index-runs` — the task could not
/// record it itself when it was killed. A catalogue that cannot be written is a warning.
fn index_stopped_run(project: &Project, t: &Task) {
    let Some(rel) = &t.run_dir else { return };
    let dir = project.data_dir.join(rel);
    if !dir.join("config.json").is_file() {
        return;
    }
    if let Err(e) = ingest_run_path(&project.catalog_path(), &dir) {
        tracing::warn!(
            "{}: the run's status is not indexed (`gl index-runs` indexes it later): {e:#}",
            t.id()
        );
    }
}

/// Indexes what task `t` wrote in the catalogue (re-derived whole, so indexing twice is
/// harmless): the coordinator is the catalogue's writer for tasks that ran elsewhere.
fn ingest_outputs(project: &Project, t: &Task) -> Result<()> {
    let catalog = project.catalog_path();
    match t.stage.as_str() {
        "finetune" | "train" => {
            let dir = t
                .run_dir
                .as_ref()
                .context("a training task without a run dir")?;
            ingest_run_path(&catalog, &project.data_dir.join(dir))
        }
        "embed" | "evaluate" => {
            let run = t
                .argv
                .get(1)
                .context("an embed/evaluate task without a run")?;
            ingest_run_path(&catalog, &project.runs_dir().join(run))
        }
        "ensemble" => {
            let name = t.key.as_str();
            let mut cat = Catalog::open_waiting(&catalog, false)?;
            ingest_dir(&mut cat, &project.ensembles_dir().join(name)).map(|_| ())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(key: &str, deps: Vec<usize>) -> Task {
        Task::fixture(key, deps)
    }

    /// prepare → finetune → two trains (one matched) → their embeds → evaluates → report.
    #[test]
    fn a_match_takes_its_tasks_what_they_need_and_what_needs_only_them() {
        let tasks = vec![
            task("demo", vec![]),                            // 0 prepare
            task("demo/s0", vec![0]),                        // 1 finetune
            task("demo/objective=a,start=x/s0", vec![0, 1]), // 2 train, matched
            task("demo/objective=b/s0", vec![0]),            // 3 train
            task("run-a/selected", vec![0, 2]),              // 4 embed of the matched run
            task("run-b/selected", vec![0, 3]),              // 5 embed of the other
            task("run-a/eval", vec![4]),                     // 6 evaluate
            task("profile", vec![4, 5, 6]),                  // 7 report: needs every run
        ];
        let picked: Vec<usize> = matching(&tasks, "objective=a")
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| s.then_some(i))
            .collect();
        assert_eq!(picked, [0, 1, 2, 4, 6]);
        assert!(matching(&tasks, "objective=c").iter().all(|s| !s));
    }
}
