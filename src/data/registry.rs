//! The dataset registry: `pipeline/datasets.toml` plus any `data/registry.d/*.toml` (datasets a
//! user or `gl synth` adds locally), read through figment so a wrong key or type is an error
//! naming the key path and the file.

use crate::data::index::ExpectedCounts;
use crate::data::layout::Layout;
use crate::data::sources::{Forms, SourceSpec};
use crate::names::{Kind, Name};
use anyhow::{bail, Context, Result};
use figment::providers::{Format, Toml};
use figment::Figment;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the project's registry lives, relative to the project root.
pub const REGISTRY_FILE: &str = "pipeline/datasets.toml";
/// Extra registry files, relative to the data directory.
pub const LOCAL_REGISTRY_DIR: &str = "registry.d";

/// Every dataset the pipeline knows, by name (each a checked [`Name`]: it becomes
/// `data/datasets/<name>/`).
#[derive(Debug, Clone)]
pub struct Registry {
    pub datasets: BTreeMap<Name, DatasetSpec>,
}

/// One registry file as written, its names not yet checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    datasets: BTreeMap<String, RawDatasetSpec>,
}

/// One dataset as written: the sources form (`[[datasets.<name>.sources]]`) or the
/// single-source form (`layout`, `root`, `files` at the top), not yet checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetSpec {
    title: String,
    license: String,
    #[serde(default)]
    sources: Option<Vec<crate::data::sources::RawSource>>,
    #[serde(default)]
    files: Option<Vec<FileEntry>>,
    #[serde(default)]
    local_root: Option<PathBuf>,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    layout: Option<Layout>,
    #[serde(default)]
    expect: ExpectedCounts,
    #[serde(default)]
    train: Option<figment::value::Dict>,
    #[serde(default)]
    limits: crate::data::archive::Limits,
}

/// One dataset: where its files come from (its sources, tried in order), what it must contain.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub title: String,
    /// Who may use the data and how (shown in the catalogue; the datasets are research-only).
    pub license: String,
    /// Where the files come from, in the order a fetch tries them; at least one. The
    /// single-source form is one source named `default`.
    pub sources: Vec<SourceSpec>,
    /// An existing local directory instead of files to fetch (`image_folder` datasets);
    /// relative paths are relative to the project root. Its one source has no files.
    pub local_root: Option<PathBuf>,
    /// Published counts; the fetch stage fails when the parsed dataset differs, whatever the
    /// source.
    pub expect: ExpectedCounts,
    /// Training recipe values for this dataset, for a dataset that `pipeline/train.toml` has
    /// no `[datasets.<name>]` section for (one's own data: declared beside the dataset).
    pub train: Option<figment::value::Dict>,
    /// How much its archives may write when extracted (decompression bombs stop there).
    pub limits: crate::data::archive::Limits,
}

impl RawDatasetSpec {
    /// Checks the sources (see [`crate::data::sources`]).
    fn check(self) -> Result<DatasetSpec> {
        let sources = crate::data::sources::from_forms(Forms {
            sources: self.sources,
            layout: self.layout,
            root: self.root,
            files: self.files,
            local_root: self.local_root.is_some(),
        })?;
        Ok(DatasetSpec {
            title: self.title,
            license: self.license,
            sources,
            local_root: self.local_root,
            expect: self.expect,
            train: self.train,
            limits: self.limits,
        })
    }
}

/// One file of a dataset.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name on disk (under `data/downloads/<dataset>/<source>/`).
    pub name: String,
    /// Mirrors, tried in order: `https://…`, `http://…`, `file:///abs/path`, or `file:rel/path`
    /// (relative to the project root, for the embedded demo data).
    pub urls: Vec<String>,
    /// Published checksums, where one exists; otherwise the sha256 is pinned in
    /// `pipeline/datasets.lock` on the first successful download.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

