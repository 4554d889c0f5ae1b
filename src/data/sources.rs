//! The sources of a dataset: every place its files can come from, tried in order by `gl fetch`.
//!
//! A registry entry lists `[[datasets.<name>.sources]]`, each with its own `layout`, `root` and
//! `files` (one host may ship the official archive, another class folders or Parquet), plus who
//! hosts it (`host`) and since when (`since`). The older single-source form — `layout`, `root`
//! and `files` directly under the dataset — still reads, as one source named `default` (what
//! `gl synth` writes and what most tests use). `expect` stays per dataset: whichever source
//! answers, it must give the same dataset.

use crate::data::layout::Layout;
use crate::data::registry::{DatasetSpec, FileEntry};
use crate::names::{Kind, Name};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The name of the one source of a dataset written in the single-source form.
pub const DEFAULT_SOURCE: &str = "default";

/// One place a dataset's files come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceSpec {
    /// A checked [`Name`]: `data/downloads/<dataset>/<source>/` and `--source <name>`.
    pub name: Name,
    /// Who hosts it (free text, e.g. "Caltech library (CaltechDATA)").
    pub host: String,
    /// Since when it is there, as far as known (free text, e.g. "2022").
    pub since: String,
    pub layout: Layout,
    /// Directory inside the extracted files where the layout's files are.
    pub root: String,
    /// Files to fetch; archives are extracted, other files copied beside them.
    pub files: Vec<FileEntry>,
    /// True when the host needs a login: its files are got by hand and given with `--from`.
    pub login: bool,
    pub note: Option<String>,
}

/// One source as written in a registry file, its name not yet checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    name: String,
    host: String,
    since: String,
    layout: Layout,
    #[serde(default)]
    root: String,
    files: Vec<FileEntry>,
    #[serde(default)]
    login: bool,
    #[serde(default)]
    note: Option<String>,
}

/// The parts of a registry entry that say where its files come from, in either form.
pub(crate) struct Forms {
    pub sources: Option<Vec<RawSource>>,
    pub layout: Option<Layout>,
    pub root: Option<String>,
    pub files: Option<Vec<FileEntry>>,
    pub local_root: bool,
}

/// The sources of one entry, checked: both forms at once, no layout, an empty or duplicate
/// source name and a source name that is no plain [`Name`] are errors (the caller adds the file
/// and the key).
pub(crate) fn from_forms(forms: Forms) -> Result<Vec<SourceSpec>> {
    let Some(raw) = forms.sources else {
        let Some(layout) = forms.layout else {
            bail!("missing `layout` (or `[[sources]]`)");
        };
        return Ok(vec![SourceSpec {
            name: Name::new(Kind::Source, DEFAULT_SOURCE)?,
            host: String::new(),
            since: String::new(),
            layout,
            root: forms.root.unwrap_or_default(),
            files: forms.files.unwrap_or_default(),
            login: false,
            note: None,
        }]);
    };
    let single: Vec<&str> = [
        forms.layout.as_ref().map(|_| "layout"),
        forms.root.as_ref().map(|_| "root"),
        forms.files.as_ref().map(|_| "files"),
        forms.local_root.then_some("local_root"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !single.is_empty() {
        bail!(
            "`sources` and top-level `{}` at once: give `layout`, `root` and `files` per source \
             or, for a single source, only at the top",
            single.join("`, `")
        );
    }
    if raw.is_empty() {
        bail!("`sources` is empty");
    }
    let mut out: Vec<SourceSpec> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let name =
            Name::new(Kind::Source, &r.name).map_err(|e| anyhow::anyhow!("sources[{i}]: {e}"))?;
        if out.iter().any(|s| s.name == name) {
            bail!("sources[{i}]: source `{name}` is listed twice");
        }
        out.push(SourceSpec {
            name,
            host: r.host,
            since: r.since,
            layout: r.layout,
            root: r.root,
            files: r.files,
            login: r.login,
            note: r.note,
        });
    }
    Ok(out)
}

impl SourceSpec {
    /// The source of the single-source form.
    pub fn is_default(&self) -> bool {
        self.name.as_str() == DEFAULT_SOURCE
    }

    /// How `pipeline/datasets.lock` keys this source's files: absent for `default` (the form
    /// the lock had before there were sources), else the source's name.
    pub fn lock_key(&self) -> Option<&str> {
        (!self.is_default()).then_some(self.name.as_str())
    }

    /// `data/downloads/<dataset>/<source>/`, or `data/downloads/<dataset>/` for `default`
    /// (where every file was before there were sources); `base` is the dataset's
    /// `data/downloads/<dataset>/`.
    pub fn downloads(&self, base: PathBuf) -> PathBuf {
        match self.is_default() {
            true => base,
            false => base.join(&self.name),
        }
    }

    /// `name (host, since …)`, or the bare name where no host is given.
    pub fn describe_who(&self) -> String {
        let mut who = self.host.clone();
        if !self.since.is_empty() {
            who.push_str(&format!(", since {}", self.since));
        }
        if self.login {
            who.push_str(", login needed");
        }
        match who.is_empty() {
            true => self.name.to_string(),
            false => format!("{} ({who})", self.name),
        }
    }

    /// One line: `name (host, since …)`, then the first URL of each file.
    pub fn describe(&self) -> String {
        let urls: Vec<&str> = self
            .files
            .iter()
            .map(|f| {
                f.urls
                    .first()
                    .map_or("(no URL: get it by hand)", String::as_str)
            })
            .collect();
        match urls.is_empty() {
            true => self.describe_who(),
            false => format!("{} {}", self.describe_who(), urls.join(" ")),
        }
    }
}

/// The sources of `spec` in the order a fetch tries them: the registry's order, restricted to
/// `only` (`--source`), with `previous` (the source the dataset in place came from) first so that
/// a dataset already fetched is not first looked for on hosts that failed before.
pub fn order<'a>(
    spec: &'a DatasetSpec,
    only: Option<&str>,
    previous: Option<&str>,
) -> Result<Vec<&'a SourceSpec>> {
    if let Some(name) = only {
        return match spec.sources.iter().find(|s| s.name.as_str() == name) {
            Some(s) => Ok(vec![s]),
            None => bail!("--source {name}: no such source (sources: {})", names(spec)),
        };
    }
    let mut all: Vec<&SourceSpec> = spec.sources.iter().collect();
    if let Some(i) = all.iter().position(|s| Some(s.name.as_str()) == previous) {
        let first = all.remove(i);
        all.insert(0, first);
    }
    Ok(all)
}

