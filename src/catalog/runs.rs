//! Training runs in the catalogue: `runs` (one row per run directory: what it is, how far it
//! got, its three headline numbers) and `epochs` (one row per completed epoch, with its
//! validation and test R@1 and MAP@R). Both are derived from the run directory's files
//! ([`crate::train::run_dir`]) and re-derived whole on each ingest inside one transaction, so a
//! run trained elsewhere is indexed the same way. A run that stopped early is `completed` with
//! `epochs_done` < `epochs_planned`; why it stopped is `summary`'s `stopped`.

use crate::catalog::environments;
use crate::catalog::records::timestamp;
use crate::catalog::Catalog;
use crate::numerics::environment::Environment;
use crate::train::run_dir::{EpochRecord, RunConfig, RunDir, RunSummary};
use anyhow::{Context, Result};
use duckdb::params;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The schema migration that creates both tables.
pub const MIGRATION_SQL: &str = r#"
CREATE TABLE runs (
    run_id               VARCHAR PRIMARY KEY,
    dataset              VARCHAR NOT NULL,
    profile              VARCHAR NOT NULL,
    seed                 UBIGINT NOT NULL,
    backbone             VARCHAR NOT NULL,
    objective            VARCHAR NOT NULL,
    selection            VARCHAR NOT NULL,
    device               VARCHAR NOT NULL,
    run_dir              VARCHAR NOT NULL,
    status               VARCHAR NOT NULL CHECK (status IN ('running', 'completed')),
    epochs_planned       INTEGER NOT NULL,
    epochs_done          INTEGER NOT NULL,
    selected_epoch       INTEGER,
    test_r1_last         DOUBLE,
    test_r1_val_selected DOUBLE,
    test_r1_best_on_test DOUBLE,
    test_r1_untrained    DOUBLE,
    val_r1_untrained     DOUBLE,
    config               JSON NOT NULL,
    summary              JSON,
    created_at           TIMESTAMP NOT NULL,
    indexed_at           TIMESTAMP NOT NULL
);
CREATE TABLE epochs (
    run_id            VARCHAR NOT NULL,
    epoch             INTEGER NOT NULL,
    lr                DOUBLE NOT NULL,
    loss              DOUBLE NOT NULL,
    loss_group        DOUBLE NOT NULL,
    loss_ce           DOUBLE NOT NULL,
    batches           BIGINT NOT NULL,
    images            BIGINT NOT NULL,
    train_seconds     DOUBLE NOT NULL,
    eval_seconds      DOUBLE NOT NULL,
    images_per_second DOUBLE NOT NULL,
    val_r1            DOUBLE,
    test_r1           DOUBLE,
    val_recall        JSON,
    test_recall       JSON,
    reloaded_from     INTEGER,
    PRIMARY KEY (run_id, epoch)
);
"#;

/// Schema version 8: `runs.status` may also be `failed` or `interrupted` (a run nobody is
/// writing that did not finish), so killed and failed runs no longer read as running. DuckDB
/// cannot alter a CHECK constraint, so the table is copied into one with the new constraint.
pub const MIGRATION_8_SQL: &str = r#"
CREATE TABLE runs_v8 (
    run_id               VARCHAR PRIMARY KEY,
    dataset              VARCHAR NOT NULL,
    profile              VARCHAR NOT NULL,
    seed                 UBIGINT NOT NULL,
    backbone             VARCHAR NOT NULL,
    objective            VARCHAR NOT NULL,
    selection            VARCHAR NOT NULL,
    device               VARCHAR NOT NULL,
    run_dir              VARCHAR NOT NULL,
    status               VARCHAR NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    epochs_planned       INTEGER NOT NULL,
    epochs_done          INTEGER NOT NULL,
    selected_epoch       INTEGER,
    test_r1_last         DOUBLE,
    test_r1_val_selected DOUBLE,
    test_r1_best_on_test DOUBLE,
    test_r1_untrained    DOUBLE,
    val_r1_untrained     DOUBLE,
    config               JSON NOT NULL,
    summary              JSON,
    created_at           TIMESTAMP NOT NULL,
    indexed_at           TIMESTAMP NOT NULL
);
INSERT INTO runs_v8 SELECT * FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v8 RENAME TO runs;
"#;

