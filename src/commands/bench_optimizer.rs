//! `gl bench optimizer`: one RAdam step over a backbone's trainable parameters (BN-Inception and
//! a classifier over the paper's m = 100 CUB classes by default) with the paper's CUB
//! hyper-parameters, f32, beside `torch.optim.RAdam` with `foreach=True` and `foreach=False`
//! (`tests/reference/optimizer_ref.py bench`) on the same tensors, timed in the same run.
//!
//! Same computation on both sides: the parameters and their fixed gradients are drawn here
//! (seeded) in the shapes of the network's trainable variables and written to a safetensors
//! file the reference reads. Each side first runs `--check-steps` steps and measures its update
//! norm ‖θ_C − θ_0‖; both of the reference's must agree with ours to `--tolerance`
//! (relative), or the command fails with exit code 1 before anything is timed. The timed steps
//! reuse the fixed gradients (no backward), so only the optimiser is measured. The speedup is
//! against the faster of the two PyTorch implementations.

use crate::bench::session::{take_turns, ReferenceSession};
use crate::bench::{median, median_seconds, print_speedups, Comparison, Reference};
use crate::cli::BenchOptimizerArgs;
use crate::commands::bench_train::cub;
use crate::model::net::{EmbeddingNet, HeadParams};
use crate::train::radam::{Layout, RAdam, RAdamParams};
use anyhow::{bail, ensure, Context, Result};
use std::process::ExitCode;
use tch::{nn, Device, Kind, Tensor};

/// Seed of the parameters and gradients.
const SEED: i64 = 0;

#[derive(Debug)]
pub struct Settings {
    pub device: Device,
    pub backbone: &'static str,
    pub classes: i64,
    pub steps: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub check_steps: usize,
    pub tolerance: f64,
    pub reference: Reference,
}

impl Settings {
    pub fn resolve(args: BenchOptimizerArgs) -> Result<Self> {
        let BenchOptimizerArgs {
            backbone,
            classes,
            device,
            steps,
            warmup,
            rounds,
            check_steps,
            tolerance,
            reference,
        } = args;
        ensure!(steps >= 1, "--steps must be ≥ 1");
        ensure!(rounds >= 1, "--rounds must be ≥ 1");
        ensure!(check_steps >= 1, "--check-steps must be ≥ 1");
        ensure!(classes >= 1, "--classes must be ≥ 1");
        ensure!(
            tolerance.is_finite() && tolerance >= 0.0,
            "--tolerance must be finite and ≥ 0"
        );
        Ok(Settings {
            device: device.resolve()?,
            backbone: crate::model::spec(&backbone)?.name,
            classes,
            steps,
            warmup,
            rounds,
            check_steps,
            tolerance,
            reference: Reference::resolve(reference)?,
        })
    }
}

/// The two sides' update norms after the check steps disagree.
#[derive(Debug, thiserror::Error)]
#[error(
    "update norm after {steps} steps: {ours} (gl) vs {theirs} (torch.optim.RAdam, {which}), \
     relative difference {rel:.3e} > {tolerance:.1e}: the two sides do not compute the same \
     step, nothing was timed"
)]
pub struct Mismatch {
    pub steps: usize,
    /// `foreach=True` or `foreach=False`.
    pub which: &'static str,
    pub ours: f64,
    pub theirs: f64,
    pub rel: f64,
    pub tolerance: f64,
}

/// `Ok` when `ours` and `theirs` agree to `tolerance` (relative), a [`Mismatch`] otherwise
/// (NaN included).
fn check(
    steps: usize,
    which: &'static str,
    ours: f64,
    theirs: f64,
    tolerance: f64,
) -> Result<(), Mismatch> {
    let rel = crate::bench::rel_diff(ours, theirs);
    if rel.is_nan() || rel > tolerance || !ours.is_finite() {
        return Err(Mismatch {
            steps,
            which,
            ours,
            theirs,
            rel,
            tolerance,
        });
    }
    Ok(())
}

