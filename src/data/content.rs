//! A dataset's identity is its content: the digest of the sorted `(image sha256, class, split)`
//! triples, whatever source, packaging or file names the images came with.
//!
//! After a source's layout is parsed and its counts checked, [`Content::of`] hashes every image,
//! puts the images in the canonical order (class id, then image sha256), numbers them 1..n in
//! that order and gives each a canonical path (`images/<class>/<id>.<ext>`). Two sources that
//! hold the same images under the same official classes therefore give the same index,
//! byte for byte, and the same fingerprint — so the crop cache and every run id built on it.
//! The digest is pinned per dataset in `pipeline/datasets.lock`, with the per-class counts and
//! digests in `pipeline/content/<dataset>.tsv`, so a source that drops, duplicates or relabels
//! an image is refused with what differs ([`ContentPins::verify_or_pin`]).

use crate::data::index::{DatasetIndex, ImageEntry, Split};
use crate::data::lock::{ContentPin, Lock};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of the content digest and the canonical index: part of every digest, so a change
/// of what the digest covers or of the canonical order gives every dataset a new identity.
pub const FORMAT: u32 = 1;

/// Where canonical image files live, relative to the dataset directory.
pub const IMAGES_DIR: &str = "images";

/// The images of a dataset in canonical order, with their content digests.
#[derive(Debug, Clone)]
pub struct Content {
    /// Canonical index: ids 1..n in (class, sha256) order.
    pub index: DatasetIndex,
    /// sha256 of each image's bytes, aligned with `index.images`.
    pub sha256: Vec<String>,
    /// The dataset's identity (hex sha256; see the module docs).
    pub digest: String,
}

/// Whether [`Content::of`] gives images canonical paths (files fetched into a staging
/// directory, moved there by [`Content::place`]) or keeps their paths (a user's own folder,
/// which `gl` never rearranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    Canonical,
    Keep,
}

/// One image to move from its source path to its canonical one.
#[derive(Debug, Clone)]
pub struct Move {
    pub from: String,
    pub to: String,
}

impl Content {
    /// Hashes every image of `index` under `root` and returns the canonical content, with the
    /// moves that put the files in their canonical places (empty for [`Paths::Keep`]).
    pub fn of(root: &Path, index: DatasetIndex, paths: Paths) -> Result<(Content, Vec<Move>)> {
        let mut rows = Vec::with_capacity(index.images.len());
        for im in index.images {
            let path = root.join(&im.rel_path);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading image {}", path.display()))?;
            let sha = hex::encode(Sha256::digest(&bytes));
            rows.push((im, sha, extension(&bytes)));
        }
        rows.sort_by(|a, b| (a.0.class_id, &a.1).cmp(&(b.0.class_id, &b.1)));
        let mut moves = Vec::new();
        let mut images = Vec::with_capacity(rows.len());
        let mut sha256 = Vec::with_capacity(rows.len());
        for (i, (im, sha, ext)) in rows.into_iter().enumerate() {
            let image_id = i as i64 + 1;
            let rel_path = match paths {
                Paths::Keep => im.rel_path.clone(),
                Paths::Canonical => {
                    let to = format!("{IMAGES_DIR}/{}/{image_id}.{ext}", im.class_id);
                    moves.push(Move {
                        from: im.rel_path.clone(),
                        to: to.clone(),
                    });
                    to
                }
            };
            images.push(ImageEntry {
                image_id,
                rel_path,
                ..im
            });
            sha256.push(sha);
        }
        let index = DatasetIndex { images };
        let digest = digest(&index, &sha256);
        Ok((
            Content {
                index,
                sha256,
                digest,
            },
            moves,
        ))
    }

    /// Re-reads the images of a canonical index written earlier (`images.parquet` with its
    /// sha256 column) and checks every file still has the recorded bytes: what a fetch whose
    /// archives did not change verifies before it reuses the tree.
    pub fn reread(root: &Path, index: DatasetIndex, sha256: Vec<String>) -> Result<Content> {
        if sha256.len() != index.images.len() {
            bail!("{} digests for {} images", sha256.len(), index.images.len());
        }
        for (im, want) in index.images.iter().zip(&sha256) {
            let path = root.join(&im.rel_path);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading image {}", path.display()))?;
            let got = hex::encode(Sha256::digest(&bytes));
            if &got != want {
                bail!(
                    "{}: sha256 {got} differs from the index's {want} (the file was changed \
                     after the fetch)",
                    path.display()
                );
            }
        }
        let digest = digest(&index, &sha256);
        Ok(Content {
            index,
            sha256,
            digest,
        })
    }

