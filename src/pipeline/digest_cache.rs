//! The sha256 of each stage output, remembered with the file's size, modification and change
//! times and inode (`<data>/pipeline/digests.json`), so that `gl status` and `gl run` on an
//! unchanged data directory read no output file to decide freshness: a file is hashed again only
//! when one of those four changed. The change time cannot be set by a user (`touch -d` sets the
//! modification time and moves the change time), so a rewritten file is always seen.
//!
//! It is a cache: a missing or unreadable cache file is an empty cache, and it is written with
//! temp + rename, so concurrent writers (a `gl status` beside a `gl run`) can only lose entries.
//! What stages read they verify against their own recorded checksums; this only decides what is
//! stale.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Stamp {
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            inode: m.ino(),
        })
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    stamp: Stamp,
    sha256: String,
}

/// Output digests by absolute path.
#[derive(Debug)]
pub struct DigestCache {
    path: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
    changed: bool,
    /// Files actually read and hashed by this cache (what `gl status` costs).
    pub hashed: usize,
}

impl DigestCache {
    /// `<data>/pipeline/digests.json`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("pipeline/digests.json")
    }

    /// The cache of `data_dir` (empty when there is none or it cannot be read).
    pub fn load(data_dir: &Path) -> Self {
        let path = Self::path(data_dir);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        DigestCache {
            path,
            entries,
            changed: false,
            hashed: 0,
        }
    }

    /// A cache that starts empty and is never saved (tests, one-off digests).
    pub fn ephemeral() -> Self {
        DigestCache {
            path: PathBuf::new(),
            entries: BTreeMap::new(),
            changed: false,
            hashed: 0,
        }
    }

    /// The sha256 of `path`: remembered when the file's stamp is unchanged, else read and
    /// hashed (and remembered).
    pub fn sha256(&mut self, path: &Path) -> Result<String> {
        let stamp = Stamp::of(path)?;
        if let Some(e) = self.entries.get(path).filter(|e| e.stamp == stamp) {
            return Ok(e.sha256.clone());
        }
        let sha = hash_file(path)?;
        // A file changed while it was read is not remembered: its stamp would not match.
        if Stamp::of(path)? == stamp {
            self.entries.insert(
                path.to_path_buf(),
                Entry {
                    stamp,
                    sha256: sha.clone(),
                },
            );
            self.changed = true;
        }
        self.hashed += 1;
        Ok(sha)
    }

    /// Writes the cache if it learnt anything (temp + rename), dropping entries of files that
    /// no longer exist.
    pub fn save(&mut self) -> Result<()> {
        if !self.changed || self.path.as_os_str().is_empty() {
            return Ok(());
        }
        self.entries.retain(|p, _| p.exists());
        let bytes = serde_json::to_vec(&self.entries)?;
        crate::fsutil::write_atomic(&self.path, &bytes)?;
        self.changed = false;
        Ok(())
    }
}

/// sha256 of a file, streamed.
fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_not_read_again_a_changed_one_is() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("out.bin");
        std::fs::write(&f, b"first").unwrap();
        let mut c = DigestCache::load(d.path());
        let a = c.sha256(&f).unwrap();
        c.save().unwrap();
        let mut c = DigestCache::load(d.path());
        assert_eq!(c.sha256(&f).unwrap(), a);
        assert_eq!(c.hashed, 0, "served from the saved cache");
        // Same size, rewritten: the change time moves, so it is hashed again.
        std::fs::write(&f, b"final").unwrap();
        let b = c.sha256(&f).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.hashed, 1);
        assert_eq!(b, hash_file(&f).unwrap());
    }

    #[test]
    fn a_corrupt_cache_is_an_empty_one() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pipeline")).unwrap();
        std::fs::write(DigestCache::path(d.path()), b"{not json").unwrap();
        let f = d.path().join("x");
        std::fs::write(&f, b"x").unwrap();
        let mut c = DigestCache::load(d.path());
        assert_eq!(c.sha256(&f).unwrap(), hash_file(&f).unwrap());
        assert_eq!(c.hashed, 1);
        c.save().unwrap();
        assert!(DigestCache::load(d.path()).entries.contains_key(&f));
    }
}
