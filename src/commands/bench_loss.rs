//! `gl bench loss`: Group Loss forward+backward at the CUB and SOP shapes (f32), beside the
//! PyTorch-eager reference (`tests/reference/group_loss_ref.py bench`) timed in the same run.

use crate::bench::{median, median_seconds, print_speedups, Comparison, Reference};
use crate::cli::BenchLossArgs;
use crate::loss::{Anchors, GroupLoss, GroupLossOptions};
use anyhow::{ensure, Context, Result};
use rand::SeedableRng;
use std::process::ExitCode;
use tch::{Device, Kind, Tensor};

/// A benchmark shape: classes × samples per class, feature size d, classes m, anchors k, τ.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub classes: i64,
    pub per_class: i64,
    pub d: i64,
    pub m: i64,
    pub anchors: i64,
    pub tau: f64,
}

/// The paper's CUB and SOP batches (the reference script uses the same table).
pub const SHAPES: [Shape; 2] = [
    Shape {
        name: "cub",
        classes: 6,
        per_class: 9,
        d: 1024,
        m: 100,
        anchors: 2,
        tau: 24.0,
    },
    Shape {
        name: "sop",
        classes: 10,
        per_class: 6,
        d: 1024,
        m: 11318,
        anchors: 2,
        tau: 54.0,
    },
];

#[derive(Debug)]
pub struct Settings {
    pub device: Device,
    pub repeats: usize,
    pub rounds: usize,
    pub reference: Reference,
}

impl Settings {
    pub fn resolve(args: BenchLossArgs) -> Result<Self> {
        let BenchLossArgs {
            device,
            repeats,
            rounds,
            reference,
        } = args;
        ensure!(repeats >= 1, "--repeats must be ≥ 1");
        ensure!(rounds >= 1, "--rounds must be ≥ 1");
        Ok(Settings {
            device: device.resolve()?,
            repeats,
            rounds,
            reference: Reference::resolve(reference)?,
        })
    }
}

/// Median seconds of one forward+backward of the loss at `shape` on `device`.
pub fn time_shape(shape: &Shape, device: Device, repeats: usize) -> Result<f64> {
    tch::manual_seed(0);
    let n = shape.classes * shape.per_class;
    let opts = (Kind::Float, device);
    let f = Tensor::randn([n, shape.d], opts)
        .relu()
        .set_requires_grad(true);
    let z = Tensor::randn([n, shape.m], opts).set_requires_grad(true);
    let labels: Vec<i64> = (0..shape.classes)
        .flat_map(|c| std::iter::repeat_n(c, shape.per_class as usize))
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mask = Anchors::first_k(shape.anchors)?.mask(&labels, &mut rng)?;
    let loss = GroupLoss::new(GroupLossOptions {
        tau: shape.tau,
        ..GroupLossOptions::default()
    })?;
    let targets = loss.targets(&labels, &mask, shape.m, device)?;
    median_seconds(device, 3, repeats, || {
        let out = loss.forward(&f, &z, &targets)?;
        // Gradients as torch.autograd.grad returns them: no accumulation into .grad buffers.
        let _grads = Tensor::f_run_backward(&[&out.loss], &[&f, &z], false, false)?;
        Ok(())
    })
}

pub fn run(s: Settings) -> Result<ExitCode> {
    let threads = tch::get_num_threads();
    let device_arg = match s.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let reference_args = [
        "bench".to_string(),
        format!("--repeats={}", s.repeats),
        format!("--threads={threads}"),
        format!("--device={device_arg}"),
    ];
    // Rounds alternate reference and ours, so drift in the machine's speed (shared cores, clock
    // changes) hits both sides alike; each side reports the median over rounds.
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut torch_version = String::new();
    for _ in 0..s.rounds {
        let reference = s
            .reference
            .run_json("group_loss_ref.py", &reference_args)
            .context("timing the PyTorch-eager reference")?;
        torch_version = reference["torch"].as_str().unwrap_or("?").to_string();
        for (i, shape) in SHAPES.iter().enumerate() {
            theirs[i].push(
                reference[shape.name]
                    .as_f64()
                    .with_context(|| format!("reference JSON has no time for `{}`", shape.name))?,
            );
            ours[i].push(time_shape(shape, s.device, s.repeats)?);
        }
    }
    println!(
        "bench loss: f32 forward+backward, {device_arg}, {threads} threads, median of {} rounds × {} runs (reference: torch {torch_version})",
        s.rounds, s.repeats
    );
    println!("{:<6} {:>12} {:>16}", "shape", "gl (ms)", "reference (ms)");
    let mut comparisons = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let c = Comparison {
            name: format!("loss_{}", shape.name),
            ours_s: median(&mut ours[i]),
            reference_s: median(&mut theirs[i]),
        };
        println!(
            "{:<6} {:>12.3} {:>16.3}",
            shape.name,
            c.ours_s * 1e3,
            c.reference_s * 1e3
        );
        comparisons.push(c);
    }
    print_speedups(&comparisons);
    Ok(ExitCode::SUCCESS)
}
