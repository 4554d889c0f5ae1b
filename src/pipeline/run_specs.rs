//! The training runs a profile plans: the `[finetune]` runs, and the `[train]` runs of every
//! point (sweep, benchmark or ablation) and seed, each with its recipe resolved and its run id
//! ([`run_id`]); for a benchmark tuned in two stages, the chosen points' seeds as the tuning
//! runs' evaluations allow ([`crate::pipeline::tuning`]).

use crate::numerics::RunIdentity;
use crate::pipeline::profile::Profile;
use crate::pipeline::tuning::Tuning;
use crate::project::Project;
use crate::train::config::{CheckedConfig, TrainConfig};
use anyhow::{Context, Result};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Finetune,
    GroupLoss,
}

/// One training run of the profile, its recipe resolved.
pub(crate) struct RunSpec {
    pub dataset: String,
    /// The sweep point's label (empty without a sweep, and for the softmax baseline).
    pub point: String,
    pub seed: u64,
    pub run_id: String,
    pub recipe: String,
    pub set: Vec<String>,
    pub config: CheckedConfig,
}

/// Run id: `<dataset>-<profile>-s<seed>-<h>` for Group Loss, `<dataset>-<profile>-softmax-
/// s<seed>-<h>` for the softmax baseline, where `<h>` is 8 hex digits of the sha256 of the run's
/// identity: the resolved recipe, the dataset's content digest as pinned
/// ([`crate::data::content::planned`]: the same data from any source is the same run), the
/// training numerics version
/// ([`crate::numerics::TRAINING`]) and the execution (device kind, kernel pin, threads). Another
/// recipe — or code that computes other numbers, or another execution — is another run
/// directory, so changing a key and changing it back finds the earlier run, a run directory
/// never holds two recipes, and a run made by older code is never taken for a current one.
pub fn run_id(
    profile: &str,
    dataset: &str,
    seed: u64,
    finetune: bool,
    identity: &RunIdentity<'_, TrainConfig>,
) -> Result<String> {
    let h = identity.short_digest()?;
    let kind = if finetune { "-softmax" } else { "" };
    Ok(format!("{dataset}-{profile}{kind}-s{seed}-{h}"))
}

/// The resolved run of `recipe` + `set` on `dataset` (whose planned content digest is `data`).
fn spec(
    p: &Profile,
    project: &Project,
    (dataset, data): (&str, &str),
    seed: u64,
    finetune: bool,
    recipe: &str,
    set: Vec<String>,
) -> Result<RunSpec> {
    let config = TrainConfig::resolve(project, dataset, recipe, &set)?;
    let execution = p.execution()?;
    Ok(RunSpec {
        dataset: dataset.to_string(),
        point: String::new(),
        seed,
        run_id: run_id(
            &p.name,
            dataset,
            seed,
            finetune,
            &RunIdentity {
                recipe: &config,
                data,
                numerics: crate::numerics::training(),
                execution: &execution,
            },
        )?,
        recipe: recipe.to_string(),
        set,
        config,
    })
}

pub(crate) fn run_specs(p: &Profile, project: &Project, kind: Kind) -> Result<Vec<RunSpec>> {
    let mut out = Vec::new();
    for d in &p.datasets {
        let data = crate::data::content::planned(&project.root, &project.data_dir, d)?;
        match kind {
            Kind::Finetune => {
                for &seed in p.finetune.iter().flat_map(|f| &f.seeds) {
                    out.extend(finetuned(p, project, (d, &data), seed)?);
                }
            }
            Kind::GroupLoss if p.train.is_some() => {
                let grid = Grid::plan(p, project, (d, &data))?;
                out.extend(grid.runs.into_iter().map(|(_, r)| r));
                out.extend(grid.chosen);
            }
            Kind::GroupLoss => {}
        }
    }
    Ok(out)
}