/// Schema version 10: each epoch's MAP@R on validation and test (`EpochRecord::val_map_at_r`),
/// the metric a benchmark selects by. Rows of older catalogues, and epochs trained before it was
/// measured, keep NULL there.
pub const MIGRATION_10_SQL: &str = r#"
ALTER TABLE epochs ADD COLUMN val_map_at_r DOUBLE;
ALTER TABLE epochs ADD COLUMN test_map_at_r DOUBLE;
"#;

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Opens the catalogue at `catalog` (retrying for a few seconds while another process holds
/// it) and indexes the run directory `dir`.
pub fn ingest_run_path(catalog: &Path, dir: &Path) -> Result<()> {
    let mut cat = Catalog::open_waiting(catalog, false)?;
    ingest_run(&mut cat, dir)?;
    crate::catalog::evaluations::ingest_dir(&mut cat, dir)?;
    Ok(())
}

/// Indexes the run directory `dir` (config, committed epochs, summary if finished).
pub fn ingest_run(cat: &mut Catalog, dir: &Path) -> Result<()> {
    let rd = RunDir::new(dir.to_path_buf());
    let cfg: RunConfig = RunDir::read_json(&rd.config_path())?;
    let done = rd.state()?.map_or(0, |s| s.epoch);
    let epochs = rd.epochs(Some(done))?;
    let summary: Option<RunSummary> = if rd.summary_path().exists() {
        Some(RunDir::read_json(&rd.summary_path())?)
    } else {
        None
    };
    let progress = rd.progress()?;
    let r1 = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.first().copied());
    let created = UNIX_EPOCH + Duration::from_secs(cfg.created_unix);
    let path = cat.path().display().to_string();
    let env: Option<Environment> = match rd.environment_path().exists() {
        true => Some(RunDir::read_json(&rd.environment_path())?),
        false => None,
    };
    let env_columns = environments::run_columns(cfg.numerics, env.as_ref())?;
    cat.transaction(|tx| {
        tx.execute("DELETE FROM epochs WHERE run_id = ?", params![cfg.run_id])?;
        tx.execute(
            "INSERT OR REPLACE INTO runs VALUES \
             (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?, ?, \
              ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)",
            duckdb::params_from_iter(
                params![
                    cfg.run_id,
                    cfg.dataset,
                    cfg.profile,
                    cfg.seed,
                    cfg.train.backbone,
                    enum_str(&cfg.train.objective),
                    enum_str(&cfg.train.selection),
                    cfg.device,
                    dir.display().to_string(),
                    progress.as_str(),
                    cfg.train.epochs as i64,
                    epochs.len() as i64,
                    summary
                        .as_ref()
                        .and_then(|s| s.selected_epoch.map(|e| e as i64)),
                    summary.as_ref().and_then(|s| r1(&s.test_recall_last)),
                    summary
                        .as_ref()
                        .and_then(|s| r1(&s.test_recall_val_selected)),
                    summary
                        .as_ref()
                        .and_then(|s| r1(&s.test_recall_best_on_test)),
                    summary.as_ref().and_then(|s| r1(&s.test_recall_untrained)),
                    summary.as_ref().and_then(|s| r1(&s.val_recall_untrained)),
                    serde_json::to_string(&cfg.train)?,
                    summary.as_ref().map(serde_json::to_string).transpose()?,
                    timestamp(created),
                    timestamp(SystemTime::now()),
                ]
                .iter()
                .copied()
                .chain(env_columns.iter().map(|v| v as &dyn duckdb::ToSql)),
            ),
        )?;
        for e in &epochs {
            insert_epoch(tx, &cfg.run_id, e)?;
        }
        Ok(())
    })
    .with_context(|| format!("indexing run {} in {path}", dir.display()))
}

fn insert_epoch(tx: &duckdb::Transaction, run_id: &str, e: &EpochRecord) -> Result<()> {
    let r1 = |v: &Option<Vec<f64>>| v.as_ref().and_then(|v| v.first().copied());
    let json = |v: &Option<Vec<f64>>| {
        v.as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
    };
    tx.execute(
        "INSERT INTO epochs VALUES \
         (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?, ?, ?)",
        params![
            run_id,
            e.epoch as i64,
            e.lr,
            e.loss,
            e.loss_group,
            e.loss_ce,
            e.batches as i64,
            e.images as i64,
            e.train_seconds,
            e.eval_seconds,
            e.images_per_second,
            r1(&e.val_recall),
            r1(&e.test_recall),
            json(&e.val_recall),
            json(&e.test_recall),
            e.reloaded_from.map(|r| r as i64),
            e.val_map_at_r,
            e.test_map_at_r,
        ],
    )?;
    Ok(())
}
