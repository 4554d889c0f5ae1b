//! A run's initial weights (`init` in pipeline/train.toml): the backbone's ImageNet weights, a
//! converted `gl weights` entry, another run's selected model, or none (random, seeded).

use crate::model::weights::{converted_file, load_into, LoadReport};
use crate::project::Project;
use crate::train::config::TrainConfig;
use crate::train::run_dir::{RunDir, RunState};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::nn;

/// The file `cfg.init` loads from and the prefix its names go under: another run's selected
/// model (whole network, no prefix) or converted backbone weights (`backbone`); `None` for a
/// random initialisation.
pub fn source_file(
    cfg: &TrainConfig,
    project: &Project,
) -> Result<Option<(PathBuf, &'static str)>> {
    let init = cfg.init.as_str();
    if init == "none" {
        return Ok(None);
    }
    if let Some(run) = init.strip_prefix("run:") {
        let id = crate::names::Name::new(crate::names::Kind::Run, run)
            .with_context(|| format!("init = {init:?}"))?;
        let dir = RunDir::new(project.run_dir(&id));
        let state: RunState = dir.state()?.with_context(|| {
            format!(
                "init = {init:?}: run {} has no completed epoch",
                dir.root.display()
            )
        })?;
        let file = state.selected.as_ref().with_context(|| {
            format!(
                "init = {init:?}: run {} has no selected model",
                dir.root.display()
            )
        })?;
        return Ok(Some((state.verified(&dir, file)?, "")));
    }
    let name = match init.strip_prefix("weights:") {
        Some(n) => n.to_string(),
        None => crate::model::spec(&cfg.backbone)?
            .imagenet_weights
            .with_context(|| format!("backbone {} has no ImageNet weights", cfg.backbone))?
            .to_string(),
    };
    let file = converted_file(project, &name)
        .with_context(|| format!("init = {init:?} (backbone {})", cfg.backbone))?;
    Ok(Some((file, "backbone")))
}

/// Loads the weights `cfg.init` names into `vs` (built by [`crate::model::net::EmbeddingNet`]).
pub fn initialise(vs: &nn::VarStore, cfg: &TrainConfig, project: &Project) -> Result<()> {
    if let Some((file, prefix)) = source_file(cfg, project)? {
        report(&file, load_into(vs, &file, prefix)?);
    }
    Ok(())
}

fn report(file: &Path, r: LoadReport) {
    tracing::info!(
        file = %file.display(),
        backbone = r.backbone,
        classifier = r.classifier,
        "initial weights loaded"
    );
    for u in r.unused {
        tracing::info!(key = u.key, reason = u.reason, "not loaded");
    }
}
