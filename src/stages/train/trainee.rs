//! The network being trained and everything that moves with it: its variables, the RAdam
//! optimiser with its two parameter groups, the committed state and the epoch records —
//! built fresh (seeded, initial weights) or restored from the last commit, each restored file
//! checked against its recorded digest. [`Trainee::epoch`] trains and evaluates one epoch.

use super::inputs::Inputs;
use super::Settings;
use crate::data::crop_cache::CropRow;
use crate::data::loader::LoaderParams;
use crate::data::transform::Augment;
use crate::eval::{embed, retrieval};
use crate::loss::proxy_anchor::ProxyAnchorLoss;
use crate::model::net::EmbeddingNet;
use crate::train::config::{AugmentChoice, EpochEval, Objective, OptimizerChoice, TrainConfig};
use crate::train::criterion::Criterion;
use crate::train::epoch::{self, EpochInputs, StepRecord};
use crate::train::init;
use crate::train::radam::{RAdam, RAdamParams};
use crate::train::run_dir::{EpochRecord, RunDir, RunState, Untrained};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Instant;
use tch::nn;

/// What an epoch measures on one split.
struct SplitRetrieval {
    /// Recall@K as fractions, in the order of the recipe's `recall_ks` (those below the size).
    recall: Vec<f64>,
    /// `None` when no image has another of its class.
    map_at_r: Option<f64>,
}

pub struct Trainee {
    pub vs: nn::VarStore,
    pub net: EmbeddingNet,
    pub opt: RAdam,
    pub state: RunState,
    pub records: Vec<EpochRecord>,
    /// Optimiser steps taken so far (the loader's and the loss's step counter).
    steps: usize,
}

