//! Errors of the catalogue module; each names the file (and the key or version) involved.

use std::path::PathBuf;

/// What can go wrong opening, migrating or writing the catalogue.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("creating the catalogue directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying the catalogue for reading into {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalogue {path} does not exist (run a fetch stage first)")]
    Missing { path: PathBuf },
    #[error("opening catalogue {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error(
        "catalogue {path} has schema version {found}, but this gl knows only up to {supported}: \
         it was written by a newer gl; upgrade gl or use another catalogue"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("catalogue {path}: reading schema_version")]
    ReadVersion {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error("catalogue {path}: applying migration v{version} ({name})")]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        #[source]
        source: duckdb::Error,
    },
    #[error("dataset {dataset}: {what}")]
    InconsistentDataset { dataset: String, what: String },
    #[error("{what} for {key}")]
    Sql {
        what: &'static str,
        key: String,
        #[source]
        source: duckdb::Error,
    },
}
