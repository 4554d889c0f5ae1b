//! Errors of archive extraction.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Errors of [`extract`](super::extract). Every variant about an entry names the archive and
/// the entry.
#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("cannot tell the archive type of {}: expected .tar.gz, .tgz, .tar or .zip", path.display())]
    UnknownKind { path: PathBuf },
    #[error("opening archive {}", archive.display())]
    Open {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {} is truncated or corrupt", archive.display())]
    Corrupt {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {} is not a readable zip file", archive.display())]
    Zip {
        archive: PathBuf,
        #[source]
        source: ::zip::result::ZipError,
    },
    #[error("archive {}: entry {entry:?} holds {actual} of its {expected} bytes (truncated)", archive.display())]
    ShortEntry {
        archive: PathBuf,
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("archive {}: entry {entry:?} has an absolute path", archive.display())]
    AbsolutePath { archive: PathBuf, entry: String },
    #[error("archive {}: entry {entry:?} contains a `..` component", archive.display())]
    ParentDir { archive: PathBuf, entry: String },
    #[error("archive {}: link {entry:?} -> {target:?} points outside the archive root", archive.display())]
    LinkEscapes {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("archive {}: entry {entry:?} would be written through the symlink {link:?}", archive.display())]
    ThroughSymlink {
        archive: PathBuf,
        entry: String,
        link: String,
    },
    #[error("archive {}: hard link {entry:?} -> {target:?} must name a regular file extracted before it", archive.display())]
    HardlinkTarget {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("archive {}: entry {entry:?} is a {kind}, which is not supported", archive.display())]
    UnsupportedEntry {
        archive: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("archive {}: entry {entry:?} goes past the extraction limit of {limit} (a decompression bomb? raise `limits` in the dataset's registry entry if the archive is genuine)", archive.display())]
    TooLarge {
        archive: PathBuf,
        entry: String,
        limit: String,
    },
    #[error("archive {}: entry {entry:?} conflicts with an earlier entry of another type", archive.display())]
    Conflict { archive: PathBuf, entry: String },
    #[error("destination {} must name a directory to create (it has no final component)", dest.display())]
    InvalidDest { dest: PathBuf },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Maps an I/O error on `path` during `op` ("creating", "writing", …) to [`ArchiveError::Io`].
pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io { op, path, source }
}
