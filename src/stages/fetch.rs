//! The fetch stage: try the dataset's sources in order; for each, download (or take from
//! `--from`) every file, verify its checksum, extract it safely, parse the source's layout and
//! check the published counts — any error there moves on to the next source, leaving nothing
//! behind — then write the index (`images.parquet`) and a summary (`dataset.json`, naming the
//! source used) beside the extracted data. When no source answers, the error is the way out
//! ([`way_out`]): every source's error, the files to get by hand and the command that takes them.

mod files;
mod way_out;

use crate::data::archive::{self, ArchiveKind};
use crate::data::fetch::FetchOptions;
use crate::data::index::{Counts, DatasetIndex};
use crate::data::index_file;
use crate::data::registry::{DatasetSpec, Registry};
use crate::data::sources::{self, SourceSpec};
use crate::names::Name;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
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
    /// sha256 over the files' checksums, the layout and the expected counts.
    pub fingerprint: String,
    pub extracted: bool,
    #[serde(skip)]
    pub index: DatasetIndex,
}

/// A source's dataset, parsed and checked where it was extracted, not yet in place.
struct Candidate {
    /// Where the layout was parsed (inside the staging directory when `staged`).
    root: PathBuf,
    files: Vec<FileRecord>,
    staged: Option<tempfile::TempDir>,
    index: DatasetIndex,
    counts: Counts,
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
    let mut failed = Vec::new();
    for src in &order {
        match try_source(s, &spec, src) {
            Ok(c) => return finish(s, &spec, src, c, failed),
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

/// One source, from fetching its files to the accepted index; on any error its staging
/// directory is removed and the dataset in place stays.
fn try_source(s: &Settings, spec: &DatasetSpec, src: &SourceSpec) -> Result<Candidate> {
    let (base, files, staged) = match &spec.local_root {
        Some(local) => (s.project.root.join(local), Vec::new(), None),
        None => {
            let files = files::fetch_files(s, src)?;
            let dir = s.project.dataset_dir(&s.dataset);
            let staged = stage(&dir, &files, &spec.limits, s.force)
                .with_context(|| format!("extracting `{}` into {}", s.dataset, dir.display()))?;
            let base = staged.as_ref().map_or(dir, |t| t.path().to_path_buf());
            (base.join(&src.root), files, staged)
        }
    };
    let root = base;
    ensure!(
        root.is_dir(),
        "{}: dataset root {} does not exist",
        s.dataset,
        root.display()
    );
    // Parsed and checked where it was extracted: a tree that fails here is removed with its
    // staging directory and the dataset that was there before stays.
    let index = src
        .layout
        .parse(&root)
        .with_context(|| format!("parsing `{}` (source `{}`)", s.dataset, src.name))?;
    let counts = index.verify(&s.dataset, &spec.expect)?;
    check_files_exist(&root, &index)?;
    let index = accept(index, &root)?;
    Ok(Candidate {
        root,
        files,
        staged,
        index,
        counts,
    })
}

/// The last check of a source's parsed index before it is put in place: the place for the
/// content identity of issue 38 (digest of the images and classes, pinned per dataset), which
/// may also rewrite the index into its canonical form. For now it accepts the index as it is.
fn accept(index: DatasetIndex, _root: &Path) -> Result<DatasetIndex> {
    Ok(index)
}

/// Puts the accepted candidate in place and writes `images.parquet` and `dataset.json`.
fn finish(
    s: &Settings,
    spec: &DatasetSpec,
    src: &SourceSpec,
    c: Candidate,
    failed: Vec<Failure>,
) -> Result<Outcome> {
    let extracted = c.staged.is_some();
    let root = match c.staged {
        Some(t) => {
            let dir = s.project.dataset_dir(&s.dataset);
            swap_in(t, &dir)?;
            dir.join(&src.root)
        }
        None => c.root,
    };
    let layout = serde_json::to_value(&src.layout)?;
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&(
            &c.files.iter().map(|f| &f.sha256).collect::<Vec<_>>(),
            &layout,
            &src.root,
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
        source: src.name.to_string(),
        failed_sources: failed,
        layout: layout["kind"].as_str().unwrap_or("?").to_string(),
        root,
        files: c.files,
        counts: c.counts,
        fingerprint,
        extracted,
        index: c.index,
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
