//! Recording a finished stage in the catalogue: the stage wrote its files; this turns them into
//! rows in one transaction, so the catalogue has all of a stage's rows or none.

use super::records::{
    record_artifact, record_stage_run, replace_dataset, timestamp, ArtifactRecord, DatasetRecord,
    StageRunRecord, StageStatus,
};
use super::Catalog;
use crate::stages::fetch::Outcome;
use anyhow::Result;
use std::time::SystemTime;

/// Set (to anything) to make [`ingest_fetch`] fail after inserting its rows — the test hook for
/// "a stage killed mid-way leaves the catalogue as before".
pub const FAIL_INJECTION_ENV: &str = crate::env_vars::FAULT_AFTER_INSERT;

/// Replaces the dataset's rows and records the fetch run, atomically.
pub fn ingest_fetch(cat: &mut Catalog, outcome: &Outcome, started_at: SystemTime) -> Result<i64> {
    let record = DatasetRecord {
        name: outcome.dataset.clone(),
        kind: outcome.layout.clone(),
        source: outcome
            .files
            .first()
            .map(|f| f.source.clone())
            .unwrap_or_else(|| outcome.root.display().to_string()),
        archive_checksum: (!outcome.files.is_empty()).then(|| {
            outcome
                .files
                .iter()
                .map(|f| format!("{}:sha256:{}", f.name, f.sha256))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        license: Some(outcome.license.clone()),
        n_images: outcome.counts.images as i64,
        n_classes: outcome.counts.classes as i64,
        n_train: outcome.counts.train_images as i64,
        n_test: outcome.counts.test_images as i64,
        root: outcome.root.display().to_string(),
        fetched_at: SystemTime::now(),
    };
    let run = StageRunRecord {
        stage: "fetch".into(),
        subject: outcome.dataset.clone(),
        inputs_fingerprint: outcome.fingerprint.clone(),
        started_at,
        finished_at: Some(SystemTime::now()),
        status: StageStatus::Succeeded,
        outputs: Some(serde_json::to_value(outcome)?),
        error: None,
    };
    cat.transaction(|tx| {
        replace_dataset(tx, &record, &outcome.index.images)?;
        let id = record_stage_run(tx, &run)?;
        if std::env::var_os(FAIL_INJECTION_ENV).is_some() {
            anyhow::bail!(
                "injected failure after inserting the rows of `{}` ({FAIL_INJECTION_ENV})",
                outcome.dataset
            );
        }
        Ok(id)
    })
}

/// Records a prepare run: the cache file as an artifact, the images that could not be prepared
/// (replacing the dataset's earlier prepare failures), and the stage run — atomically.
pub fn ingest_prepare(
    cat: &mut Catalog,
    outcome: &crate::stages::prepare::Outcome,
    started_at: SystemTime,
) -> Result<i64> {
    let m = &outcome.manifest;
    let file = outcome.dir.join(&m.file);
    let bytes = std::fs::metadata(&file)?.len() as i64;
    // The manifest and the build's seconds (timings stay out of the manifest: see its doc).
    let mut outputs = serde_json::to_value(m)?;
    outputs["seconds"] = outcome.seconds.into();
    let run = succeeded_run("prepare", &m.dataset, m.key.clone(), started_at, &outputs)?;
    cat.transaction(|tx| {
        let id = record_stage_run(tx, &run)?;
        replace_artifact(
            tx,
            ArtifactRecord {
                path: file.display().to_string(),
                kind: "crop_cache".into(),
                sha256: m.key.clone(),
                bytes,
                stage_run_id: Some(id),
                created_at: SystemTime::now(),
            },
        )?;
        tx.execute(
            "DELETE FROM image_failures WHERE dataset = ? AND stage = 'prepare'",
            [&m.dataset],
        )?;
        for f in &m.failures {
            tx.execute(
                "INSERT INTO image_failures VALUES (?, ?, 'prepare', ?, ?, ?)",
                duckdb::params![
                    m.dataset,
                    f.image_id,
                    f.rel_path,
                    f.error,
                    timestamp(SystemTime::now())
                ],
            )?;
        }
        Ok(id)
    })
}

/// Replaces the row of the converted weights, records the output as an artifact and the stage
/// run — atomically. Runs also when the stage found everything up to date, so a catalogue
/// created afterwards still learns about existing weights.
pub fn ingest_weights(
    cat: &mut Catalog,
    outcome: &crate::stages::weights::Outcome,
    started_at: SystemTime,
) -> Result<i64> {
    let m = &outcome.manifest;
    let path = outcome.path.display().to_string();
    let fingerprint = format!("{}:{}", m.source.sha256, m.rules_fingerprint);
    let run = succeeded_run("weights", &m.name, fingerprint, started_at, m)?;
    cat.transaction(|tx| {
        let id = record_stage_run(tx, &run)?;
        tx.execute("DELETE FROM weights WHERE name = ?", [&m.name])?;
        tx.execute(
            "INSERT INTO weights VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             strptime(?, '%Y-%m-%dT%H:%M:%SZ'))",
            duckdb::params![
                m.name,
                m.backbone,
                m.source.origin,
                m.source.file,
                m.source.sha256,
                m.source.member,
                m.sha256,
                path,
                m.bytes as i64,
                m.conversion.tensors as i64,
                m.conversion.mapping.skipped.len() as i64,
                m.conversion
                    .classifier_shape
                    .as_ref()
                    .and_then(|s| s.first().copied()),
                m.license,
                m.converted_at,
            ],
        )?;
        replace_artifact(
            tx,
            ArtifactRecord {
                path: path.clone(),
                kind: "weights".into(),
                sha256: m.sha256.clone(),
                bytes: m.bytes as i64,
                stage_run_id: Some(id),
                created_at: SystemTime::now(),
            },
        )?;
        Ok(id)
    })
}

/// A stage run that succeeded now, with `outputs` (the stage's manifest) as its outputs.
fn succeeded_run(
    stage: &str,
    subject: &str,
    inputs_fingerprint: String,
    started_at: SystemTime,
    outputs: &impl serde::Serialize,
) -> Result<StageRunRecord> {
    Ok(StageRunRecord {
        stage: stage.into(),
        subject: subject.into(),
        inputs_fingerprint,
        started_at,
        finished_at: Some(SystemTime::now()),
        status: StageStatus::Succeeded,
        outputs: Some(serde_json::to_value(outputs)?),
        error: None,
    })
}

/// Replaces the artifact row of `artifact.path` (a rerun writes the same path).
fn replace_artifact(tx: &duckdb::Transaction, artifact: ArtifactRecord) -> Result<()> {
    tx.execute("DELETE FROM artifacts WHERE path = ?", [&artifact.path])?;
    record_artifact(tx, &artifact)?;
    Ok(())
}

/// Records a failed stage run (its own small transaction; no data rows).
pub fn record_failure(
    cat: &mut Catalog,
    stage: &str,
    subject: &str,
    started_at: SystemTime,
    error: &str,
) -> Result<()> {
    let run = StageRunRecord {
        stage: stage.into(),
        subject: subject.into(),
        inputs_fingerprint: String::new(),
        started_at,
        finished_at: Some(SystemTime::now()),
        status: StageStatus::Failed,
        outputs: None,
        error: Some(error.to_string()),
    };
    cat.transaction(|tx| Ok(record_stage_run(tx, &run)?))?;
    Ok(())
}

/// Records a stage's result in the catalogue at `catalog`: `ingest` on success (its rows in one
/// transaction), a failed stage run on error (then the stage's error is returned unchanged; a
/// failure to record it is only logged).
pub fn record_stage<T>(
    catalog: &std::path::Path,
    stage: &str,
    subject: &str,
    started_at: SystemTime,
    result: Result<T>,
    ingest: impl FnOnce(&mut Catalog, &T, SystemTime) -> Result<i64>,
) -> Result<T> {
    let mut cat = Catalog::open_waiting_for(catalog, false, super::INDEX_PATIENCE)?;
    match result {
        Ok(outcome) => ingest(&mut cat, &outcome, started_at).map(|_| outcome),
        Err(e) => {
            let message = format!("{e:#}");
            if let Err(r) = record_failure(&mut cat, stage, subject, started_at, &message) {
                tracing::warn!("could not record the failed run: {r:#}");
            }
            Err(e)
        }
    }
}