impl Registry {
    /// Reads `<project>/pipeline/datasets.toml` and `<data_dir>/registry.d/*.toml` (sorted);
    /// a later file may add datasets but not redefine one. A dataset name that breaks the
    /// [`Name`] rule is an error naming the file and the key.
    pub fn load(project_root: &Path, data_dir: &Path) -> Result<Self> {
        let main = project_root.join(REGISTRY_FILE);
        if !main.is_file() {
            bail!("dataset registry {} not found", main.display());
        }
        let mut files = vec![main];
        let local = data_dir.join(LOCAL_REGISTRY_DIR);
        if local.is_dir() {
            let mut extra: Vec<PathBuf> = std::fs::read_dir(&local)
                .with_context(|| format!("listing {}", local.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            extra.sort();
            files.extend(extra);
        }
        let mut registry = Registry {
            datasets: BTreeMap::new(),
        };
        for file in files {
            let part: RegistryFile = Figment::new()
                .merge(Toml::file_exact(&file))
                .extract()
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for (key, spec) in part.datasets {
                let name = Name::new(Kind::Dataset, &key)
                    .map_err(|e| anyhow::anyhow!("{}: [datasets.{key:?}]: {e}", file.display()))?;
                if registry.datasets.contains_key(&name) {
                    bail!("{}: dataset `{name}` is already defined", file.display());
                }
                let spec = spec
                    .check()
                    .map_err(|e| anyhow::anyhow!("{}: [datasets.{key}]: {e:#}", file.display()))?;
                registry.datasets.insert(name, spec);
            }
        }
        Ok(registry)
    }

    /// The dataset `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&DatasetSpec> {
        self.datasets.get(name).with_context(|| {
            let known: Vec<&str> = self.datasets.keys().map(Name::as_str).collect();
            format!("unknown dataset `{name}` (known: {})", known.join(", "))
        })
    }
}

/// Turns `file:rel/path` into an absolute `file://` URL under `project_root`; other URLs pass.
pub fn resolve_url(url: &str, project_root: &Path) -> String {
    match url.strip_prefix("file:") {
        Some(rest) if !rest.starts_with("//") => {
            format!("file://{}", project_root.join(rest).display())
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const OK: &str = r#"
[datasets.tiny]
title = "Tiny"
license = "test"
root = "tiny"
layout = { kind = "cub" }
expect = { images = 4 }
[[datasets.tiny.files]]
name = "tiny.tgz"
urls = ["file:fixtures/tiny.tgz"]
"#;

    #[test]
    fn reads_the_registry_and_local_additions() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), REGISTRY_FILE, OK);
        write(
            d.path(),
            "data/registry.d/mine.toml",
            "[datasets.mine]\ntitle = \"M\"\nlicense = \"own\"\nlocal_root = \"/x\"\nlayout = { kind = \"image_folder\" }\n",
        );
        let r = Registry::load(d.path(), &d.path().join("data")).unwrap();
        assert_eq!(
            r.datasets.keys().map(Name::as_str).collect::<Vec<_>>(),
            ["mine", "tiny"]
        );
        assert_eq!(r.get("tiny").unwrap().expect.images, Some(4));
        let e = r.get("cub").unwrap_err().to_string();
        assert!(e.contains("known: mine, tiny"), "{e}");
    }

    #[test]
    fn unknown_key_and_wrong_type_name_the_key_and_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            REGISTRY_FILE,
            &OK.replace("root = \"tiny\"", "rooot = \"tiny\""),
        );
        let e = format!("{:#}", Registry::load(d.path(), d.path()).unwrap_err());
        assert!(e.contains("rooot") && e.contains("datasets.toml"), "{e}");
        write(
            d.path(),
            REGISTRY_FILE,
            &OK.replace("images = 4", "images = \"four\""),
        );
        let e = format!("{:#}", Registry::load(d.path(), d.path()).unwrap_err());
        assert!(
            e.contains("datasets.tiny.expect.images") && e.contains("datasets.toml"),
            "{e}"
        );
        let missing = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            Registry::load(missing.path(), missing.path()).unwrap_err()
        );
        assert!(
            e.contains("pipeline/datasets.toml") && e.contains("not found"),
            "{e}"
        );
    }

    #[test]
    fn a_dataset_name_that_is_no_plain_name_is_refused_naming_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), REGISTRY_FILE, OK);
        write(
            d.path(),
            "data/registry.d/mine.toml",
            &OK.replace("datasets.tiny", "datasets.\"../../victim\""),
        );
        let e = format!(
            "{:#}",
            Registry::load(d.path(), &d.path().join("data")).unwrap_err()
        );
        assert!(
            e.contains("registry.d/mine.toml: [datasets.\"../../victim\"]: dataset name \"../../victim\" contains the path separator '/'"),
            "{e}"
        );
    }

    const SOURCES: &str = r#"
