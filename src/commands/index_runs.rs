//! `gl index-runs [DIR…]`: (re)index run directories (and, without DIR, every ensemble) in the catalogue — runs trained on another
//! machine or while the catalogue was busy. Each run is one transaction; a bad directory is
//! reported by name and the others are still indexed.

use crate::catalog::evaluations::ingest_dir;
use crate::catalog::runs::ingest_run_path;
use crate::catalog::Catalog;
use crate::cli::IndexRunsArgs;
use crate::project::Project;
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

pub fn run(args: IndexRunsArgs, project: Project) -> Result<ExitCode> {
    let all = args.dirs.is_empty();
    let dirs = if all {
        let root = project.runs_dir();
        if !root.is_dir() {
            bail!("no runs: {} does not exist", root.display());
        }
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .with_context(|| format!("listing {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("config.json").is_file())
            .collect();
        dirs.sort();
        dirs
    } else {
        args.dirs
    };
    let mut failed = 0;
    for d in &dirs {
        match ingest_run_path(&project.catalog_path(), d) {
            Ok(()) => println!("indexed {}", d.display()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", d.display());
            }
        }
    }
    // Ensembles (their embeddings, record and metrics) when indexing everything.
    let ens_root = project.ensembles_dir();
    let mut ensembles = 0;
    if ens_root.is_dir() && all {
        let mut cat = Catalog::open_waiting(project.catalog_path(), false)?;
        for e in std::fs::read_dir(&ens_root)
            .with_context(|| format!("listing {}", ens_root.display()))?
        {
            let d = e?.path();
            if !d.join("ensemble.json").is_file() {
                continue;
            }
            ensembles += 1;
            match ingest_dir(&mut cat, &d) {
                Ok(_) => println!("indexed {}", d.display()),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {}: {e:#}", d.display());
                }
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} run and ensemble directories not indexed",
            dirs.len() + ensembles
        );
    }
    Ok(ExitCode::SUCCESS)
}
