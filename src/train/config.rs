//! A run's resolved training configuration and where it comes from: `pipeline/train.toml`'s
//! `[defaults]` (the paper's recipe), then `[datasets.<dataset>]` (the paper's per-dataset values),
//! then `[profiles.<profile>]`, then `GL_TRAIN_<KEY>` environment variables, then `--set
//! key=value` — later wins. Read through figment: an unknown key or a wrong type is an error
//! naming the key and its source. [`TrainConfig::validate`] checks ranges and combinations.

use anyhow::{bail, ensure, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

/// The training recipes, relative to the project root.
pub const TRAIN_FILE: &str = "pipeline/train.toml";

use crate::model::execution::{Autocast, Execution, MemoryFormat};
use crate::train::objective::LossKeys;
pub use crate::train::objective::Objective;

pub use crate::train::choices::{
    AugmentChoice, BatchNormMode, EpochEval, LrDecay, OptimizerChoice, SamplerChoice, SelectMetric,
    Selection, Start,
};

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Every knob of a run. Serialised into the run directory as `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Backbone registry name (`gl models`).
    pub backbone: String,
    /// Initial weights: `imagenet` (the backbone's ImageNet weights), `none` (random),
    /// `weights:<name>` (a `gl weights` entry) or `run:<run id>` (another run's selected model).
    pub init: String,
    /// The start as a choice a sweep or benchmark can tune or track ([`Start`]); unset = as
    /// `init` says. Left out of `config.json` while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    /// Linear embedding after the pooled features; 0 = none (the paper).
    pub embedding_dim: i64,
    /// How the fresh embedding layer and classifier are drawn: `torch` (PyTorch's `nn.Linear`)
    /// or `tch` (tch's default, 2.45× wider; for the ablation). Left out of `config.json` at
    /// `torch`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub head_init: crate::model::linear::HeadInit,
    pub batchnorm: BatchNormMode,
    pub objective: Objective,
    pub sampler: SamplerChoice,
    /// P: classes per batch (official/corrected samplers).
    pub classes_per_batch: usize,
    /// K: samples per class (official/corrected samplers).
    pub samples_per_class: usize,
    /// Batch size of the random sampler.
    pub batch_size: usize,
    /// Anchors (labelled samples) per class: the first k of each class in batch order.
    pub anchors: i64,
    /// τ: softmax temperature of the priors.
    pub tau: f64,
    /// T: replicator-dynamics steps.
    pub replicator_steps: i64,
    /// Weight of the auxiliary cross-entropy.
    pub ce_weight: f64,
    /// W's diagonal 0 (the paper's text) instead of 1 (the official code).
    pub zero_diagonal: bool,
    /// The hyper-parameters of the objectives compared with the Group Loss
    /// ([`crate::train::objective::LossKeys`]: what each means and which objective reads it);
    /// unset = the loss's paper default. Each is left out of `config.json` while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_base: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_epsilon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrastive_squared: Option<bool>,
    /// RAdam learning rate, weight decay (L2, as `torch.optim`) and ε.
    pub lr: f64,
    /// Learning rate of the classifier (its own RAdam group, following the same schedule);
    /// 0 = `lr` (the official code: one group).
    pub classifier_lr: f64,
    /// Classifier learning rate as a multiple of `lr` (Proxy-Anchor's proxies learn at 100 × the
    /// network's rate in its paper); when set it replaces `classifier_lr`, so a sweep over `lr`
    /// moves both. Left out of `config.json` while unset (stable run ids, as `optimizer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_lr_factor: Option<f64>,
    pub weight_decay: f64,
    pub adam_eps: f64,
    /// RAdam (official) or Adam. Left out of `config.json` (and so of run ids) when RAdam, so
    /// the run ids of recipes written before this key existed stay the same.
    #[serde(default, skip_serializing_if = "is_default")]
    pub optimizer: OptimizerChoice,
    /// Epochs to train; 0 = none: `gl train` writes the run directory and stops, so the run's
    /// model is its initial weights (`init`), e.g. a released checkpoint (recipe `released`).
    pub epochs: usize,
    /// Completed epochs after which the lr drops (paper: [30, 50] = from epochs 31 and 51).
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    pub lr_decay: LrDecay,
    pub selection: Selection,
    /// The metric of the validation and test bests (`selection` "val" and "test"):
    /// `recall_at_1` (the paper's) or `map_at_r`. Left out of `config.json` while R@1 (stable
    /// run ids, as `optimizer`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub select_metric: SelectMetric,
    /// Early stopping: with `selection = "val"`, stop once this many epochs in a row brought no
    /// strict improvement of the validation `select_metric` (`epochs` stays the maximum);
    /// 0 = off. Needs `eval_every = 1`. Left out of `config.json` while 0.
    #[serde(default, skip_serializing_if = "is_default")]
    pub patience: usize,
    /// At each lr drop, reload the best model so far (the official `train.py`).
    pub reload_best_at_lr_drop: bool,
    /// Fraction of the training classes held out for validation (class-disjoint); 0 = none.
    pub val_fraction: f64,
    /// Seed of the validation split, separate from the run seed so seeds share one split.
    pub val_seed: u64,
    /// Square input side (paper: 227) and the shorter side of the cached images and of the
    /// evaluation resize before its centre crop (paper: 256).
    pub input_size: u32,
    pub resize: u32,
    /// Lower bound of RandomResizedCrop's area fraction (paper: 0.08) and the horizontal flip
    /// (paper: on). Glyphs need milder crops and no flips (a mirrored "b" is a "d").
    pub crop_scale_min: f64,
    pub hflip: bool,
    /// The train crop: random resized crop (paper) or a random shift-only crop. Left out of
    /// `config.json` when the paper's (stable run ids, as `optimizer`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub augment: AugmentChoice,
    /// Use at most N images of each training class (the first N of a shuffle seeded by
    /// `val_seed`, the same for every run seed); 0 = all. An ablation of images per class.
    #[serde(default, skip_serializing_if = "is_default")]
    pub train_images_per_class: usize,
    /// Evaluate the initial network before training (the "untrained" baseline of the run).
    pub eval_untrained: bool,
    /// Use only the first N training and N test classes (0 = all): quick runs and tests.
    pub class_limit: usize,
    pub eval_batch: usize,
    /// K of the reported Recall@K (paper: 1, 2, 4, 8; SOP 1, 10, 100, 1000).
    pub recall_ks: Vec<usize>,
    /// Evaluate every N epochs (and always at the last); 1 = every epoch.
    pub eval_every: usize,
    /// Which classes those evaluations embed: validation and test, or validation only. Left out
    /// of `config.json` while both (stable run ids, as `optimizer`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub epoch_eval: EpochEval,
    pub loader_threads: usize,
    pub prefetch: usize,
    /// `channels_last`: convolution weights and input batches in NHWC strides
    /// ([`crate::model::execution`]); for GPUs. Left out of `config.json` while `contiguous`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub memory_format: MemoryFormat,
    /// `bf16`: the backbone's forward under bfloat16 autocast, the loss in f32; for GPUs.
    /// Left out of `config.json` while `off`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub autocast: Autocast,
}

