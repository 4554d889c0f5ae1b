//! Where a file lands: its final path and the `.part` sibling that bytes stream into, from
//! name validation through reuse of a verified file to the atomic rename.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::digest::{feed_file, Hashers};
use super::error::io_err;
use super::{FetchError, Fetched, FileSpec, CHUNK};

/// Where a spec lands: the final path and its `.part` sibling.
pub(super) struct Target<'a> {
    pub(super) spec: &'a FileSpec,
    dir: &'a Path,
    pub(super) path: PathBuf,
    pub(super) part: PathBuf,
}

impl<'a> Target<'a> {
    pub(super) fn new(spec: &'a FileSpec, dir: &'a Path) -> Result<Self, FetchError> {
        let name = spec.name.as_str();
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\'])
            && !name.contains('\0');
        if !plain {
            return Err(FetchError::InvalidName {
                name: name.to_owned(),
            });
        }
        if let Some(c) = &spec.checksum {
            c.validate(name)?;
        }
        fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
        Ok(Target {
            spec,
            dir,
            path: dir.join(name),
            part: dir.join(format!("{name}.part")),
        })
    }

    /// The final file, if it exists and verifies (size, then checksum). Without a checksum an
    /// existing file of the right size is accepted and its hashes returned for pinning.
    pub(super) fn reuse(&self) -> Result<Option<Fetched>, FetchError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("inspecting", &self.path)(e)),
        };
        if self.spec.size.is_some_and(|s| s != meta.len()) {
            return Ok(None);
        }
        let mut hashers = Hashers::new();
        feed_file(&self.path, &mut hashers)?;
        let (sha256, md5, bytes) = hashers.finish();
        if let Some(c) = &self.spec.checksum {
            if !c.matches(&sha256, &md5) {
                return Ok(None);
            }
        }
        Ok(Some(Fetched {
            path: self.path.clone(),
            sha256,
            md5,
            bytes,
            source: self.path.display().to_string(),
            reused: true,
        }))
    }

    pub(super) fn part_len(&self) -> Result<u64, FetchError> {
        match fs::metadata(&self.part) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("inspecting", &self.part)(e)),
        }
    }

    pub(super) fn remove_part(&self) -> Result<(), FetchError> {
        match fs::remove_file(&self.part) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("deleting", &self.part)(e)),
        }
    }

    /// Opens the `.part` empty (fresh start) or for appending (resume).
    pub(super) fn open_part(&self, append: bool) -> Result<BufWriter<File>, FetchError> {
        let mut o = OpenOptions::new();
        o.create(true);
        if append {
            o.append(true);
        } else {
            o.write(true).truncate(true);
        }
        let file = o.open(&self.part).map_err(io_err("opening", &self.part))?;
        Ok(BufWriter::with_capacity(CHUNK, file))
    }

    /// Checks size and checksum of the completed `.part`; on success fsyncs it, renames it
    /// atomically onto the final name and fsyncs the directory. On mismatch the `.part` is
    /// deleted and the final file (if any) is left as it was.
    pub(super) fn finish(
        &self,
        out: BufWriter<File>,
        hashers: Hashers,
        source: &str,
    ) -> Result<Fetched, FetchError> {
        let (sha256, md5, bytes) = hashers.finish();
        let size_error =
            self.spec
                .size
                .filter(|&s| s != bytes)
                .map(|expected| FetchError::SizeMismatch {
                    url: source.to_owned(),
                    expected,
                    actual: bytes,
                });
        let checksum = self.spec.checksum.as_ref();
        let mismatch = size_error.or_else(|| {
            let c = checksum.filter(|c| !c.matches(&sha256, &md5))?;
            Some(FetchError::ChecksumMismatch {
                url: source.to_owned(),
                algorithm: c.algorithm(),
                expected: c.expected(),
                actual: c.actual(&sha256, &md5).to_owned(),
            })
        });
        if let Some(error) = mismatch {
            drop(out);
            self.remove_part()?;
            return Err(error);
        }
        let file = out
            .into_inner()
            .map_err(|e| io_err("writing", &self.part)(e.into_error()))?;
        file.sync_all().map_err(io_err("syncing", &self.part))?;
        drop(file);
        fs::rename(&self.part, &self.path).map_err(io_err("renaming into place", &self.path))?;
        sync_dir(self.dir);
        Ok(Fetched {
            path: self.path.clone(),
            sha256,
            md5,
            bytes,
            source: source.to_owned(),
            reused: false,
        })
    }

    /// Human description of what the file must match, for the "place it by hand" message.
    pub(super) fn expectation(&self) -> String {
        let mut s = match &self.spec.checksum {
            Some(c) => format!("expected {} {}", c.algorithm(), c.expected()),
            None => "no checksum pinned yet".to_owned(),
        };
        if let Some(size) = self.spec.size {
            let _ = write!(s, ", {size} bytes");
        }
        s
    }

    pub(super) fn progress(&self, show: bool, total: Option<u64>, start: u64) -> ProgressBar {
        if !show {
            return ProgressBar::hidden();
        }
        let template = match total {
            Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            None => "{msg} {spinner} {bytes} {bytes_per_sec}",
        };
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(self.spec.name.clone());
        bar.set_position(start);
        bar
    }
}

/// Makes a completed rename durable. Best effort: some filesystems refuse to fsync a directory,
/// and the file itself is already synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
