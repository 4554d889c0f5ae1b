//! Versioned schema migrations.
//!
//! [`MIGRATIONS`] is an ordered, append-only list: version `n` is the `n`-th entry and is never
//! edited once released — a change is a new migration. Each migration runs in its own transaction
//! together with the `schema_version` row that records it, so a crash leaves either the old or the
//! new schema, never a mix.
//!
//! Foreign keys are deliberately not declared: DuckDB checks them eagerly, which rejects deleting
//! a dataset and its images in the same transaction. [`super::records::replace_dataset`] keeps
//! `images` and `datasets` consistent instead.

use std::path::Path;
use std::time::SystemTime;

use duckdb::{params, Connection};

use super::records::timestamp;
use super::CatalogError;

/// One schema change: its version (1-based, consecutive), a short name, and the SQL to run.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "datasets, images, stage_runs, artifacts",
        sql: r#"
CREATE TABLE datasets (
    name             VARCHAR PRIMARY KEY,
    kind             VARCHAR NOT NULL,
    source           VARCHAR NOT NULL,
    archive_checksum VARCHAR,
    license          VARCHAR,
    n_images         BIGINT NOT NULL,
    n_classes        BIGINT NOT NULL,
    n_train          BIGINT NOT NULL,
    n_test           BIGINT NOT NULL,
    root             VARCHAR NOT NULL,
    fetched_at       TIMESTAMP NOT NULL
);
CREATE TABLE images (
    dataset  VARCHAR NOT NULL,
    image_id BIGINT NOT NULL,
    rel_path VARCHAR NOT NULL,
    class_id BIGINT NOT NULL,
    split    VARCHAR NOT NULL CHECK (split IN ('train', 'test', 'val')),
    bbox_x1  DOUBLE,
    bbox_y1  DOUBLE,
    bbox_x2  DOUBLE,
    bbox_y2  DOUBLE,
    PRIMARY KEY (dataset, image_id)
);
CREATE SEQUENCE stage_run_ids START 1;
CREATE TABLE stage_runs (
    run_id             BIGINT PRIMARY KEY DEFAULT nextval('stage_run_ids'),
    stage              VARCHAR NOT NULL,
    subject            VARCHAR NOT NULL,
    inputs_fingerprint VARCHAR NOT NULL,
    started_at         TIMESTAMP NOT NULL,
    finished_at        TIMESTAMP,
    status             VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    outputs            JSON,
    error              VARCHAR
);
CREATE TABLE artifacts (
    path         VARCHAR PRIMARY KEY,
    kind         VARCHAR NOT NULL,
    sha256       VARCHAR NOT NULL,
    bytes        BIGINT NOT NULL,
    stage_run_id BIGINT,
    created_at   TIMESTAMP NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        name: "image_failures",
        sql: r#"
CREATE TABLE image_failures (
    dataset     VARCHAR NOT NULL,
    image_id    BIGINT NOT NULL,
    stage       VARCHAR NOT NULL,
    rel_path    VARCHAR NOT NULL,
    error       VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (dataset, image_id, stage)
);
"#,
    },
    Migration {
        version: 3,
        name: "weights",
        sql: r#"
CREATE TABLE weights (
    name               VARCHAR PRIMARY KEY,
    backbone           VARCHAR NOT NULL,
    source             VARCHAR NOT NULL,
    source_file        VARCHAR NOT NULL,
    source_sha256      VARCHAR NOT NULL,
    member             VARCHAR,
    sha256             VARCHAR NOT NULL,
    path               VARCHAR NOT NULL,
    bytes              BIGINT NOT NULL,
    tensors            BIGINT NOT NULL,
    skipped            BIGINT NOT NULL,
    classifier_classes BIGINT,
    license            VARCHAR,
    converted_at       TIMESTAMP NOT NULL
);
"#,
    },
    Migration {
        version: 4,
        name: "runs, epochs",
        sql: super::runs::MIGRATION_SQL,
    },
    Migration {
        version: 5,
        name: "embeddings, evaluations, metrics, ensembles",
        sql: super::evaluations::MIGRATION_SQL,
    },
    Migration {
        version: 6,
        name: "pipeline_tasks, pipeline_profiles",
        sql: super::pipeline::MIGRATION_SQL,
    },
    Migration {
        version: 7,
        name: "pipeline_profiles.tasks",
        sql: super::pipeline::MIGRATION_7_SQL,
    },
    Migration {
        version: 8,
        name: "runs.status failed, interrupted",
        sql: super::runs::MIGRATION_8_SQL,
    },
    Migration {
        version: 9,
        name: "environment columns of runs, embeddings, evaluations",
        sql: super::environments::MIGRATION_SQL,
    },
    Migration {
        version: 10,
        name: "epochs.val_map_at_r, test_map_at_r",
        sql: super::runs::MIGRATION_10_SQL,
    },
];

