//! What a run minimises: the recipe's `objective`, the keys of its own hyper-parameters, and
//! [`EmbeddingLoss`], the loss built from them (the trainer's [`crate::train::criterion`] adds
//! the Group Loss and cross-entropy).
//!
//! Every objective trains the same network (backbone → optional linear embedding → features f,
//! plus a linear classifier over the training classes): the pair and triplet losses read f
//! only, the classifier-based ones read the classifier too — Proxy-Anchor's proxies and the
//! normalized softmax's class weights are its weight matrix (m×d), learning in the classifier's
//! own optimiser group (`classifier_lr`, or `classifier_lr_factor` × `lr`). A hyper-parameter
//! key set for an objective that does not read it is an error, so a sweep cannot tune a knob
//! that does nothing.

use crate::loss::arcface::{ArcFaceLoss, ArcFaceOptions};
use crate::loss::contrastive::{ContrastiveLoss, ContrastiveOptions};
use crate::loss::multi_similarity::{MultiSimilarityLoss, MultiSimilarityOptions};
use crate::loss::normalized_softmax::{NormalizedSoftmaxLoss, NormalizedSoftmaxOptions};
use crate::loss::proxy_anchor::{ProxyAnchorLoss, ProxyAnchorOptions};
use crate::loss::triplet::{TripletLoss, TripletOptions};
use crate::loss::LossError;
use anyhow::{bail, Result};
use tch::Tensor;

/// What the network is trained with (the recipe key `objective`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Group Loss + `ce_weight` · cross-entropy (the paper).
    GroupLoss,
    /// Cross-entropy only: the classification pre-finetune stage (`train_finetune.py`) and the
    /// softmax baseline.
    CrossEntropy,
    /// Contrastive loss (Hadsell et al. 2006), negative margin `margin`.
    Contrastive,
    /// Triplet margin loss over semi-hard triplets (Schroff et al. 2015), margin `margin`.
    TripletSemihard,
    /// Triplet margin loss over each anchor's hardest triplet (Hermans et al. 2017).
    TripletBatchHard,
    /// Multi-similarity loss with its pair miner (Wang et al. 2019).
    MultiSimilarity,
    /// Proxy-Anchor (Kim et al. 2020): the classifier's rows are the proxies.
    ProxyAnchor,
    /// Normalized softmax (Zhai & Wu 2019): a cosine classifier with a temperature.
    NormalizedSoftmax,
    /// ArcFace (Deng et al. 2019): a cosine classifier with an additive angular margin.
    Arcface,
}

impl Objective {
    /// Every objective, in the order tables list them.
    pub const ALL: [Objective; 9] = [
        Objective::GroupLoss,
        Objective::CrossEntropy,
        Objective::Contrastive,
        Objective::TripletSemihard,
        Objective::TripletBatchHard,
        Objective::MultiSimilarity,
        Objective::ProxyAnchor,
        Objective::NormalizedSoftmax,
        Objective::Arcface,
    ];

    /// The recipe spelling (`group_loss`).
    pub fn name(self) -> &'static str {
        match self {
            Objective::GroupLoss => "group_loss",
            Objective::CrossEntropy => "cross_entropy",
            Objective::Contrastive => "contrastive",
            Objective::TripletSemihard => "triplet_semihard",
            Objective::TripletBatchHard => "triplet_batch_hard",
            Objective::MultiSimilarity => "multi_similarity",
            Objective::ProxyAnchor => "proxy_anchor",
            Objective::NormalizedSoftmax => "normalized_softmax",
            Objective::Arcface => "arcface",
        }
    }

    /// How tables name it.
    pub fn label(self) -> &'static str {
        match self {
            Objective::GroupLoss => "Group Loss",
            Objective::CrossEntropy => "softmax (cross-entropy)",
            Objective::Contrastive => "contrastive",
            Objective::TripletSemihard => "triplet, semi-hard",
            Objective::TripletBatchHard => "triplet, batch-hard",
            Objective::MultiSimilarity => "multi-similarity",
            Objective::ProxyAnchor => "Proxy-Anchor",
            Objective::NormalizedSoftmax => "normalized softmax",
            Objective::Arcface => "ArcFace",
        }
    }

    /// Parses the recipe spelling.
    pub fn parse(name: &str) -> Result<Objective> {
        match Objective::ALL.iter().find(|o| o.name() == name) {
            Some(&o) => Ok(o),
            None => bail!(
                "unknown objective {name:?} (known: {})",
                Objective::ALL.map(Objective::name).join(", ")
            ),
        }
    }

    /// The optional hyper-parameter keys this objective reads ([`LossKeys`]).
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Objective::GroupLoss | Objective::CrossEntropy => &[],
            Objective::Contrastive => &["margin", "contrastive_squared"],
            Objective::TripletSemihard | Objective::TripletBatchHard => &["margin"],
            Objective::MultiSimilarity => &["ms_alpha", "ms_beta", "ms_base", "ms_epsilon"],
            Objective::ProxyAnchor => &["margin", "scale"],
            Objective::NormalizedSoftmax => &["temperature"],
            Objective::Arcface => &["margin", "scale"],
        }
    }

    /// Whether batches must be P classes × K samples: every loss over pairs within the batch.
    /// Cross-entropy and the classifier-based losses train on any batch.
    pub fn needs_pk_batches(self) -> bool {
        !matches!(
            self,
            Objective::CrossEntropy
                | Objective::ProxyAnchor
                | Objective::NormalizedSoftmax
                | Objective::Arcface
        )
    }
}

