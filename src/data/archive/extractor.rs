//! Writing validated entries into the staging directory: regular files, directories,
//! symlinks and hard links, each checked against the root before anything is created.
//! The format readers (`tar`, `zip`) turn their entries into [`EntryKind`]s and call
//! [`Extractor::entry`].

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::paths::{display_rel, lexical_inside, relative, resolves_inside};
use super::{ArchiveError, ExtractSummary, Limits};

/// Kinds of entries we know how to write.
pub(super) enum EntryKind<'a> {
    Dir,
    File { mode: Option<u32>, size: u64 },
    Symlink(Cow<'a, Path>),
    Hardlink(Cow<'a, Path>),
}

/// Writes validated entries below `root` (the staging directory).
pub(super) struct Extractor<'a> {
    pub(super) archive: &'a Path,
    root: &'a Path,
    pub(super) summary: ExtractSummary,
    /// (entry name, link location relative to root, target) for the final containment check.
    symlinks: Vec<(String, PathBuf, PathBuf)>,
    max_files: u64,
    /// Bytes this archive may write ([`Limits::byte_budget`]).
    max_bytes: u64,
}

impl<'a> Extractor<'a> {
    pub(super) fn new(
        archive: &'a Path,
        root: &'a Path,
        limits: &Limits,
        archive_bytes: u64,
    ) -> Self {
        Extractor {
            archive,
            root,
            summary: ExtractSummary::default(),
            symlinks: Vec::new(),
            max_files: limits.max_files,
            max_bytes: limits.byte_budget(archive_bytes),
        }
    }
}

