//! `gl run`: every task of the plan in dependency order — skipped when fresh, run through the
//! executor when not (or when forced), left alone when something it needs is not fresh — and
//! each run recorded in the catalogue after it ends. The catalogue is opened only to read the
//! last records and to write one, so the tasks themselves (which index their own outputs) can
//! open it in between.

use crate::catalog::pipeline::{latest, record_profile, record_task, LatestRecord, TaskRecord};
use crate::catalog::Catalog;
use crate::pipeline::dag::{Plan, Task};
use crate::pipeline::executor::Executor;
use crate::pipeline::lock::DataLock;
use crate::pipeline::state::{digest_outputs, output_files, task_state, Status, TaskState};
use crate::project::Project;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// What `gl run` was asked.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only this stage's tasks.
    pub stage: Option<String>,
    /// Run tasks even when fresh.
    pub force: bool,
    /// Say what would run, run nothing.
    pub dry_run: bool,
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
    /// Not run: a task it needs is not fresh.
    Blocked {
        upstream: String,
    },
    /// Not selected (`gl run <other stage>`).
    NotSelected,
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

/// `<data>/pipeline/logs/<stage>/<task>.log`.
pub fn log_path(project: &Project, t: &Task) -> PathBuf {
    project
        .data_dir
        .join("pipeline/logs")
        .join(&t.stage)
        .join(format!("{}.log", t.key.replace('/', "_")))
}

/// Runs the plan; `report` gets one line per task as it is decided. Returns each task's action.
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
    let latest = load_latest(project)?;
    if !opts.dry_run {
        let mut cat = Catalog::open_waiting(project.catalog_path(), false)?;
        record_profile(
            &mut cat,
            &plan.profile.name,
            &serde_json::to_value(&plan.profile)?,
        )?;
    }
    let mut states: Vec<TaskState> = Vec::with_capacity(plan.tasks.len());
    let mut actions = Vec::with_capacity(plan.tasks.len());
    for (i, t) in plan.tasks.iter().enumerate() {
        let records = latest.get(&(t.stage.clone(), t.key.clone()));
        let records = records.map_or(&[][..], Vec::as_slice);
        let mut st = task_state(project, plan, i, &states, records)?;
        let selected = opts.stage.as_ref().is_none_or(|s| *s == t.stage);
        let blocked = t.deps.iter().find(|&&d| {
            states[d].status != Status::Fresh && !matches!(actions[d], Action::WouldRun(_))
        });
        let action = if !selected {
            Action::NotSelected
        } else if st.status == Status::Fresh && !opts.force {
            Action::Fresh
        } else if let Some(&d) = blocked {
            Action::Blocked {
                upstream: plan.tasks[d].id(),
            }
        } else if opts.dry_run {
            Action::WouldRun(st.status)
        } else {
            if st.status == Status::Stale || opts.force {
                supersede(project, t)?;
            }
            let (action, new_state) = run_one(project, plan, exec, t, &st)?;
            st = new_state;
            action
        };
        report(t, &action);
        states.push(st);
        actions.push(action);
    }
    Ok(actions)
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
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
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

/// Runs one task and records it; returns its action and new state.
fn run_one(
    project: &Project,
    plan: &Plan,
    exec: &dyn Executor,
    t: &Task,
    st: &TaskState,
) -> Result<(Action, TaskState)> {
    let log = log_path(project, t);
    let started = SystemTime::now();
    let clock = Instant::now();
    let result = exec.run(t, &log).and_then(|()| {
        let files = output_files(project, t)?.with_context(|| {
            format!(
                "{} succeeded but did not write its outputs {:?}",
                t.id(),
                t.outputs
            )
        })?;
        digest_outputs(&files)
    });
    let seconds = clock.elapsed().as_secs_f64();
    let (outputs, digest, error) = match result {
        Ok((o, d)) => (Some(o), Some(d), None),
        Err(e) => (None, None, Some(format!("{e:#}"))),
    };
    let rec = TaskRecord {
        profile: plan.profile.name.clone(),
        stage: t.stage.clone(),
        task: t.key.clone(),
        fingerprint: st.fingerprint.clone(),
        succeeded: error.is_none(),
        started_at: started,
        seconds,
        executor: exec.name().to_string(),
        argv: serde_json::to_value(&t.argv)?,
        config: t.config.clone(),
        outputs,
        digest: digest.clone(),
        log: Some(log.display().to_string()),
        error: error.clone(),
    };
    let mut cat = Catalog::open_waiting(project.catalog_path(), false)?;
    record_task(&mut cat, &rec)?;
    let status = match error {
        None => Status::Fresh,
        Some(_) => Status::Failed,
    };
    let new = TaskState {
        status,
        fingerprint: st.fingerprint.clone(),
        digest,
        last: None,
    };
    Ok(match error {
        None => (Action::Ran { seconds }, new),
        Some(error) => (Action::Failed { error }, new),
    })
}