    /// Moves each image from `from_root` to its canonical path under `to_dir` (both inside one
    /// staging directory, so each move is a rename).
    pub fn place(moves: &[Move], from_root: &Path, to_dir: &Path) -> Result<()> {
        for m in moves {
            let (from, to) = (from_root.join(&m.from), to_dir.join(&m.to));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }

    /// Per-class counts and digests, in class order: what the pin records beside the digest.
    pub fn classes(&self) -> Vec<ClassContent> {
        let mut by_class: BTreeMap<i64, (Split, Vec<&str>)> = BTreeMap::new();
        for (im, sha) in self.index.images.iter().zip(&self.sha256) {
            let e = by_class
                .entry(im.class_id)
                .or_insert((im.split, Vec::new()));
            e.1.push(sha);
        }
        by_class
            .into_iter()
            .map(|(class_id, (split, mut shas))| {
                shas.sort_unstable();
                let mut h = Sha256::new();
                for s in &shas {
                    h.update(s.as_bytes());
                    h.update(b"\n");
                }
                ClassContent {
                    class_id,
                    split,
                    images: shas.len() as u64,
                    digest: hex::encode(h.finalize())[..16].to_string(),
                }
            })
            .collect()
    }
}

/// One class of a dataset as the pin records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassContent {
    pub class_id: i64,
    pub split: Split,
    pub images: u64,
    /// First 16 hex digits of the sha256 over the class's sorted image digests.
    pub digest: String,
}

/// The content digest: sha256 over a format line and the sorted `sha256 \t class \t split`
/// lines (a split of `val` counts as `train`: validation classes are carved later).
fn digest(index: &DatasetIndex, sha256: &[String]) -> String {
    let mut lines: Vec<String> = index
        .images
        .iter()
        .zip(sha256)
        .map(|(im, sha)| {
            let split = match im.split {
                Split::Test => "test",
                Split::Train | Split::Val => "train",
            };
            format!("{sha}\t{}\t{split}\n", im.class_id)
        })
        .collect();
    lines.sort_unstable();
    let mut h = Sha256::new();
    h.update(format!("grouploss dataset content v{FORMAT}\n").as_bytes());
    for l in &lines {
        h.update(l.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The file extension of an image, from its magic bytes (so a `.jpeg` and a `.JPG` copy of the
/// same bytes get the same canonical path).
fn extension(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "jpg",
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'G', b'I', b'F', b'8', ..] => "gif",
        [b'B', b'M', ..] => "bmp",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
        _ => "img",
    }
}

/// Where the per-class table of a dataset's pin lives: `pipeline/content/<dataset>.tsv`,
/// beside the lock file.
pub fn classes_file(lock_path: &Path, dataset: &str) -> PathBuf {
    lock_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("content")
        .join(format!("{dataset}.tsv"))
}

const CLASSES_HEADER: &str = "class_id\tsplit\timages\tdigest";

/// Writes the per-class table atomically.
pub fn write_classes(path: &Path, classes: &[ClassContent]) -> Result<()> {
    let mut text = format!("{CLASSES_HEADER}\n");
    for c in classes {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            c.class_id, c.split, c.images, c.digest
        ));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Reads a per-class table written by [`write_classes`], naming the file and line on error.
pub fn read_classes(path: &Path) -> Result<Vec<ClassContent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let bad = || {
            format!(
                "{}: line {}: expected {CLASSES_HEADER}",
                path.display(),
                n + 1
            )
        };
        let f: Vec<&str> = line.split('\t').collect();
        let [class_id, split, images, digest] = f[..] else {
            bail!(bad())
        };
        out.push(ClassContent {
            class_id: class_id.parse().with_context(bad)?,
            split: split
                .parse()
                .map_err(anyhow::Error::msg)
                .with_context(bad)?,
            images: images.parse().with_context(bad)?,
            digest: digest.to_string(),
        });
    }
    Ok(out)
}

