//! Temporary files and directories `gl` makes, and removing the ones a killed process left.
//!
//! Two kinds, each cleaned without ever touching what a live process uses:
//!
//! - **Beside their target** (an atomic write's temporary file must be on the target's
//!   filesystem to be renamed): named with a recognisable prefix ([`TEMP_PREFIX`] for files,
//!   `.<name>.staging-*` / `.<name>.old-*` for directories swapped in whole), and removed by the
//!   next writer of that directory while it holds the directory's writer lock
//!   ([`remove_leftovers`]), so no other writer can be using them.
//! - **Per process, in the data directory's `tmp/`** (a catalogue snapshot for `gl sql` or
//!   `gl report`, which hold no lock): each process owns a [`Scratch`] directory holding a
//!   `flock`ed `owner.lock` for its lifetime; [`clean_scratch`] removes only those whose lock it
//!   can take — their owner is dead — so several `gl` processes may clean and use `tmp/` at once.

use anyhow::{Context, Result};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Prefix of every temporary file `gl` writes beside its target (`.gl-tmp-XXXXXX`).
pub const TEMP_PREFIX: &str = ".gl-tmp-";

/// Prefix of a process's scratch directory in `<data>/tmp/`.
const SCRATCH_PREFIX: &str = "gl-";

/// The lock file a scratch directory's owner holds.
const OWNER_LOCK: &str = "owner.lock";

/// Prefix (after the dot) of a scratch directory being made, before its lock is taken.
const NEW_PREFIX: &str = "new-";

/// A scratch directory still being made this long after was left by a process killed while
/// making it (a younger one may be being made now).
const NEW_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// A new temporary file in `dir` named `.gl-tmp-XXXXXX`, for writing and then renaming into
/// place ([`crate::fsutil::persist`]); removed when dropped unpersisted.
pub fn temp_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
}

/// Whether `name` is a temporary file of an atomic write: `.gl-tmp-*`, or `.tmp` and six
/// letters or digits (the name `tempfile` gave them before they had a prefix of their own).
pub fn is_temp_file(name: &str) -> bool {
    let legacy = name.len() == 10
        && name.starts_with(".tmp")
        && name[4..].bytes().all(|b| b.is_ascii_alphanumeric());
    legacy || name.starts_with(TEMP_PREFIX)
}

/// Whether `name` is a staging or set-aside directory of a directory swapped in whole
/// (`.<name>.staging-*` and [`crate::fsutil::replace_dir`]'s `.<name>.old-*`).
pub fn is_swap_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    rest.split_once('.').is_some_and(|(base, tail)| {
        !base.is_empty() && (tail.starts_with("staging-") || tail.starts_with("old-"))
    })
}

/// Removes what `matches` names in `dir` and, `depth` levels down, in its subdirectories
/// (files and whole directories); returns what it removed. The caller holds the writer lock
/// of `dir`, so nothing it removes is in use. A missing `dir` has nothing to remove.
pub fn remove_leftovers(
    dir: &Path,
    depth: usize,
    matches: &dyn Fn(&str) -> bool,
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if matches(&e.file_name().to_string_lossy()) {
            tracing::info!("removing {} (left by an interrupted gl)", path.display());
            match is_dir {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            }
            .with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        } else if is_dir && depth > 0 {
            removed.extend(remove_leftovers(&path, depth - 1, matches)?);
        }
    }
    Ok(removed)
}

/// [`remove_leftovers`] as a warning: cleaning up must never fail the command that does it.
pub fn remove_leftovers_or_warn(dir: &Path, depth: usize, matches: &dyn Fn(&str) -> bool) {
    if let Err(e) = remove_leftovers(dir, depth, matches) {
        tracing::warn!("cleaning up temporary files: {e:#}");
    }
}

/// `<data>/tmp/`: the scratch directories of `gl` processes.
pub fn scratch_root(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp")
}

/// A directory in `<data>/tmp/` that this process owns for as long as the value lives (its
/// `owner.lock` is `flock`ed); removed when dropped, and by [`clean_scratch`] once its owner
/// died without removing it.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    _owner: std::fs::File,
}

impl Scratch {
    /// Creates `<data>/tmp/gl-<pid>-XXXXXX/` with its lock taken: made as `.gl-new-…` (which
    /// no cleaner takes for a dead process's), locked, then renamed, so a cleaner never sees it
    /// unlocked.
    pub fn new(data_dir: &Path) -> Result<Self> {
        Self::new_in(&scratch_root(data_dir))
    }

