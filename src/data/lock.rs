//! `pipeline/datasets.lock`: sha256 of every dataset file, pinned on its first successful
//! download (like Cargo.lock) and verified on every later use — the files without a published
//! checksum are otherwise unverifiable. `pipeline/weights.lock` has the same format for the
//! weights files of `gl weights` ([`Lock::load_at`]; there `dataset` holds the weights name).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the lock file lives, relative to the project root.
pub const LOCK_FILE: &str = "pipeline/datasets.lock";

const DATASETS_HEADER: &str =
    "# Pinned sha256 of dataset files and each dataset's content digest (per-class table in\n\
                               # pipeline/content/), written by `gl fetch` on first download and\n\
                               # verified on every later use. Commit it.";

/// One pinned file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub dataset: String,
    /// The dataset's source the file is of; absent for the single-source form's `default`
    /// (and for weights), so a lock written before there were sources keeps its meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A dataset's pinned content digest ([`crate::data::content`]); its per-class counts and
/// digests are in `pipeline/content/<dataset>.tsv`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPin {
    pub dataset: String,
    pub digest: String,
    pub images: u64,
    pub classes: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LockDoc {
    #[serde(default, rename = "file")]
    files: Vec<Pin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    content: Vec<ContentPin>,
}

/// The lock file in memory.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    header: &'static str,
    doc: LockDoc,
}

impl Lock {
    /// Reads the datasets' lock file (a missing file is an empty lock).
    pub fn load(project_root: &Path) -> Result<Self> {
        Self::load_at(project_root.join(LOCK_FILE), DATASETS_HEADER)
    }

    /// Reads the lock file at `path` (a missing file is an empty lock); `header` is the comment
    /// written at its top.
    pub fn load_at(path: PathBuf, header: &'static str) -> Result<Self> {
        let doc = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LockDoc::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Lock { path, header, doc })
    }

    /// The pin of `dataset`/`file` (no source: weights, or a dataset's `default` source), if any.
    pub fn get(&self, dataset: &str, file: &str) -> Option<&Pin> {
        self.get_in(dataset, None, file)
    }

    /// The pin of `file` of `dataset`'s `source` (`None`: the `default` source), if any.
    pub fn get_in(&self, dataset: &str, source: Option<&str>, file: &str) -> Option<&Pin> {
        self.doc
            .files
            .iter()
            .find(|p| p.dataset == dataset && p.source.as_deref() == source && p.file == file)
    }

    /// Records a pin and rewrites the file atomically (temp file + rename), sorted by
    /// dataset and file so diffs stay small.
    pub fn pin(&mut self, pin: Pin) -> Result<()> {
        self.doc.files.retain(|p| {
            !(p.dataset == pin.dataset && p.source == pin.source && p.file == pin.file)
        });
        self.doc.files.push(pin);
        self.doc.files.sort_by(|a, b| {
            (&a.dataset, &a.source, &a.file).cmp(&(&b.dataset, &b.source, &b.file))
        });
        self.save()
    }

    /// The pinned content of `dataset`, if any.
    pub fn content(&self, dataset: &str) -> Option<&ContentPin> {
        self.doc.content.iter().find(|p| p.dataset == dataset)
    }

    /// Records a dataset's content pin and rewrites the file atomically.
    pub fn pin_content(&mut self, pin: ContentPin) -> Result<()> {
        self.doc.content.retain(|p| p.dataset != pin.dataset);
        self.doc.content.push(pin);
        self.doc.content.sort_by(|a, b| a.dataset.cmp(&b.dataset));
        self.save()
    }

    /// Drops the content pin of `dataset`; whether there was one.
    pub fn unpin_content(&mut self, dataset: &str) -> Result<bool> {
        let before = self.doc.content.len();
        self.doc.content.retain(|p| p.dataset != dataset);
        if self.doc.content.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<()> {
        let body = toml::to_string(&self.doc).context("serialising the lock file")?;
        let text = format!("{}\n\n{body}", self.header);
        crate::fsutil::write_atomic(&self.path, text.as_bytes())
    }

    /// Drops the pin of `dataset`/`file` (a synthetic set replaced by `gl synth --replace`),
    /// rewriting the file atomically; whether there was one.
    pub fn unpin(&mut self, dataset: &str, file: &str) -> Result<bool> {
        let before = self.doc.files.len();
        self.doc
            .files
            .retain(|p| !(p.dataset == dataset && p.source.is_none() && p.file == file));
        if self.doc.files.len() == before {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a downloaded file (`found`, stored at `stored`) against its pin: an error when
    /// the sha256 differs (the file changed upstream or is corrupt); without a pin, pins it when
    /// `pin_new` (files without a published checksum).
    pub fn verify_or_pin(&mut self, found: Pin, stored: &Path, pin_new: bool) -> Result<()> {
        match self.get_in(&found.dataset, found.source.as_deref(), &found.file) {
            Some(pin) if pin.sha256 != found.sha256 => anyhow::bail!(
                "{}: sha256 {} differs from the one pinned in {} ({}); the file changed upstream or is corrupt",
                stored.display(),
                found.sha256,
                self.path.display(),
                pin.sha256
            ),
            None if pin_new => {
                let file = found.file.clone();
                self.pin(found)?;
                tracing::info!("pinned sha256 of {file} in {}", self.path.display());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_replace() {
        let d = tempfile::tempdir().unwrap();
        let mut lock = Lock::load(d.path()).unwrap();
        assert!(lock.get("cars", "car_ims.tgz").is_none());
        let pin = |sha: &str| Pin {
            dataset: "cars".into(),
            source: None,
            file: "car_ims.tgz".into(),
            sha256: sha.into(),
            bytes: 3,
        };
        lock.pin(pin("aa")).unwrap();
        lock.pin(pin("bb")).unwrap();
        let again = Lock::load(d.path()).unwrap();
        assert_eq!(again.get("cars", "car_ims.tgz"), Some(&pin("bb")));
        assert_eq!(again.doc.files.len(), 1);
        // Another source's file of the same name is another pin.
        let mut lock = again;
        lock.pin(Pin {
            source: Some("mirror".into()),
            ..pin("cc")
        })
        .unwrap();
        let again = Lock::load(d.path()).unwrap();
        assert_eq!(again.get("cars", "car_ims.tgz"), Some(&pin("bb")));
        assert_eq!(
            again
                .get_in("cars", Some("mirror"), "car_ims.tgz")
                .unwrap()
                .sha256,
            "cc"
        );
    }

    #[test]
    fn a_corrupt_lock_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pipeline")).unwrap();
        std::fs::write(d.path().join(LOCK_FILE), "[[file]]\ndataset = 3\n").unwrap();
        let e = format!("{:#}", Lock::load(d.path()).unwrap_err());
        assert!(e.contains("datasets.lock"), "{e}");
    }
}
