//! `gl run` and `gl status`: resolve the profile and the DAG into a plan, then run it with the
//! local executor, or show each task's state.

use crate::cli::{CancelArgs, Format, ProfileArgs, RunArgs, StatusArgs};
use crate::pipeline::dag::{Plan, Stages};
use crate::pipeline::executor::{Executor, Local};
use crate::pipeline::gpus::Gpus;
use crate::pipeline::profile::Profile;
use crate::pipeline::progress::{Live, Mode};
use crate::pipeline::runner::{self, Action, RunOptions};
use crate::pipeline::slurm::{self, Slurm};
use crate::pipeline::state::{states, Status};
use crate::pipeline::task::Task;
use crate::project::Project;
use anyhow::{bail, Result};
use std::process::ExitCode;
use std::sync::Arc;

/// The plan of a profile; `threads` and `jobs` from the command line win over the profile's
/// (each task's thread count is part of its arguments, and of a CPU run's identity).
pub fn plan(
    project: &Project,
    args: &ProfileArgs,
    threads: Option<i32>,
    jobs: Option<usize>,
) -> Result<Plan> {
    let mut profile = Profile::resolve(&project.root, &args.profile, &args.overrides)?;
    profile.threads = threads.or(profile.threads);
    profile.jobs = jobs.unwrap_or(profile.jobs);
    anyhow::ensure!(profile.jobs >= 1, "--jobs must be ≥ 1");
    let stages = Stages::load(&project.root)?;
    Plan::build(project, stages, profile)
}

fn line(t: &Task, what: &str) -> String {
    format!("{:<9} {:<40} {what}", t.stage, t.key)
}

pub fn run(args: RunArgs, project: Project, threads: Option<i32>) -> Result<ExitCode> {
    let global = vec![
        "--project-dir".to_string(),
        project.root.display().to_string(),
        "--data-dir".to_string(),
        project.data_dir.display().to_string(),
    ];
    fetch_unpinned(&project, &args, &global)?;
    let mut plan = plan(&project, &args.profile, threads, args.jobs)?;
    // `--force` is for the tasks of the first plan: a later one only adds tasks to it.
    let mut force = args.force;
    loop {
        let code = run_plan(&args, force, &project, &global, &plan)?;
        force = false;
        let waiting = plan.waiting();
        if code != ExitCode::SUCCESS || waiting.is_empty() {
            return Ok(code);
        }
        // A benchmark tuned in two stages: the tuning runs that ran may have settled choices,
        // whose seeds the next plan has (both executors return once their tasks ended).
        let next = match args.dry_run {
            true => None,
            false => Some(self::plan(&project, &args.profile, threads, args.jobs)?),
        };
        match next {
            Some(next) if next.waiting() != waiting => plan = next,
            _ => {
                println!("\ntuning choices that wait for their runs:");
                for line in &waiting {
                    println!("  {line}");
                }
                if !args.dry_run {
                    println!(
                        "(`gl run --profile {}` plans their seeds once the tuning runs are \
                         evaluated)",
                        plan.profile.name
                    );
                }
                return Ok(code);
            }
        }
    }
}

