//! Embeddings, evaluations and ensembles in the catalogue: `embeddings` (one row per Parquet
//! file of vectors), `evaluations` (what was evaluated, how) with `metrics` (one row per metric,
//! long form: `recall@1`, `nmi`, `map@r`, `r_precision`, …) and `ensembles`. All of them are
//! derived from the records a run or ensemble directory holds (`embeddings/*.json`,
//! `eval/*.json`, `ensemble.json`), re-derived whole per directory in one transaction.

use crate::catalog::environments;
use crate::catalog::records::timestamp;
use crate::catalog::Catalog;
use crate::stages::embed::EmbeddingsRecord;
use crate::stages::ensemble::EnsembleRecord;
use crate::stages::evaluate::EvalRecord;
use crate::train::run_dir::RunDir;
use anyhow::{Context, Result};
use duckdb::params;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The schema migration that creates the tables.
pub const MIGRATION_SQL: &str = r#"
CREATE TABLE embeddings (
    path       VARCHAR PRIMARY KEY,
    subject    VARCHAR NOT NULL,
    dataset    VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    split      VARCHAR NOT NULL,
    epoch      INTEGER,
    n_rows     BIGINT NOT NULL,
    dim        BIGINT NOT NULL,
    sha256     VARCHAR NOT NULL,
    device     VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE evaluations (
    subject                   VARCHAR NOT NULL,
    kind                      VARCHAR NOT NULL CHECK (kind IN ('run', 'ensemble')),
    dataset                   VARCHAR NOT NULL,
    model                     VARCHAR NOT NULL,
    split                     VARCHAR NOT NULL,
    embeddings                VARCHAR NOT NULL,
    embeddings_sha256         VARCHAR NOT NULL,
    images                    BIGINT NOT NULL,
    classes                   BIGINT NOT NULL,
    dim                       BIGINT NOT NULL,
    queries_without_positives BIGINT NOT NULL,
    kmeans_inertia            DOUBLE,
    params                    JSON NOT NULL,
    device                    VARCHAR NOT NULL,
    seconds                   DOUBLE NOT NULL,
    evaluated_at              TIMESTAMP NOT NULL,
    PRIMARY KEY (subject, model, split)
);
CREATE TABLE metrics (
    subject VARCHAR NOT NULL,
    model   VARCHAR NOT NULL,
    split   VARCHAR NOT NULL,
    metric  VARCHAR NOT NULL,
    value   DOUBLE NOT NULL,
    PRIMARY KEY (subject, model, split, metric)
);
CREATE TABLE ensembles (
    name       VARCHAR PRIMARY KEY,
    dataset    VARCHAR NOT NULL,
    model      VARCHAR NOT NULL,
    n_members  INTEGER NOT NULL,
    members    JSON NOT NULL,
    mixed      BOOLEAN NOT NULL,
    dir        VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
"#;

fn ts(unix: u64) -> duckdb::types::Value {
    timestamp(UNIX_EPOCH + Duration::from_secs(unix))
}

/// The `*.json` records in `dir/sub`, sorted by name.
fn records<T: serde::de::DeserializeOwned>(dir: &Path, sub: &str) -> Result<Vec<T>> {
    let d = dir.join(sub);
    if !d.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&d)
        .with_context(|| format!("listing {}", d.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| RunDir::read_json(p)).collect()
}

/// Indexes the embeddings and evaluations of a run or ensemble directory (and the ensemble's
/// record). Rows of the subject's earlier records are replaced.
pub fn ingest_dir(cat: &mut Catalog, dir: &Path) -> Result<usize> {
    let embeddings: Vec<EmbeddingsRecord> = records(dir, "embeddings")?;
    let evals: Vec<EvalRecord> = records(dir, "eval")?;
    let ensemble: Option<EnsembleRecord> = match dir.join("ensemble.json") {
        p if p.exists() => Some(RunDir::read_json(&p)?),
        _ => None,
    };
    let path = cat.path().display().to_string();
    let n = embeddings.len() + evals.len();
    cat.transaction(|tx| {
        for e in &embeddings {
            let file = dir.join("embeddings").join(&e.file);
            tx.execute(
                "DELETE FROM embeddings WHERE path = ?",
                params![file.display().to_string()],
            )?;
            tx.execute(
                "INSERT INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)",
                params![
                    file.display().to_string(),
                    e.subject,
                    e.dataset,
                    e.model,
                    e.split,
                    e.epoch.map(|x| x as i64),
                    e.rows as i64,
                    e.dim,
                    e.sha256,
                    e.device,
                    ts(e.created_unix),
                    e.numerics,
                    environments::json(e.environment.as_ref())?,
                ],
            )?;
        }
        for r in &evals {
            let key = params![r.subject, r.model, r.split];
            tx.execute(
                "DELETE FROM evaluations WHERE subject = ? AND model = ? AND split = ?",
                key,
            )?;
            tx.execute(
                "DELETE FROM metrics WHERE subject = ? AND model = ? AND split = ?",
                params![r.subject, r.model, r.split],
            )?;
            let m = &r.metrics;
            tx.execute(
                "INSERT INTO evaluations VALUES \
                 (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON, ?, ?, ?, ?::JSON)",
                params![
                    r.subject,
                    r.kind,
                    r.dataset,
                    r.model,
                    r.split,
                    r.embeddings.display().to_string(),
                    r.embeddings_sha256,
                    m.images as i64,
                    m.classes as i64,
                    m.dim,
                    m.retrieval.queries_without_positives as i64,
                    m.kmeans_inertia,
                    serde_json::to_string(&r.params)?,
                    r.device,
                    m.seconds,
                    ts(r.created_unix),
                    environments::json(r.environment.as_ref())?,
                ],
            )?;
            for (name, value) in m.named() {
                tx.execute(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                    params![r.subject, r.model, r.split, name, value],
                )?;
            }
        }
        if let Some(e) = &ensemble {
            tx.execute(
                "INSERT OR REPLACE INTO ensembles VALUES (?, ?, ?, ?, ?::JSON, ?, ?, ?)",
                params![
                    e.name,
                    e.dataset,
                    e.model,
                    e.members.len() as i64,
                    serde_json::to_string(&e.members)?,
                    e.mixed,
                    dir.display().to_string(),
                    ts(e.created_unix),
                ],
            )?;
        }
        Ok(())
    })
    .with_context(|| format!("indexing the evaluations of {} in {path}", dir.display()))?;
    Ok(n)
}
