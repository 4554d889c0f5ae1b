//! One training epoch: the epoch's batches from the sampler, the loader on worker threads,
//! forward → objective → backward → RAdam step per batch, a progress bar with loss, lr and
//! images/s. Everything random is a function of (seed, epoch): the sampler's RNG, the loader's
//! per-image RNGs and libtorch's generator (drop-connect), so an epoch replays exactly on
//! `--resume`.

use crate::data::crop_cache::CropRow;
use crate::data::loader::{self, LoaderParams, Mode};
use crate::data::sampler::{self, SamplerKind, SamplerParams};
use crate::model::net::EmbeddingNet;
use crate::model::ForwardMode;
use crate::train::config::{SamplerChoice, TrainConfig};
use crate::train::criterion::Criterion;
use crate::train::radam::RAdam;
use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

/// Environment variable of the fault-injection hook the NaN test uses: the loss of the first
/// step of this (1-based) epoch is replaced by NaN, as a diverging run would produce it.
pub const FAULT_NAN_AT_EPOCH: &str = crate::env_vars::FAULT_NAN_AT_EPOCH;

/// The RNG of one epoch's sampler: a function of (seed, epoch) only.
pub fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    rng
}

/// libtorch's generator seed for an epoch (drop-connect, dropout).
pub fn torch_seed(seed: u64, epoch: usize) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) & 0x7FFF_FFFF_FFFF_FFFF) as i64
}

/// The epoch's batches as indices into the cached rows, and each batch position's classifier
/// label.
pub fn epoch_batches(
    cfg: &TrainConfig,
    train: &[usize],
    train_labels: &[i64],
    seed: u64,
    epoch: usize,
) -> Result<Vec<Vec<usize>>> {
    let mut rng = epoch_rng(seed, epoch);
    let positions: Vec<Vec<usize>> = match cfg.sampler {
        SamplerChoice::Random => {
            let mut order: Vec<usize> = (0..train.len()).collect();
            order.shuffle(&mut rng);
            // drop_last, as the official loaders
            order
                .chunks_exact(cfg.batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        }
        kind => sampler::epoch(&sampler_params(cfg, kind)?, train_labels, &mut rng)?,
    };
    Ok(positions
        .into_iter()
        .map(|b| b.into_iter().map(|p| train[p]).collect())
        .collect())
}

/// The class-balanced sampler's parameters of a recipe (`kind` not `Random`).
fn sampler_params(cfg: &TrainConfig, kind: SamplerChoice) -> Result<SamplerParams> {
    let kind = match kind {
        SamplerChoice::Official => SamplerKind::Official,
        _ => SamplerKind::Corrected,
    };
    Ok(SamplerParams::new(
        cfg.classes_per_batch,
        cfg.samples_per_class,
        kind,
    )?)
}

/// Checks, before any epoch is spent, that the recipe's sampler draws at least one batch from
/// the training split; otherwise an error naming the keys that do not fit, their values and
/// what the split has. How many batches an epoch has does not depend on the RNG, so one check
/// answers for every epoch.
pub fn check_batches(cfg: &TrainConfig, train_labels: &[i64]) -> Result<()> {
    let images = train_labels.len();
    let mut sizes: HashMap<i64, usize> = HashMap::new();
    for l in train_labels {
        *sizes.entry(*l).or_default() += 1;
    }
    let classes = sizes.len();
    let (p, k) = (cfg.classes_per_batch, cfg.samples_per_class);
    let split = format!("{classes} classes, {images} images");
    match cfg.sampler {
        SamplerChoice::Random => ensure!(
            images >= cfg.batch_size,
            "no batch can be drawn: `batch_size` = {} needs at least {} training images; the \
             training split has {images} ({classes} classes)",
            cfg.batch_size,
            cfg.batch_size
        ),
        SamplerChoice::Corrected => ensure!(
            classes >= p,
            "no batch can be drawn: `classes_per_batch` = {p} needs {p} distinct training \
             classes (`samples_per_class` = {k} images each, topped up where a class has \
             fewer); the training split has {classes} classes ({images} images)"
        ),
        SamplerChoice::Official => {
            // Batches of one run each: the runs an epoch draws from (a batch takes P).
            let one = SamplerParams {
                classes_per_batch: 1,
                ..sampler_params(cfg, SamplerChoice::Official)?
            };
            let runs = match train_labels.is_empty() {
                true => 0,
                false => sampler::batches_per_epoch(&one, train_labels)?,
            };
            let full = sizes.values().filter(|&&s| s >= k).count();
            ensure!(
                runs >= p,
                "no batch can be drawn: a batch takes `classes_per_batch` = {p} runs of \
                 `samples_per_class` = {k} images of one class, and the training split gives \
                 the official sampler {runs} runs ({full} classes with at least {k} images, of \
                 {split})"
            );
        }
    }
    Ok(())
}

/// Means over an epoch's batches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochLosses {
    pub loss: f64,
    pub loss_group: f64,
    pub loss_ce: f64,
    pub batches: usize,
    pub images: usize,
    pub seconds: f64,
    /// Seconds the step waited for the loader (its start-up included): the hand-off's cost.
    pub loader_wait: f64,
    /// Seconds from the epoch's start to its first batch.
    pub first_batch: f64,
}

