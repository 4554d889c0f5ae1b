//! `gl report`: the report of one pipeline profile, from the catalogue (opened read-only) into
//! `reports/<profile>/`.

use crate::catalog::Catalog;
use crate::cli::ReportArgs;
use crate::project::Project;
use crate::report::{generate, ReportParams};
use anyhow::{ensure, Result};
use std::process::ExitCode;

pub fn run(args: ReportArgs, project: Project) -> Result<ExitCode> {
    let path = project.catalog_path();
    ensure!(
        path.is_file(),
        "no catalogue at {}: run `gl run --profile {}` first",
        path.display(),
        args.profile
    );
    let cat = Catalog::open_snapshot(&path)?;
    let reports = args.out.unwrap_or_else(|| project.reports_dir());
    let files = generate(
        &cat,
        &project.root,
        &reports,
        &args.profile,
        &ReportParams::default(),
    )?;
    println!(
        "report {}: {} files in {}",
        args.profile,
        files.len(),
        reports.join(&args.profile).display()
    );
    Ok(ExitCode::SUCCESS)
}
