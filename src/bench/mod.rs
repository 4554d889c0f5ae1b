//! Benchmark plumbing shared by every `gl bench …`: timing with device synchronisation, the
//! Python reference run in the same invocation, and the closing `SPEEDUP <name> <x>` lines.

pub mod profile;
pub mod session;

use crate::cli::ReferenceArgs;
use anyhow::{bail, ensure, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::Device;

/// Runs `f` `warmup + repeats` times, synchronising `device` after each run, and returns the
/// median wall time of the timed runs in seconds.
pub fn median_seconds<F: FnMut() -> Result<()>>(
    device: Device,
    warmup: usize,
    repeats: usize,
    mut f: F,
) -> Result<f64> {
    ensure!(repeats > 0, "repeats must be ≥ 1");
    let mut times = Vec::with_capacity(repeats);
    for i in 0..warmup + repeats {
        crate::device::synchronize(device);
        let t0 = Instant::now();
        f()?;
        crate::device::synchronize(device);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(median(&mut times))
}

/// Median of a non-empty slice (mean of the two middle values for even lengths).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A validated way to run a Python reference script.
#[derive(Debug, Clone)]
pub struct Reference {
    pub python: PathBuf,
    pub dir: PathBuf,
}

impl Reference {
    pub fn resolve(args: ReferenceArgs) -> Result<Self> {
        let ReferenceArgs {
            python,
            reference_dir,
        } = args;
        ensure!(
            reference_dir.is_dir(),
            "reference directory {} not found (run from the repository root or pass --reference-dir)",
            reference_dir.display()
        );
        Ok(Reference {
            python: python.unwrap_or_else(crate::runtime::default_python),
            dir: reference_dir,
        })
    }

    /// `python <dir>/<script> <args…>` with the allocator policy `gl` runs under, ready to
    /// start, and how to name it in errors.
    fn command(&self, script: &str, args: &[String]) -> Result<(Command, String)> {
        let path = self.dir.join(script);
        ensure!(
            path.is_file(),
            "reference script {} not found",
            path.display()
        );
        let mut cmd = Command::new(&self.python);
        cmd.arg(&path)
            .args(args)
            .envs(crate::runtime::allocator_env());
        Ok((cmd, format!("{} {}", self.python.display(), path.display())))
    }

    /// The error for an interpreter that could not be started.
    fn start_error(&self) -> String {
        format!(
            "starting {} (set --python or GL_PYTHON)",
            self.python.display()
        )
    }

    /// Runs `python <dir>/<script> <args…>` and parses its standard output as one JSON object.
    pub fn run_json(&self, script: &str, args: &[String]) -> Result<serde_json::Value> {
        let (mut cmd, what) = self.command(script, args)?;
        let out = cmd.output().with_context(|| self.start_error())?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .with_context(|| format!("parsing the JSON printed by {what}: {text}"))
    }
}

/// ‖θ − θ₀‖ over every tensor (in f64): the size of an update, which the benchmarks compare
/// with their reference's before timing anything (the loss alone is blind to some errors).
pub fn update_norm(params: &[tch::Tensor], start: &[tch::Tensor]) -> f64 {
    tch::no_grad(|| {
        params
            .iter()
            .zip(start)
            .map(|(p, q)| {
                let d = p.to_kind(tch::Kind::Double) - q.to_kind(tch::Kind::Double);
                d.square().sum(tch::Kind::Double).double_value(&[])
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// |a − b| / |b|: how far our number is from the reference's.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// One comparison: our time against the reference's, for the same work.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub name: String,
    pub ours_s: f64,
    pub reference_s: f64,
}

impl Comparison {
    /// reference / ours: above 1 means we are faster.
    pub fn speedup(&self) -> f64 {
        self.reference_s / self.ours_s
    }
}

/// `CPU <vendor> · <model> · ATen <level> · kernels <pin> · <n> thread(s)`: which machine and
/// kernels a benchmark's ratios were measured on (they differ between CPUs: AVX-512 against
/// AVX2, cache sizes).
pub fn cpu_line() -> String {
    let e = crate::numerics::environment::Environment::current(
        std::path::Path::new("."),
        crate::numerics::Kernels::in_effect(),
        "cpu",
    );
    format!(
        "CPU {} · {} · ATen {} · kernels {} · {} thread(s)",
        e.cpu_vendor.as_deref().unwrap_or("unknown vendor"),
        e.cpu_model.as_deref().unwrap_or("unknown model"),
        e.aten_capability.as_deref().unwrap_or("?"),
        e.kernels,
        e.threads
    )
}

/// Prints the closing lines: the [`cpu_line`], then exactly `SPEEDUP <name>
/// <reference_time / our_time>` per comparison.
pub fn print_speedups(comparisons: &[Comparison]) {
    println!("{}", cpu_line());
    for c in comparisons {
        println!("SPEEDUP {} {:.3}", c.name, c.speedup());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn speedup_is_reference_over_ours() {
        let c = Comparison {
            name: "x".into(),
            ours_s: 0.5,
            reference_s: 1.0,
        };
        assert_eq!(c.speedup(), 2.0);
    }
}
