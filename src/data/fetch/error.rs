//! Errors of fetching, and what each one means for the retry loop.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why one source (URL or local path) failed, after `attempts` tries.
#[derive(Debug)]
pub struct SourceFailure {
    pub url: String,
    pub attempts: u32,
    pub error: FetchError,
}

/// Errors of [`fetch`](super::fetch), [`fetch_from_local`](super::fetch_from_local) and
/// [`hash_file`](super::hash_file).
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading source file {}", path.display())]
    LocalSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file name {name:?} must be a plain file name without path separators")]
    InvalidName { name: String },
    #[error("{algorithm} checksum for {name} must be {len} hex digits, got {value:?}")]
    InvalidChecksum {
        name: String,
        algorithm: &'static str,
        value: String,
        len: usize,
    },
    #[error("unsupported URL {url}: only http://, https:// and file:///absolute/path work")]
    UnsupportedUrl { url: String },
    #[error("requesting {url}")]
    Transport {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    /// A 206 for another offset, or 416; the `.part` was deleted so the retry starts at zero.
    #[error("{url} could not resume at byte {offset} (HTTP {status}); restarting from zero")]
    BadResume {
        url: String,
        offset: u64,
        status: u16,
    },
    #[error("connection to {url} broke after {received} bytes")]
    Interrupted {
        url: String,
        received: u64,
        #[source]
        source: io::Error,
    },
    #[error("{url} ended after {received} of {expected} bytes")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("size mismatch for {url}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error(
        "could not fetch {name}:{}\ndownload it by hand and place it at {} ({expected}), \
         or pass --from <path>",
        list_failures(failures),
        dest.display()
    )]
    AllSourcesFailed {
        name: String,
        dest: PathBuf,
        /// "expected sha256 …" / "expected md5 …" / "no checksum pinned yet", plus the size.
        expected: String,
        failures: Vec<SourceFailure>,
    },
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Transient: retry the same URL after backoff.
    Retry,
    /// Permanent for this URL: try the next mirror.
    NextSource,
    /// Local problem (disk full, permissions) that no mirror can fix.
    Abort,
}

impl FetchError {
    pub(super) fn plan(&self) -> Plan {
        match self {
            FetchError::Io { .. }
            | FetchError::InvalidName { .. }
            | FetchError::InvalidChecksum { .. }
            | FetchError::AllSourcesFailed { .. } => Plan::Abort,
            FetchError::Transport { .. }
            | FetchError::Interrupted { .. }
            | FetchError::Truncated { .. }
            | FetchError::BadResume { .. } => Plan::Retry,
            FetchError::Http { status, .. } => match status {
                408 | 429 | 500..=599 => Plan::Retry,
                _ => Plan::NextSource,
            },
            FetchError::LocalSource { .. }
            | FetchError::UnsupportedUrl { .. }
            | FetchError::SizeMismatch { .. }
            | FetchError::ChecksumMismatch { .. } => Plan::NextSource,
        }
    }
}

/// One line per failed source, each with its full error chain.
fn list_failures(failures: &[SourceFailure]) -> String {
    if failures.is_empty() {
        return " no URLs are configured".to_owned();
    }
    let mut out = String::new();
    for f in failures {
        let mut line = f.error.to_string();
        let mut source = std::error::Error::source(&f.error);
        while let Some(s) = source {
            line.push_str(": ");
            line.push_str(&s.to_string());
            source = s.source();
        }
        let tries = if f.attempts == 1 { "try" } else { "tries" };
        let _ = write!(out, "\n  - {} ({} {tries}): {line}", f.url, f.attempts);
    }
    out
}

/// Maps an I/O error on `path` during `op` ("opening", "writing", …) to [`FetchError::Io`].
pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError {
    let path = path.to_owned();
    move |source| FetchError::Io { op, path, source }
}
