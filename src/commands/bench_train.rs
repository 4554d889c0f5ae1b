//! `gl bench train`: one training step — forward, Group Loss, backward, RAdam update, exactly
//! the trainer's [`Stepper::step`] — at the paper's CUB batch, per backbone, beside a
//! PyTorch-eager step (`tests/reference/train_step_ref.py bench`) on the same initial weights
//! and the same batch, timed in the same run; and the loader's throughput at the same input size,
//! so one line says whether the loader can keep the step fed.
//!
//! Same computation on both sides: the net is built here with a fixed seed and its variables are
//! written to a safetensors file the reference loads; the input batch (a real loader batch over
//! synthetic photographs) and its labels go to a second file. Before anything is timed, the loss
//! of the first step from those weights must agree to `--tolerance` (relative), or the command
//! fails with exit code 1. libtorch's generator is seeded identically on both sides before that
//! step, so stochastic layers (drop-connect) draw the same masks on CPU.

use crate::bench::profile::Profile;
use crate::bench::session::{take_turns, ReferenceSession};
use crate::bench::{median, median_seconds, print_speedups, Comparison, Reference};
use crate::cli::BenchTrainArgs;
use crate::commands::bench_loader::{cache_rows, crop_rows, loader_images_per_s, photo_sources};
use crate::data::crop_cache::CropRow;
use crate::data::loader::{self, LoaderParams, Mode};
use crate::loss::{Anchors, GroupLoss, GroupLossOptions};
use crate::model::net::{EmbeddingNet, HeadParams};
use crate::model::{BackboneSpec, ForwardMode};
use crate::stages::prepare::{prepare_image, PrepareParams};
use crate::train::criterion::Criterion;
use crate::train::epoch::{StepPhases, Stepper};
use crate::train::radam::{RAdam, RAdamParams};
use anyhow::{bail, ensure, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use tch::{nn, Device, Tensor};

/// Backbones benchmarked when `--backbones` is not given (unregistered ones are skipped).
pub const DEFAULT_BACKBONES: [&str; 2] = ["bn_inception", "efficientnet_lite0"];

/// Input side (and loader resize) where the benchmark departs from the registry's
/// `input_size`/`resize`: EfficientNet-Lite0 is trained at 64×64 by the demo
/// (pipeline/train.toml `[datasets.demo]`). Every other backbone runs at its registry size
/// (BN-Inception 227×227, as the paper).
pub const INPUT_SIZES: &[(&str, u32, u32)] = &[("efficientnet_lite0", 64, 72)];

/// The input side and resize of `spec` in this benchmark.
pub fn input_size(spec: &BackboneSpec) -> (u32, u32) {
    INPUT_SIZES
        .iter()
        .find(|(name, ..)| *name == spec.name)
        .map_or((spec.input_size, spec.resize), |&(_, s, r)| (s, r))
}

/// The paper's CUB step (official train.py): 6 classes × 9 samples, 2 anchors per class, τ = 24,
/// T = 1, a classifier over m = 100 training classes, RAdam with γ and λ as below.
pub mod cub {
    pub const CLASSES: usize = 6;
    pub const PER_CLASS: usize = 9;
    pub const BATCH: usize = CLASSES * PER_CLASS;
    pub const ANCHORS: i64 = 2;
    pub const TAU: f64 = 24.0;
    pub const REPLICATOR_STEPS: i64 = 1;
    pub const M: i64 = 100;
    pub const LR: f64 = 1.563663718906821e-4;
    pub const WEIGHT_DECAY: f64 = 6.059722614369727e-6;
}

/// Seed of the initial weights; seed of libtorch's generator before the first step.
const INIT_SEED: i64 = 0;
const STEP_SEED: i64 = 1;

/// Test hook: a τ passed to the reference only, so that the two sides compute different losses
/// and the agreement check must fail the command.
pub const FAULT_REFERENCE_TAU: &str = crate::env_vars::FAULT_REFERENCE_TAU;

#[derive(Debug)]
pub struct Settings {
    pub device: Device,
    pub backbones: Vec<&'static BackboneSpec>,
    /// Default backbones this build does not register.
    pub skipped: Vec<String>,
    pub steps: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub loader_threads: usize,
    pub loader_batches: usize,
    pub tolerance: f64,
    pub reference: Reference,
}

impl Settings {
    pub fn resolve(args: BenchTrainArgs) -> Result<Self> {
        let BenchTrainArgs {
            backbones,
            device,
            steps,
            warmup,
            rounds,
            loader_threads,
            loader_batches,
            tolerance,
            reference,
        } = args;
        ensure!(steps >= 1, "--steps must be ≥ 1");
        ensure!(rounds >= 1, "--rounds must be ≥ 1");
        ensure!(loader_threads >= 1, "--loader-threads must be ≥ 1");
        ensure!(loader_batches >= 1, "--loader-batches must be ≥ 1");
        ensure!(
            tolerance.is_finite() && tolerance >= 0.0,
            "--tolerance must be finite and ≥ 0"
        );
        let (mut specs, mut skipped) = (Vec::new(), Vec::new());
        match backbones {
            Some(names) => {
                for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                    specs.push(crate::model::spec(n)?);
                }
            }
            None => {
                for n in DEFAULT_BACKBONES {
                    match crate::model::spec(n) {
                        Ok(s) => specs.push(s),
                        Err(_) => skipped.push(n.to_string()),
                    }
                }
            }
        }
        ensure!(!specs.is_empty(), "no backbone to benchmark");
        Ok(Settings {
            device: device.resolve()?,
            backbones: specs,
            skipped,
            steps,
            warmup,
            rounds,
            loader_threads,
            loader_batches,
            tolerance,
            reference: Reference::resolve(reference)?,
        })
    }
}

