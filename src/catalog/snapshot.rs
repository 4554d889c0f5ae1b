//! Consistent copies of the catalogue, so that no reader holds the live file a writer needs:
//! DuckDB locks a database file whole — one read-write process, or any number of read-only
//! ones, never both — so a notebook holding `data/catalog.duckdb` open, even read-only, makes
//! every `gl` writer wait and then fail.
//!
//! [`take`] copies the file and its write-ahead log into a scratch directory (what `gl sql` and
//! `gl report` read, [`super::Catalog::open_snapshot`]); [`export`] folds the log into the copy
//! and puts it, read-only and atomically, where `gl export catalog PATH` says: a notebook's copy
//! that it may hold open as long as it likes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use duckdb::{AccessMode, Connection};

use super::{Catalog, CatalogError};
use crate::tempfiles::Scratch;

/// How many times a copy is taken before giving up (a writer checkpointing meanwhile).
const TRIES: usize = 5;

/// The size and modification time of a file, `None` when it does not exist.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The write-ahead log DuckDB keeps beside a database file (`<file>.wal`).
pub fn wal_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.wal", db.display()))
}

/// A scratch directory beside the catalogue `live` (its data directory's `tmp/`), or in the
/// system's temporary directory when the data directory cannot be written.
fn scratch_for(live: &Path) -> Result<Scratch, CatalogError> {
    let data_dir = live.parent().unwrap_or(Path::new("."));
    Scratch::new(data_dir)
        .or_else(|e| {
            let root = std::env::temp_dir().join("gl-scratch");
            tracing::warn!(
                "{e:#}; copying the catalogue into {} instead",
                root.display()
            );
            Scratch::new_in(&root)
        })
        .map_err(|e| CatalogError::Snapshot {
            path: crate::tempfiles::scratch_root(data_dir),
            source: std::io::Error::other(format!("{e:#}")),
        })
}

/// Copies the catalogue `live` and its log into a new scratch directory and opens the copy
/// read-only. The copy is taken again when a writer changed the file or its log while it was
/// copied, or when the copy does not open (a writer was mid-checkpoint).
pub(super) fn take(live: &Path) -> Result<(Scratch, Catalog), CatalogError> {
    if !live.is_file() {
        return Err(CatalogError::Missing {
            path: live.to_path_buf(),
        });
    }
    let dir = scratch_for(live)?;
    let copy = dir.path().join("catalog.duckdb");
    let copy_err = |source| CatalogError::Snapshot {
        path: dir.path().to_path_buf(),
        source,
    };
    let mut last = None;
    for attempt in 0..TRIES {
        let before = (stamp(live), stamp(&wal_path(live)));
        let _ = std::fs::remove_file(wal_path(&copy));
        std::fs::copy(live, &copy).map_err(copy_err)?;
        if wal_path(live).is_file() {
            std::fs::copy(wal_path(live), wal_path(&copy)).map_err(copy_err)?;
        }
        let changed = before != (stamp(live), stamp(&wal_path(live)));
        if changed && attempt + 1 < TRIES {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        match Catalog::open_read_only(&copy) {
            Ok(cat) => return Ok((dir, cat)),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last.expect("the last try opens the copy"))
}

/// What `gl export catalog` wrote.
#[derive(Debug)]
pub struct Exported {
    /// The snapshot's path, as given.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The catalogue's schema version.
    pub schema_version: u32,
    /// Rows of `runs` and of `evaluations` (0 where the table does not exist yet).
    pub runs: u64,
    pub evaluations: u64,
}

/// Writes a consistent copy of the catalogue `live` to `dest` for notebooks: one file (the
/// log folded in, so no `.wal` goes with it), mode 0444, put in place by a rename (a notebook
/// holding an earlier snapshot open keeps reading the old one). `dest` is checked first by
/// [`check_destination`]: never the live catalogue, its log, a directory, a symlink or a file
/// that is not an earlier snapshot.
pub fn export(live: &Path, dest: &Path) -> anyhow::Result<Exported> {
    check_destination(live, dest)?;
    let (dir, cat) = take(live)?;
    let copy = dir.path().join("catalog.duckdb");
    let schema_version = cat.schema_version();
    let runs = count(&cat, "runs");
    let evaluations = count(&cat, "evaluations");
    drop(cat);
    fold_log(&copy)?;
    let parent = parent_of(dest);
    let mut tmp = crate::tempfiles::temp_file_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let mut src =
        std::fs::File::open(&copy).with_context(|| format!("reading {}", copy.display()))?;
    let bytes = std::io::copy(&mut src, tmp.as_file_mut())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    crate::fsutil::persist(tmp, dest)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o444))
        .with_context(|| format!("making {} read-only", dest.display()))?;
    Ok(Exported {
        path: dest.to_path_buf(),
        bytes,
        schema_version,
        runs,
        evaluations,
    })
}

