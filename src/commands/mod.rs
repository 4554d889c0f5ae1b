//! One module per `gl` subcommand. Commands with settings to check resolve them first
//! (`resolve(args, project)` or `Settings::resolve(args)` validates, `run(settings)` works); the
//! small ones (`env`, `models`, `sql`, `report`, …) take their arguments as they are.

pub mod bench_epoch;
pub mod bench_eval;
pub mod bench_loader;
pub mod bench_loss;
pub mod bench_objectives;
pub mod bench_optimizer;
pub mod bench_train;
pub mod env;
pub mod evaluate;
#[cfg(feature = "catalog")]
pub mod export;
pub mod fetch;
pub mod fetch_check;
#[cfg(feature = "catalog")]
pub mod index_runs;
pub mod models;
pub mod numerics_check;
#[cfg(feature = "catalog")]
pub mod pipeline;
pub mod prepare;
#[cfg(feature = "catalog")]
pub mod report;
#[cfg(feature = "catalog")]
pub mod sql;
pub mod synth;
pub mod train;
pub mod verify_loss;
pub mod weights;