/// The losses of one training step, read back from the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepValues {
    /// The minimised loss; non-finite means the step was refused (weights untouched).
    pub loss: f64,
    /// The Group Loss part and the cross-entropy part (0 for objectives without them).
    pub loss_group: f64,
    pub loss_ce: f64,
}

/// One completed training step, as [`train_epoch`] reports it to its caller (the run's
/// TensorBoard log): nothing here feeds back into training.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The run's step count (1-based, across epochs).
    pub step: usize,
    pub values: StepValues,
    /// γ of each optimiser group during the step.
    pub lrs: Vec<f64>,
    /// Wall seconds of the step (forward, loss read back, backward, update).
    pub seconds: f64,
    /// Wall seconds the step waited for its batch.
    pub loader_wait: f64,
}

/// Wall seconds of one step's phases, each closed by a device synchronisation: what
/// `gl bench train` prints beside the same phases of the PyTorch-eager step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepPhases {
    /// Zeroing the gradients (part of the optimiser's work, as `opt.zero_grad()` in PyTorch).
    pub zero_grad: f64,
    /// The batch handed to the device (`to_device`; a no-op copy on the CPU).
    pub handoff: f64,
    /// Backbone, embedding and classifier forward.
    pub forward: f64,
    /// The objective and reading the loss back to the host.
    pub loss: f64,
    pub backward: f64,
    /// The optimiser update.
    pub optimizer: f64,
}

impl StepPhases {
    /// Names and values in step order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("zero_grad", self.zero_grad),
            ("handoff", self.handoff),
            ("forward", self.forward),
            ("loss", self.loss),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
        ]
    }

    /// Sum of the phases.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }
}

/// Times phases when asked to, synchronising the device at each boundary; does nothing (and
/// never synchronises) otherwise, so the trainer's steps keep their asynchrony on a GPU.
struct PhaseClock<'p> {
    out: Option<&'p mut StepPhases>,
    device: Device,
    last: Instant,
}

impl<'p> PhaseClock<'p> {
    fn new(out: Option<&'p mut StepPhases>, device: Device) -> Self {
        if out.is_some() {
            crate::device::synchronize(device);
        }
        PhaseClock {
            out,
            device,
            last: Instant::now(),
        }
    }

    /// Closes the phase `field` selects.
    fn lap(&mut self, field: fn(&mut StepPhases) -> &mut f64) {
        if let Some(out) = self.out.as_deref_mut() {
            crate::device::synchronize(self.device);
            let now = Instant::now();
            *field(out) = now.duration_since(self.last).as_secs_f64();
            self.last = now;
        }
    }
}

