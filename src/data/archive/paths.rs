//! Containment checks for entry paths and link targets: nothing an archive names may lead
//! outside the extraction root, lexically or by following links.

use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::ArchiveError;

/// The entry path as plain components below the root; rejects absolute paths and `..`.
/// `name` is the entry's name as stored in `archive`, for the error.
pub(super) fn relative(archive: &Path, name: &str, path: &Path) -> Result<PathBuf, ArchiveError> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(ArchiveError::AbsolutePath {
                    archive: archive.to_owned(),
                    entry: name.to_owned(),
                })
            }
            Component::ParentDir => {
                return Err(ArchiveError::ParentDir {
                    archive: archive.to_owned(),
                    entry: name.to_owned(),
                })
            }
            Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
        }
    }
    Ok(rel)
}

/// Normalises a relative path lexically; `None` if it is absolute or climbs above its start.
pub(super) fn lexical_inside(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return None,
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::Normal(n) => parts.push(n),
        }
    }
    Some(parts.iter().collect())
}

/// Follows `rel` (relative to `root`) component by component, substituting symlink targets
/// as the kernel would; false if any step leaves `root`, a target is absolute, or links loop.
pub(super) fn resolves_inside(root: &Path, rel: &Path) -> bool {
    let mut pending: Vec<PathBuf> = rel
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.components().next() {
            None | Some(Component::CurDir) => {}
            Some(Component::ParentDir) => {
                if !resolved.pop() {
                    return false;
                }
            }
            Some(Component::Normal(n)) => {
                let candidate = resolved.join(n);
                match fs::read_link(root.join(&candidate)) {
                    Ok(target) => {
                        hops += 1;
                        if hops > 40 || target.has_root() {
                            return false;
                        }
                        pending.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                    }
                    // Not a link (or not there yet): an ordinary component.
                    Err(_) => resolved = candidate,
                }
            }
            Some(Component::Prefix(_) | Component::RootDir) => return false,
        }
    }
    true
}

/// `path` relative to `root`, for messages.
pub(super) fn display_rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
