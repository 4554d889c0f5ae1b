//! The loss a training step minimises, built once per run from its recipe: the Group Loss with
//! its anchor rule, cross-entropy, or one of the losses it is compared with
//! ([`crate::train::objective::EmbeddingLoss`]).

use crate::loss::group_loss::{GroupLoss, GroupLossOptions};
use crate::loss::Anchors;
use crate::model::net::NetOutput;
use crate::train::config::TrainConfig;
use crate::train::objective::{EmbeddingLoss, Objective};
use anyhow::{Context, Result};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction, Tensor};

/// The loss of a run, every hyper-parameter checked when it was built.
pub enum Criterion {
    GroupLoss(GroupLoss, Anchors),
    CrossEntropy,
    Embedding(EmbeddingLoss),
}

/// One batch's loss: the quantity minimised and, where the objective has them, its parts.
pub struct Terms {
    pub loss: Tensor,
    /// The Group Loss part.
    pub group: Option<Tensor>,
    /// The cross-entropy part (the whole loss of the cross-entropy objective).
    pub ce: Option<Tensor>,
}

impl Criterion {
    /// The loss `cfg.objective` names with `cfg`'s hyper-parameters.
    pub fn new(cfg: &TrainConfig) -> Result<Criterion> {
        Ok(match cfg.objective {
            Objective::GroupLoss => Criterion::GroupLoss(
                GroupLoss::new(GroupLossOptions {
                    tau: cfg.tau,
                    steps: cfg.replicator_steps,
                    ce_weight: cfg.ce_weight,
                    zero_diagonal: cfg.zero_diagonal,
                    ..Default::default()
                })?,
                Anchors::first_k(cfg.anchors)?,
            ),
            Objective::CrossEntropy => Criterion::CrossEntropy,
            o => Criterion::Embedding(
                EmbeddingLoss::new(o, &cfg.loss_keys())?
                    .context("an embedding objective builds its loss")?,
            ),
        })
    }

    /// The loss of one forward pass `out` over a batch with classifier labels `labels`;
    /// `classifier` is the classifier's weight (m×d).
    pub fn terms(
        &self,
        out: &NetOutput,
        classifier: &Tensor,
        labels: &[i64],
        device: Device,
        anchor_rng: &mut ChaCha8Rng,
    ) -> Result<Terms> {
        let y = || Tensor::from_slice(labels).to_device(device);
        Ok(match self {
            Criterion::GroupLoss(loss, anchors) => {
                let mask = anchors.mask(labels, anchor_rng)?;
                let targets = loss.targets(labels, &mask, out.logits.size()[1], device)?;
                let o = loss.forward(&out.features, &out.logits, &targets)?;
                Terms {
                    loss: o.loss,
                    group: Some(o.loss_group),
                    ce: Some(o.loss_ce),
                }
            }
            Criterion::CrossEntropy => {
                let ce = out.logits.log_softmax(1, Kind::Float).g_nll_loss::<Tensor>(
                    &y(),
                    None,
                    Reduction::Mean,
                    -100,
                );
                Terms {
                    loss: ce.shallow_clone(),
                    group: None,
                    ce: Some(ce),
                }
            }
            Criterion::Embedding(l) => Terms {
                loss: l.forward(&out.features, &y(), classifier)?,
                group: None,
                ce: None,
            },
        })
    }
}
