//! The objectives' share of a training step, printed by `gl bench train` after the backbones:
//! at the demo batch (8 classes × 6 images, EfficientNet-Lite0 at 64×64, a 128-d embedding, a
//! classifier over the demo's 134 training classes — the `benchmark_demo` network), the
//! backbone's forward + backward beside each objective's loss forward + backward on the same
//! features, so a reader sees what each loss costs. Ours only: the losses are checked against
//! pytorch-metric-learning by the golden tests, not timed against it.

use crate::bench::median;
use crate::model::net::{EmbeddingNet, HeadParams, NetOutput};
use crate::model::ForwardMode;
use crate::train::config::TrainConfig;
use crate::train::criterion::Criterion;
use crate::train::objective::Objective;
use anyhow::{ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// The demo batch: P classes × K images.
pub const CLASSES: usize = 8;
pub const PER_CLASS: usize = 6;
/// The demo's input side, embedding and training classes.
pub const SIZE: i64 = 64;
pub const EMBEDDING: i64 = 128;
pub const M: i64 = 134;

/// One objective's cost per step.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub objective: Objective,
    /// Median seconds of the loss's forward + backward.
    pub loss_s: f64,
}

/// Median seconds of the backbone's forward + backward at the demo batch, and each objective's
/// loss forward + backward on detached features of that batch; `rounds` × `steps` timed.
pub fn measure(
    device: Device,
    rounds: usize,
    steps: usize,
    base: &TrainConfig,
) -> Result<(f64, Vec<Cost>)> {
    ensure!(rounds >= 1 && steps >= 1, "rounds and steps must be ≥ 1");
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let head = HeadParams {
        embedding_dim: Some(EMBEDDING),
        num_classes: M,
        init: Default::default(),
    };
    let net = EmbeddingNet::new(&vs.root(), "efficientnet_lite0", head)?;
    let n = (CLASSES * PER_CLASS) as i64;
    let images = Tensor::randn([n, 3, SIZE, SIZE], (Kind::Float, device));
    let labels: Vec<i64> = (0..CLASSES as i64)
        .flat_map(|c| std::iter::repeat_n(c * 7 % M, PER_CLASS))
        .collect();
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up
        let mut per_round = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..steps {
                f()?;
            }
            per_round.push(t.elapsed().as_secs_f64() / steps as f64);
        }
        Ok(median(&mut per_round))
    };
    let backbone_s = time(&mut || {
        vs.trainable_variables().iter().for_each(|p| {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        let out = net.forward(&images, ForwardMode::TRAIN_FROZEN_BN);
        (out.features.sum(Kind::Float) + out.logits.sum(Kind::Float)).backward();
        Ok(())
    })?;
    let fixed = tch::no_grad(|| net.forward(&images, ForwardMode::EVAL));
    let mut costs = Vec::new();
    for objective in Objective::ALL {
        let mut cfg = base.clone();
        cfg.objective = objective;
        let criterion = Criterion::new(&cfg)?;
        let features = fixed.features.detach().set_requires_grad(true);
        let logits = fixed.logits.detach().set_requires_grad(true);
        let classifier = net.classifier_weight().detach().set_requires_grad(true);
        let out = NetOutput { features, logits };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let loss_s = time(&mut || {
            let t = criterion.terms(&out, &classifier, &labels, device, &mut rng)?;
            t.loss.backward();
            Ok(())
        })?;
        costs.push(Cost { objective, loss_s });
    }
    Ok((backbone_s, costs))
}

/// The lines `gl bench train` prints.
pub fn print(device: Device, rounds: usize, steps: usize, base: &TrainConfig) -> Result<()> {
    let (backbone_s, costs) = measure(device, rounds, steps, base)?;
    println!(
        "objectives at the demo batch ({CLASSES} classes × {PER_CLASS}, efficientnet_lite0 \
         {SIZE}×{SIZE}, {EMBEDDING}-d, m {M}): backbone forward + backward {:.1} ms/step",
        backbone_s * 1e3
    );
    for c in &costs {
        println!(
            "objective {}: loss forward + backward {:.3} ms/step ({:.2} % of the backbone's)",
            c.objective.name(),
            c.loss_s * 1e3,
            100.0 * c.loss_s / backbone_s
        );
    }
    Ok(())
}