/// The sources `--from` files can belong to: those with a file named like one of them; when
/// no file name matches and one file is given, every source of exactly one file (the checksum
/// decides). An error names every source's files when none fits.
pub fn for_local_files<'a>(
    sources: Vec<&'a SourceSpec>,
    from: &[PathBuf],
) -> Result<Vec<&'a SourceSpec>> {
    let named = |s: &SourceSpec| {
        from.iter()
            .any(|p| s.files.iter().any(|f| file_name_is(p, &f.name)))
    };
    let matching: Vec<&SourceSpec> = sources.iter().copied().filter(|s| named(s)).collect();
    if !matching.is_empty() {
        return Ok(matching);
    }
    let single: Vec<&SourceSpec> = match from.len() {
        1 => sources
            .iter()
            .copied()
            .filter(|s| s.files.len() == 1)
            .collect(),
        _ => Vec::new(),
    };
    if !single.is_empty() {
        return Ok(single);
    }
    let listing: Vec<String> = sources
        .iter()
        .map(|s| {
            let files: Vec<&str> = s.files.iter().map(|f| f.name.as_str()).collect();
            format!("{} ({})", s.name, files.join(", "))
        })
        .collect();
    bail!(
        "--from {}: no source has a file of that name; name the files like those of a source: {}",
        from.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        listing.join("; ")
    )
}

/// Lines for `gl run --dry-run`: `dataset: 1. source (host, since …) url…`, one per source.
pub fn listing(registry: &crate::data::registry::Registry, dataset: &str) -> Vec<String> {
    match registry.datasets.get(dataset) {
        None => vec![format!("{dataset}: not in the registry")],
        Some(spec) => match &spec.local_root {
            Some(local) => vec![format!("{dataset}: local folder {}", local.display())],
            None => spec
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{dataset}: {}. {}", i + 1, s.describe()))
                .collect(),
        },
    }
}

/// Whether `path`'s file name is `name`.
pub fn file_name_is(path: &Path, name: &str) -> bool {
    path.file_name().is_some_and(|f| f == name)
}

/// The source names of `spec`, comma-separated.
pub fn names(spec: &DatasetSpec) -> String {
    spec.sources
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
