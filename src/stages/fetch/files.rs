//! The files of one source: downloaded (or taken from `--from`) into
//! `data/downloads/<dataset>/<source>/`, verified against the published checksum or the one
//! pinned in `pipeline/datasets.lock`, and pinned there when neither exists yet.

use super::{FileRecord, Settings};
use crate::data::fetch::{self as download, Checksum, Fetched, FileSpec};
use crate::data::lock::{Lock, Pin};
use crate::data::registry::{resolve_url, FileEntry};
use crate::data::sources::{file_name_is, SourceSpec};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Fetches and verifies every file of `src`; pins the sha256 of files without a published
/// checksum.
pub(super) fn fetch_files(s: &Settings, src: &SourceSpec) -> Result<Vec<FileRecord>> {
    ensure!(
        !src.files.is_empty(),
        "source `{}` of `{}` lists no files",
        src.name,
        s.dataset
    );
    let mut lock = Lock::load(&s.project.root)?;
    let dest = src.downloads(s.project.downloads(&s.dataset));
    let mut out = Vec::new();
    for entry in &src.files {
        migrate_legacy_download(s, src, &dest, &entry.name)?;
        let file = file_spec(s, src, entry, &lock);
        let fetched: Fetched = match local_file(s, src, &entry.name) {
            Some(local) => download::fetch_from_local(&file, local, &dest)?,
            None => download::fetch(&file, &dest, &s.options)?,
        };
        lock.verify_or_pin(
            Pin {
                dataset: s.dataset.to_string(),
                source: src.lock_key().map(str::to_owned),
                file: entry.name.clone(),
                sha256: fetched.sha256.clone(),
                bytes: fetched.bytes,
            },
            &fetched.path,
            true,
        )?;
        out.push(FileRecord {
            name: entry.name.clone(),
            sha256: fetched.sha256,
            md5: fetched.md5,
            bytes: fetched.bytes,
            source: fetched.source,
            path: fetched.path,
        });
    }
    Ok(out)
}

/// What to fetch for `entry`: its URLs resolved, the checksum to verify (published sha256,
/// else published md5, else the pinned sha256), its size (published, else pinned).
fn file_spec(s: &Settings, src: &SourceSpec, entry: &FileEntry, lock: &Lock) -> FileSpec {
    let pinned = lock.get_in(&s.dataset, src.lock_key(), &entry.name);
    let checksum = match (&entry.sha256, &entry.md5, pinned) {
        (Some(sha), _, _) => Some(Checksum::Sha256(sha.to_ascii_lowercase())),
        (None, Some(md5), _) => Some(Checksum::Md5(md5.to_ascii_lowercase())),
        (None, None, Some(pin)) => Some(Checksum::Sha256(pin.sha256.clone())),
        (None, None, None) => None,
    };
    FileSpec {
        name: entry.name.clone(),
        urls: entry
            .urls
            .iter()
            .map(|u| resolve_url(u, &s.project.root))
            .collect(),
        checksum,
        size: entry.size,
    }
}

/// The `--from` file for `name` of `src`: the one with that file name, or the only one given
/// when the source has only one file.
fn local_file<'a>(s: &'a Settings, src: &SourceSpec, name: &str) -> Option<&'a Path> {
    if let Some(p) = s.from.iter().find(|p| file_name_is(p, name)) {
        return Some(p);
    }
    match (&s.from[..], src.files.len()) {
        ([only], 1) => Some(only),
        _ => None,
    }
}

/// Before there were sources every file was at `data/downloads/<dataset>/<file>`: a named
/// source's file still there is moved into `data/downloads/<dataset>/<source>/` (then verified
/// like any file there), so nothing downloaded before is fetched again.
fn migrate_legacy_download(s: &Settings, src: &SourceSpec, dest: &Path, name: &str) -> Result<()> {
    if src.is_default() {
        return Ok(());
    }
    let legacy: PathBuf = s.project.downloads(&s.dataset).join(name);
    let new = dest.join(name);
    if !legacy.is_file() || new.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    std::fs::rename(&legacy, &new)
        .with_context(|| format!("moving {} to {}", legacy.display(), new.display()))?;
    tracing::info!("moved {} to {}", legacy.display(), new.display());
    Ok(())
}
