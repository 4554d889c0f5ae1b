//! `gl sql "SELECT …"`: read-only queries on the catalogue.

use crate::catalog::{query, Catalog, OutputFormat};
use crate::cli::{SqlArgs, SqlFormat};
use crate::project::Project;
use anyhow::{ensure, Result};
use std::process::ExitCode;

pub fn run(args: SqlArgs, project: Project) -> Result<ExitCode> {
    let SqlArgs { query: sql, format } = args;
    let path = project.catalog_path();
    ensure!(
        path.is_file(),
        "no catalogue at {} yet: run `gl fetch <dataset>` first",
        path.display()
    );
    // On a copy: a long query never holds the catalogue a writer needs.
    let cat = Catalog::open_snapshot(&path)?;
    let format = match format {
        SqlFormat::Table => OutputFormat::Table,
        SqlFormat::Csv => OutputFormat::Csv,
        SqlFormat::Json => OutputFormat::Json,
    };
    print!("{}", query(&cat, &sql, format)?);
    Ok(ExitCode::SUCCESS)
}
