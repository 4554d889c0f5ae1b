//! The fetch stage: download (or take from `--from`) every file of a dataset, verify its
//! checksum, extract it safely, parse the layout, check the published counts, put the images
//! in their canonical order and paths with the content digest checked against the lock, and
//! write the index (`images.parquet`) and a summary (`dataset.json`) beside them.

use crate::data::archive::{self, ArchiveKind};
use crate::data::content::{self, Content, Paths};
use crate::data::fetch::{self as download, Checksum, FetchOptions, Fetched, FileSpec};
use crate::data::index::{Counts, DatasetIndex};
use crate::data::index_file;
use crate::data::lock::{Lock, Pin};
use crate::data::registry::{resolve_url, DatasetSpec, Registry};
use crate::names::Name;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
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
    /// The dataset's identity: the digest of its content ([`crate::data::content`]), the same
    /// whichever source it came from.
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
    let dir = s.project.dataset_dir(&s.dataset);
    let (root, files, content, extracted) = match &spec.local_root {
        Some(local) => {
            ensure!(
                s.from.is_none(),
                "dataset `{}` is a local folder: --from does not apply",
                s.dataset
            );
            // A user's own folder is indexed where it is: ids in the canonical order, paths
            // kept. Its identity is its content, so an image added, removed or rewritten gives
            // a new fingerprint (and crop cache) instead of stale labels.
            let root = s.project.root.join(local);
            let index = parse_checked(s, &spec, &root)?;
            let (content, _) = Content::of(&root, index, Paths::Keep)?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            index_file::write(&dir.join(INDEX), &content.index, &content.sha256)?;
            (root, Vec::new(), content, false)
        }
        None => {
            let files = fetch_files(s, &spec)?;
            let (content, extracted) = match reuse(s, &dir, &files)? {
                Some(content) => (content, false),
                None => (build(s, &spec, &dir, &files)?, true),
            };
            (dir.clone(), files, content, extracted)
        }
    };
    let counts = content.index.counts();
    let outcome = Outcome {
        dataset: s.dataset.to_string(),
        title: spec.title.clone(),
        license: spec.license.clone(),
        layout: serde_json::to_value(&spec.layout)?["kind"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        root,
        files,
        counts,
        fingerprint: content.digest.clone(),
        extracted,
        index: content.index,
    };
    crate::fsutil::write_atomic(
        &dir.join("dataset.json"),
        &serde_json::to_vec_pretty(&outcome)?,
    )?;
    Ok(outcome)
}

/// The index file in the dataset directory.
const INDEX: &str = "images.parquet";

/// Parses the layout under `root` and checks it: the published counts, every indexed image
/// present.
fn parse_checked(s: &Settings, spec: &DatasetSpec, root: &Path) -> Result<DatasetIndex> {
    ensure!(
        root.is_dir(),
        "{}: dataset root {} does not exist",
        s.dataset,
        root.display()
    );
    let index = spec
        .layout
        .parse_in(root, Some(&s.project.root))
        .with_context(|| format!("parsing `{}`", s.dataset))?;
    index.verify(&s.dataset, &spec.expect)?;
    check_files_exist(root, &index)?;
    Ok(index)
}

/// Builds the dataset anew in a staging directory beside `dir` and swaps it in: archives
/// extracted under `source/`, the layout parsed and checked there, the content digest
/// verified against (or pinned in) the lock, the images moved to their canonical paths under
/// `images/` and the index written. Anything that fails leaves the dataset that was there.
fn build(s: &Settings, spec: &DatasetSpec, dir: &Path, files: &[FileRecord]) -> Result<Content> {
    let staged = stage(dir, files, &spec.limits)
        .with_context(|| format!("extracting `{}` into {}", s.dataset, dir.display()))?;
    let root = staged.path().join(SOURCE_DIR).join(&spec.root);
    let index = parse_checked(s, spec, &root)?;
    let (content, moves) = Content::of(&root, index, Paths::Canonical)?;
    let mut lock = Lock::load(&s.project.root)?;
    content::verify_or_pin(&mut lock, s.dataset.as_str(), &content)?;
    Content::place(&moves, &root, staged.path())?;
    index_file::write(&staged.path().join(INDEX), &content.index, &content.sha256)?;
    std::fs::write(staged.path().join(MARKER), source_marker(files)?)?;
    swap_in(staged, dir)?;
    Ok(content)
}

/// The dataset already in `dir` when it was built from the same files by this index format
/// (`.gl-source.json`) and unless `--force`: its images re-read against the digests of its
/// index and its content checked against the lock. `None` (with a warning when something was
/// there) means build anew.
fn reuse(s: &Settings, dir: &Path, files: &[FileRecord]) -> Result<Option<Content>> {
    let same = std::fs::read(dir.join(MARKER)).ok().as_deref() == Some(&source_marker(files)?[..]);
    if s.force || !same {
        return Ok(None);
    }
    let reread = index_file::read_with_digests(&dir.join(INDEX))
        .and_then(|(index, shas)| Content::reread(dir, index, shas));
    let content = match reread {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{}: rebuilding the dataset: {e:#}", dir.display());
            return Ok(None);
        }
    };
    let mut lock = Lock::load(&s.project.root)?;
    content::verify_or_pin(&mut lock, s.dataset.as_str(), &content)?;
    Ok(Some(content))
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

/// Where the fetched files are extracted inside the dataset directory (the images move out
/// of it to their canonical paths; the annotations stay).
const SOURCE_DIR: &str = "source";

/// What records the files a dataset directory was built from (and the index format).
const MARKER: &str = ".gl-source.json";

/// Extracts the fetched files into `source/` of a staging directory beside `dir` (archives
/// within `limits`, other files copied). The staging directory is removed on every failure,
/// and leftovers of a fetch that was killed are removed first (the caller holds the dataset's
/// writer lock, so they are nobody's).
fn stage(dir: &Path, files: &[FileRecord], limits: &archive::Limits) -> Result<tempfile::TempDir> {
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
    let source = staging.path().join(SOURCE_DIR);
    std::fs::create_dir(&source)?;
    for (i, f) in files.iter().enumerate() {
        let path = &f.path;
        match ArchiveKind::from_path(path) {
            Ok(kind) => {
                let part = staging.path().join(format!(".part-{i}"));
                archive::extract_limited(path, kind, &part, limits)?;
                for e in std::fs::read_dir(&part)? {
                    let e = e?;
                    let to = source.join(e.file_name());
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
                std::fs::copy(path, source.join(&f.name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    Ok(staging)
}

/// What `.gl-source.json` records: the index format and each file's name and sha256.
fn source_marker(files: &[FileRecord]) -> Result<Vec<u8>> {
    let files: Vec<_> = files.iter().map(|f| (&f.name, &f.sha256)).collect();
    Ok(serde_json::to_vec_pretty(&serde_json::json!({
        "content_format": content::FORMAT,
        "files": files,
    }))?)
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
