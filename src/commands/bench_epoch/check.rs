//! The check before anything is timed: our first batch through the eval transform and one
//! training step on it from the initial weights, beside the reference's loader and step on the
//! same images (`epoch_ref.py bench --check`).

use super::{forward_mode, Settings, CHECK_SEED, PIXEL_TOLERANCE};
use crate::commands::bench_train::Mismatch;
use crate::data::loader::{self, LoaderParams, Mode};
use crate::stages::train::inputs::Inputs;
use crate::stages::train::trainee::Trainee;
use crate::train::criterion::Criterion;
use crate::train::epoch::{self, Stepper};
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;
use tch::Tensor;

/// The check step on one side: its loss and the norm of its update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Check {
    loss: f64,
    update_norm: f64,
}

/// The classifier labels of `batch`'s images.
fn classifier_labels(inputs: &Inputs, batch: &[usize]) -> Result<Vec<i64>> {
    batch
        .iter()
        .map(|&i| {
            let c = inputs.rows[i].class_id;
            inputs
                .label_of
                .get(&c)
                .copied()
                .with_context(|| format!("class {c} is not a training class"))
        })
        .collect()
}

/// Our check step: the first batch through the eval transform, written with its labels and
/// image ids to `file` for the reference, then one training step on it from the initial weights
/// (libtorch seeded with [`CHECK_SEED`]). Consumes the trainee, whose weights it changes.
pub(super) fn check_step(
    s: &Settings,
    mut t: Trainee,
    criterion: &Criterion,
    inputs: &Inputs,
    batch: &[usize],
    lp: LoaderParams,
    file: &Path,
) -> Result<Check> {
    let images = loader::stream(inputs.rows.clone(), vec![batch.to_vec()], Mode::Eval, lp)?
        .next()
        .context("the loader gave no check batch")??
        .images;
    let labels = classifier_labels(inputs, batch)?;
    let ids: Vec<i64> = batch.iter().map(|&i| inputs.rows[i].image_id).collect();
    Tensor::write_safetensors(
        &[
            ("images", &images),
            ("labels", &Tensor::from_slice(&labels)),
            ("image_ids", &Tensor::from_slice(&ids)),
        ],
        file,
    )
    .with_context(|| format!("writing {}", file.display()))?;
    let params = t.vs.trainable_variables();
    let before: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let stepper = Stepper {
        net: &t.net,
        criterion,
        mode: forward_mode(&s.config),
        device: s.device,
    };
    let mut anchor_rng = epoch::epoch_rng(u64::MAX, 0); // unused by FirstK
    tch::manual_seed(CHECK_SEED);
    let v = stepper.step(&mut t.opt, &images, &labels, &mut anchor_rng, false)?;
    ensure!(v.loss.is_finite(), "the check step's loss is {}", v.loss);
    let update_norm = crate::bench::update_norm(&params, &before);
    Ok(Check {
        loss: v.loss,
        update_norm,
    })
}

/// The two loaders' check batches differ by more than [`PIXEL_TOLERANCE`].
#[derive(Debug, thiserror::Error)]
#[error(
    "check batch: the reference's eval transform differs from gl's loader by a mean of {mean:.3e} \
     (max {max:.3e}) > {tolerance:.1e} in normalised units: the two loaders do not read the \
     same images the same way, nothing was timed"
)]
pub struct PixelMismatch {
    pub mean: f64,
    pub max: f64,
    pub tolerance: f64,
}

/// Prints the check's line; a [`Mismatch`] or [`PixelMismatch`] when the sides disagree.
pub(super) fn compare_check(
    s: &Settings,
    ours: &Check,
    reply: &serde_json::Value,
    torch: &str,
) -> Result<()> {
    let num = |k: &str| {
        reply[k]
            .as_f64()
            .with_context(|| format!("the reference's check has no number {k:?}"))
    };
    let (loss, update, mean, max) = (
        num("loss")?,
        num("update_norm")?,
        num("pixel_mean_abs")?,
        num("pixel_max_abs")?,
    );
    println!(
        "check (first batch of epoch 1, eval transform: no random crop): loader pixels mean \
         |Δ| {mean:.1e} max |Δ| {max:.1e}; one step from the initial weights on gl's images: loss \
         {:.6} (gl) {loss:.6} (reference, torch {torch}), relative differences: loss {:.1e}, \
         update norm {:.1e}",
        ours.loss,
        crate::bench::rel_diff(ours.loss, loss),
        crate::bench::rel_diff(ours.update_norm, update)
    );
    if mean.is_nan() || mean > PIXEL_TOLERANCE {
        bail!(PixelMismatch {
            mean,
            max,
            tolerance: PIXEL_TOLERANCE
        });
    }
    for (what, a, b) in [
        ("check-step loss", ours.loss, loss),
        ("check-step update norm", ours.update_norm, update),
    ] {
        let rel = crate::bench::rel_diff(a, b);
        if rel.is_nan() || rel > s.tolerance {
            bail!(Mismatch {
                backbone: s.config.backbone.clone(),
                what,
                ours: a,
                theirs: b,
                rel,
                tolerance: s.tolerance,
            });
        }
    }
    Ok(())
}