/// The two sides' check steps differ: the comparison would not be of the same work.
#[derive(Debug, thiserror::Error)]
#[error(
    "{backbone}: {what} {ours} (gl) vs {theirs} (reference), relative difference {rel:.3e} > \
     {tolerance:.1e}: the two sides do not compute the same step, nothing was timed"
)]
pub struct Mismatch {
    pub backbone: String,
    /// `first-step loss` or `first-step update norm`.
    pub what: &'static str,
    pub ours: f64,
    pub theirs: f64,
    pub rel: f64,
    pub tolerance: f64,
}

/// One backbone's result.
#[derive(Debug)]
pub struct Outcome {
    pub comparison: Comparison,
    pub first_loss: (f64, f64),
    /// ‖θ₁ − θ₀‖ of the first step (ours, reference).
    pub first_update: (f64, f64),
    /// The loss after one RAdam update (ours, reference), when both sides ran ≥ 2 steps.
    pub second_loss: Option<(f64, f64)>,
    pub loader_images_per_s: f64,
    pub torch_version: String,
    /// Median seconds per phase of the timed steps (ours, reference).
    pub phases: (Profile, Profile),
}

pub fn run(s: Settings) -> Result<ExitCode> {
    let threads = tch::get_num_threads();
    let device_arg = match s.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    for name in &s.skipped {
        println!("note: backbone {name} is not registered in this build; skipped");
    }
    println!(
        "bench train: one step (forward, Group Loss, backward, RAdam) of {} classes × {} = {} \
         images, {} anchors, τ {}, T {}, m {}; f32, {device_arg}, {threads} threads, median of \
         {} rounds × {} steps (after the check step and {} warm-up)",
        cub::CLASSES,
        cub::PER_CLASS,
        cub::BATCH,
        cub::ANCHORS,
        cub::TAU,
        cub::REPLICATOR_STEPS,
        cub::M,
        s.rounds,
        s.steps,
        s.warmup
    );
    let dir = tempfile::tempdir()?;
    let rows = synthetic_cache(dir.path(), s.loader_batches)?;
    let mut comparisons = Vec::new();
    for spec in &s.backbones {
        let outcome = match bench_backbone(&s, spec, &rows, dir.path(), &device_arg, threads) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) if e.is::<Mismatch>() => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.context(format!("benchmarking {}", spec.name))),
        };
        let (size, _) = input_size(spec);
        let c = &outcome.comparison;
        let ips = |secs: f64| cub::BATCH as f64 / secs;
        let ((l, lr), (u, ur)) = (outcome.first_loss, outcome.first_update);
        let mut line = format!(
            "{} {size}×{size}: check step: loss {l:.6} (gl) {lr:.6} (reference, torch {}), \
             relative differences: loss {:.1e}, update norm {:.1e}",
            spec.name,
            outcome.torch_version,
            crate::bench::rel_diff(l, lr),
            crate::bench::rel_diff(u, ur)
        );
        if let Some((a, b)) = outcome.second_loss {
            line += &format!(", next step's loss {:.1e}", crate::bench::rel_diff(a, b));
        }
        println!("{line}");
        println!(
            "{} {size}×{size}: gl {:.1} ms/step {:.1} img/s   reference {:.1} ms/step {:.1} img/s",
            spec.name,
            c.ours_s * 1e3,
            ips(c.ours_s),
            c.reference_s * 1e3,
            ips(c.reference_s)
        );
        let (ours_p, theirs_p) = &outcome.phases;
        for line in Profile::table(&format!("{} {size}×{size}", spec.name), ours_p, theirs_p) {
            println!("{line}");
        }
        let ratio = outcome.loader_images_per_s / ips(c.ours_s);
        let verdict = if ratio >= 1.0 {
            "the loader can feed the step"
        } else {
            "the loader cannot feed the step: it is the bottleneck"
        };
        println!(
            "loader {:.0} img/s vs train step {:.0} img/s ({}, {size}×{size}, {} loader threads): \
             {verdict} (ratio {ratio:.2})",
            outcome.loader_images_per_s,
            ips(c.ours_s),
            spec.name,
            s.loader_threads
        );
        comparisons.push(outcome.comparison);
    }
    // What each objective costs beside the backbone, on the benchmark_demo network.
    match crate::project::Project::resolve(None, None)
        .and_then(|p| crate::train::config::TrainConfig::resolve(&p, "demo", "demo", &[]))
    {
        Ok(base) => crate::commands::bench_objectives::print(s.device, s.rounds, s.steps, &base)?,
        Err(e) => println!("note: objectives not timed (the demo recipe: {e:#})"),
    }
    print_speedups(&comparisons);
    Ok(ExitCode::SUCCESS)
}

