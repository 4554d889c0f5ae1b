//! `gl fetch <dataset>`: run the fetch stage, then index its outputs into the catalogue.

use crate::cli::FetchArgs;
use crate::project::Project;
use crate::stages::fetch::{self, Settings};
use anyhow::{ensure, Result};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

pub fn resolve(args: FetchArgs, project: Project) -> Result<Settings> {
    let FetchArgs {
        dataset,
        from,
        force,
        download,
    } = args;
    if let Some(f) = &from {
        ensure!(f.is_file(), "--from {}: no such file", f.display());
    }
    Ok(Settings {
        project,
        dataset,
        from: from.map(std::path::absolute).transpose()?,
        options: download.options(),
        force,
    })
}

pub fn run(s: Settings) -> Result<ExitCode> {
    let (started_at, clock) = (SystemTime::now(), Instant::now());
    let result = fetch::run(&s);
    #[cfg(not(feature = "catalog"))]
    let _ = started_at;
    #[cfg(feature = "catalog")]
    let result = crate::catalog::ingest::record_stage(
        &s.project.catalog_path(),
        "fetch",
        &s.dataset,
        started_at,
        result,
        crate::catalog::ingest::ingest_fetch,
    );
    let _ = started_at; // only the catalogue records it
    let outcome = result?;
    let c = outcome.counts;
    println!(
        "{}: {} images, {} classes (train {} images / {} classes, test {} / {}){} in {:.1} s",
        outcome.dataset,
        c.images,
        c.classes,
        c.train_images,
        c.train_classes,
        c.test_images,
        c.test_classes,
        if outcome.extracted {
            ", extracted"
        } else {
            ", files unchanged"
        },
        clock.elapsed().as_secs_f64()
    );
    if cfg!(not(feature = "catalog")) {
        println!(
            "(built without the catalogue: wrote {}, nothing indexed)",
            s.project.dataset_dir(&s.dataset).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