/// A [`TrainConfig`] that passed [`TrainConfig::validate`] (made by [`TrainConfig::check`] and
/// [`TrainConfig::resolve`]). Read it as a `TrainConfig`; to change it, take it apart with
/// [`CheckedConfig::into_inner`] and check it again. Serialised exactly as the inner value, so
/// run ids hashed from it are those of the plain configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct CheckedConfig(TrainConfig);

impl std::ops::Deref for CheckedConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.0
    }
}

impl CheckedConfig {
    pub fn into_inner(self) -> TrainConfig {
        self.0
    }
}

impl TrainConfig {
    /// The objective hyper-parameter keys of this recipe.
    pub fn loss_keys(&self) -> LossKeys {
        LossKeys {
            margin: self.margin,
            scale: self.scale,
            temperature: self.temperature,
            ms_alpha: self.ms_alpha,
            ms_beta: self.ms_beta,
            ms_base: self.ms_base,
            ms_epsilon: self.ms_epsilon,
            contrastive_squared: self.contrastive_squared,
        }
    }

    /// How the network's forward runs (memory format, autocast).
    pub fn execution(&self) -> Execution {
        Execution {
            memory_format: self.memory_format,
            autocast: self.autocast,
        }
    }

    /// The network head of this recipe over `num_classes` training classes.
    pub fn head(&self, num_classes: i64) -> crate::model::net::HeadParams {
        crate::model::net::HeadParams {
            embedding_dim: (self.embedding_dim > 0).then_some(self.embedding_dim),
            num_classes,
            init: self.head_init,
        }
    }

