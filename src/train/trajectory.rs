//! The golden trajectory: a few seconds of real training and evaluation — the tiny CNN, the
//! Group Loss with its cross-entropy, RAdam, the training step the trainer runs
//! ([`Stepper`]), then the embedding of a held-out batch and its metrics — on inputs generated
//! here from a seeded ChaCha stream (no dataset, no recipe file), reduced to digests of the f64
//! bits of every step's losses, the final weights, the embeddings and the metrics.
//!
//! Its digest is committed with the numerics versions that made it
//! (`tests/fixtures/numerics/trajectory.json`); `gl numerics-check` recomputes it under the
//! pinned kernels and [`check`] fails when the numbers moved but [`crate::numerics::TRAINING`]
//! or [`crate::numerics::EVALUATION`] did not, telling the author what to do. The per-tensor
//! RAdam ([`Layout::PerTensor`], PyTorch's `foreach=False`) is a test-only switch: it rounds
//! differently from the default, so the check must fail with it.

use crate::eval::knn::l2_normalise;
use crate::eval::metrics::{self, EvalParams};
use crate::loss::group_loss::{GroupLoss, GroupLossOptions};
use crate::loss::Anchors;
use crate::model::net::{EmbeddingNet, HeadParams};
use crate::model::ForwardMode;
use crate::train::criterion::Criterion;
use crate::train::epoch::Stepper;
use crate::train::radam::{Layout, RAdam, RAdamParams};
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};

/// Classes of the training stream (the classifier's m) and of the held-out batch.
const CLASSES: usize = 12;
/// P × K per step.
const PER_BATCH: (usize, usize) = (6, 4);
const STEPS: usize = 8;
/// Images per class of the held-out batch.
const HELD_OUT: usize = 5;
const SIZE: i64 = 32;

/// What one trajectory computed, digested part by part.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrajectoryRecord {
    pub numerics_training: u32,
    pub numerics_evaluation: u32,
    pub kernels: String,
    pub threads: i32,
    /// sha256 over the parts.
    pub digest: String,
    /// `losses`, `weights` (training) and `embeddings`, `metrics` (evaluation): sha256 of the
    /// bits of each.
    pub parts: BTreeMap<String, String>,
    /// Each step's total loss, for a reader of the fixture.
    pub step_losses: Vec<f64>,
    pub metrics: BTreeMap<String, f64>,
}

/// Parts whose change means the training numerics changed.
const TRAINING_PARTS: &[&str] = &["losses", "weights"];

/// A seeded image of class `c`: the class's colour pattern plus per-image noise.
fn images(rng: &mut ChaCha8Rng, classes: &[usize], protos: &[Vec<f32>]) -> Tensor {
    let n = (3 * SIZE * SIZE) as usize;
    let mut data = Vec::with_capacity(classes.len() * n);
    for &c in classes {
        data.extend(protos[c].iter().map(|p| p + rng.random_range(-0.8f32..0.8)));
    }
    Tensor::from_slice(&data).view([classes.len() as i64, 3, SIZE, SIZE])
}

