//! `gl export catalog PATH`: a consistent, read-only copy of the catalogue for notebooks, so
//! that nothing outside `gl` ever holds the live file its writers need (docs/python.md).

use crate::catalog::snapshot;
use crate::cli::ExportCatalogArgs;
use crate::project::Project;
use anyhow::{ensure, Result};
use std::process::ExitCode;

/// Writes the snapshot and says what it holds and how to open it.
pub fn catalog(args: ExportCatalogArgs, project: Project) -> Result<ExitCode> {
    let live = project.catalog_path();
    ensure!(
        live.is_file(),
        "no catalogue at {} yet: run `gl fetch <dataset>` or `gl run` first",
        live.display()
    );
    let out = snapshot::export(&live, &args.path)?;
    println!(
        "wrote a snapshot of {} to {} (read-only, {:.1} MiB, schema v{}: {} runs, {} \
         evaluations); in Python: duckdb.connect({:?}, read_only=True)",
        live.display(),
        out.path.display(),
        out.bytes as f64 / (1024.0 * 1024.0),
        out.schema_version,
        out.runs,
        out.evaluations,
        out.path.display().to_string(),
    );
    Ok(ExitCode::SUCCESS)
}
