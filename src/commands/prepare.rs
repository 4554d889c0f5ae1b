//! `gl prepare <dataset>`: build (or reuse) the crop cache, then record it in the catalogue.

use crate::cli::PrepareArgs;
use crate::project::Project;
use crate::stages::prepare::{self, PrepareParams, Settings};
use anyhow::Result;
use std::process::ExitCode;
use std::time::SystemTime;

pub fn resolve(args: PrepareArgs, project: Project) -> Result<(Settings, Option<usize>)> {
    let PrepareArgs {
        dataset,
        resize,
        jpeg_quality,
        row_group,
        max_failed_fraction,
        jobs,
        force,
        quiet,
    } = args;
    let params = PrepareParams {
        resize,
        jpeg_quality,
        row_group,
        max_failed_fraction,
    };
    params.validate()?;
    Ok((
        Settings {
            project,
            dataset,
            params,
            progress: !quiet,
            force,
        },
        jobs,
    ))
}

pub fn run((s, jobs): (Settings, Option<usize>)) -> Result<ExitCode> {
    let started_at = SystemTime::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.unwrap_or(0))
        .build()?;
    let outcome = pool.install(|| prepare::run(&s))?;
    let m = &outcome.manifest;
    #[cfg(feature = "catalog")]
    if outcome.built {
        let mut cat = crate::catalog::Catalog::open_waiting_for(
            s.project.catalog_path(),
            false,
            crate::catalog::INDEX_PATIENCE,
        )?;
        crate::catalog::ingest::ingest_prepare(&mut cat, &outcome, started_at)?;
    }
    let _ = started_at;
    if outcome.built {
        println!(
            "{}: {} images prepared ({} failed) in {:.1} s ({:.0} images/s) → {}",
            m.dataset,
            m.images,
            m.failures.len(),
            outcome.seconds,
            (m.images as f64 + m.failures.len() as f64) / outcome.seconds.max(1e-9),
            outcome.dir.display()
        );
    } else {
        println!(
            "{}: cache up to date ({} images) → {}",
            m.dataset,
            m.images,
            outcome.dir.display()
        );
    }
    for f in m.failures.iter().take(10) {
        println!(
            "  not prepared: image {} {}: {}",
            f.image_id, f.rel_path, f.error
        );
    }
    Ok(ExitCode::SUCCESS)
}
