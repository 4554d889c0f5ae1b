//! Typed rows of the catalogue and the functions stages use to write and read them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duckdb::types::{TimeUnit, Value};
use duckdb::{params, Connection, OptionalExt as _, Transaction};

use super::CatalogError;

/// One dataset as fetched: provenance, counts and where its images live.
///
/// The counts must agree with the images stored with it (checked by [`replace_dataset`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRecord {
    /// Primary key, e.g. `cub200`.
    pub name: String,
    /// What kind of dataset (`cub200`, `cars196`, `sop`, `glyphs`, …).
    pub kind: String,
    /// Where it came from (URL, package name or generator).
    pub source: String,
    /// sha256 of the downloaded archive, when there was one.
    pub archive_checksum: Option<String>,
    pub license: Option<String>,
    pub n_images: i64,
    /// Distinct class ids over all splits.
    pub n_classes: i64,
    pub n_train: i64,
    pub n_test: i64,
    /// Directory the images' `rel_path`s are relative to.
    pub root: String,
    /// Stored as a UTC `TIMESTAMP` with microsecond precision.
    pub fetched_at: SystemTime,
}

pub use crate::data::index::{BBox, ImageEntry as ImageRecord, Split};

/// State of a stage run (the `stage_runs.status` CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    Running,
    Succeeded,
    Failed,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
        }
    }
}

/// One execution of a stage on one subject (usually a dataset name).
#[derive(Debug, Clone, PartialEq)]
pub struct StageRunRecord {
    pub stage: String,
    pub subject: String,
    /// Hash of everything the stage read (settings, input files); equal fingerprints mean the
    /// stage may be skipped.
    pub inputs_fingerprint: String,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
    pub status: StageStatus,
    pub outputs: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A file a stage wrote, keyed by its path.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    pub path: String,
    pub kind: String,
    pub sha256: String,
    pub bytes: i64,
    pub stage_run_id: Option<i64>,
    pub created_at: SystemTime,
}

/// A `SystemTime` as a DuckDB `TIMESTAMP` (microseconds since the Unix epoch, UTC).
pub(crate) fn timestamp(t: SystemTime) -> Value {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

/// The inverse of [`timestamp`]; `None` for anything that is not a timestamp.
fn system_time(v: &Value) -> Option<SystemTime> {
    let Value::Timestamp(unit, n) = *v else {
        return None;
    };
    let micros = unit.to_micros(n);
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// Replaces everything the catalogue knows about `dataset.name` by `dataset` and `images`.
///
/// Deletes the old `datasets` row and its `images`, then bulk-inserts the new images with
/// DuckDB's Appender (120,000 rows take well under a second). Running it twice with the same
/// input leaves the same rows. Takes a [`Transaction`] so the delete and the inserts are one
/// atomic change; the counts in `dataset` must match `images`.
pub fn replace_dataset(
    tx: &Transaction,
    dataset: &DatasetRecord,
    images: &[ImageRecord],
) -> Result<(), CatalogError> {
    check_counts(dataset, images)?;
    let name = dataset.name.as_str();
    let write_err = |what: &'static str| {
        move |source| CatalogError::Sql {
            what,
            key: format!("dataset {name}"),
            source,
        }
    };
    tx.execute("DELETE FROM images WHERE dataset = ?", [name])
        .map_err(write_err("deleting old images"))?;
    tx.execute("DELETE FROM datasets WHERE name = ?", [name])
        .map_err(write_err("deleting the old datasets row"))?;
    tx.execute(
        "INSERT INTO datasets (name, kind, source, archive_checksum, license, n_images, \
         n_classes, n_train, n_test, root, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            name,
            dataset.kind,
            dataset.source,
            dataset.archive_checksum,
            dataset.license,
            dataset.n_images,
            dataset.n_classes,
            dataset.n_train,
            dataset.n_test,
            dataset.root,
            timestamp(dataset.fetched_at),
        ],
    )
    .map_err(write_err("inserting the datasets row"))?;

    let mut appender = tx
        .appender("images")
        .map_err(write_err("creating the images appender"))?;
    for im in images {
        let b = im.bbox;
        appender
            .append_row(params![
                name,
                im.image_id,
                im.rel_path,
                im.class_id,
                im.split.as_str(),
                b.map(|b| b.x1),
                b.map(|b| b.y1),
                b.map(|b| b.x2),
                b.map(|b| b.y2),
            ])
            .map_err(|source| CatalogError::Sql {
                what: "appending an image",
                key: format!("dataset {name} image_id {}", im.image_id),
                source,
            })?;
    }
    // Constraint violations surface at flush; an implicit flush on drop would swallow them.
    appender
        .flush()
        .map_err(write_err("flushing the images appender"))?;
    Ok(())
}

/// The counts in `dataset` must describe `images`, and image ids must be unique.
fn check_counts(dataset: &DatasetRecord, images: &[ImageRecord]) -> Result<(), CatalogError> {
    let bad = |what: String| CatalogError::InconsistentDataset {
        dataset: dataset.name.clone(),
        what,
    };
    let mut ids = HashSet::with_capacity(images.len());
    let mut classes = HashSet::new();
    let (mut train, mut test) = (0i64, 0i64);
    for im in images {
        if !ids.insert(im.image_id) {
            return Err(bad(format!("image_id {} appears twice", im.image_id)));
        }
        classes.insert(im.class_id);
        match im.split {
            Split::Train => train += 1,
            Split::Test => test += 1,
            Split::Val => {}
        }
    }
    let checks = [
        ("n_images", dataset.n_images, images.len() as i64),
        ("n_classes", dataset.n_classes, classes.len() as i64),
        ("n_train", dataset.n_train, train),
        ("n_test", dataset.n_test, test),
    ];
    for (field, claimed, actual) in checks {
        if claimed != actual {
            return Err(bad(format!(
                "{field} is {claimed} but the images give {actual}"
            )));
        }
    }
    Ok(())
}