/// The `[finetune]` run of `seed` on `dataset`, if the profile has `[finetune]`.
fn finetuned(
    p: &Profile,
    project: &Project,
    dataset: (&str, &str),
    seed: u64,
) -> Result<Option<RunSpec>> {
    p.finetune
        .as_ref()
        .map(|f| spec(p, project, dataset, seed, true, &f.recipe, f.set.clone()))
        .transpose()
}

/// The `[train]` runs of one dataset: every point on its seeds (the tuning seeds of a
/// benchmark tuned in two stages, else every seed) and, for such a benchmark, each chosen
/// point on the remaining seeds of `seeds` ([`crate::pipeline::tuning`]).
struct Grid {
    /// (point index, run).
    runs: Vec<(usize, RunSpec)>,
    chosen: Vec<RunSpec>,
    tuning: Option<Tuning>,
}

impl Grid {
    fn plan(p: &Profile, project: &Project, dataset: (&str, &str)) -> Result<Grid> {
        let points = p.points();
        let two_stage = !p.tuning_seeds.is_empty();
        let seeds = if two_stage { &p.tuning_seeds } else { &p.seeds };
        let mut runs = Vec::new();
        for (i, point) in points.iter().enumerate() {
            for &seed in seeds {
                runs.push((i, point_spec(p, project, dataset, point, seed)?));
            }
        }
        if !two_stage {
            return Ok(Grid {
                runs,
                chosen: Vec::new(),
                tuning: None,
            });
        }
        let ids: Vec<(usize, String)> = runs.iter().map(|(i, r)| (*i, r.run_id.clone())).collect();
        let score = |id: &str| crate::pipeline::tuning::val_map_r(&project.data_dir, id);
        let tuning = crate::pipeline::tuning::choose(dataset.0, &points, &ids, &score)?;
        let mut chosen = Vec::new();
        for i in tuning.groups.iter().filter_map(|g| g.chosen) {
            for &seed in p.seeds.iter().filter(|s| !p.tuning_seeds.contains(s)) {
                chosen.push(point_spec(p, project, dataset, &points[i], seed)?);
            }
        }
        Ok(Grid {
            runs,
            chosen,
            tuning: Some(tuning),
        })
    }
}

/// The run of `[train]` at `point` with `seed`.
fn point_spec(
    p: &Profile,
    project: &Project,
    dataset: (&str, &str),
    point: &crate::pipeline::sweep::Point,
    seed: u64,
) -> Result<RunSpec> {
    let train = p.train.as_ref().context("no [train] table")?;
    // The fine-tuned run a run of `seed` starts from (`[finetune] start_seed`).
    let start = || -> Result<RunSpec> {
        let f = p
            .finetune
            .as_ref()
            .context("a fine-tuned start needs [finetune]")?;
        finetuned(p, project, dataset, f.start_seed_for(seed)?)?.context("no fine-tuned run")
    };
    let mut set = train.set.clone();
    if train.init_from_finetune {
        set.push(format!("init=\"run:{}\"", start()?.run_id));
    }
    set.extend(point.overrides()?);
    if point.start() == Some("finetuned") {
        set.push(format!("init=\"run:{}\"", start()?.run_id));
    }
    let mut r =
        spec(p, project, dataset, seed, false, &train.recipe, set).with_context(|| match point
            .values
            .is_empty()
        {
            true => format!("dataset {}, seed {seed}", dataset.0),
            false => format!("sweep point {}", point.label()),
        })?;
    r.point = point.label();
    Ok(r)
}

/// Where the two-stage tuning of each dataset stands (empty unless the profile has
/// `tuning_seeds`): which choices still wait for tuning runs.
pub(crate) fn tuning(p: &Profile, project: &Project) -> Result<Vec<Tuning>> {
    if p.tuning_seeds.is_empty() || p.train.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for d in &p.datasets {
        let data = crate::data::content::planned(&project.root, &project.data_dir, d)?;
        out.extend(Grid::plan(p, project, (d, &data))?.tuning);
    }
    Ok(out)
}
