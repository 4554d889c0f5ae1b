//! The stage DAG (`pipeline/stages.toml`) and its expansion into tasks for one profile.
//!
//! A stage is declared with the stages it needs; [`super::tasks`] fans it out into tasks, each
//! naming the resources it consumes and produces (`dataset:demo`, `crops:demo`, `run:<id>`,
//! `emb:<run>/<model>`, …). Task T depends on the tasks of its stage's needed stages that
//! produce what T consumes; a consumed resource nobody produces is an error.

use crate::pipeline::profile::Profile;
use crate::pipeline::tasks;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

use crate::pipeline::task::Task;

/// The DAG file, relative to the project root.
pub const STAGES_FILE: &str = "pipeline/stages.toml";

/// One `[[stage]]` of the DAG file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub needs: Vec<String>,
    /// Profile keys (dotted paths) the stage's tasks depend on.
    pub config: Vec<String>,
    pub version: u32,
    /// Which numerics version its results depend on (`training`, `evaluation`): part of its
    /// tasks' fingerprints, so bumping it makes them stale ([`crate::numerics`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerics: Option<String>,
}

impl StageDecl {
    /// The numerics version its tasks' results depend on (0 for none).
    pub fn numerics_version(&self) -> u32 {
        self.numerics
            .as_deref()
            .and_then(crate::numerics::version_of)
            .unwrap_or(0)
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StagesFile {
    stage: Vec<StageDecl>,
}

/// The declared stages, in an order where every stage comes after the ones it needs.
#[derive(Debug, Clone)]
pub struct Stages {
    pub stages: Vec<StageDecl>,
}

impl Stages {
    /// Reads and checks `<project>/pipeline/stages.toml`.
    pub fn load(project_root: &Path) -> Result<Self> {
        let path = project_root.join(STAGES_FILE);
        let file: StagesFile = crate::fsutil::read_toml(&path, "the stage DAG")?;
        let s = Stages { stages: file.stage };
        s.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        for st in &self.stages {
            ensure!(
                tasks::is_known(&st.name),
                "stage {:?} has no task builder (known: {})",
                st.name,
                tasks::KNOWN.join(", ")
            );
            ensure!(
                !seen.contains(&st.name.as_str()),
                "stage {:?} declared twice",
                st.name
            );
            for n in &st.needs {
                ensure!(
                    seen.contains(&n.as_str()),
                    "stage {:?} needs {n:?}, which is not declared before it",
                    st.name
                );
            }
            if let Some(n) = &st.numerics {
                ensure!(
                    crate::numerics::version_of(n).is_some(),
                    "stage {:?}: numerics = {n:?} is not known (training, evaluation)",
                    st.name
                );
            }
            seen.push(&st.name);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&StageDecl> {
        self.stages.iter().find(|s| s.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Every task of a profile, in dependency order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: Profile,
    pub stages: Stages,
    pub tasks: Vec<Task>,
    /// A benchmark tuned in two stages: per dataset, which choices wait for tuning runs (the
    /// seeds of those points are not in `tasks` yet). Empty otherwise.
    pub tuning: Vec<crate::pipeline::tuning::Tuning>,
}

impl Plan {
    /// One line per tuning choice that waits for its runs (see [`crate::pipeline::tuning`]).
    pub fn waiting(&self) -> Vec<String> {
        self.tuning
            .iter()
            .flat_map(|t| t.describe_waiting())
            .collect()
    }

    /// Expands `stages` for `profile`.
    pub fn build(project: &Project, stages: Stages, profile: Profile) -> Result<Self> {
        let profile_json = serde_json::to_value(&profile)?;
        let mut all: Vec<Task> = Vec::new();
        for decl in &stages.stages {
            let slice: BTreeMap<String, serde_json::Value> = decl
                .config
                .iter()
                .map(|k| (k.clone(), lookup(&profile_json, k)))
                .collect();
            let first_of_stage = all.len();
            for mut t in tasks::build(&decl.name, &profile, project)
                .with_context(|| format!("planning stage {}", decl.name))?
            {
                let extra = std::mem::take(&mut t.config);
                t.config = serde_json::json!({ "profile": slice, "resolved": extra });
                for r in &t.consumes {
                    let producers: Vec<usize> = all[..first_of_stage]
                        .iter()
                        .enumerate()
                        .filter(|(_, u)| decl.needs.contains(&u.stage) && u.produces.contains(r))
                        .map(|(i, _)| i)
                        .collect();
                    ensure!(
                        !producers.is_empty(),
                        "task {} needs {r}, which no task of {:?} produces",
                        t.id(),
                        decl.needs
                    );
                    t.deps.extend(producers);
                }
                t.deps.sort_unstable();
                t.deps.dedup();
                all.push(t);
            }
        }
        let mut ids: Vec<String> = all.iter().map(Task::id).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            bail!("two tasks are both {}", w[0]);
        }
        let tuning = crate::pipeline::run_specs::tuning(&profile, project)?;
        Ok(Plan {
            profile,
            stages,
            tasks: all,
            tuning,
        })
    }

    /// Tasks of `stage`.
    pub fn of_stage<'a>(&'a self, stage: &'a str) -> impl Iterator<Item = (usize, &'a Task)> {
        self.tasks
            .iter()
            .enumerate()
            .filter(move |(_, t)| t.stage == stage)
    }
}

/// The value at a dotted path (`train.recipe`), `null` when absent.
fn lookup(v: &serde_json::Value, path: &str) -> serde_json::Value {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}