/// The optional hyper-parameters of the objectives besides the Group Loss, as recipe keys;
/// unset, each takes its paper's default (cited where the loss is defined in `src/loss/`).
/// Fields of [`crate::train::config::TrainConfig`] (read with `loss_keys()`), left out of
/// `config.json` while unset, so the run ids of recipes written before these keys existed stay
/// the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossKeys {
    /// The objective's margin: contrastive's negative margin m, triplet's α, Proxy-Anchor's δ,
    /// ArcFace's additive angular margin m (radians).
    pub margin: Option<f64>,
    /// Proxy-Anchor's α, ArcFace's s.
    pub scale: Option<f64>,
    /// Normalized softmax's temperature σ.
    pub temperature: Option<f64>,
    /// Multi-similarity's α, β, λ (`base`) and its miner's ε.
    pub ms_alpha: Option<f64>,
    pub ms_beta: Option<f64>,
    pub ms_base: Option<f64>,
    pub ms_epsilon: Option<f64>,
    /// Contrastive in Hadsell et al.'s squared form (default) or PML's hinge on d.
    pub contrastive_squared: Option<bool>,
}

impl LossKeys {
    /// The keys that are set, by recipe name.
    pub fn set(&self) -> Vec<&'static str> {
        let f = [
            ("margin", self.margin.is_some()),
            ("scale", self.scale.is_some()),
            ("temperature", self.temperature.is_some()),
            ("ms_alpha", self.ms_alpha.is_some()),
            ("ms_beta", self.ms_beta.is_some()),
            ("ms_base", self.ms_base.is_some()),
            ("ms_epsilon", self.ms_epsilon.is_some()),
            ("contrastive_squared", self.contrastive_squared.is_some()),
        ];
        f.into_iter().filter(|(_, s)| *s).map(|(k, _)| k).collect()
    }

    /// Every set key is one `objective` reads.
    pub fn check(&self, objective: Objective) -> Result<()> {
        for k in self.set() {
            if !objective.keys().contains(&k) {
                bail!(
                    "{k} is set but objective {} does not read it (its keys: {})",
                    objective.name(),
                    match objective.keys() {
                        [] => "none".to_string(),
                        ks => ks.join(", "),
                    }
                );
            }
        }
        Ok(())
    }
}

/// One of the losses besides the Group Loss and cross-entropy, built from its keys.
pub enum EmbeddingLoss {
    Contrastive(ContrastiveLoss),
    Triplet(TripletLoss),
    MultiSimilarity(MultiSimilarityLoss),
    ProxyAnchor(ProxyAnchorLoss),
    NormalizedSoftmax(NormalizedSoftmaxLoss),
    Arcface(ArcFaceLoss),
}

impl EmbeddingLoss {
    /// The loss `objective` names with `keys` (its paper's defaults where unset), every value
    /// checked; `None` for the Group Loss and cross-entropy, which are not built from keys.
    pub fn new(objective: Objective, keys: &LossKeys) -> Result<Option<EmbeddingLoss>> {
        keys.check(objective)?;
        Self::build(objective, keys).map_err(|e| {
            anyhow::anyhow!(
                "objective {} (recipe keys {}): {e}",
                objective.name(),
                objective.keys().join(", ")
            )
        })
    }

