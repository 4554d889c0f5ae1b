//! The named choices of a training recipe (`sampler`, `batchnorm`, `lr_decay`, `optimizer`,
//! `augment`, `selection`, `select_metric`, `start`): each a closed set of spellings that
//! pipeline/train.toml and `--set` use, read by [`crate::train::config::TrainConfig`].

/// How batches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerChoice {
    /// The official `CombineSampler` (P classes × K samples).
    Official,
    /// P distinct classes × K, every image at least once per epoch.
    Corrected,
    /// Shuffled batches of `batch_size` (the finetune stage).
    Random,
}

/// BatchNorm during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormMode {
    /// Batch statistics, running statistics updated (the official code).
    Train,
    /// Running statistics used and kept; affine parameters still learn.
    Frozen,
}

/// How the learning rate drops at the milestones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// The official `train.py`: after any milestone lr = base · γ (at epoch 51 it is set to
    /// base/10 again, not base/100).
    Official,
    /// `MultiStepLR`: γ compounds at every milestone.
    Cumulative,
}

/// The optimiser of a run (both share state layout, so a checkpoint resumes with either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerChoice {
    /// RAdam (the official code): Adam with the variance rectification r_t, which damps the
    /// first hundreds of steps (with β2 = 0.999, r_t ≈ 0.28 after 160 steps).
    #[default]
    Radam,
    /// Adam (`torch.optim.Adam`): the same moments without rectification.
    Adam,
}

/// The crop of the train transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentChoice {
    /// `RandomResizedCrop(input_size, scale=(crop_scale_min, 1))` (the paper).
    #[default]
    RandomResizedCrop,
    /// `RandomCrop(input_size)` of the image resized to `resize`: a shift of up to
    /// `resize − input_size` pixels and no change of scale or aspect (for glyphs, where a
    /// crop can cut away what tells E from F).
    RandomCrop,
}

/// What a run evaluates after each epoch (the recipe key `epoch_eval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochEval {
    /// The validation and the test classes: per-epoch test curves, and the paper's best-on-test
    /// selection (`selection = "test"`) next to the validation one.
    #[default]
    ValAndTest,
    /// The validation classes only: the test classes are first embedded by the embed stage, for
    /// the selected model. For a benchmark, where the test set decides nothing: it saves the
    /// per-epoch test embedding (about a fifth of a demo run's time).
    Val,
}

/// Which epoch's model a run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Best validation R@1 (validation classes carved from the training classes).
    Val,
    /// Best *test* R@1: the paper's protocol (`train.py`), labelled as such wherever shown.
    Test,
    /// The last epoch.
    Last,
}

/// The metric a run's validation and test bests are taken by (the recipe key `select_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectMetric {
    /// Recall@1 (the paper's and the official code's).
    #[default]
    #[serde(rename = "recall_at_1")]
    RecallAt1,
    /// MAP@R (Musgrave et al. 2020): it keeps moving where R@1 saturates, e.g. on a few
    /// validation classes.
    MapAtR,
}

impl SelectMetric {
    /// Its name in the recipe and in `state.json`.
    pub fn name(self) -> &'static str {
        match self {
            SelectMetric::RecallAt1 => "recall_at_1",
            SelectMetric::MapAtR => "map_at_r",
        }
    }
}

/// Where a run starts, when a profile tunes or tracks it (the recipe key `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The backbone's ImageNet weights and a fresh classifier (`init` must be `imagenet`).
    Imagenet,
    /// The authors' start (`net/load_trained_net.py`, `train_finetune.py`): the profile's
    /// cross-entropy fine-tuned network, classifier included, so the Group Loss priors
    /// softmax(z/τ) start meaningful. The pipeline sets `init` to `run:<that run>`.
    Finetuned,
}
