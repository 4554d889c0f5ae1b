//! The DuckDB catalogue (`data/catalog.duckdb`): which datasets were fetched, every image with its
//! class, split and box, which stage ran on what inputs, and which artifacts it wrote.
//!
//! Stages write through [`Catalog::transaction`], so a stage that fails leaves no half-written
//! rows; `gl sql` reads through [`Catalog::open_read_only`] and [`query::query`].
//!
//! The library is DuckDB 1.5.6 linked as the prebuilt `libduckdb.so` (see `SETUP-duckdb.md`);
//! Parquet and JSON are built into it, so nothing is downloaded at run time.

/// How long a stage that indexes its outcome (`gl fetch`, `gl weights`, `gl prepare`) waits
/// for a catalogue another process holds: two pipeline tasks that end together (the weights
/// converted while the crops are prepared) each get their turn instead of one failing.
pub const INDEX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

pub mod environments;
mod error;
pub mod evaluations;
pub mod ingest;
pub mod pipeline;
pub mod query;
pub mod records;
pub mod runs;
pub mod schema;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use duckdb::{AccessMode, Config, Connection, Transaction};

pub use error::CatalogError;
pub use query::{query, OutputFormat};
pub use records::{
    finish_stage_run, record_artifact, record_stage_run, replace_dataset, ArtifactRecord, BBox,
    DatasetRecord, ImageRecord, Split, StageRunRecord, StageStatus,
};

/// An open catalogue: one DuckDB connection plus the path it came from (for error messages).
///
/// DuckDB lets one process hold a database file for writing at a time; a read-only catalogue may
/// be opened by several processes at once, but not while a writer holds the file.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
    schema_version: u32,
    /// The scratch directory of the copy a snapshot reads, in the data directory's `tmp/`
    /// (removed when the catalogue is dropped, or by the next cleaner once this process died).
    _snapshot: Option<crate::tempfiles::Scratch>,
}

impl Catalog {
    /// Opens (creating if needed) the catalogue at `path` for reading and writing, creating its
    /// parent directory and applying any migrations this binary knows and the file lacks.
    ///
    /// Fails with [`CatalogError::NewerSchema`] when the file was written by a newer `gl`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| CatalogError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let config = config(AccessMode::ReadWrite, &path)?;
        let mut conn = Connection::open_with_flags(&path, config)
            .map_err(|source| CatalogError::opening(&path, source))?;
        let schema_version = schema::migrate(&mut conn, &path)?;
        Ok(Self {
            conn,
            path,
            read_only: false,
            schema_version,
            _snapshot: None,
        })
    }

    /// Opens an existing catalogue read-only (for `gl sql` and reports): no migration is applied
    /// and any write statement fails inside DuckDB.
    ///
    /// A catalogue older than this binary opens (its tables are a subset of ours); a newer one is
    /// [`CatalogError::NewerSchema`]; a missing file is [`CatalogError::Missing`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(CatalogError::Missing { path });
        }
        let config = config(AccessMode::ReadOnly, &path)?;
        let conn = Connection::open_with_flags(&path, config)
            .map_err(|source| CatalogError::opening(&path, source))?;
        let schema_version = schema::current_version(&conn, &path)?;
        schema::check_not_newer(schema_version, &path)?;
        Ok(Self {
            conn,
            path,
            read_only: true,
            schema_version,
            _snapshot: None,
        })
    }

    /// [`Catalog::open`] or [`Catalog::open_read_only`], retrying for about 3 s while another
    /// process holds the file (a training run indexing an epoch); other errors are returned at
    /// once.
    pub fn open_waiting(path: impl AsRef<Path>, read_only: bool) -> Result<Self, CatalogError> {
        Self::open_waiting_for(path, read_only, Duration::from_secs(3))
    }

    /// As [`Catalog::open_waiting`], retrying for up to `patience`, saying every few seconds
    /// that it waits and for which file (the coordinator recording a task waits a minute
    /// rather than lose the record).
    pub fn open_waiting_for(
        path: impl AsRef<Path>,
        read_only: bool,
        patience: Duration,
    ) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let start = std::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut told = Duration::ZERO;
        loop {
            let opened = match read_only {
                true => Self::open_read_only(path),
                false => Self::open(path),
            };
            match opened {
                Err(e @ (CatalogError::Held { .. } | CatalogError::Open { .. }))
                    if start.elapsed() + delay < patience =>
                {
                    if start.elapsed() >= told + Duration::from_secs(5) {
                        told = start.elapsed();
                        tracing::warn!(
                            "waiting for the catalogue {} ({}s of at most {}s): {e}",
                            path.display(),
                            told.as_secs(),
                            patience.as_secs()
                        );
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// A read-only view of a copy of the catalogue (`gl sql`, `gl report`): a long query holds
    /// no lock on the catalogue, so it never makes a writer fail. The copy is taken again when
    /// a writer was mid-checkpoint and the copy does not open.
    ///
    /// The copy lives in a [`crate::tempfiles::Scratch`] directory in the `tmp/` beside the
    /// catalogue (the data directory's, on its filesystem; never the system's `/tmp`), so a
    /// killed reader's copy is removed by the next `gl` that cleans up.
    pub fn open_snapshot(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let (dir, mut cat) = snapshot::take(path)?;
        cat.path = path.to_path_buf();
        cat._snapshot = Some(dir);
        Ok(cat)
    }

    /// Runs `f` inside one DuckDB transaction: commits when it returns `Ok`, rolls back when it
    /// returns `Err`, so a failed stage leaves the catalogue exactly as it was.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Transaction) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction()
            .with_context(|| format!("beginning a transaction on {path}"))?;
        match f(&tx) {
            Ok(value) => {
                tx.commit()
                    .with_context(|| format!("committing a transaction on {path}"))?;
                Ok(value)
            }
            Err(err) => match tx.rollback() {
                Ok(()) => Err(err),
                Err(rollback) => {
                    Err(err.context(format!("rolling back on {path} also failed: {rollback}")))
                }
            },
        }
    }

    /// The underlying connection, for reads that need no transaction.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The file this catalogue lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the catalogue was opened with [`Catalog::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The schema version recorded in the file (after migration, for a read-write catalogue).
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
}

/// Connection settings shared by both modes. Autoloading/installing extensions is switched off:
/// everything we use (Parquet, JSON) is built into libduckdb, and a catalogue command must never
/// reach the network.
fn config(mode: AccessMode, path: &Path) -> Result<Config, CatalogError> {
    let wrap = |source| CatalogError::Open {
        path: path.to_path_buf(),
        source,
    };
    Config::default()
        .access_mode(mode)
        .map_err(wrap)?
        .enable_autoload_extension(false)
        .map_err(wrap)?
        .with("autoinstall_known_extensions", "false")
        .map_err(wrap)
}