/// What differs between the pinned classes and the found ones, one phrase per difference
/// (at most `limit`, then a count of the rest).
pub fn differences(pinned: &[ClassContent], found: &[ClassContent], limit: usize) -> Vec<String> {
    let p: BTreeMap<i64, &ClassContent> = pinned.iter().map(|c| (c.class_id, c)).collect();
    let f: BTreeMap<i64, &ClassContent> = found.iter().map(|c| (c.class_id, c)).collect();
    let mut out = Vec::new();
    let missing: Vec<String> = p
        .keys()
        .filter(|k| !f.contains_key(k))
        .map(i64::to_string)
        .collect();
    if !missing.is_empty() {
        out.push(format!("classes missing: {}", missing.join(", ")));
    }
    let extra: Vec<String> = f
        .keys()
        .filter(|k| !p.contains_key(k))
        .map(i64::to_string)
        .collect();
    if !extra.is_empty() {
        out.push(format!("classes not in the pin: {}", extra.join(", ")));
    }
    for (id, want) in &p {
        let Some(got) = f.get(id) else { continue };
        if got.images != want.images {
            out.push(format!(
                "class {id}: {} images pinned, {} found",
                want.images, got.images
            ));
        } else if got.digest != want.digest {
            out.push(format!(
                "class {id}: {} images as pinned, but other images (an image replaced or \
                 swapped with another class)",
                got.images
            ));
        } else if got.split != want.split {
            out.push(format!(
                "class {id}: split {} pinned, {} found",
                want.split, got.split
            ));
        }
    }
    if out.len() > limit {
        let rest = out.len() - limit;
        out.truncate(limit);
        out.push(format!("… and {rest} more"));
    }
    out
}

/// Checks `content` against the content pinned for `dataset` in `lock`; without a pin, pins it
/// and writes the per-class table (trust on first use, like the files without a published
/// checksum). A mismatch is an error that lists what differs, per class where the table is
/// there to compare with.
pub fn verify_or_pin(lock: &mut Lock, dataset: &str, content: &Content) -> Result<()> {
    let classes = content.classes();
    let table = classes_file(lock.path(), dataset);
    match lock.content(dataset) {
        None => {
            write_classes(&table, &classes)?;
            lock.pin_content(ContentPin {
                dataset: dataset.to_string(),
                digest: content.digest.clone(),
                images: content.index.images.len() as u64,
                classes: classes.len() as u64,
            })?;
            tracing::info!(
                "pinned the content of `{dataset}` in {}",
                lock.path().display()
            );
            Ok(())
        }
        Some(pin) if pin.digest == content.digest => Ok(()),
        Some(pin) => {
            let mut what = vec![format!(
                "{} images in {} classes pinned, {} in {} found",
                pin.images,
                pin.classes,
                content.index.images.len(),
                classes.len()
            )];
            match read_classes(&table) {
                Ok(pinned) => what.extend(differences(&pinned, &classes, 20)),
                Err(e) => what.push(format!("no per-class table to compare with ({e:#})")),
            }
            bail!(
                "`{dataset}`: the images differ from the content pinned in {} (digest {}, found \
                 {}): {}. The source dropped, added, changed or relabelled images; use another \
                 source, or if the dataset itself changed upstream, remove its [[content]] entry \
                 and {} to pin it anew",
                lock.path().display(),
                pin.digest,
                content.digest,
                what.join("; "),
                table.display()
            )
        }
    }
}

/// What a run id knows of its dataset before anything runs ([`crate::numerics::RunIdentity`]):
/// the content digest pinned in the lock; for a user's own folder (never pinned: it is theirs
/// to change), `local:` and a digest of its listing; `unpinned` for a registry dataset whose
/// content is not pinned yet (`gl run` fetches those before it plans, so this stays the
/// exception of a dry run).
/// (`project_root` holds `pipeline/`, `data_dir` the local registry files.)
pub fn planned(project_root: &Path, data_dir: &Path, dataset: &str) -> Result<String> {
    let lock = Lock::load(project_root)?;
    if let Some(pin) = lock.content(dataset) {
        return Ok(pin.digest.clone());
    }
    let registry = crate::data::registry::Registry::load(project_root, data_dir)?;
    let local = registry
        .datasets
        .iter()
        .find(|(name, _)| name.as_str() == dataset)
        .and_then(|(_, spec)| spec.local_root.as_ref());
    Ok(match local {
        Some(root) => format!(
            "local:{}",
            crate::fsutil::tree_digest(&project_root.join(root))?
        ),
        None => UNPINNED.to_string(),
    })
}

/// [`planned`] of a registry dataset whose content is not pinned yet.
pub const UNPINNED: &str = "unpinned";

#[cfg(test)]
#[path = "content_tests.rs"]
mod tests;
