//! What a run trains on and the run directory it writes: the crop cache (prepared if needed),
//! the class-disjoint splits, the run's identity (`config.json`), and opening the directory —
//! a new run, or the same run resumed from its last commit.

use super::Settings;
use crate::data::crop_cache::{self, CropRow};
use crate::numerics::environment::Environment;
use crate::stages::prepare;
use crate::train::config::TrainConfig;
use crate::train::run_dir::{RunConfig, RunDir, RunState};
use crate::train::split::{self, RunSplits};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// The crops and splits of a run, and its identity.
pub struct Inputs {
    pub rows: Arc<Vec<CropRow>>,
    pub splits: RunSplits,
    /// Each training class's classifier label (its position among the training classes).
    pub label_of: HashMap<i64, i64>,
    pub run_config: RunConfig,
}

impl Inputs {
    /// Prepares (or reuses) the crop cache, reads it (every row verified) and splits it.
    pub fn prepare(s: &Settings) -> Result<Self> {
        let cfg = &s.config;
        let crops = prepare::run(&prepare::Settings {
            project: s.project.clone(),
            dataset: s.dataset.clone(),
            params: prepare::PrepareParams {
                resize: cfg.resize,
                ..Default::default()
            },
            progress: s.progress,
            force: false,
        })?;
        let crops_file = crops.dir.join(&crops.manifest.file);
        let rows = Arc::new(crop_cache::read(&crops_file, None)?);
        let mut splits = split::split(&rows, cfg.val_fraction, cfg.val_seed, cfg.class_limit)
            .with_context(|| format!("splitting {}", crops_file.display()))?;
        splits.limit_train_per_class(cfg.train_images_per_class, cfg.val_seed);
        // A run of 0 epochs (a released model, evaluated as it is) draws no batch.
        if cfg.epochs > 0 {
            crate::train::epoch::check_batches(cfg, &splits.train_labels)
                .with_context(|| format!("training on {}", crops_file.display()))?;
        }
        let run_config = RunConfig {
            run_id: s.run_id.clone(),
            dataset: s.dataset.to_string(),
            profile: s.profile.clone(),
            seed: s.seed,
            device: crate::device::name(s.device),
            train: TrainConfig::clone(cfg),
            crops: crops.dir.clone(),
            crops_key: crops.manifest.key.clone(),
            dataset_fingerprint: crops.manifest.dataset_fingerprint.clone(),
            train_classes: splits.train_classes.len(),
            val_classes: splits.val_classes.len(),
            test_classes: splits.test_classes.len(),
            train_images: splits.train.len(),
            val_images: splits.val.len(),
            test_images: splits.test.len(),
            gl_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch: crate::runtime::inspect()
                .libtorch_version
                .unwrap_or_default(),
            created_unix: crate::clock::unix_now(),
            numerics: crate::numerics::training(),
            execution: Some(s.execution.clone()),
        };
        let label_of = splits
            .train_classes
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as i64))
            .collect();
        Ok(Inputs {
            rows,
            splits,
            label_of,
            run_config,
        })
    }
}

/// Creates the run directory, or checks that a resumed one is the same run; returns its last
/// committed state (`None` for a new run). `env` is where this process computes: written as
/// the run's `environment.json` when it starts; a resume in another one is warned about and
/// recorded beside it (`environment.resumed-<unix>.json`).
pub fn open_run_dir(
    dir: &RunDir,
    cfg: &RunConfig,
    env: &Environment,
    resume: bool,
) -> Result<Option<RunState>> {
    let path = dir.config_path();
    if !path.exists() {
        std::fs::create_dir_all(&dir.root)
            .with_context(|| format!("creating {}", dir.root.display()))?;
        dir.write_json(&dir.environment_path(), env)?;
        dir.write_json(&path, cfg)?;
        return Ok(None);
    }
    if !resume {
        bail!(
            "run directory {} already exists: pass --resume to continue it, or another --run-id",
            dir.root.display()
        );
    }
    let old: RunConfig = RunDir::read_json(&path)?;
    if identity(&old) != identity(cfg) {
        bail!(
            "{} describes another run (differs in: {}); resume with the same dataset, profile, \
             seed and overrides",
            path.display(),
            differences(&old, cfg)?
        );
    }
    if old.device != cfg.device {
        tracing::warn!(
            "resuming a {} run on {}: metrics will not be bit-identical",
            old.device,
            cfg.device
        );
    }
    warn_if_other_environment(dir, env)?;
    dir.state()
}

/// A resume in another environment than the run's: a warning naming what differs, and the
/// new environment kept beside the first.
fn warn_if_other_environment(dir: &RunDir, env: &Environment) -> Result<()> {
    let path = dir.environment_path();
    if !path.exists() {
        return dir.write_json(&path, env);
    }
    let first: Environment = RunDir::read_json(&path)?;
    let diff = first.differences(env);
    if !diff.is_empty() {
        tracing::warn!(
            "resuming run {} in another environment than it started in ({}): its later epochs \
             are not what an uninterrupted run gives",
            dir.root.display(),
            diff.join(", ")
        );
        eprintln!(
            "warning: resuming {} in another environment ({})",
            dir.root.display(),
            diff.join(", ")
        );
        let resumed = dir.root.join(format!(
            "environment.resumed-{}.json",
            crate::clock::unix_now()
        ));
        dir.write_json(&resumed, env)?;
    }
    Ok(())
}

/// What makes two run configurations the same run: the recipe and data, the numerics
/// version of the code and the execution (device kind, kernel pin, threads).
fn identity(c: &RunConfig) -> impl PartialEq + '_ {
    (
        (&c.dataset, c.seed, &c.train),
        (&c.crops_key, &c.dataset_fingerprint),
        (c.numerics, &c.execution),
    )
}

/// The recipe keys in which `old` and `new` differ, for the error.
fn differences(old: &RunConfig, new: &RunConfig) -> Result<String> {
    let a = serde_json::to_value(&old.train)?;
    let b = serde_json::to_value(&new.train)?;
    let keys: Vec<String> = a
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    let mut keys = keys;
    if old.numerics != new.numerics {
        keys.push(format!(
            "numerics version {} → {} (the code now computes other numbers: a new run id)",
            old.numerics, new.numerics
        ));
    }
    if old.execution != new.execution {
        keys.push(format!(
            "execution {} → {}",
            serde_json::to_string(&old.execution)?,
            serde_json::to_string(&new.execution)?
        ));
    }
    Ok(match keys.is_empty() {
        true => "dataset, seed or crop cache".to_string(),
        false => keys.join(", "),
    })
}