/// The newest schema version this binary can read and write.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)";

/// Brings the catalogue at `path` up to [`latest_version`]; returns the version it ends at.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, CatalogError> {
    let migration_err = |m: &Migration| {
        let (version, name) = (m.version, m.name);
        move |source| CatalogError::Migration {
            path: path.to_path_buf(),
            version,
            name,
            source,
        }
    };
    conn.execute_batch(CREATE_VERSION_TABLE)
        .map_err(|source| CatalogError::ReadVersion {
            path: path.to_path_buf(),
            source,
        })?;
    let found = current_version(conn, path)?;
    check_not_newer(found, path)?;
    let mut current = found;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.transaction().map_err(migration_err(m))?;
        tx.execute_batch(m.sql).map_err(migration_err(m))?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            params![m.version, m.name, timestamp(SystemTime::now())],
        )
        .map_err(migration_err(m))?;
        tx.commit().map_err(migration_err(m))?;
        current = m.version;
    }
    Ok(current)
}

/// The highest version recorded in `schema_version` (0 for a catalogue without the table).
pub(super) fn current_version(conn: &Connection, path: &Path) -> Result<u32, CatalogError> {
    let read_err = |source| CatalogError::ReadVersion {
        path: path.to_path_buf(),
        source,
    };
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = 'main' \
             AND table_name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(read_err)?;
    if !has_table {
        return Ok(0);
    }
    let version: Option<u32> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(read_err)?;
    Ok(version.unwrap_or(0))
}

/// Refuses a catalogue written by a newer binary, whose tables this one does not know.
pub(super) fn check_not_newer(found: u32, path: &Path) -> Result<(), CatalogError> {
    if found > latest_version() {
        return Err(CatalogError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: latest_version(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {}", m.name);
        }
    }

    /// Migration 8 rebuilds `runs` for its new statuses: rows of a v7 catalogue survive it.
    #[test]
    fn runs_rows_survive_migration_8_and_may_then_read_interrupted() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.duckdb");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(CREATE_VERSION_TABLE).unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 7) {
            conn.execute_batch(m.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                params![m.version, m.name, timestamp(SystemTime::now())],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO runs VALUES ('r1', 'demo', 'demo', 3, 'tiny_cnn', 'group_loss', \
             'val', 'cpu', 'runs/r1', 'running', 2, 1, 1, NULL, 0.5, NULL, NULL, NULL, \
             '{\"a\": 1}', NULL, now(), now()); \
             INSERT INTO epochs VALUES ('r1', 1, 0.1, 2.0, 1.5, 0.5, 10, 40, 1.0, 0.5, 4.0, \
             0.7, 0.6, '[0.7]', '[0.6]', NULL)",
        )
        .unwrap();
        let interrupted = "UPDATE runs SET status = 'interrupted'";
        assert!(
            conn.execute_batch(interrupted).is_err(),
            "v7 knows no such status"
        );
        assert_eq!(migrate(&mut conn, &path).unwrap(), latest_version());
        conn.execute_batch(interrupted).unwrap();
        let row: (String, u64, f64, String, String) = conn
            .query_row(
                "SELECT run_id, seed, test_r1_val_selected, config::VARCHAR, status FROM runs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row.0, "r1");
        assert_eq!((row.1, row.2), (3, 0.5));
        assert_eq!(
            (row.3.as_str(), row.4.as_str()),
            ("{\"a\": 1}", "interrupted")
        );
        // Migration 9's environment columns are there, NULL for the old row.
        let env: Option<String> = conn
            .query_row("SELECT kernels FROM runs WHERE run_id = 'r1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(env, None);
        // Migration 10's MAP@R columns are there, NULL for the old epoch.
        let epoch: (f64, Option<f64>, Option<f64>) = conn
            .query_row(
                "SELECT val_r1, val_map_at_r, test_map_at_r FROM epochs WHERE run_id = 'r1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(epoch, (0.7, None, None));
    }
}
