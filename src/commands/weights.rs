//! `gl weights <name>` / `gl weights --list`: run the weights stage, then record it in the
//! catalogue.

use crate::cli::WeightsArgs;
use crate::project::Project;
use crate::stages::weights::{self, Settings};
use anyhow::{ensure, Result};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

/// What the invocation asks for.
#[derive(Debug)]
pub enum Request {
    List(Project),
    Convert(Settings),
}

pub fn resolve(args: WeightsArgs, project: Project) -> Result<Request> {
    let WeightsArgs {
        name,
        list,
        from,
        force,
        download,
        python,
    } = args;
    let name = match (list, name) {
        (true, _) => return Ok(Request::List(project)),
        (false, Some(name)) => name,
        (false, None) => anyhow::bail!("name weights to convert, or pass --list"),
    };
    if let Some(f) = &from {
        ensure!(f.is_file(), "--from {}: no such file", f.display());
    }
    Ok(Request::Convert(Settings {
        project,
        name,
        from: from.map(std::path::absolute).transpose()?,
        options: download.options(),
        force,
        python: python.unwrap_or_else(crate::runtime::default_python),
    }))
}

pub fn run(request: Request) -> Result<ExitCode> {
    match request {
        Request::List(project) => list(&project),
        Request::Convert(s) => convert(&s),
    }
}

fn list(project: &Project) -> Result<ExitCode> {
    let rows = weights::list(project)?;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let bwidth = rows
        .iter()
        .map(|r| r.backbone.len() + 1)
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:width$}  {:bwidth$}  {:7}  title",
        "name", "backbone", "present"
    );
    for r in &rows {
        let backbone = format!("{}{}", r.backbone, if r.backbone_known { "" } else { "*" });
        let present = if r.present { "yes" } else { "no" };
        println!(
            "{:width$}  {backbone:bwidth$}  {present:7}  {}",
            r.name, r.title
        );
    }
    if rows.iter().any(|r| !r.backbone_known) {
        println!("* backbone not built into this gl: those weights cannot be converted yet");
    }
    Ok(ExitCode::SUCCESS)
}

fn convert(s: &Settings) -> Result<ExitCode> {
    let (started_at, clock) = (SystemTime::now(), Instant::now());
    let result = weights::run(s);
    #[cfg(feature = "catalog")]
    let result = crate::catalog::ingest::record_stage(
        &s.project.catalog_path(),
        "weights",
        &s.name,
        started_at,
        result,
        crate::catalog::ingest::ingest_weights,
    );
    let _ = started_at;
    let outcome = result?;
    let m = &outcome.manifest;
    let skipped = &m.conversion.mapping.skipped;
    println!(
        "{}: {} tensors for {}{}{} → {} ({}) in {:.1} s",
        m.name,
        m.conversion.tensors,
        m.backbone,
        match &m.conversion.classifier_shape {
            Some(shape) => format!(" + classifier {shape:?}"),
            None => String::new(),
        },
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", {} source keys skipped", skipped.len())
        },
        outcome.path.display(),
        if outcome.converted {
            "converted"
        } else {
            "up to date"
        },
        clock.elapsed().as_secs_f64()
    );
    if !m.conversion.converter.non_tensor.is_empty() {
        println!(
            "  non-tensor entries skipped: {}",
            m.conversion.converter.non_tensor.join(", ")
        );
    }
    if cfg!(not(feature = "catalog")) {
        println!("(built without the catalogue: nothing indexed)");
    }
    Ok(ExitCode::SUCCESS)
}