[datasets.tiny]
title = "Tiny"
license = "test"
expect = { images = 4 }
[[datasets.tiny.sources]]
name = "first"
host = "somebody"
since = "2020"
root = "tiny"
layout = { kind = "cub" }
files = [{ name = "tiny.tgz", urls = ["file:fixtures/tiny.tgz"] }]
[[datasets.tiny.sources]]
name = "second"
host = "somebody else"
since = "2024"
layout = { kind = "sop" }
files = []
"#;

    fn load_error(text: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), REGISTRY_FILE, text);
        format!("{:#}", Registry::load(d.path(), d.path()).unwrap_err())
    }

    #[test]
    fn sources_read_in_order_and_the_single_form_is_one_default_source() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), REGISTRY_FILE, SOURCES);
        let r = Registry::load(d.path(), d.path()).unwrap();
        let names: Vec<&str> = r
            .get("tiny")
            .unwrap()
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["first", "second"]);
        assert_eq!(r.get("tiny").unwrap().sources[0].root, "tiny");
        write(d.path(), REGISTRY_FILE, OK);
        let r = Registry::load(d.path(), d.path()).unwrap();
        let s = &r.get("tiny").unwrap().sources;
        assert_eq!(
            (s.len(), s[0].name.as_str(), s[0].root.as_str()),
            (1, "default", "tiny")
        );
        assert!(s[0].lock_key().is_none());
    }

    #[test]
    fn bad_sources_are_refused_naming_file_key_and_why() {
        let e = load_error(&SOURCES.replace("since = \"2020\"", "since = \"2020\"\nmirror = 1"));
        assert!(e.contains("mirror") && e.contains("datasets.toml"), "{e}");
        let e = load_error(&SOURCES.replace("name = \"second\"", "name = \"first\""));
        assert!(
            e.contains(
                "datasets.toml: [datasets.tiny]: sources[1]: source `first` is listed twice"
            ),
            "{e}"
        );
        let e = load_error(&SOURCES.replace(
            "expect = { images = 4 }",
            "expect = { images = 4 }\nroot = \"x\"",
        ));
        assert!(
            e.contains("[datasets.tiny]: `sources` and top-level `root` at once"),
            "{e}"
        );
        let e = load_error(&SOURCES.replace("name = \"second\"", "name = \"../up\""));
        assert!(e.contains("sources[1]: source name \"../up\""), "{e}");
        let e = load_error(&OK.replace("layout = { kind = \"cub\" }\n", ""));
        assert!(e.contains("[datasets.tiny]: missing `layout`"), "{e}");
        let e = load_error(&SOURCES.replace("host = \"somebody\"\n", ""));
        assert!(e.contains("host") && e.contains("datasets.toml"), "{e}");
    }

    #[test]
    fn relative_file_urls_resolve_against_the_project() {
        let root = Path::new("/proj");
        assert_eq!(
            resolve_url("file:data/x.tgz", root),
            "file:///proj/data/x.tgz"
        );
        assert_eq!(resolve_url("file:///abs/x.tgz", root), "file:///abs/x.tgz");
        assert_eq!(resolve_url("https://h/x.tgz", root), "https://h/x.tgz");
    }
}