/// Inserts a stage run and returns its `run_id`.
///
/// A stage usually records `Running` in its own committed transaction, does its work in
/// [`super::Catalog::transaction`], then calls [`finish_stage_run`] — so a failure, whose work is
/// rolled back, is still recorded as `failed`.
pub fn record_stage_run(conn: &Connection, run: &StageRunRecord) -> Result<i64, CatalogError> {
    let outputs = run.outputs.as_ref().map(|o| o.to_string());
    conn.query_row(
        "INSERT INTO stage_runs (stage, subject, inputs_fingerprint, started_at, finished_at, \
         status, outputs, error) VALUES (?, ?, ?, ?, ?, ?, ?::JSON, ?) RETURNING run_id",
        params![
            run.stage,
            run.subject,
            run.inputs_fingerprint,
            timestamp(run.started_at),
            run.finished_at.map(timestamp),
            run.status.as_str(),
            outputs,
            run.error,
        ],
        |row| row.get(0),
    )
    .map_err(|source| CatalogError::Sql {
        what: "inserting a stage run",
        key: format!("stage {} subject {}", run.stage, run.subject),
        source,
    })
}

/// Marks stage run `run_id` finished now with `status`, its outputs and error message.
pub fn finish_stage_run(
    conn: &Connection,
    run_id: i64,
    status: StageStatus,
    outputs: Option<&serde_json::Value>,
    error: Option<&str>,
) -> Result<(), CatalogError> {
    let write_err = |source| CatalogError::Sql {
        what: "finishing a stage run",
        key: format!("run_id {run_id}"),
        source,
    };
    let n = conn
        .execute(
            "UPDATE stage_runs SET finished_at = ?, status = ?, outputs = ?::JSON, error = ? \
             WHERE run_id = ?",
            params![
                timestamp(SystemTime::now()),
                status.as_str(),
                outputs.map(|o| o.to_string()),
                error,
                run_id,
            ],
        )
        .map_err(write_err)?;
    if n != 1 {
        return Err(write_err(duckdb::Error::QueryReturnedNoRows));
    }
    Ok(())
}

/// Inserts or replaces the artifact row for `artifact.path`.
pub fn record_artifact(conn: &Connection, artifact: &ArtifactRecord) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT OR REPLACE INTO artifacts (path, kind, sha256, bytes, stage_run_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
        params![
            artifact.path,
            artifact.kind,
            artifact.sha256,
            artifact.bytes,
            artifact.stage_run_id,
            timestamp(artifact.created_at),
        ],
    )
    .map_err(|source| CatalogError::Sql {
        what: "recording an artifact",
        key: format!("path {}", artifact.path),
        source,
    })?;
    Ok(())
}

/// Reads back the `datasets` row for `name`, if any.
pub fn load_dataset(conn: &Connection, name: &str) -> Result<Option<DatasetRecord>, CatalogError> {
    conn.query_row(
        "SELECT name, kind, source, archive_checksum, license, n_images, n_classes, n_train, \
         n_test, root, fetched_at FROM datasets WHERE name = ?",
        [name],
        |r| {
            let fetched_at: Value = r.get(10)?;
            let fetched_at = system_time(&fetched_at).ok_or_else(|| {
                duckdb::Error::FromSqlConversionFailure(
                    10,
                    duckdb::types::Type::Timestamp,
                    format!("fetched_at is not a representable timestamp: {fetched_at:?}").into(),
                )
            })?;
            Ok(DatasetRecord {
                name: r.get(0)?,
                kind: r.get(1)?,
                source: r.get(2)?,
                archive_checksum: r.get(3)?,
                license: r.get(4)?,
                n_images: r.get(5)?,
                n_classes: r.get(6)?,
                n_train: r.get(7)?,
                n_test: r.get(8)?,
                root: r.get(9)?,
                fetched_at,
            })
        },
    )
    .optional()
    .map_err(|source| CatalogError::Sql {
        what: "reading the datasets row",
        key: format!("dataset {name}"),
        source,
    })
}

/// Reads back the images of dataset `name`, ordered by `image_id`.
pub fn load_images(conn: &Connection, name: &str) -> Result<Vec<ImageRecord>, CatalogError> {
    let read_err = |source| CatalogError::Sql {
        what: "reading images",
        key: format!("dataset {name}"),
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT image_id, rel_path, class_id, split, bbox_x1, bbox_y1, bbox_x2, bbox_y2 \
             FROM images WHERE dataset = ? ORDER BY image_id",
        )
        .map_err(read_err)?;
    let rows = stmt
        .query_map([name], |r| {
            let split: String = r.get(3)?;
            let corners: [Option<f64>; 4] = [r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?];
            let bbox = match corners {
                [Some(x1), Some(y1), Some(x2), Some(y2)] => Some(BBox { x1, y1, x2, y2 }),
                _ => None,
            };
            Ok(ImageRecord {
                image_id: r.get(0)?,
                rel_path: r.get(1)?,
                class_id: r.get(2)?,
                split: split.parse().map_err(|e: String| {
                    duckdb::Error::FromSqlConversionFailure(3, duckdb::types::Type::Text, e.into())
                })?,
                bbox,
            })
        })
        .map_err(read_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
}