/// The trainable variables' shapes of `backbone` + a classifier over `classes`, in the
/// optimiser's order.
fn trainable_shapes(backbone: &str, classes: i64) -> Result<Vec<Vec<i64>>> {
    let vs = nn::VarStore::new(Device::Cpu);
    EmbeddingNet::new(
        &vs.root(),
        backbone,
        HeadParams {
            embedding_dim: None,
            num_classes: classes,
            init: Default::default(),
        },
    )?;
    Ok(vs.trainable_variables().iter().map(Tensor::size).collect())
}

/// Our optimiser in `layout` over copies of `params0` on the device, each with its fixed
/// gradient from `grads0` (the backward of Σ θ·g, whose gradient is g exactly).
fn build(
    params0: &[Tensor],
    grads0: &[Tensor],
    device: Device,
    layout: Layout,
) -> Result<(Vec<Tensor>, RAdam)> {
    let params: Vec<Tensor> = params0
        .iter()
        // A copy: on the CPU `to_device` returns the tensor itself, and the multi-tensor layout
        // rebinds the storage of what it is given.
        .map(|p| p.to_device(device).copy().set_requires_grad(true))
        .collect();
    let opt = RAdam::new(
        params.iter().map(Tensor::shallow_clone).collect(),
        RAdamParams {
            lr: cub::LR,
            weight_decay: cub::WEIGHT_DECAY,
            layout,
            ..RAdamParams::default()
        },
    )?;
    let surrogate = params
        .iter()
        .zip(grads0)
        .map(|(p, g)| (p * g.to_device(device)).sum(Kind::Float))
        .reduce(|a, b| a + b)
        .context("no trainable parameters")?;
    surrogate.backward();
    Ok((params, opt))
}

/// The median seconds of one side (`foreach` or `single`) of a round's reply.
fn step_seconds(reply: &serde_json::Value, key: &str) -> Result<f64> {
    reply[key]["step_s"]
        .as_f64()
        .with_context(|| format!("reference JSON has no {key}.step_s"))
}

