//! The fetch stage: try the dataset's sources in order; for each, download (or take from
//! `--from`) every file, verify its checksum, extract it safely, parse the source's layout,
//! check the published counts, put the images in their canonical order and paths and check the
//! content digest against the lock ([`crate::data::content`]) — any error there moves on to the
//! next source, leaving nothing behind — then write the index (`images.parquet`) and a summary
//! (`dataset.json`, naming the source used) beside the images. When no source answers, the error is the way out
//! ([`way_out`]): every source's error, the files to get by hand and the command that takes them.

mod files;
mod way_out;

use crate::data::archive::{self, ArchiveKind};
use crate::data::content::{self, Content, Paths};
use crate::data::fetch::FetchOptions;
use crate::data::index::{Counts, DatasetIndex};
use crate::data::index_file;
use crate::data::lock::Lock;
use crate::data::registry::{DatasetSpec, Registry};
use crate::data::sources::{self, SourceSpec};
use crate::names::Name;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

pub use way_out::Failure;

/// Validated settings of one fetch.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub dataset: Name,
    /// Files downloaded by hand (`gl fetch cub --from /path/CUB_200_2011.tgz`): only the
    /// sources they can belong to are tried ([`sources::for_local_files`]).
    pub from: Vec<PathBuf>,
    /// Only this source (`--source`).
    pub source: Option<Name>,
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
    /// The URL (or local path) the bytes came from.
    pub source: String,
    /// Where the verified file is (`data/downloads/<dataset>/<source>/<name>`).
    pub path: PathBuf,
}

/// What the stage produced (also written as `dataset.json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub dataset: String,
    pub title: String,
    pub license: String,
    /// The source (`[[datasets.<name>.sources]]`) the dataset came from.
    pub source: String,
    /// The sources tried before it, with their errors.
    pub failed_sources: Vec<Failure>,
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

/// A source's dataset, checked and in place.
struct Built {
    content: Content,
    files: Vec<FileRecord>,
    extracted: bool,
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
    let previous = previous_source(&dir);
    let mut order = sources::order(&spec, s.source.as_deref(), previous.as_deref())?;
    if !s.from.is_empty() {
        ensure!(
            spec.local_root.is_none(),
            "dataset `{}` is a local folder: --from does not apply",
            s.dataset
        );
        order = sources::for_local_files(order, &s.from)?;
    }
    if let Some(local) = &spec.local_root {
        let src = order.first().context("a local dataset needs its layout")?;
        let (root, built) = local_folder(s, &spec, src, &s.project.root.join(local))?;
        return finish(s, &spec, src, (root, built), Vec::new());
    }
    let mut failed = Vec::new();
    for src in &order {
        match try_source(s, &spec, src, &dir) {
            Ok(built) => return finish(s, &spec, src, (dir.clone(), built), failed),
            Err(e) => {
                tracing::warn!("{}: source `{}` failed: {e:#}", s.dataset, src.name);
                failed.push(Failure {
                    source: src.name.to_string(),
                    error: format!("{e:#}"),
                });
            }
        }
    }
    Err(way_out::all_failed(s, &order, &failed))
}

/// The source the dataset in place came from (its `dataset.json`), if any.
fn previous_source(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join("dataset.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("source")?.as_str().map(str::to_owned)
}

/// One source, from fetching its files to the dataset in place: reused when its files did not
/// change, built anew otherwise. On any error its staging directory is removed and the dataset
/// in place stays.
fn try_source(s: &Settings, spec: &DatasetSpec, src: &SourceSpec, dir: &Path) -> Result<Built> {
    let files = files::fetch_files(s, src)?;
    if let Some(content) = reuse(s, dir, &files)? {
        return Ok(Built {
            content,
            files,
            extracted: false,
        });
    }
    let content = build(s, spec, src, dir, &files)?;
    Ok(Built {
        content,
        files,
        extracted: true,
    })
}

/// A user's own folder, indexed where it is: ids in the canonical order, paths kept, never
/// pinned. Its identity is its content, so an image added, removed or rewritten gives a new
/// fingerprint (and crop cache) instead of stale labels.
fn local_folder(
    s: &Settings,
    spec: &DatasetSpec,
    src: &SourceSpec,
    root: &Path,
) -> Result<(PathBuf, Built)> {
    let index = parse_checked(s, spec, src, root)?;
    let (content, _) = Content::of(root, index, Paths::Keep)?;
    let dir = s.project.dataset_dir(&s.dataset);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    index_file::write(&dir.join(INDEX), &content.index, &content.sha256)?;
    let built = Built {
        content,
        files: Vec::new(),
        extracted: false,
    };
    Ok((root.to_path_buf(), built))
}

/// The index file in the dataset directory.
const INDEX: &str = "images.parquet";

/// Parses the source's layout under `root` and checks it: the published counts, every indexed
/// image present.
fn parse_checked(
    s: &Settings,
    spec: &DatasetSpec,
    src: &SourceSpec,
    root: &Path,
) -> Result<DatasetIndex> {
    ensure!(
        root.is_dir(),
        "{}: dataset root {} does not exist",
        s.dataset,
        root.display()
    );
    let index = src
        .layout
        .parse_in(root, Some(&s.project.root))
        .with_context(|| format!("parsing `{}` (source `{}`)", s.dataset, src.name))?;
    index.verify(&s.dataset, &spec.expect)?;
    check_files_exist(root, &index)?;
    Ok(index)
}

/// Builds the dataset anew in a staging directory beside `dir` and swaps it in: archives
/// extracted under `source/`, the layout parsed and checked there, the content digest
/// verified against (or pinned in) the lock, the images moved to their canonical paths under
/// `images/` and the index written. Anything that fails leaves the dataset that was there.
fn build(
    s: &Settings,
    spec: &DatasetSpec,
    src: &SourceSpec,
    dir: &Path,
    files: &[FileRecord],
) -> Result<Content> {
    let staged = stage(dir, files, &spec.limits)
        .with_context(|| format!("extracting `{}` into {}", s.dataset, dir.display()))?;
    let root = staged.path().join(SOURCE_DIR).join(&src.root);
    let index = parse_checked(s, spec, src, &root)?;
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

/// Writes `dataset.json` for the dataset in place (its images and index already are).
fn finish(
    s: &Settings,
    spec: &DatasetSpec,
    src: &SourceSpec,
    (root, built): (PathBuf, Built),
    failed: Vec<Failure>,
) -> Result<Outcome> {
    let index = built.content.index;
    let outcome = Outcome {
        dataset: s.dataset.to_string(),
        title: spec.title.clone(),
        license: spec.license.clone(),
        source: src.name.to_string(),
        failed_sources: failed,
        layout: serde_json::to_value(&src.layout)?["kind"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        root,
        files: built.files,
        counts: index.counts(),
        fingerprint: built.content.digest,
        extracted: built.extracted,
        index,
    };
    crate::fsutil::write_atomic(
        &s.project.dataset_dir(&s.dataset).join("dataset.json"),
        &serde_json::to_vec_pretty(&outcome)?,
    )?;
    Ok(outcome)
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