/// Synthetic photographs prepared as `gl prepare` does, in a crop cache under `dir`: enough for
/// the loader measurement plus its warm-up batch.
fn synthetic_cache(dir: &Path, batches: usize) -> Result<Arc<Vec<CropRow>>> {
    let t = std::time::Instant::now();
    let sources = photo_sources((batches + 1) * cub::BATCH)?;
    let params = PrepareParams::default();
    let prepared = sources
        .par_iter()
        .map(|b| prepare_image(b, &params))
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    let rows = cache_rows(&crop_rows(prepared), &dir.join("crops.parquet"))?;
    tracing::info!(
        images = rows.len(),
        secs = t.elapsed().as_secs_f64(),
        "synthetic crop cache"
    );
    Ok(rows)
}

/// The step's labels: 6 distinct classes of 0..m (seeded), 9 contiguous samples each, as the
/// sampler lays out a batch.
fn batch_labels() -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    rand::seq::index::sample(&mut rng, cub::M as usize, cub::CLASSES)
        .into_iter()
        .flat_map(|c| std::iter::repeat_n(c as i64, cub::PER_CLASS))
        .collect()
}

/// Loader throughput, the step's input batch, the agreement check, then the alternating rounds.
/// `None` when the reference cannot build this backbone (it says why).
fn bench_backbone(
    s: &Settings,
    spec: &'static BackboneSpec,
    rows: &Arc<Vec<CropRow>>,
    dir: &Path,
    device_arg: &str,
    threads: i32,
) -> Result<Option<Outcome>> {
    let (size, resize) = input_size(spec);
    let lp = LoaderParams {
        crop: size,
        resize,
        normalize: spec.normalize,
        augment: crate::data::transform::Augment::PAPER,
        threads: s.loader_threads,
        prefetch: 4,
        seed: 0,
    };
    let batches: Vec<Vec<usize>> = loader::sequential(rows.len(), cub::BATCH)
        .into_iter()
        .filter(|b| b.len() == cub::BATCH)
        .collect();
    let loader_ips = loader_images_per_s(rows, &batches[1..], lp)?;
    tracing::info!(backbone = spec.name, images_per_s = loader_ips, "loader");
    let images = loader::stream(
        rows.clone(),
        batches[..1].to_vec(),
        Mode::Train { epoch: 0 },
        lp,
    )?
    .next()
    .context("the loader gave no batch")??
    .images;
    let labels = batch_labels();

    tch::manual_seed(INIT_SEED);
    let vs = nn::VarStore::new(s.device);
    let net = EmbeddingNet::new(
        &vs.root(),
        spec.name,
        HeadParams {
            embedding_dim: None,
            num_classes: cub::M,
            init: Default::default(),
        },
    )?;
    let weights = dir.join(format!("{}-weights.safetensors", spec.name));
    vs.save(&weights)
        .with_context(|| format!("writing {}", weights.display()))?;
    let inputs = dir.join(format!("{}-inputs.safetensors", spec.name));
    Tensor::write_safetensors(
        &[
            ("images", &images),
            ("labels", &Tensor::from_slice(&labels)),
        ],
        &inputs,
    )
    .with_context(|| format!("writing {}", inputs.display()))?;
    let images = images.to_device(s.device);

    let loss = GroupLoss::new(GroupLossOptions {
        tau: cub::TAU,
        steps: cub::REPLICATOR_STEPS,
        ..GroupLossOptions::default()
    })?;
    let mut opt = RAdam::new(
        vs.trainable_variables(),
        RAdamParams {
            lr: cub::LR,
            weight_decay: cub::WEIGHT_DECAY,
            ..RAdamParams::default()
        },
    )?;
    let criterion = Criterion::GroupLoss(loss, Anchors::first_k(cub::ANCHORS)?);
    let stepper = Stepper {
        net: &net,
        criterion: &criterion,
        mode: ForwardMode::TRAIN,
        device: s.device,
    };
    let mut anchor_rng = ChaCha8Rng::seed_from_u64(0); // unused by FirstK
    let mut profiles = Vec::new(); // every timed step's phases
    let mut step = |profiles: Option<&mut Vec<StepPhases>>| -> Result<f64> {
        let mut phases = StepPhases::default();
        let v = stepper.step_profiled(&mut opt, &images, &labels, &mut anchor_rng, &mut phases)?;
        ensure!(v.loss.is_finite(), "{}: the loss is {}", spec.name, v.loss);
        if let Some(p) = profiles {
            p.push(phases);
        }
        Ok(v.loss)
    };
    // The check step from the initial weights: its loss and the norm of its update.
    let params = vs.trainable_variables();
    let before: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    tch::manual_seed(STEP_SEED);
    let mut losses = vec![step(None)?]; // every step's loss, in order
    let update = crate::bench::update_norm(&params, &before);
    drop(before);

    let reference_tau = std::env::var(FAULT_REFERENCE_TAU)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(cub::TAU);
    let args = vec![
        "serve".to_string(),
        format!("--backbone={}", spec.name),
        format!("--weights={}", weights.display()),
        format!("--inputs={}", inputs.display()),
        format!("--steps={}", s.steps),
        format!("--warmup={}", s.warmup),
        format!("--threads={threads}"),
        format!("--device={device_arg}"),
        format!("--anchors={}", cub::ANCHORS),
        format!("--tau={reference_tau}"),
        format!("--replicator-steps={}", cub::REPLICATOR_STEPS),
        format!("--lr={}", cub::LR),
        format!("--weight-decay={}", cub::WEIGHT_DECAY),
        format!("--seed={STEP_SEED}"),
    ];
    let (mut session, ready) = ReferenceSession::start(&s.reference, "train_step_ref.py", &args)
        .context("starting the PyTorch-eager reference step")?;
    if let Some(why) = ready["skipped"].as_str() {
        println!(
            "note: {}: the reference cannot run it ({why}); skipped",
            spec.name
        );
        return Ok(None);
    }
    let torch_version = ready["torch"].as_str().unwrap_or("?").to_string();
    let first_reference = ready["first_loss"]
        .as_f64()
        .context("reference JSON has no first_loss")?;
    let update_reference = ready["first_update_norm"]
        .as_f64()
        .context("reference JSON has no first_update_norm")?;
    for (what, ours, theirs) in [
        ("first-step loss", losses[0], first_reference),
        ("first-step update norm", update, update_reference),
    ] {
        let rel = crate::bench::rel_diff(ours, theirs);
        if rel.is_nan() || rel > s.tolerance {
            bail!(Mismatch {
                backbone: spec.name.to_string(),
                what,
                ours,
                theirs,
                rel,
                tolerance: s.tolerance,
            });
        }
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut second_reference = None;
    let mut reference_profiles = Vec::new();
    let reference_round = || -> Result<()> {
        let reply = session.round().context("a round of the reference step")?;
        theirs.push(
            reply["step_s"]
                .as_f64()
                .context("reference JSON has no step_s")?,
        );
        reference_profiles.push(Profile::from_json(&reply["phases_s"])?);
        if second_reference.is_none() {
            second_reference = reply["losses"][0].as_f64();
        }
        Ok(())
    };
    let our_round = || -> Result<()> {
        let mut timed = 0;
        ours.push(median_seconds(s.device, s.warmup, s.steps, || {
            let record = (timed >= s.warmup).then_some(&mut profiles);
            timed += 1;
            losses.push(step(record)?);
            Ok(())
        })?);
        Ok(())
    };
    take_turns(s.rounds, reference_round, our_round)?;
    drop(session);
    print_round_ratios(spec.name, &theirs, &ours);
    Ok(Some(Outcome {
        comparison: Comparison {
            name: format!("train_step_{}", spec.name),
            ours_s: median(&mut ours),
            reference_s: median(&mut theirs),
        },
        first_loss: (losses[0], first_reference),
        first_update: (update, update_reference),
        second_loss: second_reference.map(|r| (losses[1], r)),
        phases: (
            Profile::median(&profiles.iter().map(Profile::from).collect::<Vec<_>>()),
            Profile::median(&reference_profiles),
        ),
        loader_images_per_s: loader_ips,
        torch_version,
    }))
}

/// Each round's reference / gl ratio, in order: how much of the final ratio is the machine.
fn print_round_ratios(backbone: &str, theirs: &[f64], ours: &[f64]) {
    let ratios: Vec<String> = theirs
        .iter()
        .zip(ours)
        .map(|(t, o)| format!("{:.3}", t / o))
        .collect();
    println!(
        "{backbone}: per round, reference / gl: {}",
        ratios.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_six_distinct_classes_of_nine_contiguous_samples() {
        let labels = batch_labels();
        assert_eq!(labels.len(), cub::BATCH);
        let classes: Vec<i64> = labels.chunks(cub::PER_CLASS).map(|c| c[0]).collect();
        for (chunk, c) in labels.chunks(cub::PER_CLASS).zip(&classes) {
            assert!(chunk.iter().all(|l| l == c), "{labels:?}");
        }
        let distinct: std::collections::HashSet<_> = classes.iter().collect();
        assert_eq!(distinct.len(), cub::CLASSES);
        assert!(classes.iter().all(|&c| (0..cub::M).contains(&c)));
    }

    #[test]
    fn input_sizes_follow_the_registry_unless_tabled() {
        let spec = |n| crate::model::spec(n).unwrap();
        assert_eq!(input_size(spec("bn_inception")), (227, 256));
        assert_eq!(input_size(spec("tiny_cnn")), (32, 36));
        for (name, s, r) in INPUT_SIZES {
            if let Ok(sp) = crate::model::spec(name) {
                assert_eq!(input_size(sp), (*s, *r));
            }
        }
    }
}