/// Rows of `table` in `cat`, 0 when it has no such table (an older catalogue).
fn count(cat: &Catalog, table: &str) -> u64 {
    cat.connection()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or(0)
}

/// Checkpoints the private copy `db`, so its log is in the file and no `.wal` is left.
fn fold_log(db: &Path) -> anyhow::Result<()> {
    let config = super::config(AccessMode::ReadWrite, db)?;
    let conn = Connection::open_with_flags(db, config)
        .with_context(|| format!("opening the copy {}", db.display()))?;
    conn.execute_batch("CHECKPOINT")
        .with_context(|| format!("checkpointing the copy {}", db.display()))?;
    drop(conn);
    anyhow::ensure!(
        std::fs::metadata(wal_path(db)).map_or(true, |m| m.len() == 0),
        "{} is still there after a checkpoint",
        wal_path(db).display()
    );
    Ok(())
}

/// The directory a path's file is in (`.` for a bare file name).
fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` starts like a DuckDB database file ("DUCK" after an 8-byte checksum).
fn is_duckdb_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 12];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[8..12] == b"DUCK")
}

/// Refuses a snapshot path that would harm what is stored: the live catalogue or its log (by
/// name, through a symlink or as a hard link), a directory, a symlink, a file that is not a
/// DuckDB database (a snapshot replaces only an earlier snapshot), a snapshot with a log
/// beside it (someone opened it for writing; the old log would be replayed onto the new
/// file), or a directory that does not exist.
pub fn check_destination(live: &Path, dest: &Path) -> anyhow::Result<()> {
    let shown = dest.display();
    let Some(name) = dest.file_name() else {
        bail!("{shown} names no file: give the snapshot's file, e.g. notebooks/catalog.duckdb");
    };
    let parent = parent_of(dest);
    let parent_real = parent.canonicalize().with_context(|| {
        format!(
            "the directory {} of {shown}: create it first",
            parent.display()
        )
    })?;
    let live_real = live
        .canonicalize()
        .with_context(|| format!("the catalogue {}", live.display()))?;
    let live_files = [live_real.clone(), wal_path(&live_real)];
    let refuse_live = || {
        anyhow::anyhow!(
            "{shown} is the live catalogue {} (or its log): `gl export catalog` writes a copy \
             of it elsewhere, e.g. notebooks/catalog.duckdb, never over it",
            live.display()
        )
    };
    if live_files.contains(&parent_real.join(name)) {
        return Err(refuse_live());
    }
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(()); // a new file in an existing directory
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dest).unwrap_or_default();
        if dest.canonicalize().is_ok_and(|t| live_files.contains(&t)) {
            return Err(refuse_live());
        }
        bail!(
            "{shown} is a symbolic link (to {}): give the snapshot's own path",
            target.display()
        );
    }
    if meta.is_dir() {
        bail!("{shown} is a directory: give the snapshot's file, e.g. {shown}/catalog.duckdb");
    }
    use std::os::unix::fs::MetadataExt;
    let same_inode = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    };
    if live_files.iter().any(|p| same_inode(p)) {
        return Err(refuse_live());
    }
    if !is_duckdb_file(dest) {
        bail!(
            "{shown} exists and is not a DuckDB database: `gl export catalog` replaces only an \
             earlier snapshot; remove it or give another path"
        );
    }
    let wal = wal_path(dest);
    if wal.exists() {
        bail!(
            "{} is beside {shown}: a process opened the snapshot for writing and may still \
             hold it; close it and remove the log, or give another path (the old log would be \
             replayed onto the new snapshot)",
            wal.display()
        );
    }
    Ok(())
}
