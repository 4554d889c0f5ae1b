//! `gl fetch <dataset>`: run the fetch stage, then index its outputs into the catalogue;
//! `gl fetch [<dataset>] --check`: ask the sources, download nothing ([`super::fetch_check`]).

use crate::cli::FetchArgs;
use crate::data::fetch::FetchOptions;
use crate::names::Name;
use crate::project::Project;
use crate::stages::fetch::{self, Settings};
use anyhow::{ensure, Result};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

/// What `gl fetch` was asked to do.
pub enum Request {
    Fetch(Settings),
    Check {
        project: Project,
        dataset: Option<Name>,
        options: FetchOptions,
    },
}

pub fn resolve(args: FetchArgs, project: Project) -> Result<Request> {
    let FetchArgs {
        dataset,
        from,
        source,
        force,
        check,
        download,
    } = args;
    if check {
        return Ok(Request::Check {
            project,
            dataset,
            options: FetchOptions {
                retries: 0,
                progress: false,
                ..download.options()
            },
        });
    }
    let dataset = dataset.ok_or_else(|| anyhow::anyhow!("name the dataset to fetch"))?;
    for f in &from {
        ensure!(f.is_file(), "--from {}: no such file", f.display());
    }
    Ok(Request::Fetch(Settings {
        project,
        dataset,
        from: from
            .into_iter()
            .map(std::path::absolute)
            .collect::<std::io::Result<_>>()?,
        source,
        options: download.options(),
        force,
    }))
}

pub fn run(request: Request) -> Result<ExitCode> {
    match request {
        Request::Fetch(s) => fetch(s),
        Request::Check {
            project,
            dataset,
            options,
        } => super::fetch_check::run(&project, dataset.as_ref(), &options),
    }
}

fn fetch(s: Settings) -> Result<ExitCode> {
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
        "{}: {} images, {} classes (train {} images / {} classes, test {} / {}) from source `{}`{} in {:.1} s",
        outcome.dataset,
        c.images,
        c.classes,
        c.train_images,
        c.train_classes,
        c.test_images,
        c.test_classes,
        outcome.source,
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
