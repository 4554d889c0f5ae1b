//! What `gl bench epoch` hands its reference (the plan: recipe, crop cache, every epoch's
//! batches) and what it reads back (the reference's epoch times).

use super::{EpochTimes, Settings, CHECK_SEED, SEED};
use crate::data::loader::LoaderParams;
use crate::data::transform::Normalize;
use crate::stages::prepare::Manifest;
use crate::stages::train::inputs::Inputs;
use crate::train::config::{BatchNormMode, OptimizerChoice, TrainConfig};
use crate::train::epoch;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::Device;

/// A recipe value as pipeline/train.toml spells it.
pub(super) fn key<T: serde::Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

/// The backbone name the reference builds (it has EfficientNet-Lite0, BN-Inception, tiny_cnn).
pub(super) fn backbone_name(cfg: &TrainConfig) -> Result<String> {
    Ok(crate::model::spec(&cfg.backbone)?.name.to_string())
}

/// The crop cache file the trainer read (its manifest names it).
pub(super) fn crops_file(inputs: &Inputs) -> Result<PathBuf> {
    let dir = &inputs.run_config.crops;
    let path = dir.join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    Ok(dir.join(manifest.file))
}

/// Everything the reference reads besides the weights (tests/reference/epoch_ref.py).
pub(super) fn plan_json(
    s: &Settings,
    inputs: &Inputs,
    backbone: &str,
    lp: LoaderParams,
    epochs: &[usize],
    batches: &[Vec<Vec<usize>>],
    threads: i32,
) -> Result<serde_json::Value> {
    let cfg: &TrainConfig = &s.config;
    let id = |i: &usize| inputs.rows[*i].image_id;
    let mut labels = HashMap::new();
    for &i in &inputs.splits.train {
        let c = inputs.rows[i].class_id;
        if let Some(&l) = inputs.label_of.get(&c) {
            labels.insert(inputs.rows[i].image_id.to_string(), l);
        }
    }
    let normalize = match lp.normalize {
        Normalize::EfficientNetLite => "efficientnet_lite",
        Normalize::ImageNet => "imagenet",
        Normalize::BnInception => "bn_inception",
    };
    let plan_epochs: Vec<serde_json::Value> = epochs
        .iter()
        .zip(batches)
        .map(|(&e, bs)| {
            serde_json::json!({
                "epoch": e,
                "torch_seed": epoch::torch_seed(SEED, e),
                "batches": bs.iter().map(|b| b.iter().map(id).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "cache": crops_file(inputs)?,
        "backbone": backbone,
        "memory_format": key(cfg.memory_format),
        "autocast": key(cfg.autocast),
        "batchnorm": match cfg.batchnorm {
            BatchNormMode::Train => "train",
            BatchNormMode::Frozen => "frozen",
        },
        "transform": {
            "crop": lp.crop,
            "resize": lp.resize,
            "normalize": normalize,
            "shift_only": lp.augment.shift_only,
            "scale": [lp.augment.scale.0, lp.augment.scale.1],
            "hflip": lp.augment.hflip,
        },
        "loader_seed": lp.seed,
        "loader_threads": lp.threads,
        "prefetch": lp.prefetch,
        "threads": threads,
        "device": match s.device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        },
        "optimizer": {
            "name": match cfg.optimizer {
                OptimizerChoice::Radam => "radam",
                OptimizerChoice::Adam => "adam",
            },
            "lr": cfg.lr_at(1),
            "classifier_lr": cfg.classifier_lr_at(1),
            "betas": [0.9, 0.999],
            "eps": cfg.adam_eps,
            "weight_decay": cfg.weight_decay,
        },
        "loss": {
            "tau": cfg.tau,
            "anchors": cfg.anchors,
            "replicator_steps": cfg.replicator_steps,
            "ce_weight": cfg.ce_weight,
            "zero_diagonal": cfg.zero_diagonal,
        },
        "check_seed": CHECK_SEED,
        "labels": labels,
        "epochs": plan_epochs,
    }))
}

/// The reference's epochs of one round, summed.
pub(super) fn reference_times(epochs: &serde_json::Value) -> Result<EpochTimes> {
    let list = epochs
        .as_array()
        .context("the reference's reply has no epochs")?;
    let mut t = EpochTimes::default();
    let mut batches = 0usize;
    for (k, e) in list.iter().enumerate() {
        let num = |key: &str| {
            e[key]
                .as_f64()
                .with_context(|| format!("the reference's epoch has no number {key:?}"))
        };
        let n = num("batches")? as usize;
        t.seconds += num("seconds")?;
        t.images += num("images")? as usize;
        t.wait += num("wait_s")?;
        t.step += num("step_s")?;
        t.loss += num("loss")? * n as f64;
        if k == 0 {
            t.first_batch = num("first_batch_s")?;
        }
        batches += n;
    }
    t.loss /= batches.max(1) as f64;
    Ok(t)
}
