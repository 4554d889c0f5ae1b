//! Raw arguments of `gl bench …`: one Args struct per benchmark, and where their Python
//! references live.

use crate::device::DeviceArg;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Group Loss forward+backward at the CUB (54×1024, m=100) and SOP (60×1024, m=11318)
    /// shapes, f32, beside the PyTorch-eager reference.
    Loss(BenchLossArgs),
    /// Prepare throughput and loader throughput (decode + augment + batch, 227×227) at 1 and 2
    /// threads, beside a PIL + NumPy reference loader on the same cache file.
    Loader(BenchLoaderArgs),
    /// One training step (forward, Group Loss, backward, RAdam) at the paper's CUB batch
    /// (6 × 9 = 54 images, m = 100) per backbone, beside a PyTorch-eager step on the same
    /// weights and batch; also the loader's images/s at the same input size.
    Train(BenchTrainArgs),
    /// A whole training epoch of the demo recipe as `gl train` runs it (loader threads
    /// overlapping the steps), beside a PyTorch loop (DataLoader workers, Adam) on the same
    /// crops, initial weights and batches; images/s and the loader-wait vs step breakdown.
    Epoch(BenchEpochArgs),
    /// Exact Recall@K + MAP@R on a synthetic SOP-sized set (60,502 × 1024), time and peak
    /// memory, beside faiss-cpu `IndexFlatIP` + NumPy metrics on the same vectors.
    Eval(BenchEvalArgs),
    /// One RAdam step (the paper's CUB γ and λ, L2) over BN-Inception's trainable parameters
    /// and a 100-class classifier with fixed gradients, f32, beside `torch.optim.RAdam` with
    /// `foreach=True` and `foreach=False` on the same tensors.
    Optimizer(BenchOptimizerArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchEvalArgs {
    /// Images (SOP test: 60,502).
    #[arg(long, default_value_t = 60502)]
    pub n: i64,
    #[arg(long, default_value_t = 1024)]
    pub dim: i64,
    /// Classes (SOP test: 11,316).
    #[arg(long, default_value_t = 11316)]
    pub classes: i64,
    /// K of Recall@K (SOP's).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub ks: Vec<usize>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Similarity block size in MiB.
    #[arg(long, default_value_t = 64)]
    pub chunk_mib: usize,
    /// Exact search strategy: auto, triangle, blocks.
    #[arg(long, default_value = "auto")]
    pub search: crate::eval::knn::Strategy,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-coordinate noise around the class centres (unit-variance Gaussians): sets how hard
    /// retrieval is.
    #[arg(long, default_value_t = 2.75)]
    pub noise: f64,
    /// Also time k-means for NMI (k = classes, one seeding, at most this many Lloyd
    /// iterations); 0 skips it. No reference: scikit-learn at this size takes hours.
    #[arg(long, default_value_t = 0)]
    pub kmeans_iters: usize,
    /// Skip the faiss reference (ours only).
    #[arg(long)]
    pub no_reference: bool,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// Backbones, comma-separated [default: bn_inception,efficientnet_lite0, skipping (with a
    /// note) those this build has not registered]. Input side: the registry's (bn_inception 227),
    /// except efficientnet_lite0 at 64 (the demo's).
    #[arg(long, value_delimiter = ',')]
    pub backbones: Option<Vec<String>>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Timed steps per backbone and round.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Untimed steps before them, per round, besides the untimed check step that each side
    /// runs first (which already warms both up).
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Rounds taking turns with one long-lived reference (who goes first alternates); the median
    /// over rounds is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Loader threads of the loader measurement (pipeline/train.toml's default).
    #[arg(long, default_value_t = 4)]
    pub loader_threads: usize,
    /// Batches the loader measurement times (after one warm-up batch), over synthetic
    /// photographs prepared as `gl prepare` does.
    #[arg(long, default_value_t = 6)]
    pub loader_batches: usize,
    /// Largest accepted relative difference between our first-step loss and the reference's.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchEpochArgs {
    /// Epochs per round (1, 2, …, from the same initial weights each round).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Rounds taking turns with one long-lived reference (who goes first alternates); the median
    /// over rounds is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Loader threads of ours and DataLoader workers of the reference [default: the recipe's,
    /// 2].
    #[arg(long)]
    pub loader_threads: Option<usize>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Largest accepted relative difference between the two sides' check-step loss and update
    /// norm.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

#[derive(Debug, clap::Args)]
pub struct BenchLoaderArgs {
    /// Synthetic 500×375 images to prepare and load.
    #[arg(long, default_value_t = 540)]
    pub images: usize,
    /// Batch size (paper, CUB: 6 × 9 = 54).
    #[arg(long, default_value_t = 54)]
    pub batch: usize,
    /// Rounds alternating the reference and ours; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub reference: ReferenceArgs,
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

#[derive(Debug, clap::Args)]
pub struct BenchOptimizerArgs {
    /// Backbone whose trainable parameters (with the classifier) are stepped.
    #[arg(long, default_value = "bn_inception")]
    pub backbone: String,
    /// Classes of the classifier (CUB's training classes).
    #[arg(long, default_value_t = 100)]
    pub classes: i64,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Timed steps per side and round.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps before them, per side and round.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Rounds taking turns with one long-lived reference (who goes first alternates); the median
    /// over rounds is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Steps from the same parameters and gradients before the sides' update norms are
    /// compared (RAdam's rectified update starts at step 6).
    #[arg(long, default_value_t = 6)]
    pub check_steps: usize,
    /// Largest accepted relative difference between our update norm and each reference's.
    #[arg(long, default_value_t = 1e-5)]
    pub tolerance: f64,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

/// Where the Python reference of a benchmark lives.
#[derive(Debug, Clone, clap::Args)]
pub struct ReferenceArgs {
    /// Python interpreter with torch [default: the venv whose torch `gl` was built against,
    /// else python3].
    #[arg(long, env = crate::env_vars::PYTHON)]
    pub python: Option<PathBuf>,
    /// Directory holding the reference scripts.
    #[arg(long, env = crate::env_vars::REFERENCE_DIR, default_value = "tests/reference")]
    pub reference_dir: PathBuf,
}
