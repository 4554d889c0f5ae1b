//! `gl bench epoch`: a whole training epoch of the demo recipe as a user feels it — the
//! trainer's own [`train_epoch`] with the loader on worker threads overlapping the steps — beside
//! the same epoch written as a PyTorch training loop (`tests/reference/epoch_ref.py bench`: a
//! `DataLoader` with worker processes over the same crop cache, `torch.optim.Adam`, eval-mode
//! BatchNorm), timed in the same run.
//!
//! The recipe is `pipeline/train.toml` `[datasets.demo]` + profile `demo` (EfficientNet-Lite0 at
//! 64×64 from its ImageNet weights, 8 classes × 6 samples, Group Loss τ 10 with 2 anchors, Adam
//! at 1e-4 with the classifier at 1e-3, BatchNorm frozen, random crop, 2 loader threads),
//! resolved, prepared and built by the trainer's code: [`Inputs::prepare`] (the crop cache,
//! prepared if missing, and the splits), [`Trainee::build`] (the seeded network with its
//! initial weights and the optimiser's two groups), [`epoch::epoch_batches`] and
//! [`Criterion::new`].
//!
//! Same work on both sides: the reference loads the initial variables `gl` writes to a
//! safetensors file and gets a plan (JSON) naming the crop cache file, the recipe, and every
//! epoch's batches (image ids, as `gl`'s sampler drew them) with libtorch's seed for it. Before
//! anything is timed, a check batch — the first batch of epoch 1 through the loader's eval
//! transform, so no random crop — must agree: the reference's own decode of those images within
//! [`PIXEL_TOLERANCE`] (mean absolute difference; the JPEG decoders differ slightly), and one
//! training step on `gl`'s check images from the initial weights, its loss and ‖θ₁ − θ₀‖ to
//! `--tolerance`; otherwise the command exits 1. The epochs' mean losses are compared loosely
//! only: the two sides draw their random crops from different generators.
//!
//! Timing: after the check (its own reference process), one long-lived reference (`epoch_ref.py
//! serve`, [`ReferenceSession`]) and ours take turns, who goes first alternating from round to
//! round, each training `--epochs` epochs from the initial weights per round; an epoch's wall
//! time runs from starting the loader (workers included) to the end of its last step. Medians
//! over rounds. Each side also splits its epochs into waiting for the loader and stepping: ours
//! from [`epoch::train_epoch`]'s own clocks ([`epoch::EpochLosses::loader_wait`]), the
//! reference's around each `next()` of its `DataLoader` iterator.

mod check;
mod plan;

use crate::bench::session::{take_turns, ReferenceSession};
use crate::bench::{median, print_speedups, Comparison, Reference};
use crate::cli::BenchEpochArgs;
use crate::commands::bench_train::Mismatch;
use crate::data::loader::LoaderParams;
use crate::model::ForwardMode;
use crate::project::Project;
use crate::stages::train::inputs::Inputs;
use crate::stages::train::trainee::Trainee;
use crate::stages::train::Settings as TrainSettings;
use crate::train::config::{BatchNormMode, CheckedConfig, Objective, TrainConfig};
use crate::train::criterion::Criterion;
use crate::train::epoch::{self, EpochInputs};
use crate::train::run_dir::RunDir;
use anyhow::{ensure, Context, Result};
use check::{check_step, compare_check, PixelMismatch};
use plan::{backbone_name, key, plan_json, reference_times};
use std::process::ExitCode;
use std::time::Instant;
use tch::Device;

/// The dataset and profile whose recipe is benchmarked.
pub const DATASET: &str = "demo";
pub const PROFILE: &str = "demo";
/// The run's seed (sampler, loader, libtorch), as `gl train`'s default `--seed`.
const SEED: u64 = 0;
/// libtorch's seed before the check step (drop-connect masks, identical on both sides on CPU).
const CHECK_SEED: i64 = 1;
/// Largest accepted mean absolute difference, in normalised input units, between the two
/// loaders' eval transform of the check batch: zune-jpeg and libjpeg-turbo differ by a mean of
/// about 0.4 of 255 (0.003 after EfficientNet-Lite's `/128`); a wrong crop offset or
/// normalisation differs by tenths.
pub const PIXEL_TOLERANCE: f64 = 0.05;

/// What to do when the demo's inputs are missing.
const PREREQUISITES: &str = "the demo's dataset and initial weights: run `just demo` first (or \
                             `gl fetch demo` and `gl weights efficientnet_lite0_imagenet`); the \
                             crop cache is prepared here if missing";

