//! The stage runner's records (`gl run`): one `pipeline_tasks` row per task run, with the
//! fingerprint that decides whether the task is fresh, and `pipeline_profiles`, the full resolved
//! configuration of each profile as last run.

use crate::catalog::records::timestamp;
use crate::catalog::Catalog;
use anyhow::{Context, Result};
use duckdb::params;
use std::collections::HashMap;
use std::time::SystemTime;

/// The schema migration that creates both tables.
pub const MIGRATION_SQL: &str = r#"
CREATE SEQUENCE pipeline_task_ids START 1;
CREATE TABLE pipeline_tasks (
    id          BIGINT PRIMARY KEY DEFAULT nextval('pipeline_task_ids'),
    profile     VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL,
    task        VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    status      VARCHAR NOT NULL CHECK (status IN ('succeeded', 'failed')),
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    seconds     DOUBLE NOT NULL,
    executor    VARCHAR NOT NULL,
    argv        JSON NOT NULL,
    config      JSON NOT NULL,
    outputs     JSON,
    digest      VARCHAR,
    log         VARCHAR,
    error       VARCHAR
);
CREATE TABLE pipeline_profiles (
    name        VARCHAR PRIMARY KEY,
    config      JSON NOT NULL,
    resolved_at TIMESTAMP NOT NULL
);
"#;

/// The task ids (`stage:key`) of each profile's plan as last run, so the report shows what the
/// profile is now, not every key it ever had (a sweep point or seed dropped since).
pub const MIGRATION_7_SQL: &str = "ALTER TABLE pipeline_profiles ADD COLUMN tasks JSON;";

/// One finished task run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub profile: String,
    pub stage: String,
    pub task: String,
    pub fingerprint: String,
    pub succeeded: bool,
    pub started_at: SystemTime,
    pub seconds: f64,
    pub executor: String,
    pub argv: serde_json::Value,
    pub config: serde_json::Value,
    /// Output files and their sha256.
    pub outputs: Option<serde_json::Value>,
    /// sha256 over the outputs: what downstream fingerprints include.
    pub digest: Option<String>,
    pub log: Option<String>,
    pub error: Option<String>,
}

/// Appends `rec` (one transaction).
pub fn record_task(cat: &mut Catalog, rec: &TaskRecord) -> Result<()> {
    cat.transaction(|tx| {
        tx.execute(
            "INSERT INTO pipeline_tasks (profile, stage, task, fingerprint, status, started_at, \
             finished_at, seconds, executor, argv, config, outputs, digest, log, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?::JSON, ?, ?, ?)",
            params![
                rec.profile,
                rec.stage,
                rec.task,
                rec.fingerprint,
                if rec.succeeded { "succeeded" } else { "failed" },
                timestamp(rec.started_at),
                timestamp(SystemTime::now()),
                rec.seconds,
                rec.executor,
                rec.argv.to_string(),
                rec.config.to_string(),
                rec.outputs.as_ref().map(|o| o.to_string()),
                rec.digest,
                rec.log,
                rec.error,
            ],
        )?;
        Ok(())
    })
    .context("recording a pipeline task")
}

/// Stores the resolved profile and its plan's task ids (replacing the last ones of that name).
pub fn record_profile(
    cat: &mut Catalog,
    name: &str,
    config: &serde_json::Value,
    tasks: &[String],
) -> Result<()> {
    cat.transaction(|tx| {
        tx.execute(
            "INSERT OR REPLACE INTO pipeline_profiles (name, config, resolved_at, tasks) \
             VALUES (?, ?::JSON, ?, ?::JSON)",
            params![
                name,
                config.to_string(),
                timestamp(SystemTime::now()),
                serde_json::to_string(tasks)?
            ],
        )?;
        Ok(())
    })
}

/// The records status needs: per (stage, task), the latest run of each fingerprint, newest
/// first (whatever the profile: tasks with the same fingerprint are the same work).
pub fn latest(cat: &Catalog) -> Result<HashMap<(String, String), Vec<LatestRecord>>> {
    let mut stmt = cat.connection().prepare(
        "SELECT stage, task, fingerprint, status = 'succeeded', seconds, digest, error, \
         strftime(finished_at, '%Y-%m-%d %H:%M:%S') \
         FROM pipeline_tasks \
         QUALIFY row_number() OVER (PARTITION BY stage, task, fingerprint ORDER BY id DESC) = 1 \
         ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            LatestRecord {
                fingerprint: r.get(2)?,
                succeeded: r.get(3)?,
                seconds: r.get(4)?,
                digest: r.get(5)?,
                error: r.get(6)?,
                finished_at: r.get(7)?,
            },
        ))
    })?;
    let mut out: HashMap<(String, String), Vec<LatestRecord>> = HashMap::new();
    for row in rows {
        let (key, rec) = row?;
        out.entry(key).or_default().push(rec);
    }
    Ok(out)
}

/// What status needs of a task's last run.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRecord {
    pub fingerprint: String,
    pub succeeded: bool,
    pub seconds: f64,
    pub digest: Option<String>,
    pub error: Option<String>,
    pub finished_at: String,
}
