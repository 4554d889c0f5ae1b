//! `gl report`: the report of one pipeline profile, from the catalogue (opened read-only) into
//! `reports/<profile>/` — refused while tasks of the profile are stale, missing or failed (the
//! report would show old numbers as current) unless `--allow-stale`, which says so in its footer.

use crate::catalog::Catalog;
use crate::cli::{ProfileArgs, ReportArgs};
use crate::pipeline::runner::load_latest;
use crate::pipeline::state::{states, Status};
use crate::project::Project;
use crate::report::{generate, ReportParams};
use anyhow::{bail, ensure, Result};
use std::process::ExitCode;

/// How many not-fresh tasks an error or warning lists by name (then a count of the rest).
const LISTED: usize = 10;

pub fn run(args: ReportArgs, project: Project, threads: Option<i32>) -> Result<ExitCode> {
    let path = project.catalog_path();
    ensure!(
        path.is_file(),
        "no catalogue at {}: run `gl run --profile {}` first",
        path.display(),
        args.profile
    );
    // A task of `gl run` (its report stage) runs only once the tasks it needs are fresh.
    let stale = match std::env::var_os(crate::env_vars::RUN_TASK) {
        Some(_) => Vec::new(),
        None => not_fresh(&project, &args, threads)?,
    };
    if !stale.is_empty() {
        let what = format!(
            "{} task(s) of profile {} are not fresh: {}",
            stale.len(),
            args.profile,
            listed(&stale)
        );
        if !args.allow_stale {
            bail!(
                "the report would be made from stale results — {what}; run `gl run --profile {}` \
                 first, or pass --allow-stale to make it anyway",
                args.profile
            );
        }
        eprintln!("warning: report made from stale results (--allow-stale) — {what}");
    }
    let cat = Catalog::open_snapshot(&path)?;
    let reports = args.out.unwrap_or_else(|| project.reports_dir());
    let params = ReportParams {
        stale,
        ..ReportParams::default()
    };
    let files = generate(&cat, &project.root, &reports, &args.profile, &params)?;
    println!(
        "report {}: {} files in {}",
        args.profile,
        files.len(),
        reports.join(&args.profile).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The profile's tasks, other than its report, that are not fresh, as "stage:task (status)" —
/// what `gl status --profile P` calls them with the same `--threads`.
fn not_fresh(project: &Project, args: &ReportArgs, threads: Option<i32>) -> Result<Vec<String>> {
    let profile = ProfileArgs {
        profile: args.profile.clone(),
        overrides: Vec::new(),
    };
    let plan = crate::commands::pipeline::plan(project, &profile, threads, None)?;
    let latest = load_latest(project)?;
    let st = states(project, &plan, &latest)?;
    Ok(plan
        .tasks
        .iter()
        .zip(&st)
        .filter(|(t, s)| t.stage != "report" && s.status != Status::Fresh)
        .map(|(t, s)| format!("{} ({})", t.id(), s.status.as_str()))
        .collect())
}

/// The first [`LISTED`] of `items`, then how many more.
fn listed(items: &[String]) -> String {
    let shown = items[..items.len().min(LISTED)].join(", ");
    match items.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}
