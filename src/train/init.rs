//! A run's initial weights (`init` in pipeline/train.toml): the backbone's ImageNet weights, a
//! converted `gl weights` entry, another run's selected model, or none (random, seeded).

use crate::project::Project;
use crate::train::config::TrainConfig;
use crate::train::run_dir::{RunDir, RunState};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::nn;

/// Loads the weights `cfg.init` names into `vs` (built by [`crate::model::net::EmbeddingNet`]).
pub fn initialise(vs: &mut nn::VarStore, cfg: &TrainConfig, project: &Project) -> Result<()> {
    let init = cfg.init.as_str();
    if init == "none" {
        return Ok(());
    }
    if let Some(run) = init.strip_prefix("run:") {
        let dir = RunDir::new(project.runs_dir().join(run));
        let state: RunState = dir.state()?.with_context(|| {
            format!(
                "init = {init:?}: run {} has no completed epoch",
                dir.root.display()
            )
        })?;
        let file = state.selected.with_context(|| {
            format!(
                "init = {init:?}: run {} has no selected model",
                dir.root.display()
            )
        })?;
        return load_matching(vs, &dir.root.join(file), "");
    }
    let name = match init.strip_prefix("weights:") {
        Some(n) => n.to_string(),
        None => crate::model::spec(&cfg.backbone)?
            .imagenet_weights
            .with_context(|| format!("backbone {} has no ImageNet weights", cfg.backbone))?
            .to_string(),
    };
    let file = project.weights_file(&name);
    if !file.is_file() {
        bail!(
            "init = {init:?} needs {} (run `gl weights {name}` first)",
            file.display()
        );
    }
    load_matching(vs, &file, "backbone.")
}

/// Copies every tensor of a safetensors file into the variable `prefix + name`, when that
/// variable exists with the same shape; every variable under `prefix` must be covered.
fn load_matching(vs: &mut nn::VarStore, file: &Path, prefix: &str) -> Result<()> {
    let named = tch::Tensor::read_safetensors(file)
        .with_context(|| format!("reading {}", file.display()))?;
    let vars = vs.variables();
    let mut covered = std::collections::HashSet::new();
    tch::no_grad(|| -> Result<()> {
        for (key, t) in &named {
            let target = if key.starts_with(prefix) {
                key.clone()
            } else {
                format!("{prefix}{key}")
            };
            if let Some(v) = vars.get(&target) {
                if v.size() == t.size() {
                    let mut v = v.shallow_clone();
                    v.copy_(t);
                    covered.insert(target);
                } else {
                    tracing::info!(key, "shape differs from the model's: not loaded");
                }
            }
        }
        Ok(())
    })?;
    let missing: Vec<&String> = vars
        .keys()
        .filter(|k| k.starts_with(prefix) && !covered.contains(*k))
        .filter(|k| !(prefix.is_empty() && k.starts_with("classifier.")))
        .collect();
    if !missing.is_empty() {
        let mut m: Vec<_> = missing.into_iter().cloned().collect();
        m.sort();
        bail!(
            "{} lacks {} of the model's variables: {}",
            file.display(),
            m.len(),
            m.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
