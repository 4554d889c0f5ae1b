//! The fetch stage: download (or take from `--from`) every file of a dataset, verify its
//! checksum, extract it safely, parse the layout, check the published counts and write the
//! index (`images.parquet`) and a summary (`dataset.json`) beside the extracted data.

use crate::data::archive::{self, ArchiveKind};
use crate::data::fetch::{self as download, Checksum, FetchOptions, Fetched, FileSpec};
use crate::data::index::{Counts, DatasetIndex};
use crate::data::index_file;
use crate::data::lock::{Lock, Pin};
use crate::data::registry::{resolve_url, DatasetSpec, Registry};
use crate::names::Name;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Validated settings of one fetch.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub dataset: Name,
    /// A file downloaded by hand (`gl fetch cub --from /path/CUB_200_2011.tgz`).
    pub from: Option<PathBuf>,
    pub options: FetchOptions,
    /// Re-extract even when the files are unchanged.
    pub force: bool,
}

/// One fetched file with its checksums.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileRecord {
    pub name: String,
    pub sha256: String,
    pub md5: String,
    pub bytes: u64,
    pub source: String,
    /// Where the verified file is (`data/downloads/<dataset>/<name>`).
    pub path: PathBuf,
}

/// What the stage produced (also written as `dataset.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub dataset: String,
    pub title: String,
    pub license: String,
    pub layout: String,
    /// Directory the images' `rel_path`s are relative to.
    pub root: PathBuf,
    pub files: Vec<FileRecord>,
    pub counts: Counts,
    /// sha256 over the files' checksums, the layout and the expected counts.
    pub fingerprint: String,
    pub extracted: bool,
    #[serde(skip)]
    pub index: DatasetIndex,
}

/// Runs the stage.
pub fn run(s: &Settings) -> Result<Outcome> {
    let registry = Registry::load(&s.project.root, &s.project.data_dir)?;
    let spec = registry.get(&s.dataset)?.clone();
    let _writer = crate::writer_lock::WriterLock::acquire(
        &s.project.dataset_lock(&s.dataset),
        &format!("the dataset `{}`", s.dataset),
    )?;
    crate::tempfiles::clean_scratch_or_warn(&s.project.data_dir);
    let (root, files, staged) = match &spec.local_root {
        Some(local) => {
            ensure!(
                s.from.is_none(),
                "dataset `{}` is a local folder: --from does not apply",
                s.dataset
            );
            (s.project.root.join(local), Vec::new(), None)
        }
        None => {
            let files = fetch_files(s, &spec)?;
            let dir = s.project.dataset_dir(&s.dataset);
            let staged = stage(&dir, &files, &spec.limits, s.force)
                .with_context(|| format!("extracting `{}` into {}", s.dataset, dir.display()))?;
            let base = staged.as_ref().map_or(dir, |t| t.path().to_path_buf());
            (base.join(&spec.root), files, staged)
        }
    };
    ensure!(
        root.is_dir(),
        "{}: dataset root {} does not exist",
        s.dataset,
        root.display()
    );
    // Parsed and checked where it was extracted: a tree that fails here is removed with its
    // staging directory and the dataset that was there before stays.
    let index = spec
        .layout
        .parse_in(&root, Some(&s.project.root))
        .with_context(|| format!("parsing `{}`", s.dataset))?;
    let counts = index.verify(&s.dataset, &spec.expect)?;
    check_files_exist(&root, &index)?;
    let extracted = staged.is_some();
    let root = match staged {
        Some(t) => {
            let dir = s.project.dataset_dir(&s.dataset);
            swap_in(t, &dir)?;
            dir.join(&spec.root)
        }
        None => root,
    };

    let layout = serde_json::to_value(&spec.layout)?;
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&(
            &files.iter().map(|f| &f.sha256).collect::<Vec<_>>(),
            &layout,
            &spec.root,
            &spec.expect,
            env!("CARGO_PKG_VERSION"),
        ))?);
        if spec.local_root.is_some() {
            // A local folder has no archive checksum: its file list stands in for one, so the
            // crop cache (keyed by this fingerprint) is rebuilt instead of reused with stale
            // labels when an image is added, removed or rewritten.
            h.update(crate::fsutil::tree_digest(&root)?.as_bytes());
        }
        hex::encode(h.finalize())
    };
    let outcome = Outcome {
        dataset: s.dataset.to_string(),
        title: spec.title.clone(),
        license: spec.license.clone(),
        layout: layout["kind"].as_str().unwrap_or("?").to_string(),
        root,
        files,
        counts,
        fingerprint,
        extracted,
        index,
    };
    let out_dir = s.project.dataset_dir(&s.dataset);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    index_file::write(&out_dir.join("images.parquet"), &outcome.index)?;
    crate::fsutil::write_atomic(
        &out_dir.join("dataset.json"),
        &serde_json::to_vec_pretty(&outcome)?,
    )?;
    Ok(outcome)
}