#[derive(Debug)]
pub struct Settings {
    pub project: Project,
    pub config: CheckedConfig,
    pub device: Device,
    pub epochs: usize,
    pub rounds: usize,
    pub tolerance: f64,
    pub reference: Reference,
}

impl Settings {
    pub fn resolve(args: BenchEpochArgs, project: Project) -> Result<Self> {
        let BenchEpochArgs {
            epochs,
            rounds,
            loader_threads,
            device,
            tolerance,
            reference,
        } = args;
        ensure!(epochs >= 1, "--epochs must be ≥ 1");
        ensure!(rounds >= 1, "--rounds must be ≥ 1");
        ensure!(
            tolerance.is_finite() && tolerance >= 0.0,
            "--tolerance must be finite and ≥ 0"
        );
        let overrides: Vec<String> = match loader_threads {
            Some(n) => {
                ensure!(n >= 1, "--loader-threads must be ≥ 1");
                vec![format!("loader_threads={n}")]
            }
            None => Vec::new(),
        };
        let config = TrainConfig::resolve(&project, DATASET, PROFILE, &overrides)
            .with_context(|| format!("the {DATASET} recipe, profile {PROFILE}"))?;
        ensure!(
            config.objective == Objective::GroupLoss,
            "the {DATASET} recipe's objective is {:?}; the reference trains the Group Loss only",
            config.objective
        );
        Ok(Settings {
            project,
            config,
            device: device.resolve()?,
            epochs,
            rounds,
            tolerance,
            reference: Reference::resolve(reference)?,
        })
    }
}

/// One side's epochs in one round.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochTimes {
    pub seconds: f64,
    pub images: usize,
    /// Mean loss over the round's batches (epochs weighted by their batches).
    pub loss: f64,
    /// Seconds waiting for the loader (its start-up included), and in the steps.
    pub wait: f64,
    pub step: f64,
    /// Seconds from starting the first epoch's loader to its first batch.
    pub first_batch: f64,
}

impl EpochTimes {
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-12)
    }
}

/// One number of an [`EpochTimes`].
type Field = fn(&EpochTimes) -> f64;