    fn build(objective: Objective, k: &LossKeys) -> Result<Option<EmbeddingLoss>, LossError> {
        Ok(Some(match objective {
            Objective::GroupLoss | Objective::CrossEntropy => return Ok(None),
            Objective::Contrastive => {
                let d = ContrastiveOptions::default();
                EmbeddingLoss::Contrastive(ContrastiveLoss::new(ContrastiveOptions {
                    neg_margin: k.margin.unwrap_or(d.neg_margin),
                    squared: k.contrastive_squared.unwrap_or(d.squared),
                })?)
            }
            o @ (Objective::TripletSemihard | Objective::TripletBatchHard) => {
                let d = match o {
                    Objective::TripletSemihard => TripletOptions::semi_hard(),
                    _ => TripletOptions::batch_hard(),
                };
                EmbeddingLoss::Triplet(TripletLoss::new(TripletOptions {
                    margin: k.margin.unwrap_or(d.margin),
                    ..d
                })?)
            }
            Objective::MultiSimilarity => {
                let d = MultiSimilarityOptions::default();
                EmbeddingLoss::MultiSimilarity(MultiSimilarityLoss::new(MultiSimilarityOptions {
                    alpha: k.ms_alpha.unwrap_or(d.alpha),
                    beta: k.ms_beta.unwrap_or(d.beta),
                    base: k.ms_base.unwrap_or(d.base),
                    epsilon: k.ms_epsilon.unwrap_or(d.epsilon),
                    ..d
                })?)
            }
            Objective::ProxyAnchor => {
                let d = ProxyAnchorOptions::default();
                EmbeddingLoss::ProxyAnchor(ProxyAnchorLoss::new(ProxyAnchorOptions {
                    alpha: k.scale.unwrap_or(d.alpha),
                    delta: k.margin.unwrap_or(d.delta),
                })?)
            }
            Objective::NormalizedSoftmax => {
                let d = NormalizedSoftmaxOptions::default();
                EmbeddingLoss::NormalizedSoftmax(NormalizedSoftmaxLoss::new(
                    NormalizedSoftmaxOptions {
                        temperature: k.temperature.unwrap_or(d.temperature),
                    },
                )?)
            }
            Objective::Arcface => {
                let d = ArcFaceOptions::default();
                EmbeddingLoss::Arcface(ArcFaceLoss::new(ArcFaceOptions {
                    margin: k.margin.unwrap_or(d.margin),
                    scale: k.scale.unwrap_or(d.scale),
                })?)
            }
        }))
    }

    /// The loss of a batch: `features` n×d, `labels` n class ids on their device, `classifier`
    /// the classifier's m×d weight (proxies or class weights; unused by the pair losses).
    pub fn forward(
        &self,
        features: &Tensor,
        labels: &Tensor,
        classifier: &Tensor,
    ) -> Result<Tensor> {
        Ok(match self {
            EmbeddingLoss::Contrastive(l) => l.forward(features, labels)?,
            EmbeddingLoss::Triplet(l) => l.forward(features, labels)?,
            EmbeddingLoss::MultiSimilarity(l) => l.forward(features, labels)?,
            EmbeddingLoss::ProxyAnchor(l) => l.forward(features, labels, classifier)?,
            EmbeddingLoss::NormalizedSoftmax(l) => l.forward(features, labels, classifier)?,
            EmbeddingLoss::Arcface(l) => l.forward(features, labels, classifier)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for o in Objective::ALL {
            assert_eq!(Objective::parse(o.name()).unwrap(), o);
            let json = serde_json::to_value(o).unwrap();
            assert_eq!(json, o.name());
        }
        let e = Objective::parse("arc_face").unwrap_err().to_string();
        assert!(
            e.contains("proxy_anchor, normalized_softmax, arcface"),
            "{e}"
        );
    }

    #[test]
    fn a_key_the_objective_does_not_read_is_refused() {
        let k = LossKeys {
            margin: Some(0.2),
            ms_beta: Some(50.0),
            ..Default::default()
        };
        assert_eq!(k.set(), ["margin", "ms_beta"]);
        let e = k.check(Objective::Contrastive).unwrap_err().to_string();
        assert!(
            e.contains("ms_beta is set but objective contrastive"),
            "{e}"
        );
        let e = k.check(Objective::GroupLoss).unwrap_err().to_string();
        assert!(e.contains("(its keys: none)"), "{e}");
        let ms = LossKeys {
            ms_beta: Some(50.0),
            ..Default::default()
        };
        ms.check(Objective::MultiSimilarity).unwrap();
    }
}