/// One training step as the trainer runs it (and `gl bench train` times it): zero the
/// gradients, forward, objective, read the loss back, then backward and the RAdam update —
/// unless the loss is not finite, in which case the weights are left untouched.
pub struct Stepper<'a> {
    pub net: &'a EmbeddingNet,
    pub criterion: &'a Criterion,
    pub mode: ForwardMode,
    pub device: Device,
}

impl Stepper<'_> {
    /// One step on `images` (moved to the device) with classifier labels `labels`.
    /// `poison` replaces the loss by NaN (the fault-injection hook of the NaN test).
    pub fn step(
        &self,
        opt: &mut RAdam,
        images: &Tensor,
        labels: &[i64],
        anchor_rng: &mut ChaCha8Rng,
        poison: bool,
    ) -> Result<StepValues> {
        self.run(opt, images, labels, anchor_rng, poison, None)
    }

    /// [`Stepper::step`], also recording each phase's wall time in `phases` (the device is
    /// synchronised between phases, which a GPU step otherwise avoids).
    pub fn step_profiled(
        &self,
        opt: &mut RAdam,
        images: &Tensor,
        labels: &[i64],
        anchor_rng: &mut ChaCha8Rng,
        phases: &mut StepPhases,
    ) -> Result<StepValues> {
        self.run(opt, images, labels, anchor_rng, false, Some(phases))
    }

    fn run(
        &self,
        opt: &mut RAdam,
        images: &Tensor,
        labels: &[i64],
        anchor_rng: &mut ChaCha8Rng,
        poison: bool,
        phases: Option<&mut StepPhases>,
    ) -> Result<StepValues> {
        let mut clock = PhaseClock::new(phases, self.device);
        opt.zero_grad();
        clock.lap(|p| &mut p.zero_grad);
        let xs = images.to_device(self.device);
        clock.lap(|p| &mut p.handoff);
        let out = self.net.forward(&xs, self.mode);
        clock.lap(|p| &mut p.forward);
        let terms = self.criterion.terms(
            &out,
            self.net.classifier_weight(),
            labels,
            self.device,
            anchor_rng,
        )?;
        let (loss, group, ce) = (terms.loss, terms.group, terms.ce);
        let value = if poison {
            f64::NAN
        } else {
            loss.double_value(&[])
        };
        clock.lap(|p| &mut p.loss);
        if !value.is_finite() {
            return Ok(StepValues {
                loss: value,
                loss_group: f64::NAN,
                loss_ce: f64::NAN,
            });
        }
        loss.backward();
        clock.lap(|p| &mut p.backward);
        opt.step()?;
        clock.lap(|p| &mut p.optimizer);
        Ok(StepValues {
            loss: value,
            loss_group: group.map_or(0.0, |g| g.double_value(&[])),
            loss_ce: ce.map_or(0.0, |c| c.double_value(&[])),
        })
    }
}

/// Everything one epoch reads (`'f`: the step observer's borrow, apart from the inputs' so
/// that a caller can lend a closure of its own).
pub struct EpochInputs<'a, 'f> {
    pub cfg: &'a TrainConfig,
    pub net: &'a EmbeddingNet,
    pub criterion: &'a Criterion,
    pub rows: &'a Arc<Vec<CropRow>>,
    /// Dataset class id → classifier label (the training classes only).
    pub label_of: &'a HashMap<i64, i64>,
    pub batches: Vec<Vec<usize>>,
    pub loader: LoaderParams,
    pub device: Device,
    pub epoch: usize,
    /// Steps completed before this epoch (step numbers in messages count the whole run).
    pub step_offset: usize,
    pub progress: bool,
    /// Hears of every completed step (after its update), if set.
    pub on_step: Option<&'f mut dyn FnMut(&StepRecord)>,
}