impl Trainee {
    /// The network of run `s` (seeded), with its initial weights or those of the last commit
    /// in `dir` (`state`), and its optimiser at the epoch after it.
    pub fn build(
        s: &Settings,
        inputs: &Inputs,
        dir: &RunDir,
        state: Option<RunState>,
    ) -> Result<Self> {
        let cfg = &s.config;
        tch::manual_seed(epoch::torch_seed(s.seed, 0));
        let mut vs = nn::VarStore::new(s.device);
        let classes = inputs.splits.num_classes();
        let mut net = EmbeddingNet::new(&vs.root(), &cfg.backbone, cfg.head(classes))?;
        let mut opt_params = RAdamParams {
            lr: cfg.lr,
            eps: cfg.adam_eps,
            weight_decay: cfg.weight_decay,
            rectify: cfg.optimizer == OptimizerChoice::Radam,
            ..Default::default()
        };
        opt_params.validate()?;
        let (state, records) = match state {
            Some(st) => restore_model(&mut vs, dir, st)?,
            None => {
                init::initialise(&vs, cfg, &s.project)?;
                if cfg.objective == Objective::ProxyAnchor && !cfg.init.starts_with("run:") {
                    // The paper's proxy initialisation, seeded as the rest of the network.
                    let mut proxies = net.classifier_weight().shallow_clone();
                    ProxyAnchorLoss::init_proxies(&mut proxies);
                }
                (RunState::default(), Vec::new())
            }
        };
        // Before the optimiser takes the variables, as `model.to(memory_format=…)` in PyTorch.
        crate::model::execution::convert_variables(&vs, cfg.memory_format);
        net.set_execution(cfg.execution());
        opt_params.lr = cfg.lr_at(state.epoch + 1);
        let (body, head) = param_groups(&vs);
        let mut opt = RAdam::new(body, opt_params)?;
        opt.add_group(head, cfg.classifier_lr_at(state.epoch + 1))?;
        if state.epoch > 0 {
            let path =
                state.verified(dir, &format!("{}/optimizer.safetensors", state.checkpoint))?;
            let named = tch::Tensor::read_safetensors(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            opt.load_state(&named)
                .with_context(|| format!("restoring {}", path.display()))?;
        }
        let steps = records.iter().map(|r| r.batches).sum::<usize>();
        Ok(Trainee {
            vs,
            net,
            opt,
            state,
            records,
            steps,
        })
    }

    /// Epoch `e`: the official reload of the selected model at an lr drop, the epoch's lr,
    /// seed and batches, training (each step reported to `on_step`), then validation and test
    /// Recall@K where due.
    pub fn epoch(
        &mut self,
        s: &Settings,
        inputs: &Inputs,
        dir: &RunDir,
        criterion: &Criterion,
        e: usize,
        on_step: Option<&mut dyn FnMut(&StepRecord)>,
    ) -> Result<EpochRecord> {
        let cfg = &s.config;
        let mut reloaded_from = None;
        if cfg.reload_best_at_lr_drop && cfg.is_lr_drop(e) {
            if let (Some(file), Some(ep)) = (&self.state.selected, self.state.selected_epoch) {
                self.vs
                    .load(self.state.verified(dir, file)?)
                    .with_context(|| format!("reloading the selected model {file}"))?;
                reloaded_from = Some(ep);
            }
        }
        let lr = cfg.lr_at(e);
        self.opt.set_group_lr(0, lr)?;
        self.opt.set_group_lr(1, cfg.classifier_lr_at(e))?;
        tch::manual_seed(epoch::torch_seed(s.seed, e));
        let splits = &inputs.splits;
        let batches = epoch::epoch_batches(cfg, &splits.train, &splits.train_labels, s.seed, e)?;
        let losses = epoch::train_epoch(
            EpochInputs {
                cfg,
                net: &self.net,
                criterion,
                rows: &inputs.rows,
                label_of: &inputs.label_of,
                batches,
                loader: loader(cfg, &self.net, s.seed),
                device: s.device,
                epoch: e,
                step_offset: self.steps,
                progress: s.progress,
                on_step,
            },
            &mut self.opt,
        )
        .with_context(|| {
            format!(
                "run {} (last good checkpoint: {})",
                s.run_id,
                self.last_good(dir)
            )
        })?;
        self.steps += losses.batches;
        let eval_start = Instant::now();
        let evaluate = e.is_multiple_of(cfg.eval_every) || e == cfg.epochs;
        let retrieval = |idx: &[usize]| match evaluate {
            true => self.retrieval_of(s, &inputs.rows, idx),
            false => Ok(None),
        };
        let val = retrieval(&splits.val).context("validation")?;
        let test = match cfg.epoch_eval {
            EpochEval::ValAndTest => retrieval(&splits.test).context("test")?,
            EpochEval::Val => None,
        };
        Ok(EpochRecord {
            epoch: e,
            lr,
            loss: losses.loss,
            loss_group: losses.loss_group,
            loss_ce: losses.loss_ce,
            batches: losses.batches,
            images: losses.images,
            train_seconds: losses.seconds,
            eval_seconds: eval_start.elapsed().as_secs_f64(),
            images_per_second: losses.images as f64 / losses.seconds.max(1e-9),
            val_recall: val.as_ref().map(|m| m.recall.clone()),
            test_recall: test.as_ref().map(|m| m.recall.clone()),
            reloaded_from,
            val_map_at_r: val.and_then(|m| m.map_at_r),
            test_map_at_r: test.and_then(|m| m.map_at_r),
        })
    }

    /// The untrained network's Recall@K on validation and test.
    pub fn untrained(&self, s: &Settings, inputs: &Inputs) -> Result<Untrained> {
        let t = Instant::now();
        let rows = &inputs.rows;
        let recall = |idx: &[usize]| -> Result<Option<Vec<f64>>> {
            Ok(self.retrieval_of(s, rows, idx)?.map(|m| m.recall))
        };
        Ok(Untrained {
            val_recall: recall(&inputs.splits.val)?,
            test_recall: recall(&inputs.splits.test)?,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Recall@K (the configured K below the set's size) and MAP@R of `idx`, from one embedding
    /// of it and one neighbour search, or `None` for an empty set.
    fn retrieval_of(
        &self,
        s: &Settings,
        rows: &Arc<Vec<CropRow>>,
        idx: &[usize],
    ) -> Result<Option<SplitRetrieval>> {
        if idx.is_empty() {
            return Ok(None);
        }
        let cfg = &s.config;
        let params = loader(cfg, &self.net, s.seed);
        let emb = embed::embed(&self.net, rows, idx, cfg.eval_batch, params, s.device)?;
        let ks: Vec<usize> = cfg
            .recall_ks
            .iter()
            .copied()
            .filter(|&k| k < emb.labels.len())
            .collect();
        // MAP@R searches the R nearest (R up to the largest class − 1) where Recall@K needs
        // only max K; the neighbours are ordered by a total key, so Recall@K is the same.
        let p = retrieval::RetrievalParams {
            recall_ks: ks,
            map_at_r: true,
            ..Default::default()
        };
        let r = retrieval::evaluate(&emb.features, &emb.labels, &p)?;
        Ok(Some(SplitRetrieval {
            recall: r.recall.into_iter().map(|(_, v)| v).collect(),
            map_at_r: r.map_at_r,
        }))
    }

    fn last_good(&self, dir: &RunDir) -> String {
        match self.state.epoch {
            0 => "none".to_string(),
            _ => dir.root.join(&self.state.checkpoint).display().to_string(),
        }
    }
}

/// The model and epoch records of the last commit, checked against the recorded digest.
fn restore_model(
    vs: &mut nn::VarStore,
    dir: &RunDir,
    st: RunState,
) -> Result<(RunState, Vec<EpochRecord>)> {
    let model = st.verified(dir, &format!("{}/model.safetensors", st.checkpoint))?;
    vs.load(&model)
        .with_context(|| format!("loading {}", model.display()))?;
    let records = dir.epochs(Some(st.epoch))?;
    if records.len() != st.epoch {
        bail!(
            "{}: {} epoch records for {} completed epochs",
            dir.epochs_path().display(),
            records.len(),
            st.epoch
        );
    }
    Ok((st, records))
}

/// The loader of the run: the recipe's crop, resize and augmentation, the network's input
/// normalisation, seeded by the run's seed.
pub(crate) fn loader(cfg: &TrainConfig, net: &EmbeddingNet, seed: u64) -> LoaderParams {
    LoaderParams {
        crop: cfg.input_size,
        resize: cfg.resize,
        normalize: net.spec().normalize,
        augment: Augment {
            scale: (cfg.crop_scale_min, 1.0),
            hflip: cfg.hflip,
            shift_only: cfg.augment == AugmentChoice::RandomCrop,
        },
        threads: cfg.loader_threads,
        prefetch: cfg.prefetch,
        seed,
    }
}

/// Trainable variables in name order: everything but the classifier, then the classifier (its
/// own RAdam group, for `classifier_lr`). Name order keeps the optimiser state's layout the same
/// in every process, which `--resume` relies on.
fn param_groups(vs: &nn::VarStore) -> (Vec<tch::Tensor>, Vec<tch::Tensor>) {
    let mut named: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let (head, body): (Vec<_>, Vec<_>) = named
        .into_iter()
        .partition(|(n, _)| n.starts_with("classifier."));
    let strip = |v: Vec<(String, tch::Tensor)>| v.into_iter().map(|(_, t)| t).collect();
    (strip(body), strip(head))
}
