//! A released model as a run: a run directory that never trains (recipe [`RECIPE`] of
//! `pipeline/train.toml`, `epochs = 0`) whose initial weights are a converted `gl weights`
//! entry, e.g. the authors' `groupl_trained_cub`. Embedded with `--model untrained` it is that
//! checkpoint as released, on our splits, crops and metrics (`gl embed RUN --weights W
//! --dataset D`; the `[released]` table of a pipeline profile).

use crate::names::{Kind, Name};
use crate::project::Project;
use crate::stages::train::{self as trainer, Settings};
use crate::train::config::{CheckedConfig, TrainConfig};
use crate::train::run_dir::RunDir;
use anyhow::{ensure, Context, Result};
use tch::Device;

/// The `[profiles.<name>]` of pipeline/train.toml a released model's run is resolved with.
pub const RECIPE: &str = "released";

/// The resolved configuration of the run of weights entry `weights` on `dataset`: the
/// dataset's values (input size, resize, Recall@K, backbone), then [`RECIPE`], then `init =
/// "weights:<weights>"`. An error unless it trains for 0 epochs.
pub fn config(project: &Project, dataset: &str, weights: &str) -> Result<CheckedConfig> {
    let weights = Name::new(Kind::Weights, weights)?;
    let set = [format!("init=\"weights:{weights}\"")];
    let cfg = TrainConfig::resolve(project, dataset, RECIPE, &set)
        .with_context(|| format!("the released model {weights} on {dataset}"))?;
    ensure!(
        cfg.epochs == 0,
        "{}: [profiles.{RECIPE}] resolves to epochs = {} for dataset {dataset:?}; a released \
         model's run must not train (epochs = 0)",
        project
            .root
            .join(crate::train::config::TRAIN_FILE)
            .display(),
        cfg.epochs
    );
    Ok(cfg)
}

/// Creates (or, when it exists with the same configuration, keeps) the run directory `run_id`
/// of weights entry `weights` on `dataset`: the crop cache is prepared, `config.json` and a
/// `run.json` of 0 epochs are written, and the run is indexed through `obs` (the caller's
/// catalogue hook). A directory with another configuration is an error naming the keys.
pub fn create(
    project: &Project,
    dataset: &Name,
    weights: &Name,
    run_id: &Name,
    device: Device,
    obs: &mut dyn trainer::Observer,
) -> Result<RunDir> {
    let config = config(project, dataset, weights)?;
    let s = Settings {
        project: project.clone(),
        dataset: dataset.clone(),
        profile: RECIPE.to_string(),
        config,
        seed: 0,
        device,
        execution: crate::numerics::Execution::untrained(),
        run_id: run_id.to_string(),
        run_dir: project.run_dir(run_id),
        resume: true,
        progress: false,
    };
    Ok(trainer::run(&s, obs)?.run_dir)
}
