//! A pipeline profile: which datasets, seeds, recipes, baselines and evaluation a `gl run`
//! covers. Read with figment from `pipeline/profiles/<name>.toml`, then `GL_PIPELINE_<KEY>`
//! environment variables (nested keys with `__`: `GL_PIPELINE_TRAIN__RECIPE=paper`), then
//! `--set key=value` — later wins. An unknown key, a wrong type or a missing file is an error
//! naming the key path and the file.

use anyhow::{bail, ensure, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use std::path::{Path, PathBuf};

/// Where profiles live, relative to the project root.
pub const PROFILES_DIR: &str = "pipeline/profiles";

/// The Group Loss runs (`gl train`, one per dataset × seed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStage {
    /// A `[profiles.<recipe>]` of pipeline/train.toml.
    pub recipe: String,
    /// `key=value` overrides of that recipe.
    #[serde(default)]
    pub set: Vec<String>,
    /// Start from the fine-tuned run of the same dataset and seed (the paper's way).
    #[serde(default)]
    pub init_from_finetune: bool,
}

/// Softmax-only fine-tuning: a baseline beside Group Loss and, in the paper, its initial weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneStage {
    pub recipe: String,
    #[serde(default)]
    pub set: Vec<String>,
    pub seeds: Vec<u64>,
    /// The seed of the one fine-tuned run every `start = "finetuned"` run starts from, whatever
    /// its own seed (the authors' way: one fine-tuned network, shared and counted once); unset,
    /// a run starts from the fine-tuned run of its own seed. Left out of the stored profile when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_seed: Option<u64>,
}

impl FinetuneStage {
    /// The seed of the fine-tuned run that a run of `seed` starts from.
    pub fn start_seed_for(&self, seed: u64) -> Result<u64> {
        let s = self.start_seed.unwrap_or(seed);
        ensure!(
            self.seeds.contains(&s),
            "seed {seed} would start from the fine-tuned run of seed {s}, which finetune.seeds \
             {:?} does not list",
            self.seeds
        );
        Ok(s)
    }
}

/// What `gl evaluate` computes for every run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateStage {
    /// Also evaluate the initial weights of each dataset's first run (Group Loss, else softmax)
    /// that does not start from another run: the pretrained network before training — or,
    /// when every run starts from a fine-tuned run, the first Group Loss run's start.
    pub untrained_baseline: bool,
    pub nmi: bool,
    pub kmeans_restarts: usize,
    /// Also embed and evaluate each run's selected model on its validation classes: a sweep then
    /// selects by mean validation MAP@R (not R@1, which saturates over few classes). Left out of
    /// the stored profile when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub validation: bool,
}

impl Default for EvaluateStage {
    fn default() -> Self {
        EvaluateStage {
            untrained_baseline: true,
            nmi: true,
            kmeans_restarts: 3,
            validation: false,
        }
    }
}