    /// Resolves dataset + profile from `<project>/pipeline/train.toml`, the environment and
    /// `overrides` (`key=value`, the value parsed as TOML, else taken as a string). A dataset
    /// without a `[datasets.<dataset>]` section there may carry its values beside its registry
    /// entry instead (`[datasets.<dataset>.train]` of `data/registry.d/<dataset>.toml`), so
    /// one's own data trains without editing the project's recipes.
    pub fn resolve(
        project: &crate::project::Project,
        dataset: &str,
        profile: &str,
        overrides: &[String],
    ) -> Result<CheckedConfig> {
        let path = project.root.join(TRAIN_FILE);
        ensure!(
            path.is_file(),
            "training recipes {} not found",
            path.display()
        );
        let file = Figment::from(Toml::file(&path));
        let beside = match file.find_value(&format!("datasets.{dataset}")) {
            Ok(_) => None,
            Err(_) => crate::data::registry::Registry::load(&project.root, &project.data_dir)
                .ok()
                .and_then(|r| r.datasets.get(dataset).and_then(|d| d.train.clone())),
        };
        for (section, name) in [("datasets", dataset), ("profiles", profile)] {
            let key = format!("{section}.{name}");
            if file.find_value(&key).is_err() && !(section == "datasets" && beside.is_some()) {
                let known: Vec<String> = file
                    .find_value(section)
                    .ok()
                    .and_then(|v| v.into_dict())
                    .map(|d| d.into_keys().collect())
                    .unwrap_or_default();
                bail!(
                    "{}: no [{key}] (known {section}: {}){}",
                    path.display(),
                    known.join(", "),
                    match section {
                        "datasets" => format!(
                            "; or give the dataset's values in a [datasets.{name}.train] table \
                             beside its registry entry"
                        ),
                        _ => String::new(),
                    }
                );
            }
        }
        let mut fig = Figment::new()
            .merge(file.focus("defaults"))
            .merge(file.focus(&format!("datasets.{dataset}")));
        if let Some(values) = beside {
            fig = fig.merge(Serialized::defaults(values));
        }
        let mut fig = fig
            .merge(file.focus(&format!("profiles.{profile}")))
            .merge(Env::prefixed(crate::env_vars::TRAIN_PREFIX));
        for o in overrides {
            let (key, value) = crate::config::parse_override(o)?;
            fig = fig.merge(Serialized::default(&key, value));
        }
        let cfg: TrainConfig = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("{}", crate::config::describe(&e)))
            .with_context(|| {
                format!(
                    "resolving dataset {dataset:?}, profile {profile:?} from {}",
                    path.display()
                )
            })?;
        cfg.check()
            .with_context(|| format!("dataset {dataset:?}, profile {profile:?}"))
    }

    /// This configuration once [`TrainConfig::validate`] accepts it: the type a training run
    /// takes, so nothing trains on a configuration nobody checked.
    pub fn check(self) -> Result<CheckedConfig> {
        self.validate()?;
        Ok(CheckedConfig(self))
    }

    /// Range and combination checks, each naming the key.
    pub fn validate(&self) -> Result<()> {
        crate::model::spec(&self.backbone).context("backbone")?;
        ensure!(
            self.init == "imagenet"
                || self.init == "none"
                || self.init.starts_with("weights:")
                || self.init.starts_with("run:"),
            "init must be imagenet, none, weights:<name> or run:<id>, got {:?}",
            self.init
        );
        match self.start {
            Some(Start::Imagenet) => ensure!(
                self.init == "imagenet",
                "start = \"imagenet\" needs init = \"imagenet\", got {:?}",
                self.init
            ),
            Some(Start::Finetuned) => ensure!(
                self.init.starts_with("run:"),
                "start = \"finetuned\" needs init = \"run:<the fine-tuned run>\" (the pipeline \
                 sets it from the profile's [finetune] table), got {:?}",
                self.init
            ),
            None => {}
        }
        ensure!(self.embedding_dim >= 0, "embedding_dim must be ≥ 0");
        ensure!(self.eval_every >= 1, "eval_every must be ≥ 1");
        for (name, v) in [
            ("lr", self.lr),
            ("classifier_lr", self.classifier_lr),
            ("weight_decay", self.weight_decay),
            ("adam_eps", self.adam_eps),
            ("ce_weight", self.ce_weight),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "{name} must be finite and ≥ 0, got {v}"
            );
        }
        ensure!(
            self.lr_gamma.is_finite() && self.lr_gamma > 0.0,
            "lr_gamma must be > 0"
        );
        ensure!(self.tau.is_finite() && self.tau > 0.0, "tau must be > 0");
        ensure!(
            self.crop_scale_min > 0.0 && self.crop_scale_min <= 1.0,
            "crop_scale_min must be in (0, 1], got {}",
            self.crop_scale_min
        );
        ensure!(self.replicator_steps >= 1, "replicator_steps must be ≥ 1");
        ensure!(self.anchors >= 0, "anchors must be ≥ 0");
        ensure!(
            (0.0..1.0).contains(&self.val_fraction),
            "val_fraction must be in [0, 1), got {}",
            self.val_fraction
        );
        ensure!(
            self.selection != Selection::Val || self.val_fraction > 0.0,
            "selection = \"val\" needs val_fraction > 0 (or use selection = \"test\", the paper's protocol, or \"last\")"
        );
        ensure!(
            self.selection != Selection::Test || self.epoch_eval == EpochEval::ValAndTest,
            "selection = \"test\" picks an epoch by its test metric, which epoch_eval = \"val\" \
             does not compute"
        );
        if self.patience > 0 {
            ensure!(
                self.selection == Selection::Val,
                "patience = {} needs selection = \"val\" (early stopping watches the validation \
                 metric), got selection = \"{}\"",
                self.patience,
                format!("{:?}", self.selection).to_lowercase()
            );
            ensure!(
                self.eval_every == 1,
                "patience = {} needs eval_every = 1 (it counts evaluated epochs), got eval_every \
                 = {}",
                self.patience,
                self.eval_every
            );
        }
        ensure!(
            self.input_size >= 16 && self.input_size <= self.resize,
            "input_size must be in 16..=resize ({}), got {}",
            self.resize,
            self.input_size
        );
        match self.sampler {
            SamplerChoice::Random => ensure!(self.batch_size >= 2, "batch_size must be ≥ 2"),
            _ => {
                ensure!(self.classes_per_batch >= 1, "classes_per_batch must be ≥ 1");
                ensure!(self.samples_per_class >= 1, "samples_per_class must be ≥ 1");
                ensure!(
                    (self.anchors as usize) < self.samples_per_class
                        || self.objective != Objective::GroupLoss,
                    "anchors ({}) must be < samples_per_class ({}): a class needs unlabelled samples",
                    self.anchors,
                    self.samples_per_class
                );
            }
        }
        ensure!(
            !self.objective.needs_pk_batches() || self.sampler != SamplerChoice::Random,
            "objective {} needs the official or corrected sampler (classes × samples per batch)",
            self.objective.name()
        );
        crate::train::objective::EmbeddingLoss::new(self.objective, &self.loss_keys())?;
        if let Some(f) = self.classifier_lr_factor {
            ensure!(
                f.is_finite() && f > 0.0,
                "classifier_lr_factor must be finite and > 0, got {f}"
            );
        }
        ensure!(self.eval_batch >= 1, "eval_batch must be ≥ 1");
        ensure!(
            !self.recall_ks.is_empty() && self.recall_ks.iter().all(|&k| k >= 1),
            "recall_ks must be non-empty, each ≥ 1"
        );
        ensure!(self.loader_threads >= 1, "loader_threads must be ≥ 1");
        ensure!(self.prefetch >= 1, "prefetch must be ≥ 1");
        Ok(())
    }

    /// The schedule's factor during (1-based) `epoch`: 1 before the first milestone.
    pub fn lr_factor(&self, epoch: usize) -> f64 {
        match self.lr_decay {
            LrDecay::Cumulative => {
                crate::train::schedule::lr_at(epoch, 1.0, &self.lr_milestones, self.lr_gamma)
            }
            LrDecay::Official => {
                if self.lr_milestones.iter().any(|&m| m < epoch) {
                    self.lr_gamma
                } else {
                    1.0
                }
            }
        }
    }

    /// The learning rate during (1-based) `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_factor(epoch)
    }

    /// The classifier's learning rate during `epoch` (same schedule as [`Self::lr_at`]).
    pub fn classifier_lr_at(&self, epoch: usize) -> f64 {
        let base = if let Some(f) = self.classifier_lr_factor {
            f * self.lr
        } else if self.classifier_lr > 0.0 {
            self.classifier_lr
        } else {
            self.lr
        };
        base * self.lr_factor(epoch)
    }

    /// True when the lr changes between `epoch − 1` and `epoch` (where the official code
    /// reloads the best model).
    pub fn is_lr_drop(&self, epoch: usize) -> bool {
        epoch > 1 && self.lr_milestones.contains(&(epoch - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad `--set` names the key and says it came from `--set`, not where in our code the
    /// override was merged.
    #[test]
    fn an_unknown_set_key_is_blamed_on_set() {
        let root = crate::project::Project::resolve(
            Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).into()),
            None,
        )
        .unwrap();
        let root = &root;
        let e = TrainConfig::resolve(root, "demo", "demo", &["taux=3.0".into()]).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("taux") && e.contains("(from --set)"), "{e}");
        assert!(!e.contains(".rs:"), "{e}");
        let e =
            TrainConfig::resolve(root, "demo", "demo", &["optimizer=\"sgd\"".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("key `optimizer`"), "{e:#}");
        let e = TrainConfig::resolve(root, "demo", "demo", &["margin=0.2".into()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("margin is set but objective group_loss does not read it"),
            "{e:#}"
        );
        let bad = ["objective=\"contrastive\"".into(), "margin=-1.0".into()];
        let e = TrainConfig::resolve(root, "demo", "demo", &bad).unwrap_err();
        assert!(format!("{e:#}").contains("margin"), "{e:#}");
        let pk = [
            "objective=\"triplet_batch_hard\"".into(),
            "sampler=\"random\"".into(),
        ];
        let e = TrainConfig::resolve(root, "demo", "demo", &pk).unwrap_err();
        assert!(
            format!("{e:#}").contains("objective triplet_batch_hard needs"),
            "{e:#}"
        );
        let proxies = [
            "objective=\"proxy_anchor\"".into(),
            "classifier_lr_factor=100".into(),
        ];
        let c = TrainConfig::resolve(root, "demo", "demo", &proxies).unwrap();
        assert!((c.classifier_lr_at(1) - 100.0 * c.lr).abs() < 1e-15);
        let ok = TrainConfig::resolve(root, "demo", "demo", &[]).unwrap();
        // Unset objective keys stay out of config.json: run ids of older recipes are unchanged.
        let json = serde_json::to_value(&*ok).unwrap();
        assert!(json.get("margin").is_none() && json.get("classifier_lr_factor").is_none());
        assert_eq!(
            (ok.optimizer, ok.augment),
            (OptimizerChoice::Adam, AugmentChoice::RandomCrop)
        );
    }
}