pub fn run(s: Settings) -> Result<ExitCode> {
    match bench(&s) {
        Err(e) if e.is::<Mismatch>() => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

fn bench(s: &Settings) -> Result<ExitCode> {
    let threads = tch::get_num_threads();
    let device_arg = match s.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let shapes = trainable_shapes(s.backbone, s.classes)?;
    let numel: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    println!(
        "bench optimizer: one RAdam step (γ {:e}, λ {:e} L2) over the {} trainable tensors \
         ({numel} parameters) of {} + a classifier over {} classes, fixed gradients; f32, \
         {device_arg}, {threads} threads, median of {} rounds × {} steps (after {} check and {} \
         warm-up steps)",
        cub::LR,
        cub::WEIGHT_DECAY,
        shapes.len(),
        s.backbone,
        s.classes,
        s.rounds,
        s.steps,
        s.check_steps,
        s.warmup
    );

    tch::manual_seed(SEED);
    let opts = (Kind::Float, Device::Cpu);
    let params0: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(s, opts)).collect();
    let grads0: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(s, opts)).collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tensors.safetensors");
    let named: Vec<(String, &Tensor)> = params0
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("p{i:04}"), p))
        .chain(
            grads0
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("g{i:04}"), g)),
        )
        .collect();
    Tensor::write_safetensors(&named, &file)
        .with_context(|| format!("writing {}", file.display()))?;

    // Ours: the check steps from the initial parameters, then the timed steps continue.
    let mut sides = Vec::new();
    for layout in [Layout::MultiTensor, Layout::PerTensor] {
        let (params, mut opt) = build(&params0, &grads0, s.device, layout)?;
        let start: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
        for _ in 0..s.check_steps {
            opt.step()?;
        }
        let norm = crate::bench::update_norm(&params, &start);
        sides.push((layout, params, opt, norm));
    }
    drop((params0, grads0));
    let ours_norm = sides[0].3;

    let args = vec![
        "serve".to_string(),
        format!("--tensors={}", file.display()),
        format!("--steps={}", s.steps),
        format!("--warmup={}", s.warmup),
        format!("--check-steps={}", s.check_steps),
        format!("--threads={threads}"),
        format!("--device={device_arg}"),
        format!("--lr={}", cub::LR),
        format!("--weight-decay={}", cub::WEIGHT_DECAY),
    ];
    let (mut session, ready) = ReferenceSession::start(&s.reference, "optimizer_ref.py", &args)
        .context("starting the torch.optim.RAdam reference")?;
    let torch_version = ready["torch"].as_str().unwrap_or("?").to_string();
    let norm = |key: &str| {
        ready[key]["update_norm"]
            .as_f64()
            .with_context(|| format!("reference JSON has no {key}.update_norm"))
    };
    let reference_norms = (norm("foreach")?, norm("single")?);
    for (what, theirs) in [
        ("foreach=True", reference_norms.0),
        ("foreach=False", reference_norms.1),
    ] {
        check(s.check_steps, what, ours_norm, theirs, s.tolerance)?;
    }
    // Rounds take turns with the long-lived reference, who goes first alternating, so drift in
    // the machine's speed hits both alike.
    let (mut multi, mut per, mut foreach, mut single) = (vec![], vec![], vec![], vec![]);
    let reference_round = || -> Result<()> {
        let reply = session.round().context("a round of the RAdam reference")?;
        foreach.push(step_seconds(&reply, "foreach")?);
        single.push(step_seconds(&reply, "single")?);
        Ok(())
    };
    let our_round = || -> Result<()> {
        for (layout, _, opt, _) in &mut sides {
            let t = median_seconds(s.device, s.warmup, s.steps, || Ok(opt.step()?))?;
            match layout {
                Layout::MultiTensor => multi.push(t),
                Layout::PerTensor => per.push(t),
            }
        }
        Ok(())
    };
    take_turns(s.rounds, reference_round, our_round)?;
    drop(session);
    let (fe_norm, single_norm) = reference_norms;
    println!(
        "check after {} steps: update norm {ours_norm:.9e} (gl multi-tensor), {fe_norm:.9e} \
         (torch foreach=True, relative difference {:.1e}), {single_norm:.9e} (torch \
         foreach=False, {:.1e}); gl per-tensor {:.9e}; reference torch {torch_version}",
        s.check_steps,
        crate::bench::rel_diff(ours_norm, fe_norm),
        crate::bench::rel_diff(ours_norm, single_norm),
        sides[1].3,
    );
    let (multi, per, foreach, single) = (
        median(&mut multi),
        median(&mut per),
        median(&mut foreach),
        median(&mut single),
    );
    println!("{:<26} {:>10}", "side", "ms/step");
    for (name, secs) in [
        ("gl multi-tensor (flat)", multi),
        ("gl per-tensor", per),
        ("torch foreach=True", foreach),
        ("torch foreach=False", single),
    ] {
        println!("{name:<26} {:>10.2}", secs * 1e3);
    }
    if !(multi.is_finite() && multi > 0.0) {
        bail!("our step time is {multi}");
    }
    print_speedups(&[Comparison {
        name: "optimizer".to_string(),
        ours_s: multi,
        reference_s: foreach.min(single),
    }]);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_agreement_and_rejects_the_rest() {
        assert!(check(6, "foreach=True", 1.0, 1.0 + 1e-9, 1e-6).is_ok());
        let e = check(6, "foreach=False", 1.0, 1.1, 1e-6).unwrap_err();
        assert_eq!(e.which, "foreach=False");
        assert!((e.rel - 0.1 / 1.1).abs() < 1e-12);
        assert!(check(6, "foreach=True", f64::NAN, 1.0, 1e-6).is_err());
        assert!(check(6, "foreach=True", 1.0, f64::NAN, 1e-6).is_err());
        assert!(check(6, "foreach=True", f64::INFINITY, f64::INFINITY, 1e-6).is_err());
        assert!(check(6, "foreach=True", 0.0, 0.0, 0.0).is_ok());
    }

    #[test]
    fn shapes_follow_the_network() {
        let shapes = trainable_shapes("tiny_cnn", 100).unwrap();
        // the classifier's bias and weight, and convolution kernels
        assert!(shapes.contains(&vec![100]), "{shapes:?}");
        assert!(shapes.iter().any(|s| s.len() == 4), "{shapes:?}");
        assert!(shapes
            .iter()
            .any(|s| s.first() == Some(&100) && s.len() == 2));
    }
}
