//! File-system helpers every stage uses: nothing already stored is lost on failure.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (`.gl-tmp-*`,
/// which the directory's next writer removes if a kill left it), fsync, rename. A crash leaves
/// either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = crate::tempfiles::temp_file_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    persist(tmp, path)
}

/// Moves a finished temporary file into place (fsync first), readable by everyone (0644: run
/// directories are shared between the nodes and users of a cluster).
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .sync_all()
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .with_context(|| format!("finishing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", path.display()))?;
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// sha256 of a file, streamed (hex).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// sha256 over the listing of the tree under `root`: every file's relative path, size and
/// modification time (links followed, names in byte order). Cheap (no content read), and it
/// changes when a file is added, removed, renamed or rewritten: what stands in for an archive
/// checksum where a dataset is a local folder.
pub fn tree_digest(root: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    fn walk(dir: &Path, rel: &Path, depth: usize, h: &mut Sha256) -> Result<()> {
        anyhow::ensure!(
            depth < 64,
            "{}: folders nested too deep (a link loop?)",
            dir.display()
        );
        let read = |e| anyhow::Error::new(e).context(format!("listing {}", dir.display()));
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(read)?
            .collect::<std::io::Result<_>>()
            .map_err(read)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            let rel = rel.join(e.file_name());
            if meta.is_dir() {
                walk(&path, &rel, depth + 1, h)?;
            } else {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                h.update(rel.as_os_str().as_bytes());
                h.update([0]);
                h.update(meta.len().to_le_bytes());
                h.update(mtime.to_le_bytes());
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(root, Path::new(""), 0, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Puts the finished directory `staged` in place of `dest` (same filesystem), so a reader sees
/// the old tree or the new one, never a mix: an existing `dest` is first moved aside into a
/// `.<name>.old-*` directory beside it, put back if the final rename fails, and removed once
/// the new tree is in; then the parent directory is fsynced. An `.old-*` directory a killed
/// process left is the caller's to clean up ([`crate::tempfiles::is_swap_leftover`]).
pub fn replace_dir(staged: &Path, dest: &Path) -> std::io::Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if std::fs::symlink_metadata(dest).is_err() {
        std::fs::rename(staged, dest)?;
    } else {
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let old = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(parent)?;
        let aside = old.path().join("previous");
        std::fs::rename(dest, &aside)?;
        if let Err(e) = std::fs::rename(staged, dest) {
            if std::fs::rename(&aside, dest).is_err() {
                let kept = old.keep();
                let why = format!("{e} (the previous tree is kept in {})", kept.display());
                return Err(std::io::Error::new(e.kind(), why));
            }
            return Err(e);
        }
        old.close()?;
    }
    std::fs::File::open(parent)?.sync_all()
}

/// fsyncs the directory `dir`, so the renames and new entries in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// Reads and parses the TOML file `path` (`what` names it in the error: "the stage DAG").
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