/// A resolved pipeline profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Set from the file name, not read from it.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub datasets: Vec<String>,
    /// Seeds of the Group Loss runs (needed with `[train]`). With `tuning_seeds`, the seeds of
    /// each objective's selected point only: the seeds the leaderboard reports.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// A benchmark tuned in two stages ([`crate::pipeline::tuning`]): every grid point runs
    /// these seeds only; per objective and track the point with the best mean validation MAP@R
    /// over them then runs `seeds`. Empty (and left out of the stored profile): every point
    /// runs every seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuning_seeds: Vec<u64>,
    /// `auto`, `cpu`, `cuda`, `cuda:N` for every task.
    #[serde(default = "auto")]
    pub device: String,
    /// Where stage tasks run: `local` (this machine, one after another) or `slurm` (job arrays,
    /// see [`crate::pipeline::slurm`]).
    #[serde(default = "local")]
    pub executor: String,
    /// The local executor's tasks at once (`gl run --jobs`); each then gets
    /// `max(1, CPUs / jobs)` libtorch threads unless `--threads` says otherwise. Left out of the
    /// stored profile at 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub jobs: usize,
    /// The GPUs local tasks are spread over (`[0, 2]`; see [`crate::pipeline::gpus`]), each
    /// computing task given one as `CUDA_VISIBLE_DEVICES`; unset: every device libtorch sees
    /// (`GL_GPUS` overrides that list), spread only with several devices and several jobs.
    /// Where tasks run, not what they compute: left out of the stored profile when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<usize>>,
    /// Tasks at once on one GPU when tasks are spread. Left out of the stored profile at 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub tasks_per_gpu: usize,
    /// libtorch threads of every local task (`--threads` wins). libtorch's results depend on
    /// it, so a profile whose report is committed pins it: the same bytes on any machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<i32>,
    /// CPU kernels of every task that computes (`native`, `portable`, `baseline`; see
    /// [`crate::numerics::kernels`]): a profile whose report is committed uses `portable`, so
    /// its numbers are the same on every x86-64 CPU with AVX2. Part of every run's identity.
    /// Left out of the stored profile when native.
    #[serde(default, skip_serializing_if = "is_native")]
    pub kernels: crate::numerics::Kernels,
    /// The Slurm executor's resources per stage and which stages stay on the coordinator.
    #[serde(default)]
    pub slurm: crate::pipeline::slurm_config::SlurmConfig,
    /// `gl weights` entries the recipes need.
    #[serde(default)]
    pub weights: Vec<String>,
    /// The Group Loss runs; a profile without `[train]` trains nothing (e.g. only `[released]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainStage>,
    #[serde(default)]
    pub finetune: Option<FinetuneStage>,
    #[serde(default)]
    pub evaluate: EvaluateStage,
    /// Evaluate the concatenation of each dataset's seeds as one more row (one per sweep point).
    #[serde(default = "yes")]
    pub ensemble: bool,
    /// A grid over `[train]` recipe keys, each point run for every seed (see
    /// [`crate::pipeline::sweep`]). Left out of the stored profile when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sweep: crate::pipeline::sweep::SweepGrid,
    /// A fair comparison of objectives: per objective its own grid over the `[train]` recipe,
    /// every grid the same number of points (see [`crate::pipeline::sweep::validate_benchmark`]).
    /// Left out of the stored profile when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub benchmark: crate::pipeline::sweep::Benchmark,
    /// A benchmark's tracks: every objective's grid run from each start (`imagenet`,
    /// `finetuned`; the recipe key `start`), tuned, selected and ranked within its track. Left
    /// out of the stored profile when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<crate::train::config::Start>,
    /// One change at a time from each objective's base recipe, every point with the same
    /// seeds (see [`crate::pipeline::sweep::ablation_points`]); the report shows each change as
    /// a paired difference to its base. Left out of the stored profile when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ablation: crate::pipeline::sweep::Ablation,
    /// Released checkpoints to evaluate as they are, no training: dataset → `gl weights` entry
    /// (`cub = "groupl_trained_cub"`), each a run that never trains, embedded and evaluated
    /// beside the profile's other rows (see [`crate::stages::released`]). Entries of datasets
    /// the profile does not list are ignored. Left out of the stored profile when empty.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub released: std::collections::BTreeMap<String, String>,
}