/// Fetches and verifies every file; pins the sha256 of files without a published checksum.
fn fetch_files(s: &Settings, spec: &DatasetSpec) -> Result<Vec<FileRecord>> {
    ensure!(
        !spec.files.is_empty(),
        "dataset `{}` lists no files",
        s.dataset
    );
    let mut lock = Lock::load(&s.project.root)?;
    let dest = s.project.downloads(&s.dataset);
    let mut out = Vec::new();
    for entry in &spec.files {
        let pinned = lock.get(&s.dataset, &entry.name).cloned();
        let checksum = match (&entry.sha256, &entry.md5, &pinned) {
            (Some(sha), _, _) => Some(Checksum::Sha256(sha.to_ascii_lowercase())),
            (None, Some(md5), _) => Some(Checksum::Md5(md5.to_ascii_lowercase())),
            (None, None, Some(pin)) => Some(Checksum::Sha256(pin.sha256.clone())),
            (None, None, None) => None,
        };
        let file = FileSpec {
            name: entry.name.clone(),
            urls: entry
                .urls
                .iter()
                .map(|u| resolve_url(u, &s.project.root))
                .collect(),
            checksum,
            size: entry.size,
        };
        let fetched: Fetched = match local_source(s, spec, &entry.name)? {
            Some(local) => download::fetch_from_local(&file, &local, &dest)?,
            None => download::fetch(&file, &dest, &s.options)?,
        };
        lock.verify_or_pin(
            Pin {
                dataset: s.dataset.to_string(),
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

/// The `--from` file for `name`: the only file of the dataset, or the one with that file name.
fn local_source(s: &Settings, spec: &DatasetSpec, name: &str) -> Result<Option<PathBuf>> {
    let Some(from) = &s.from else { return Ok(None) };
    let matches = from.file_name().is_some_and(|f| f == name);
    if spec.files.len() == 1 || matches {
        return Ok(Some(from.clone()));
    }
    if !spec
        .files
        .iter()
        .any(|f| from.file_name().is_some_and(|n| n == f.name.as_str()))
    {
        let names: Vec<&str> = spec.files.iter().map(|f| f.name.as_str()).collect();
        bail!(
            "--from {}: `{}` has several files ({}); name the file like one of them",
            from.display(),
            s.dataset,
            names.join(", ")
        );
    }
    Ok(None)
}

/// Builds the next `dir` from the fetched files in a staging directory beside it (archives
/// extracted within `limits`, other files copied), or `None` when `dir/.gl-source.json`
/// records the same checksums. The staging directory is removed on every failure, and
/// leftovers of a fetch that was killed are removed first (the caller holds the dataset's
/// writer lock, so they are nobody's).
fn stage(
    dir: &Path,
    files: &[FileRecord],
    limits: &archive::Limits,
    force: bool,
) -> Result<Option<tempfile::TempDir>> {
    let marker = source_marker(files)?;
    if !force && std::fs::read(dir.join(".gl-source.json")).ok().as_deref() == Some(&marker[..]) {
        return Ok(None);
    }
    let parent = dir.parent().context("dataset directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .context("dataset directory has no name")?
        .to_string_lossy()
        .into_owned();
    remove_leftovers(parent, &name)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.staging-"))
        .tempdir_in(parent)?;
    for (i, f) in files.iter().enumerate() {
        let path = &f.path;
        match ArchiveKind::from_path(path) {
            Ok(kind) => {
                let part = staging.path().join(format!(".part-{i}"));
                archive::extract_limited(path, kind, &part, limits)?;
                for e in std::fs::read_dir(&part)? {
                    let e = e?;
                    let to = staging.path().join(e.file_name());
                    ensure!(
                        !to.exists(),
                        "{} and another file both provide `{}`",
                        f.name,
                        e.file_name().to_string_lossy()
                    );
                    std::fs::rename(e.path(), to)?;
                }
                std::fs::remove_dir(&part)?;
            }
            Err(_) => {
                std::fs::copy(path, staging.path().join(&f.name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    std::fs::write(staging.path().join(".gl-source.json"), &marker)?;
    Ok(Some(staging))
}

/// What `.gl-source.json` records: each file's name and sha256.
fn source_marker(files: &[FileRecord]) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(
        &files
            .iter()
            .map(|f| (&f.name, &f.sha256))
            .collect::<Vec<_>>(),
    )?)
}

/// Removes `.<name>.staging-*` and `.<name>.old-*` beside the dataset: what a killed fetch left.
fn remove_leftovers(parent: &Path, name: &str) -> Result<()> {
    let prefixes = [format!(".{name}.staging-"), format!(".{name}.old-")];
    let ours = |n: &str| prefixes.iter().any(|p| n.starts_with(p.as_str()));
    crate::tempfiles::remove_leftovers(parent, 0, &ours).map(|_| ())
}

/// Swaps the finished staging directory in as `dir` ([`crate::fsutil::replace_dir`]).
fn swap_in(staging: tempfile::TempDir, dir: &Path) -> Result<()> {
    crate::fsutil::replace_dir(staging.path(), dir)
        .with_context(|| format!("putting the new dataset in place at {}", dir.display()))?;
    let _ = staging.keep(); // renamed: nothing left to remove
    Ok(())
}

/// Every indexed image must exist: a truncated or mismatched archive fails here, naming files.
fn check_files_exist(root: &Path, index: &DatasetIndex) -> Result<()> {
    let missing: Vec<&str> = index
        .images
        .iter()
        .filter(|i| !root.join(&i.rel_path).is_file())
        .map(|i| i.rel_path.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} indexed images are missing under {} (first: {})",
            missing.len(),
            index.images.len(),
            root.display(),
            missing
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
