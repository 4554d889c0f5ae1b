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
    /// Another process holds the file (DuckDB locks it whole: one read-write process, or any
    /// number of read-only ones, never both). The usual holder is a notebook on the live file,
    /// so the message names the copy to read instead, not DuckDB's hint to open it read-only
    /// (which would block `gl`'s writers just the same).
    #[error(
        "catalogue {path} is held by another process (a notebook?): read a copy instead — \
         `gl export catalog PATH` writes one that never stops gl (the holder: {holder})"
    )]
    Held { path: PathBuf, holder: String },
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

impl CatalogError {
    /// [`CatalogError::Held`] when DuckDB could not lock `path` because another process holds
    /// it, else [`CatalogError::Open`].
    pub(super) fn opening(path: &std::path::Path, source: duckdb::Error) -> Self {
        let text = source.to_string();
        match holder(&text) {
            Some(holder) => CatalogError::Held {
                path: path.to_path_buf(),
                holder,
            },
            None => CatalogError::Open {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// The holder DuckDB names in a lock conflict ("Could not set lock on file …: Conflicting lock
/// is held in /usr/bin/python3 (PID 123) …" gives "/usr/bin/python3 (PID 123)"), or "unknown"
/// when it names none; `None` when `text` is not a lock conflict.
fn holder(text: &str) -> Option<String> {
    if !text.contains("Could not set lock on file") {
        return None;
    }
    const HELD: &str = "Conflicting lock is held in ";
    let named = text.find(HELD).and_then(|i| {
        let rest = &text[i + HELD.len()..];
        rest.find(')').map(|j| rest[..=j].to_string())
    });
    Some(named.unwrap_or_else(|| "unknown".to_string()))
}

#[cfg(test)]
mod tests {
    use super::holder;

    #[test]
    fn a_lock_conflict_names_its_holder_and_other_errors_are_none() {
        let duck = "IO Error: Could not set lock on file \"/d/catalog.duckdb\": Conflicting \
                    lock is held in /usr/bin/python3.11 (PID 4242). However, you would be able \
                    to open this database in read-only mode";
        assert_eq!(holder(duck).unwrap(), "/usr/bin/python3.11 (PID 4242)");
        let bare = "IO Error: Could not set lock on file \"/d/c.duckdb\": Resource busy";
        assert_eq!(holder(bare).unwrap(), "unknown");
        assert_eq!(
            holder("IO Error: Cannot open file: Permission denied"),
            None
        );
    }
}