impl Extractor<'_> {
    pub(super) fn corrupt(&self) -> impl FnOnce(io::Error) -> ArchiveError {
        let archive = self.archive.to_owned();
        move |source| ArchiveError::Corrupt { archive, source }
    }

    /// Validates one entry and writes it below the root.
    pub(super) fn entry(
        &mut self,
        name: &str,
        path: &Path,
        kind: EntryKind<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        let rel = relative(self.archive, name, path)?;
        if rel.as_os_str().is_empty() {
            // "./" or similar: the root itself.
            return match kind {
                EntryKind::Dir => Ok(()),
                _ => Err(self.conflict(name)),
            };
        }
        self.make_parents(name, &rel)?;
        let full = self.root.join(&rel);
        if let EntryKind::Dir = kind {
            return match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(self.conflict(name)),
                Err(_) => fs::create_dir(&full).map_err(io_err("creating directory", &full)),
            };
        }
        // Replace an earlier file or link of the same name (later tar entries win), but never
        // write into whatever an existing symlink points at.
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => return Err(self.conflict(name)),
            Ok(_) => fs::remove_file(&full).map_err(io_err("replacing", &full))?,
            Err(_) => {}
        }
        match kind {
            EntryKind::Dir => Ok(()),
            EntryKind::File { mode, size } => self.write_file(name, &full, mode, size, data),
            EntryKind::Symlink(target) => self.symlink(name, &rel, &full, &target),
            EntryKind::Hardlink(target) => self.hardlink(name, &full, &target),
        }
    }

    /// Creates the missing parent directories of `rel`, refusing to pass through symlinks or
    /// files, so nothing can be written outside the root via an earlier link entry.
    fn make_parents(&self, name: &str, rel: &Path) -> Result<(), ArchiveError> {
        let mut current = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            current.push(c);
            match fs::symlink_metadata(&current) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ArchiveError::ThroughSymlink {
                        archive: self.archive.to_owned(),
                        entry: name.to_owned(),
                        link: display_rel(self.root, &current),
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(self.conflict(name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(io_err("creating directory", &current))?
                }
                Err(e) => return Err(io_err("inspecting", &current)(e)),
            }
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        name: &str,
        full: &Path,
        mode: Option<u32>,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        self.count_file(name)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(full)
            .map_err(io_err("creating", full))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt()(e)),
            };
            written += n as u64;
            if self.summary.bytes + written > self.max_bytes {
                return Err(ArchiveError::TooLarge {
                    archive: self.archive.to_owned(),
                    entry: name.to_owned(),
                    limit: format!("{} bytes written in all", self.max_bytes),
                });
            }
            out.write_all(&buf[..n]).map_err(io_err("writing", full))?;
        }
        if written != size {
            return Err(ArchiveError::ShortEntry {
                archive: self.archive.to_owned(),
                entry: name.to_owned(),
                expected: size,
                actual: written,
            });
        }
        set_mode(full, mode)?;
        self.summary.bytes += written;
        Ok(())
    }

    /// Counts one more file against `max_files`.
    fn count_file(&mut self, name: &str) -> Result<(), ArchiveError> {
        self.summary.files += 1;
        if self.summary.files > self.max_files {
            return Err(ArchiveError::TooLarge {
                archive: self.archive.to_owned(),
                entry: name.to_owned(),
                limit: format!("{} files", self.max_files),
            });
        }
        Ok(())
    }

    /// A symlink whose target, resolved lexically from the link's directory, stays inside the
    /// root. Chains through other links are checked once all entries exist
    /// ([`Self::check_symlinks`]).
    fn symlink(
        &mut self,
        name: &str,
        rel: &Path,
        full: &Path,
        target: &Path,
    ) -> Result<(), ArchiveError> {
        let base = rel.parent().unwrap_or(Path::new(""));
        if target.as_os_str().is_empty() || lexical_inside(&base.join(target)).is_none() {
            return Err(self.escapes(name, target));
        }
        make_symlink(target, full).map_err(|e| match e {
            Some(e) => io_err("creating symlink", full)(e),
            None => ArchiveError::UnsupportedEntry {
                archive: self.archive.to_owned(),
                entry: name.to_owned(),
                kind: "symlink (not supported on this platform)".to_owned(),
            },
        })?;
        self.symlinks
            .push((name.to_owned(), rel.to_owned(), target.to_owned()));
        Ok(())
    }

    /// A hard link to a regular file extracted earlier; the target path is relative to the
    /// archive root and may not pass through symlinks.
    fn hardlink(&mut self, name: &str, full: &Path, target: &Path) -> Result<(), ArchiveError> {
        let Some(rel_target) = lexical_inside(target) else {
            return Err(self.escapes(name, target));
        };
        let bad_target = || ArchiveError::HardlinkTarget {
            archive: self.archive.to_owned(),
            entry: name.to_owned(),
            target: target.display().to_string(),
        };
        let mut current = self.root.to_path_buf();
        for c in rel_target.components() {
            current.push(c);
            match fs::symlink_metadata(&current) {
                Ok(m) if !m.file_type().is_symlink() => {}
                _ => return Err(bad_target()),
            }
        }
        if !current.is_file() || rel_target.as_os_str().is_empty() {
            return Err(bad_target());
        }
        self.count_file(name)?;
        fs::hard_link(&current, full).map_err(io_err("creating hard link", full))?;
        Ok(())
    }

    /// Resolves every extracted symlink physically, following links inside the root, and
    /// rejects any that ends up outside it (e.g. `d/s -> ..` followed by `t -> d/s/..`).
    pub(super) fn check_symlinks(&self) -> Result<(), ArchiveError> {
        for (name, rel, target) in &self.symlinks {
            if !resolves_inside(self.root, rel) {
                return Err(self.escapes(name, target));
            }
        }
        Ok(())
    }

    fn escapes(&self, name: &str, target: &Path) -> ArchiveError {
        ArchiveError::LinkEscapes {
            archive: self.archive.to_owned(),
            entry: name.to_owned(),
            target: target.display().to_string(),
        }
    }

    fn conflict(&self, name: &str) -> ArchiveError {
        ArchiveError::Conflict {
            archive: self.archive.to_owned(),
            entry: name.to_owned(),
        }
    }
}

/// Applies the archived permission bits, without setuid/setgid/sticky, and always leaving the
/// owner able to read and write.
#[cfg(unix)]
pub(super) fn set_mode(path: &Path, mode: Option<u32>) -> Result<(), ArchiveError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = mode {
        let perms = fs::Permissions::from_mode((mode & 0o777) | 0o600);
        fs::set_permissions(path, perms).map_err(io_err("setting permissions of", path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn set_mode(_path: &Path, _mode: Option<u32>) -> Result<(), ArchiveError> {
    Ok(())
}

/// Creates a symlink; `Err(None)` where the platform has no plain symlinks.
#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> Result<(), Option<io::Error>> {
    std::os::unix::fs::symlink(target, link).map_err(Some)
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, _link: &Path) -> Result<(), Option<io::Error>> {
    Err(None)
}
