//! `gl train`: a whole run from the resolved configuration to the run directory — crops
//! prepared (idempotent), class-disjoint splits, the network and its initial weights, RAdam,
//! then per epoch: train, evaluate validation and test Recall@K, checkpoint (atomic), update the
//! selected model, commit `state.json`. `--resume` continues from the last commit exactly.

use crate::data::crop_cache;
use crate::data::loader::LoaderParams;
use crate::data::transform::Augment;
use crate::eval::{embed, retrieval};
use crate::loss::group_loss::{GroupLoss, GroupLossOptions};
use crate::model::net::EmbeddingNet;
use crate::project::Project;
use crate::stages::prepare;
use crate::train::config::{AugmentChoice, OptimizerChoice, Selection, TrainConfig};
use crate::train::epoch::{self, EpochInputs};
use crate::train::init;
use crate::train::radam::{RAdam, RAdamParams};
use crate::train::run_dir::{
    Best, EpochRecord, RunConfig, RunDir, RunState, RunSummary, Untrained,
};
use crate::train::split;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device};

/// Resolved settings of one `gl train` invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub dataset: String,
    pub profile: String,
    pub config: TrainConfig,
    pub seed: u64,
    pub device: Device,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub progress: bool,
}

/// What a finished `gl train` hands back.
#[derive(Debug)]
pub struct Outcome {
    pub run_dir: RunDir,
    pub epochs: Vec<EpochRecord>,
    pub summary: RunSummary,
}

/// Called after every committed epoch (the command indexes the run in the catalogue there).
pub type OnEpoch<'a> = &'a mut dyn FnMut(&RunDir) -> Result<()>;

/// Runs (or resumes) the training run `s` describes, as the run directory's one writer
/// ([`RunDir::lock`]); a run that fails records why in `failed.json` (cleared when it is
/// resumed), so the catalogue can tell a failed run from one still running or killed.
pub fn run(s: &Settings, on_epoch: OnEpoch<'_>) -> Result<Outcome> {
    let run_dir = RunDir::new(s.run_dir.clone());
    let _writer = run_dir.lock()?;
    run_dir.clear_failure()?;
    let out = run_locked(s, on_epoch);
    if let Err(e) = &out {
        run_dir.record_failure(e);
    }
    out
}

