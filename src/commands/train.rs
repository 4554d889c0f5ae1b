//! `gl train`: resolve dataset + profile + overrides into a [`TrainConfig`], run or resume the
//! run, index it in the catalogue after every epoch (when built with it), print the summary.

use crate::cli::TrainArgs;
use crate::project::Project;
use crate::stages::train::{self as trainer, Settings};
use crate::train::config::TrainConfig;
use crate::train::run_dir::RunDir;
use anyhow::Result;
use std::process::ExitCode;

/// Settings, or `None` when `--print-config` only printed the configuration.
pub fn resolve(args: TrainArgs, project: Project) -> Result<Option<Settings>> {
    let config = TrainConfig::resolve(&project, &args.dataset, &args.profile, &args.overrides)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(None);
    }
    let device = args.device.resolve()?;
    let run_id = args
        .run_id
        .unwrap_or_else(|| format!("{}-{}-s{}", args.dataset, args.profile, args.seed));
    anyhow::ensure!(
        !run_id.is_empty() && !run_id.contains(['/', '\\']) && run_id != "." && run_id != "..",
        "--run-id {run_id:?} must be a plain directory name"
    );
    Ok(Some(Settings {
        run_dir: project.runs_dir().join(&run_id),
        project,
        dataset: args.dataset,
        profile: args.profile,
        config,
        seed: args.seed,
        device,
        run_id,
        resume: args.resume,
        progress: !args.quiet,
    }))
}

pub fn run(settings: Option<Settings>) -> Result<ExitCode> {
    let Some(s) = settings else {
        return Ok(ExitCode::SUCCESS);
    };
    #[cfg(feature = "catalog")]
    let catalog_path = s.project.catalog_path();
    // The catalogue is an index of the run directory: when it cannot be written (another
    // process holds it, or this gl has no catalogue) training goes on and `gl index-runs`
    // catches up later.
    let mut on_epoch = |dir: &RunDir| -> Result<()> {
        #[cfg(feature = "catalog")]
        if !crate::project::catalog_writes() {
        } else if let Err(e) = crate::catalog::runs::ingest_run_path(&catalog_path, &dir.root) {
            tracing::warn!("run not indexed in the catalogue (run `gl index-runs` later): {e:#}");
        }
        let _ = dir;
        Ok(())
    };
    let out = trainer::run(&s, &mut on_epoch)?;
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
    println!(
        "test R@1: untrained {} | last epoch {} | validation-selected {} | best on test {} (selection on the test set, as the published numbers)",
        pct(&sum.test_recall_untrained),
        pct(&sum.test_recall_last),
        pct(&sum.test_recall_val_selected),
        pct(&sum.test_recall_best_on_test)
    );
    Ok(ExitCode::SUCCESS)
}
