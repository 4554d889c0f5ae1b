//! Streaming download of dataset files with resume, retries, mirrors and checksum verification.
//!
//! Dataset archives (CUB-200-2011 is 1.1 GB) come from flaky academic servers, so a download
//! must survive a cut connection without starting over, must never leave a half-written or
//! unverified file under its final name, and — when every mirror fails — must tell the user
//! exactly which file to place where by hand.
//!
//! The protocol for one [`FileSpec`]:
//! 1. `dest_dir/name` already exists and verifies → reused, no network.
//! 2. Otherwise each URL is tried in order. Bytes stream into `dest_dir/name.part` while
//!    sha256 and md5 are computed. A `.part` left by an earlier attempt is resumed with
//!    `Range: bytes=<len>-` (206 → append after hashing the existing bytes; 200 → restart).
//! 3. Transient failures (connection errors, cut bodies, 5xx, 408, 429) are retried with
//!    exponential backoff; other HTTP errors (404, 403, …) move to the next mirror at once.
//! 4. Only a file whose size and checksum match is fsynced and renamed atomically onto the
//!    final name; a mismatching `.part` is deleted and an existing final file stays untouched.
//!
//! One process per destination file is assumed: two concurrent fetches of the same file
//! would share the `.part`.
//!
//! Submodules: `digest` (checksums and streaming hashing), `error` (errors and the retry
//! plan), `target` (the `.part` and the final file), `source` (URL parsing), `http` (one
//! HTTP attempt), `local` (copies of local files) and `check` (`gl fetch --check`: does a URL
//! answer, downloading nothing).

pub mod check;
mod digest;
mod error;
mod http;
mod local;
mod source;
mod target;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

pub use digest::{hash_file, Checksum};
pub use error::{FetchError, SourceFailure};

use error::Plan;
use source::Source;
use target::Target;

/// Buffer size for streaming copies.
const CHUNK: usize = 256 * 1024;
/// Largest backoff doubling exponent, so that a large `retries` cannot overflow the sleep.
const MAX_BACKOFF_DOUBLINGS: u32 = 16;

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// File name inside the destination directory (no path separators).
    pub name: String,
    /// Mirrors, tried in order: `http://`, `https://` or `file:///absolute/path`.
    pub urls: Vec<String>,
    /// `None` pins on first download: the caller stores the returned sha256.
    pub checksum: Option<Checksum>,
    /// Expected size in bytes, checked when given.
    pub size: Option<u64>,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Retries per URL after the first attempt, for transient failures only.
    pub retries: u32,
    /// Sleep before the first retry; doubled for each further retry.
    pub backoff: Duration,
    /// Limit for connecting and for each network read or write (not the whole body, which
    /// may legitimately take many minutes).
    pub timeout: Duration,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 4,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            progress: true,
        }
    }
}

/// A verified file in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: String,
    pub md5: String,
    pub bytes: u64,
    /// URL or local path the bytes came from (the final path itself when reused).
    pub source: String,
    /// True when an existing verified file was kept and nothing was transferred.
    pub reused: bool,
}

/// Fetches `spec` into `dest_dir`, verifying it; see the module documentation for the protocol.
pub fn fetch(spec: &FileSpec, dest_dir: &Path, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let target = Target::new(spec, dest_dir)?;
    if let Some(found) = target.reuse()? {
        return Ok(found);
    }
    let agent = http::agent(opts);
    let mut failures = Vec::new();
    for url in &spec.urls {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut resumed = false;
            let result = match source::parse(url) {
                Ok(Source::Http(u)) => http::attempt(&agent, &u, &target, opts, &mut resumed),
                Ok(Source::Local(p)) => local::copy(&p, url, &target, opts),
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let next = match error.plan() {
                // A mismatch after resuming may come from a stale `.part` (already deleted):
                // one more try from byte zero is worth it.
                Plan::NextSource
                    if resumed && matches!(error, FetchError::ChecksumMismatch { .. }) =>
                {
                    Plan::Retry
                }
                n => n,
            };
            match next {
                Plan::Abort => return Err(error),
                Plan::Retry if attempts <= opts.retries => {
                    let doublings = (attempts - 1).min(MAX_BACKOFF_DOUBLINGS);
                    thread::sleep(opts.backoff.saturating_mul(1 << doublings));
                }
                _ => {
                    failures.push(SourceFailure {
                        url: url.clone(),
                        attempts,
                        error,
                    });
                    break;
                }
            }
        }
    }
    Err(FetchError::AllSourcesFailed {
        name: spec.name.clone(),
        dest: target.path.clone(),
        expected: target.expectation(),
        failures,
    })
}

/// Copies a file the user downloaded by hand (`gl fetch cub --from <path>`) into `dest_dir`
/// with the same verification and atomic rename as a download.
pub fn fetch_from_local(
    spec: &FileSpec,
    local: &Path,
    dest_dir: &Path,
) -> Result<Fetched, FetchError> {
    let target = Target::new(spec, dest_dir)?;
    if spec.checksum.is_some() {
        if let Some(found) = target.reuse()? {
            return Ok(found);
        }
    }
    let opts = FetchOptions {
        progress: false,
        ..FetchOptions::default()
    };
    local::copy(local, &local.display().to_string(), &target, &opts)
}