pub fn run(s: Settings) -> Result<ExitCode> {
    let cfg: &TrainConfig = &s.config;
    let threads = tch::get_num_threads();
    let device_arg = crate::device::name(s.device);
    let dir = tempfile::tempdir()?;
    let ts = TrainSettings {
        project: s.project.clone(),
        dataset: crate::names::Name::new(crate::names::Kind::Dataset, DATASET)?,
        profile: PROFILE.to_string(),
        config: s.config.clone(),
        seed: SEED,
        device: s.device,
        execution: crate::numerics::Execution::new(
            &device_arg,
            crate::numerics::Kernels::in_effect(),
            threads,
        ),
        run_id: "bench-epoch".to_string(),
        run_dir: dir.path().join("run"),
        resume: false,
        progress: false,
    };
    let inputs = Inputs::prepare(&ts).context(PREREQUISITES)?;
    let run_dir = RunDir::new(ts.run_dir.clone());
    let build = || Trainee::build(&ts, &inputs, &run_dir, None).context(PREREQUISITES);
    let criterion = Criterion::new(cfg)?;
    let epochs: Vec<usize> = (1..=s.epochs).collect();
    let batches = epochs
        .iter()
        .map(|&e| {
            epoch::epoch_batches(
                cfg,
                &inputs.splits.train,
                &inputs.splits.train_labels,
                SEED,
                e,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let first_batch = batches[0]
        .first()
        .context("epoch 1 has no batch: too few training images for the sampler")?
        .clone();
    let per_epoch: usize = batches[0].iter().map(Vec::len).sum();
    println!(
        "bench epoch: the {DATASET} recipe (pipeline/train.toml [datasets.{DATASET}] + profile \
         {PROFILE}): {} {}×{} (resize {}), init {}, {} classes × {} samples, Group Loss τ {} T {}, \
         {} anchors, {} lr {:e} (classifier {:e}), batchnorm {}, augment {}, memory format {}, \
         autocast {}; {} training images, {} batches = {per_epoch} images in epoch 1; {} loader \
         threads, {threads} torch threads, {device_arg}; {} epoch(s) per round, {} rounds \
         taking turns with one long-lived reference",
        cfg.backbone,
        cfg.input_size,
        cfg.input_size,
        cfg.resize,
        cfg.init,
        cfg.classes_per_batch,
        cfg.samples_per_class,
        cfg.tau,
        cfg.replicator_steps,
        cfg.anchors,
        key(cfg.optimizer),
        cfg.lr_at(1),
        cfg.classifier_lr_at(1),
        key(cfg.batchnorm),
        key(cfg.augment),
        key(cfg.memory_format),
        key(cfg.autocast),
        inputs.splits.train.len(),
        batches[0].len(),
        cfg.loader_threads,
        s.epochs,
        s.rounds,
    );

    // The reference's inputs: initial variables, the check batch, the plan.
    let trainee = build()?;
    let lp = crate::stages::train::trainee::loader(cfg, &trainee.net, SEED);
    let weights = dir.path().join("weights.safetensors");
    crate::train::checkpoint::save_variables(&trainee.vs, &weights)?;
    let check_file = dir.path().join("check.safetensors");
    let ours_check = check_step(
        &s,
        trainee,
        &criterion,
        &inputs,
        &first_batch,
        lp,
        &check_file,
    )?;
    let plan = plan_json(
        &s,
        &inputs,
        &backbone_name(cfg)?,
        lp,
        &epochs,
        &batches,
        threads,
    )?;
    let plan_file = dir.path().join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(&plan)?)
        .with_context(|| format!("writing {}", plan_file.display()))?;
    let args = |cmd: &str| {
        vec![
            cmd.to_string(),
            format!("--plan={}", plan_file.display()),
            format!("--weights={}", weights.display()),
        ]
    };

    // The check, in a reference process of its own (untimed).
    let mut check_args = args("bench");
    check_args.push(format!("--check={}", check_file.display()));
    let reply = s
        .reference
        .run_json("epoch_ref.py", &check_args)
        .context("running the PyTorch reference's check step")?;
    if let Some(why) = reply["skipped"].as_str() {
        println!("note: the reference cannot run ({why}); nothing timed");
        return Ok(ExitCode::SUCCESS);
    }
    let torch_version = reply["torch"].as_str().unwrap_or("?").to_string();
    if let Err(e) = compare_check(&s, &ours_check, &reply["check"], &torch_version) {
        if e.is::<Mismatch>() || e.is::<PixelMismatch>() {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
        return Err(e);
    }

    // The timed rounds: one long-lived reference taking turns with ours, who goes first
    // alternating (src/bench/session.rs).
    // (A network the reference cannot build was reported "skipped" by the check above.)
    let (mut session, _) = ReferenceSession::start(&s.reference, "epoch_ref.py", &args("serve"))
        .context("starting the PyTorch reference epoch")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let reference_round = || -> Result<()> {
        let reply = session
            .round()
            .context("a round of the PyTorch reference epoch")?;
        theirs.push(reference_times(&reply["epochs"])?);
        Ok(())
    };
    let our_side = || -> Result<()> {
        let mut t = build()?;
        ours.push(our_round(&s, &inputs, &mut t, &criterion, lp, &batches)?);
        Ok(())
    };
    take_turns(s.rounds, reference_round, our_side)?;
    drop(session);
    let med = |v: &[EpochTimes], f: Field| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let (o, r) = (
        EpochTimes {
            seconds: med(&ours, |t| t.seconds),
            wait: med(&ours, |t| t.wait),
            step: med(&ours, |t| t.step),
            first_batch: med(&ours, |t| t.first_batch),
            ..ours[0]
        },
        EpochTimes {
            seconds: med(&theirs, |t| t.seconds),
            wait: med(&theirs, |t| t.wait),
            step: med(&theirs, |t| t.step),
            first_batch: med(&theirs, |t| t.first_batch),
            ..theirs[0]
        },
    );
    let reference_name = format!("reference (torch {torch_version})");
    for (name, t) in [("gl", &o), (reference_name.as_str(), &r)] {
        println!(
            "{name:<30} {:>7.1} img/s  {:>8.2} s for {} images (median of {} rounds)  mean \
             loss {:.4}",
            t.images_per_s(),
            t.seconds,
            t.images,
            s.rounds,
            t.loss
        );
    }
    let list = |v: &[EpochTimes]| {
        v.iter()
            .map(|t| format!("{:.2}", t.seconds))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "seconds per round, in order: gl {} | reference {}",
        list(&ours),
        list(&theirs)
    );
    println!(
        "mean loss: gl {:.4} vs reference {:.4}, relative difference {:.1e} (a loose check only: \
         the two sides' random crops come from different generators)",
        o.loss,
        r.loss,
        crate::bench::rel_diff(o.loss, r.loss)
    );
    let fmt =
        |t: Option<&EpochTimes>, f: Field| t.map_or("-".to_string(), |t| format!("{:.2}", f(t)));
    println!(
        "{:<49} {:>10} {:>10}",
        "phases (seconds per round, medians)", "gl", "reference"
    );
    let rows: [(&str, Field); 4] = [
        ("loader start-up (1st batch)", |t| t.first_batch),
        ("waiting for the loader", |t| t.wait),
        ("in the step", |t| t.step),
        ("epoch", |t| t.seconds),
    ];
    for (name, f) in rows {
        println!(
            "  {name:<47} {:>10} {:>10}",
            fmt(Some(&o), f),
            fmt(Some(&r), f)
        );
    }
    println!(
        "  (each side clocks its own timed rounds: gl's train_epoch around each wait for the \
         loader's next batch, the reference around each next(iter(DataLoader)); waiting \
         includes the loader's start-up)"
    );
    print_speedups(&[Comparison {
        name: "epoch".to_string(),
        ours_s: o.seconds,
        reference_s: r.seconds,
    }]);
    Ok(ExitCode::SUCCESS)
}

/// How `train_epoch` runs the forward for this recipe.
fn forward_mode(cfg: &TrainConfig) -> ForwardMode {
    match cfg.batchnorm {
        BatchNormMode::Train => ForwardMode::TRAIN,
        BatchNormMode::Frozen => ForwardMode::TRAIN_FROZEN_BN,
    }
}

/// One round of ours: every epoch of `batches` from `t`'s (initial) weights, as
/// `Trainee::epoch` trains one (the epoch's lr for each group, libtorch's seed, the batches,
/// then [`epoch::train_epoch`], whose own clocks give the loader wait and the first batch).
fn our_round(
    s: &Settings,
    inputs: &Inputs,
    t: &mut Trainee,
    criterion: &Criterion,
    lp: LoaderParams,
    batches: &[Vec<Vec<usize>>],
) -> Result<EpochTimes> {
    let cfg: &TrainConfig = &s.config;
    let mut out = EpochTimes::default();
    let mut steps = 0;
    for (k, bs) in batches.iter().enumerate() {
        let e = k + 1;
        t.opt.set_group_lr(0, cfg.lr_at(e))?;
        t.opt.set_group_lr(1, cfg.classifier_lr_at(e))?;
        tch::manual_seed(epoch::torch_seed(SEED, e));
        crate::device::synchronize(s.device);
        let start = Instant::now();
        let l = epoch::train_epoch(
            EpochInputs {
                cfg,
                net: &t.net,
                criterion,
                rows: &inputs.rows,
                label_of: &inputs.label_of,
                batches: bs.clone(),
                loader: lp,
                device: s.device,
                epoch: e,
                step_offset: steps,
                progress: false,
                on_step: None,
            },
            &mut t.opt,
        )?;
        crate::device::synchronize(s.device);
        let seconds = start.elapsed().as_secs_f64();
        out.seconds += seconds;
        out.wait += l.loader_wait;
        out.step += seconds - l.loader_wait;
        if k == 0 {
            out.first_batch = l.first_batch;
        }
        out.images += l.images;
        out.loss += l.loss * l.batches as f64;
        steps += l.batches;
    }
    out.loss /= steps.max(1) as f64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_epochs_are_summed_and_the_loss_weighted_by_batches() {
        let reply = serde_json::json!([
            {"seconds": 2.0, "images": 96, "batches": 2, "loss": 1.0, "wait_s": 0.5,
             "step_s": 1.5, "first_batch_s": 0.4},
            {"seconds": 1.0, "images": 48, "batches": 1, "loss": 4.0, "wait_s": 0.25,
             "step_s": 0.75, "first_batch_s": 0.3},
        ]);
        let t = reference_times(&reply).unwrap();
        assert_eq!(t.seconds, 3.0);
        assert_eq!(t.images, 144);
        assert_eq!(t.loss, 2.0);
        assert_eq!((t.wait, t.step, t.first_batch), (0.75, 2.25, 0.4));
        assert_eq!(t.images_per_s(), 48.0);
    }

    #[test]
    fn a_reply_without_epochs_is_an_error() {
        assert!(reference_times(&serde_json::json!({})).is_err());
        let missing = serde_json::json!([{"seconds": 1.0}]);
        assert!(reference_times(&missing).is_err());
    }

    #[test]
    fn relative_difference() {
        assert_eq!(crate::bench::rel_diff(1.5, 1.0), 0.5);
        assert!(crate::bench::rel_diff(f64::NAN, 1.0).is_nan());
    }
}