/// `bits` of a float tensor (f32 or f64) as little-endian bytes of each element, in order.
fn tensor_bits(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.to_device(Device::Cpu).contiguous().flatten(0, -1);
    Ok(match flat.kind() {
        Kind::Double => Vec::<f64>::try_from(&flat)?
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect(),
        _ => Vec::<f32>::try_from(&flat.to_kind(Kind::Float))?
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect(),
    })
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn f64_bits(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect()
}

/// Runs the trajectory on the CPU with the RAdam `layout` (the default in production).
pub fn run(layout: Layout) -> Result<TrajectoryRecord> {
    let device = Device::Cpu;
    tch::manual_seed(20261206);
    let mut rng = ChaCha8Rng::seed_from_u64(20261206);
    let protos: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| {
            (0..3 * SIZE * SIZE)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        })
        .collect();
    let vs = nn::VarStore::new(device);
    let head = HeadParams {
        embedding_dim: None,
        num_classes: CLASSES as i64,
        init: Default::default(),
    };
    let net = EmbeddingNet::new(&vs.root(), "tiny_cnn", head)?;
    let criterion = Criterion::GroupLoss(
        GroupLoss::new(GroupLossOptions {
            tau: 10.0,
            ..Default::default()
        })?,
        Anchors::first_k(2)?,
    );
    let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = names
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(_, t)| t.shallow_clone())
        .collect();
    let mut opt = RAdam::new(
        params,
        RAdamParams {
            lr: 1e-3,
            weight_decay: 1e-4,
            layout,
            ..Default::default()
        },
    )?;
    let stepper = Stepper {
        net: &net,
        criterion: &criterion,
        mode: ForwardMode::TRAIN,
        device,
    };
    let mut anchor_rng = ChaCha8Rng::seed_from_u64(0);
    let mut losses = Vec::new();
    let mut step_losses = Vec::new();
    for _ in 0..STEPS {
        let mut classes: Vec<usize> = (0..CLASSES).collect();
        for i in (1..classes.len()).rev() {
            classes.swap(i, rng.random_range(0..=i));
        }
        let batch: Vec<usize> = classes[..PER_BATCH.0]
            .iter()
            .flat_map(|&c| std::iter::repeat_n(c, PER_BATCH.1))
            .collect();
        let labels: Vec<i64> = batch.iter().map(|&c| c as i64).collect();
        let xs = images(&mut rng, &batch, &protos);
        let v = stepper.step(&mut opt, &xs, &labels, &mut anchor_rng, false)?;
        anyhow::ensure!(v.loss.is_finite(), "the trajectory's loss is {}", v.loss);
        losses.extend([v.loss, v.loss_group, v.loss_ce]);
        step_losses.push(v.loss);
    }
    let mut weights = Vec::new();
    for (name, t) in &names {
        weights.extend(name.as_bytes());
        weights.extend(tensor_bits(t)?);
    }
    let held: Vec<usize> = (0..CLASSES)
        .flat_map(|c| std::iter::repeat_n(c, HELD_OUT))
        .collect();
    let xs = images(&mut rng, &held, &protos);
    let emb = tch::no_grad(|| l2_normalise(&net.forward(&xs, ForwardMode::EVAL).features));
    let labels: Vec<i64> = held.iter().map(|&c| c as i64).collect();
    let m = metrics::evaluate(
        &emb,
        &labels,
        &EvalParams {
            recall_ks: vec![1, 2, 4],
            kmeans_restarts: 1,
            ..Default::default()
        },
        device,
    )?;
    let named: BTreeMap<String, f64> = m.named().into_iter().collect();
    let metric_values: Vec<f64> = named.values().copied().collect();
    let parts: BTreeMap<String, String> = [
        ("losses", sha(&f64_bits(&losses))),
        ("weights", sha(&weights)),
        ("embeddings", sha(&tensor_bits(&emb)?)),
        ("metrics", sha(&f64_bits(&metric_values))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let digest = sha(serde_json::to_string(&parts)?.as_bytes());
    Ok(TrajectoryRecord {
        numerics_training: crate::numerics::training(),
        numerics_evaluation: crate::numerics::evaluation(),
        kernels: crate::numerics::Kernels::in_effect().to_string(),
        threads: tch::get_num_threads(),
        digest,
        parts,
        step_losses,
        metrics: named,
    })
}

/// How to refresh the fixture, for the messages of [`check`].
pub const REFRESH: &str = "just numerics-fixture";

/// Whether `found` (this code) agrees with `fixture` (committed); the error says what to do.
pub fn check(found: &TrajectoryRecord, fixture: &TrajectoryRecord) -> Result<(), String> {
    if (found.kernels.as_str(), found.threads) != (fixture.kernels.as_str(), fixture.threads) {
        return Err(format!(
            "the fixture was made with kernels {} and {} thread(s), this run used {} and {}: \
             run `gl numerics-check` (it pins both itself)",
            fixture.kernels, fixture.threads, found.kernels, found.threads
        ));
    }
    let versions = |r: &TrajectoryRecord| (r.numerics_training, r.numerics_evaluation);
    if versions(found) != versions(fixture) {
        return Err(format!(
            "the fixture records numerics {}/{} and the code is at {}/{}: once every committed \
             report is regenerated with the new version, refresh the fixture with `{REFRESH}`",
            fixture.numerics_training,
            fixture.numerics_evaluation,
            found.numerics_training,
            found.numerics_evaluation
        ));
    }
    if found.digest == fixture.digest {
        return Ok(());
    }
    let moved: Vec<&str> = found
        .parts
        .iter()
        .filter(|(k, v)| fixture.parts.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    let which = match moved.iter().any(|p| TRAINING_PARTS.contains(p)) {
        true => "TRAINING",
        false => "EVALUATION",
    };
    Err(format!(
        "the numbers changed ({} differ from the fixture; step losses now {:?}, were {:?}) but \
         the numerics version did not: bump numerics::{which} in src/numerics/mod.rs, \
         regenerate every committed report from a fresh clone and an empty data directory \
         (docs/development.md), say in docs/demo.md what moved and why, then refresh the \
         fixture with `{REFRESH}`",
        moved.join(", "),
        found.step_losses,
        fixture.step_losses
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, parts: &[(&str, &str)]) -> TrajectoryRecord {
        TrajectoryRecord {
            numerics_training: crate::numerics::TRAINING,
            numerics_evaluation: crate::numerics::EVALUATION,
            kernels: "portable".into(),
            threads: 1,
            digest: digest.into(),
            parts: parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            step_losses: vec![1.0],
            metrics: BTreeMap::new(),
        }
    }

    #[test]
    fn equal_digests_pass_moved_numbers_name_the_version_to_bump() {
        let a = record("d1", &[("losses", "a"), ("weights", "b"), ("metrics", "c")]);
        assert_eq!(check(&a, &a), Ok(()));
        let b = record("d2", &[("losses", "x"), ("weights", "b"), ("metrics", "c")]);
        let e = check(&b, &a).unwrap_err();
        assert!(
            e.contains("numerics::TRAINING") && e.contains("losses"),
            "{e}"
        );
        let c = record("d3", &[("losses", "a"), ("weights", "b"), ("metrics", "y")]);
        assert!(check(&c, &a).unwrap_err().contains("numerics::EVALUATION"));
    }

    #[test]
    fn a_bumped_version_asks_for_a_refreshed_fixture_and_a_pin_mismatch_is_named() {
        let a = record("d1", &[]);
        let mut b = a.clone();
        b.numerics_training += 1;
        assert!(check(&b, &a).unwrap_err().contains(REFRESH));
        let mut c = a.clone();
        c.kernels = "native".into();
        assert!(check(&c, &a).unwrap_err().contains("kernels"));
    }
}
