//! Every `GL_*` environment variable `gl` reads, in one place with what it does. Command-line
//! flags win over them; the recipe and profile prefixes set any key (`GL_TRAIN_LR=1e-4`,
//! `GL_PIPELINE_SEEDS=[0,1]`). The build-time pair is read by `build.rs` and baked in.

/// libtorch intra-op threads (`--threads`).
pub const THREADS: &str = "GL_THREADS";
/// The CPU kernel pin (`--kernels`): native, portable or baseline (see `numerics::kernels`).
pub const KERNELS: &str = "GL_KERNELS";
/// The project root (`--project-dir`).
pub const PROJECT_DIR: &str = "GL_PROJECT_DIR";
/// The data directory (`--data-dir`).
pub const DATA_DIR: &str = "GL_DATA_DIR";
/// The Python with torch that benchmarks and weight conversion call (`--python`).
pub const PYTHON: &str = "GL_PYTHON";
/// Where the benchmarks' PyTorch references are (`--reference-dir`).
pub const REFERENCE_DIR: &str = "GL_REFERENCE_DIR";
/// `off`: commands leave the catalogue alone (a run directory is indexed later with
/// `gl index-runs`), as on a machine where the catalogue is not.
pub const CATALOG: &str = "GL_CATALOG";
/// Set by `gl run` on every task it starts (to the task's id): `gl report` then skips its
/// freshness check, since the coordinator starts the report only once its tasks are fresh.
pub const RUN_TASK: &str = "GL_RUN_TASK";
/// The GPUs `gl run`'s local tasks are spread over (`0,1,2`), instead of every device libtorch
/// sees; set, it also gives one to tasks on `cpu` (how the tests fake a machine with several
/// GPUs). See [`crate::pipeline::gpus`].
pub const GPUS: &str = "GL_GPUS";
/// Prefix of training-recipe keys (`GL_TRAIN_EPOCHS=3`), above `pipeline/train.toml`.
pub const TRAIN_PREFIX: &str = "GL_TRAIN_";
/// Prefix of pipeline-profile keys (`GL_PIPELINE_SEEDS=[0]`, `__` for nesting).
pub const PIPELINE_PREFIX: &str = "GL_PIPELINE_";

/// Fault hook for tests: a NaN loss at this epoch (the trainer must stop keeping the last good
/// checkpoint).
pub const FAULT_NAN_AT_EPOCH: &str = "GL_FAULT_NAN_AT_EPOCH";
/// Fault hook for tests: the training-step benchmark's reference computes with this τ, so
/// the agreement check must fail before any timing.
pub const FAULT_REFERENCE_TAU: &str = "GL_FAULT_REFERENCE_TAU";
/// Fault hook for tests: fail a catalogue ingest after its rows are inserted (the transaction
/// must leave the catalogue as it was).
pub const FAULT_AFTER_INSERT: &str = "GL_TEST_FAIL_AFTER_INSERT";

/// Test hook: added to both numerics versions (`numerics::training()`, `evaluation()`), so a
/// test can show what a version bump does to run ids and task states without editing code.
pub const TEST_NUMERICS_BUMP: &str = "GL_TEST_NUMERICS_BUMP";

/// Build time: the libtorch directory and version `gl` was linked against (`gl env`).
pub const LIBTORCH_BUILD_DIR: &str = "GL_LIBTORCH_BUILD_DIR";
pub const LIBTORCH_BUILD_VERSION: &str = "GL_LIBTORCH_BUILD_VERSION";
