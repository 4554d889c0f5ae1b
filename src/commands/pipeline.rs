//! `gl run` and `gl status`: resolve the profile and the DAG into a plan, then run it with the
//! local executor, or show each task's state.

use crate::cli::{Format, ProfileArgs, RunArgs, StatusArgs};
use crate::pipeline::dag::{Plan, Stages, Task};
use crate::pipeline::executor::Local;
use crate::pipeline::profile::Profile;
use crate::pipeline::runner::{self, Action, RunOptions};
use crate::pipeline::state::{states, Status};
use crate::project::Project;
use anyhow::{bail, Result};
use std::process::ExitCode;

/// The plan of a profile.
pub fn plan(project: &Project, args: &ProfileArgs) -> Result<Plan> {
    let profile = Profile::resolve(&project.root, &args.profile, &args.overrides)?;
    let stages = Stages::load(&project.root)?;
    Plan::build(project, stages, profile)
}

fn line(t: &Task, what: &str) -> String {
    format!("{:<9} {:<40} {what}", t.stage, t.key)
}

pub fn run(args: RunArgs, project: Project, threads: Option<i32>) -> Result<ExitCode> {
    let plan = plan(&project, &args.profile)?;
    let mut global = vec![
        "--project-dir".to_string(),
        project.root.display().to_string(),
        "--data-dir".to_string(),
        project.data_dir.display().to_string(),
    ];
    if let Some(n) = threads {
        global.extend(["--threads".to_string(), n.to_string()]);
    }
    let exec = Local::current(global, runner::logs_dir(&project))?;
    let opts = RunOptions {
        stage: args.stage,
        force: args.force,
        dry_run: args.dry_run,
    };
    let actions = runner::run(&project, &plan, &exec, &opts, &mut |t, a| {
        let what = match a {
            Action::Fresh => "fresh".to_string(),
            Action::WouldRun(s) => format!("would run ({})", s.as_str()),
            Action::Ran { seconds } => format!("ran in {seconds:.1} s"),
            Action::Failed { error } => format!("FAILED: {error}"),
            Action::Blocked { upstream } => format!("not run: {upstream}"),
            Action::NotSelected => return,
        };
        println!("{}", line(t, &what));
    })?;
    let failed = actions
        .iter()
        .filter(|a| matches!(a, Action::Failed { .. }))
        .count();
    let blocked = actions
        .iter()
        .filter(|a| matches!(a, Action::Blocked { .. }))
        .count();
    if failed + blocked > 0 {
        bail!(
            "{failed} task(s) failed, {blocked} not run because a task they need is not fresh \
             (logs in {})",
            project.data_dir.join("pipeline/logs").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs, project: Project) -> Result<ExitCode> {
    let plan = plan(&project, &args.profile)?;
    let latest = runner::load_latest(&project)?;
    let st = states(&project, &plan, &latest)?;
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = plan
                .tasks
                .iter()
                .zip(&st)
                .map(|(t, s)| {
                    serde_json::json!({
                        "stage": t.stage, "task": t.key, "status": s.status,
                        "seconds": s.last.as_ref().map(|r| r.seconds),
                        "finished_at": s.last.as_ref().map(|r| r.finished_at.clone()),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Text => {
            println!("profile {} ({} tasks)", plan.profile.name, plan.tasks.len());
            for (t, s) in plan.tasks.iter().zip(&st) {
                let when = s.last.as_ref().map_or(String::new(), |r| {
                    format!("last run {} ({:.1} s)", r.finished_at, r.seconds)
                });
                println!("{}", line(t, &format!("{:<8} {when}", s.status.as_str())));
            }
            let count = |w: Status| st.iter().filter(|s| s.status == w).count();
            println!(
                "{} fresh, {} stale, {} missing, {} failed",
                count(Status::Fresh),
                count(Status::Stale),
                count(Status::Missing),
                count(Status::Failed)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
