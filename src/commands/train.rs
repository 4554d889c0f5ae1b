//! `gl train`: resolve dataset + profile + overrides into a [`TrainConfig`], run or resume the
//! run, index it in the catalogue after every epoch (when built with it), print the summary.

use crate::cli::TrainArgs;
use crate::project::Project;
use crate::stages::train::{self as trainer, lines, Settings};
use crate::train::config::TrainConfig;
use crate::train::objective::Objective;
use crate::train::run_dir::{EpochRecord, RunDir, Untrained};
use anyhow::{Context, Result};
use std::process::ExitCode;

/// Settings, or `None` when `--print-config` only printed the configuration.
pub fn resolve(args: TrainArgs, project: Project) -> Result<Option<Settings>> {
    let config = TrainConfig::resolve(&project, &args.dataset, &args.profile, &args.overrides)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(None);
    }
    let device = args.device.resolve()?;
    // `--run-id` is checked by clap; the default, made of checked names, may still be long.
    let run_id = match args.run_id {
        Some(id) => id,
        None => crate::names::Name::new(
            crate::names::Kind::Run,
            &format!("{}-{}-s{}", args.dataset, args.profile, args.seed),
        )
        .context("the default run id (pass a shorter --run-id)")?,
    };
    let execution = crate::numerics::Execution::new(
        &crate::device::name(device),
        crate::numerics::Kernels::in_effect(),
        tch::get_num_threads(),
    );
    Ok(Some(Settings {
        execution,
        run_dir: project.run_dir(&run_id),
        project,
        dataset: args.dataset,
        profile: args.profile.into(),
        config,
        seed: args.seed,
        device,
        run_id: run_id.into(),
        resume: args.resume,
        progress: !args.quiet,
    }))
}

/// What `gl train` (and `gl embed --weights`) do as a run goes: print the epoch lines, and
/// index the run directory in the catalogue after every commit. The catalogue is an index of
/// the run directory: when it cannot be written (another process holds it, or this gl has no
/// catalogue) training goes on and `gl index-runs` catches up later.
pub struct RunObserver {
    #[cfg_attr(not(feature = "catalog"), allow(dead_code))]
    catalog: std::path::PathBuf,
    /// The objective of the run whose lines to print (`None`: print nothing, `--quiet`).
    print: Option<Objective>,
}

impl RunObserver {
    /// `print`: the lines of a run with this objective go to stderr; `None` prints nothing.
    pub fn new(project: &Project, print: Option<Objective>) -> Self {
        RunObserver {
            catalog: project.catalog_path(),
            print,
        }
    }
}

/// A run that ended in an error or a signal: its status (`failed` / `interrupted`, from its
/// files now that its writer lock is free) indexed at once, not at the next `gl index-runs`;
/// then the error, or for a signal a line saying so and the shell's exit code (128 + signal).
fn stopped(s: &Settings, e: anyhow::Error) -> Result<ExitCode> {
    #[cfg(feature = "catalog")]
    if crate::project::catalog_writes() && s.run_dir.join("config.json").is_file() {
        let catalog = s.project.catalog_path();
        if let Err(w) = crate::catalog::runs::ingest_run_path(&catalog, &s.run_dir) {
            tracing::warn!(
                "the run's status is not indexed in the catalogue (run `gl index-runs` \
                 later): {w:#}"
            );
        }
    }
    match crate::interrupt::of(&e) {
        Some(sig) => {
            eprintln!(
                "gl train stopped by {}: run {} interrupted; `gl train --resume` (or `gl run`) \
                 continues it from its last checkpoint",
                sig.name(),
                s.run_id
            );
            Ok(ExitCode::from(sig.exit_code()))
        }
        None => Err(e),
    }
}

impl trainer::Observer for RunObserver {
    fn untrained(&mut self, u: &Untrained, ks: &[usize]) {
        if self.print.is_some() {
            eprintln!("{}", lines::untrained_line(u, ks));
        }
    }

    fn epoch(&mut self, r: &EpochRecord, ks: &[usize]) {
        if let Some(objective) = self.print {
            eprintln!("{}", lines::epoch_line(r, ks, objective));
        }
    }

    fn committed(&mut self, dir: &RunDir) -> Result<()> {
        #[cfg(feature = "catalog")]
        if crate::project::catalog_writes() {
            if let Err(e) = crate::catalog::runs::ingest_run_path(&self.catalog, &dir.root) {
                tracing::warn!(
                    "run not indexed in the catalogue (run `gl index-runs` later): {e:#}"
                );
            }
        }
        let _ = dir;
        Ok(())
    }
}

pub fn run(settings: Option<Settings>) -> Result<ExitCode> {
    let Some(s) = settings else {
        return Ok(ExitCode::SUCCESS);
    };
    crate::interrupt::install();
    let out = trainer::run(
        &s,
        &mut RunObserver::new(&s.project, s.progress.then_some(s.config.objective)),
    );
    let out = match out {
        Ok(out) => out,
        Err(e) => return stopped(&s, e),
    };
    let sum = &out.summary;
    let pct = |v: &Option<Vec<f64>>| {
        v.as_ref()
            .and_then(|v| v.first())
            .map_or("-".to_string(), |x| format!("{:.2}", 100.0 * x))
    };
    println!(
        "run {} done: {} epochs in {:.0} s → {}",
        s.run_id,
        sum.epochs,
        sum.seconds,
        out.run_dir.root.display()
    );
    if let Some(stop) = &sum.stopped {
        let best = stop
            .best_epoch
            .map_or("none".into(), |e| format!("epoch {e}"));
        println!(
            "stopped early after epoch {} of {}: no better validation {} for {} epochs (best: {best})",
            stop.epoch,
            stop.max_epochs,
            stop.metric.name(),
            stop.patience,
        );
    }
    println!(
        "test R@1: untrained {} | last epoch {} | validation-selected {} | best on test {} (selection on the test set, as the published numbers)",
        pct(&sum.test_recall_untrained),
        pct(&sum.test_recall_last),
        pct(&sum.test_recall_val_selected),
        pct(&sum.test_recall_best_on_test)
    );
    Ok(ExitCode::SUCCESS)
}
