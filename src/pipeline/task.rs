//! One unit of work of the pipeline and where its outputs are: the type the plan builders
//! ([`super::tasks`]), the DAG ([`super::dag`]), the fingerprints and both executors share,
//! below all of them so none needs another to name a task.

use std::path::PathBuf;

/// Where a task's output is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Output {
    /// A file, relative to the data directory.
    File(PathBuf),
    /// The manifest of the crop cache of `dataset` prepared at `resize` (its directory name is
    /// a hash known only after fetching).
    CropCache { dataset: String, resize: u32 },
    /// A file relative to the project root (the report under `reports/`).
    Project(PathBuf),
}

/// One unit of work: a `gl` command over files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Task {
    pub stage: String,
    /// Unique within the stage (`demo`, `demo/s0`, `demo-demo-s0/selected`).
    pub key: String,
    /// `gl` arguments (global options are added by the executor).
    pub argv: Vec<String>,
    pub outputs: Vec<Output>,
    /// What the task depends on besides its inputs: the profile keys of its stage and
    /// stage-specific resolved settings (a training run's full configuration).
    pub config: serde_json::Value,
    /// A training task's run directory (relative to the data directory): moved aside to
    /// `runs/.superseded/` before the task runs again with other upstream inputs, so the run
    /// trains anew instead of `--resume` finding it finished.
    pub run_dir: Option<PathBuf>,
    /// Resources it reads and writes (see the module docs).
    pub consumes: Vec<String>,
    pub produces: Vec<String>,
    /// Indices of the tasks it needs, in the plan.
    #[serde(skip)]
    pub deps: Vec<usize>,
}

impl Task {
    pub fn id(&self) -> String {
        format!("{}:{}", self.stage, self.key)
    }
}

#[cfg(test)]
impl Task {
    /// A task for tests: stage `s`, its key as its only argument, nothing consumed or produced.
    pub(crate) fn fixture(key: &str, deps: Vec<usize>) -> Task {
        Task {
            stage: "s".into(),
            key: key.into(),
            argv: vec![key.into()],
            outputs: Vec::new(),
            config: serde_json::Value::Null,
            run_dir: None,
            consumes: Vec::new(),
            produces: Vec::new(),
            deps,
        }
    }
}