    /// As [`Scratch::new`], in the directory `root` (for a data directory this process may
    /// not write: the system's temporary directory, where only a reboot cleans up).
    pub fn new_in(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let name = format!("{SCRATCH_PREFIX}{}-", std::process::id());
        let new = tempfile::Builder::new()
            .prefix(&format!(".{NEW_PREFIX}{name}"))
            .tempdir_in(root)
            .with_context(|| format!("creating a scratch directory in {}", root.display()))?;
        let lock = new.path().join(OWNER_LOCK);
        let owner =
            std::fs::File::create(&lock).with_context(|| format!("creating {}", lock.display()))?;
        anyhow::ensure!(try_flock(&owner), "{} is locked", lock.display());
        let made = new.path().file_name().unwrap_or_default().to_string_lossy();
        let dir = root.join(&made[1 + NEW_PREFIX.len()..]);
        std::fs::rename(new.path(), &dir)
            .with_context(|| format!("renaming {} to {}", new.path().display(), dir.display()))?;
        let _ = new.keep(); // renamed: removed by our Drop
        Ok(Scratch { dir, _owner: owner })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes an exclusive `flock` on `file` without waiting; whether it got it.
fn try_flock(file: &std::fs::File) -> bool {
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes the scratch directories in `<data>/tmp/` whose owner is dead (their `owner.lock`
/// can be locked), and those a process killed while making one left (`.gl-new-*`, after
/// [`NEW_GRACE`]); a live process's directory stays. Returns what it removed.
pub fn clean_scratch(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = scratch_root(data_dir);
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for e in entries {
        let path = e
            .with_context(|| format!("listing {}", root.display()))?
            .path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let dead = match name {
            n if n.starts_with(SCRATCH_PREFIX) && path.is_dir() => owner_dead(&path)?,
            n if n.starts_with(&format!(".{NEW_PREFIX}{SCRATCH_PREFIX}")) => older(&path)?,
            _ => false,
        };
        if !dead {
            continue;
        }
        tracing::info!("removing {} (its gl process ended)", path.display());
        match std::fs::remove_dir_all(&path) {
            // Another cleaner removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.with_context(|| format!("removing {}", path.display()))?,
        }
        removed.push(path);
    }
    Ok(removed)
}

/// [`clean_scratch`] as a warning: cleaning up must never fail the command that does it.
pub fn clean_scratch_or_warn(data_dir: &Path) {
    if let Err(e) = clean_scratch(data_dir) {
        tracing::warn!("cleaning up {}: {e:#}", scratch_root(data_dir).display());
    }
}

/// Whether the owner of the scratch directory `dir` is gone: its lock can be taken (a dead
/// process's lock is never taken back, so releasing ours before removing is safe).
fn owner_dead(dir: &Path) -> Result<bool> {
    let lock = dir.join(OWNER_LOCK);
    match std::fs::OpenOptions::new().read(true).open(&lock) {
        Ok(f) => Ok(try_flock(&f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("opening {}", lock.display())),
    }
}

/// Whether `path` was last modified more than [`NEW_GRACE`] ago.
fn older(path: &Path) -> Result<bool> {
    let modified = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(modified.elapsed().unwrap_or_default() > NEW_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_temporary_files_and_swap_leftovers_are_told_from_others() {
        for n in [".gl-tmp-a1B2c3", ".tmpAbC123"] {
            assert!(is_temp_file(n), "{n}");
        }
        for n in [
            ".tmp",
            ".tmpAbC12",
            ".tmp-abc123",
            "tmpAbC123x",
            "state.json",
            ".tmpAb_123",
        ] {
            assert!(!is_temp_file(n), "{n}");
        }
        for n in [
            ".demo.staging-abc123",
            ".demo.old-XyZ987",
            ".tiny_synth.old-1",
        ] {
            assert!(is_swap_leftover(n), "{n}");
        }
        for n in [
            "demo",
            ".demo",
            "..old-x",
            ".demo.keep",
            "README.md",
            "demo.old-x",
        ] {
            assert!(!is_swap_leftover(n), "{n}");
        }
    }

    #[test]
    fn a_leaked_atomic_write_is_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("embeddings");
        std::fs::create_dir_all(&sub).unwrap();
        // What a writer killed between creating and renaming its file leaves.
        let leaked = temp_file_in(&sub).unwrap().into_temp_path().keep().unwrap();
        std::fs::write(d.path().join(".tmpQ1w2E3"), b"old").unwrap();
        for keep in ["state.json", ".tmp-mine", "embeddings/test.parquet"] {
            std::fs::write(d.path().join(keep), b"x").unwrap();
        }
        let mut removed = remove_leftovers(d.path(), 1, &is_temp_file).unwrap();
        removed.sort();
        assert_eq!(removed, [d.path().join(".tmpQ1w2E3"), leaked]);
        let left: Vec<_> = walk(d.path());
        assert_eq!(left, [".tmp-mine", "embeddings/test.parquet", "state.json"]);
    }

    fn walk(d: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(
                    walk(&p)
                        .into_iter()
                        .map(|s| format!("{}/{s}", p.file_name().unwrap().to_string_lossy())),
                );
            } else {
                out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_live_scratch_directory_stays_and_a_dead_one_goes() {
        let data = tempfile::tempdir().unwrap();
        let live = Scratch::new(data.path()).unwrap();
        // A dead owner's directory: its lock file exists but nobody holds it.
        let dead = scratch_root(data.path()).join("gl-999999-dead00");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(OWNER_LOCK), b"").unwrap();
        std::fs::write(dead.join("catalog.duckdb"), b"copy").unwrap();
        let other = scratch_root(data.path()).join("not-ours");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            clean_scratch(data.path()).unwrap(),
            std::slice::from_ref(&dead)
        );
        assert!(live.path().is_dir() && other.is_dir() && !dead.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
