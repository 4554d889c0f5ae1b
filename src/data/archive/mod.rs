//! Safe extraction of dataset archives (.tar.gz/.tgz, .tar, .zip).
//!
//! Archives come from the internet, so every entry is treated as hostile: absolute paths,
//! `..` components, links that point outside the archive, writes through links and special
//! files (devices, fifos) are rejected with the entry's name. Extraction happens in a temp
//! directory beside `dest` (same filesystem), which is renamed onto `dest` only after the
//! whole archive — including the gzip trailer — has been read successfully; on any error the
//! temp directory is removed and an existing `dest` is left as it was.
//!
//! Submodules: `error` ([`ArchiveError`]), `extractor` (writing validated entries into the
//! staging directory), `paths` (entry-path and link containment checks), and the two
//! readers `tar` and `zip`.

mod error;
mod extractor;
mod paths;
mod tar;
mod zip;

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

pub use error::ArchiveError;

use error::io_err;
use extractor::{set_mode, Extractor};

/// Archive formats we extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Tar,
    Zip,
}

impl ArchiveKind {
    /// Detects the format from the file name (`.tgz`, `.tar.gz`, `.tar`, `.zip`, any case).
    pub fn from_path(path: &Path) -> Result<ArchiveKind, ArchiveError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Ok(ArchiveKind::TarGz)
        } else if name.ends_with(".tar") {
            Ok(ArchiveKind::Tar)
        } else if name.ends_with(".zip") {
            Ok(ArchiveKind::Zip)
        } else {
            Err(ArchiveError::UnknownKind {
                path: path.to_owned(),
            })
        }
    }
}

/// How much one archive may write: a small archive that expands without bound (a
/// decompression bomb) is stopped once it passes these, and nothing it wrote is kept.
/// Per dataset in the registry (`limits = { … }`); the defaults fit SOP (≈ 3 GB, 120 k files)
/// many times over.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of file content in all.
    pub max_bytes: u64,
    /// Files (hard links included).
    pub max_files: u64,
    /// Bytes written per byte of archive, checked once more than [`Limits::RATIO_FLOOR`]
    /// bytes were written (tiny archives of text legitimately expand a lot).
    pub max_ratio: f64,
}

impl Limits {
    /// Bytes an archive may always write, whatever its ratio.
    pub const RATIO_FLOOR: u64 = 64 << 20;

    /// The most bytes an archive of `archive_bytes` may write under these limits.
    pub fn byte_budget(&self, archive_bytes: u64) -> u64 {
        let by_ratio = (self.max_ratio * archive_bytes as f64).min(u64::MAX as f64) as u64;
        self.max_bytes.min(by_ratio.max(Self::RATIO_FLOOR))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_files: 5_000_000,
            max_ratio: 200.0,
        }
    }
}

/// What an extraction produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Regular files written (hard links included; directories and symlinks not).
    pub files: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Extracts `archive` into the directory `dest` under the default [`Limits`].
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
) -> Result<ExtractSummary, ArchiveError> {
    extract_limited(archive, kind, dest, &Limits::default())
}

/// Extracts `archive` into the directory `dest`, replacing an existing `dest` only after the
/// whole archive was extracted within `limits`; see the module documentation for what is
/// rejected.
pub fn extract_limited(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
    limits: &Limits,
) -> Result<ExtractSummary, ArchiveError> {
    let dest_name = dest
        .file_name()
        .ok_or_else(|| ArchiveError::InvalidDest {
            dest: dest.to_owned(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err("creating directory", &parent))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{dest_name}.extract-"))
        .tempdir_in(&parent)
        .map_err(io_err("creating a temp directory in", &parent))?;
    let open = |source| ArchiveError::Open {
        archive: archive.to_owned(),
        source,
    };
    let file = File::open(archive).map_err(open)?;
    let archive_bytes = file.metadata().map_err(open)?.len();
    let mut out = Extractor::new(archive, staging.path(), limits, archive_bytes);
    match kind {
        ArchiveKind::TarGz => out.tar(GzDecoder::new(BufReader::new(file)))?,
        ArchiveKind::Tar => out.tar(BufReader::new(file))?,
        ArchiveKind::Zip => out.zip(file)?,
    }
    out.check_symlinks()?;
    let summary = out.summary;
    // The temp dir is created private (0700); the extracted tree should look like any
    // directory made by mkdir.
    set_mode(staging.path(), Some(0o755))?;
    replace_dir(staging, dest)?;
    Ok(summary)
}

/// Renames the finished staging directory onto `dest` ([`crate::fsutil::replace_dir`]: the
/// previous tree is moved aside, and back if the rename fails).
fn replace_dir(staging: tempfile::TempDir, dest: &Path) -> Result<(), ArchiveError> {
    crate::fsutil::replace_dir(staging.path(), dest)
        .map_err(io_err("renaming into place", dest))?;
    let _ = staging.keep(); // renamed: nothing left to remove
    Ok(())
}