fn auto() -> String {
    "auto".into()
}
fn local() -> String {
    "local".into()
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_native(k: &crate::numerics::Kernels) -> bool {
    !k.is_pinned()
}

impl Profile {
    /// libtorch threads of each task: `threads`, else this machine's CPUs shared by `jobs`
    /// tasks at once. Explicit in every task's arguments and part of a CPU run's identity.
    pub fn task_threads(&self) -> i32 {
        self.threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus / self.jobs).max(1) as i32
        })
    }

    /// The device every task computes on, `auto` resolved against what libtorch sees here
    /// (`cpu`, `cuda:0`): run ids name what the runs really compute on.
    pub fn resolved_device(&self) -> Result<String> {
        let arg: crate::device::DeviceArg = self
            .device
            .parse()
            .map_err(|e| anyhow::anyhow!("device: {e}"))?;
        Ok(crate::device::name(arg.resolve()?))
    }

    /// Device kind, kernel pin and threads of the profile's tasks.
    pub fn execution(&self) -> Result<crate::numerics::Execution> {
        Ok(crate::numerics::Execution::new(
            &self.resolved_device()?,
            self.kernels,
            self.task_threads(),
        ))
    }

    /// The arguments that give a computing task the profile's device, kernels and threads.
    pub fn compute_args(&self) -> Result<Vec<String>> {
        Ok(vec![
            "--device".into(),
            self.resolved_device()?,
            "--kernels".into(),
            self.kernels.to_string(),
            "--threads".into(),
            self.task_threads().to_string(),
        ])
    }

    /// The points each seed of `[train]` runs: the benchmark's, else the sweep's (one empty
    /// point without either).
    pub fn points(&self) -> Vec<crate::pipeline::sweep::Point> {
        use crate::pipeline::sweep;
        if !self.ablation.is_empty() {
            return sweep::ablation_points(&self.ablation);
        }
        match self.benchmark.is_empty() {
            true => sweep::points(&self.sweep),
            false => sweep::benchmark_points(&self.benchmark, &self.tracks),
        }
    }

    /// Whether some run starts from a fine-tuned run: `train.init_from_finetune`, a
    /// `finetuned` track, or `start` swept.
    pub fn starts_finetuned(&self) -> bool {
        use crate::train::config::Start;
        self.train.as_ref().is_some_and(|t| t.init_from_finetune)
            || self.tracks.contains(&Start::Finetuned)
            || self.sweep.contains_key(crate::pipeline::sweep::START)
            || self
                .benchmark
                .values()
                .chain(self.ablation.values())
                .any(|e| e.grid.contains_key(crate::pipeline::sweep::START))
    }

    /// `<project>/pipeline/profiles/<name>.toml`.
    pub fn path(project_root: &Path, name: &str) -> PathBuf {
        project_root.join(PROFILES_DIR).join(format!("{name}.toml"))
    }

    /// Resolves profile `name` of the project with environment and `overrides`.
    pub fn resolve(project_root: &Path, name: &str, overrides: &[String]) -> Result<Self> {
        let checked = crate::names::Name::new(crate::names::Kind::Profile, name)?;
        let name = checked.as_str();
        let path = Self::path(project_root, name);
        if !path.is_file() {
            let dir = project_root.join(PROFILES_DIR);
            let mut known: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(String::from))?
                })
                .collect();
            known.sort();
            bail!(
                "profile file {} not found (profiles in {}: {})",
                path.display(),
                dir.display(),
                known.join(", ")
            );
        }
        let mut fig = Figment::from(Toml::file(&path))
            .merge(Env::prefixed(crate::env_vars::PIPELINE_PREFIX).split("__"));
        for o in overrides {
            let (key, value) = crate::config::parse_override(o)?;
            fig = fig.merge(Serialized::default(&key, value));
        }
        let mut p: Profile = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("{}", crate::config::describe(&e)))
            .with_context(|| format!("resolving profile {name:?} from {}", path.display()))?;
        p.name = name.to_string();
        p.validate()
            .with_context(|| format!("profile {name:?} ({})", path.display()))?;
        Ok(p)
    }

    /// `(dataset, weights entry)` of every dataset of the profile with a `[released]` entry, in
    /// the order of `datasets`.
    pub fn released_datasets(&self) -> Vec<(String, String)> {
        self.datasets
            .iter()
            .filter_map(|d| Some((d.clone(), self.released.get(d)?.clone())))
            .collect()
    }

    /// Checks that need more than the types: non-empty lists, plain names, known executors.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.datasets.is_empty(), "datasets: at least one dataset");
        ensure!(
            self.train.is_some() || !self.released_datasets().is_empty(),
            "nothing to run: no [train] table and no [released] entry for datasets {:?}",
            self.datasets
        );
        if self.train.is_some() {
            ensure!(!self.seeds.is_empty(), "seeds: at least one seed");
        }
        for (key, seeds) in [("seeds", &self.seeds), ("tuning_seeds", &self.tuning_seeds)] {
            let mut s = seeds.clone();
            s.sort_unstable();
            s.dedup();
            ensure!(s.len() == seeds.len(), "{key}: {seeds:?} repeats a seed");
        }
        ensure!(
            self.tuning_seeds.is_empty() || !self.benchmark.is_empty(),
            "tuning_seeds: only a benchmark ([benchmark.<objective>] tables) is tuned in two \
             stages; a sweep or an ablation runs every point on `seeds`"
        );
        // Names that become paths: checked here, where they enter from the profile.
        use crate::names::{Kind, Name};
        for d in self.datasets.iter().chain(self.released.keys()) {
            Name::new(Kind::Dataset, d).context("datasets")?;
        }
        for w in self.weights.iter().chain(self.released.values()) {
            Name::new(Kind::Weights, w).context("weights")?;
        }
        ensure!(
            ["local", "slurm"].contains(&self.executor.as_str()),
            "executor: {:?} is not known (local, slurm)",
            self.executor
        );
        ensure!(self.jobs >= 1, "jobs must be ≥ 1, got {}", self.jobs);
        ensure!(
            self.threads.is_none_or(|t| t >= 1),
            "threads must be ≥ 1, got {:?}",
            self.threads
        );
        self.kernels.check_supported().context("kernels")?;
        ensure!(
            self.slurm.poll_seconds > 0.0,
            "slurm.poll_seconds must be > 0"
        );
        self.device
            .parse::<crate::device::DeviceArg>()
            .map_err(|e| anyhow::anyhow!("device: {e}"))?;
        if let Some(f) = &self.finetune {
            ensure!(!f.seeds.is_empty(), "finetune.seeds: at least one seed");
        }
        for (d, w) in self.released_datasets() {
            ensure!(
                self.weights.contains(&w),
                "released.{d} = {w:?}: list {w:?} in `weights` too, so the weights stage converts it"
            );
        }
        match &self.train {
            Some(train) => {
                if self.starts_finetuned() {
                    let f = self.finetune.as_ref().context(
                        "train.init_from_finetune, a finetuned track or a swept start needs a \
                         [finetune] table (the fine-tuned runs to start from)",
                    )?;
                    for &s in self.seeds.iter().chain(&self.tuning_seeds) {
                        f.start_seed_for(s).context("finetune")?;
                    }
                }
                crate::pipeline::sweep::validate_ablation(
                    &self.ablation,
                    &self.sweep,
                    &self.benchmark,
                    &train.set,
                    train.init_from_finetune,
                )?;
                crate::pipeline::sweep::validate_tracks(
                    &self.tracks,
                    &self.benchmark,
                    &train.set,
                    train.init_from_finetune,
                )?;
                crate::pipeline::sweep::validate(
                    &self.sweep,
                    &train.set,
                    train.init_from_finetune,
                )?;
                crate::pipeline::sweep::validate_benchmark(
                    &self.benchmark,
                    &self.sweep,
                    &train.set,
                    train.init_from_finetune,
                )?;
            }
            None => ensure!(
                self.sweep.is_empty()
                    && self.benchmark.is_empty()
                    && self.tracks.is_empty()
                    && self.ablation.is_empty(),
                "sweep, benchmark, tracks, ablation: they tune the [train] recipe, which this profile does \
                 not have"
            ),
        }
        ensure!(
            self.evaluate.kmeans_restarts >= 1,
            "evaluate.kmeans_restarts must be ≥ 1"
        );
        Ok(())
    }
}
