//! `gl embed`, `gl evaluate` and `gl ensemble`: resolve the run(s) and metric options, run the
//! stage, index its records in the catalogue (when this `gl` has one and it can be written;
//! `gl index-runs` catches up otherwise), print the metrics.

use crate::cli::{EmbedArgs, EmbedTarget, EnsembleArgs, EvaluateArgs, Format, MetricArgs};
use crate::eval::embeddings_file;
use crate::eval::metrics::{self, EvalParams, Metrics};
use crate::names::{Kind, Name};
use crate::project::Project;
use crate::stages::{embed, ensemble, evaluate};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A run given by id (a directory under data/runs/, a checked [`Name`]) or by path.
pub fn run_dir(project: &Project, run: &str) -> Result<PathBuf> {
    let p = Path::new(run);
    if run.contains('/') || (p.join("config.json").is_file() && !run.is_empty()) {
        Ok(p.to_path_buf())
    } else {
        let id = Name::new(Kind::Run, run)
            .context("RUN is a run id (a directory under data/runs/) or a run directory's path")?;
        Ok(project.run_dir(&id))
    }
}

fn params(m: &MetricArgs) -> Result<EvalParams> {
    ensure!(m.chunk_mib >= 1, "--chunk-mib must be ≥ 1");
    if let Some(ks) = &m.ks {
        let mut seen = std::collections::BTreeSet::new();
        ensure!(
            ks.iter().all(|k| seen.insert(*k)),
            "--ks {ks:?} repeats a K"
        );
    }
    Ok(EvalParams {
        recall_ks: m.ks.clone().unwrap_or_else(|| vec![1, 2, 4, 8]),
        similarity: m.similarity,
        nmi: !m.no_nmi,
        kmeans_restarts: m.kmeans_restarts,
        kmeans_max_iter: m.kmeans_max_iter,
        kmeans_seed: m.kmeans_seed,
        chunk_mib: m.chunk_mib,
        search: m.search,
    })
}

fn embed_settings(
    project: &Project,
    run: &str,
    t: &EmbedTarget,
    force: bool,
) -> Result<embed::Settings> {
    ensure!(!t.split.is_empty(), "--split names no split");
    Ok(embed::Settings {
        project: project.clone(),
        run_dir: run_dir(project, run)?,
        model: t.model,
        splits: t.split.clone(),
        device: t.device.resolve()?,
        force,
    })
}

/// Indexes a run or ensemble directory's records; a busy or absent catalogue is a warning.
fn index(project: &Project, dir: &Path) {
    #[cfg(feature = "catalog")]
    if crate::project::catalog_writes() {
        let indexed = crate::catalog::Catalog::open_waiting(project.catalog_path(), false)
            .map_err(anyhow::Error::from)
            .and_then(|mut cat| crate::catalog::evaluations::ingest_dir(&mut cat, dir));
        if let Err(e) = indexed {
            tracing::warn!("not indexed in the catalogue (run `gl index-runs` later): {e:#}");
        }
    }
    let _ = (project, dir);
}

fn print_metrics(label: &str, m: &Metrics, format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&m.to_json())?),
        Format::Text => print!("{label}\n{}", m.table()),
    }
    Ok(())
}

pub fn embed(args: EmbedArgs, project: Project) -> Result<ExitCode> {
    crate::progress::set_shown(!args.target.quiet);
    let s = embed_settings(&project, &args.run, &args.target, args.force)?;
    if let (Some(weights), Some(dataset)) = (&args.weights, &args.dataset) {
        create_released(&project, &args.run, dataset, weights, &s)?;
    }
    let _writer = writer_lock(&s.run_dir)?;
    for r in embed::run(&s)? {
        println!(
            "{} {} {}: {} × {} → {}",
            r.subject,
            r.model,
            r.split,
            r.rows,
            r.dim,
            s.run_dir.join("embeddings").join(&r.file).display()
        );
    }
    index(&project, &s.run_dir);
    Ok(ExitCode::SUCCESS)
}

