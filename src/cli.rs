//! Raw command-line arguments (clap derive): one Args struct per subcommand. Nothing here touches
//! disk or a device; `commands::*::Settings::resolve` turns these into validated settings.

use crate::device::DeviceArg;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// grouploss: reproduce, audit and extend The Group Loss for Deep Metric Learning.
#[derive(Debug, Parser)]
#[command(name = "gl", version, about, propagate_version = true)]
pub struct Cli {
    /// libtorch intra-op threads (default: libtorch's own choice, usually the core count).
    #[arg(long, global = true, env = "GL_THREADS")]
    pub threads: Option<i32>,
    /// More log output (-v info, -vv debug); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What to paste into a bug report: versions, the libtorch in use, CUDA devices, threads.
    Env(EnvArgs),
    /// Audit the Group Loss against reference vectors (e.g. ../shared/golden/group_loss).
    VerifyLoss(VerifyLossArgs),
    /// Benchmarks against a reference timed in the same run; ends with `SPEEDUP <name> <x>` lines.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Floating dtype for numerical checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    F32,
    F64,
}

/// Output format of a report on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct VerifyLossArgs {
    /// Directory with `cases.json` and one `<case>.npz` per case.
    pub dir: PathBuf,
    /// Device to run the loss on.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Dtype of the computation (the golden vectors are f64).
    #[arg(long, value_enum, default_value = "f64")]
    pub dtype: Dtype,
    /// Largest accepted relative error (default: 1e-9 in f64, 1e-4 in f32).
    #[arg(long)]
    pub tolerance: Option<f64>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Group Loss forward+backward at the CUB (54×1024, m=100) and SOP (60×1024, m=11318)
    /// shapes, f32, beside the PyTorch-eager reference.
    Loss(BenchLossArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchLossArgs {
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Timed repetitions per shape and round (after 3 warm-up runs).
    #[arg(long, default_value_t = 30)]
    pub repeats: usize,
    /// Rounds, alternating the reference and ours; the median over rounds is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

/// Where the Python reference of a benchmark lives.
#[derive(Debug, clap::Args)]
pub struct ReferenceArgs {
    /// Python interpreter with torch [default: the venv whose torch `gl` was built against,
    /// else python3].
    #[arg(long, env = "GL_PYTHON")]
    pub python: Option<PathBuf>,
    /// Directory holding the reference scripts.
    #[arg(long, env = "GL_REFERENCE_DIR", default_value = "tests/reference")]
    pub reference_dir: PathBuf,
}
