//! Checksums: the expected digest of a file, and sha256 + md5 computed while bytes stream past.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use indicatif::ProgressBar;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::error::io_err;
use super::{FetchError, CHUNK};

/// Expected digest of a file, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Sha256(String),
    Md5(String),
}

impl Checksum {
    /// Algorithm name used in messages.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Md5(_) => "md5",
        }
    }

    /// The expected digest, lowercased.
    pub fn expected(&self) -> String {
        match self {
            Checksum::Sha256(h) | Checksum::Md5(h) => h.to_ascii_lowercase(),
        }
    }

    /// Of the two computed digests, the one this checksum is compared with.
    pub(super) fn actual<'a>(&self, sha256: &'a str, md5: &'a str) -> &'a str {
        match self {
            Checksum::Sha256(_) => sha256,
            Checksum::Md5(_) => md5,
        }
    }

    pub(super) fn matches(&self, sha256: &str, md5: &str) -> bool {
        self.expected() == self.actual(sha256, md5)
    }

    /// Rejects a digest of the wrong length or with non-hex characters before any download,
    /// so a typo in a dataset table is not reported as a corrupt download.
    pub(super) fn validate(&self, name: &str) -> Result<(), FetchError> {
        let (h, len) = match self {
            Checksum::Sha256(h) => (h, 64),
            Checksum::Md5(h) => (h, 32),
        };
        if h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FetchError::InvalidChecksum {
                name: name.to_owned(),
                algorithm: self.algorithm(),
                value: h.clone(),
                len,
            });
        }
        Ok(())
    }
}

/// sha256 and md5 computed together while bytes stream past.
pub(super) struct Hashers {
    sha256: Sha256,
    md5: Md5,
    pub(super) bytes: u64,
}

impl Hashers {
    pub(super) fn new() -> Self {
        Hashers {
            sha256: Sha256::new(),
            md5: Md5::new(),
            bytes: 0,
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        self.md5.update(data);
        self.bytes += data.len() as u64;
    }

    /// (sha256, md5, bytes), the digests as lowercase hex.
    pub(super) fn finish(self) -> (String, String, u64) {
        (
            hex::encode(self.sha256.finalize()),
            hex::encode(self.md5.finalize()),
            self.bytes,
        )
    }
}

/// Failure of a streaming copy: the source broke, or writing the destination failed.
pub(super) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` to `out` until EOF, hashing every byte. What was read before an error is
/// flushed, so a `.part` always holds exactly the hashed bytes and can be resumed.
pub(super) fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    hashers: &mut Hashers,
    bar: &ProgressBar,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.flush().map_err(CopyError::Write)?;
                return Err(CopyError::Read(e));
            }
        };
        hashers.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        bar.inc(n as u64);
    }
    out.flush().map_err(CopyError::Write)
}

/// Computes (sha256, md5) of a file as lowercase hex.
pub fn hash_file(path: &Path) -> Result<(String, String), FetchError> {
    let mut hashers = Hashers::new();
    feed_file(path, &mut hashers)?;
    let (sha256, md5, _) = hashers.finish();
    Ok((sha256, md5))
}

/// Feeds every byte of a file into `hashers`.
pub(super) fn feed_file(path: &Path, hashers: &mut Hashers) -> Result<(), FetchError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let bar = ProgressBar::hidden();
    copy_hashing(&mut file, &mut io::sink(), hashers, &bar).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => io_err("reading", path)(e),
    })
}