fn run_locked(s: &Settings, on_epoch: OnEpoch<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let cfg = &s.config;
    cfg.validate()?;
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
    let run_dir = RunDir::new(s.run_dir.clone());
    let run_config = RunConfig {
        run_id: s.run_id.clone(),
        dataset: s.dataset.clone(),
        profile: s.profile.clone(),
        seed: s.seed,
        device: format!("{:?}", s.device).to_lowercase(),
        train: cfg.clone(),
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
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let state = open_run_dir(&run_dir, &run_config, s.resume)?;
    if let Some(st) = state.as_ref().filter(|st| st.epoch >= cfg.epochs) {
        if run_dir.summary_path().exists() {
            // `--resume` of a finished run: nothing to do, its record stays as it was.
            return Ok(Outcome {
                epochs: run_dir.epochs(Some(st.epoch))?,
                summary: RunDir::read_json(&run_dir.summary_path())?,
                run_dir,
            });
        }
    }

    tch::manual_seed(epoch::torch_seed(s.seed, 0));
    let mut vs = nn::VarStore::new(s.device);
    let net = EmbeddingNet::new(&vs.root(), &cfg.backbone, cfg.head(splits.num_classes()))?;
    let mut opt_params = RAdamParams {
        lr: cfg.lr,
        eps: cfg.adam_eps,
        weight_decay: cfg.weight_decay,
        rectify: cfg.optimizer == OptimizerChoice::Radam,
        ..Default::default()
    };
    opt_params.validate()?;
    let mut records = Vec::new();
    let mut state = match state {
        Some(st) => {
            let model = st.verified(&run_dir, &format!("{}/model.safetensors", st.checkpoint))?;
            vs.load(&model)
                .with_context(|| format!("loading {}", model.display()))?;
            records = run_dir.epochs(Some(st.epoch))?;
            if records.len() != st.epoch {
                bail!(
                    "{}: {} epoch records for {} completed epochs",
                    run_dir.epochs_path().display(),
                    records.len(),
                    st.epoch
                );
            }
            st
        }
        None => {
            init::initialise(&vs, cfg, &s.project)?;
            RunState {
                epoch: 0,
                checkpoint: String::new(),
                selected: None,
                selected_epoch: None,
                best_val: None,
                best_test: None,
                sha256: Default::default(),
            }
        }
    };
    opt_params.lr = cfg.lr_at(state.epoch + 1);
    let (body, head) = param_groups(&vs);
    let mut opt = RAdam::new(body, opt_params)?;
    opt.add_group(head, cfg.classifier_lr_at(state.epoch + 1))?;
    if state.epoch > 0 {
        let path = state.verified(
            &run_dir,
            &format!("{}/optimizer.safetensors", state.checkpoint),
        )?;
        let named = tch::Tensor::read_safetensors(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        opt.load_state(&named)
            .with_context(|| format!("restoring {}", path.display()))?;
    }
    let loss = GroupLoss::new(GroupLossOptions {
        tau: cfg.tau,
        steps: cfg.replicator_steps,
        ce_weight: cfg.ce_weight,
        zero_diagonal: cfg.zero_diagonal,
        ..Default::default()
    })?;
    let label_of: HashMap<i64, i64> = splits
        .train_classes
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as i64))
        .collect();
    let loader = |seed| LoaderParams {
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
    };
    if state.epoch == 0 && cfg.eval_untrained && !run_dir.untrained_path().exists() {
        let t = Instant::now();
        let val = recall_of(&net, &rows, &splits.val, cfg, loader(s.seed), s.device)?;
        let test = recall_of(&net, &rows, &splits.test, cfg, loader(s.seed), s.device)?;
        let rec = Untrained {
            val_recall: val,
            test_recall: test,
            seconds: t.elapsed().as_secs_f64(),
        };
        eprintln!("{}", untrained_line(&rec, &cfg.recall_ks));
        run_dir.write_json(&run_dir.untrained_path(), &rec)?;
    }
    let mut steps = records.iter().map(|r| r.batches).sum::<usize>();
    for e in state.epoch + 1..=cfg.epochs {
        let mut reloaded_from = None;
        if cfg.reload_best_at_lr_drop && cfg.is_lr_drop(e) {
            if let (Some(file), Some(ep)) = (&state.selected, state.selected_epoch) {
                vs.load(state.verified(&run_dir, file)?)
                    .with_context(|| format!("reloading the selected model {file}"))?;
                reloaded_from = Some(ep);
            }
        }
        let lr = cfg.lr_at(e);
        opt.set_group_lr(0, lr)?;
        opt.set_group_lr(1, cfg.classifier_lr_at(e))?;
        tch::manual_seed(epoch::torch_seed(s.seed, e));
        let batches = epoch::epoch_batches(cfg, &splits.train, &splits.train_labels, s.seed, e)?;
        let losses = epoch::train_epoch(
            EpochInputs {
                cfg,
                net: &net,
                loss: &loss,
                rows: &rows,
                label_of: &label_of,
                batches,
                loader: loader(s.seed),
                device: s.device,
                epoch: e,
                step_offset: steps,
                progress: s.progress,
            },
            &mut opt,
        )
        .with_context(|| {
            format!(
                "run {} (last good checkpoint: {})",
                s.run_id,
                if state.epoch == 0 {
                    "none".to_string()
                } else {
                    run_dir.root.join(&state.checkpoint).display().to_string()
                }
            )
        })?;
        steps += losses.batches;
        let eval_start = Instant::now();
        let evaluate = e % cfg.eval_every == 0 || e == cfg.epochs;
        let recall_of = |idx: &[usize]| match evaluate {
            true => recall_of(&net, &rows, idx, cfg, loader(s.seed), s.device),
            false => Ok(None),
        };
        let val_recall = recall_of(&splits.val).context("validation")?;
        let test_recall = recall_of(&splits.test).context("test")?;
        let record = EpochRecord {
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
            val_recall,
            test_recall,
            reloaded_from,
        };
        tracing::info!(?record, "epoch done");
        eprintln!("{}", epoch_line(&record, &cfg.recall_ks));
        commit_epoch(&run_dir, &vs, &opt, cfg.selection, &mut state, &record)?;
        records.push(record);
        run_dir.write_epochs(&records)?;
        run_dir.write_json(&run_dir.state_path(), &state)?;
        run_dir.prune(&state)?;
        on_epoch(&run_dir)?;
    }
    let untrained: Option<Untrained> = match run_dir.untrained_path().exists() {
        true => Some(RunDir::read_json(&run_dir.untrained_path())?),
        false => None,
    };
    let mut summary = summarise(cfg, &records, &state, started.elapsed().as_secs_f64());
    summary.test_recall_untrained = untrained.as_ref().and_then(|u| u.test_recall.clone());
    summary.val_recall_untrained = untrained.and_then(|u| u.val_recall);
    run_dir.write_json(&run_dir.summary_path(), &summary)?;
    on_epoch(&run_dir)?;
    Ok(Outcome {
        run_dir,
        epochs: records,
        summary,
    })
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

/// Recall@K of `idx` (the configured K below the set's size), or `None` for an empty set.
fn recall_of(
    net: &EmbeddingNet,
    rows: &Arc<Vec<crop_cache::CropRow>>,
    idx: &[usize],
    cfg: &TrainConfig,
    loader: LoaderParams,
    device: Device,
) -> Result<Option<Vec<f64>>> {
    if idx.is_empty() {
        return Ok(None);
    }
    let emb = embed::embed(net, rows, idx, cfg.eval_batch, loader, device)?;
    let ks: Vec<usize> = cfg
        .recall_ks
        .iter()
        .copied()
        .filter(|&k| k < emb.labels.len())
        .collect();
    retrieval::recall_at_k(&emb.features, &emb.labels, &ks).map(Some)
}

/// Creates the run directory, or checks that a resumed one is the same run.
fn open_run_dir(dir: &RunDir, cfg: &RunConfig, resume: bool) -> Result<Option<RunState>> {
    let path = dir.config_path();
    if !path.exists() {
        std::fs::create_dir_all(&dir.root)
            .with_context(|| format!("creating {}", dir.root.display()))?;
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
    let same = |a: &RunConfig| {
        (
            &a.dataset,
            a.seed,
            &a.train,
            &a.crops_key,
            &a.dataset_fingerprint,
        ) == (
            &cfg.dataset,
            cfg.seed,
            &cfg.train,
            &cfg.crops_key,
            &cfg.dataset_fingerprint,
        )
    };
    if !same(&old) {
        let a = serde_json::to_value(&old.train)?;
        let b = serde_json::to_value(&cfg.train)?;
        let keys: Vec<String> = a
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        bail!(
            "{} describes another run (differs in: {}); resume with the same dataset, profile, \
             seed and overrides",
            path.display(),
            if keys.is_empty() {
                "dataset, seed or crop cache".to_string()
            } else {
                keys.join(", ")
            }
        );
    }
    if old.device != cfg.device {
        tracing::warn!(
            "resuming a {} run on {}: metrics will not be bit-identical",
            old.device,
            cfg.device
        );
    }
    dir.state()
}

/// Writes the epoch's checkpoint and, if this epoch is the best so far under the selection
/// rule, the selected model; updates `state` (not yet written: the caller commits it).
fn commit_epoch(
    dir: &RunDir,
    vs: &nn::VarStore,
    opt: &RAdam,
    selection: Selection,
    state: &mut RunState,
    rec: &EpochRecord,
) -> Result<()> {
    let name = RunDir::checkpoint_name(rec.epoch);
    let tmp = dir.root.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    vs.save(tmp.join("model.safetensors"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    tch::Tensor::write_safetensors(&opt.state_tensors(), tmp.join("optimizer.safetensors"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    let final_dir = dir.root.join(&name);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming into {}", final_dir.display()))?;
    state.epoch = rec.epoch;
    state.checkpoint = name.clone();
    for file in ["model.safetensors", "optimizer.safetensors"] {
        state.commit_file(dir, &format!("{name}/{file}"))?;
    }
    crate::fsutil::sync_dir(&final_dir)?;

    let r1 = |r: &Option<Vec<f64>>| r.as_ref().and_then(|v| v.first().copied());
    let improve = |best: &mut Option<Best>, value: Option<f64>| -> bool {
        match value {
            Some(v) if best.is_none_or(|b| v > b.recall_at_1) => {
                *best = Some(Best {
                    epoch: rec.epoch,
                    recall_at_1: v,
                });
                true
            }
            _ => false,
        }
    };
    let val_better = improve(&mut state.best_val, r1(&rec.val_recall));
    let test_better = improve(&mut state.best_test, r1(&rec.test_recall));
    let select = match selection {
        Selection::Val => val_better,
        Selection::Test => test_better,
        Selection::Last => true,
    };
    if select {
        let file = RunDir::selected_name(rec.epoch);
        let tmp = dir.root.join(format!("{file}.tmp.safetensors"));
        vs.save(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.root.join(&file))
            .with_context(|| format!("renaming into {file}"))?;
        state.commit_file(dir, &file)?;
        state.selected = Some(file);
        state.selected_epoch = Some(rec.epoch);
    }
    state.forget_stale();
    // The state that names these files is written next: their directory entries first.
    crate::fsutil::sync_dir(&dir.root)
}

fn summarise(cfg: &TrainConfig, recs: &[EpochRecord], st: &RunState, secs: f64) -> RunSummary {
    let test_at = |ep: Option<usize>| {
        ep.and_then(|e| recs.iter().find(|r| r.epoch == e))
            .and_then(|r| r.test_recall.clone())
    };
    RunSummary {
        status: "completed".into(),
        epochs: recs.len(),
        selection: serde_json::to_value(cfg.selection)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        selected_epoch: st.selected_epoch,
        test_recall_last: recs.last().and_then(|r| r.test_recall.clone()),
        test_recall_val_selected: test_at(st.best_val.map(|b| b.epoch)),
        test_recall_best_on_test: test_at(st.best_test.map(|b| b.epoch)),
        test_recall_untrained: None,
        val_recall_untrained: None,
        seconds: secs,
    }
}

fn untrained_line(u: &Untrained, ks: &[usize]) -> String {
    let fmt = |v: &Option<Vec<f64>>| {
        v.as_ref().map_or("-".to_string(), |v| {
            ks.iter()
                .zip(v)
                .map(|(k, x)| format!("R@{k} {:.2}", 100.0 * x))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    format!(
        "untrained  | val {} | test {}  ({:.1}s)",
        fmt(&u.val_recall),
        fmt(&u.test_recall),
        u.seconds
    )
}

/// One line per epoch on stderr.
pub fn epoch_line(r: &EpochRecord, ks: &[usize]) -> String {
    let fmt = |name: &str, v: &Option<Vec<f64>>| match v {
        Some(v) => {
            let parts: Vec<String> = ks
                .iter()
                .zip(v)
                .map(|(k, x)| format!("R@{k} {:.2}", 100.0 * x))
                .collect();
            format!(" | {name} {}", parts.join(" "))
        }
        None => String::new(),
    };
    format!(
        "epoch {:>3}  loss {:.4} (group {:.4}, ce {:.4})  lr {:.3e}  {:.0} img/s  {:.1}s + eval {:.1}s{}{}",
        r.epoch,
        r.loss,
        r.loss_group,
        r.loss_ce,
        r.lr,
        r.images_per_second,
        r.train_seconds,
        r.eval_seconds,
        fmt("val", &r.val_recall),
        fmt("test", &r.test_recall)
    )
}