/// Runs one plan (or, with `--dry-run`, says what would run); `force` runs fresh tasks too.
fn run_plan(
    args: &RunArgs,
    force: bool,
    project: &Project,
    global: &[String],
    plan: &Plan,
) -> Result<ExitCode> {
    let jobs = plan.profile.jobs;
    // Tasks at once share the CPUs: each computing task's --threads, --kernels and --device
    // are in its own arguments (Profile::compute_args), so they are part of its fingerprint.
    let mut local = Local::current(global.to_vec(), runner::logs_dir(project))?;
    local.jobs = jobs;
    let live = (!args.dry_run).then(|| Arc::new(Live::new(Mode::for_stderr(), jobs)));
    local.live = live.clone();
    if !args.dry_run {
        local.gpus = gpus(&plan.profile)?;
    }
    let executor = args
        .executor
        .clone()
        .unwrap_or(plan.profile.executor.clone());
    let exec: Box<dyn Executor> = match executor.as_str() {
        "local" => Box::new(local),
        "slurm" => {
            if !args.dry_run {
                slurm::check_available()?;
            }
            Box::new(Slurm {
                local,
                cfg: plan.profile.slurm.clone(),
                dir: slurm::state_dir(&project.data_dir, &plan.profile.name),
                profile: plan.profile.name.clone(),
            })
        }
        other => bail!("--executor {other:?} is not known (local, slurm)"),
    };
    let opts = RunOptions {
        stage: args.stage.clone(),
        force,
        dry_run: args.dry_run,
        matching: args.matching.clone(),
        live: live.clone(),
    };
    crate::interrupt::install();
    let mut stopped: Vec<String> = Vec::new();
    let actions = runner::run(project, plan, exec.as_ref(), &opts, &mut |t, a| {
        let what = match a {
            Action::Resumes { note } => format!("resumes {note}"),
            Action::Blocked { upstream } if upstream.starts_with("stopped by") => {
                stopped.push(t.id());
                format!("STOPPED: {upstream}")
            }
            Action::Fresh => "fresh".to_string(),
            Action::WouldRun(s) => format!("would run ({})", s.as_str()),
            Action::Ran { seconds } => format!("ran in {seconds:.1} s"),
            Action::Failed { error } => format!("FAILED: {error}"),
            Action::Blocked { upstream } => format!("not run: {upstream}"),
            Action::NotSelected => return,
        };
        match &live {
            Some(live) => live.println(&line(t, &what)),
            None => println!("{}", line(t, &what)),
        }
    });
    if let Some(live) = &live {
        live.finish();
    }
    if args.dry_run {
        print_sources(project, plan)?;
    }
    let actions = match actions {
        Ok(a) => a,
        Err(e) => return interrupted(e, &stopped, &plan.profile.name),
    };
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

/// Fetches, before planning, each dataset of the profile whose content is not pinned yet: a
/// run id names its data by the pinned content digest, which only a fetch can pin. A dry run
/// fetches nothing and says which ids are provisional.
fn fetch_unpinned(project: &Project, args: &RunArgs, global: &[String]) -> Result<()> {
    let profile = Profile::resolve(
        &project.root,
        &args.profile.profile,
        &args.profile.overrides,
    )?;
    for d in &profile.datasets {
        if crate::data::content::planned(&project.root, &project.data_dir, d)?
            != crate::data::content::UNPINNED
        {
            continue;
        }
        if args.dry_run {
            eprintln!(
                "note: `{d}` has no content pin in pipeline/datasets.lock yet, so the run ids \
                 below are provisional; `gl fetch {d}` pins it (a real `gl run` fetches it first)"
            );
            continue;
        }
        eprintln!("fetching `{d}` first: run ids name a dataset by its pinned content");
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(global)
            .args(["fetch", d, "--quiet"])
            .status()?;
        if !status.success() {
            bail!("`gl fetch {d}` failed ({status}); the profile's runs need its content pinned");
        }
    }
    Ok(())
}

/// In a dry run, after the tasks: the sources each fetch task will try, in order.
fn print_sources(project: &Project, plan: &Plan) -> Result<()> {
    let datasets: Vec<&str> = plan
        .tasks
        .iter()
        .filter(|t| t.stage == "fetch")
        .map(|t| t.key.as_str())
        .collect();
    if datasets.is_empty() {
        return Ok(());
    }
    let registry = crate::data::registry::Registry::load(&project.root, &project.data_dir)?;
    println!("\nsources each fetch tries, in order:");
    for d in datasets {
        for line in crate::data::sources::listing(&registry, d) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// The GPUs the local tasks are spread over: `GL_GPUS` or the devices libtorch sees (asked only
/// when it matters: several jobs or a `gpus` key), narrowed to the profile's `gpus`.
fn gpus(profile: &Profile) -> Result<Gpus> {
    let env = std::env::var(crate::env_vars::GPUS).ok();
    let gpus = crate::pipeline::gpus::resolve(
        env.as_deref(),
        || tch::Cuda::device_count().max(0) as usize,
        profile.gpus.as_deref(),
        profile.tasks_per_gpu,
        profile.jobs,
    )?;
    if !gpus.devices.is_empty() {
        tracing::info!(
            "local tasks spread over GPUs {:?}, {} task(s) per GPU",
            gpus.devices,
            gpus.per_device
        );
    }
    Ok(gpus)
}

/// `gl run` stopped by SIGTERM/SIGINT: says which tasks it stopped (their runs read
/// `interrupted`) and how to resume them, and exits as a shell would (128 + signal). Any other
/// error is returned as it is.
fn interrupted(e: anyhow::Error, stopped: &[String], profile: &str) -> Result<ExitCode> {
    let Some(sig) = crate::interrupt::of(&e) else {
        return Err(e);
    };
    let what = match stopped.len() {
        0 => "no task stopped".to_string(),
        n => format!("stopped {n} task(s): {}", stopped.join(", ")),
    };
    eprintln!(
        "gl run stopped by {}: {what}; `gl run --profile {profile}` resumes",
        sig.name()
    );
    Ok(ExitCode::from(sig.exit_code()))
}

pub fn status(args: StatusArgs, project: Project, threads: Option<i32>) -> Result<ExitCode> {
    let plan = plan(&project, &args.profile, threads, None)?;
    let latest = runner::load_latest(&project)?;
    let st = states(&project, &plan, &latest)?;
    let queued = slurm_states(&project, &plan.profile.name)?;
    let shown = |t: &Task, s: Status| -> String {
        queued
            .get(&t.id())
            .cloned()
            .unwrap_or_else(|| s.as_str().to_string())
    };
    match args.format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = plan
                .tasks
                .iter()
                .zip(&st)
                .map(|(t, s)| {
                    serde_json::json!({
                        "stage": t.stage, "task": t.key, "status": shown(t, s.status),
                        "seconds": s.last.as_ref().map(|r| r.seconds),
                        "finished_at": s.last.as_ref().map(|r| r.finished_at.clone()),
                        "run_dir": t.run_dir,
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
                println!("{}", line(t, &format!("{:<8} {when}", shown(t, s.status))));
            }
            let count = |w: Status| st.iter().filter(|s| s.status == w).count();
            println!(
                "{} fresh, {} stale, {} missing, {} failed",
                count(Status::Fresh),
                count(Status::Stale),
                count(Status::Missing),
                count(Status::Failed)
            );
            for line in plan.waiting() {
                println!("waiting: {line}");
            }
            print_environments(&project, &plan)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The environments the profile's existing runs were started in (`environment.json` of each
/// run directory), one line each, with a warning when they mix several.
fn print_environments(project: &Project, plan: &Plan) -> Result<()> {
    use crate::numerics::environment::{group, Environment};
    use crate::train::run_dir::RunDir;
    let mut found = Vec::new();
    for t in &plan.tasks {
        let Some(dir) = &t.run_dir else { continue };
        let run = RunDir::new(project.data_dir.join(dir));
        if run.environment_path().exists() {
            let env: Environment = RunDir::read_json(&run.environment_path())?;
            found.push((t.key.clone(), env));
        }
    }
    let groups = group(found);
    if groups.len() > 1 {
        println!(
            "warning: the profile's runs were made in {} environments whose numbers can differ",
            groups.len()
        );
    }
    for g in &groups {
        let commits: Vec<&str> = g.commits.iter().map(String::as_str).collect();
        println!(
            "environment of {} run(s): {}; code: {}",
            g.runs.len(),
            g.env.summary(),
            commits.join(", ")
        );
    }
    Ok(())
}

/// Task id → `queued` / `running` for the profile's Slurm jobs still in the queue (empty when it
/// submitted none, or Slurm is not reachable: then nothing is queued that we could show).
fn slurm_states(
    project: &Project,
    profile: &str,
) -> Result<std::collections::HashMap<String, String>> {
    let jobs = slurm::load_jobs(&slurm::state_dir(&project.data_dir, profile))?;
    if jobs.is_empty() {
        return Ok(Default::default());
    }
    let q = match slurm::queue() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!("Slurm jobs not shown: {e:#}");
            return Ok(Default::default());
        }
    };
    Ok(jobs
        .iter()
        .filter_map(|e| {
            let state = q.get(&(e.job.clone(), e.index))?;
            let shown = if state == "RUNNING" {
                "running"
            } else {
                "queued"
            };
            Some((e.task.clone(), shown.to_string()))
        })
        .collect())
}

pub fn cancel(args: CancelArgs, project: Project) -> Result<ExitCode> {
    let dir = slurm::state_dir(&project.data_dir, &args.profile);
    let jobs = slurm::load_jobs(&dir)?;
    let ids = slurm::cancel(&jobs)?;
    match ids.is_empty() {
        true => println!("no queued or running job of profile {}", args.profile),
        false => println!("cancelled job(s) {}", ids.join(" ")),
    }
    Ok(ExitCode::SUCCESS)
}