/// Trains one epoch. A non-finite loss stops it with an error naming the epoch and step,
/// before that step touches the weights.
pub fn train_epoch(mut inp: EpochInputs<'_, '_>, opt: &mut RAdam) -> Result<EpochLosses> {
    let start = Instant::now();
    let cfg = inp.cfg;
    let mode = match cfg.batchnorm {
        crate::train::config::BatchNormMode::Train => ForwardMode::TRAIN,
        crate::train::config::BatchNormMode::Frozen => ForwardMode::TRAIN_FROZEN_BN,
    };
    let fault = std::env::var(FAULT_NAN_AT_EPOCH)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(inp.epoch);
    let n_batches = inp.batches.len();
    let bar = crate::progress::items(
        inp.progress,
        n_batches as u64,
        &format!("epoch {}", inp.epoch),
    );
    let lr = opt.group_lr(0)?;
    let lrs = (0..opt.num_groups())
        .map(|g| opt.group_lr(g))
        .collect::<Result<Vec<f64>, _>>()?;
    let stream = loader::stream(
        Arc::clone(inp.rows),
        inp.batches,
        Mode::Train {
            epoch: inp.epoch as u64,
        },
        inp.loader,
    )?;
    let mut sums = EpochLosses::default();
    let mut anchor_rng = epoch_rng(u64::MAX, inp.epoch); // unused by FirstK; kept seeded
    let stepper = Stepper {
        net: inp.net,
        criterion: inp.criterion,
        mode,
        device: inp.device,
    };
    let mut stream = stream.enumerate();
    loop {
        // A SIGTERM/SIGINT stops here, between steps: nothing of this epoch is committed yet,
        // so the run resumes from its last checkpoint.
        crate::interrupt::check().with_context(|| format!("epoch {}", inp.epoch))?;
        let waited = Instant::now();
        let next = stream.next();
        let wait = waited.elapsed().as_secs_f64();
        sums.loader_wait += wait;
        let Some((b, batch)) = next else { break };
        let batch = batch.with_context(|| format!("epoch {}: loading batch {b}", inp.epoch))?;
        if b == 0 {
            sums.first_batch = start.elapsed().as_secs_f64();
        }
        let labels = batch
            .labels
            .iter()
            .map(|c| {
                inp.label_of
                    .get(c)
                    .copied()
                    .with_context(|| format!("class {c} is not a training class"))
            })
            .collect::<Result<Vec<i64>>>()?;
        let step = inp.step_offset + b + 1;
        let step_start = Instant::now();
        let v = stepper.step(
            opt,
            &batch.images,
            &labels,
            &mut anchor_rng,
            fault && b == 0,
        )?;
        let value = v.loss;
        if !value.is_finite() {
            bar.abandon();
            bail!(
                "the loss is {value} at epoch {} step {step} (batch {}/{n_batches}); stopping \
                 before this step changes the weights — lower the lr, check the inputs, or \
                 resume from the last checkpoint",
                inp.epoch,
                b + 1
            );
        }
        if let Some(f) = inp.on_step.as_deref_mut() {
            f(&StepRecord {
                step,
                values: v,
                lrs: lrs.clone(),
                seconds: step_start.elapsed().as_secs_f64(),
                loader_wait: wait,
            });
        }
        sums.loss += value;
        sums.loss_group += v.loss_group;
        sums.loss_ce += v.loss_ce;
        sums.batches += 1;
        sums.images += labels.len();
        bar.inc(1);
        let ips = sums.images as f64 / start.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "epoch {} loss {:.4} lr {lr:.2e} {ips:.0} img/s",
            inp.epoch,
            sums.loss / sums.batches as f64
        ));
    }
    bar.finish_and_clear();
    if sums.batches == 0 {
        bail!(
            "epoch {} had no batches: too few training images for the sampler",
            inp.epoch
        );
    }
    let n = sums.batches as f64;
    sums.loss /= n;
    sums.loss_group /= n;
    sums.loss_ce /= n;
    sums.seconds = start.elapsed().as_secs_f64();
    Ok(sums)
}