/// `gl embed RUN --weights W --dataset D`: RUN created (or kept) as the released model W on
/// D, a run that never trains, and indexed in the catalogue like a trained run.
fn create_released(
    project: &Project,
    run: &str,
    dataset: &Name,
    weights: &Name,
    s: &embed::Settings,
) -> Result<()> {
    ensure!(
        s.model == embed::ModelChoice::Untrained,
        "--weights makes a run that never trains: embed it with --model untrained"
    );
    let run = Name::new(Kind::Run, run)
        .context("with --weights, RUN must be a run id (a directory under data/runs/)")?;
    let mut observer = crate::commands::train::RunObserver::new(project, None);
    let device = s.device;
    crate::stages::released::create(project, dataset, weights, &run, device, &mut observer)?;
    Ok(())
}

/// How long `gl embed` / `gl evaluate` wait for a run directory's writer lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The run directory's writer lock while embedding or evaluating into it (none for a
/// directory that does not exist: the stage fails on it, naming it). Waited for up to
/// [`LOCK_WAIT`]: a pipeline may start the embed or evaluate tasks of one run's selected and
/// untrained models at once (found by `benchmark_demo` with 2 jobs); they write different
/// files, so the second waits for the first instead of failing. Once held, the temporary files
/// a killed writer left in the directory are removed.
fn writer_lock(dir: &std::path::Path) -> Result<Option<crate::writer_lock::WriterLock>> {
    let rd = crate::train::run_dir::RunDir::new(dir.to_path_buf());
    let lock = rd
        .root
        .is_dir()
        .then(|| {
            crate::writer_lock::WriterLock::acquire_waiting(
                &rd.root.join("writer.lock"),
                &format!("the run directory {}", rd.root.display()),
                LOCK_WAIT,
            )
        })
        .transpose()?;
    if lock.is_some() {
        crate::train::run_dir::remove_temp_files(&rd.root);
    }
    Ok(lock)
}

pub fn evaluate(args: EvaluateArgs, project: Project) -> Result<ExitCode> {
    crate::progress::set_shown(!args.target.quiet);
    let p = params(&args.metrics)?;
    if let Some(file) = &args.embeddings {
        let set = embeddings_file::read(file)?;
        set.check_searchable(&file.display().to_string())?;
        let m = metrics::evaluate(
            &set.vectors,
            &set.class_ids,
            &p,
            args.target.device.resolve()?,
        )?;
        print_metrics(&file.display().to_string(), &m, args.metrics.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let run = args.run.as_deref().unwrap_or_default();
    let s = evaluate::Settings {
        embed: embed_settings(&project, run, &args.target, false)?,
        recall_ks: args.metrics.ks.clone(),
        params: p,
    };
    let _writer = writer_lock(&s.embed.run_dir)?;
    let records = evaluate::run(&s)?;
    index(&project, &s.embed.run_dir);
    for r in &records {
        let label = format!("{} ({} model, {} split)", r.subject, r.model, r.split);
        print_metrics(&label, &r.metrics, args.metrics.format)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ensemble(args: EnsembleArgs, project: Project) -> Result<ExitCode> {
    crate::progress::set_shown(!args.target.quiet);
    let name = &args.name;
    ensure!(
        !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
        "--name {name:?} must be a plain directory name"
    );
    ensure!(!args.target.split.is_empty(), "--split names no split");
    let s = ensemble::Settings {
        name: name.clone(),
        runs: args.runs.clone(),
        model: args.target.model,
        splits: args.target.split.clone(),
        recall_ks: args.metrics.ks.clone(),
        params: params(&args.metrics)?,
        device: args.target.device.resolve()?,
        allow_mixed: args.allow_mixed,
        project: project.clone(),
    };
    // The ensemble directory has one writer at a time, like a run directory.
    let dir = project.ensembles_dir().join(name);
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let writer = writer_lock(&dir)?;
    let out = ensemble::run(&s);
    drop(writer);
    if out.is_err() && created {
        // A refused ensemble leaves no directory behind: only its lock file was made.
        let _ = std::fs::remove_file(dir.join("writer.lock"));
        let _ = std::fs::remove_dir(&dir);
    }
    let (record, evals) = out?;
    index(&project, &dir);
    for r in &evals {
        let label = format!(
            "ensemble {} of {} runs ({} model, {} split)",
            record.name,
            record.members.len(),
            r.model,
            r.split
        );
        print_metrics(&label, &r.metrics, args.metrics.format)?;
    }
    Ok(ExitCode::SUCCESS)
}
