//! The pipeline: the stage DAG of `pipeline/stages.toml` expanded for a profile of
//! `pipeline/profiles/` into tasks (each a `gl` command over files), fingerprints that decide
//! what is stale, a lock per data directory, an executor that runs tasks, and the catalogue rows
//! that record every task run. A profile's `[sweep]` multiplies its Group Loss runs over a grid
//! of recipe values; a benchmark with `tuning_seeds` grows its plan once its tuning runs are in
//! ([`tuning`]).

pub mod dag;
pub mod digest_cache;
pub mod executor;
pub mod gpus;
pub mod lock;
pub mod profile;
pub mod progress;
pub mod run_specs;
pub mod runner;
pub mod slurm;
pub mod slurm_config;
pub mod state;
pub mod sweep;
pub mod task;
pub mod tasks;
pub mod tuning;
